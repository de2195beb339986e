//! Strict HTTP/1.x request-head parser. (STUB: to be written.)
use crate::http::errors::HttpError;
use crate::http::request::RequestHead;

#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// `max_request_header_size`: a head this long or longer is a 431.
    pub max_header: usize,
    /// `max_request_body_size`: a Content-Length this large or larger is a 413.
    pub max_body: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No complete head yet; call again with more bytes.
    Incomplete,
    /// Only blank lines / leading whitespace so far: drop this many bytes.
    Skip(usize),
    /// A complete, valid head occupying `consumed` bytes (terminator included).
    Head { head: RequestHead, consumed: usize },
}

pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<Parsed, HttpError> {
    let _ = (buf, limits);
    todo!()
}
