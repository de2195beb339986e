//! The production driver: mio's `Poll`, a `Waker` for app events, driven one
//! turn at a time by whichever thread holds it (see `python::lead`).
//!
//! It owns the sockets and the clock, turns readiness into engine calls and
//! sleeps until the engine's next deadline. mio is edge-triggered; the engine
//! copes by always working until `WouldBlock` (see `Channel::pump`).
#![allow(clippy::disallowed_methods)] // the driver is where sockets, clocks and time live

use std::cell::Cell;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::error;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::config::Config;
use crate::engine::{
    Accepted, AppEvent, Clock, Close, ConnId, Engine, Executor, ListenerId, Peer, Timestamp,
    Transport, Want,
};
use crate::metrics::Meter;

const WAKER: Token = Token(usize::MAX);
pub const SIGNALS: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX / 2;

/// A listening socket before it joins a driver.
pub enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(mio::net::UnixListener),
}

impl Listener {
    /// Adopt a socket that is already bound and listening (from Python, or
    /// systemd socket activation).
    ///
    /// # Safety
    /// `fd` must be an open listening stream socket nobody else will close.
    #[cfg(unix)]
    pub unsafe fn from_raw_fd(
        fd: std::os::unix::io::RawFd,
        unix_socket: bool,
    ) -> io::Result<Listener> {
        use std::os::unix::io::FromRawFd;
        if unix_socket {
            let l = std::os::unix::net::UnixListener::from_raw_fd(fd);
            l.set_nonblocking(true)?;
            Ok(Listener::Unix(mio::net::UnixListener::from_std(l)))
        } else {
            let l = std::net::TcpListener::from_raw_fd(fd);
            l.set_nonblocking(true)?;
            Ok(Listener::Tcp(TcpListener::from_std(l)))
        }
    }

    /// # Safety
    /// `socket` must be an open listening TCP socket nobody else will close.
    #[cfg(windows)]
    pub unsafe fn from_raw_socket(socket: std::os::windows::io::RawSocket) -> io::Result<Listener> {
        use std::os::windows::io::FromRawSocket;
        let l = std::net::TcpListener::from_raw_socket(socket);
        l.set_nonblocking(true)?;
        Ok(Listener::Tcp(TcpListener::from_std(l)))
    }

    /// What the listener is bound to: `(host, port)` for TCP, `("unix", path)`.
    pub fn describe(&self) -> io::Result<(String, String)> {
        match self {
            Listener::Tcp(l) => {
                let a = l.local_addr()?;
                Ok((a.ip().to_string(), a.port().to_string()))
            }
            #[cfg(unix)]
            Listener::Unix(l) => {
                let a = l.local_addr()?;
                let path = a
                    .as_pathname()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                Ok(("unix".to_string(), path))
            }
        }
    }
}

/// Bind a TCP listener the way Waitress does: SO_REUSEADDR (Unix only: on
/// Windows it would let another process steal the port), IPV6_V6ONLY for v6.
pub fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(Listener::Tcp(TcpListener::from_std(socket.into())))
}

/// Bind a Unix listener: an existing *socket* file at the path is replaced
/// (other file types are left alone and make the bind fail), then the file
/// gets `perms`.
#[cfg(unix)]
pub fn bind_unix(path: &std::path::Path, perms: u32, backlog: i32) -> io::Result<Listener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(backlog)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(perms))?;
    let std_listener: std::os::unix::net::UnixListener = socket.into();
    Ok(Listener::Unix(mio::net::UnixListener::from_std(
        std_listener,
    )))
}

enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            #[cfg(unix)]
            Stream::Unix(s) => s,
        }
    }
}

/// A connection is registered once, for both directions, edge-triggered;
/// the engine's `Want` only filters which events reach it. Changing the
/// epoll interest instead costs two `epoll_ctl` calls per request.
///
/// It is registered only once it has to wait: a client that sends its
/// request with the connection (TCP_DEFER_ACCEPT makes that the rule) and
/// asks for `Connection: close` is read, answered and closed without any
/// `epoll_ctl`, here or (implicitly) in close().
struct Conn {
    stream: Stream,
    want: Want,
    /// Known to the poller (see `MioTransport::register_waiting`).
    registered: bool,
    /// The poller refused it: every read and write fails from now on.
    unwatched: bool,
    /// Readiness hints: an event said the socket may be readable (writable)
    /// and no read (write) has since found it drained. Edge-triggered, so
    /// a drained socket reports again when anything new happens.
    readable: bool,
    writable: bool,
    /// The peer closed or reset: that was reported once and will not be
    /// again, so only a read that returns it may clear `readable`.
    ending: bool,
}

