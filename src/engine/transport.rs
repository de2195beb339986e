//! The socket operations the engine needs, none of which ever waits.
//!
//! `WouldBlock` means "wait for the next readiness event for this connection".
use std::fs::File;
use std::io::{self, IoSlice};
use std::net::SocketAddr;

/// A connection handle chosen by the transport (a slab key: small, reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub usize);

/// Which listener a connection came in on (index into the driver's listener list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ListenerId(pub usize);

/// The peer of an accepted connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A Unix-socket client: Waitress reports it as `localhost` with no port.
    Unix,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub conn: ConnId,
    pub peer: Peer,
    pub listener: ListenerId,
}

/// The readiness a connection currently waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub read: bool,
    pub write: bool,
}

impl Want {
    pub const NONE: Want = Want {
        read: false,
        write: false,
    };
    pub const READ: Want = Want {
        read: true,
        write: false,
    };
    pub const WRITE: Want = Want {
        read: false,
        write: true,
    };
    pub const BOTH: Want = Want {
        read: true,
        write: true,
    };
}

/// How to end a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Orderly: everything written is delivered, then FIN.
    Fin,
    /// Abortive (SO_LINGER 0): used when the peer already reset or for hostile clients.
    Reset,
}

pub trait Transport {
    /// Take one pending connection, `Ok(None)` when none is waiting. A new
    /// connection starts with read interest (`Want::READ`).
    fn accept(&mut self) -> io::Result<Option<Accepted>>;
    /// Stop or resume taking connections (connection_limit); pending ones wait in the backlog.
    fn set_accepting(&mut self, on: bool);
    /// Stop taking connections for good (a graceful stop): a transport that
    /// owns its listening sockets closes them, so new clients are refused at
    /// once rather than left waiting in a backlog nobody reads.
    fn stop_listening(&mut self) {
        self.set_accepting(false);
    }
    /// `Ok(0)` is end of stream.
    fn read(&mut self, conn: ConnId, buf: &mut [u8]) -> io::Result<usize>;
    fn write_vectored(&mut self, conn: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Send up to `len` bytes of `file` from `offset`; may copy through user space.
    fn send_file(
        &mut self,
        conn: ConnId,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize>;
    fn set_interest(&mut self, conn: ConnId, want: Want);
    /// Forget the connection; the id may be reused by a later `accept`.
    fn close(&mut self, conn: ConnId, how: Close);
}
