//! `request_timeout`'s other half: once the engine has answered a request
//! that ran too long, say where its worker thread is stuck (the Python stack)
//! and raise an exception inside it so the thread can come back.
//!
//! The I/O thread never takes the GIL, so it hands the request to this
//! thread, which exists only when `request_timeout` is set.
#![allow(clippy::disallowed_methods)] // a thread of its own

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use log::warn;
use pyo3::prelude::*;

use crate::engine::ReqId;
use crate::python::pool::{PoolState, ReqCtl};

/// A request the engine gave up on.
pub struct Stuck {
    pub req: ReqId,
    pub ctl: Arc<ReqCtl>,
    pub path: String,
}

/// Start the watchdog; it ends when every sender is dropped.
pub fn start(
    state: Arc<PoolState>,
    exception: Py<PyAny>,
    logger: Py<PyAny>,
) -> std::io::Result<Sender<Stuck>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    thread::Builder::new()
        .name("maitre-watchdog".to_string())
        .spawn(move || watch(rx, state, exception, logger))?;
    Ok(tx)
}

fn watch(rx: Receiver<Stuck>, state: Arc<PoolState>, exception: Py<PyAny>, logger: Py<PyAny>) {
    while let Ok(stuck) = rx.recv() {
        Python::attach(|py| {
            if let Err(e) = interrupt(py, &state, &stuck, exception.bind(py), logger.bind(py)) {
                warn!(target: "maitre", "request_timeout: could not interrupt the worker: {e}");
            }
        });
    }
}

/// Log the stuck thread's stack and raise `exception` in it. Runs with the
/// GIL, as does the worker's end-of-request bookkeeping ([`finish_request`]),
/// so the request cannot end between the last check and the raise.
fn interrupt(
    py: Python<'_>,
    state: &PoolState,
    stuck: &Stuck,
    exception: &Bound<'_, PyAny>,
    logger: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let thread = stuck.ctl.thread.load(Ordering::Acquire);
    if thread == 0 || !state.is_running(stuck.req) {
        return Ok(()); // finished (or never started) in the meantime
    }
    let stack = python_stack(py, thread)?;
    logger.call_method1(
        "error",
        (format!(
            "request_timeout: {} is still running in the application; \
             raising {} in its thread. Its stack:\n{stack}",
            stuck.path,
            exception.getattr("__name__")?
        ),),
    )?;
    // Logging ran Python code, which may have let go of the GIL: look again
    // with no Python in between, or the exception would hit the thread's
    // next request (workers keep their thread state for life).
    if !state.is_running(stuck.req) {
        return Ok(());
    }
    // SAFETY: called with the GIL held; `exception` is a live exception class.
    unsafe {
        pyo3::ffi::PyThreadState_SetAsyncExc(thread as _, exception.as_ptr());
    }
    Ok(())
}

/// `traceback.format_stack` of another thread's current frame.
fn python_stack(py: Python<'_>, thread: u64) -> PyResult<String> {
    let frames = py.import("sys")?.call_method0("_current_frames")?;
    let frame = frames.call_method1("get", (thread,))?;
    if frame.is_none() {
        return Ok("  (no Python frame)".to_string());
    }
    let lines = py
        .import("traceback")?
        .call_method1("format_stack", (frame,))?;
    Ok(lines
        .try_iter()?
        .filter_map(|l| l.ok()?.extract::<String>().ok())
        .collect())
}

/// At the end of a request, with the GIL: if the watchdog raised in this
/// thread and the app never ran into it (it sat in C code until it
/// returned), deliver it now, here, and drop it, so it can neither hit the
/// next request nor stay pending. (CPython 3.11 flags a pending async
/// exception interpreter-wide until its own thread consumes it; clearing it
/// with a null exception would leave that flag set for good and slow every
/// thread down.) The caller has already removed the request from the pool's
/// table, so the watchdog raises nothing more for it.
pub fn finish_request(py: Python<'_>, ctl: &ReqCtl) {
    if ctl.timed_out.load(Ordering::Acquire) {
        // Any bytecode checks for pending exceptions on entry.
        let _ = py.eval(c"None", None, None);
    }
}
