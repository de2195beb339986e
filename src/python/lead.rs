//! The I/O loop as a role that any pool thread can hold (the *lead*), not a
//! thread of its own.
//!
//! Why: on a small machine, handing every request from an I/O thread to a
//! worker and the answer back (a wake-up, a context switch, cold caches each
//! way) costs more than a quick app's whole request. So the holder of the
//! lead polls the sockets and drives the engine, and when the app is quick
//! (its recent jobs took under [`QUICK`] on average), it lets go of the lead
//! and runs the jobs it has just read itself. Every [`BATCH`] jobs (or
//! [`BATCH_WITHIN`], or when it runs out) it takes the lead back for one turn
//! without sleeping, which writes the answers and reads whatever came
//! meanwhile: one thread reads, runs and writes, with no hand-off, as a
//! single-threaded server does. With a slower app the holder keeps the lead
//! and the jobs go to the other threads, which wait for them as before (see
//! `queue`). A job that must wait for its client to read drives the loop
//! itself meanwhile (`drive_while`).
//!
//! A quick app can still be slow once, and nobody polls while the lead is
//! vacant. A monitor thread looks every [`TICK`]: if the lead stayed vacant
//! for a whole tick, it wakes a parked thread, which takes the lead, writes
//! what is waiting and reads what came before anything else. Other clients
//! then wait two to four ticks at most, never for the slow request (whose
//! duration then counts in the average like any other). The pool has one
//! thread more than it has slots for jobs, so one thread is always free to
//! take the lead. A panic inside a turn stops the server (`run()` raises)
//! rather than leave the lead held by nobody.
#![allow(clippy::disallowed_methods)] // threads, clocks and the real loop live here

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use log::error;
use mio::{Events, Poll, Token, Waker};
use pyo3::prelude::*;

use crate::drivers::mio::{MioServer, SignalSource, SIGNALS};
use crate::python::log_relay::Route;
use crate::python::pool::{PyPool, Queued};
use crate::python::queue::{JobQueue, Plan};

/// What [`Lead::hold`] tells its caller.
pub enum Held {
    /// Look at the queue: there are jobs to run (or the server finished).
    Run,
    /// Park until woken.
    Park,
}

/// An app whose jobs take less than this on average is run by the thread
/// that read its requests.
pub const QUICK: Duration = Duration::from_micros(200);

/// How often the monitor looks at a vacant lead; a stuck holder delays the
/// other clients by two to four ticks (a kick counts as the lead moving).
pub const TICK: Duration = Duration::from_millis(2);

/// Ticks without any movement of the lead before the monitor stops ticking
/// (it sleeps until the lead is next left vacant).
const IDLE_TICKS: u32 = 64;

/// A thread running queued jobs back to back writes their answers (and
/// polls) after this many, or `BATCH_WITHIN` after the last time. Each
/// write wakes the client's reader; on a virtual machine waking a thread on
/// an idle CPU is an interrupt through the hypervisor, and one per batch
/// instead of one per answer took a Flask hello from 9-10k to 11-14k
/// requests/s with a lower p99. It also keeps one client's long pipeline
/// from holding up the others.
const BATCH: u32 = 16;
const BATCH_WITHIN: Duration = Duration::from_millis(1);

const FINISHED: Token = Token(0);

/// How long the app's jobs take: a moving average of their durations.
#[derive(Default)]
pub struct Pace {
    nanos: AtomicU64,
}

impl Pace {
    /// Fold one job's duration in (weight 1/16, so that one slow job among
    /// quick ones does not change the mode: the monitor covers it; racing
    /// updates may lose one, which an average can afford).
    pub fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.nanos.load(Ordering::Relaxed);
        let new = old - old / 16 + took / 16;
        self.nanos.store(new, Ordering::Relaxed);
    }

    pub fn is_quick(&self) -> bool {
        self.nanos.load(Ordering::Relaxed) < QUICK.as_nanos() as u64
    }
}

