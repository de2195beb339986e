//! The engine driven directly, the way a driver drives it, but with every
//! outside effect scripted: a transport whose `accept`/`read`/`write` calls
//! return exactly what the test says, a clock moved by hand, and an executor
//! that only records. No threads, sockets or sleeps; every byte and every
//! call is asserted exactly (the wall clock is fixed, so `Date` is too).
#![cfg(unix)] // send_file reads with `FileExt::read_at`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maitre::config::Config;
use maitre::engine::{
    Accepted, AppEvent, AppHead, Body, Clock, Close, ConnId, Engine, Executor, Job, ListenerId,
    Peer, ReqId, Timestamp, Transport, Want,
};

// ===========================================================================
// The record: everything the engine did, in order.

/// Bytes shown as text in assertion failures.
#[derive(Clone, PartialEq, Eq)]
struct Wire(Vec<u8>);

impl fmt::Debug for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

fn wire(s: impl AsRef<[u8]>) -> Wire {
    Wire(s.as_ref().to_vec())
}

/// What one `read` call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Data(usize),
    Block,
    Eof,
    Fail(ErrorKind),
}

/// One call the engine made on the transport or the executor.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    /// `accept` returned this connection (calls returning `Ok(None)` are `AcceptNone`).
    Accept(ConnId),
    AcceptNone,
    AcceptFailed(ErrorKind),
    SetAccepting(bool),
    Read(ConnId, Got),
    /// A `write_vectored` call that took these bytes.
    Write(ConnId, Wire),
    WriteBlocked(ConnId),
    WriteFailed(ConnId, ErrorKind),
    SendFile {
        conn: ConnId,
        offset: u64,
        len: usize,
        sent: Wire,
    },
    Interest(ConnId, Want),
    Close(ConnId, Close),
    Dispatch(ReqId),
    Grant(ReqId, usize),
    Cancel(ReqId),
}

type Log = Rc<RefCell<Vec<Ev>>>;

// ===========================================================================
// Scripted transport.

/// One scripted `read` result.
#[derive(Clone, Debug)]
enum Step {
    Data(Vec<u8>),
    Block,
    /// End of stream; sticky, like a real socket's.
    Eof,
    Fail(ErrorKind),
}

/// What successive `read` calls on a connection return. Once the script is
/// used up every read is `WouldBlock`.
#[derive(Clone, Debug, Default)]
struct Script(Vec<Step>);

impl Script {
    fn new() -> Self {
        Script::default()
    }
    /// One read returning these bytes (split if the engine's buffer is smaller).
    fn data(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.0.push(Step::Data(bytes.as_ref().to_vec()));
        self
    }
    /// One read per byte, each followed by a `WouldBlock`.
    fn trickle(mut self, bytes: impl AsRef<[u8]>) -> Self {
        for &b in bytes.as_ref() {
            self.0.push(Step::Data(vec![b]));
            self.0.push(Step::Block);
        }
        self
    }
    fn block(mut self) -> Self {
        self.0.push(Step::Block);
        self
    }
    fn eof(mut self) -> Self {
        self.0.push(Step::Eof);
        self
    }
    fn fail(mut self, kind: ErrorKind) -> Self {
        self.0.push(Step::Fail(kind));
        self
    }
}

/// How a connection's writes behave: what the client's receive window lets through.
#[derive(Clone, Debug)]
struct WritePlan {
    /// Most bytes one call takes.
    cap: usize,
    /// Every odd-numbered call (the 1st, 3rd, ...) is `WouldBlock`.
    alternate: bool,
    /// Bytes the client will take until it drains more; `None` is unlimited.
    window: Option<usize>,
    /// Writes fail with this error once this many bytes went out in total.
    fail_at: Option<(usize, ErrorKind)>,
}

impl Default for WritePlan {
    fn default() -> Self {
        WritePlan {
            cap: usize::MAX,
            alternate: false,
            window: None,
            fail_at: None,
        }
    }
}

impl WritePlan {
    fn cap(cap: usize) -> Self {
        WritePlan {
            cap,
            ..WritePlan::default()
        }
    }
    fn alternating(mut self) -> Self {
        self.alternate = true;
        self
    }
    fn window(n: usize) -> Self {
        WritePlan {
            window: Some(n),
            ..WritePlan::default()
        }
    }
    fn fail_at(mut self, at: usize, kind: ErrorKind) -> Self {
        self.fail_at = Some((at, kind));
        self
    }
}

/// One accepted socket (an incarnation: a `ConnId` may be reused later).
struct Sock {
    reads: VecDeque<Step>,
    writes: WritePlan,
    write_calls: usize,
    out: Vec<u8>,
    /// The readiness the transport waits for. Like the mio and turmoil
    /// drivers, a new connection starts registered for reading.
    want: Want,
}

impl Sock {
    fn new(script: Script) -> Self {
        Sock {
            reads: script.0.into(),
            writes: WritePlan::default(),
            write_calls: 0,
            out: Vec::new(),
            want: Want::READ,
        }
    }

    /// The bytes this write call may take, or its scripted error.
    fn budget(&mut self) -> io::Result<usize> {
        self.write_calls += 1;
        let plan = &self.writes;
        if plan.alternate && self.write_calls % 2 == 1 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let mut budget = plan.cap;
        if let Some((at, kind)) = plan.fail_at {
            if self.out.len() >= at {
                return Err(kind.into());
            }
            budget = budget.min(at - self.out.len());
        }
        if let Some(window) = plan.window {
            if window == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            budget = budget.min(window);
        }
        Ok(budget)
    }

    fn took(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        if let Some(window) = &mut self.writes.window {
            *window -= bytes.len();
        }
    }
}

struct Net {
    log: Log,
    /// Connections waiting to be accepted, or errors `accept` returns.
    backlog: VecDeque<Result<Sock, ErrorKind>>,
    /// Every socket ever accepted, in order.
    socks: Vec<Sock>,
    /// `ConnId` -> index into `socks`, for open connections.
    open: Vec<Option<usize>>,
    /// `ConnId` -> index into `socks` of its latest incarnation.
    latest: Vec<Option<usize>>,
}

impl Net {
    fn sock(&mut self, conn: ConnId) -> io::Result<&mut Sock> {
        let i = self
            .open
            .get(conn.0)
            .copied()
            .flatten()
            .ok_or_else(|| io::Error::from(ErrorKind::NotConnected))?;
        Ok(&mut self.socks[i])
    }

    fn record(&self, ev: Ev) {
        self.log.borrow_mut().push(ev);
    }

    fn outcome(&self, conn: ConnId, result: io::Result<Vec<u8>>) -> io::Result<usize> {
        match result {
            Ok(bytes) => {
                let n = bytes.len();
                self.record(Ev::Write(conn, Wire(bytes)));
                Ok(n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.record(Ev::WriteBlocked(conn));
                Err(e)
            }
            Err(e) => {
                self.record(Ev::WriteFailed(conn, e.kind()));
                Err(e)
            }
        }
    }
}

impl Transport for Net {
    fn accept(&mut self) -> io::Result<Option<Accepted>> {
        let sock = match self.backlog.pop_front() {
            None => {
                self.record(Ev::AcceptNone);
                return Ok(None);
            }
            Some(Err(kind)) => {
                self.record(Ev::AcceptFailed(kind));
                return Err(kind.into());
            }
            Some(Ok(sock)) => sock,
        };
        // Lowest free id, as a slab hands them out.
        let id = self
            .open
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.open.len());
        if id == self.open.len() {
            self.open.push(None);
            self.latest.push(None);
        }
        let serial = self.socks.len();
        self.socks.push(sock);
        self.open[id] = Some(serial);
        self.latest[id] = Some(serial);
        self.record(Ev::Accept(ConnId(id)));
        Ok(Some(Accepted {
            conn: ConnId(id),
            peer: Peer::Tcp(format!("10.0.0.1:{}", 40000 + serial).parse().unwrap()),
            listener: ListenerId(0),
        }))
    }

    fn set_accepting(&mut self, on: bool) {
        self.record(Ev::SetAccepting(on));
    }

    fn read(&mut self, conn: ConnId, buf: &mut [u8]) -> io::Result<usize> {
        let sock = self.sock(conn)?;
        let result: io::Result<usize> = match sock.reads.pop_front() {
            None | Some(Step::Block) => Err(ErrorKind::WouldBlock.into()),
            Some(Step::Eof) => {
                sock.reads.push_front(Step::Eof);
                Ok(0)
            }
            Some(Step::Fail(kind)) => Err(kind.into()),
            Some(Step::Data(mut data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() {
                    sock.reads.push_front(Step::Data(data.split_off(n)));
                }
                Ok(n)
            }
        };
        let got = match &result {
            Ok(0) => Got::Eof,
            Ok(n) => Got::Data(*n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Got::Block,
            Err(e) => Got::Fail(e.kind()),
        };
        self.record(Ev::Read(conn, got));
        result
    }

    fn write_vectored(&mut self, conn: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let sock = self.sock(conn)?;
        let result = sock.budget().map(|budget| {
            let mut taken = Vec::new();
            for b in bufs {
                let room = budget - taken.len();
                taken.extend_from_slice(&b[..b.len().min(room)]);
            }
            sock.took(&taken);
            taken
        });
        self.outcome(conn, result)
    }

    fn send_file(
        &mut self,
        conn: ConnId,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        let sock = self.sock(conn)?;
        let budget = match sock.budget() {
            Ok(b) => b,
            Err(e) => return self.outcome(conn, Err(e)),
        };
        let mut chunk = vec![0; len.min(budget)];
        let n = file.read_at(&mut chunk, offset)?;
        chunk.truncate(n);
        sock.took(&chunk);
        self.record(Ev::SendFile {
            conn,
            offset,
            len,
            sent: Wire(chunk),
        });
        Ok(n)
    }

    fn set_interest(&mut self, conn: ConnId, want: Want) {
        self.record(Ev::Interest(conn, want));
        if let Ok(sock) = self.sock(conn) {
            sock.want = want;
        }
    }

    fn close(&mut self, conn: ConnId, how: Close) {
        self.record(Ev::Close(conn, how));
        if let Some(slot) = self.open.get_mut(conn.0) {
            *slot = None;
        }
    }
}

// ===========================================================================
// Manual clock and recording executor.

/// 2025-07-01 12:00:00 UTC.
const WALL: u64 = 1_751_371_200;
const DATE: &str = "Tue, 01 Jul 2025 12:00:00 GMT";

struct ManualClock {
    now: Cell<Duration>,
    wall: Cell<SystemTime>,
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.get())
    }
    fn wall(&self) -> SystemTime {
        self.wall.get()
    }
}

struct Apps {
    log: Log,
    jobs: Vec<Job>,
}

impl Executor for Apps {
    fn dispatch(&mut self, job: Job) {
        self.log.borrow_mut().push(Ev::Dispatch(job.req));
        self.jobs.push(job);
    }
    fn grant(&mut self, req: ReqId, bytes: usize) {
        self.log.borrow_mut().push(Ev::Grant(req, bytes));
    }
    fn cancel(&mut self, req: ReqId) {
        self.log.borrow_mut().push(Ev::Cancel(req));
    }
}

// ===========================================================================
// The harness.

struct H {
    engine: Engine<Net, ManualClock, Apps>,
    log: Log,
}

