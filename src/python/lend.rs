//! Large response bodies cross to the I/O loop without a copy: the engine
//! gets a view of the app's `bytes` object, kept alive until it is sent.
//!
//! Letting go of a Python object needs the GIL, which the I/O loop never
//! takes. So a sent body goes back on a [`Returns`] list that the workers
//! empty between jobs (they hold the GIL then); when every worker is parked,
//! the loop nudges one awake to do it, so idle memory is not pinned.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::engine::Chunk;
use crate::python::queue::Nudge;

/// Bodies at least this long are lent; shorter ones are copied, which costs
/// less than a trip through `Returns`.
pub const LEND_MIN: usize = 16 * 1024;

/// A Python `bytes` object lent to the engine.
pub struct Lent {
    bytes: Option<PyBackedBytes>,
    returns: Arc<Returns>,
}

impl Lent {
    pub fn chunk(bytes: &Bound<'_, PyBytes>, returns: &Arc<Returns>) -> Chunk {
        Chunk::Shared(Box::new(Lent {
            bytes: Some(PyBackedBytes::from(bytes.clone())),
            returns: returns.clone(),
        }))
    }
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or(&[])
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(bytes) = self.bytes.take() {
            self.returns.give_back(bytes);
        }
    }
}

/// Sent bodies waiting for a thread with the GIL to let go of them.
#[derive(Default)]
pub struct Returns {
    pending: Mutex<Vec<PyBackedBytes>>,
    dirty: AtomicBool,
    /// Wakes a worker when none is running (set when the pool starts).
    nudge: OnceLock<Arc<dyn Nudge>>,
}

impl Returns {
    pub fn set_nudge(&self, nudge: Arc<dyn Nudge>) {
        let _ = self.nudge.set(nudge);
    }

    fn give_back(&self, bytes: PyBackedBytes) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bytes);
        self.dirty.store(true, Ordering::Release);
        if let Some(nudge) = self.nudge.get() {
            nudge.nudge();
        }
    }

    /// Let go of everything given back so far (the caller holds the GIL, so
    /// each reference is dropped at once).
    pub fn release(&self, _py: Python<'_>) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let done = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        drop(done);
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(obj: &Bound<'_, PyBytes>) -> isize {
        // SAFETY: a live object, attached thread.
        unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) }
    }

    #[test]
    fn a_lent_body_is_released_by_a_thread_with_the_gil() {
        Python::attach(|py| {
            let returns = Arc::new(Returns::default());
            let body = PyBytes::new(py, &vec![7u8; LEND_MIN]);
            let before = refs(&body);
            let chunk = Lent::chunk(&body, &returns);
            assert_eq!(chunk.as_slice(), body.as_bytes());
            assert_eq!(refs(&body), before + 1, "the engine holds a reference");
            // The I/O thread drops it without the GIL.
            #[allow(clippy::disallowed_methods)] // a stand-in for the I/O thread
            py.detach(|| std::thread::spawn(move || drop(chunk)).join().unwrap());
            assert_eq!(returns.pending(), 1);
            assert_eq!(refs(&body), before + 1, "not released without the GIL");
            returns.release(py);
            assert_eq!(returns.pending(), 0);
            assert_eq!(refs(&body), before);
        });
    }
}
