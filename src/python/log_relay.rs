//! Log records written while driving the I/O loop reach Python's `logging`
//! through a relay thread. The loop never waits for the GIL: a worker may
//! hold it for a whole switch interval (5 ms), and Waitress's "Task queue
//! depth" warning alone is one record per request that waits for a thread,
//! so logging in place halved the throughput of a server with logging on.
//! Records written anywhere else (an app's thread) go to `logging` directly.
#![allow(clippy::disallowed_methods)] // the relay is a thread of its own

use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};
use std::cell::{Cell, RefCell};
use std::thread::{self, JoinHandle};

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;

/// A record taken apart so it can cross threads.
struct Owned {
    level: Level,
    target: String,
    message: String,
    module_path: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

impl Owned {
    fn of(record: &Record<'_>) -> Self {
        Owned {
            level: record.level(),
            target: record.target().to_string(),
            message: record.args().to_string(),
            module_path: record.module_path().map(str::to_string),
            file: record.file().map(str::to_string),
            line: record.line(),
        }
    }

    fn emit(&self) {
        log::logger().log(
            &Record::builder()
                .level(self.level)
                .target(&self.target)
                .args(format_args!("{}", self.message))
                .module_path(self.module_path.as_deref())
                .file(self.file.as_deref())
                .line(self.line)
                .build(),
        );
    }
}

/// Records a relay in flight may hold before the I/O thread drops new ones
/// (Python's logging can fall behind: it runs once per GIL turn).
const RELAY_CAPACITY: usize = 10_000;

/// Records dropped because the relay was full, not yet reported.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The relay this thread's records go to while `ROUTING` is set (kept
    /// between turns: cloning a sender costs a shared atomic each time).
    static ROUTE: RefCell<Option<Sender<Msg>>> = const { RefCell::new(None) };
    static ROUTING: Cell<bool> = const { Cell::new(false) };
}

/// The process's `log` backend: pyo3-log, behind the relay for routed threads.
struct RelayLogger {
    inner: pyo3_log::Logger,
}

impl Log for RelayLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let route = if ROUTING.with(Cell::get) {
            ROUTE.with(|route| route.borrow().clone())
        } else {
            None
        };
        match route {
            // A full relay drops the record rather than block the I/O thread
            // or take the GIL here; the relay reports how many it lost.
            Some(tx) => {
                if tx.try_send(Some(Owned::of(record))).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => self.inner.log(record),
        }
    }

    fn flush(&self) {}
}

/// Install the backend (once per process; a second import keeps the first).
pub fn install(py: Python<'_>) {
    let Ok(inner) = pyo3_log::Logger::new(py, pyo3_log::Caching::LoggersAndLevels) else {
        return;
    };
    if log::set_boxed_logger(Box::new(RelayLogger { inner })).is_ok() {
        log::set_max_level(LevelFilter::Debug);
    }
}

/// A record, or None: the relay ends (see `Relay::finish`).
type Msg = Option<Owned>;

/// A running relay thread and the way into it.
pub struct Relay {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start() -> std::io::Result<Relay> {
        let (tx, rx) = crossbeam_channel::bounded(RELAY_CAPACITY);
        let thread = thread::Builder::new()
            .name("maitre-log".into())
            .spawn(move || relay(rx))?;
        Ok(Relay {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// A way into the relay for other threads (see [`Route::enter`]).
    pub fn route(&self) -> Route {
        Route(self.tx.clone())
    }

    /// Deliver every record sent so far and end the relay, whoever still
    /// holds a [`Route`]. Call without the GIL: the relay needs it to finish.
    pub fn finish(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(None);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Without `finish` (an unwinding caller may hold the GIL): close the
        // channel and let the thread end by itself.
        if let Some(tx) = self.tx.take() {
            let _ = tx.try_send(None);
        }
    }
}

/// A clonable way into a relay, for the threads that take turns at the loop.
#[derive(Clone)]
pub struct Route(Option<Sender<Msg>>);

impl Route {
    /// Send the calling thread's records through the relay until the guard
    /// is dropped.
    pub fn enter(&self) -> Routed {
        ROUTE.with(|route| {
            let mut route = route.borrow_mut();
            if route.is_none() {
                *route = self.0.clone();
            }
        });
        ROUTING.with(|on| on.set(true));
        Routed(())
    }
}

/// While alive, this thread's records go through the relay.
pub struct Routed(());

impl Drop for Routed {
    fn drop(&mut self) {
        ROUTING.with(|on| on.set(false));
    }
}

fn relay(records: Receiver<Msg>) {
    Python::attach(|py| {
        // Wait without the GIL; then emit everything waiting in one turn.
        while let Ok(Some(first)) = py.detach(|| records.recv()) {
            first.emit();
            let mut ended = false;
            for msg in records.try_iter() {
                match msg {
                    Some(record) => record.emit(),
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            let lost = DROPPED.swap(0, Ordering::Relaxed);
            if lost > 0 {
                log::warn!(target: "maitre", "{lost} log record(s) dropped: logging could not keep up");
            }
            if ended {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_crosses_threads_whole() {
        let depth = 3;
        let owned = Owned::of(
            &Record::builder()
                .level(Level::Warn)
                .target("maitre.queue")
                .args(format_args!("Task queue depth is {depth}"))
                .module_path(Some("maitre::python::pool"))
                .file(Some("src/python/pool.rs"))
                .line(Some(7))
                .build(),
        );
        let got = thread::spawn(move || owned).join().unwrap();
        assert_eq!(
            (got.level, got.target.as_str(), got.message.as_str()),
            (Level::Warn, "maitre.queue", "Task queue depth is 3")
        );
        assert_eq!(got.module_path.as_deref(), Some("maitre::python::pool"));
        assert_eq!(
            (got.file.as_deref(), got.line),
            (Some("src/python/pool.rs"), Some(7))
        );
    }
}