impl Conn {
    fn new(stream: Stream) -> Self {
        // A client usually sends its request with the connection: the
        // engine's first read right after the accept should find it.
        Conn {
            stream,
            want: Want::READ,
            registered: false,
            unwatched: false,
            readable: true,
            writable: true,
            ending: false,
        }
    }

    /// The engine waits for readiness the hints say has not come yet.
    fn waits(&self) -> bool {
        (self.want.read && !self.readable) || (self.want.write && !self.writable)
    }
}

/// Whether a read shorter than the buffer proves the socket drained: on
/// Linux every arrival after the read raises a new edge, so the next read
/// may wait for one instead of costing a syscall that returns `EAGAIN`.
const SHORT_READ_DRAINS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Non-blocking socket operations over mio.
pub struct MioTransport {
    registry: Registry,
    listeners: Vec<Listener>,
    listening: bool,
    conns: Slab<Conn>,
    /// Reused for file segments: read from the file, written to the socket
    /// (where there is no sendfile).
    #[cfg(not(target_os = "linux"))]
    file_buf: Vec<u8>,
    /// Connections whose `Want` was widened while their readiness hint was
    /// set: no new edge will come for them, so the driver pumps them itself.
    recheck: Vec<ConnId>,
    /// Unregistered connections that may have started to wait: registered
    /// (if they still wait) before the next poll.
    unregistered: Vec<ConnId>,
    /// Per listener: whether its accepted sockets come with TCP_NODELAY
    /// already set (Linux copies it from a listener that has it), learnt
    /// from the first accepted socket. Saves a setsockopt per connection.
    nodelay_inherited: Vec<Option<bool>>,
    /// Connections and bytes (off unless `set_metrics`).
    meter: Meter,
}

impl MioTransport {
    fn new(registry: Registry, listeners: Vec<Listener>) -> io::Result<Self> {
        let mut t = MioTransport {
            registry,
            listening: false,
            conns: Slab::new(),
            #[cfg(not(target_os = "linux"))]
            file_buf: Vec::new(),
            recheck: Vec::new(),
            unregistered: Vec::new(),
            nodelay_inherited: vec![None; listeners.len()],
            listeners,
            meter: Meter::default(),
        };
        t.listen(true)?;
        Ok(t)
    }

    fn listen(&mut self, on: bool) -> io::Result<()> {
        if on == self.listening {
            return Ok(());
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let token = Token(LISTENER_BASE + i);
            // One arm on Windows (no Unix listeners there).
            #[allow(clippy::infallible_destructuring_match)]
            let source: &mut dyn mio::event::Source = match l {
                Listener::Tcp(l) => l,
                #[cfg(unix)]
                Listener::Unix(l) => l,
            };
            if on {
                self.registry.register(source, token, Interest::READABLE)?;
            } else {
                self.registry.deregister(source)?;
            }
        }
        self.listening = on;
        Ok(())
    }