impl H {
    fn new() -> H {
        H::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut Config)) -> H {
        let mut cfg = Config::default();
        tune(&mut cfg);
        let log: Log = Rc::default();
        let net = Net {
            log: log.clone(),
            backlog: VecDeque::new(),
            socks: Vec::new(),
            open: Vec::new(),
            latest: Vec::new(),
        };
        let clock = ManualClock {
            now: Cell::new(Duration::ZERO),
            wall: Cell::new(UNIX_EPOCH + Duration::from_secs(WALL)),
        };
        let apps = Apps {
            log: log.clone(),
            jobs: Vec::new(),
        };
        H {
            engine: Engine::new(&cfg, net, clock, apps),
            log,
        }
    }

    // --- connections and input

    /// A client connects (its first reads scripted) and the engine is told.
    fn connect_with(&mut self, script: Script) -> ConnId {
        self.backlog(script);
        let mark = self.mark();
        self.engine.on_acceptable();
        self.since(mark)
            .iter()
            .find_map(|ev| match ev {
                Ev::Accept(c) => Some(*c),
                _ => None,
            })
            .expect("the engine accepted the connection")
    }

    fn connect(&mut self) -> ConnId {
        self.connect_with(Script::new())
    }

    /// A client waits in the listen backlog; the engine is not told.
    fn backlog(&mut self, script: Script) {
        self.engine
            .transport_mut()
            .backlog
            .push_back(Ok(Sock::new(script)));
    }

    /// The next `accept` call fails with `kind`.
    fn backlog_error(&mut self, kind: ErrorKind) {
        self.engine.transport_mut().backlog.push_back(Err(kind));
    }

    /// Append to a connection's read script without telling the engine.
    fn script(&mut self, conn: ConnId, script: Script) {
        let sock = self.engine.transport_mut().sock(conn).expect("open");
        sock.reads.extend(script.0);
    }

    /// The client sends `bytes` in one segment and the socket turns readable.
    fn send(&mut self, conn: ConnId, bytes: impl AsRef<[u8]>) {
        self.script(conn, Script::new().data(bytes));
        self.readable(conn);
    }

    fn readable(&mut self, conn: ConnId) {
        self.engine.on_readable(conn);
    }

    fn writable(&mut self, conn: ConnId) {
        self.engine.on_writable(conn);
    }

    fn set_writes(&mut self, conn: ConnId, plan: WritePlan) {
        self.engine.transport_mut().sock(conn).expect("open").writes = plan;
    }

    /// The client reads `n` more bytes, opening its window; the socket turns writable.
    fn drain(&mut self, conn: ConnId, n: usize) {
        let sock = self.engine.transport_mut().sock(conn).expect("open");
        let window = sock.writes.window.get_or_insert(0);
        *window += n;
        self.writable(conn);
    }

    // --- time

    fn advance(&mut self, d: Duration) {
        let clock = self.engine.clock();
        clock.now.set(clock.now.get() + d);
    }

    fn at(secs: f64) -> Timestamp {
        Timestamp(Duration::from_secs_f64(secs))
    }

    /// Move the clock to `secs` after start and fire the timer, as a driver would.
    fn timer_at(&mut self, secs: f64) {
        let target = Duration::from_secs_f64(secs);
        self.engine.clock().now.set(target);
        self.engine.on_timer();
    }

    // --- the application side

    fn jobs(&self) -> &[Job] {
        &self.engine.executor().jobs
    }

    fn job(&self, i: usize) -> &Job {
        &self.jobs()[i]
    }

    fn req(&self, i: usize) -> ReqId {
        self.job(i).req
    }

    fn events(&mut self, events: Vec<AppEvent>) {
        self.engine.on_app_events(events);
    }

    /// The whole answer in one batch: head, one body chunk (if any), done.
    fn app_responds(&mut self, req: ReqId, status: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut batch = vec![head_event(req, status, headers)];
        if !body.is_empty() {
            batch.push(AppEvent::Data {
                req,
                bytes: body.to_vec().into(),
            });
        }
        batch.push(AppEvent::Done { req });
        self.events(batch);
    }

    /// `200 OK` with a Content-Length and `body`.
    fn app_ok(&mut self, req: ReqId, body: &str) {
        let len = body.len().to_string();
        self.app_responds(req, "200 OK", &[("Content-Length", &len)], body.as_bytes());
    }

    fn head(&mut self, req: ReqId, status: &str, headers: &[(&str, &str)]) {
        self.events(vec![head_event(req, status, headers)]);
    }

    fn data(&mut self, req: ReqId, bytes: impl AsRef<[u8]>) {
        self.events(vec![AppEvent::Data {
            req,
            bytes: bytes.as_ref().to_vec().into(),
        }]);
    }

    fn done(&mut self, req: ReqId) {
        self.events(vec![AppEvent::Done { req }]);
    }

    fn failed(&mut self, req: ReqId) {
        self.events(vec![AppEvent::Failed { req, detail: None }]);
    }

    // --- observations

    fn mark(&self) -> usize {
        self.log.borrow().len()
    }

    fn since(&self, mark: usize) -> Vec<Ev> {
        self.log.borrow()[mark..].to_vec()
    }

    /// Events of the kinds `keep` selects, since `mark`.
    fn only(&self, mark: usize, keep: fn(&Ev) -> bool) -> Vec<Ev> {
        self.since(mark).into_iter().filter(keep).collect()
    }

    /// What the client received on the latest connection with this id.
    fn out(&self, conn: ConnId) -> String {
        let net = self.engine.transport();
        let i = net.latest[conn.0].expect("connection existed");
        String::from_utf8_lossy(&net.socks[i].out).into_owned()
    }

    fn out_bytes(&self, conn: ConnId) -> Vec<u8> {
        let net = self.engine.transport();
        let i = net.latest[conn.0].expect("connection existed");
        net.socks[i].out.clone()
    }

    /// What the client received since the last `take`.
    fn take(&mut self, conn: ConnId) -> String {
        let net = self.engine.transport_mut();
        let i = net.latest[conn.0].expect("connection existed");
        String::from_utf8_lossy(&std::mem::take(&mut net.socks[i].out)).into_owned()
    }

    /// The readiness the transport currently waits for on `conn`.
    fn want(&mut self, conn: ConnId) -> Want {
        self.engine.transport_mut().sock(conn).expect("open").want
    }

    fn is_open(&self, conn: ConnId) -> bool {
        self.engine
            .transport()
            .open
            .get(conn.0)
            .copied()
            .flatten()
            .is_some()
    }

    /// Executor calls (dispatch, grant, cancel) since `mark`.
    fn exec(&self, mark: usize) -> Vec<Ev> {
        self.only(mark, |e| {
            matches!(e, Ev::Dispatch(_) | Ev::Grant(..) | Ev::Cancel(_))
        })
    }

    fn closes(&self, mark: usize) -> Vec<Ev> {
        self.only(mark, |e| matches!(e, Ev::Close(..)))
    }

    fn reads(&self, mark: usize, conn: ConnId) -> usize {
        self.since(mark)
            .iter()
            .filter(|e| matches!(e, Ev::Read(c, _) if *c == conn))
            .count()
    }

    fn grants(&self, mark: usize) -> Vec<usize> {
        self.since(mark)
            .iter()
            .filter_map(|e| match e {
                Ev::Grant(_, n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    fn header(&self, i: usize, name: &str) -> Option<String> {
        self.job(i)
            .head
            .header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

fn head_event(req: ReqId, status: &str, headers: &[(&str, &str)]) -> AppEvent {
    AppEvent::Head {
        req,
        head: AppHead {
            status: status.to_string(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            known_length: None,
        },
    }
}

fn body_bytes(body: &mut Body) -> Vec<u8> {
    match body {
        Body::Empty => Vec::new(),
        Body::Memory(v) => v.clone(),
        Body::File { file, .. } => {
            let mut v = Vec::new();
            file.read_to_end(&mut v).unwrap();
            v
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ===========================================================================
// Expected wire bytes, written out the way Waitress formats them.

/// `HTTP/1.1 200 OK` with a Content-Length, keep-alive (no Connection header).
fn ok11(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nDate: {DATE}\r\nServer: maitre\r\n\r\n{body}",
        body.len()
    )
}

/// A server-generated error (Waitress's `Error.to_response`).
fn error(version: &str, status: &str, detail: &str) -> String {
    error_dated(version, status, detail, DATE)
}

fn error_dated(version: &str, status: &str, detail: &str, date: &str) -> String {
    let reason = status.split_once(' ').map_or("", |(_, r)| r);
    let body = format!("{reason}\r\n\r\n{detail}\r\n\r\n(generated by maitre)");
    format!(
        "{version} {status}\r\nConnection: close\r\nContent-Length: {}\r\n\
         Content-Type: text/plain; charset=utf-8\r\nDate: {date}\r\nServer: maitre\r\n\r\n{body}",
        body.len()
    )
}

const INTERNAL: &str = "The server encountered an unexpected internal server error";
const CONTINUE: &str = "HTTP/1.1 100 Continue\r\n\r\n";

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

fn is_read(e: &Ev) -> bool {
    matches!(e, Ev::Read(..))
}

fn is_write(e: &Ev) -> bool {
    matches!(
        e,
        Ev::Write(..) | Ev::WriteBlocked(_) | Ev::WriteFailed(..) | Ev::SendFile { .. }
    )
}

// ===========================================================================
// Reading and writing in small pieces.

#[test]
fn request_split_across_one_byte_reads() {
    let mut h = H::new();
    let c = h.connect();
    let request = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    h.script(c, Script::new().trickle(request));
    for i in 0..request.len() - 1 {
        let mark = h.mark();
        h.readable(c);
        assert_eq!(
            h.only(mark, is_read),
            vec![Ev::Read(c, Got::Data(1)), Ev::Read(c, Got::Block)],
            "byte {i}"
        );
        assert!(h.jobs().is_empty(), "dispatched after {} bytes", i + 1);
    }
    // The last byte completes the head: the request runs and reading stops.
    let mark = h.mark();
    h.readable(c);
    assert_eq!(h.only(mark, is_read), vec![Ev::Read(c, Got::Data(1))]);
    assert_eq!(h.exec(mark), vec![Ev::Dispatch(h.req(0))]);
    let job = h.job(0);
    assert_eq!(job.head.method, "GET");
    assert_eq!(&*job.head.target, b"/a?b=1");
    assert_eq!(
        job.head.headers.iter().collect::<Vec<_>>(),
        [("HOST", &b"x"[..])]
    );
    assert_eq!(job.conn, c);
    assert_eq!(job.peer, Peer::Tcp("10.0.0.1:40000".parse().unwrap()));
    assert_eq!(job.listener, ListenerId(0));
    assert!(matches!(job.body, Body::Empty));
    h.app_ok(h.req(0), "ok");
    assert_eq!(h.out(c), ok11("ok"));
}

/// Writes of at most `cap` bytes where every other call is `WouldBlock`:
/// the bytes arrive intact and in order, one capped write per successful call.
#[rstest::rstest]
#[case(1)]
#[case(3)]
fn response_through_small_writes_with_would_block_alternation(#[case] cap: usize) {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    h.set_writes(c, WritePlan::cap(cap).alternating());
    let mark = h.mark();
    h.app_ok(h.req(0), "hello, world");
    let expected = ok11("hello, world");
    let mut rounds = 0;
    while h.out(c).len() < expected.len() {
        rounds += 1;
        assert!(rounds <= expected.len(), "no progress");
        h.writable(c);
    }
    assert_eq!(h.out(c), expected);
    // Calls strictly alternate: blocked, `cap` bytes, blocked, ... and the
    // last successful write empties the buffer.
    let mut want = Vec::new();
    for piece in expected.as_bytes().chunks(cap) {
        want.push(Ev::WriteBlocked(c));
        want.push(Ev::Write(c, wire(piece)));
    }
    assert_eq!(h.only(mark, is_write), want);
    let interest: Vec<Ev> = h.only(mark, |e| matches!(e, Ev::Interest(..)));
    assert_eq!(
        interest,
        vec![Ev::Interest(c, Want::WRITE), Ev::Interest(c, Want::READ)]
    );
    assert!(h.is_open(c));
}

#[test]
fn batched_head_body_and_end_leave_in_one_write() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    let mark = h.mark();
    let r = h.req(0);
    h.events(vec![
        head_event(r, "200 OK", &[("Content-Type", "text/plain")]),
        AppEvent::Data {
            req: r,
            bytes: b"hello".to_vec().into(),
        },
        AppEvent::Data {
            req: r,
            bytes: b" world".to_vec().into(),
        },
        AppEvent::Done { req: r },
    ]);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: {DATE}\r\nServer: maitre\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
    assert_eq!(h.only(mark, is_write), vec![Ev::Write(c, wire(&response))]);
}

/// `Complete` is `Head`, `Data` and `Done` in one event: the same bytes and
/// the same fate for the connection, whatever the answer.
#[rstest::rstest]
#[case::get("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK", &[], b"hello")]
#[case::head("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK", &[], b"hello")]
#[case::empty("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "204 No Content", &[], b"")]
#[case::http10("GET / HTTP/1.0\r\n\r\n", "200 OK", &[("X", "y")], b"hi")]
#[case::close("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "200 OK", &[], b"hi")]
#[case::refused_status("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "20 OK", &[], b"x")]
#[case::refused_header("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK", &[("Bad Name", "v")], b"x")]
#[case::too_few_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK", &[("Content-Length", "10")], b"abc")]
fn complete_is_head_data_and_done_in_one_event(
    #[case] request: &str,
    #[case] status: &str,
    #[case] headers: &[(&str, &str)],
    #[case] body: &[u8],
) {
    let run = |whole: bool| {
        let mut h = H::new();
        let c = h.connect();
        h.send(c, request);
        let r = h.req(0);
        let head = AppHead {
            status: status.to_string(),
            headers: headers.iter().copied().collect(),
            known_length: Some(body.len() as u64),
        };
        let events = if whole {
            vec![AppEvent::Complete {
                req: r,
                head,
                body: body.to_vec().into(),
            }]
        } else {
            let mut events = vec![AppEvent::Head { req: r, head }];
            if !body.is_empty() {
                events.push(AppEvent::Data {
                    req: r,
                    bytes: body.to_vec().into(),
                });
            }
            events.push(AppEvent::Done { req: r });
            events
        };
        h.events(events);
        let answer = h.take(c);
        let open = h.is_open(c);
        // A keep-alive connection goes on to its next request.
        let next = open.then(|| {
            h.send(c, get("/next"));
            h.app_ok(h.req(1), "next");
            h.take(c)
        });
        (answer, open, next)
    };
    let separate = run(false);
    assert!(separate.0.starts_with("HTTP/1."), "{separate:?}");
    assert_eq!(run(true), separate);
}

#[test]
fn unbatched_chunked_end_leaves_in_its_own_write() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    let mark = h.mark();
    let r = h.req(0);
    h.head(r, "200 OK", &[]);
    assert_eq!(
        h.only(mark, is_write),
        vec![],
        "the head waits for the body"
    );
    h.data(r, "hello");
    h.done(r);
    let head = format!(
        "HTTP/1.1 200 OK\r\nDate: {DATE}\r\nServer: maitre\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    assert_eq!(
        h.only(mark, is_write),
        vec![
            Ev::Write(c, wire(format!("{head}5\r\nhello\r\n"))),
            Ev::Write(c, wire("0\r\n\r\n")),
        ]
    );
}

// ===========================================================================
// Keep-alive and framing decisions.

#[test]
fn two_sequential_requests_on_one_connection() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/1"));
    h.app_ok(h.req(0), "one");
    assert_eq!(h.take(c), ok11("one"));
    h.send(c, get("/2"));
    assert_eq!(h.jobs().len(), 2);
    assert_eq!(&*h.job(1).head.target, b"/2");
    assert_ne!(h.req(0), h.req(1));
    assert_eq!(h.req(1).conn(), c);
    h.app_ok(h.req(1), "two");
    assert_eq!(h.take(c), ok11("two"));
    assert!(h.is_open(c));
    assert_eq!(h.closes(0), vec![]);
    // Each answer came with its Done, so the app had finished before its
    // bytes left: no credit is granted to a finished request.
    assert_eq!(
        h.exec(0),
        vec![Ev::Dispatch(h.req(0)), Ev::Dispatch(h.req(1))]
    );
}

#[test]
fn http10_keep_alive_with_content_length_stays_open() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    h.app_ok(h.req(0), "hi");
    assert_eq!(
        h.take(c),
        format!(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\nDate: {DATE}\r\n\
             Server: maitre\r\n\r\nhi"
        )
    );
    assert!(h.is_open(c));
    h.send(c, "GET /again HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_eq!(h.jobs().len(), 2);
}

#[test]
fn http10_keep_alive_without_content_length_closes() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let mark = h.mark();
    h.app_responds(h.req(0), "200 OK", &[], b"hi");
    assert_eq!(
        h.out(c),
        format!("HTTP/1.0 200 OK\r\nConnection: close\r\nDate: {DATE}\r\nServer: maitre\r\n\r\nhi")
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
}

#[rstest::rstest]
#[case::with_length(&[("Content-Length", "2")], "Connection: close\r\nContent-Length: 2\r\n")]
#[case::without_length(&[], "Connection: close\r\n")]
fn http10_without_keep_alive_closes(#[case] headers: &[(&str, &str)], #[case] framing_lines: &str) {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n");
    let mark = h.mark();
    h.app_responds(h.req(0), "200 OK", headers, b"hi");
    assert_eq!(
        h.out(c),
        format!("HTTP/1.0 200 OK\r\n{framing_lines}Date: {DATE}\r\nServer: maitre\r\n\r\nhi")
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
}

#[test]
fn connection_close_on_http11_closes_and_drops_what_follows() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        "GET /1 HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
    );
    let mark = h.mark();
    h.app_ok(h.req(0), "bye");
    assert_eq!(
        h.out(c),
        format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\nDate: {DATE}\r\n\
             Server: maitre\r\n\r\nbye"
        )
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(
        h.jobs().len(),
        1,
        "the request after Connection: close never runs"
    );
}

#[test]
fn chunked_response_ends_with_last_chunk_and_keeps_connection_open() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/stream"));
    let r = h.req(0);
    h.head(r, "200 OK", &[]);
    h.data(r, "hello");
    h.data(r, vec![b'x'; 26]);
    h.done(r);
    assert_eq!(
        h.take(c),
        format!(
            "HTTP/1.1 200 OK\r\nDate: {DATE}\r\nServer: maitre\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n1A\r\n{}\r\n0\r\n\r\n",
            "x".repeat(26)
        )
    );
    assert!(h.is_open(c));
    h.send(c, get("/next"));
    assert_eq!(h.jobs().len(), 2);
}

#[test]
fn head_request_gets_the_head_only() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    h.app_ok(h.req(0), "hello");
    assert_eq!(
        h.take(c),
        format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: {DATE}\r\nServer: maitre\r\n\r\n")
    );
    // Without a length: no Transfer-Encoding, no chunk terminator, still open.
    h.send(c, "HEAD /gen HTTP/1.1\r\nHost: x\r\n\r\n");
    h.app_responds(h.req(1), "200 OK", &[], b"streamed");
    assert_eq!(
        h.take(c),
        format!("HTTP/1.1 200 OK\r\nDate: {DATE}\r\nServer: maitre\r\n\r\n")
    );
    // A HEAD answer with no body at all is not "too few bytes" (#428).
    h.send(c, "HEAD /file HTTP/1.1\r\nHost: x\r\n\r\n");
    h.app_responds(h.req(2), "200 OK", &[("Content-Length", "1000")], b"");
    assert_eq!(
        h.take(c),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nDate: {DATE}\r\nServer: maitre\r\n\r\n"
        )
    );
    assert!(h.is_open(c));
    assert_eq!(h.closes(0), vec![]);
}

#[rstest::rstest]
#[case::no_content("204 No Content", "")]
#[case::not_modified("304 Not Modified", "Content-Length: 5\r\n")]
fn bodiless_statuses_send_no_body_and_keep_the_connection(
    #[case] status: &str,
    #[case] length_line: &str,
) {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    h.app_responds(h.req(0), status, &[("Content-Length", "5")], b"hello");
    assert_eq!(
        h.take(c),
        format!("HTTP/1.1 {status}\r\n{length_line}Date: {DATE}\r\nServer: maitre\r\n\r\n")
    );
    assert!(h.is_open(c));
    h.send(c, get("/2"));
    h.app_ok(h.req(1), "x");
    assert_eq!(h.take(c), ok11("x"));
}

// ===========================================================================
// Pipelining and lookahead.

#[test]
fn five_pipelined_requests_answered_in_order_one_at_a_time() {
    let mut h = H::new();
    let c = h.connect();
    let all: String = (1..=5).map(|i| get(&format!("/{i}"))).collect();
    let mark = h.mark();
    h.send(c, &all);
    assert_eq!(h.reads(mark, c), 1, "all five arrive in one read");
    assert_eq!(h.jobs().len(), 1, "only the first runs");
    for i in 0..5 {
        let before = h.mark();
        h.app_ok(h.req(i), &format!("r{}", i + 1));
        assert_eq!(h.take(c), ok11(&format!("r{}", i + 1)));
        // The next request is dispatched after this response was written.
        let mut want = vec![Ev::Write(c, wire(ok11(&format!("r{}", i + 1))))];
        if i < 4 {
            want.push(Ev::Dispatch(h.req(i + 1)));
        }
        assert_eq!(
            h.only(before, |e| matches!(e, Ev::Write(..) | Ev::Dispatch(_))),
            want
        );
    }
    let targets: Vec<&[u8]> = h.jobs().iter().map(|j| &*j.head.target).collect();
    assert_eq!(targets, [&b"/1"[..], b"/2", b"/3", b"/4", b"/5"]);
    assert!(h.is_open(c));
}

#[test]
fn bad_request_after_two_good_ones_is_answered_in_turn_then_closes() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        format!(
            "{}{}get /3 HTTP/1.1\r\n\r\n{}",
            get("/1"),
            get("/2"),
            get("/4")
        ),
    );
    assert_eq!(h.jobs().len(), 1);
    h.app_ok(h.req(0), "one");
    assert_eq!(h.jobs().len(), 2);
    let mark = h.mark();
    h.app_ok(h.req(1), "two");
    assert_eq!(
        h.out(c),
        format!(
            "{}{}{}",
            ok11("one"),
            ok11("two"),
            error(
                "HTTP/1.0",
                "400 Bad Request",
                "Malformed HTTP method \"get\""
            )
        )
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(h.jobs().len(), 2, "nothing after the bad request runs");
}

