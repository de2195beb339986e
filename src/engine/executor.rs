//! The application boundary as the engine sees it: jobs out, events back.
use std::fs::File;

use crate::engine::transport::{ConnId, ListenerId, Peer};
use crate::http::request::RequestHead;
use crate::http::response::validate_header;

/// Identifies one request for its whole life; never reused, so a late event
/// for a finished request (or a recycled `ConnId`) is recognised and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u64);

impl ReqId {
    /// A request id carries its connection in the low 32 bits, so events are
    /// routed without a lookup table; the high bits are a sequence number, so
    /// an event for a request that ended (on a reused `ConnId`) never matches.
    pub fn new(seq: u64, conn: ConnId) -> Self {
        ReqId((seq << 32) | (conn.0 as u64 & 0xffff_ffff))
    }

    pub fn conn(self) -> ConnId {
        ConnId((self.0 & 0xffff_ffff) as usize)
    }
}

/// A complete request body, buffered before the app runs (as Waitress does).
#[derive(Debug)]
pub enum Body {
    Empty,
    Memory(Vec<u8>),
    /// Spilled past `inbuf_overflow`: an anonymous temp file, rewound, of `len` bytes.
    File {
        file: File,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Memory(v) => v.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One parsed request handed to the application side.
#[derive(Debug)]
pub struct Job {
    pub req: ReqId,
    pub conn: ConnId,
    pub listener: ListenerId,
    pub peer: Peer,
    pub head: RequestHead,
    pub body: Body,
}

/// Response body bytes from the app side.
pub enum Chunk {
    Owned(Vec<u8>),
    /// Bytes that stay where their producer keeps them (a Python `bytes`
    /// object) until sent: a large body is never copied. Dropping the box
    /// hands them back.
    Shared(Box<dyn AsRef<[u8]> + Send>),
}

impl Chunk {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(s) => (**s).as_ref(),
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(v: Vec<u8>) -> Self {
        Chunk::Owned(v)
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Chunk::Owned(_) => "Owned",
            Chunk::Shared(_) => "Shared",
        };
        write!(f, "{kind}({} bytes)", self.len())
    }
}

/// The app's header lines in its order, packed into one string: two
/// allocations for any number of lines (pairs of `String`s cost two per
/// line, on every response).
#[derive(Clone)]
pub struct HeaderList {
    text: String,
    /// Per line, where its name ends and where its value ends in `text`;
    /// a name starts where the previous value ended.
    ends: Vec<(usize, usize)>,
    /// Every line came through `push_valid`: the engine need not check
    /// them again.
    all_valid: bool,
}

impl Default for HeaderList {
    fn default() -> Self {
        HeaderList::with_capacity(0, 0)
    }
}

impl PartialEq for HeaderList {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for HeaderList {}

impl HeaderList {
    /// Room for `lines` lines of `bytes` bytes in all, names and values.
    pub fn with_capacity(lines: usize, bytes: usize) -> Self {
        HeaderList {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(lines),
            all_valid: true,
        }
    }

    /// Add a line as it is (the engine checks it before sending).
    pub fn push(&mut self, name: &str, value: &str) {
        self.all_valid = false;
        self.push_line(name, value);
    }

    /// Add a line if [`validate_header`] accepts it; else its reason.
    pub fn push_valid(&mut self, name: &str, value: &str) -> Result<(), String> {
        validate_header(name, value)?;
        self.push_line(name, value);
        Ok(())
    }

    /// Whether every line was checked on the way in (see `push_valid`).
    pub fn all_valid(&self) -> bool {
        self.all_valid
    }

    fn push_line(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// `(name, value)` per line, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let line = (&self.text[start..name_end], &self.text[name_end..value_end]);
            start = value_end;
            line
        })
    }

    /// Keep the lines `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let mut kept: HeaderList = self.iter().filter(|&(n, v)| keep(n, v)).collect();
        kept.all_valid = self.all_valid;
        *self = kept;
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut list = HeaderList::default();
        for (name, value) in iter {
            list.push(name.as_ref(), value.as_ref());
        }
        list
    }
}