thread_local! {
    /// The lead of the pool this thread belongs to (see `drive_while`).
    static CURRENT: std::cell::RefCell<Option<Arc<Lead>>> = const { std::cell::RefCell::new(None) };
}

/// Make `lead` the calling pool thread's (for [`with_current`]).
pub fn set_current(lead: &Arc<Lead>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(lead.clone()));
}

/// Run `f` with the calling thread's lead, if it is a pool thread.
pub fn with_current(f: impl FnOnce(&Lead)) {
    let lead = CURRENT.with(|c| c.borrow().clone());
    if let Some(lead) = lead {
        f(&lead);
    }
}

/// The loop, and who holds it.
pub struct Lead {
    /// Taken out (and dropped, closing every socket) when `run()` ends,
    /// whoever still has the `Lead`.
    server: Mutex<Option<MioServer<PyPool>>>,
    /// Someone holds `server` to drive it (the monitor reads this).
    held: AtomicBool,
    /// How many times the lead was taken: whether it moved since last tick.
    taken: AtomicU64,
    /// Jobs run since the last visit that wrote, and when that was.
    jobs_since: AtomicU32,
    last_visit: AtomicU64,
    epoch: Instant,
    /// The server finished: nobody drives it any more.
    finished: AtomicBool,
    outcome: Mutex<Option<io::Result<()>>>,
    /// Wakes `wait`, on the thread that called `Server.run()`.
    done: Waker,
    pub pace: Pace,
    queue: Arc<JobQueue<Queued>>,
    /// The holder's log records go through the relay (it must not wait for
    /// the GIL while other clients wait for it).
    route: Route,
    monitor: Monitor,
}

impl Lead {
    /// Wrap a bound server; `poll` is the caller's, for [`Lead::wait`].
    pub fn new(
        server: MioServer<PyPool>,
        queue: Arc<JobQueue<Queued>>,
        route: Route,
        poll: &Poll,
    ) -> io::Result<Arc<Lead>> {
        Ok(Arc::new(Lead {
            server: Mutex::new(Some(server)),
            held: AtomicBool::new(false),
            taken: AtomicU64::new(0),
            jobs_since: AtomicU32::new(0),
            last_visit: AtomicU64::new(0),
            epoch: Instant::now(),
            finished: AtomicBool::new(false),
            outcome: Mutex::new(None),
            done: Waker::new(poll.registry(), FINISHED)?,
            pace: Pace::default(),
            queue,
            route,
            monitor: Monitor::default(),
        }))
    }

    /// Start the monitor thread.
    pub fn start_monitor(self: &Arc<Self>) -> io::Result<()> {
        let lead = self.clone();
        thread::Builder::new()
            .name("maitre-lead".into())
            .spawn(move || lead.watch())?;
        Ok(())
    }

    fn try_take(&self) -> Option<MutexGuard<'_, Option<MioServer<PyPool>>>> {
        if self.held.load(Ordering::Relaxed) || self.finished.load(Ordering::Acquire) {
            return None;
        }
        let guard = match self.server.try_lock() {
            Ok(guard) => guard,
            // A panic in a turn is caught there (see `turn`); a poisoned
            // mutex only means it happened while the guard was held.
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        if self.finished.load(Ordering::Acquire) || guard.is_none() {
            return None;
        }
        self.held.store(true, Ordering::SeqCst);
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(guard)
    }

    fn give_up(&self, guard: MutexGuard<'_, Option<MioServer<PyPool>>>) {
        self.held.store(false, Ordering::SeqCst);
        drop(guard);
        self.monitor.vacated();
    }

    /// One turn; records the outcome and tells `wait` once the server is done.
    fn turn(&self, server: &mut Option<MioServer<PyPool>>, wait: bool) -> bool {
        let Some(server) = server.as_mut() else {
            return true;
        };
        let turned = catch_unwind(AssertUnwindSafe(|| server.turn(wait)));
        let outcome = match turned {
            Ok(None) => return false,
            Ok(Some(outcome)) => outcome,
            Err(_) => {
                error!(target: "maitre", "internal error in the event loop (a bug): the server stops");
                Err(io::Error::other("internal error in the event loop"))
            }
        };
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.finished.store(true, Ordering::Release);
        let _ = self.done.wake();
        self.monitor.wake();
        true
    }

