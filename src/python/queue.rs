//! The job queue between the I/O loop (whichever thread drives it, see
//! `lead`) and the worker threads, and the rule for when a push wakes a
//! parked worker.
//!
//! Every worker needs the GIL to run a job, so a second worker grabbing the
//! GIL while the first is running Python buys a GIL convoy (forced switches
//! every few milliseconds, each thread's caches cold), not parallelism. But a
//! worker can also be blocked outside Python (a sleep, a database call), and
//! then a queued job needs another thread at once. The rules:
//!
//! - A worker that finishes a job takes the next one without parking and
//!   without letting go of the GIL.
//! - A push wakes a parked worker only when no other worker is already on
//!   its way (the "searching worker" rule of work-stealing schedulers); a
//!   taker that leaves work behind wakes the next one the same way.
//! - A woken worker waits on *standby*, without the GIL, while a running
//!   worker is *fresh* (started its job less than [`STALL`] ago): that one
//!   will most likely be back for the job first. Once every running job is
//!   older, the job gets the woken worker. So a quick app runs on one thread
//!   back to back, and a blocked worker delays a queued job by `STALL` at
//!   most.
//! - In solo mode (a quick app, see `lead`) nothing wakes anybody: the
//!   thread that read the jobs runs them.
#![allow(clippy::disallowed_methods)] // worker threads block here, outside the engine

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a running job counts as about to finish (see the module notes).
pub const STALL: Duration = Duration::from_micros(500);

/// A FIFO of jobs shared by the I/O loop's holder and the workers.
pub struct JobQueue<T> {
    inner: Mutex<Inner<T>>,
    wake: Condvar,
    /// A standby worker waits on it, with a timeout; notified when a
    /// running worker finds the queue empty and parks.
    standby: Condvar,
    solo: AtomicBool,
}

struct Inner<T> {
    jobs: VecDeque<T>,
    /// Workers waiting on `wake`.
    parked: usize,
    /// Wake-ups granted and not yet taken by a parked worker.
    tokens: usize,
    /// Workers woken (or about to look) that have not taken a job yet.
    searching: usize,
    /// When each worker started the job it is running, by worker index.
    running: Vec<Option<Instant>>,
    /// At most this many jobs run at once (`threads`); the pool has one
    /// thread more, so one is always free to hold the lead.
    slots: usize,
    /// Workers waiting in `standby`.
    standing: usize,
    /// Set by `nudge`: the next worker to park (or the one woken) comes
    /// back to its loop instead, even though no job waits.
    attention: bool,
    closed: bool,
}

impl<T> Inner<T> {
    fn busy(&self) -> usize {
        self.running.iter().flatten().count()
    }

    /// A job waits and a slot is free for it.
    fn runnable(&self) -> bool {
        !self.jobs.is_empty() && self.busy() < self.slots
    }

    /// How long until no running job is fresh any more (None: none is).
    fn fresh_for(&self, now: Instant) -> Option<Duration> {
        let youngest = self.running.iter().flatten().max()?;
        STALL
            .checked_sub(now.saturating_duration_since(*youngest))
            .filter(|left| !left.is_zero())
    }

    /// Wake one parked worker if work can run and nobody is on the way.
    fn wake_if_needed(&mut self, wake: &Condvar) {
        if self.runnable() && self.searching == 0 {
            self.wake_one(wake);
        }
    }

    fn wake_one(&mut self, wake: &Condvar) {
        if self.parked > self.tokens {
            self.searching += 1;
            self.tokens += 1;
            wake.notify_one();
        }
    }
}

/// Something a worker must do between jobs: wake one if none is running.
pub trait Nudge: Send + Sync {
    fn nudge(&self);
}

impl<T: Send> Nudge for JobQueue<T> {
    fn nudge(&self) {
        JobQueue::nudge(self);
    }
}

/// How a worker comes to [`JobQueue::take`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Came {
    /// Its first look.
    Started,
    /// Back from a job.
    Finished,
    /// Back from [`JobQueue::wait_for_work`].
    Woken,
}

/// What the holder of the lead does next (see [`JobQueue::plan`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Let go of the lead and run the queued jobs.
    Run,
    /// Let go of the lead and park: a job is running that started just now.
    StepAside,
    /// Drive the loop.
    Poll,
}

/// What a worker does next.
pub enum Next<T> {
    Run(T),
    /// Nothing queued: wait (without the GIL) in [`JobQueue::wait_for_work`].
    Park,
    /// The queue is closed and empty: leave.
    Exit,
}

