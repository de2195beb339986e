//! The worker pool: `threads` OS threads that run the WSGI app.
//!
//! The I/O thread never holds the GIL: it hands parsed requests over a
//! channel. A worker attaches to Python only while it runs an app, waits for
//! the next job detached, and waits for output credit detached too.
#![allow(clippy::disallowed_methods)] // the pool is where the threads live

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::{error, warn};
use pyo3::prelude::*;

use crate::drivers::mio::EventSender;
use crate::engine::{AppEvent, Executor, Job, ReqId};
use crate::python::wsgi::{self, Shared};

/// Per-request state shared by the I/O thread (grants, cancels) and the
/// worker running the app (waits for credit, checks for cancellation).
pub struct ReqCtl {
    /// Bytes the app may still produce before it must wait; the engine grants
    /// more as the client reads (`outbuf_high_watermark`).
    credit: Mutex<i64>,
    more: Condvar,
    cancelled: AtomicBool,
}

impl ReqCtl {
    fn new(window: i64) -> Self {
        ReqCtl {
            credit: Mutex::new(window),
            more: Condvar::new(),
            cancelled: AtomicBool::new(false),
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
                let guard = self.credit.lock().unwrap_or_else(|e| e.into_inner());
                let _guard = self.more.wait_while(guard, |c| !ready(c));
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

struct PoolState {
    requests: Mutex<BTreeMap<ReqId, Arc<ReqCtl>>>,
    idle: AtomicUsize,
    alive: Mutex<usize>,
    exited: Condvar,
}

pub struct PyPool {
    jobs: Option<Sender<(Job, Arc<ReqCtl>)>>,
    queue: Receiver<(Job, Arc<ReqCtl>)>,
    state: Arc<PoolState>,
    window: i64,
}

impl PyPool {
    /// Start `threads` workers. Called from `Server.run()`, never at import.
    pub fn start(
        threads: usize,
        shared: Arc<Shared>,
        events: EventSender,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = crossbeam_channel::unbounded();
        let state = Arc::new(PoolState {
            requests: Mutex::new(BTreeMap::new()),
            idle: AtomicUsize::new(threads),
            alive: Mutex::new(threads),
            exited: Condvar::new(),
        });
        for i in 0..threads {
            let (queue, state, shared, events) =
                (queue.clone(), state.clone(), shared.clone(), events.clone());
            thread::Builder::new()
                .name(format!("maitre-{i}"))
                .spawn(move || worker(queue, state, shared, events))?;
        }
        let window = i64::try_from(shared.config.outbuf_high_watermark).unwrap_or(i64::MAX);
        Ok(PyPool {
            jobs: Some(jobs),
            queue,
            state,
            window,
        })
    }

    /// Stop taking jobs, cancel the queued ones and wait up to `grace` for the
    /// running ones, as Waitress's dispatcher shutdown does.
    /// Returns how many workers are still inside an app afterwards.
    pub fn shutdown(&mut self, grace: Duration) -> usize {
        self.jobs = None;
        let pending: Vec<_> = self.queue.try_iter().collect();
        if !pending.is_empty() {
            warn!(target: "maitre", "Canceling {} pending task(s)", pending.len());
        }
        drop(pending);
        let alive = self.state.alive.lock().unwrap_or_else(|e| e.into_inner());
        let (alive, _) = self
            .state
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
        self.jobs = None;
    }
}

impl Executor for PyPool {
    fn dispatch(&mut self, job: Job) {
        let ctl = Arc::new(ReqCtl::new(self.window));
        if let Ok(mut map) = self.state.requests.lock() {
            map.insert(job.req, ctl.clone());
        }
        let Some(jobs) = &self.jobs else { return };
        let idle = self.state.idle.load(Ordering::Acquire);
        if jobs.send((job, ctl)).is_ok() {
            let depth = jobs.len();
            if depth > idle {
                warn!(target: "maitre.queue", "Task queue depth is {depth}");
            }
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
}

impl PyPool {
    fn lookup(&self, req: ReqId) -> Option<Arc<ReqCtl>> {
        self.state.requests.lock().ok()?.get(&req).cloned()
    }
}

fn worker(
    queue: Receiver<(Job, Arc<ReqCtl>)>,
    state: Arc<PoolState>,
    shared: Arc<Shared>,
    events: EventSender,
) {
    while let Ok((job, ctl)) = queue.recv() {
        state.idle.fetch_sub(1, Ordering::AcqRel);
        let req = job.req;
        if !ctl.is_cancelled() {
            // A bug on our side must cost one request (a 500), never the thread.
            let ran = catch_unwind(AssertUnwindSafe(|| {
                Python::attach(|py| wsgi::run(py, &shared, job, &ctl, &events))
            }));
            if ran.is_err() {
                error!(target: "maitre", "internal error while running a request (a bug): answered 500");
                events.send(AppEvent::Failed { req, detail: None });
            }
        }
        if let Ok(mut map) = state.requests.lock() {
            map.remove(&req);
        }
        state.idle.fetch_add(1, Ordering::AcqRel);
    }
    let mut alive = state.alive.lock().unwrap_or_else(|e| e.into_inner());
    *alive -= 1;
    state.exited.notify_all();
}