    /// Take the lead if it is free and drive the loop, sleeping in `poll`,
    /// until this thread should run queued jobs (returns `Run`), park
    /// (`Park`: another thread holds the lead, or is running a job that
    /// started just now and will take the lead after it), or the server has
    /// finished (`Run`: the caller looks at the queue again).
    pub fn hold(&self, py: Python<'_>) -> Held {
        // Not worth letting go of the GIL for a lead that is plainly taken.
        if !self.is_vacant() {
            return Held::Park;
        }
        py.detach(|| self.hold_detached())
    }

    /// [`Lead::hold`], on a thread that does not hold the GIL.
    pub fn hold_detached(&self) -> Held {
        loop {
            let Some(mut server) = self.try_take() else {
                return Held::Park;
            };
            let plan = 'plan: {
                let _routed = self.route.enter();
                // One turn first: a thread woken because the lead was left
                // vacant must write the answers waiting in the channel and
                // read what came before it decides anything.
                if self.turn(&mut server, false) {
                    break 'plan Plan::Run;
                }
                loop {
                    match self.queue.plan() {
                        Plan::Poll => {}
                        plan => break plan,
                    }
                    if self.turn(&mut server, true) {
                        break Plan::Run;
                    }
                }
            };
            self.give_up(server);
            match plan {
                Plan::StepAside if self.queue.plan() != Plan::StepAside => {
                    // The job ended while we let go, and its thread may have
                    // found the lead still held: take it back.
                    continue;
                }
                Plan::StepAside => return Held::Park,
                _ => return Held::Run,
            }
        }
    }

    /// Nobody holds the lead (a woken worker should take it, not a job).
    pub fn is_vacant(&self) -> bool {
        !self.held.load(Ordering::SeqCst) && !self.finished.load(Ordering::Acquire)
    }

    /// After a job that ended at `ended`: every [`BATCH`] jobs, or once
    /// [`BATCH_WITHIN`] has passed since the last such turn, take the lead if it
    /// is free for one turn without sleeping (write the answers, read what
    /// came meanwhile), then let go. A thread that runs out of jobs drives
    /// the loop anyway, so the batch is also cut short by an empty queue.
    /// Keeps the GIL: the turn never blocks or runs Python. Returns whether
    /// it took a turn.
    pub fn visit(&self, ended: Instant) -> bool {
        let since = self.last_visit.load(Ordering::Relaxed);
        let now = self.nanos(ended);
        let jobs = self.jobs_since.fetch_add(1, Ordering::Relaxed) + 1;
        if jobs < BATCH && now.saturating_sub(since) < BATCH_WITHIN.as_nanos() as u64 {
            return false;
        }
        let Some(mut server) = self.try_take() else {
            return false;
        };
        self.jobs_since.store(0, Ordering::Relaxed);
        self.last_visit.store(now, Ordering::Relaxed);
        {
            let _routed = self.route.enter();
            self.turn(&mut server, false);
        }
        self.give_up(server);
        true
    }

    /// While `pending` (a job waits for its client to read), drive the loop
    /// if nobody does: with a quick app nobody else would until the monitor
    /// noticed, and the client cannot read what nobody writes. Jobs queued
    /// meanwhile get a worker woken for them. Call without the GIL.
    pub fn drive_while(&self, pending: &dyn Fn() -> bool) {
        if !pending() {
            return;
        }
        let Some(mut server) = self.try_take() else {
            return;
        };
        {
            let _routed = self.route.enter();
            // This thread is busy with a job that may wait long: jobs queued
            // meanwhile need other threads, woken by the usual rules (each
            // taker wakes the next), until a job's end sets the mode again.
            self.queue.set_solo(false);
            self.queue.poke();
            while pending() {
                if self.turn(&mut server, true) {
                    break;
                }
            }
        }
        self.give_up(server);
    }

    /// `at` as nanoseconds since the lead was made.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// On the thread that called `Server.run()`: wait (without the GIL) until
    /// the server finishes, running `on_signal` when `signals` fires; a true
    /// return from it asks for a graceful stop (`stop`).
    pub fn wait(
        &self,
        mut poll: Poll,
        signals: Option<&SignalSource>,
        on_signal: &mut dyn FnMut() -> bool,
        stop: &dyn Fn(),
    ) -> io::Result<()> {
        if let Some(source) = signals {
            source.register(poll.registry())?;
        }
        let mut events = Events::with_capacity(8);
        while !self.finished.load(Ordering::Acquire) {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            if events.iter().any(|ev| ev.token() == SIGNALS) {
                if let Some(source) = signals {
                    source.drain();
                }
                if on_signal() {
                    stop();
                }
            }
        }
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or(Ok(()))
    }

    /// Nobody may take the lead any more (`run()` is failing); a holder
    /// lets go at the end of its turn.
    pub fn abandon(&self) {
        self.finished.store(true, Ordering::Release);
        self.monitor.wake();
    }

    /// The server, for the caller of `wait` once it has returned.
    pub fn take_server(&self) -> Option<MioServer<PyPool>> {
        self.server.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The monitor thread's loop (see the module notes).
    fn watch(&self) {
        let mut last = self.taken.load(Ordering::Relaxed);
        let mut still = 0;
        loop {
            let idle = still >= IDLE_TICKS;
            if !self.monitor.sleep(idle, &self.held, &self.finished) {
                return;
            }
            let taken = self.taken.load(Ordering::Relaxed);
            if idle {
                // Back from sleeping through a quiet spell: start counting.
                (still, last) = (0, taken);
                continue;
            }
            let vacant = !self.held.load(Ordering::SeqCst);
            if vacant && taken == last {
                self.queue.kick();
            }
            still = if taken == last { still + 1 } else { 0 };
            last = taken;
        }
    }
}

