//! The worker pool: `threads + 1` OS threads that run the WSGI app, at most
//! `threads` at once, and take turns at the I/O loop (see `lead`).
//!
//! Whoever drives the loop does so without the GIL and queues parsed
//! requests on a [`JobQueue`]. A worker attaches to Python once for its whole
//! life (a thread state per request would cost an mmap, a munmap and a TLB
//! shootdown each time), runs jobs back to back while any are queued, and
//! lets go of the GIL only to park, to hold the lead, to wait for output
//! credit, or when Python asks.
#![allow(clippy::disallowed_methods)] // the pool is where the threads live

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{error, warn};
use pyo3::prelude::*;

use crate::drivers::mio::EventSender;
use crate::engine::{AppEvent, Executor, Job, ReqId};
use crate::metrics::Meter;
use crate::python::lead::{self, Held, Lead};
use crate::python::queue::{Came, JobQueue, Next};
use crate::python::watchdog::{self, Stuck};
use crate::python::wsgi::{self, Shared};

/// Per-request state shared by the I/O thread (grants, cancels) and the
/// worker running the app (waits for credit, checks for cancellation).
pub struct ReqCtl {
    /// Bytes the app may still produce before it must wait; the engine grants
    /// more as the client reads (`outbuf_high_watermark`).
    credit: Mutex<i64>,
    more: Condvar,
    cancelled: AtomicBool,
    /// The Python thread id of the worker running the app (0 before it starts).
    pub thread: AtomicU64,
    /// The engine gave up on the request (`request_timeout`).
    pub timed_out: AtomicBool,
    /// The request target, kept for the watchdog's message (only with `request_timeout`).
    path: Option<String>,
}