#[test]
fn lookahead_zero_reads_nothing_while_a_request_runs() {
    let mut h = H::new();
    let c = h.connect();
    let mark = h.mark();
    h.send(c, get("/1"));
    assert_eq!(
        h.only(mark, |e| matches!(e, Ev::Interest(..))),
        vec![Ev::Interest(c, Want::NONE)]
    );
    h.script(c, Script::new().data(get("/2")));
    let mark = h.mark();
    h.readable(c);
    h.readable(c);
    assert_eq!(h.reads(mark, c), 0);
    assert_eq!(h.jobs().len(), 1);
    // Once the answer is written, the next request is read and runs.
    let mark = h.mark();
    h.app_ok(h.req(0), "1");
    assert_eq!(
        h.only(mark, is_read),
        vec![Ev::Read(c, Got::Data(get("/2").len()))]
    );
    assert_eq!(h.jobs().len(), 2);
    assert_eq!(&*h.job(1).head.target, b"/2");
}

#[test]
fn lookahead_two_reads_ahead_until_three_requests_wait() {
    let mut h = H::with(|c| c.channel_request_lookahead = 2);
    let c = h.connect();
    h.send(c, get("/1"));
    let mark = h.mark();
    h.send(c, get("/2"));
    h.send(c, get("/3"));
    assert_eq!(
        h.only(mark, is_read),
        vec![
            Ev::Read(c, Got::Data(get("/2").len())),
            Ev::Read(c, Got::Block),
            Ev::Read(c, Got::Data(get("/3").len())),
        ],
        "three waiting requests exceed the lookahead: no read after the third"
    );
    assert_eq!(
        h.only(mark, |e| matches!(e, Ev::Interest(..))),
        vec![Ev::Interest(c, Want::NONE)]
    );
    let mark = h.mark();
    h.send(c, get("/4"));
    assert_eq!(h.reads(mark, c), 0);
    assert_eq!(h.jobs().len(), 1);
    // The first answer frees a place: /2 runs and /4 is read.
    h.app_ok(h.req(0), "1");
    assert_eq!(h.jobs().len(), 2);
    assert_eq!(h.reads(mark, c), 1, "/4, after which three wait again");
    for i in 1..4 {
        h.app_ok(h.req(i), &(i + 1).to_string());
    }
    assert_eq!(
        h.out(c),
        format!("{}{}{}{}", ok11("1"), ok11("2"), ok11("3"), ok11("4"))
    );
}

