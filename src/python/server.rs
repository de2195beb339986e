//! `maitre._maitre.Server`: a bound server that Python runs and closes.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::config::Config;
use crate::drivers::mio::{Listener, MioServer, SignalSource, StopHandle, Wiring};
use crate::python::environ::Template;
use crate::python::lead::Lead;
use crate::python::log_relay::Relay;
use crate::python::pool::PyPool;
use crate::python::settings;
use crate::python::wsgi::Shared;
use mio::Poll;

/// Waitress waits this long for running apps when it stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Prepared {
    config: Config,
    listeners: Vec<Listener>,
    wiring: Wiring,
    shared: Arc<Shared>,
    /// Told (one byte, `R`) when `max_requests` starts this server's retirement.
    retire_fd: Option<i64>,
}

#[pyclass(module = "maitre._maitre", name = "Server", frozen)]
pub struct Server {
    prepared: Mutex<Option<Prepared>>,
    stop: StopHandle,
    /// Workers still inside an app when `run()` returned.
    stuck: AtomicUsize,
    /// `run()` ended because `max_requests` was reached.
    retired: AtomicBool,
}

#[pymethods]
impl Server {
    /// `Server(app, pairs, listeners, hooks)`; see python/maitre/server.py.
    /// `listeners` are `(fd, "tcp" | "unix", host, port)`; the fds are adopted.
    #[new]
    fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        pairs: &Bound<'_, PyList>,
        listeners: Vec<(i64, String, String, String)>,
        hooks: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        // Adopt the fds first: from here on they are ours and are closed
        // (by dropping the listeners) if anything below fails.
        let adopted = listeners.iter().map(adopt).collect::<PyResult<Vec<_>>>()?;
        let (mut config, _, _) = settings::parse(pairs)?;
        config.max_requests = with_jitter(config.max_requests, config.max_requests_jitter);
        let hook = |name: &str| -> PyResult<Bound<'_, PyAny>> {
            hooks
                .get_item(name)?
                .ok_or_else(|| PyValueError::new_err(format!("missing hook {name:?}")))
        };
        let ports: Vec<String> = listeners
            .iter()
            .map(|(_, _, _, port)| port.clone())
            .collect();
        let file_wrapper = hook("file_wrapper")?;
        let template = Template::new(py, &config, &ports, &file_wrapper, &hook("errors")?)?;
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("maitre",))?;
        let wiring = Wiring::new()?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            app,
            template,
            file_wrapper: file_wrapper.unbind(),
            client_disconnected: hook("client_disconnected")?.unbind(),
            logger: logger.unbind(),
            timeout_error: optional_hook(hooks, "request_timeout_error")?.map(Bound::unbind),
            access_log: crate::python::access_log::AccessLog::from_config(py, &config)?,
            meter: crate::metrics::Meter::from_hook(hooks.get_item("metrics")?)?,
            returns: Default::default(),
            events: wiring.sender.clone(),
        });
        let retire_fd = optional_hook(hooks, "retire_fd")?
            .map(|fd| fd.extract::<i64>())
            .transpose()?;
        let listeners = adopted;
        let stop = wiring.stop_handle();
        let prepared = Mutex::new(Some(Prepared {
            config,
            listeners,
            wiring,
            shared,
            retire_fd,
        }));
        Ok(Server {
            prepared,
            stop,
            stuck: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
        })
    }

    /// Serve until `close()`, or until a signal handler raises (re-raised here).
    #[pyo3(signature = (signal_fd = None))]
    fn run(&self, py: Python<'_>, signal_fd: Option<i64>) -> PyResult<()> {
        let Prepared {
            config,
            listeners,
            wiring,
            shared,
            retire_fd,
        } = self
            .prepared
            .lock()
            .map_err(|_| PyRuntimeError::new_err("server state poisoned"))?
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the server has already run"))?;
        let meter = shared.meter.clone(); // metrics: connections and bytes
        let (pool, crew) = PyPool::new(config.threads, shared, wiring.sender.clone())?;
        let mut server = MioServer::new(&config, listeners, wiring, pool)?;
        server.set_metrics(meter);
        let signals = signal_fd.map(signal_source).transpose()?;
        if let Some(fd) = retire_fd {
            server.on_drain(retire_notice(fd)?);
        }
        let mut raised: Option<PyErr> = None;
        crate::python::malloc::tune();
        let relay = Relay::start()?;
        // This thread waits for the end and runs signal handlers; the pool's
        // threads take turns at the loop (see `lead`).
        let home = Poll::new()?;
        let lead = Lead::new(server, crew.queue(), relay.route(), &home)?;
        let started = lead.start_monitor().and_then(|()| crew.start(&lead));
        if started.is_err() {
            // Whichever threads did start must let go of the sockets.
            self.stop.stop_now();
            lead.abandon();
        }
        let result = py.detach(|| {
            let result = lead.wait(
                home,
                signals.as_ref(),
                &mut || {
                    Python::attach(|py| {
                        // A handler may already have run while this thread was
                        // in Python for another reason: its exception is then
                        // left pending rather than lost.
                        match py.check_signals().err().or_else(|| PyErr::take(py)) {
                            None => false,
                            Some(e) => {
                                // The first signal's exception is the one run() raises.
                                raised.get_or_insert(e);
                                true
                            }
                        }
                    })
                },
                &|| self.stop.stop(),
            );
            if result.is_err() {
                // Stop whoever drives the loop, and take the server from it.
                self.stop.stop_now();
                lead.abandon();
            }
            let result = started.and(result);
            let mut server = lead.take_server();
            if let Some(server) = &mut server {
                let engine = server.engine();
                let graceful = engine.is_drained() && engine.drain_cut() == 0;
                self.retired.store(engine.is_retiring(), Ordering::Release);
                // After a clean drain every app has answered: its thread is on
                // its way back. After a cut or a second stop, nobody waits.
                let grace = if graceful { STOP_GRACE } else { Duration::ZERO };
                let stuck = server.executor_mut().shutdown(grace);
                self.stuck.store(stuck, Ordering::Release);
            }
            relay.finish();
            drop(server); // closes every socket
            result
        });
        match raised {
            Some(e) => Err(e),
            None => result.map_err(PyErr::from),
        }
    }

    /// Workers still running an app when `run()` returned. Such a worker must
    /// not be left to return into a finalizing interpreter: CPython would end
    /// its thread with `pthread_exit` through Rust frames, which aborts.
    #[getter]
    fn stuck_workers(&self) -> usize {
        self.stuck.load(Ordering::Acquire)
    }

    /// `run()` ended because the server served `max_requests`.
    #[getter]
    fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Stop gracefully (in-flight requests finish, up to `graceful_timeout`);
    /// a second call stops at once. Safe from any thread and signal handlers.
    fn close(&self) {
        self.stop.stop();
    }

    /// Stop at once, cutting requests in progress.
    fn stop_now(&self) {
        self.stop.stop_now();
    }
}