    fn accept_from(&mut self, i: usize) -> io::Result<Option<(Stream, Peer)>> {
        let result = match &self.listeners[i] {
            Listener::Tcp(l) => l.accept().map(|(s, a)| {
                set_nodelay(&s, &mut self.nodelay_inherited[i]);
                (Stream::Tcp(s), Peer::Tcp(a))
            }),
            #[cfg(unix)]
            Listener::Unix(l) => l.accept().map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
        };
        match result {
            Ok(pair) => Ok(Some(pair)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// sendfile(2): the kernel copies from the page cache to the socket.
    #[cfg(target_os = "linux")]
    fn sendfile(
        &mut self,
        conn: ConnId,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let c = self.conn(conn)?;
        let out = match &c.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        let mut off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::other("file offset out of range"))?;
        // Linux sends at most this much per call anyway.
        let count = len.min(0x7fff_f000);
        // SAFETY: both descriptors stay open during the call (the stream
        // and the file are borrowed), and `off` is a live off_t.
        let sent = unsafe { libc::sendfile(out, file.as_raw_fd(), &mut off, count) };
        let result = match usize::try_from(sent) {
            Err(_) => Err(io::Error::last_os_error()),
            // The file is shorter than the response said.
            Ok(0) if count > 0 => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => Ok(n),
        };
        self.wrote(conn, result)
    }

    /// Send a file range through a buffer (where there is no sendfile).
    #[cfg(not(target_os = "linux"))]
    fn copy_file(
        &mut self,
        conn: ConnId,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        let want = len.min(256 * 1024);
        let mut buf = std::mem::take(&mut self.file_buf);
        buf.resize(want, 0);
        let result = read_at(file, &mut buf[..want], offset).and_then(|n| {
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.write_vectored(conn, &[IoSlice::new(&buf[..n])])
        });
        self.file_buf = buf;
        result
    }

    fn conn(&mut self, id: ConnId) -> io::Result<&mut Conn> {
        match self.conns.get_mut(id.0) {
            Some(c) if c.unwatched => Err(io::Error::other("cannot watch the connection")),
            Some(c) => Ok(c),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "closed")),
        }
    }
}

impl MioTransport {
    /// Record what an event says and whether the engine wants to hear it.
    fn note_event(&mut self, ev: &mio::event::Event) -> bool {
        let Some(c) = self.conns.get_mut(ev.token().0) else {
            return false;
        };
        let trouble = ev.is_error() || ev.is_read_closed() || ev.is_write_closed();
        c.ending |= trouble;
        c.readable |= ev.is_readable() || trouble;
        c.writable |= ev.is_writable() || trouble;
        c.want != Want::NONE
    }

    fn take_recheck(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.recheck)
    }

    /// Account for a write (or sendfile) to `conn`: a full socket clears the
    /// writable hint, so the connection now waits for it.
    fn wrote(&mut self, conn: ConnId, result: io::Result<usize>) -> io::Result<usize> {
        match &result {
            Ok(n) => self.meter.sent(*n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(c) = self.conns.get_mut(conn.0) {
                    c.writable = false;
                }
                self.may_wait(conn);
            }
            Err(_) => {}
        }
        result
    }

    /// Note a connection that may have to wait for readiness from now on.
    fn may_wait(&mut self, id: ConnId) {
        if self.conns.get(id.0).is_some_and(|c| !c.registered) {
            self.unregistered.push(id);
        }
    }

    /// Register the connections that wait for readiness. Called before every
    /// poll, once the engine has said what it wants: a connection that had
    /// nothing more to wait for (answered and closed) is never registered.
    /// Registering reports readiness that arrived before it (epoll checks
    /// the socket when it is added), so no edge is lost.
    fn register_waiting(&mut self) {
        for id in std::mem::take(&mut self.unregistered) {
            let Some(c) = self.conns.get_mut(id.0) else {
                continue;
            };
            if c.registered || !c.waits() {
                continue;
            }
            let both = Interest::READABLE | Interest::WRITABLE;
            match self.registry.register(c.stream.source(), Token(id.0), both) {
                Ok(()) => c.registered = true,
                Err(e) => {
                    // Without readiness events the connection would hang:
                    // fail its I/O so the engine ends it (pumped at once).
                    error!(target: "maitre", "could not watch a connection: {e}");
                    c.unwatched = true;
                    c.readable = true;
                    c.writable = true;
                    self.recheck.push(id);
                }
            }
        }
    }
}

/// Waitress sets TCP_NODELAY on every accepted socket. A listener that has
/// it set passes it on (Linux): the first accepted socket tells.
fn set_nodelay(stream: &TcpStream, inherited: &mut Option<bool>) {
    if *inherited == Some(true) {
        return;
    }
    if inherited.is_none() {
        let has = stream.nodelay().unwrap_or(false);
        *inherited = Some(has);
        if has {
            return;
        }
    }
    let _ = stream.set_nodelay(true);
}