impl<T> JobQueue<T> {
    /// A queue for `workers` worker threads, numbered from 0, running at
    /// most `slots` jobs at once.
    pub fn new(workers: usize, slots: usize) -> Self {
        JobQueue {
            inner: Mutex::new(Inner {
                jobs: VecDeque::new(),
                parked: 0,
                tokens: 0,
                searching: 0,
                running: vec![None; workers],
                slots,
                standing: 0,
                attention: false,
                closed: false,
            }),
            wake: Condvar::new(),
            standby: Condvar::new(),
            solo: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue one job; the queue depth after it (tests: the pool queues a
    /// turn's jobs with `push_all`).
    #[cfg(test)]
    fn push(&self, job: T) -> Option<usize> {
        self.push_all([job]).map(|before| before + 1)
    }

    /// Queue several jobs under one lock, with at most one wake-up (none in
    /// solo mode: the pusher will run them itself).
    /// Returns the queue depth before them, or None (dropping them) once
    /// closed.
    pub fn push_all(&self, jobs: impl IntoIterator<Item = T>) -> Option<usize> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let before = inner.jobs.len();
        inner.jobs.extend(jobs);
        if !self.is_solo() {
            inner.wake_if_needed(&self.wake);
        }
        Some(before)
    }

    /// Solo mode (see `lead`): the app is quick, so one thread reads, runs
    /// and writes, and nobody is woken for queued jobs (see [`Self::plan`]);
    /// a stuck job is the lead's monitor's business.
    pub fn set_solo(&self, on: bool) {
        if self.solo.load(Ordering::Relaxed) != on {
            self.solo.store(on, Ordering::Relaxed);
        }
    }

    fn is_solo(&self) -> bool {
        self.solo.load(Ordering::Relaxed)
    }

    /// A job waits and a slot is free for it.
    pub fn runnable(&self) -> bool {
        self.lock().runnable()
    }

    /// What the holder of the lead should do next in solo mode.
    pub fn plan(&self) -> Plan {
        if !self.is_solo() {
            return Plan::Poll;
        }
        let inner = self.lock();
        let fresh = inner.busy() > 0 && inner.fresh_for(Instant::now()).is_some();
        if fresh {
            // The thread running a job will take the queued ones and the
            // lead after them: two threads would only pass work around.
            Plan::StepAside
        } else if inner.runnable() {
            // Nobody runs a job, or the ones running are stuck: a slot is
            // free and nobody will come for this one but us.
            Plan::Run
        } else {
            Plan::Poll
        }
    }

    /// A woken worker that goes to hold the lead instead of taking a job
    /// (see `take`): it no longer counts as on its way.
    pub fn unsearch(&self) {
        let mut inner = self.lock();
        inner.searching = inner.searching.saturating_sub(1);
    }

    /// Wake a parked worker for the jobs already queued, if they can run and
    /// nobody is on the way (they were queued without a wake-up).
    pub fn poke(&self) {
        self.lock().wake_if_needed(&self.wake);
    }

    /// Bring one parked worker back to its loop now, whatever the waking
    /// rules say: the lead is stuck (see `lead::Monitor`).
    pub fn kick(&self) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        inner.attention = true;
        inner.wake_one(&self.wake);
        if inner.standing > 0 {
            self.standby.notify_all();
        }
    }

    /// Take the next job for worker `me`. A woken worker counted as
    /// searching until now.
    pub fn take(&self, me: usize, came: Came, now: Instant) -> Next<T> {
        let mut inner = self.lock();
        if came == Came::Woken {
            debug_assert!(inner.searching > 0, "a woken worker was not counted");
            inner.searching = inner.searching.saturating_sub(1);
        }
        if let Some(slot) = inner.running.get_mut(me) {
            *slot = None;
        }
        let job = if inner.busy() < inner.slots {
            inner.jobs.pop_front()
        } else {
            None
        };
        if let Some(slot) = inner.running.get_mut(me) {
            *slot = job.as_ref().map(|_| now);
        }
        match job {
            Some(job) => {
                if !self.is_solo() {
                    inner.wake_if_needed(&self.wake);
                }
                Next::Run(job)
            }
            None => {
                // The job a standby worker waits for was taken, or the
                // fresh worker is about to park: let it look again now.
                if inner.standing > 0 {
                    self.standby.notify_all();
                }
                if inner.closed {
                    Next::Exit
                } else {
                    Next::Park
                }
            }
        }
    }

    /// Without the GIL, between `take` returning `Park` and the next
    /// `take(.., Came::Woken, ..)`: park until a push grants a wake-up (or
    /// the queue closes), then stand by while a fresh running worker is
    /// likely to take the waiting job itself; if it does and the queue
    /// empties, park again without ever taking the GIL. Returns counted as
    /// searching, when a job needs this worker or the queue has closed.
    pub fn wait_for_work(&self) {
        let mut inner = self.lock();
        loop {
            inner = self.park(inner);
            if std::mem::take(&mut inner.attention) {
                return;
            }
            // Stand by. Still searching, so pushes wake nobody else; a
            // worker that parks lets us look again at once.
            loop {
                if inner.closed || std::mem::take(&mut inner.attention) {
                    return;
                }
                if !inner.runnable() {
                    debug_assert!(inner.searching > 0, "a standby worker was not counted");
                    inner.searching = inner.searching.saturating_sub(1);
                    break;
                }
                let Some(left) = inner.fresh_for(Instant::now()) else {
                    return;
                };
                inner.standing += 1;
                inner = self
                    .standby
                    .wait_timeout(inner, left)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
                inner.standing -= 1;
            }
        }
    }

    /// Sleep until a wake-up token or the close; returns counted as searching.
    fn park<'a>(&'a self, inner: MutexGuard<'a, Inner<T>>) -> MutexGuard<'a, Inner<T>> {
        let mut inner = inner;
        if inner.runnable() || inner.closed || inner.attention {
            // A push (or a nudge) came between `take` and here: look again.
            inner.searching += 1;
            return inner;
        }
        inner.parked += 1;
        let mut inner = self
            .wake
            .wait_while(inner, |i| i.tokens == 0 && !i.closed)
            .unwrap_or_else(|e| e.into_inner());
        inner.parked -= 1;
        if inner.tokens > 0 {
            inner.tokens -= 1; // the pusher counted us as searching
        } else {
            inner.searching += 1; // woken by close
        }
        inner
    }

    /// Bring a worker back to its loop: it has something to do between jobs
    /// (see `lend::Returns`). A worker about to park comes back at once; a
    /// parked one is woken unless a fresh worker (back soon) or a searching
    /// one will pass through its loop first.
    pub fn nudge(&self) {
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        inner.attention = true;
        if inner.searching == 0 && inner.fresh_for(Instant::now()).is_none() {
            inner.wake_one(&self.wake);
        }
    }

    /// Refuse new jobs, wake every parked worker, and hand back the jobs
    /// nobody took.
    pub fn close(&self) -> Vec<T> {
        let mut inner = self.lock();
        inner.closed = true;
        self.wake.notify_all();
        self.standby.notify_all();
        inner.jobs.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    fn counts<T>(q: &JobQueue<T>) -> (usize, usize, usize) {
        let inner = q.lock();
        (inner.tokens, inner.searching, inner.busy())
    }

    #[test]
    fn a_push_with_nobody_parked_wakes_nobody() {
        let (q, t0) = (JobQueue::new(1, 1), Instant::now());
        assert_eq!(q.push(1), Some(1));
        assert_eq!(counts(&q), (0, 0, 0));
        assert!(matches!(q.take(0, Came::Started, t0), Next::Run(1)));
        assert_eq!(counts(&q), (0, 0, 1));
        assert!(matches!(q.take(0, Came::Finished, t0), Next::Park));
        assert_eq!(counts(&q), (0, 0, 0));
    }

    #[test]
    fn one_searching_worker_at_a_time() {
        let q = JobQueue::new(3, 3);
        q.lock().parked = 3; // as if three workers waited in `park`
        for j in 1..=3 {
            q.push(j);
        }
        assert_eq!(
            counts(&q),
            (1, 1, 0),
            "three jobs, three sleepers, one wake-up"
        );
        // The woken one takes a job and, seeing more, wakes the next.
        q.lock().parked = 2;
        q.lock().tokens = 0;
        assert!(matches!(
            q.take(0, Came::Woken, Instant::now()),
            Next::Run(1)
        ));
        assert_eq!(counts(&q), (1, 1, 1));
    }

    #[test]
    fn a_turn_of_jobs_goes_in_under_one_lock_with_one_wake_up() {
        let q = JobQueue::new(3, 3);
        q.push(0);
        q.lock().parked = 3;
        assert_eq!(q.push_all([1, 2, 3]), Some(1), "the depth before them");
        assert_eq!(counts(&q), (1, 1, 0));
        assert_eq!(q.lock().jobs.len(), 4);
        q.close();
        assert_eq!(q.push_all([5]), None);
    }

    #[test]
    fn standby_waits_while_a_worker_is_fresh() {
        let q = JobQueue::new(2, 2);
        let start = Instant::now();
        q.push(1);
        assert!(matches!(q.take(0, Came::Started, start), Next::Run(1)));
        q.push(2);
        q.wait_for_work(); // worker 0 is fresh: wait until it is not
        assert!(
            Instant::now() >= start + STALL,
            "returned while worker 0 was fresh"
        );
        assert_eq!(counts(&q), (0, 1, 1), "returns searching");
    }

    #[test]
    fn freshness_is_the_youngest_running_job_within_stall() {
        let q = JobQueue::<i32>::new(3, 3);
        let t0 = Instant::now();
        assert_eq!(q.lock().fresh_for(t0), None, "nobody running");
        q.lock().running = vec![Some(t0), None, Some(t0 + STALL / 2)];
        assert_eq!(q.lock().fresh_for(t0 + STALL / 2), Some(STALL));
        assert_eq!(q.lock().fresh_for(t0 + STALL), Some(STALL / 2));
        assert_eq!(q.lock().fresh_for(t0 + STALL * 3 / 2), None, "all stale");
    }

    #[test]
    fn parked_workers_wake_take_and_the_pool_drains() {
        let q = Arc::new(JobQueue::new(3, 3));
        let mut workers = Vec::new();
        for me in 0..3 {
            let q = q.clone();
            workers.push(thread::spawn(move || {
                let (mut came, mut done) = (Came::Started, Vec::new());
                loop {
                    match q.take(me, came, Instant::now()) {
                        Next::Run(j) => {
                            done.push(j);
                            came = Came::Finished;
                        }
                        Next::Park => {
                            q.wait_for_work();
                            came = Came::Woken;
                        }
                        Next::Exit => return done,
                    }
                }
            }));
        }
        for j in 0..100 {
            q.push(j);
        }
        while !q.lock().jobs.is_empty() {
            thread::yield_now();
        }
        q.close();
        let mut all: Vec<i32> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_nudge_wakes_a_worker_unless_one_will_come_by_soon() {
        let q = JobQueue::new(2, 2);
        q.lock().parked = 2; // as if two workers waited in `park`
        q.nudge();
        assert_eq!(counts(&q), (1, 1, 0));
        q.nudge(); // one is already on its way
        assert_eq!(counts(&q), (1, 1, 0));
        {
            let mut inner = q.lock();
            (inner.tokens, inner.searching) = (0, 0);
        }
        q.push(1);
        {
            let mut inner = q.lock();
            (inner.tokens, inner.searching) = (0, 0);
        }
        assert!(matches!(
            q.take(0, Came::Started, Instant::now()),
            Next::Run(1)
        ));
        q.nudge(); // worker 0 is fresh: it will pass through its loop first
        assert_eq!(counts(&q), (0, 0, 1));
        // A long job does not hold the release up.
        q.push(2);
        q.lock().tokens = 0;
        q.lock().searching = 0;
        let long_ago = Instant::now() - STALL * 2;
        assert!(matches!(q.take(1, Came::Started, long_ago), Next::Run(2)));
        q.lock().running[0] = Some(long_ago);
        q.nudge();
        assert_eq!(counts(&q), (1, 1, 2));
    }

    #[test]
    fn a_worker_about_to_park_comes_back_for_a_nudge() {
        let q = JobQueue::<i32>::new(1, 1);
        assert!(matches!(
            q.take(0, Came::Started, Instant::now()),
            Next::Park
        ));
        q.nudge(); // nobody parked yet: no token, but attention
        q.wait_for_work(); // returns at once
        assert!(!q.lock().attention, "taken by the worker");
        assert!(matches!(q.take(0, Came::Woken, Instant::now()), Next::Park));
        assert_eq!(counts(&q), (0, 0, 0));
    }

    #[test]
    fn a_nudged_worker_comes_back_from_wait_for_work_without_a_job() {
        let q = Arc::new(JobQueue::<i32>::new(1, 1));
        let q2 = q.clone();
        let waiter = thread::spawn(move || {
            q2.wait_for_work();
            q2.take(0, Came::Woken, Instant::now())
        });
        while q.lock().parked < 1 {
            thread::yield_now();
        }
        q.nudge();
        assert!(matches!(waiter.join().unwrap(), Next::Park));
        let inner = q.lock();
        assert_eq!(
            (inner.searching, inner.tokens, inner.attention),
            (0, 0, false)
        );
    }

    #[test]
    fn close_hands_back_queued_jobs_and_refuses_more() {
        let q = JobQueue::new(1, 1);
        q.push(4);
        assert_eq!(q.close(), vec![4]);
        assert_eq!(q.push(5), None);
        assert!(matches!(
            q.take(0, Came::Started, Instant::now()),
            Next::Exit
        ));
    }

    #[test]
    fn a_push_between_take_and_park_is_not_missed() {
        let q = JobQueue::new(1, 1);
        let now = Instant::now();
        assert!(matches!(q.take(0, Came::Started, now), Next::Park));
        q.push(7); // nobody parked yet: no token
        q.wait_for_work(); // returns at once (nobody running), searching
        assert!(matches!(q.take(0, Came::Woken, now), Next::Run(7)));
        assert_eq!(counts(&q), (0, 0, 1));
    }

    #[test]
    fn solo_pushes_and_takes_wake_nobody() {
        let q = JobQueue::new(3, 2);
        q.set_solo(true);
        q.lock().parked = 2;
        assert_eq!(q.push_all([1, 2, 3]), Some(0));
        assert_eq!(counts(&q), (0, 0, 0), "the pusher runs them itself");
        assert!(matches!(
            q.take(0, Came::Started, Instant::now()),
            Next::Run(1)
        ));
        assert_eq!(counts(&q), (0, 0, 1), "jobs left behind, still no wake-up");
        q.set_solo(false);
        assert_eq!(q.push_all([4]), Some(2));
        assert_eq!(counts(&q), (1, 1, 1), "out of solo mode the usual rule");
    }

    #[test]
    fn no_more_jobs_run_than_slots_however_many_threads() {
        let q = JobQueue::new(3, 2);
        q.push_all([1, 2, 3]);
        let now = Instant::now();
        assert!(matches!(q.take(0, Came::Started, now), Next::Run(1)));
        assert!(matches!(q.take(1, Came::Started, now), Next::Run(2)));
        assert!(matches!(q.take(2, Came::Started, now), Next::Park));
        assert!(!q.lock().runnable(), "a job waits, but no slot is free");
        // A finishing worker frees its slot and takes the next job itself.
        assert!(matches!(q.take(0, Came::Finished, now), Next::Run(3)));
    }

    #[test]
    fn the_lead_runs_queued_jobs_steps_aside_for_a_fresh_runner_or_polls() {
        let q = JobQueue::new(3, 2);
        assert_eq!(
            q.plan(),
            Plan::Poll,
            "not solo: the holder only drives the loop"
        );
        q.set_solo(true);
        assert_eq!(q.plan(), Plan::Poll, "nothing queued, nothing running");
        q.push_all([1, 2]);
        assert_eq!(q.plan(), Plan::Run, "queued and nobody running");
        assert!(matches!(
            q.take(0, Came::Started, Instant::now()),
            Next::Run(1)
        ));
        assert_eq!(q.plan(), Plan::StepAside, "its runner is back soon");
        let stale = Instant::now() - 2 * STALL;
        q.lock().running[0] = Some(stale);
        assert_eq!(q.plan(), Plan::Run, "the runner is stuck: a slot is free");
        q.lock().running[1] = Some(stale);
        assert_eq!(q.plan(), Plan::Poll, "stuck runners fill every slot");
    }

    #[test]
    fn a_kick_brings_back_a_parked_worker_which_may_unsearch() {
        let q = Arc::new(JobQueue::<i32>::new(2, 1));
        q.set_solo(true);
        let q2 = q.clone();
        let waiter = thread::spawn(move || {
            q2.wait_for_work();
            q2.unsearch();
        });
        while q.lock().parked < 1 {
            thread::yield_now();
        }
        q.kick();
        waiter.join().unwrap();
        let inner = q.lock();
        assert_eq!(
            (inner.searching, inner.tokens, inner.parked, inner.attention),
            (0, 0, 0, false)
        );
    }
}
