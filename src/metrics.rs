//! Request and connection counters in memory the Python layer provides.
//!
//! One *slot* is a fixed array of `u64` cells. The Python layer allocates a
//! block of slots in a shared anonymous `mmap`, so a master process can read
//! (and sum) the slots of the worker processes it forked; each server counts
//! into one slot with relaxed atomic adds (no locks, no syscalls). Python
//! learns the layout from [`metrics_layout`] rather than repeating it.
//!
//! Counting is optional: a [`Meter`] is either off (every method is one
//! `None` check) or points at a slot.
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Cells in one slot (31 used, padded so a slot is 256 bytes: slots of
/// different processes never share a cache line).
pub const CELLS: usize = 32;
/// Bytes in one slot.
pub const SLOT_BYTES: usize = CELLS * 8;
/// Written into the first cell of every slot by whoever allocates it, and
/// checked when a server attaches: a block made for another layout is refused.
pub const MAGIC: u64 = u64::from_le_bytes(*b"maitre\x00\x01");

/// Upper bounds of the request duration buckets, in microseconds; one more
/// bucket (`+Inf`) follows them.
pub const BUCKET_BOUNDS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
/// The buckets' `le` labels, in seconds, as Prometheus shows them.
const BUCKET_LABELS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

// Cell indexes. The header: magic, the pid of the process counting into the
// slot, and a generation the master bumps each time the slot is reused.
pub const MAGIC_CELL: usize = 0;
pub const PID: usize = 1;
pub const GENERATION: usize = 2;
/// Requests by status class: `REQUESTS + 0` is 1xx ... `+ 4` is 5xx, `+ 5`
/// any other code (600-999, which `start_response` lets through).
pub const REQUESTS: usize = 4;
pub const IN_FLIGHT: usize = 10;
pub const QUEUE_DEPTH: usize = 11;
pub const CONNECTIONS_OPEN: usize = 12;
pub const CONNECTIONS: usize = 13;
pub const BYTES_RECEIVED: usize = 14;
pub const BYTES_SENT: usize = 15;
/// Counted by the master only, in its own slot.
pub const WORKER_RESTARTS: usize = 16;
/// Per-bucket (not cumulative) counts, 12 cells.
pub const DURATION_BUCKETS: usize = 17;
pub const DURATION_SUM_US: usize = 29;
pub const DURATION_COUNT: usize = 30;

/// How a cell is read and folded when a dead worker's slot is retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Slot bookkeeping, not a metric.
    Header,
    /// Only goes up; folded into the retired totals.
    Counter,
    /// Goes up and down (stored as a wrapping u64, read as i64); a dead
    /// worker's gauges are dropped, not folded.
    Gauge,
    /// One histogram bucket (not cumulative); folded like a counter.
    Bucket,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Bucket => "bucket",
        }
    }
}

/// One cell as Python sees it: `(name, kind, byte offset, label)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub cell: usize,
    /// The status class of a request counter, the `le` of a bucket, else "".
    pub label: &'static str,
}

const fn field(name: &'static str, kind: Kind, cell: usize, label: &'static str) -> Field {
    Field {
        name,
        kind,
        cell,
        label,
    }
}

/// Every used cell, in cell order.
pub fn fields() -> Vec<Field> {
    use Kind::*;
    let mut out = vec![
        field("magic", Header, MAGIC_CELL, ""),
        field("pid", Header, PID, ""),
        field("generation", Header, GENERATION, ""),
    ];
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
    for (i, class) in classes.into_iter().enumerate() {
        out.push(field("requests", Counter, REQUESTS + i, class));
    }
    out.extend([
        field("in_flight", Gauge, IN_FLIGHT, ""),
        field("queue_depth", Gauge, QUEUE_DEPTH, ""),
        field("connections_open", Gauge, CONNECTIONS_OPEN, ""),
        field("connections", Counter, CONNECTIONS, ""),
        field("bytes_received", Counter, BYTES_RECEIVED, ""),
        field("bytes_sent", Counter, BYTES_SENT, ""),
        field("worker_restarts", Counter, WORKER_RESTARTS, ""),
    ]);
    for (i, le) in BUCKET_LABELS.into_iter().enumerate() {
        out.push(field("duration_bucket", Bucket, DURATION_BUCKETS + i, le));
    }
    out.push(field("duration_sum_us", Counter, DURATION_SUM_US, ""));
    out.push(field("duration_count", Counter, DURATION_COUNT, ""));
    out
}