impl Transport for MioTransport {
    fn accept(&mut self) -> io::Result<Option<Accepted>> {
        for i in 0..self.listeners.len() {
            let Some((stream, peer)) = self.accept_from(i)? else {
                continue;
            };
            let id = self.conns.insert(Conn::new(stream));
            self.meter.opened();
            return Ok(Some(Accepted {
                conn: ConnId(id),
                peer,
                listener: ListenerId(i),
            }));
        }
        Ok(None)
    }

    fn set_accepting(&mut self, on: bool) {
        if let Err(e) = self.listen(on) {
            error!(target: "maitre", "could not change listening state: {e}");
        }
    }

    fn stop_listening(&mut self) {
        self.set_accepting(false);
        // Dropping closes our descriptors; a master process that shares
        // them keeps its own copies open for the workers that remain.
        self.listeners.clear();
    }

    fn read(&mut self, conn: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        let c = self.conn(conn)?;
        if !c.readable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let result = match &mut c.stream {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        };
        let drained = match &result {
            Ok(n) => *n > 0 && *n < buf.len() && SHORT_READ_DRAINS && !c.ending,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        if drained {
            c.readable = false;
            self.may_wait(conn);
        }
        let n = result?;
        self.meter.received(n);
        Ok(n)
    }

    fn write_vectored(&mut self, conn: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let c = self.conn(conn)?;
        // One slice (a small response: head and body share the output
        // tail) goes out with send(), which skips writev's VFS layers.
        let result = match (&mut c.stream, bufs) {
            (Stream::Tcp(s), [one]) => s.write(one),
            (Stream::Tcp(s), _) => s.write_vectored(bufs),
            #[cfg(unix)]
            (Stream::Unix(s), [one]) => s.write(one),
            #[cfg(unix)]
            (Stream::Unix(s), _) => s.write_vectored(bufs),
        };
        self.wrote(conn, result)
    }

    fn send_file(
        &mut self,
        conn: ConnId,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        return self.sendfile(conn, file, offset, len);
        #[cfg(not(target_os = "linux"))]
        return self.copy_file(conn, file, offset, len);
    }

    fn set_interest(&mut self, conn: ConnId, want: Want) {
        let Some(c) = self.conns.get_mut(conn.0) else {
            return;
        };
        let widened_read = want.read && !c.want.read && c.readable;
        let widened_write = want.write && !c.want.write && c.writable;
        c.want = want;
        if widened_read || widened_write {
            self.recheck.push(conn);
        }
        if c.waits() {
            self.may_wait(conn);
        }
    }

    fn close(&mut self, conn: ConnId, how: Close) {
        if !self.conns.contains(conn.0) {
            return;
        }
        let mut c = self.conns.remove(conn.0);
        self.meter.closed();
        // Linux drops a closed descriptor from epoll by itself (we never dup
        // it); elsewhere mio asks for an explicit deregistration.
        if c.registered && !cfg!(target_os = "linux") {
            let _ = self.registry.deregister(c.stream.source());
        }
        // Dropping the stream closes it; the kernel sends the FIN (after any
        // queued bytes) as part of close(), so the descriptor is already gone
        // when the peer sees the end of the stream. Reset: linger 0 -> RST.
        if let (Stream::Tcp(s), Close::Reset) = (&c.stream, how) {
            let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
        drop(c);
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// Real time: `Instant` for timeouts, the system clock for `Date`.
///
/// Each is read once per turn of the loop (see `refresh`), not at every
/// engine call: a request passes through the engine half a dozen times, and
/// timeouts and a once-a-second `Date` need no finer time than a turn.
pub struct MioClock {
    start: Instant,
    now: Cell<Option<Timestamp>>,
    wall: Cell<Option<SystemTime>>,
}

impl MioClock {
    fn new() -> Self {
        MioClock {
            start: Instant::now(),
            now: Cell::new(None),
            wall: Cell::new(None),
        }
    }

    /// Forget the readings: time has passed (a poll, another thread's job).
    fn refresh(&self) {
        self.now.set(None);
        self.wall.set(None);
    }
}

impl Clock for MioClock {
    fn now(&self) -> Timestamp {
        if let Some(now) = self.now.get() {
            return now;
        }
        let now = Timestamp(self.start.elapsed());
        self.now.set(Some(now));
        now
    }
    fn wall(&self) -> SystemTime {
        if let Some(wall) = self.wall.get() {
            return wall;
        }
        let wall = SystemTime::now();
        self.wall.set(Some(wall));
        wall
    }
}

/// Sends app events to the I/O thread from any thread, waking it at most
/// once per batch: a wake is only needed when the driver has not already
/// been told that events are waiting.
///
/// The wake itself (an eventfd write, and a context switch for the woken
/// thread) is only paid when the loop may be asleep in `poll`: a loop that
/// is busy, or between turns, finds the events on its next turn anyway.
#[derive(Clone)]
pub struct EventSender {
    tx: Sender<AppEvent>,
    waker: Arc<Waker>,
    flagged: Arc<AtomicBool>,
    sleeping: Arc<AtomicBool>,
}

impl EventSender {
    /// Returns false when the server is gone.
    pub fn send(&self, ev: AppEvent) -> bool {
        if self.tx.send(ev).is_err() {
            return false;
        }
        // SeqCst pairs with the loop's `sleeping` store and `flagged` load
        // before it sleeps (see `MioServer::poll`): either it sees our flag
        // and does not sleep, or we see it sleeping and wake it.
        if !self.flagged.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
        true
    }
}

/// Stops a running driver from another thread: the first `stop` is a
/// graceful stop (see [`Engine::begin_drain`]), a second one stops at once.
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<AtomicUsize>,
    waker: Arc<Waker>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.stop.fetch_add(1, Ordering::AcqRel);
        let _ = self.waker.wake();
    }

    /// Stop without waiting for requests in progress.
    pub fn stop_now(&self) {
        self.stop.fetch_add(2, Ordering::AcqRel);
        let _ = self.waker.wake();
    }
}

/// Called once when a graceful stop begins; the flag says whether it was
/// `max_requests` (retiring) rather than a request to stop.
pub type DrainNotice = Box<dyn FnMut(bool) + Send>;

/// A bound server: the engine, its sockets and the app-event channel.
pub struct MioServer<E: Executor> {
    poll: Poll,
    engine: Engine<MioTransport, MioClock, E>,
    events: Receiver<AppEvent>,
    flagged: Arc<AtomicBool>,
    /// Set while `poll` may block (see `EventSender`).
    sleeping: Arc<AtomicBool>,
    stop: Arc<AtomicUsize>,
    waker: Arc<Waker>,
    drain_notice: Option<DrainNotice>,
    /// The drain notice has run.
    noticed: bool,
    events_buf: Events,
}

/// The channel ends an executor needs before the server exists.
pub struct Wiring {
    poll: Poll,
    pub sender: EventSender,
    events: Receiver<AppEvent>,
    stop: StopHandle,
}

impl Wiring {
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, events) = mpsc::channel();
        let sender = EventSender {
            tx,
            waker: waker.clone(),
            flagged: Arc::new(AtomicBool::new(false)),
            sleeping: Arc::new(AtomicBool::new(false)),
        };
        let stop = StopHandle {
            stop: Arc::new(AtomicUsize::new(0)),
            waker,
        };
        Ok(Wiring {
            poll,
            sender,
            events,
            stop,
        })
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }
}

