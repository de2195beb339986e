//! `maitre._maitre.Server`: a bound server that Python runs and closes.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::config::Config;
use crate::drivers::mio::{Listener, MioServer, SignalSource, StopHandle, Wiring};
use crate::python::environ::Template;
use crate::python::pool::PyPool;
use crate::python::settings;
use crate::python::wsgi::Shared;

/// Waitress waits this long for running apps when it stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Prepared {
    config: Config,
    listeners: Vec<Listener>,
    wiring: Wiring,
    shared: Arc<Shared>,
}

#[pyclass(module = "maitre._maitre", name = "Server", frozen)]
pub struct Server {
    prepared: Mutex<Option<Prepared>>,
    stop: StopHandle,
    /// Workers still inside an app when `run()` returned.
    stuck: AtomicUsize,
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
        let (config, _, _) = settings::parse(pairs)?;
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
        let shared = Arc::new(Shared {
            config: config.clone(),
            app,
            template,
            file_wrapper: file_wrapper.unbind(),
            client_disconnected: hook("client_disconnected")?.unbind(),
            logger: logger.unbind(),
        });
        let listeners = adopted;
        let wiring = Wiring::new()?;
        let stop = wiring.stop_handle();
        let prepared = Mutex::new(Some(Prepared {
            config,
            listeners,
            wiring,
            shared,
        }));
        Ok(Server {
            prepared,
            stop,
            stuck: AtomicUsize::new(0),
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
        } = self
            .prepared
            .lock()
            .map_err(|_| PyRuntimeError::new_err("server state poisoned"))?
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the server has already run"))?;
        let pool = PyPool::start(config.threads, shared, wiring.sender.clone())?;
        let mut server = MioServer::new(&config, listeners, wiring, pool)?;
        if let Some(fd) = signal_fd {
            server.watch_signals(signal_source(fd)?)?;
        }
        let mut raised: Option<PyErr> = None;
        let result = py.detach(|| {
            let result = server.run_with(&mut || {
                Python::attach(|py| match py.check_signals() {
                    Ok(()) => false,
                    Err(e) => {
                        raised = Some(e);
                        true
                    }
                })
            });
            let stuck = server.executor_mut().shutdown(STOP_GRACE);
            self.stuck.store(stuck, Ordering::Release);
            result
        });
        drop(server);
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

    /// Make `run()` return; safe from any thread and from signal handlers.
    fn close(&self) {
        self.stop.stop();
    }
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