#[test]
fn eof_during_a_running_request_with_lookahead_cancels_and_closes() {
    let mut h = H::with(|c| c.channel_request_lookahead = 2);
    let c = h.connect();
    h.send(c, format!("{}{}", get("/1"), get("/2")));
    let r = h.req(0);
    let mark = h.mark();
    h.script(c, Script::new().eof());
    h.readable(c);
    assert_eq!(
        h.only(mark, |e| !matches!(e, Ev::Interest(..))),
        vec![
            Ev::Read(c, Got::Eof),
            Ev::Cancel(r),
            Ev::Close(c, Close::Fin)
        ]
    );
    assert_eq!(h.engine.connection_count(), 0);
    assert_eq!(h.jobs().len(), 1, "the queued /2 never reaches the app");
    // The app's late answer goes nowhere.
    let mark = h.mark();
    h.app_ok(r, "late");
    assert_eq!(h.since(mark), vec![]);
    assert_eq!(h.out(c), "");
}

#[test]
fn eof_with_lookahead_zero_is_seen_after_the_response() {
    let mut h = H::new();
    let c = h.connect();
    h.script(c, Script::new().data(get("/1")).eof());
    h.readable(c);
    let mark = h.mark();
    h.app_ok(h.req(0), "done");
    assert_eq!(h.out(c), ok11("done"));
    assert_eq!(
        h.only(mark, |e| !matches!(e, Ev::Interest(..))),
        vec![
            Ev::Write(c, wire(ok11("done"))),
            Ev::Read(c, Got::Eof),
            Ev::Close(c, Close::Fin)
        ]
    );
}

// ===========================================================================
// Request bodies.

#[test]
fn content_length_body_split_over_many_reads() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
    );
    for part in ["01", "234", "5678"] {
        h.send(c, part);
        assert!(h.jobs().is_empty());
    }
    h.send(c, "9");
    assert_eq!(h.jobs().len(), 1);
    assert_eq!(h.header(0, "CONTENT_LENGTH").as_deref(), Some("10"));
    let mut body = std::mem::replace(&mut h.engine.executor_mut().jobs[0].body, Body::Empty);
    assert!(matches!(body, Body::Memory(_)));
    assert_eq!(body_bytes(&mut body), b"0123456789");
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhel",
    );
    h.send(c, "lo\r\n6;a;b=\"q r\"\r\n world\r\n0\r\nX-Trailer: ");
    assert!(h.jobs().is_empty());
    h.send(c, format!("yes\r\n\r\n{}", get("/next")));
    assert_eq!(h.jobs().len(), 1);
    assert_eq!(
        h.job(0).head.headers.iter().collect::<Vec<_>>(),
        [("HOST", &b"x"[..]), ("CONTENT_LENGTH", b"11")],
        "Transfer-Encoding removed, the decoded length set, trailers dropped"
    );
    let mut body = std::mem::replace(&mut h.engine.executor_mut().jobs[0].body, Body::Empty);
    assert_eq!(body_bytes(&mut body), b"hello world");
    h.app_ok(h.req(0), "a");
    assert_eq!(
        &*h.job(1).head.target,
        b"/next",
        "bytes after the body are the next request"
    );
}

#[rstest::rstest]
#[case::below_overflow(15, false)]
#[case::at_overflow(16, true)]
#[case::above_overflow(40, true)]
fn body_reaching_inbuf_overflow_arrives_as_a_file(#[case] len: usize, #[case] file: bool) {
    let mut h = H::with(|c| c.inbuf_overflow = 16);
    let c = h.connect();
    let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    h.send(
        c,
        format!("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n"),
    );
    h.send(c, &payload[..len / 2]);
    h.send(c, &payload[len / 2..]);
    let mut body = std::mem::replace(&mut h.engine.executor_mut().jobs[0].body, Body::Empty);
    assert_eq!(body.len(), len as u64);
    assert_eq!(matches!(body, Body::File { .. }), file, "{body:?}");
    assert_eq!(body_bytes(&mut body), payload);
}

#[test]
fn content_length_with_chunked_is_decoded_as_chunked_and_closes() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n0\r\n\r\n{}",
            get("/smuggled")
        ),
    );
    assert_eq!(h.header(0, "CONTENT_LENGTH").as_deref(), Some("3"));
    let mut body = std::mem::replace(&mut h.engine.executor_mut().jobs[0].body, Body::Empty);
    assert_eq!(body_bytes(&mut body), b"abc");
    let mark = h.mark();
    h.app_ok(h.req(0), "ok");
    assert_eq!(
        h.out(c),
        format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\nDate: {DATE}\r\n\
             Server: maitre\r\n\r\nok"
        )
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(h.jobs().len(), 1);
}

#[test]
fn oversized_content_length_gets_413_without_reading_the_body() {
    let mut h = H::with(|c| c.max_request_body_size = 10);
    let c = h.connect();
    let mark = h.mark();
    h.script(
        c,
        Script::new()
            .data("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            .data("0123456789"),
    );
    h.readable(c);
    assert_eq!(
        h.out(c),
        error(
            "HTTP/1.1",
            "413 Request Entity Too Large",
            "exceeds max_body of 10"
        )
    );
    assert_eq!(h.reads(mark, c), 1, "the body is never read");
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert!(h.jobs().is_empty());
}

#[rstest::rstest]
#[case::complete(format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(60)))]
#[case::incomplete(format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(60)))]
fn oversized_head_gets_431(#[case] request: String) {
    let mut h = H::with(|c| c.max_request_header_size = 64);
    let c = h.connect();
    let mark = h.mark();
    h.send(c, request);
    assert_eq!(
        h.out(c),
        error(
            "HTTP/1.0",
            "431 Request Header Fields Too Large",
            "exceeds max_header of 64"
        )
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert!(h.jobs().is_empty());
}

// ===========================================================================
// Expect: 100-continue.

#[test]
fn continue_is_written_before_the_body_is_read() {
    let mut h = H::new();
    let c = h.connect();
    let head = "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    let mark = h.mark();
    h.script(c, Script::new().data(head).block().data("hello"));
    h.readable(c);
    assert_eq!(
        h.only(mark, |e| is_read(e) || is_write(e)),
        vec![
            Ev::Read(c, Got::Data(head.len())),
            Ev::Write(c, wire(CONTINUE)),
            Ev::Read(c, Got::Block),
        ]
    );
    assert!(h.jobs().is_empty());
    h.readable(c);
    assert_eq!(h.jobs().len(), 1);
    assert_eq!(h.header(0, "EXPECT").as_deref(), Some("100-continue"));
    h.app_ok(h.req(0), "got it");
    assert_eq!(h.out(c), format!("{CONTINUE}{}", ok11("got it")));
}

#[test]
fn continue_is_sent_even_when_the_body_came_with_the_head() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(h.jobs().len(), 1);
    h.app_ok(h.req(0), "ok");
    assert_eq!(h.out(c), format!("{CONTINUE}{}", ok11("ok")));
}

#[test]
fn no_continue_for_a_request_without_a_body() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(h.jobs().len(), 1, "the request is not swallowed");
    assert_eq!(h.out(c), "");
    h.app_ok(h.req(0), "ok");
    assert_eq!(h.out(c), ok11("ok"));
}

#[test]
fn no_continue_before_a_known_413() {
    let mut h = H::with(|c| c.max_request_body_size = 4);
    let c = h.connect();
    h.send(
        c,
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(
        h.out(c),
        error(
            "HTTP/1.1",
            "413 Request Entity Too Large",
            "exceeds max_body of 4"
        )
    );
}

#[test]
fn continue_behind_a_running_request_waits_for_its_response() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        format!(
            "{}POST /2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            get("/1")
        ),
    );
    assert_eq!(h.out(c), "", "no 100 while /1 runs");
    let mark = h.mark();
    h.app_ok(h.req(0), "first");
    assert_eq!(
        h.only(mark, is_write),
        vec![
            Ev::Write(c, wire(ok11("first"))),
            Ev::Write(c, wire(CONTINUE))
        ]
    );
    h.send(c, "abc");
    assert_eq!(h.jobs().len(), 2);
    let mut body = std::mem::replace(&mut h.engine.executor_mut().jobs[1].body, Body::Empty);
    assert_eq!(body_bytes(&mut body), b"abc");
    h.app_ok(h.req(1), "second");
    assert_eq!(
        h.out(c),
        format!("{}{CONTINUE}{}", ok11("first"), ok11("second"))
    );
}

// ===========================================================================
// What the application does.

#[test]
fn app_failure_before_the_head_is_a_500_and_closes() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, format!("{}{}", get("/boom"), get("/after")));
    let r = h.req(0);
    let mark = h.mark();
    h.failed(r);
    assert_eq!(
        h.out(c),
        error("HTTP/1.1", "500 Internal Server Error", INTERNAL)
    );
    // The engine also tells the (already failed) app to stop.
    assert_eq!(h.exec(mark), vec![Ev::Cancel(r)]);
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(h.jobs().len(), 1, "the pipelined request is dropped");
}

#[test]
fn app_failure_with_a_traceback_puts_it_in_the_500_body() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, "GET / HTTP/1.0\r\n\r\n");
    let r = h.req(0);
    h.head(r, "200 OK", &[("Content-Length", "5")]);
    h.events(vec![AppEvent::Failed {
        req: r,
        detail: Some("Traceback: ValueError".to_string()),
    }]);
    assert_eq!(
        h.out(c),
        error(
            "HTTP/1.0",
            "500 Internal Server Error",
            "Traceback: ValueError"
        ),
        "a head not yet sent is replaced by the 500"
    );
}