impl<E: Executor> MioServer<E> {
    pub fn new(
        config: &Config,
        listeners: Vec<Listener>,
        wiring: Wiring,
        exec: E,
    ) -> io::Result<Self> {
        let registry = wiring.poll.registry().try_clone()?;
        let transport = MioTransport::new(registry, listeners)?;
        let clock = MioClock::new();
        Ok(MioServer {
            engine: Engine::new(config, transport, clock, exec),
            poll: wiring.poll,
            events: wiring.events,
            flagged: wiring.sender.flagged.clone(),
            sleeping: wiring.sender.sleeping.clone(),
            stop: wiring.stop.stop.clone(),
            waker: wiring.stop.waker.clone(),
            drain_notice: None,
            noticed: false,
            events_buf: Events::with_capacity(1024),
        })
    }

    /// Run `notice` when a graceful stop begins.
    pub fn on_drain(&mut self, notice: DrainNotice) {
        self.drain_notice = Some(notice);
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.engine.transport().listeners
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    pub fn engine(&self) -> &Engine<MioTransport, MioClock, E> {
        &self.engine
    }

    pub fn executor_mut(&mut self) -> &mut E {
        self.engine.executor_mut()
    }

    /// Count connections and bytes into `meter` (metrics; off by default).
    pub fn set_metrics(&mut self, meter: Meter) {
        self.engine.transport_mut().meter = meter;
    }

    /// Serve until stopped: gracefully (a first stop request, or
    /// `max_requests`) once every connection has closed; at once on a second
    /// request. (The Python server drives turns itself, see `python::lead`.)
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            if let Some(result) = self.turn(true) {
                return result;
            }
        }
    }

    /// One turn of the loop: poll (sleeping until the next event or deadline
    /// if `wait`, else not at all), then hand every event to the engine.
    /// Returns the outcome once the server has finished: drained after a
    /// graceful stop, or stopped at once.
    pub fn turn(&mut self, wait: bool) -> Option<io::Result<()>> {
        self.engine.clock().refresh();
        match self.stop.load(Ordering::Acquire) {
            0 => {}
            1 => self.begin_drain(),
            _ => return Some(Ok(())),
        }
        if self.engine.is_draining() && !self.noticed {
            self.noticed = true;
            let retiring = self.engine.is_retiring();
            if let Some(notice) = &mut self.drain_notice {
                notice(retiring);
            }
        }
        if self.engine.is_drained() {
            return Some(Ok(()));
        }
        // Hand over this turn's jobs (including any a drain dispatched
        // above) before sleeping.
        self.engine.executor_mut().flush();
        self.engine.transport_mut().register_waiting();
        let mut events = std::mem::replace(&mut self.events_buf, Events::with_capacity(0));
        let polled = self.poll(&mut events, wait);
        self.engine.clock().refresh();
        let outcome = match polled {
            Ok(()) => {
                self.handle(&events);
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(Err(e)),
        };
        self.events_buf = events;
        // The jobs this turn dispatched go out now: the caller may run them.
        self.engine.executor_mut().flush();
        outcome
    }

    /// Poll, marked as sleeping while the call may block (see `EventSender`).
    fn poll(&mut self, events: &mut Events, wait: bool) -> io::Result<()> {
        let timeout = if wait {
            self.timeout()
        } else {
            Some(Duration::ZERO)
        };
        if timeout == Some(Duration::ZERO) {
            return self.poll.poll(events, timeout);
        }
        self.sleeping.store(true, Ordering::SeqCst);
        let timeout = if self.flagged.load(Ordering::SeqCst) {
            Some(Duration::ZERO) // app events arrived: no sleeping
        } else {
            timeout
        };
        let result = self.poll.poll(events, timeout);
        self.sleeping.store(false, Ordering::Relaxed);
        result
    }

    fn handle(&mut self, events: &Events) {
        let mut acceptable = false;
        for ev in events.iter() {
            if is_listener(ev.token()) {
                // Accept after the rest of the batch (see `Engine::on_acceptable`).
                acceptable = true;
                continue;
            }
            if ev.token() == WAKER {
                continue;
            }
            if self.engine.transport_mut().note_event(ev) {
                self.dispatch(ev.token());
            }
        }
        self.drain_app_events();
        if acceptable {
            let engine = &mut self.engine;
            guarded(|| engine.on_acceptable());
        }
        self.fire_timer();
        self.recheck();
    }

    /// Pump the connections whose interest widened while they were already
    /// ready (see `MioTransport::set_interest`); a pump may widen others.
    fn recheck(&mut self) {
        // Bounded, in case a pump keeps widening: the rest go next round.
        for _ in 0..8 {
            let conns = self.engine.transport_mut().take_recheck();
            if conns.is_empty() {
                return;
            }
            for conn in conns {
                let engine = &mut self.engine;
                guarded(|| engine.on_readable(conn));
            }
        }
    }

    fn begin_drain(&mut self) {
        let engine = &mut self.engine;
        guarded(|| engine.begin_drain());
    }

    fn timeout(&self) -> Option<Duration> {
        if !self.engine.transport().recheck.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.engine.clock().now();
        self.engine.next_deadline().map(|at| at - now)
    }

    fn dispatch(&mut self, token: Token) {
        let engine = &mut self.engine;
        guarded(|| match token {
            WAKER => {}
            t if is_listener(t) => engine.on_acceptable(),
            Token(t) => engine.on_readable(ConnId(t)),
        });
    }

    fn drain_app_events(&mut self) {
        // A swap, not a store: it reads the flag a sender set, so that
        // sender's event is visible to the read below.
        self.flagged.swap(false, Ordering::SeqCst);
        let batch: Vec<AppEvent> = self.events.try_iter().collect();
        if !batch.is_empty() {
            let engine = &mut self.engine;
            guarded(|| engine.on_app_events(batch));
        }
    }

    fn fire_timer(&mut self) {
        let now = self.engine.clock().now();
        if self.engine.next_deadline().is_some_and(|at| at <= now) {
            let engine = &mut self.engine;
            guarded(|| engine.on_timer());
        }
    }
}