impl std::fmt::Debug for HeaderList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What the app answered, as status and headers (not yet validated or framed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppHead {
    /// e.g. `"200 OK"`.
    pub status: String,
    pub headers: HeaderList,
    /// The body length when the app side knows it without a Content-Length
    /// header: `len(app_iter) == 1`, or a seekable file wrapper.
    pub known_length: Option<u64>,
}

/// Events from the application side back to the engine, in order per request.
#[derive(Debug)]
pub enum AppEvent {
    /// `start_response` took effect; sent before the first body byte or with `Done`.
    Head {
        req: ReqId,
        head: AppHead,
    },
    Data {
        req: ReqId,
        bytes: Chunk,
    },
    /// A seekable file from `wsgi.file_wrapper`: send `len` bytes from `offset`.
    File {
        req: ReqId,
        file: File,
        offset: u64,
        len: u64,
    },
    /// The app iterator is exhausted and closed.
    Done {
        req: ReqId,
    },
    /// The whole response at once: `Head`, `Data` (if `body` is not empty)
    /// and `Done` in one event, for the common `[body]` result: one trip
    /// through the channel instead of three.
    Complete {
        req: ReqId,
        head: AppHead,
        body: Chunk,
    },
    /// The app raised. Before the head went out this becomes a 500 (with `detail`
    /// as the body text when tracebacks are exposed); after, the connection is cut.
    Failed {
        req: ReqId,
        detail: Option<String>,
    },
}

impl AppEvent {
    pub fn req(&self) -> ReqId {
        match self {
            AppEvent::Head { req, .. }
            | AppEvent::Data { req, .. }
            | AppEvent::File { req, .. }
            | AppEvent::Done { req }
            | AppEvent::Complete { req, .. }
            | AppEvent::Failed { req, .. } => *req,
        }
    }
}

/// Runs applications. Implemented by the Python worker pool, the simulator's
/// task spawner and test doubles.
pub trait Executor {
    fn dispatch(&mut self, job: Job);
    /// `bytes` more of this request's output left the server: the app may produce
    /// that much more without exceeding `outbuf_high_watermark`.
    fn grant(&mut self, req: ReqId, bytes: usize);
    /// The client went away or the connection was closed: stop the app if possible.
    fn cancel(&mut self, req: ReqId);
    /// The request outlived `request_timeout` and was answered (or cut) without
    /// the app: stop it, and say where it was stuck if the executor can tell.
    fn timed_out(&mut self, req: ReqId) {
        self.cancel(req);
    }
    /// Called by a driver at the end of each turn of its loop: an executor
    /// that collects the jobs of a turn hands them over here, together.
    fn flush(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_list_keeps_lines_in_order_with_empty_names_and_values() {
        let pairs = [("A", "1"), ("", "x"), ("B", ""), ("A", "2")];
        let list: HeaderList = pairs.iter().copied().collect();
        assert_eq!(list.len(), 4);
        assert_eq!(list.iter().collect::<Vec<_>>(), pairs);
    }

    #[test]
    fn retain_drops_only_the_lines_refused() {
        let mut list: HeaderList = [("Content-Length", "5"), ("X", "y"), ("content-length", "6")]
            .into_iter()
            .collect();
        list.retain(|n, _| !n.eq_ignore_ascii_case("content-length"));
        assert_eq!(list.iter().collect::<Vec<_>>(), [("X", "y")]);
        list.push("Z", "z");
        assert_eq!(list.iter().collect::<Vec<_>>(), [("X", "y"), ("Z", "z")]);
    }

    #[test]
    fn only_lines_pushed_through_validation_count_as_valid() {
        let mut list = HeaderList::default();
        assert!(list.push_valid("Content-Type", "text/plain").is_ok());
        assert!(list.push_valid("Bad Name", "x").is_err());
        assert!(list.push_valid("X", "a\r\nb").is_err());
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            [("Content-Type", "text/plain")]
        );
        assert!(list.all_valid());
        list.retain(|_, _| true);
        assert!(list.all_valid());
        list.push("Bad Name", "x");
        assert!(!list.all_valid());
    }
}
