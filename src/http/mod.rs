//! HTTP/1.x wire format: strict request parsing, chunked decoding, response heads, error bodies.
pub mod chunked;
pub mod errors;
pub mod parser;
pub mod proxy;
pub mod request;
pub mod response;
pub mod target;