/// The read end of a signal wakeup socket, borrowed from its owner.
pub struct SignalSource {
    #[cfg(unix)]
    stream: std::mem::ManuallyDrop<std::os::unix::net::UnixStream>,
    #[cfg(windows)]
    stream: std::mem::ManuallyDrop<std::net::TcpStream>,
}

impl SignalSource {
    /// # Safety
    /// `fd` must be an open, connected stream socket (a `socketpair` end on
    /// Unix, a loopback TCP socket on Windows) that outlives the server.
    #[cfg(unix)]
    pub unsafe fn borrow_fd(fd: std::os::unix::io::RawFd) -> io::Result<Self> {
        use std::os::unix::io::FromRawFd;
        let stream = std::os::unix::net::UnixStream::from_raw_fd(fd);
        stream.set_nonblocking(true)?;
        Ok(SignalSource {
            stream: std::mem::ManuallyDrop::new(stream),
        })
    }

    /// # Safety
    /// As for the Unix version, with a connected socket.
    #[cfg(windows)]
    pub unsafe fn borrow_socket(socket: std::os::windows::io::RawSocket) -> io::Result<Self> {
        use std::os::windows::io::FromRawSocket;
        let stream = std::net::TcpStream::from_raw_socket(socket);
        stream.set_nonblocking(true)?;
        Ok(SignalSource {
            stream: std::mem::ManuallyDrop::new(stream),
        })
    }

