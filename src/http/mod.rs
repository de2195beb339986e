//! HTTP/1.x wire format: strict request parsing, chunked decoding, response heads, error bodies.
pub mod chunked;
pub mod errors;
pub mod parser;
pub mod request;
pub mod response;
