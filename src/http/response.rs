//! Response head building and the framing decision. (STUB: to be written.)
use crate::engine::executor::AppHead;
use crate::http::request::{RequestHead, Version};

/// What the framing decision needs to know about the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub version: Version,
    pub is_head: bool,
    pub close_requested: bool,
    pub close_after: bool,
}

impl RequestInfo {
    pub fn of(head: &RequestHead) -> Self {
        RequestInfo {
            version: head.version,
            is_head: head.is_head(),
            close_requested: head.close_requested,
            close_after: head.close_after,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many body bytes (surplus app bytes are dropped, a shortfall closes).
    Length(u64),
    /// `Transfer-Encoding: chunked`, ended by `0\r\n\r\n`.
    Chunked,
    /// The body ends when the connection closes.
    CloseDelimited,
    /// No body may be sent (HEAD, 1xx, 204, 304): app bytes are dropped.
    NoBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The status line and headers, terminated by an empty line.
    pub bytes: Vec<u8>,
    pub framing: Framing,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
}

/// Build the head for the app's answer. `Err` carries the reason the app's
/// status or headers are unacceptable (logged, answered with a 500).
pub fn build_head(
    req: &RequestInfo,
    app: &AppHead,
    ident: Option<&str>,
    date: &str,
) -> Result<ResponseHead, String> {
    let _ = (req, app, ident, date);
    todo!()
}

/// Append a chunk-size line (`HEX\r\n`, upper-case hex) for `len` bytes.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    let _ = (len, out);
    todo!()
}

/// The last chunk of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