    #[cfg(unix)]
    pub fn register(&self, registry: &Registry) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        let fd = self.stream.as_raw_fd();
        registry.register(&mut mio::unix::SourceFd(&fd), SIGNALS, Interest::READABLE)
    }

    #[cfg(windows)]
    pub fn register(&self, registry: &Registry) -> io::Result<()> {
        // mio on Windows polls only its own socket types: watch a clone.
        let clone = self.stream.try_clone()?;
        let mut watched = mio::net::TcpStream::from_std(clone);
        registry.register(&mut watched, SIGNALS, Interest::READABLE)?;
        std::mem::forget(watched);
        Ok(())
    }

    /// Empty the socket so the next signal makes it readable again.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        let mut stream: &_ = &*self.stream;
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// Listener tokens sit between `LISTENER_BASE` and the two special tokens.
fn is_listener(token: Token) -> bool {
    token.0 >= LISTENER_BASE && token != WAKER && token != SIGNALS
}

/// A bug in the engine must not take the server down: log it and go on.
fn guarded(f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        error!(target: "maitre", "internal error while handling an event (a bug): the event was dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    /// A transport over one loopback listener (with TCP_NODELAY set on the
    /// listener if asked), its poll, and a connected client.
    fn transport(nodelay: bool) -> (MioTransport, Poll, std::net::TcpStream) {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let Listener::Tcp(tcp) = &listener else {
            unreachable!()
        };
        SockRef::from(tcp).set_tcp_nodelay(nodelay).unwrap();
        let addr = tcp.local_addr().unwrap();
        let poll = Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let t = MioTransport::new(registry, vec![listener]).unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        (t, poll, client)
    }

    /// The connection the client made (a loopback connect is in the accept
    /// queue once `connect` returns).
    fn accepted(t: &mut MioTransport) -> ConnId {
        t.accept().unwrap().expect("a pending connection").conn
    }

    fn events_for(poll: &mut Poll, conn: ConnId) -> bool {
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        events.iter().any(|ev| ev.token() == Token(conn.0))
    }

    #[test]
    fn a_connection_answered_without_waiting_is_never_registered() {
        let (mut t, _poll, mut client) = transport(false);
        client.write_all(REQUEST).unwrap();
        let conn = accepted(&mut t);
        let mut buf = [0u8; 1024];
        assert_eq!(t.read(conn, &mut buf).unwrap(), REQUEST.len());
        t.set_interest(conn, Want::NONE); // the app runs
        let answer = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        assert_eq!(
            t.write_vectored(conn, &[IoSlice::new(answer)]).unwrap(),
            answer.len()
        );
        t.register_waiting();
        assert!(!t.conns[conn.0].registered);
        t.close(conn, Close::Fin);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, answer);
    }

    #[test]
    fn a_waiting_connection_is_registered_and_hears_what_arrived_before() {
        let (mut t, mut poll, mut client) = transport(false);
        let conn = accepted(&mut t);
        let mut buf = [0u8; 1024];
        let err = t.read(conn, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // The request arrives after the engine found nothing, before the
        // loop registers the connection: no edge may be lost.
        client.write_all(REQUEST).unwrap();
        t.register_waiting();
        assert!(t.conns[conn.0].registered);
        assert!(
            events_for(&mut poll, conn),
            "the waiting read was never reported"
        );
    }

    #[test]
    fn a_blocked_write_registers_the_connection() {
        let (mut t, mut poll, mut client) = transport(false);
        client.write_all(REQUEST).unwrap();
        let conn = accepted(&mut t);
        let mut buf = [0u8; 1024];
        t.read(conn, &mut buf).unwrap();
        let big = vec![b'x'; 1 << 20];
        let mut sent = 0;
        while t.write_vectored(conn, &[IoSlice::new(&big)]).is_ok() {
            sent += 1;
            assert!(sent < 1000, "a loopback socket never filled");
        }
        t.set_interest(conn, Want::WRITE);
        t.register_waiting();
        assert!(t.conns[conn.0].registered);
        // The client reads: the socket turns writable and that is reported.
        client.set_nonblocking(true).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        while client.read(&mut sink).is_ok() {}
        assert!(
            events_for(&mut poll, conn),
            "the writable socket was never reported"
        );
    }

    #[test]
    fn a_file_range_goes_out_whole_and_a_short_file_is_an_error() {
        use std::io::{Seek, SeekFrom};
        let (mut t, mut poll, mut client) = transport(false);
        let conn = accepted(&mut t);
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let (from, len) = (1000u64, 500_000usize);
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; len];
            client.read_exact(&mut got).unwrap();
            got
        });
        let (mut offset, mut left) = (from, len);
        while left > 0 {
            match t.send_file(conn, &file, offset, left) {
                Ok(n) => {
                    offset += n as u64;
                    left -= n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    t.set_interest(conn, Want::WRITE);
                    t.register_waiting();
                    assert!(events_for(&mut poll, conn), "never writable again");
                    t.conns[conn.0].writable = true;
                }
                Err(e) => panic!("send_file failed: {e}"),
            }
        }
        let got = reader.join().unwrap();
        assert!(
            got == data[1000..501_000],
            "the bytes differ from the file's"
        );
        let past_end = t.send_file(conn, &file, data.len() as u64, 10).unwrap_err();
        assert_eq!(past_end.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn nodelay_is_set_on_every_accepted_socket_once_or_inherited() {
        for on_listener in [false, true] {
            let (mut t, _poll, _client) = transport(on_listener);
            let conn = accepted(&mut t);
            let Stream::Tcp(stream) = &t.conns[conn.0].stream else {
                unreachable!()
            };
            assert!(stream.nodelay().unwrap(), "listener nodelay {on_listener}");
            if cfg!(target_os = "linux") {
                assert_eq!(t.nodelay_inherited[0], Some(on_listener));
            }
        }
    }
}