#[rstest::rstest]
#[case::length(
    &[("Content-Length", "10")],
    format!("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nDate: {DATE}\r\nServer: maitre\r\n\r\nhello")
)]
#[case::chunked(
    &[],
    format!(
        "HTTP/1.1 200 OK\r\nDate: {DATE}\r\nServer: maitre\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n"
    )
)]
fn app_failure_after_the_head_truncates_and_closes(
    #[case] headers: &[(&str, &str)],
    #[case] expected: String,
) {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    let r = h.req(0);
    h.head(r, "200 OK", headers);
    h.data(r, "hello");
    let mark = h.mark();
    h.failed(r);
    assert_eq!(h.out(c), expected, "no terminator, nothing more");
    assert_eq!(h.since(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(h.exec(0), vec![Ev::Dispatch(r), Ev::Grant(r, 5)]);
}

#[rstest::rstest]
#[case::hop_by_hop("200 OK", ("Connection", "close"))]
#[case::hop_by_hop_mixed_case("200 OK", ("transfer-Encoding", "chunked"))]
#[case::cr_in_value("200 OK", ("X-Split", "a\rb"))]
#[case::lf_in_value("200 OK", ("X-Split", "a\nSet-Cookie: x=1"))]
#[case::bad_name("200 OK", ("X Bad", "v"))]
#[case::bad_length("200 OK", ("Content-Length", "-1"))]
#[case::bad_status("OK", ("X-Fine", "v"))]
fn invalid_app_head_is_a_500_and_cancels_the_app(
    #[case] status: &str,
    #[case] header: (&str, &str),
) {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    let r = h.req(0);
    let mark = h.mark();
    h.events(vec![
        head_event(r, status, &[header]),
        AppEvent::Data {
            req: r,
            bytes: b"secret".to_vec().into(),
        },
    ]);
    assert_eq!(
        h.out(c),
        error("HTTP/1.1", "500 Internal Server Error", INTERNAL)
    );
    assert_eq!(h.exec(mark), vec![Ev::Cancel(r)]);
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    // The app's remaining events are ignored.
    let mark = h.mark();
    h.data(r, "more");
    h.done(r);
    assert_eq!(h.since(mark), vec![]);
}

#[test]
fn app_done_without_a_head_is_a_500() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    let r = h.req(0);
    let mark = h.mark();
    // Body bytes before start_response have nowhere to go.
    h.data(r, "orphan");
    assert_eq!(h.only(mark, is_write), vec![]);
    h.done(r);
    assert_eq!(
        h.out(c),
        error("HTTP/1.1", "500 Internal Server Error", INTERNAL)
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
}

#[test]
fn surplus_bytes_beyond_content_length_are_dropped_and_the_connection_kept() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    h.app_responds(
        h.req(0),
        "200 OK",
        &[("Content-Length", "5")],
        b"helloEXTRA",
    );
    assert_eq!(h.take(c), ok11("hello"));
    assert!(h.is_open(c));
    h.send(c, get("/2"));
    h.app_ok(h.req(1), "2");
    assert_eq!(h.take(c), ok11("2"));
}

#[test]
fn too_few_bytes_for_content_length_close_after_the_response() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, format!("{}{}", get("/"), get("/next")));
    let mark = h.mark();
    h.app_responds(h.req(0), "200 OK", &[("Content-Length", "5")], b"hel");
    assert_eq!(
        h.out(c),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: {DATE}\r\nServer: maitre\r\n\r\nhel"
        )
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(h.jobs().len(), 1);
}

#[test]
fn events_for_an_old_request_on_a_reused_conn_id_are_ignored() {
    let mut h = H::with(|c| c.channel_request_lookahead = 1);
    let c = h.connect_with(Script::new().data(get("/old")).block().eof());
    let old = h.req(0);
    h.readable(c);
    assert_eq!(h.closes(0), vec![Ev::Close(c, Close::Fin)]);
    let c2 = h.connect();
    assert_eq!(c2, c, "the id is reused");
    h.send(c2, get("/new"));
    let new = h.req(1);
    assert_eq!(new.conn(), old.conn());
    assert_ne!(new, old);
    let mark = h.mark();
    h.app_ok(old, "stale");
    h.failed(old);
    // (The connection is pumped, and with lookahead 1 it may read; nothing else.)
    assert_eq!(
        h.only(mark, |e| !matches!(e, Ev::Read(_, Got::Block))),
        vec![],
        "the old request's events do nothing"
    );
    h.app_ok(new, "fresh");
    assert_eq!(h.out(c2), ok11("fresh"));
}

fn temp_file(contents: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(contents).unwrap();
    f
}

#[test]
fn file_event_goes_out_with_send_file() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/file"));
    let r = h.req(0);
    h.set_writes(c, WritePlan::cap(3));
    let mark = h.mark();
    h.events(vec![
        head_event(r, "200 OK", &[("Content-Length", "7")]),
        AppEvent::File {
            req: r,
            file: temp_file(b"0123456789"),
            offset: 2,
            len: 7,
        },
        AppEvent::Done { req: r },
    ]);
    assert_eq!(h.out(c), ok11("2345678"));
    let files: Vec<Ev> = h.only(mark, |e| matches!(e, Ev::SendFile { .. }));
    assert_eq!(
        files,
        vec![
            Ev::SendFile {
                conn: c,
                offset: 2,
                len: 7,
                sent: wire("234")
            },
            Ev::SendFile {
                conn: c,
                offset: 5,
                len: 4,
                sent: wire("567")
            },
            Ev::SendFile {
                conn: c,
                offset: 8,
                len: 1,
                sent: wire("8")
            },
        ]
    );
    assert!(h.is_open(c));
}

#[test]
fn file_event_in_a_chunked_response_is_framed() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/file"));
    let r = h.req(0);
    h.events(vec![
        head_event(r, "200 OK", &[]),
        AppEvent::Data {
            req: r,
            bytes: b"<".to_vec().into(),
        },
        AppEvent::File {
            req: r,
            file: temp_file(b"abcdefghijklmnopq"),
            offset: 0,
            len: 17,
        },
        AppEvent::Data {
            req: r,
            bytes: b">".to_vec().into(),
        },
        AppEvent::Done { req: r },
    ]);
    assert_eq!(
        h.out(c),
        format!(
            "HTTP/1.1 200 OK\r\nDate: {DATE}\r\nServer: maitre\r\nTransfer-Encoding: chunked\r\n\r\n\
             1\r\n<\r\n11\r\nabcdefghijklmnopq\r\n1\r\n>\r\n0\r\n\r\n"
        )
    );
}

#[test]
fn file_shorter_than_announced_breaks_the_connection() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/file"));
    let r = h.req(0);
    let mark = h.mark();
    h.events(vec![
        head_event(r, "200 OK", &[("Content-Length", "10")]),
        AppEvent::File {
            req: r,
            file: temp_file(b"abc"),
            offset: 0,
            len: 10,
        },
    ]);
    let head =
        format!("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nDate: {DATE}\r\nServer: maitre\r\n\r\n");
    assert_eq!(
        h.since(mark),
        vec![
            Ev::Write(c, wire(&head)),
            Ev::SendFile {
                conn: c,
                offset: 0,
                len: 10,
                sent: wire("abc")
            },
            Ev::SendFile {
                conn: c,
                offset: 3,
                len: 7,
                sent: wire("")
            },
            Ev::Cancel(r),
            Ev::Close(c, Close::Fin),
        ]
    );
}

#[test]
fn empty_data_does_not_send_the_head_early() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    let r = h.req(0);
    h.head(r, "200 OK", &[("Content-Length", "1")]);
    let mark = h.mark();
    h.data(r, Vec::new());
    assert_eq!(h.only(mark, is_write), vec![]);
    // The app may still fail with a clean 500: nothing was sent.
    h.data(r, "x");
    h.done(r);
    assert_eq!(h.out(c), ok11("x"));
}

// ===========================================================================
// Output flow control.

#[test]
fn grants_follow_the_client_draining_the_output() {
    let mut h = H::with(|c| c.outbuf_high_watermark = 8);
    let c = h.connect();
    h.send(c, get("/"));
    let r = h.req(0);
    h.set_writes(c, WritePlan::window(0));
    let mark = h.mark();
    h.head(r, "200 OK", &[("Content-Length", "30")]);
    for part in ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"] {
        h.data(r, part);
    }
    assert_eq!(h.grants(mark), Vec::<usize>::new(), "nothing left yet");
    let head =
        format!("HTTP/1.1 200 OK\r\nContent-Length: 30\r\nDate: {DATE}\r\nServer: maitre\r\n\r\n");
    assert_eq!(head.len(), 92);
    // The client takes 16 bytes at a time: 122 bytes in 8 rounds. Credit is
    // exactly the payload that has left: none while the head goes out, then
    // 96 - 92 = 4, then 16, then the last 10.
    let per_round: Vec<Vec<usize>> = (0..8)
        .map(|_| {
            let before = h.mark();
            h.drain(c, 16);
            h.grants(before)
        })
        .collect();
    assert_eq!(
        per_round,
        [
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![4],
            vec![16],
            vec![10]
        ]
    );
    assert_eq!(h.grants(mark).iter().sum::<usize>(), 30);
    h.done(r);
    assert_eq!(h.out(c), ok11("aaaaaaaaaabbbbbbbbbbcccccccccc"),);
}

#[test]
fn output_past_outbuf_overflow_waits_on_disk_and_arrives_in_order() {
    const OVERFLOW: usize = 4096;
    let mut h = H::with(|c| c.outbuf_overflow = OVERFLOW);
    let c = h.connect();
    h.send(c, get("/big"));
    let r = h.req(0);
    h.set_writes(c, WritePlan::window(0));
    let chunks: Vec<Vec<u8>> = (0..50u32)
        .map(|i| (0..4000u32).map(|j| ((i * 7 + j) % 251) as u8).collect())
        .collect();
    let payload: Vec<u8> = chunks.concat();
    let len = payload.len().to_string();
    let mark = h.mark();
    h.head(r, "200 OK", &[("Content-Length", &len)]);
    for chunk in &chunks {
        h.data(r, chunk);
        assert!(
            h.engine.output_in_memory() <= OVERFLOW,
            "{} bytes in memory",
            h.engine.output_in_memory()
        );
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nDate: {DATE}\r\nServer: maitre\r\n\r\n"
    );
    assert_eq!(
        h.engine.pending_output(),
        (head.len() + payload.len()) as u64
    );
    let mut rounds = 0;
    while h.engine.pending_output() > 0 {
        rounds += 1;
        assert!(rounds < 100, "no progress");
        h.drain(c, 7000);
        assert!(h.engine.output_in_memory() <= OVERFLOW + 64 * 1024);
    }
    let mut expected = head.into_bytes();
    expected.extend_from_slice(&payload);
    assert!(h.out_bytes(c) == expected, "bytes differ or out of order");
    assert_eq!(h.grants(mark).iter().sum::<usize>(), payload.len());
    h.done(r);
    assert!(h.is_open(c));
}

// ===========================================================================
// Socket errors.

#[test]
fn reset_on_read_mid_head_closes_without_running_anything() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, "GET / HTTP/1.1\r\nHo");
    let mark = h.mark();
    h.script(c, Script::new().fail(ErrorKind::ConnectionReset));
    h.readable(c);
    assert_eq!(
        h.since(mark),
        vec![
            Ev::Read(c, Got::Fail(ErrorKind::ConnectionReset)),
            Ev::Close(c, Close::Fin)
        ]
    );
    assert!(h.jobs().is_empty());
    assert_eq!(h.engine.connection_count(), 0);
}

#[test]
fn reset_on_read_mid_body_closes_without_running_anything() {
    let mut h = H::new();
    let c = h.connect();
    h.send(
        c,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
    );
    let mark = h.mark();
    h.script(
        c,
        Script::new().data("def").fail(ErrorKind::ConnectionReset),
    );
    h.readable(c);
    assert_eq!(
        h.only(mark, |e| !matches!(e, Ev::Interest(..))),
        vec![
            Ev::Read(c, Got::Data(3)),
            Ev::Read(c, Got::Fail(ErrorKind::ConnectionReset)),
            Ev::Close(c, Close::Fin)
        ]
    );
    assert!(h.jobs().is_empty());
}