fn optional_hook<'py>(
    hooks: &Bound<'py, PyDict>,
    name: &str,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    Ok(hooks.get_item(name)?.filter(|v| !v.is_none()))
}

/// `max_requests` plus a random share of the jitter, so that workers started
/// together do not all retire together.
fn with_jitter(max_requests: u64, jitter: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    if max_requests == 0 || jitter == 0 {
        return max_requests;
    }
    let random = RandomState::new().hash_one(std::process::id());
    max_requests.saturating_add(random % (jitter + 1))
}

/// Write one byte to the caller's descriptor when retirement starts (the
/// master then starts a replacement at once).
#[cfg(unix)]
fn retire_notice(fd: i64) -> PyResult<crate::drivers::mio::DrainNotice> {
    use std::io::Write;
    use std::os::unix::io::FromRawFd;
    let fd = i32::try_from(fd).map_err(|_| PyValueError::new_err("bad retire fd"))?;
    Ok(Box::new(move |retiring| {
        if retiring {
            // SAFETY: the caller keeps the descriptor open while run() runs;
            // ManuallyDrop leaves it open afterwards too.
            let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
            let _ = file.write_all(b"R");
        }
    }))
}

#[cfg(windows)]
fn retire_notice(_fd: i64) -> PyResult<crate::drivers::mio::DrainNotice> {
    Err(PyValueError::new_err("retire_fd needs a Unix platform"))
}

#[cfg(unix)]
fn adopt((fd, kind, _, _): &(i64, String, String, String)) -> PyResult<Listener> {
    let fd = i32::try_from(*fd).map_err(|_| PyValueError::new_err("bad listener fd"))?;
    // SAFETY: the Python layer detached this socket and hands its ownership over.
    Ok(unsafe { Listener::from_raw_fd(fd, kind == "unix") }?)
}

#[cfg(windows)]
fn adopt((fd, _, _, _): &(i64, String, String, String)) -> PyResult<Listener> {
    // SAFETY: as above; on Windows the value is a SOCKET handle.
    Ok(unsafe { Listener::from_raw_socket(*fd as u64) }?)
}

#[cfg(unix)]
fn signal_source(fd: i64) -> PyResult<SignalSource> {
    let fd = i32::try_from(fd).map_err(|_| PyValueError::new_err("bad signal fd"))?;
    // SAFETY: the Python layer keeps the socketpair open until run() returns.
    Ok(unsafe { SignalSource::borrow_fd(fd) }?)
}

#[cfg(windows)]
fn signal_source(fd: i64) -> PyResult<SignalSource> {
    // SAFETY: as above.
    Ok(unsafe { SignalSource::borrow_socket(fd as u64) }?)
}