impl ReqCtl {
    fn new(window: i64, path: Option<String>) -> Self {
        ReqCtl {
            credit: Mutex::new(window),
            more: Condvar::new(),
            cancelled: AtomicBool::new(false),
            thread: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
            path,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Take credit for `n` bytes, waiting (without the GIL) while the output
    /// already pending is over the watermark. Returns false if the client left.
    pub fn take_credit(&self, py: Python<'_>, n: usize) -> bool {
        let ready = |c: &i64| *c >= 0 || self.is_cancelled();
        let fast = self.credit.lock().map(|c| ready(&c)).unwrap_or(true);
        if !fast {
            py.detach(|| {
                // Drive the loop while waiting if nobody does; if somebody
                // does, look again every millisecond: the holder may step
                // aside for this very job (see `queue::Plan::StepAside`).
                let pending = || !self.credit.lock().map(|c| ready(&c)).unwrap_or(true);
                loop {
                    lead::with_current(|lead| lead.drive_while(&pending));
                    let guard = self.credit.lock().unwrap_or_else(|e| e.into_inner());
                    let (guard, _) = self
                        .more
                        .wait_timeout_while(guard, CREDIT_RECHECK, |c| !ready(c))
                        .unwrap_or_else(|e| e.into_inner());
                    if ready(&guard) {
                        break;
                    }
                }
            });
        }
        if self.is_cancelled() {
            return false;
        }
        if let Ok(mut c) = self.credit.lock() {
            *c -= n as i64;
        }
        true
    }

    fn grant(&self, n: usize) {
        if let Ok(mut c) = self.credit.lock() {
            *c += n as i64;
        }
        self.more.notify_all();
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        let _guard = self.credit.lock();
        self.more.notify_all();
    }
}

/// How often a job waiting for output credit looks whether the loop needs
/// it to drive it (see `ReqCtl::take_credit`).
const CREDIT_RECHECK: Duration = Duration::from_millis(1);

/// How long an idle worker may take to notice that the pool closed.
const IDLE_EXIT: Duration = Duration::from_millis(500);

/// Request ids are unique (a sequence number and a connection): hashing
/// one needs no SipHash, and a hash map, unlike a B-tree, keeps its memory
/// when it empties (it does after nearly every request).
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fold the sequence number into the connection bits, then spread
        // them (Fibonacci hashing): the table uses low bits and high bits.
        self.0 = (n ^ (n >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

// Never iterated (only looked up, inserted and removed), so its random
// order cannot make anything nondeterministic.
#[allow(clippy::disallowed_types)]
type IdMap<V> = std::collections::HashMap<ReqId, V, std::hash::BuildHasherDefault<IdHasher>>;

pub struct PoolState {
    requests: Mutex<IdMap<Arc<ReqCtl>>>,
    idle: AtomicUsize,
    /// Worker threads started.
    threads: usize,
    alive: Mutex<usize>,
    exited: Condvar,
}

impl PoolState {
    /// The request is queued or running (not yet finished by its worker).
    pub fn is_running(&self, req: ReqId) -> bool {
        self.requests
            .lock()
            .map(|map| map.contains_key(&req))
            .unwrap_or(false)
    }

    fn forget(&self, req: ReqId) {
        if let Ok(mut map) = self.requests.lock() {
            map.remove(&req);
        }
    }
}

pub type Queued = (Job, Arc<ReqCtl>);

pub struct PyPool {
    queue: Arc<JobQueue<Queued>>,
    /// Jobs dispatched during this turn of the I/O loop (see `flush`).
    turn: Vec<Queued>,
    /// Present when `request_timeout` is set.
    watchdog: Option<Sender<Stuck>>,
    state: Arc<PoolState>,
    window: i64,
    meter: Meter,
}

/// What the pool's threads share, before they start (see [`Crew::start`]).
pub struct Crew {
    queue: Arc<JobQueue<Queued>>,
    state: Arc<PoolState>,
    shared: Arc<Shared>,
    events: EventSender,
}

impl Crew {
    /// Start the threads: `threads` slots for jobs, plus one, so a thread is
    /// always free to take the lead. Called from `Server.run()`.
    pub fn start(self, lead: &Arc<Lead>) -> std::io::Result<()> {
        let crew = Arc::new(self);
        for i in 0..crew.state.threads + 1 {
            let (crew, lead) = (crew.clone(), lead.clone());
            thread::Builder::new()
                .name(format!("maitre-{i}"))
                .spawn(move || worker(i, &crew, &lead))?;
        }
        Ok(())
    }

    pub fn queue(&self) -> Arc<JobQueue<Queued>> {
        self.queue.clone()
    }
}

impl PyPool {
    /// A pool for `threads` jobs at once, and the crew to start once the
    /// server exists. Called from `Server.run()`, never at import.
    pub fn new(
        threads: usize,
        shared: Arc<Shared>,
        events: EventSender,
    ) -> std::io::Result<(Self, Crew)> {
        let queue = Arc::new(JobQueue::new(threads + 1, threads));
        // An app counts as quick until its jobs say otherwise (see `lead`).
        queue.set_solo(true);
        shared.returns.set_nudge(queue.clone());
        let state = Arc::new(PoolState {
            requests: Mutex::new(IdMap::default()),
            idle: AtomicUsize::new(threads),
            threads,
            alive: Mutex::new(threads + 1),
            exited: Condvar::new(),
        });
        let crew = Crew {
            queue: queue.clone(),
            state: state.clone(),
            shared: shared.clone(),
            events,
        };
        let window = i64::try_from(shared.config.outbuf_high_watermark).unwrap_or(i64::MAX);
        let watchdog = match (&shared.config.request_timeout, &shared.timeout_error) {
            (Some(_), Some(exception)) => {
                let (exception, logger) =
                    Python::attach(|py| (exception.clone_ref(py), shared.logger.clone_ref(py)));
                Some(watchdog::start(state.clone(), exception, logger)?)
            }
            _ => None,
        };
        let meter = shared.meter.clone();
        let pool = PyPool {
            queue,
            turn: Vec::new(),
            watchdog,
            state,
            window,
            meter,
        };
        Ok((pool, crew))
    }

    /// Stop taking jobs, cancel the queued ones and wait up to `grace` for the
    /// running ones, as Waitress's dispatcher shutdown does.
    /// Returns how many workers are still inside an app afterwards.
    pub fn shutdown(&mut self, grace: Duration) -> usize {
        let mut pending = self.queue.close();
        pending.append(&mut self.turn);
        if !pending.is_empty() {
            warn!(target: "maitre", "Canceling {} pending task(s)", pending.len());
        }
        self.meter.unqueued(pending.len());
        drop(pending);
        let state = &self.state;
        let in_app = || state.threads - state.idle.load(Ordering::Acquire);
        let alive = state.alive.lock().unwrap_or_else(|e| e.into_inner());
        // Idle workers leave as soon as the queue closes; wait for them even
        // with no grace, so only threads inside an app count as still running.
        let (alive, _) = state
            .exited
            .wait_timeout_while(alive, IDLE_EXIT, |n| *n > in_app())
            .unwrap_or_else(|e| e.into_inner());
        let (alive, _) = state
            .exited
            .wait_timeout_while(alive, grace, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        if *alive > 0 {
            warn!(target: "maitre", "{} thread(s) still running", *alive);
        }
        *alive
    }
}

impl Drop for PyPool {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Executor for PyPool {
    fn dispatch(&mut self, job: Job) {
        let path = self
            .watchdog
            .as_ref()
            .map(|_| String::from_utf8_lossy(&job.head.target).into_owned());
        let ctl = Arc::new(ReqCtl::new(self.window, path));
        if let Ok(mut map) = self.state.requests.lock() {
            map.insert(job.req, ctl.clone());
        }
        self.meter.queued(); // before the push, so a worker never takes it first
        self.turn.push((job, ctl));
    }

    fn flush(&mut self) {
        if self.turn.is_empty() {
            return;
        }
        let idle = self.state.idle.load(Ordering::Acquire);
        let count = self.turn.len();
        match self.queue.push_all(self.turn.drain(..)) {
            Some(before) if before + count > idle => {
                // Waitress warns for every task that has to wait for a thread
                // (asked once: each check is a lookup in Python's loggers).
                if !log::log_enabled!(target: "maitre.queue", log::Level::Warn) {
                    return;
                }
                for depth in (before + 1..=before + count).filter(|&d| d > idle) {
                    warn!(target: "maitre.queue", "Task queue depth is {depth}");
                }
            }
            Some(_) => {}
            None => self.meter.unqueued(count),
        }
    }

    fn grant(&mut self, req: ReqId, bytes: usize) {
        if let Some(ctl) = self.lookup(req) {
            ctl.grant(bytes);
        }
    }

    fn cancel(&mut self, req: ReqId) {
        if let Some(ctl) = self.lookup(req) {
            ctl.cancel();
        }
    }

    fn timed_out(&mut self, req: ReqId) {
        let Some(ctl) = self.lookup(req) else { return };
        ctl.timed_out.store(true, Ordering::Release);
        ctl.cancel();
        if let Some(watchdog) = &self.watchdog {
            let path = ctl.path.clone().unwrap_or_default();
            let _ = watchdog.send(Stuck { req, ctl, path });
        }
    }
}

impl PyPool {
    fn lookup(&self, req: ReqId) -> Option<Arc<ReqCtl>> {
        self.state.requests.lock().ok()?.get(&req).cloned()
    }
}

/// This thread's id as Python's `threading.get_ident()` gives it.
#[allow(clippy::useless_conversion)] // c_ulong is u32 on Windows
fn python_thread_id() -> u64 {
    // SAFETY: a plain C call (pthread_self); no Python state involved.
    u64::from(unsafe { pyo3::ffi::PyThread_get_thread_ident() })
}

fn worker(me: usize, crew: &Crew, lead: &Arc<Lead>) {
    lead::set_current(lead);
    let Crew {
        queue,
        state,
        shared,
        events,
    } = crew;
    Python::attach(|py| {
        let mut came = Came::Started;
        // When the last job ended, if nothing has taken time since: the
        // next job starts then (one clock read per job, not two).
        let mut clock = None;
        loop {
            shared.returns.release(py);
            let now = clock.take().unwrap_or_else(Instant::now);
            match queue.take(me, came, now) {
                Next::Run((job, ctl)) => {
                    let started = now;
                    run_job(py, job, &ctl, state, shared, events);
                    let ended = Instant::now();
                    lead.pace.record(ended - started);
                    queue.set_solo(lead.pace.is_quick());
                    // Write the answers (a batch at a time) if nobody else
                    // drives the loop.
                    if !lead.visit(ended) {
                        clock = Some(ended);
                    }
                    came = Came::Finished;
                    continue;
                }
                Next::Park => {}
                Next::Exit => break,
            }
            came = Came::Started;
            // Nothing to run: drive the loop if nobody does, else wait.
            if let Held::Run = lead.hold(py) {
                continue;
            }
            came = py.detach(|| loop {
                queue.wait_for_work();
                if !lead.is_vacant() {
                    return Came::Woken;
                }
                // Woken because nobody drives the loop (see `lead`): do that
                // first, rather than take a job and leave the loop undriven,
                // and without waiting for the GIL, which a stuck app may hold;
                // told to park again, park without taking the GIL either.
                queue.unsearch();
                if let Held::Run = lead.hold_detached() {
                    return Came::Started;
                }
            });
        }
    });
    let mut alive = state.alive.lock().unwrap_or_else(|e| e.into_inner());
    *alive -= 1;
    state.exited.notify_all();
}

fn run_job(
    py: Python<'_>,
    job: Job,
    ctl: &Arc<ReqCtl>,
    state: &PoolState,
    shared: &Arc<Shared>,
    events: &EventSender,
) {
    state.idle.fetch_sub(1, Ordering::AcqRel);
    shared.meter.taken();
    let req = job.req;
    if !ctl.is_cancelled() {
        ctl.thread.store(python_thread_id(), Ordering::Release);
        // A bug on our side must cost one request (a 500), never the thread.
        let ran = catch_unwind(AssertUnwindSafe(|| wsgi::run(py, shared, job, ctl)));
        if ran.is_err() {
            error!(target: "maitre", "internal error while running a request (a bug): answered 500");
            events.send(AppEvent::Failed { req, detail: None });
        }
        // With the GIL, so the watchdog sees a consistent state.
        state.forget(req);
        watchdog::finish_request(py, ctl);
    } else {
        state.forget(req);
    }
    shared.meter.done();
    state.idle.fetch_add(1, Ordering::AcqRel);
}
