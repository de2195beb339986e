//! The application boundary as the engine sees it: jobs out, events back.
use std::fs::File;

use crate::engine::transport::{ConnId, ListenerId, Peer};
use crate::http::request::RequestHead;

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

/// What the app answered, as status and headers (not yet validated or framed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppHead {
    /// e.g. `"200 OK"`.
    pub status: String,
    pub headers: Vec<(String, String)>,
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