#[test]
fn reset_on_read_while_a_request_runs_cancels_it() {
    let mut h = H::with(|c| c.channel_request_lookahead = 1);
    let c = h.connect();
    h.send(c, get("/"));
    let r = h.req(0);
    let mark = h.mark();
    h.script(c, Script::new().fail(ErrorKind::ConnectionReset));
    h.readable(c);
    assert_eq!(
        h.since(mark),
        vec![
            Ev::Read(c, Got::Fail(ErrorKind::ConnectionReset)),
            Ev::Cancel(r),
            Ev::Close(c, Close::Fin)
        ]
    );
}

#[test]
fn reset_on_write_mid_response_cancels_and_closes() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    let r = h.req(0);
    h.set_writes(
        c,
        WritePlan::default().fail_at(20, ErrorKind::ConnectionReset),
    );
    h.head(r, "200 OK", &[("Content-Length", "100")]);
    let mark = h.mark();
    h.data(r, [b'z'; 50]);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nDate: {DATE}\r\n");
    assert_eq!(
        h.since(mark),
        vec![
            Ev::Write(c, wire(&head[..20])),
            Ev::WriteFailed(c, ErrorKind::ConnectionReset),
            Ev::Cancel(r),
            Ev::Close(c, Close::Fin)
        ]
    );
    let mark = h.mark();
    h.data(r, [b'z'; 50]);
    h.done(r);
    assert_eq!(h.since(mark), vec![]);
}

#[test]
fn reset_on_write_after_the_app_finished_closes_without_cancel() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    h.set_writes(c, WritePlan::window(10));
    let mark = h.mark();
    h.app_ok(h.req(0), "hello");
    h.set_writes(c, WritePlan::default().fail_at(10, ErrorKind::BrokenPipe));
    h.writable(c);
    assert_eq!(
        h.only(mark, |e| !matches!(e, Ev::Interest(..))),
        vec![
            Ev::Write(c, wire(&ok11("hello")[..10])),
            Ev::WriteBlocked(c),
            Ev::WriteBlocked(c),
            Ev::WriteFailed(c, ErrorKind::BrokenPipe),
            Ev::Close(c, Close::Fin)
        ]
    );
}

#[test]
fn interrupted_read_is_retried_at_once() {
    let mut h = H::new();
    let c = h.connect();
    let mark = h.mark();
    h.script(c, Script::new().fail(ErrorKind::Interrupted).data(get("/")));
    h.readable(c);
    assert_eq!(
        h.only(mark, is_read),
        vec![
            Ev::Read(c, Got::Fail(ErrorKind::Interrupted)),
            Ev::Read(c, Got::Data(get("/").len()))
        ]
    );
    assert_eq!(h.jobs().len(), 1);
}

#[test]
fn reads_are_at_most_recv_bytes_and_continue_until_the_head_is_in() {
    let mut h = H::with(|c| c.recv_bytes = 8);
    let c = h.connect();
    let mark = h.mark();
    h.send(c, get("/"));
    assert_eq!(get("/").len(), 27);
    assert_eq!(
        h.only(mark, is_read),
        [8, 8, 8, 3].map(|n| Ev::Read(c, Got::Data(n))).to_vec()
    );
    assert_eq!(h.jobs().len(), 1);
}

// ===========================================================================
// Accepting and the connection limit.

#[test]
fn accept_skips_aborted_connections_and_stops_on_other_errors() {
    let mut h = H::new();
    h.backlog_error(ErrorKind::ConnectionAborted);
    h.backlog(Script::new());
    h.backlog_error(ErrorKind::Other);
    h.backlog(Script::new());
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![
            Ev::AcceptFailed(ErrorKind::ConnectionAborted),
            Ev::Accept(ConnId(0)),
            Ev::AcceptFailed(ErrorKind::Other),
        ]
    );
    // The next listener event takes the rest.
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![Ev::Accept(ConnId(1)), Ev::AcceptNone]
    );
    assert_eq!(h.engine.connection_count(), 2);
}

/// A client whose request is running: it holds its place under `connection_limit`.
fn busy(h: &mut H, path: &str) -> ConnId {
    h.connect_with(Script::new().data(get(path)))
}

/// A client whose answer is stuck in its full receive window, with no
/// request running: not evictable, but the idle sweep may close it.
fn stalled(h: &mut H) -> ConnId {
    let c = busy(h, "/stalled");
    h.set_writes(c, WritePlan::window(0));
    let req = h.jobs().last().expect("a dispatched job").req;
    h.app_ok(req, "stuck");
    c
}

#[test]
fn a_full_server_waits_until_a_request_finishes_then_evicts_the_idle_connection() {
    let mut h = H::with(|c| c.connection_limit = 2);
    h.backlog(Script::new().data(get("/a")));
    h.backlog(Script::new().data(get("/b")));
    h.backlog(Script::new().data(get("/waited")));
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![
            Ev::Accept(ConnId(0)),
            Ev::Dispatch(h.req(0)),
            Ev::Accept(ConnId(1)),
            Ev::Dispatch(h.req(1)),
            Ev::SetAccepting(false)
        ]
    );
    assert!(!h.engine.is_accepting());
    // More listener events change nothing while every place is busy.
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(h.since(mark), vec![]);
    // The first request finishes: its connection is now idle keep-alive, so
    // the waiting client is taken at once in its place.
    let mark = h.mark();
    h.app_ok(h.req(0), "a");
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![
            Ev::SetAccepting(true),
            Ev::Accept(ConnId(2)),
            Ev::Close(ConnId(0), Close::Fin),
            Ev::Dispatch(h.req(2)),
            Ev::SetAccepting(false),
        ]
    );
    assert_eq!(&*h.job(2).head.target, b"/waited");
    assert_eq!(h.engine.connection_count(), 2);
}

#[test]
fn at_the_limit_a_new_client_evicts_the_connection_silent_the_longest() {
    let mut h = H::with(|c| c.connection_limit = 3);
    let busy_one = busy(&mut h, "/busy");
    let idle = h.connect();
    h.advance(secs(1));
    let trickler = h.connect_with(Script::new().data("GET /sl"));
    h.advance(secs(1));
    // Idle since 0 s beats trickling since 1 s; the running request is never a victim.
    h.backlog(Script::new().data(get("/new")));
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![
            Ev::Accept(ConnId(3)),
            Ev::Close(idle, Close::Fin),
            Ev::Dispatch(h.req(1)),
            // Room remains (the trickler), so it looks for more.
            Ev::AcceptNone,
        ]
    );
    // The next newcomer takes the trickler's place.
    h.backlog(Script::new());
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![Ev::Accept(idle), Ev::Close(trickler, Close::Fin)],
        "the only candidate left was taken this round: accepting resumes at the next timer"
    );
    // Now: the busy one, the new request (busy), and the fresh idle one.
    assert_eq!(h.engine.connection_count(), 3);
    assert!(h.engine.is_accepting());
    let _ = busy_one;
}

#[test]
fn a_full_server_resumes_when_the_sweep_frees_a_stalled_connection() {
    let mut h = H::with(|c| {
        c.connection_limit = 1;
        c.cleanup_interval = secs(10);
        c.channel_timeout = secs(15);
    });
    let c = stalled(&mut h);
    h.backlog(Script::new().data(get("/next")));
    h.engine.on_acceptable();
    assert!(!h.engine.is_accepting(), "a stalled answer is not evicted");
    let mark = h.mark();
    h.timer_at(20.0);
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![
            Ev::Close(c, Close::Fin),
            Ev::SetAccepting(true),
            Ev::Accept(ConnId(0)),
            Ev::Dispatch(h.req(1)),
            Ev::SetAccepting(false),
        ]
    );
}

#[test]
fn shut_takes_a_waiting_connection_when_under_the_limit() {
    let mut h = H::with(|c| c.connection_limit = 1);
    let c = busy(&mut h, "/busy");
    h.backlog(Script::new().data(get("/next")));
    h.engine.on_acceptable();
    assert!(!h.engine.is_accepting());
    let mark = h.mark();
    h.engine.shut(c, Close::Reset);
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![
            Ev::Close(c, Close::Reset),
            Ev::SetAccepting(true),
            Ev::Accept(ConnId(0)),
            Ev::Dispatch(h.req(1)),
            Ev::SetAccepting(false),
        ]
    );
}

#[test]
fn error_answered_from_the_timer_carries_the_current_date() {
    let mut h = H::with(|c| {
        c.connection_limit = 1;
        c.cleanup_interval = secs(60);
        c.channel_timeout = secs(30);
    });
    stalled(&mut h);
    h.backlog(Script::new().data("get / HTTP/1.1\r\n\r\n"));
    h.engine.on_acceptable();
    let clock = h.engine.clock();
    clock.wall.set(UNIX_EPOCH + secs(WALL + 60));
    h.timer_at(60.0);
    assert_eq!(
        h.out(ConnId(0)),
        error_dated(
            "HTTP/1.0",
            "400 Bad Request",
            "Malformed HTTP method \"get\"",
            "Tue, 01 Jul 2025 12:01:00 GMT"
        )
    );
}

fn is_accepting_event(e: &Ev) -> bool {
    matches!(
        e,
        Ev::Accept(_)
            | Ev::AcceptNone
            | Ev::AcceptFailed(_)
            | Ev::SetAccepting(_)
            | Ev::Close(..)
            | Ev::Dispatch(_)
    )
}

// ===========================================================================
// Timers: the idle sweep and header_timeout.

#[test]
fn idle_sweep_closes_exactly_the_idle_connections_and_never_a_running_one() {
    let mut h = H::with(|c| {
        c.cleanup_interval = secs(10);
        c.channel_timeout = secs(30);
        c.header_timeout = secs(1000);
    });
    let idle = h.connect();
    let busy = h.connect();
    let late = h.connect();
    h.send(busy, get("/slow"));
    let sweep = |h: &mut H, t: u64, closed: Vec<ConnId>| {
        assert_eq!(h.engine.next_deadline(), Some(H::at(t as f64)));
        let mark = h.mark();
        h.timer_at(t as f64);
        let want: Vec<Ev> = closed
            .into_iter()
            .map(|c| Ev::Close(c, Close::Fin))
            .collect();
        assert_eq!(h.since(mark), want, "sweep at {t}s");
    };
    sweep(&mut h, 10, vec![]);
    h.advance(secs(5));
    h.send(late, "GET /half");
    sweep(&mut h, 20, vec![]);
    // Idle for exactly channel_timeout is not yet too long.
    sweep(&mut h, 30, vec![]);
    sweep(&mut h, 40, vec![idle]);
    // A half-received head counts as idle (slowloris).
    sweep(&mut h, 50, vec![late]);
    for t in (60..=200).step_by(10) {
        sweep(&mut h, t, vec![]);
    }
    assert!(h.is_open(busy));
    // The answer counts as activity; then the connection idles out like any other.
    h.app_ok(h.req(0), "finally");
    sweep(&mut h, 210, vec![]);
    sweep(&mut h, 220, vec![]);
    sweep(&mut h, 230, vec![]);
    sweep(&mut h, 240, vec![busy]);
    assert_eq!(h.engine.connection_count(), 0);
    assert!(h.exec(0).iter().all(|e| !matches!(e, Ev::Cancel(_))));
}