/// The cell counting a response status: its class, or "other".
pub fn status_cell(status: u16) -> usize {
    match status / 100 {
        c @ 1..=5 => REQUESTS + usize::from(c) - 1,
        _ => REQUESTS + 5,
    }
}

/// The bucket cell a duration falls in (bounds are inclusive, as `le` says).
pub fn bucket_cell(micros: u64) -> usize {
    let i = BUCKET_BOUNDS_US.partition_point(|&bound| bound < micros);
    DURATION_BUCKETS + i
}

/// Where a slot's memory comes from; kept alive as long as the slot.
enum Owner {
    /// A writable buffer from Python (a `memoryview` of an `mmap`): holding
    /// the buffer export keeps the memory mapped (`mmap.close()` refuses
    /// while it exists).
    Python(#[allow(dead_code)] PyUntypedBuffer),
    /// Plain memory, for tests and for counting without Python.
    Memory(#[allow(dead_code)] Box<[AtomicU64; CELLS]>),
}

/// One slot of cells.
pub struct Slot {
    base: NonNull<AtomicU64>,
    _owner: Owner,
}

// SAFETY: the cells are only ever accessed as atomics, and the owner keeps
// the memory valid for the slot's life; `PyUntypedBuffer` is Send + Sync.
unsafe impl Send for Slot {}
unsafe impl Sync for Slot {}

impl Slot {
    /// A slot in ordinary memory, magic set.
    pub fn in_memory() -> Slot {
        let cells: Box<[AtomicU64; CELLS]> = Box::new(std::array::from_fn(|_| AtomicU64::new(0)));
        let base = NonNull::from(&cells[0]);
        let slot = Slot {
            base,
            _owner: Owner::Memory(cells),
        };
        slot.cell(MAGIC_CELL).store(MAGIC, Ordering::Relaxed);
        slot
    }

    /// A slot over a Python buffer: writable, C-contiguous, 8-byte aligned,
    /// at least [`SLOT_BYTES`] long and starting with [`MAGIC`].
    pub fn from_buffer(obj: &Bound<'_, PyAny>) -> PyResult<Slot> {
        let buf = PyUntypedBuffer::get(obj)?;
        if buf.readonly() {
            return Err(PyValueError::new_err("metrics slot must be writable"));
        }
        if !buf.is_c_contiguous() || buf.len_bytes() < SLOT_BYTES {
            return Err(PyValueError::new_err(format!(
                "metrics slot must be a contiguous buffer of at least {SLOT_BYTES} bytes"
            )));
        }
        let ptr = buf.buf_ptr().cast::<AtomicU64>();
        if ptr.align_offset(std::mem::align_of::<AtomicU64>()) != 0 {
            return Err(PyValueError::new_err("metrics slot must be 8-byte aligned"));
        }
        let base =
            NonNull::new(ptr).ok_or_else(|| PyValueError::new_err("metrics slot has no memory"))?;
        let slot = Slot {
            base,
            _owner: Owner::Python(buf),
        };
        if slot.get(MAGIC_CELL) != MAGIC {
            return Err(PyValueError::new_err(
                "metrics slot was not prepared for this layout (see maitre.metrics)",
            ));
        }
        Ok(slot)
    }

    /// Cell `i` (< CELLS: every caller passes one of the constants above).
    pub fn cell(&self, i: usize) -> &AtomicU64 {
        assert!(i < CELLS, "metrics cell {i} out of range");
        // SAFETY: `i < CELLS` and the owner holds at least CELLS aligned
        // cells for as long as `self` lives.
        unsafe { &*self.base.as_ptr().add(i) }
    }

    pub fn get(&self, i: usize) -> u64 {
        self.cell(i).load(Ordering::Relaxed)
    }

    fn add(&self, i: usize, n: u64) {
        self.cell(i).fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, i: usize, n: u64) {
        self.cell(i).fetch_sub(n, Ordering::Relaxed);
    }
}

/// The counting handle every hook point holds: off, or one slot.
#[derive(Clone, Default)]
pub struct Meter(Option<Arc<Slot>>);

impl Meter {
    pub fn new(slot: Slot) -> Meter {
        Meter(Some(Arc::new(slot)))
    }

    /// From the `hooks["metrics"]` value: absent or None is off; anything
    /// else must be a prepared slot buffer. Records this process's pid.
    pub fn from_hook(value: Option<Bound<'_, PyAny>>) -> PyResult<Meter> {
        match value {
            Some(v) if !v.is_none() => {
                let slot = Slot::from_buffer(&v)?;
                slot.cell(PID)
                    .store(u64::from(std::process::id()), Ordering::Relaxed);
                Ok(Meter::new(slot))
            }
            _ => Ok(Meter::default()),
        }
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The slot, for reading (tests).
    pub fn slot(&self) -> Option<&Slot> {
        self.0.as_deref()
    }

    #[inline]
    fn with(&self, f: impl FnOnce(&Slot)) {
        if let Some(slot) = &self.0 {
            f(slot);
        }
    }

    /// A request joined the task queue.
    #[inline]
    pub fn queued(&self) {
        self.with(|s| s.add(QUEUE_DEPTH, 1));
    }

    /// `n` queued requests were dropped without running (shutdown).
    #[inline]
    pub fn unqueued(&self, n: usize) {
        self.with(|s| s.sub(QUEUE_DEPTH, n as u64));
    }

    /// A worker took a request from the queue: it is now in flight.
    #[inline]
    pub fn taken(&self) {
        self.with(|s| {
            s.sub(QUEUE_DEPTH, 1);
            s.add(IN_FLIGHT, 1);
        });
    }

    /// A worker is done with a request (whatever happened to it).
    #[inline]
    pub fn done(&self) {
        self.with(|s| s.sub(IN_FLIGHT, 1));
    }

    /// A request completed with `status` after `micros` in the worker.
    #[inline]
    pub fn record(&self, status: u16, micros: u64) {
        self.with(|s| {
            s.add(status_cell(status), 1);
            s.add(bucket_cell(micros), 1);
            s.add(DURATION_SUM_US, micros);
            s.add(DURATION_COUNT, 1);
        });
    }

    #[inline]
    pub fn opened(&self) {
        self.with(|s| {
            s.add(CONNECTIONS_OPEN, 1);
            s.add(CONNECTIONS, 1);
        });
    }

    #[inline]
    pub fn closed(&self) {
        self.with(|s| s.sub(CONNECTIONS_OPEN, 1));
    }

    #[inline]
    pub fn received(&self, n: usize) {
        self.with(|s| s.add(BYTES_RECEIVED, n as u64));
    }

    #[inline]
    pub fn sent(&self, n: usize) {
        self.with(|s| s.add(BYTES_SENT, n as u64));
    }
}

/// `_maitre.metrics_layout()`: `{"magic", "slot_size", "fields"}`, where
/// `fields` is a list of `(name, kind, byte offset, label)`.
#[pyfunction]
pub fn metrics_layout(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("magic", MAGIC)?;
    out.set_item("slot_size", SLOT_BYTES)?;
    let rows = PyList::empty(py);
    for f in fields() {
        rows.append((f.name, f.kind.name(), f.cell * 8, f.label))?;
    }
    out.set_item("fields", rows)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn fields_are_distinct_in_order_and_fit_the_slot() {
        let cells: Vec<usize> = fields().iter().map(|f| f.cell).collect();
        assert!(cells.windows(2).all(|w| w[0] < w[1]), "{cells:?}");
        assert!(cells.iter().all(|&c| c < CELLS));
        assert_eq!(SLOT_BYTES % 64, 0, "a slot is whole cache lines");
        let buckets = fields()
            .into_iter()
            .filter(|f| f.kind == Kind::Bucket)
            .count();
        assert_eq!(buckets, BUCKET_BOUNDS_US.len() + 1);
        assert_eq!(DURATION_BUCKETS + buckets, DURATION_SUM_US);
    }

    #[test]
    fn bucket_labels_match_bounds() {
        for (bound, label) in BUCKET_BOUNDS_US.iter().zip(BUCKET_LABELS) {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e6).round() as u64, *bound);
        }
        assert_eq!(BUCKET_LABELS[11], "+Inf");
    }

    #[rstest]
    #[case(100, REQUESTS)]
    #[case(199, REQUESTS)]
    #[case(200, REQUESTS + 1)]
    #[case(304, REQUESTS + 2)]
    #[case(404, REQUESTS + 3)]
    #[case(499, REQUESTS + 3)]
    #[case(500, REQUESTS + 4)]
    #[case(599, REQUESTS + 4)]
    #[case(600, REQUESTS + 5)]
    #[case(999, REQUESTS + 5)]
    #[case(0, REQUESTS + 5)]
    fn status_classes(#[case] status: u16, #[case] cell: usize) {
        assert_eq!(status_cell(status), cell);
    }

    #[rstest]
    #[case(0, 0)]
    #[case(5_000, 0)]
    #[case(5_001, 1)]
    #[case(10_000, 1)]
    #[case(99_999, 4)]
    #[case(1_000_000, 7)]
    #[case(10_000_000, 10)]
    #[case(10_000_001, 11)]
    #[case(u64::MAX, 11)]
    fn duration_buckets(#[case] micros: u64, #[case] bucket: usize) {
        assert_eq!(bucket_cell(micros), DURATION_BUCKETS + bucket);
    }

    #[test]
    fn meter_counts_into_its_slot() {
        let meter = Meter::new(Slot::in_memory());
        meter.queued();
        meter.queued();
        meter.taken();
        meter.record(200, 7_000);
        meter.record(503, 20_000_000);
        meter.opened();
        meter.received(120);
        meter.sent(4000);
        let s = meter.slot().unwrap();
        assert_eq!(s.get(QUEUE_DEPTH), 1);
        assert_eq!(s.get(IN_FLIGHT), 1);
        meter.done();
        meter.unqueued(1);
        meter.closed();
        assert_eq!((s.get(IN_FLIGHT), s.get(QUEUE_DEPTH)), (0, 0));
        assert_eq!((s.get(REQUESTS + 1), s.get(REQUESTS + 4)), (1, 1));
        assert_eq!(s.get(DURATION_BUCKETS + 1), 1);
        assert_eq!(s.get(DURATION_BUCKETS + 11), 1);
        assert_eq!(s.get(DURATION_SUM_US), 20_007_000);
        assert_eq!(s.get(DURATION_COUNT), 2);
        assert_eq!((s.get(CONNECTIONS_OPEN), s.get(CONNECTIONS)), (0, 1));
        assert_eq!((s.get(BYTES_RECEIVED), s.get(BYTES_SENT)), (120, 4000));
        assert_eq!(s.get(MAGIC_CELL), MAGIC);
    }

    #[test]
    fn off_meter_counts_nothing() {
        let meter = Meter::default();
        assert!(!meter.is_on());
        meter.record(200, 1);
        meter.opened();
        assert!(meter.slot().is_none());
    }

    fn with_py<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
        Python::initialize();
        Python::attach(f)
    }