/// The monitor's sleep: a tick, or (idle) until the lead is left vacant.
#[derive(Default)]
struct Monitor {
    asleep: AtomicBool,
    lock: Mutex<()>,
    bell: Condvar,
}

impl Monitor {
    /// Sleep a tick, or, if `idle`, until woken. False once `finished`.
    fn sleep(&self, idle: bool, held: &AtomicBool, finished: &AtomicBool) -> bool {
        let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if finished.load(Ordering::Acquire) {
            return false;
        }
        if idle {
            // SeqCst pairs with `give_up`: either it sees us asleep and
            // rings, or we see the lead vacant and keep ticking.
            self.asleep.store(true, Ordering::SeqCst);
            if held.load(Ordering::SeqCst) {
                let _guard = self.bell.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            self.asleep.store(false, Ordering::Relaxed);
        } else {
            let _ = self.bell.wait_timeout(guard, TICK);
        }
        !finished.load(Ordering::Acquire)
    }

    /// The lead was left vacant: make sure the monitor ticks.
    fn vacated(&self) {
        if self.asleep.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.bell.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_follows_recent_jobs() {
        let pace = Pace::default();
        assert!(pace.is_quick(), "quick until jobs say otherwise");
        for _ in 0..8 {
            pace.record(Duration::from_millis(10));
        }
        assert!(!pace.is_quick(), "eight 10 ms jobs make a slow app");
        let mut quick_again = 0;
        while !pace.is_quick() {
            pace.record(Duration::from_micros(5));
            quick_again += 1;
        }
        // 1/16 weight: dozens of quick jobs, not one, bring it back.
        assert!((30..=80).contains(&quick_again), "{quick_again}");
    }

    #[test]
    fn one_slow_job_among_quick_ones_does_not_make_a_slow_app() {
        let pace = Pace::default();
        for _ in 0..100 {
            pace.record(Duration::from_micros(20));
        }
        pace.record(Duration::from_micros(1500));
        assert!(pace.is_quick());
    }
}
