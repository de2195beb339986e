//! A parsed request head, owned, ready to cross to a worker thread.
use std::borrow::Cow;
use std::sync::Arc;

/// The version a request is *answered* with. Waitress answers every version
/// other than 1.1 (1.0, 0.9-style, 2.0, 8.4 ...) as HTTP/1.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no Content-Length and not chunked, or Content-Length 0).
    None,
    Length(u64),
    Chunked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Token, as received (the common methods need no allocation).
    pub method: Cow<'static, str>,
    /// The raw request target bytes (REQUEST_URI), fragment and absolute-form
    /// included; shared, so the engine keeps it for its log messages without
    /// a copy.
    pub target: Arc<[u8]>,
    pub version: Version,
    /// Headers in WSGI form: name upper-cased with `-` turned into `_` (no `HTTP_`
    /// prefix), value stripped of SP/HTAB, repeated names joined with `", "` in
    /// arrival order; listed in order of first appearance. Names containing `_`
    /// on the wire are dropped. `TRANSFER_ENCODING` is removed for HTTP/1.1
    /// requests; for chunked requests `CONTENT_LENGTH` holds the decoded length
    /// once the body is complete (the channel sets it).
    pub headers: Vec<(String, Vec<u8>)>,
    pub framing: BodyFraming,
    /// HTTP/1.1 and `Expect: 100-continue` (case-insensitive).
    pub expect_continue: bool,
    /// The request asked for `Connection: close` (1.1) or did not ask for
    /// keep-alive (1.0), by token-list parsing (Decision Q12).
    pub close_requested: bool,
    /// Content-Length and chunked together: decode as chunked, close afterwards (Q15).
    pub close_after: bool,
}

impl RequestHead {
    /// The first header with this WSGI-form name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}