#[test]
fn a_finished_response_stuck_in_a_full_window_is_swept_after_channel_timeout() {
    let mut h = H::with(|c| {
        c.cleanup_interval = secs(10);
        c.channel_timeout = secs(30);
        c.header_timeout = secs(1000);
    });
    let c = h.connect();
    h.send(c, get("/"));
    h.set_writes(c, WritePlan::window(0));
    h.app_ok(h.req(0), &"x".repeat(100));
    // Each byte the client takes counts as activity.
    h.advance(secs(25));
    h.drain(c, 10);
    for t in [30.0, 40.0, 50.0] {
        h.timer_at(t);
        assert!(h.is_open(c), "swept at {t}s");
    }
    let mark = h.mark();
    h.timer_at(60.0);
    assert_eq!(h.since(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(h.out(c), ok11(&"x".repeat(100))[..10]);
}

#[test]
fn header_timeout_closes_an_incomplete_head_exactly_at_its_deadline() {
    let mut h = H::with(|c| {
        c.header_timeout = secs(5);
        c.cleanup_interval = secs(100);
        c.channel_timeout = secs(1000);
    });
    assert_eq!(h.engine.next_deadline(), Some(H::at(100.0)));
    let c = h.connect();
    assert_eq!(h.engine.next_deadline(), Some(H::at(5.0)));
    h.advance(secs(2));
    h.send(c, "GET / HTTP/1.1\r\n");
    assert_eq!(
        h.engine.next_deadline(),
        Some(H::at(5.0)),
        "the first head is timed from the accept"
    );
    let mark = h.mark();
    h.timer_at(4.999);
    assert_eq!(h.since(mark), vec![]);
    h.timer_at(5.0);
    assert_eq!(h.since(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(h.out(c), "", "no response, just a FIN");
    assert_eq!(h.engine.next_deadline(), Some(H::at(100.0)));
}

#[test]
fn header_timeout_is_not_armed_while_a_request_runs_and_restarts_at_the_next_first_byte() {
    let mut h = H::with(|c| {
        c.header_timeout = secs(5);
        c.cleanup_interval = secs(100);
        c.channel_timeout = secs(1000);
    });
    let c = h.connect();
    h.advance(secs(1));
    h.send(c, get("/slow"));
    assert_eq!(h.engine.next_deadline(), Some(H::at(100.0)));
    let mark = h.mark();
    h.timer_at(50.0);
    assert_eq!(h.since(mark), vec![]);
    h.app_ok(h.req(0), "ok");
    assert_eq!(
        h.engine.next_deadline(),
        Some(H::at(100.0)),
        "an idle keep-alive connection is channel_timeout's business"
    );
    h.advance(secs(10));
    h.send(c, "GET /2 HTTP/1.1\r\n");
    assert_eq!(h.engine.next_deadline(), Some(H::at(65.0)));
    // More bytes of the same head do not move the deadline.
    h.advance(secs(3));
    h.send(c, "Host: x\r\n");
    assert_eq!(h.engine.next_deadline(), Some(H::at(65.0)));
    let mark = h.mark();
    h.timer_at(64.9);
    assert_eq!(h.since(mark), vec![]);
    h.timer_at(65.0);
    assert_eq!(h.since(mark), vec![Ev::Close(c, Close::Fin)]);
}

#[test]
fn header_timeout_ignores_a_pipelined_partial_head_until_the_line_is_clear() {
    let mut h = H::with(|c| {
        c.header_timeout = secs(5);
        c.cleanup_interval = secs(100);
        c.channel_timeout = secs(1000);
        c.channel_request_lookahead = 1;
    });
    let c = h.connect();
    h.advance(secs(1));
    h.send(c, format!("{}GET /2 HT", get("/1")));
    assert_eq!(h.engine.next_deadline(), Some(H::at(100.0)));
    h.timer_at(50.0);
    assert!(h.is_open(c));
    h.app_ok(h.req(0), "1");
    assert_eq!(h.engine.next_deadline(), Some(H::at(55.0)));
    let mark = h.mark();
    h.timer_at(55.0);
    assert_eq!(h.since(mark), vec![Ev::Close(c, Close::Fin)]);
}

#[test]
fn next_deadline_is_the_earliest_head_deadline_or_the_next_sweep() {
    let mut h = H::with(|c| {
        c.header_timeout = secs(10);
        c.cleanup_interval = secs(30);
        c.channel_timeout = secs(1000);
    });
    assert_eq!(h.engine.next_deadline(), Some(H::at(30.0)));
    let a = h.connect();
    assert_eq!(h.engine.next_deadline(), Some(H::at(10.0)));
    h.advance(secs(3));
    let b = h.connect();
    assert_eq!(h.engine.next_deadline(), Some(H::at(10.0)));
    h.send(a, get("/"));
    assert_eq!(
        h.engine.next_deadline(),
        Some(H::at(13.0)),
        "a's head is in: b's deadline"
    );
    h.timer_at(13.0);
    assert!(!h.is_open(b));
    assert_eq!(h.engine.next_deadline(), Some(H::at(30.0)));
    h.timer_at(30.0);
    assert_eq!(
        h.engine.next_deadline(),
        Some(H::at(60.0)),
        "the sweep re-arms"
    );
    assert!(h.is_open(a));
}

#[test]
fn interest_follows_what_the_channel_waits_for() {
    let mut h = H::new();
    let c = h.connect();
    assert_eq!(h.want(c), Want::READ);
    h.send(c, get("/"));
    assert_eq!(h.want(c), Want::NONE, "no read while the request runs");
    h.set_writes(c, WritePlan::window(0));
    h.app_ok(h.req(0), "x");
    assert_eq!(h.want(c), Want::WRITE, "output pending: no read either");
    h.drain(c, 1000);
    assert_eq!(h.want(c), Want::READ);
}

#[test]
fn one_batch_for_two_connections_flushes_each_once() {
    let mut h = H::new();
    let a = h.connect();
    let b = h.connect();
    h.send(a, get("/a"));
    h.send(b, get("/b"));
    let (ra, rb) = (h.req(0), h.req(1));
    let mark = h.mark();
    h.events(vec![
        head_event(rb, "200 OK", &[("Content-Length", "2")]),
        head_event(ra, "200 OK", &[("Content-Length", "2")]),
        AppEvent::Data {
            req: ra,
            bytes: b"aa".to_vec().into(),
        },
        AppEvent::Data {
            req: rb,
            bytes: b"bb".to_vec().into(),
        },
        AppEvent::Done { req: rb },
        AppEvent::Done { req: ra },
    ]);
    assert_eq!(
        h.only(mark, is_write),
        vec![
            Ev::Write(b, wire(ok11("bb"))),
            Ev::Write(a, wire(ok11("aa")))
        ],
        "in the order the connections were first touched"
    );
}

#[test]
fn shut_cancels_the_running_request_and_closes_as_asked() {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, get("/"));
    let r = h.req(0);
    let mark = h.mark();
    h.engine.shut(c, Close::Reset);
    assert_eq!(
        h.since(mark),
        vec![Ev::Cancel(r), Ev::Close(c, Close::Reset)]
    );
    assert_eq!(h.engine.connection_count(), 0);
    let mark = h.mark();
    h.engine.shut(c, Close::Fin);
    assert_eq!(h.since(mark), vec![], "a second shut is a no-op");
}

#[test]
fn chunked_body_reaching_the_size_limit_gets_413() {
    let mut h = H::with(|c| c.max_request_body_size = 10);
    let c = h.connect();
    let mark = h.mark();
    h.send(
        c,
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(
        h.out(c),
        error(
            "HTTP/1.1",
            "413 Request Entity Too Large",
            "exceeds max_body of 10"
        )
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert!(h.jobs().is_empty());
}

#[test]
fn bad_chunk_behind_a_running_request_is_answered_after_it() {
    let mut h = H::with(|c| c.channel_request_lookahead = 1);
    let c = h.connect();
    h.send(c, get("/1"));
    h.send(
        c,
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_eq!(h.out(c), "");
    let mark = h.mark();
    h.app_ok(h.req(0), "1");
    assert_eq!(
        h.out(c),
        format!(
            "{}{}",
            ok11("1"),
            error("HTTP/1.1", "400 Bad Request", "Invalid chunk size")
        )
    );
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(h.jobs().len(), 1);
}

// ===========================================================================
// Engine bugs found by these tests (ignored until fixed; see the report).

#[test]
fn header_timeout_waits_while_the_previous_response_is_still_draining() {
    let mut h = H::with(|c| {
        c.header_timeout = secs(5);
        c.cleanup_interval = secs(100);
        c.channel_timeout = secs(1000);
    });
    let c = h.connect();
    h.send(c, format!("{}GET /2 HT", get("/1")));
    h.set_writes(c, WritePlan::window(0));
    let body = "x".repeat(1000);
    h.app_ok(h.req(0), &body);
    // The client reads 100 bytes every 2 s: active, just slow.
    let mut t = 0.0;
    while h.engine.pending_output() > 0 {
        t += 2.0;
        h.timer_at(t);
        assert!(h.is_open(c), "closed at {t}s while the response drains");
        h.drain(c, 100);
    }
    assert_eq!(h.out(c), ok11(&body));
}

#[test]
fn request_dispatched_at_accept_turns_read_interest_off() {
    let mut h = H::new();
    let c = h.connect_with(Script::new().data(get("/")));
    assert_eq!(h.jobs().len(), 1);
    assert_eq!(h.want(c), Want::NONE);
}

#[rstest::rstest]
#[case::head_request("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK", "40")]
#[case::no_content(&get("/"), "204 No Content", "40")]
#[case::surplus(&get("/"), "200 OK", "10")]
fn dropped_app_bytes_are_granted_back(
    #[case] request: &str,
    #[case] status: &str,
    #[case] length: &str,
) {
    let mut h = H::new();
    let c = h.connect();
    h.send(c, request);
    let r = h.req(0);
    let mark = h.mark();
    h.head(r, status, &[("Content-Length", length)]);
    for _ in 0..4 {
        h.data(r, [b'd'; 10]);
    }
    assert_eq!(h.engine.pending_output(), 0);
    assert_eq!(
        h.grants(mark).iter().sum::<usize>(),
        40,
        "every byte the app produced has left (or been dropped): all of it is credit"
    );
}

// ===========================================================================
// A whole session as a transcript of every call, for review.

/// Wire bytes with CR and LF visible.
fn visible(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace('\r', "␍")
        .replace('\n', "␊")
}

fn render(ev: &Ev) -> String {
    let r = |req: &ReqId| format!("r{}@c{}", req.0 >> 32, req.conn().0);
    match ev {
        Ev::Accept(c) => format!("accept -> c{}", c.0),
        Ev::AcceptNone => "accept -> none".to_string(),
        Ev::AcceptFailed(k) => format!("accept -> {k:?}"),
        Ev::SetAccepting(on) => format!("set_accepting {on}"),
        Ev::Read(c, got) => format!("read c{} -> {got:?}", c.0),
        Ev::Write(c, w) => format!("write c{} -> {}", c.0, visible(&w.0)),
        Ev::WriteBlocked(c) => format!("write c{} -> WouldBlock", c.0),
        Ev::WriteFailed(c, k) => format!("write c{} -> {k:?}", c.0),
        Ev::SendFile {
            conn,
            offset,
            len,
            sent,
        } => format!(
            "send_file c{} @{offset}+{len} -> {}",
            conn.0,
            visible(&sent.0)
        ),
        Ev::Interest(c, w) => format!("interest c{} read={} write={}", c.0, w.read, w.write),
        Ev::Close(c, how) => format!("close c{} {how:?}", c.0),
        Ev::Dispatch(req) => format!("dispatch {}", r(req)),
        Ev::Grant(req, n) => format!("grant {} {n}", r(req)),
        Ev::Cancel(req) => format!("cancel {}", r(req)),
    }
}

#[test]
fn transcript_of_a_pipelined_session_with_continue() {
    let mut h = H::with(|c| c.ident = Some("waitress".to_string()));
    let c = h.connect_with(Script::new().data(format!(
        "{}POST /2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        get("/1")
    )));
    let r1 = h.req(0);
    h.events(vec![
        head_event(r1, "200 OK", &[]),
        AppEvent::Data {
            req: r1,
            bytes: b"one".to_vec().into(),
        },
    ]);
    h.done(r1);
    h.script(c, Script::new().data("body").block().eof());
    h.readable(c);
    let r2 = h.req(1);
    h.app_responds(r2, "201 Created", &[("Content-Length", "3")], b"two");
    h.readable(c);
    let transcript: Vec<String> = h.log.borrow().iter().map(render).collect();
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
        prepend_module_to_snapshot => true,
    }, {
        insta::assert_snapshot!("pipelined_session_with_continue", transcript.join("\n"));
    });
}

// ===========================================================================
// Graceful stop (drain), max_requests, request_timeout.

/// `HTTP/1.1 200 OK` with a Content-Length, closing the connection.
fn ok11_close(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\nDate: {DATE}\r\n\
         Server: maitre\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn drain_closes_idle_connections_and_lets_requests_in_progress_finish() {
    let mut h = H::with(|c| c.graceful_timeout = secs(30));
    let idle = busy(&mut h, "/done");
    h.app_ok(h.req(0), "done");
    let waiting = busy(&mut h, "/waiting"); // app has not answered yet
    let streaming = busy(&mut h, "/streaming"); // head and part of the body sent
    h.head(h.req(2), "200 OK", &[("Content-Length", "4")]);
    h.data(h.req(2), "ab");
    h.take(streaming);
    h.backlog(Script::new().data(get("/late")));

    let mark = h.mark();
    h.engine.begin_drain();
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![Ev::SetAccepting(false), Ev::Close(idle, Close::Fin)]
    );
    assert!(h.engine.is_draining() && !h.engine.is_drained());
    assert!(!h.engine.is_retiring());
    // The listener is closed: a client in the backlog is never taken.
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(h.only(mark, is_accepting_event), vec![]);

    // A response not yet started says it closes, and does.
    let mark = h.mark();
    h.app_ok(h.req(1), "w");
    assert_eq!(h.out(waiting), ok11_close("w"));
    assert_eq!(h.closes(mark), vec![Ev::Close(waiting, Close::Fin)]);
    // A keep-alive response already under way completes, then closes.
    let mark = h.mark();
    h.data(h.req(2), "cd");
    assert_eq!(h.take(streaming), "cd");
    assert_eq!(h.closes(mark), vec![]);
    h.done(h.req(2));
    assert_eq!(h.closes(mark), vec![Ev::Close(streaming, Close::Fin)]);
    assert!(h.engine.is_drained());
    assert_eq!(h.engine.drain_cut(), 0);
    assert_eq!(h.jobs().len(), 3, "nothing new was dispatched");
}

#[test]
fn drain_cuts_what_is_left_at_graceful_timeout() {
    let mut h = H::with(|c| {
        c.graceful_timeout = secs(3);
        c.cleanup_interval = secs(100);
    });
    let c = busy(&mut h, "/slow");
    h.advance(secs(1));
    h.engine.begin_drain();
    assert_eq!(h.engine.next_deadline(), Some(H::at(4.0)));
    let mark = h.mark();
    h.timer_at(3.999);
    assert_eq!(h.since(mark), vec![]);
    h.timer_at(4.0);
    assert_eq!(
        h.since(mark),
        vec![Ev::Cancel(h.req(0)), Ev::Close(c, Close::Fin)]
    );
    assert!(h.engine.is_drained());
    assert_eq!(h.engine.drain_cut(), 1);
}

#[test]
fn drain_with_nothing_open_is_done_at_once() {
    let mut h = H::new();
    h.engine.begin_drain();
    assert!(h.engine.is_drained());
}

#[test]
fn drain_finishes_the_running_request_and_drops_pipelined_ones() {
    let mut h = H::new();
    let c = h.connect_with(Script::new().data(get("/1") + &get("/2")));
    assert_eq!(h.jobs().len(), 1);
    h.engine.begin_drain();
    let mark = h.mark();
    h.app_ok(h.req(0), "one");
    assert_eq!(h.out(c), ok11_close("one"));
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    assert_eq!(
        h.jobs().len(),
        1,
        "/2 was never started: the close tells its client"
    );
}

#[test]
fn drain_lets_a_body_that_is_arriving_finish_and_answers_it() {
    let mut h = H::new();
    let c = h.connect_with(Script::new().data("POST /up HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc"));
    assert!(h.jobs().is_empty());
    h.engine.begin_drain();
    assert!(h.is_open(c), "a request is arriving: not idle");
    h.send(c, "def");
    assert_eq!(h.jobs().len(), 1);
    assert_eq!(
        body_bytes(&mut h.engine.executor_mut().jobs[0].body),
        b"abcdef"
    );
    h.app_ok(h.req(0), "ok");
    assert_eq!(h.out(c), ok11_close("ok"));
    assert!(h.engine.is_drained());
}

#[test]
fn a_drain_waits_for_a_request_on_its_way_and_cuts_a_silent_one_at_graceful_timeout() {
    let mut h = H::with(|c| {
        c.graceful_timeout = secs(10);
        c.cleanup_interval = secs(100);
        c.header_timeout = secs(100);
    });
    let trickling = h.connect_with(Script::new().data("GET /x HT"));
    let silent = h.connect(); // a new connection whose request is still in flight
    let mark = h.mark();
    h.engine.begin_drain();
    assert_eq!(
        h.closes(mark),
        vec![],
        "closing now would reset requests already sent"
    );
    h.send(trickling, "TP/1.1\r\nHost: x\r\n\r\n");
    h.app_ok(h.req(0), "x");
    assert_eq!(h.out(trickling), ok11_close("x"));
    assert!(!h.is_open(trickling));
    h.timer_at(10.0);
    assert_eq!(
        h.closes(mark),
        vec![
            Ev::Close(trickling, Close::Fin),
            Ev::Close(silent, Close::Fin)
        ]
    );
    assert!(h.engine.is_drained());
}

#[test]
fn max_requests_retires_after_that_many_requests() {
    let mut h = H::with(|c| c.max_requests = 2);
    let c = busy(&mut h, "/1");
    h.app_ok(h.req(0), "1");
    assert!(!h.engine.is_draining());
    h.send(c, get("/2"));
    assert!(h.engine.is_draining() && h.engine.is_retiring());
    h.backlog(Script::new().data(get("/3")));
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![],
        "no longer accepting"
    );
    h.take(c);
    h.app_ok(h.req(1), "2");
    assert_eq!(h.take(c), ok11_close("2"));
    assert!(h.engine.is_drained());
    assert_eq!(h.jobs().len(), 2);
}

#[test]
fn without_max_requests_a_server_never_retires() {
    let mut h = H::new();
    let c = h.connect();
    for i in 0..50 {
        h.send(c, get("/n"));
        h.app_ok(h.req(i), "n");
    }
    assert!(!h.engine.is_draining());
}

#[test]
fn request_timeout_answers_503_when_the_app_has_not_started_its_response() {
    let mut h = H::with(|c| {
        c.request_timeout = Some(secs(5));
        c.cleanup_interval = secs(100);
    });
    let c = busy(&mut h, "/stuck");
    assert_eq!(h.engine.next_deadline(), Some(H::at(5.0)));
    let mark = h.mark();
    h.timer_at(4.999);
    assert_eq!(h.since(mark), vec![]);
    h.timer_at(5.0);
    assert_eq!(
        h.out(c),
        error(
            "HTTP/1.1",
            "503 Service Unavailable",
            "The application did not answer within request_timeout (5 s)"
        )
    );
    assert_eq!(h.exec(mark), vec![Ev::Cancel(h.req(0))]);
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
    // The app's late answer goes nowhere.
    h.app_ok(h.req(0), "late");
    assert_eq!(h.engine.next_deadline(), Some(H::at(100.0)));
}

#[test]
fn request_timeout_cuts_a_response_already_under_way() {
    let mut h = H::with(|c| c.request_timeout = Some(secs(5)));
    let c = busy(&mut h, "/stream");
    h.head(h.req(0), "200 OK", &[("Content-Length", "10")]);
    h.data(h.req(0), "abc");
    h.take(c);
    let mark = h.mark();
    h.timer_at(5.0);
    assert_eq!(h.take(c), "", "nothing more is sent");
    assert_eq!(h.exec(mark), vec![Ev::Cancel(h.req(0))]);
    assert_eq!(h.closes(mark), vec![Ev::Close(c, Close::Fin)]);
}

#[test]
fn request_timeout_leaves_finished_requests_alone_and_restarts_per_request() {
    let mut h = H::with(|c| {
        c.request_timeout = Some(secs(5));
        c.cleanup_interval = secs(100);
    });
    let c = busy(&mut h, "/1");
    h.advance(secs(4));
    h.app_ok(h.req(0), "1");
    assert_eq!(
        h.engine.next_deadline(),
        Some(H::at(100.0)),
        "timer removed"
    );
    h.send(c, get("/2"));
    assert_eq!(h.engine.next_deadline(), Some(H::at(9.0)));
    let mark = h.mark();
    h.timer_at(8.0);
    assert_eq!(h.since(mark), vec![]);
    h.app_ok(h.req(1), "2");
    assert!(h.is_open(c));
}

#[test]
fn without_request_timeout_a_slow_app_is_never_cut() {
    let mut h = H::with(|c| c.cleanup_interval = secs(100));
    let c = busy(&mut h, "/slow");
    h.timer_at(10_000.0);
    assert!(h.is_open(c));
    h.app_ok(h.req(0), "s");
    assert_eq!(h.out(c), ok11("s"));
}

#[test]
fn eviction_takes_the_longest_waiting_head_even_if_it_trickled_a_byte_recently() {
    let mut h = H::with(|c| c.connection_limit = 2);
    let trickler = h.connect_with(Script::new().data("GET /a HTTP/1.1\r\n"));
    h.advance(secs(4));
    let fresh = h.connect();
    h.advance(secs(1));
    h.send(trickler, "X-a: b"); // active a moment ago, but waiting since 0 s
    h.advance(secs(1));
    h.backlog(Script::new().data(get("/new")));
    let mark = h.mark();
    h.engine.on_acceptable();
    assert_eq!(
        h.closes(mark),
        vec![Ev::Close(trickler, Close::Fin)],
        "trickling buys no protection; the client that just connected stays"
    );
    assert!(h.is_open(fresh));
}

#[test]
fn a_connection_taken_this_round_is_not_evicted_before_its_data_is_read() {
    let mut h = H::with(|c| c.connection_limit = 1);
    let old = h.connect();
    h.backlog(Script::new()); // connects, sends nothing yet
    h.backlog(Script::new().data(get("/third")));
    let mark = h.mark();
    h.engine.on_acceptable();
    let second = ConnId(1);
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![Ev::Accept(second), Ev::Close(old, Close::Fin)],
        "the second may not be evicted in the round that took it"
    );
    assert_eq!(
        h.engine.next_deadline(),
        Some(H::at(0.0)),
        "accept again at once"
    );
    // Its request arrives before the next round: now it is busy, and the
    // third client waits for a place.
    h.send(second, get("/second"));
    let mark = h.mark();
    h.timer_at(0.0);
    assert_eq!(
        h.only(mark, is_accepting_event),
        vec![Ev::SetAccepting(false)]
    );
    assert_eq!(&*h.job(0).head.target, b"/second");
}