    #[test]
    fn slot_over_a_python_buffer() {
        with_py(|py| {
            let buf = pyo3::types::PyByteArray::new(py, &[0u8; SLOT_BYTES]);
            let err = Meter::from_hook(Some(buf.clone().into_any()))
                .err()
                .unwrap();
            assert!(err.to_string().contains("not prepared"), "{err}");
            let mmap = py.import("mmap").unwrap();
            let mm = mmap
                .getattr("mmap")
                .unwrap()
                .call1((-1, SLOT_BYTES))
                .unwrap();
            let view = py
                .import("builtins")
                .unwrap()
                .getattr("memoryview")
                .unwrap()
                .call1((&mm,))
                .unwrap();
            view.call_method1(
                "__setitem__",
                (
                    pyo3::types::PySlice::new(py, 0, 8, 1),
                    MAGIC.to_le_bytes().as_slice(),
                ),
            )
            .unwrap();
            let meter = Meter::from_hook(Some(view.clone())).unwrap();
            meter.record(404, 1);
            let off = status_cell(404) * 8;
            let raw: Vec<u8> = view.call_method0("tobytes").unwrap().extract().unwrap();
            assert_eq!(raw[off], 1);
            assert_eq!(
                u64::from_ne_bytes(raw[PID * 8..PID * 8 + 8].try_into().unwrap()),
                u64::from(std::process::id())
            );
            // The slot's own buffer export pins the view, and the view the
            // mapping, while the slot lives.
            assert!(view.call_method0("release").is_err());
            assert!(mm.call_method0("close").is_err());
            drop(meter);
            view.call_method0("release").unwrap();
            mm.call_method0("close").unwrap();
        });
    }

    #[rstest]
    #[case::readonly(b"bytes")]
    #[case::short(b"short")]
    fn unusable_buffers_are_refused(#[case] which: &[u8]) {
        with_py(|py| {
            let obj = if which == b"bytes" {
                pyo3::types::PyBytes::new(py, &[0u8; SLOT_BYTES]).into_any()
            } else {
                pyo3::types::PyByteArray::new(py, &[0u8; 16]).into_any()
            };
            assert!(Meter::from_hook(Some(obj)).is_err());
        });
    }

    #[test]
    fn none_hook_is_off() {
        with_py(|py| {
            assert!(!Meter::from_hook(None).unwrap().is_on());
            assert!(!Meter::from_hook(Some(py.None().into_bound(py)))
                .unwrap()
                .is_on());
        });
    }
}
