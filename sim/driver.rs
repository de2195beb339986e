//! The turmoil driver: the production engine over a simulated network and
//! simulated time.
//!
//! turmoil's sockets are async, the engine is readiness-shaped. The bridge:
//! every socket operation polls the turmoil stream once with the waker of the
//! server's host task, so `Pending` becomes `WouldBlock` and registers that
//! task to be woken. The serve loop is a single `poll_fn` that drives the
//! engine until a full pass makes no progress, then sleeps until a socket,
//! an app event or the engine's next deadline wakes it.
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maitre::config::Config;
use maitre::engine::{
    Accepted, AppEvent, AppHead, Body, Clock, Close, ConnId, Engine, Executor, Job, ListenerId,
    Peer, ReqId, Timestamp, Transport, Want,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use turmoil::net::{TcpListener, TcpStream};

pub const PORT: u16 = 80;

/// A shared, ordered record of what happened, for assertions and the
/// determinism canary.
#[derive(Clone, Default)]
pub struct EventLog(Rc<RefCell<Vec<String>>>);

impl EventLog {
    pub fn push(&self, what: impl Into<String>) {
        let t = turmoil::sim_elapsed().unwrap_or_default();
        self.0
            .borrow_mut()
            .push(format!("{:>10.3} {}", t.as_secs_f64(), what.into()));
    }
    pub fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

/// Server-side observations the scenarios assert on.
#[derive(Default)]
pub struct Probe {
    pub connections: Cell<usize>,
    pub peak_connections: Cell<usize>,
    pub accepting: Cell<bool>,
    pub pending_output: Cell<u64>,
    pub peak_output_in_memory: Cell<usize>,
    pub dispatched: Cell<usize>,
    pub cancelled: Cell<usize>,
    pub running_apps: Cell<usize>,
    pub spilled_bodies: Cell<usize>,
    pub peak_pending_output: Cell<u64>,
}

struct SimConn {
    stream: TcpStream,
    want: Want,
    /// The peer reset the connection: writes fail from now on.
    reset: bool,
}

pub struct SimTransport {
    waker: Waker,
    accepted: mpsc::UnboundedReceiver<(TcpStream, std::net::SocketAddr)>,
    accepting: Rc<Cell<bool>>,
    resume: Rc<Notify>,
    conns: Vec<Option<SimConn>>,
    /// Largest write per call: turmoil never makes partial writes by itself.
    write_cap: usize,
    /// Bumped by every operation that moved bytes or connections.
    progress: u64,
    log: EventLog,
}

impl SimTransport {
    fn stream(&mut self, conn: ConnId) -> io::Result<&mut TcpStream> {
        match self.conns.get_mut(conn.0).and_then(Option::as_mut) {
            Some(c) => Ok(&mut c.stream),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "closed")),
        }
    }

    /// Connections that asked for readiness, in id order (deterministic).
    ///
    /// A kernel tells a writer blocked on a full window that the peer reset
    /// (EPOLLERR/EPOLLHUP are always reported, and the next write fails);
    /// turmoil only wakes readers. So write-only connections are peeked: a
    /// reset found there makes their writes fail, as a real socket's would.
    fn poll_ready(&mut self) -> Vec<ConnId> {
        let waker = self.waker.clone();
        let mut ready = Vec::new();
        for (i, slot) in self.conns.iter_mut().enumerate() {
            let Some(c) = slot.as_mut() else { continue };
            if c.want == Want::NONE {
                continue;
            }
            if !c.want.read && !c.reset {
                let mut one = [0u8; 1];
                let mut rb = ReadBuf::new(&mut one);
                if let Poll::Ready(Err(_)) = c
                    .stream
                    .poll_peek(&mut Context::from_waker(&waker), &mut rb)
                {
                    c.reset = true;
                    self.progress += 1;
                    self.log.push(format!("server saw reset c{i}"));
                }
            }
            ready.push(ConnId(i));
        }
        ready
    }

    fn write_bytes(&mut self, conn: ConnId, data: &[u8]) -> io::Result<usize> {
        let waker = self.waker.clone();
        if self
            .conns
            .get(conn.0)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.reset)
        {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let stream = self.stream(conn)?;
        match Pin::new(stream).poll_write(&mut Context::from_waker(&waker), data) {
            Poll::Ready(Ok(n)) => {
                self.progress += 1;
                self.log.push(format!("server write c{} {n}", conn.0));
                Ok(n)
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Transport for SimTransport {
    fn accept(&mut self) -> io::Result<Option<Accepted>> {
        let waker = self.waker.clone();
        match self.accepted.poll_recv(&mut Context::from_waker(&waker)) {
            Poll::Ready(Some((stream, addr))) => {
                let slot = self
                    .conns
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or(self.conns.len());
                if slot == self.conns.len() {
                    self.conns.push(None);
                }
                self.conns[slot] = Some(SimConn {
                    stream,
                    want: Want::READ,
                    reset: false,
                });
                self.progress += 1;
                self.log.push(format!("server accept c{slot} from {addr}"));
                Ok(Some(Accepted {
                    conn: ConnId(slot),
                    peer: Peer::Tcp(addr),
                    listener: ListenerId(0),
                }))
            }
            Poll::Ready(None) | Poll::Pending => Ok(None),
        }
    }

    fn set_accepting(&mut self, on: bool) {
        self.log.push(format!("server accepting {on}"));
        self.accepting.set(on);
        if on {
            self.resume.notify_waiters();
        }
    }

    fn read(&mut self, conn: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        let waker = self.waker.clone();
        let stream = self.stream(conn)?;
        let mut rb = ReadBuf::new(buf);
        match Pin::new(stream).poll_read(&mut Context::from_waker(&waker), &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                self.progress += 1;
                self.log.push(format!("server read c{} {n}", conn.0));
                Ok(n)
            }
            Poll::Ready(Err(e)) => {
                self.progress += 1;
                self.log
                    .push(format!("server read c{} error {}", conn.0, e.kind()));
                Err(e)
            }
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, conn: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut joined = Vec::with_capacity(self.write_cap);
        for b in bufs {
            let room = self.write_cap - joined.len();
            joined.extend_from_slice(&b[..b.len().min(room)]);
            if joined.len() == self.write_cap {
                break;
            }
        }
        self.write_bytes(conn, &joined)
    }

    fn send_file(
        &mut self,
        conn: ConnId,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        let mut chunk = vec![0; len.min(self.write_cap)];
        let n = file.read_at(&mut chunk, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.write_bytes(conn, &chunk[..n])
    }

    fn set_interest(&mut self, conn: ConnId, want: Want) {
        if let Some(c) = self.conns.get_mut(conn.0).and_then(Option::as_mut) {
            c.want = want;
        }
    }

    fn close(&mut self, conn: ConnId, how: Close) {
        if let Some(c) = self.conns.get_mut(conn.0).and_then(Option::take) {
            self.progress += 1;
            self.log.push(format!("server close c{} {how:?}", conn.0));
            drop(c);
        }
    }
}

/// Simulated time: tokio's paused clock, advanced by turmoil.
pub struct SimClock {
    start: tokio::time::Instant,
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp(tokio::time::Instant::now() - self.start)
    }
    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + turmoil::since_epoch().unwrap_or_default()
    }
}

/// What an app sees of a request.
pub struct Request {
    pub target: String,
    pub body: Vec<u8>,
}

/// The app's side of one response: `start`, `write` (which waits for output
/// credit like a WSGI `write()` at `outbuf_high_watermark`), `finish`.
pub struct Responder {
    req: ReqId,
    events: mpsc::UnboundedSender<AppEvent>,
    credit: Rc<Credit>,
}

struct Credit {
    available: Cell<i64>,
    more: Notify,
}

impl Responder {
    pub fn start(&self, status: &str, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let head = AppHead {
            status: status.to_string(),
            headers,
            known_length: None,
        };
        let _ = self.events.send(AppEvent::Head {
            req: self.req,
            head,
        });
    }

    pub async fn write(&self, bytes: Vec<u8>) {
        while self.credit.available.get() < 0 {
            self.credit.more.notified().await;
        }
        self.credit
            .available
            .set(self.credit.available.get() - bytes.len() as i64);
        let _ = self.events.send(AppEvent::Data {
            req: self.req,
            bytes: bytes.into(),
        });
    }

    pub fn finish(&self) {
        let _ = self.events.send(AppEvent::Done { req: self.req });
    }
}

pub type AppFuture = Pin<Box<dyn Future<Output = ()>>>;
pub type App = Rc<dyn Fn(Request, Responder) -> AppFuture>;

/// Runs each request as a task on the server host, on simulated time.
pub struct SimExecutor {
    app: App,
    events: mpsc::UnboundedSender<AppEvent>,
    watermark: i64,
    running: Vec<(ReqId, Rc<Credit>, JoinHandle<()>)>,
    probe: Rc<Probe>,
}

impl Executor for SimExecutor {
    fn dispatch(&mut self, job: Job) {
        self.running.retain(|(_, _, task)| !task.is_finished());
        let body = match job.body {
            Body::Empty => Vec::new(),
            Body::Memory(v) => v,
            Body::File { mut file, .. } => {
                self.probe
                    .spilled_bodies
                    .set(self.probe.spilled_bodies.get() + 1);
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut v).expect("read spilled body");
                v
            }
        };
        let request = Request {
            target: String::from_utf8_lossy(&job.head.target).into_owned(),
            body,
        };
        let credit = Rc::new(Credit {
            available: Cell::new(self.watermark),
            more: Notify::new(),
        });
        let responder = Responder {
            req: job.req,
            events: self.events.clone(),
            credit: credit.clone(),
        };
        let fut = (self.app)(request, responder);
        let probe = self.probe.clone();
        probe.dispatched.set(probe.dispatched.get() + 1);
        let task = tokio::task::spawn_local(async move {
            probe.running_apps.set(probe.running_apps.get() + 1);
            fut.await;
            probe.running_apps.set(probe.running_apps.get() - 1);
        });
        self.running.push((job.req, credit, task));
    }

    fn grant(&mut self, req: ReqId, bytes: usize) {
        if let Some((_, credit, _)) = self.running.iter().find(|(r, _, _)| *r == req) {
            credit.available.set(credit.available.get() + bytes as i64);
            credit.more.notify_waiters();
        }
    }

    fn cancel(&mut self, req: ReqId) {
        if let Some(i) = self.running.iter().position(|(r, _, _)| *r == req) {
            let (_, _, task) = self.running.remove(i);
            if !task.is_finished() {
                self.probe
                    .running_apps
                    .set(self.probe.running_apps.get().saturating_sub(1));
            }
            task.abort();
            self.probe.cancelled.set(self.probe.cancelled.get() + 1);
        }
    }
}

/// Serve `app` on port 80 of the current host until the simulation ends.
pub async fn serve(
    config: Config,
    app: App,
    write_cap: usize,
    log: EventLog,
    probe: Rc<Probe>,
) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    let accepting = Rc::new(Cell::new(true));
    let resume = Rc::new(Notify::new());
    tokio::task::spawn_local(acceptor(
        listener,
        accepted_tx,
        accepting.clone(),
        resume.clone(),
    ));

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let transport = SimTransport {
        waker: Waker::noop().clone(),
        accepted,
        accepting,
        resume,
        conns: Vec::new(),
        write_cap,
        progress: 0,
        log,
    };
    let exec = SimExecutor {
        app,
        events: events_tx,
        watermark: config.outbuf_high_watermark as i64,
        running: Vec::new(),
        probe: probe.clone(),
    };
    let clock = SimClock {
        start: tokio::time::Instant::now(),
    };
    let mut engine = Engine::new(&config, transport, clock, exec);
    let mut sleep = Box::pin(tokio::time::sleep(Duration::ZERO));

    poll_fn(|cx| {
        engine.transport_mut().waker = cx.waker().clone();
        loop {
            let before = engine.transport().progress;
            // Like the mio driver: connections first, then accepts.
            for conn in engine.transport_mut().poll_ready() {
                engine.on_readable(conn);
            }
            engine.on_acceptable();
            let mut batch = Vec::new();
            while let Poll::Ready(Some(ev)) = events.poll_recv(cx) {
                batch.push(ev);
            }
            let had_events = !batch.is_empty();
            if had_events {
                engine.on_app_events(batch);
            }
            if let Some(deadline) = engine.next_deadline() {
                let at = engine.clock().start + deadline.0;
                if tokio::time::Instant::now() >= at {
                    engine.on_timer();
                    continue;
                }
                sleep.as_mut().reset(at);
                if sleep.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            observe(&engine, &probe);
            if !had_events && engine.transport().progress == before {
                return Poll::<()>::Pending;
            }
        }
    })
    .await;
    Ok(())
}

fn observe(engine: &Engine<SimTransport, SimClock, SimExecutor>, probe: &Probe) {
    let n = engine.connection_count();
    probe.connections.set(n);
    probe
        .peak_connections
        .set(probe.peak_connections.get().max(n));
    probe.accepting.set(engine.is_accepting());
    let pending = engine.pending_output();
    probe.pending_output.set(pending);
    probe
        .peak_pending_output
        .set(probe.peak_pending_output.get().max(pending));
    let mem = engine.output_in_memory();
    probe
        .peak_output_in_memory
        .set(probe.peak_output_in_memory.get().max(mem));
}

/// Accepts while the engine wants connections; the rest wait in the backlog.
async fn acceptor(
    listener: TcpListener,
    accepted: mpsc::UnboundedSender<(TcpStream, std::net::SocketAddr)>,
    accepting: Rc<Cell<bool>>,
    resume: Rc<Notify>,
) {
    loop {
        while !accepting.get() {
            resume.notified().await;
        }
        match listener.accept().await {
            Ok(pair) => {
                if accepted.send(pair).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
