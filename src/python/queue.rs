//! The job queue between the I/O thread and the worker threads, and the rule
//! for when a push wakes a parked worker.
//!
//! Every worker needs the GIL to run a job, so waking a second worker while
//! one is running Python buys a futex round trip and a GIL hand-off, not
//! parallelism. But a worker can also be blocked outside Python (a sleep, a
//! database call) and then a queued job needs another thread at once. The
//! rule that serves both (the "searching worker" rule of work-stealing
//! schedulers): a push wakes a parked worker only when no other worker is
//! already awake and on its way to the queue; a worker that takes a job and
//! leaves more behind wakes the next one the same way. A worker that finishes
//! a job takes the next one without parking, and without letting go of the
//! GIL. So under a stream of quick requests one thread holds the GIL and runs
//! them back to back (others take over at Python's switch interval), and
//! under slow ones every thread is busy within one wake per job.
#![allow(clippy::disallowed_methods)] // worker threads block here, outside the engine

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A FIFO of jobs shared by one producer (the I/O thread) and the workers.
pub struct JobQueue<T> {
    inner: Mutex<Inner<T>>,
    wake: Condvar,
}

struct Inner<T> {
    jobs: VecDeque<T>,
    /// Workers waiting on `wake`.
    parked: usize,
    /// Wake-ups granted and not yet taken by a parked worker.
    tokens: usize,
    /// Workers woken (or about to look) that have not taken a job yet.
    searching: usize,
    /// Workers running a job.
    busy: usize,
    closed: bool,
}

impl<T> Inner<T> {
    /// Wake one parked worker if work is waiting and nobody is on the way.
    fn wake_if_needed(&mut self, wake: &Condvar) {
        if !self.jobs.is_empty() && self.searching == 0 {
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
    /// Back from [`JobQueue::park`].
    Woken,
}

/// What a worker does next.
pub enum Next<T> {
    Run(T),
    /// Nothing queued: park (without the GIL) via [`JobQueue::park`].
    Park,
    /// The queue is closed and empty: leave.
    Exit,
}

impl<T> Default for JobQueue<T> {
    fn default() -> Self {
        JobQueue {
            inner: Mutex::new(Inner {
                jobs: VecDeque::new(),
                parked: 0,
                tokens: 0,
                searching: 0,
                busy: 0,
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }
}

impl<T> JobQueue<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a job; returns the queue depth after the push, or None (and
    /// drops the job) once the queue is closed.
    pub fn push(&self, job: T) -> Option<usize> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        inner.jobs.push_back(job);
        inner.wake_if_needed(&self.wake);
        Some(inner.jobs.len())
    }

    /// Take the next job. A woken worker counted as searching until now.
    pub fn take(&self, came: Came) -> Next<T> {
        let mut inner = self.lock();
        match came {
            Came::Started => {}
            Came::Finished => inner.busy -= 1,
            Came::Woken => inner.searching -= 1,
        }
        match inner.jobs.pop_front() {
            Some(job) => {
                inner.busy += 1;
                inner.wake_if_needed(&self.wake);
                Next::Run(job)
            }
            None if inner.closed => Next::Exit,
            None => Next::Park,
        }
    }

    /// Wait (the caller has let go of the GIL) until a push grants a wake-up
    /// or the queue closes. The caller then calls `take(true)`.
    pub fn park(&self) {
        let mut inner = self.lock();
        if !inner.jobs.is_empty() || inner.closed {
            // A push came between `take` and here: look again at once.
            inner.searching += 1;
            return;
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
    }

    /// Wake a parked worker, unless one is running or on its way: it has
    /// something to do between jobs (see `lend::Returns`).
    pub fn nudge(&self) {
        let mut inner = self.lock();
        if inner.busy == 0 && inner.searching == 0 && !inner.closed {
            inner.wake_one(&self.wake);
        }
    }

    /// Refuse new jobs, wake every parked worker, and hand back the jobs
    /// nobody took.
    pub fn close(&self) -> Vec<T> {
        let mut inner = self.lock();
        inner.closed = true;
        self.wake.notify_all();
        inner.jobs.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn a_push_with_nobody_parked_wakes_nobody() {
        let q = JobQueue::default();
        assert_eq!(q.push(1), Some(1));
        assert_eq!(q.lock().searching, 0);
        assert!(matches!(q.take(Came::Started), Next::Run(1)));
        assert_eq!(q.lock().busy, 1);
        assert!(matches!(q.take(Came::Finished), Next::Park));
        assert_eq!(q.lock().busy, 0);
    }

    #[test]
    fn one_searching_worker_at_a_time_then_the_taker_wakes_the_next() {
        let q = Arc::new(JobQueue::default());
        let mut parked = Vec::new();
        for _ in 0..3 {
            let q2 = q.clone();
            parked.push(thread::spawn(move || {
                q2.park();
                q2.take(Came::Woken)
            }));
        }
        while q.lock().parked < 3 {
            thread::yield_now();
        }
        {
            // Three pushes in one critical section: three jobs, three sleepers,
            // yet a single wake-up.
            let mut inner = q.lock();
            for j in 1..=3 {
                inner.jobs.push_back(j);
                inner.wake_if_needed(&q.wake);
            }
            assert_eq!((inner.tokens, inner.searching), (1, 1));
        }
        // Each woken worker takes a job and, seeing more, wakes the next.
        let mut got: Vec<i32> = parked
            .into_iter()
            .map(|h| match h.join().unwrap() {
                Next::Run(j) => j,
                _ => panic!("a woken worker found no job"),
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![1, 2, 3]);
        let inner = q.lock();
        assert_eq!((inner.parked, inner.tokens, inner.searching), (0, 0, 0));
    }

    #[test]
    fn close_wakes_parked_workers_and_returns_the_queue() {
        let q = Arc::new(JobQueue::<i32>::default());
        let q2 = q.clone();
        let h = thread::spawn(move || {
            q2.park();
            matches!(q2.take(Came::Woken), Next::Exit)
        });
        while q.lock().parked < 1 {
            thread::yield_now();
        }
        assert_eq!(q.close(), Vec::<i32>::new());
        assert!(h.join().unwrap());
        assert_eq!(q.push(5), None);
        assert_eq!(q.lock().searching, 0);
    }

    #[test]
    fn a_nudge_wakes_a_worker_only_when_none_is_running_or_on_its_way() {
        let q = JobQueue::default();
        q.lock().parked = 2; // as if two workers waited in `park`
        q.nudge();
        let wakes = |q: &JobQueue<i32>| {
            let inner = q.lock();
            (inner.tokens, inner.searching)
        };
        assert_eq!(wakes(&q), (1, 1));
        q.nudge(); // one is already on its way
        assert_eq!(wakes(&q), (1, 1));
        {
            let mut inner = q.lock();
            (inner.parked, inner.tokens, inner.searching) = (2, 0, 0);
        }
        q.push(1);
        assert!(matches!(q.take(Came::Started), Next::Run(1)));
        let tokens = q.lock().tokens;
        q.nudge(); // a worker is running: it will do it after its job
        assert_eq!(q.lock().tokens, tokens);
        assert!(matches!(q.take(Came::Finished), Next::Park));
        assert_eq!(q.lock().busy, 0);
    }

    #[test]
    fn a_push_between_take_and_park_is_not_missed() {
        let q = JobQueue::default();
        assert!(matches!(q.take(Came::Started), Next::Park));
        q.push(7); // nobody parked yet: no token
        q.park(); // returns at once, searching
        assert!(matches!(q.take(Came::Woken), Next::Run(7)));
        assert_eq!(q.lock().searching, 0);
    }
}
