//! Running one WSGI request on a worker thread: call the app, collect what
//! `start_response`, `write()` and the iterator produce, and send it to the
//! I/O thread as [`AppEvent`]s.
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use log::info;
use pyo3::exceptions::{PyAssertionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

use crate::config::Config;
use crate::drivers::mio::EventSender;
use crate::engine::{AppEvent, AppHead, Chunk, HeaderList, Job, ReqId};
use crate::http::proxy;
use crate::http::response::validate_status;
use crate::metrics::Meter;
use crate::python::access_log::{AccessLog, End, Observation, Summary};
use crate::python::environ::{Environ, Template};
use crate::python::lend::{Lent, Returns, LEND_MIN};
use crate::python::pool::ReqCtl;

/// What every request of one server shares.
pub struct Shared {
    pub config: Config,
    pub app: Py<PyAny>,
    pub template: Template,
    /// `wsgi.file_wrapper`: results of this class may be sent from the file.
    pub file_wrapper: Py<PyAny>,
    /// Raised by `write()` once the client has gone.
    pub client_disconnected: Py<PyAny>,
    pub logger: Py<PyAny>,
    /// Raised in a worker thread whose request outlived `request_timeout`.
    pub timeout_error: Option<Py<PyAny>>,
    /// Set when `access_log` is: one line per request on `maitre.access`.
    pub access_log: Option<AccessLog>,
    /// Request counters (off unless `metrics_listen` gave a slot).
    pub meter: Meter,
    /// Large bodies lent to the I/O thread come back here once sent.
    pub returns: Arc<Returns>,
    /// Where responses go (shared, not cloned per request: a clone is four
    /// reference counts to take and drop).
    pub events: EventSender,
}

/// Run the app for one job and report everything it does.
pub fn run(py: Python<'_>, shared: &Arc<Shared>, mut job: Job, ctl: &Arc<ReqCtl>) {
    let req = job.req;
    let head = job.head.method == "HEAD";
    let mut seen = Observation::begin(shared, &job); // access log, metrics
    let out = Output(Arc::new(OutputState {
        req,
        ctl: ctl.clone(),
        state: Mutex::new(RespState::default()),
        shared: shared.clone(),
    }));
    let result = call_app(py, shared, &mut job, ctl, &out, &mut seen);
    let end = match result {
        Ok(()) => {
            if !out.lock().done {
                out.finish(None);
                out.shared.events.send(AppEvent::Done { req });
            }
            End::Completed
        }
        Err(err) => {
            let path = String::from_utf8_lossy(&job.head.target);
            report_failure(py, shared, &out, &path, err)
        }
    };
    let end = if ctl.timed_out.load(Ordering::Acquire) {
        End::TimedOut // the engine answered 503 (or cut the response)
    } else {
        end
    };
    let summary = out.lock().summary(end);
    seen.finish(py, shared, head, summary);
}

fn call_app(
    py: Python<'_>,
    shared: &Shared,
    job: &mut Job,
    ctl: &Arc<ReqCtl>,
    out: &Output,
    seen: &mut Observation,
) -> PyResult<()> {
    let environ = match shared.template.environ(py, job, ctl)? {
        Environ::Ready(env) => env,
        Environ::Malformed(body) => return refuse_proxy_headers(py, out, body),
    };
    seen.environ(&environ);
    let start = StartResponse { out: out.clone() };
    let result = shared.app.bind(py).call1((environ, start))?;
    let outcome = send_result(py, shared, &result, out);
    let closed = close_result(py, &result);
    outcome.and(closed)
}

/// Waitress answers a malformed trusted proxy header itself, as an app would
/// (so the response has no Content-Length), without calling the app.
fn refuse_proxy_headers(py: Python<'_>, out: &Output, body: String) -> PyResult<()> {
    {
        let mut st = out.lock();
        st.set_status(proxy::MALFORMED_STATUS.to_string());
        st.headers = [("Content-Type", proxy::MALFORMED_CONTENT_TYPE)]
            .into_iter()
            .collect();
    }
    out.write_chunk(py, body.as_bytes(), None, None)
}

/// PEP 3333: `close()` is called on the result whatever happened.
fn close_result(py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<()> {
    // A plain list or tuple has no close(), and asking costs an exception.
    if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    if result.hasattr(intern!(py, "close"))? {
        result.call_method0(intern!(py, "close"))?;
    }
    Ok(())
}

fn send_result(
    py: Python<'_>,
    shared: &Shared,
    result: &Bound<'_, PyAny>,
    out: &Output,
) -> PyResult<()> {
    if let Some(body) = single_bytes(result) {
        // The common case, `[b"..."]`: the length is known, and a plain list
        // or tuple has no close() to call afterwards, so the response is
        // complete: one event.
        let plain =
            result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
        if plain {
            return out.write_whole(py, &body);
        }
        let len = body.as_bytes().len() as u64;
        return out.write_chunk(py, body.as_bytes(), Some(&body), Some(len));
    }
    if result.is_instance(shared.file_wrapper.bind(py))? {
        if send_file(py, result, out)? {
            return Ok(());
        }
        if let Some(len) = seekable_length(py, result, out)? {
            return iterate_exactly(py, result, out, len);
        }
    }
    iterate(py, result, out)
}

/// Waitress measures any seekable wrapped file (a BytesIO too) from its
/// position to its end, bounded by the app's Content-Length, and sends that
/// many bytes with that Content-Length. None: not seekable, or nothing left.
fn seekable_length(
    py: Python<'_>,
    wrapper: &Bound<'_, PyAny>,
    out: &Output,
) -> PyResult<Option<u64>> {
    let filelike = wrapper.getattr(intern!(py, "filelike"))?;
    let measure = || -> PyResult<Option<u64>> {
        if !is_seekable(py, &filelike)? {
            return Ok(None);
        }
        let here: u64 = filelike.call_method0(intern!(py, "tell"))?.extract()?;
        filelike.call_method1(intern!(py, "seek"), (0, 2))?;
        let end: u64 = filelike.call_method0(intern!(py, "tell"))?.extract()?;
        filelike.call_method1(intern!(py, "seek"), (here,))?;
        Ok(Some(end.saturating_sub(here)))
    };
    let remain = measure().unwrap_or_else(|_| {
        PyErr::take(py);
        None
    });
    Ok(remain.filter(|&n| n > 0).map(|n| out.fit_file_length(n)))
}

/// Iterate a measured file wrapper, sending exactly `len` bytes.
fn iterate_exactly(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    out: &Output,
    len: u64,
) -> PyResult<()> {
    let mut left = len;
    let mut known = Some(len);
    for chunk in result.try_iter()? {
        let chunk = as_bytes(chunk?)?;
        let data = chunk.as_bytes();
        let take = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if take > 0 {
            let whole = (take == data.len()).then_some(&chunk);
            out.write_chunk(py, &data[..take], whole, known.take())?;
            left -= take as u64;
        }
        if left == 0 {
            break;
        }
    }
    Ok(())
}

/// Whether `len()` can work on the object: asking an object that has no
/// length (a generator, a framework's response iterator) costs an exception.
fn has_len(obj: &Bound<'_, PyAny>) -> bool {
    let ty = obj.get_type();
    // SAFETY: a live type object; its method tables, when present, live as
    // long as it does. (Read directly: PyType_GetSlot refuses static types
    // before Python 3.10.)
    unsafe {
        let ty = &*ty.as_type_ptr();
        let seq = ty.tp_as_sequence.as_ref().and_then(|m| m.sq_length);
        let map = ty.tp_as_mapping.as_ref().and_then(|m| m.mp_length);
        seq.is_some() || map.is_some()
    }
}

/// `[b"..."]` or `(b"...",)`, exactly.
fn single_bytes<'py>(result: &Bound<'py, PyAny>) -> Option<Bound<'py, PyBytes>> {
    let item = if let Ok(list) = result.cast::<PyList>() {
        (list.len() == 1).then(|| list.get_item(0).ok()).flatten()?
    } else if let Ok(tuple) = result.cast::<PyTuple>() {
        (tuple.len() == 1)
            .then(|| tuple.get_item(0).ok())
            .flatten()?
    } else {
        return None;
    };
    item.cast_into::<PyBytes>().ok()
}

/// Waitress treats a wrapped file as measurable when it has `seek` and `tell`.
fn is_seekable(py: Python<'_>, filelike: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(filelike.hasattr(intern!(py, "seek"))? && filelike.hasattr(intern!(py, "tell"))?)
}

/// An app_iter item, which PEP 3333 requires to be bytes.
fn as_bytes(chunk: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyBytes>> {
    chunk.cast_into::<PyBytes>().map_err(|e| {
        let got = e.into_inner().get_type();
        PyTypeError::new_err(format!("expected bytes from the app, got {got}"))
    })
}

/// Waitress sets a Content-Length for a result with `len() == 1` from the
/// first chunk; empty chunks are skipped and do not send the head.
fn iterate(py: Python<'_>, result: &Bound<'_, PyAny>, out: &Output) -> PyResult<()> {
    let single = has_len(result)
        && result.len().map(|n| n == 1).unwrap_or_else(|_| {
            PyErr::take(py);
            false
        });
    let mut first = true;
    for chunk in result.try_iter()? {
        let chunk = as_bytes(chunk?)?;
        let data = chunk.as_bytes();
        let known = (first && single).then_some(data.len() as u64);
        first = false;
        if !data.is_empty() || known.is_some() {
            out.write_chunk(py, data, Some(&chunk), known)?;
        }
    }
    Ok(())
}

/// A `wsgi.file_wrapper` over a real, seekable file: the I/O thread sends the
/// bytes from the current position straight from the file. Returns false when
/// the file is not such a file (then it is iterated like any result).
fn send_file(py: Python<'_>, wrapper: &Bound<'_, PyAny>, out: &Output) -> PyResult<bool> {
    let filelike = wrapper.getattr(intern!(py, "filelike"))?;
    let Some((file, offset, size)) = open_range(py, &filelike) else {
        return Ok(false);
    };
    let remain = size.saturating_sub(offset);
    if remain == 0 {
        return Ok(false);
    }
    let len = out.fit_file_length(remain);
    if !out.ctl.take_credit(py, 0) {
        return Err(out.disconnected(py));
    }
    out.finish(Some(len));
    out.lock().sent += len;
    out.shared.events.send(AppEvent::File {
        req: out.req,
        file,
        offset,
        len,
    });
    Ok(true)
}

/// A duplicate of the file's descriptor, its position and its size.
fn open_range(py: Python<'_>, filelike: &Bound<'_, PyAny>) -> Option<(std::fs::File, u64, u64)> {
    let grab = || -> PyResult<Option<(std::fs::File, u64, u64)>> {
        if !is_seekable(py, filelike)? {
            return Ok(None);
        }
        let fd: i64 = filelike.call_method0(intern!(py, "fileno"))?.extract()?;
        let offset: u64 = filelike.call_method0(intern!(py, "tell"))?.extract()?;
        Ok(dup_file(fd).map(|f| {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            (f, offset, size)
        }))
    };
    grab().unwrap_or_else(|_| {
        PyErr::take(py);
        None
    })
}

#[cfg(unix)]
fn dup_file(fd: i64) -> Option<std::fs::File> {
    use std::os::unix::io::BorrowedFd;
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the app's file object owns `fd` and is alive while we borrow it
    // to make our own duplicate.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned = borrowed.try_clone_to_owned().ok()?;
    let file = std::fs::File::from(owned);
    file.metadata().ok().filter(|m| m.is_file()).map(|_| file)
}

#[cfg(not(unix))]
fn dup_file(_fd: i64) -> Option<std::fs::File> {
    None
}

/// The app failed: log it as Waitress does, and tell the engine (a 500 if the
/// head has not gone out, else the connection is cut).
fn report_failure(py: Python<'_>, shared: &Shared, out: &Output, path: &str, err: PyErr) -> End {
    if err.is_instance(py, shared.client_disconnected.bind(py)) || out.ctl.is_cancelled() {
        info!(target: "maitre", "Client disconnected while serving {path}");
        return End::Disconnected;
    }
    let logger = shared.logger.bind(py);
    let msg = format!("Exception while serving {path}");
    let exc_info = (err.get_type(py), err.value(py), err.traceback(py));
    let kwargs = [(
        "exc_info",
        exc_info
            .into_bound_py_any(py)
            .unwrap_or_else(|_| py.None().into_bound(py)),
    )];
    let logged = pyo3::types::IntoPyDict::into_py_dict(kwargs, py)
        .and_then(|kw| logger.call_method(intern!(py, "error"), (msg,), Some(&kw)));
    if logged.is_err() {
        PyErr::take(py);
    }
    let detail = shared
        .config
        .expose_tracebacks
        .then(|| format_traceback(py, &err));
    let end = End::Failed(detail.clone());
    out.shared.events.send(AppEvent::Failed {
        req: out.req,
        detail,
    });
    end
}

fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let text = || -> PyResult<String> {
        let tb = py.import(intern!(py, "traceback"))?;
        let args = (err.get_type(py), err.value(py), err.traceback(py));
        let lines = tb.call_method1(intern!(py, "format_exception"), args)?;
        let joined = PyString::new(py, "").call_method1(intern!(py, "join"), (lines,))?;
        joined.extract()
    };
    text().unwrap_or_else(|_| err.to_string())
}

/// The response as the app has declared it so far.
#[derive(Default)]
struct RespState {
    /// Until the head goes out (it moves into the head).
    status: Option<String>,
    /// The status code, for the access log and metrics.
    code: Option<u16>,
    headers: HeaderList,
    /// The head has been handed to the engine (first body bytes or the end).
    head_sent: bool,
    /// The whole response has been handed over (`AppEvent::Complete`).
    done: bool,
    /// Content-Length the app declared, if any (for file-wrapper trimming).
    app_length: Option<u64>,
    /// Body bytes handed to the I/O thread (access log, metrics).
    sent: u64,
}

impl RespState {
    fn set_status(&mut self, status: String) {
        self.code = status.get(..3).and_then(|c| c.parse().ok());
        self.status = Some(status);
    }

    /// start_response has been called.
    fn started(&self) -> bool {
        self.status.is_some() || self.head_sent
    }

    /// The head for the engine, once: None if it went already or if
    /// start_response has not been called.
    fn take_head(&mut self, known_length: Option<u64>) -> Option<AppHead> {
        if self.head_sent {
            return None;
        }
        let status = self.status.take()?;
        self.head_sent = true;
        Some(AppHead {
            status,
            headers: std::mem::take(&mut self.headers),
            known_length,
        })
    }

    fn summary(&self, end: End) -> Summary {
        Summary {
            status: self.code,
            head_sent: self.head_sent,
            sent: self.sent,
            app_length: self.app_length,
            end,
        }
    }
}

/// The sending side of one response, shared by start_response and write
/// (one allocation per request: a clone is one reference count).
#[derive(Clone)]
struct Output(Arc<OutputState>);

struct OutputState {
    req: ReqId,
    ctl: Arc<ReqCtl>,
    state: Mutex<RespState>,
    /// The class `write()` raises once the client has gone, and where lent
    /// bodies come back.
    shared: Arc<Shared>,
}

impl std::ops::Deref for Output {
    type Target = OutputState;
    fn deref(&self) -> &OutputState {
        &self.0
    }
}

impl Output {
    fn lock(&self) -> std::sync::MutexGuard<'_, RespState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn disconnected(&self, py: Python<'_>) -> PyErr {
        match self
            .shared
            .client_disconnected
            .bind(py)
            .call1(("Client disconnected",))
        {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }

    /// Hand the head to the engine if it has not gone yet.
    fn finish(&self, known_length: Option<u64>) {
        let head = self.lock().take_head(known_length);
        if let Some(head) = head {
            self.shared.events.send(AppEvent::Head {
                req: self.req,
                head,
            });
        }
    }

    /// The whole response is `body`: send head, body and end as one event
    /// (unless the head went out already, through `write()`).
    fn write_whole(&self, py: Python<'_>, body: &Bound<'_, PyBytes>) -> PyResult<()> {
        let data = body.as_bytes();
        let len = data.len() as u64;
        if self.lock().head_sent {
            return self.write_chunk(py, data, Some(body), Some(len));
        }
        self.check_started(len)?;
        if !self.ctl.take_credit(py, data.len()) {
            return Err(self.disconnected(py));
        }
        let head = {
            let mut st = self.lock();
            let head = st.take_head(Some(len));
            st.done = head.is_some();
            head
        };
        let Some(head) = head else {
            return Err(PyRuntimeError::new_err("the response head went out twice"));
        };
        self.shared.events.send(AppEvent::Complete {
            req: self.req,
            head,
            body: self.chunk(data, Some(body)),
        });
        Ok(())
    }

    /// Fail unless start_response was called; count `len` body bytes.
    fn check_started(&self, len: u64) -> PyResult<()> {
        let mut st = self.lock();
        if !st.started() {
            return Err(PyRuntimeError::new_err(
                "start_response was not called before body written",
            ));
        }
        st.sent += len;
        Ok(())
    }

    /// Body bytes for the engine: a large `bytes` object is lent, not copied.
    fn chunk(&self, data: &[u8], owner: Option<&Bound<'_, PyBytes>>) -> Chunk {
        match owner {
            Some(owner) if data.len() >= LEND_MIN => Lent::chunk(owner, &self.shared.returns),
            _ => data.to_vec().into(),
        }
    }

    /// Send body bytes, waiting for output credit first. `owner` is the
    /// bytes object `data` is the whole of, if any: a large one is lent
    /// to the I/O thread instead of copied.
    fn write_chunk(
        &self,
        py: Python<'_>,
        data: &[u8],
        owner: Option<&Bound<'_, PyBytes>>,
        known_length: Option<u64>,
    ) -> PyResult<()> {
        self.check_started(data.len() as u64)?;
        if !self.ctl.take_credit(py, data.len()) {
            return Err(self.disconnected(py));
        }
        self.finish(known_length);
        if !data.is_empty() {
            let bytes = self.chunk(data, owner);
            self.shared.events.send(AppEvent::Data {
                req: self.req,
                bytes,
            });
        }
        Ok(())
    }

    /// Waitress trims a file-wrapper body to the app's Content-Length and
    /// corrects a Content-Length that is larger than the file.
    fn fit_file_length(&self, remain: u64) -> u64 {
        let mut st = self.lock();
        match st.app_length {
            Some(cl) if cl <= remain => cl,
            Some(_) => {
                st.headers
                    .retain(|n, _| !n.eq_ignore_ascii_case("content-length"));
                remain
            }
            None => remain,
        }
    }
}

/// `start_response(status, headers, exc_info=None)`, returning `write`.
#[pyclass(module = "maitre._maitre", name = "StartResponse", frozen)]
struct StartResponse {
    out: Output,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none() && e.is_truthy().unwrap_or(false));
        {
            let st = self.out.lock();
            match exc_info {
                Some(info) if st.head_sent => return Err(reraise(py, info)),
                None if st.started() => {
                    return Err(PyAssertionError::new_err(
                        "start_response called a second time without providing exc_info.",
                    ))
                }
                _ => {}
            }
        }
        let status = checked_status(status)?;
        let headers = checked_headers(headers)?;
        let app_length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok());
        // Decision Q6: a second call replaces the first call's headers entirely.
        let mut st = self.out.lock();
        st.set_status(status);
        st.headers = headers;
        st.app_length = app_length;
        Ok(Write {
            out: self.out.clone(),
        })
    }
}

fn reraise(_py: Python<'_>, info: &Bound<'_, PyAny>) -> PyErr {
    match info.get_item(1) {
        Ok(value) => PyErr::from_value(value),
        Err(e) => e,
    }
}

fn checked_status(status: &Bound<'_, PyAny>) -> PyResult<String> {
    let Ok(text) = status.cast::<PyString>() else {
        return Err(PyAssertionError::new_err(format!(
            "status {} is not a string",
            status.repr()?
        )));
    };
    let text = text.to_str()?.to_owned();
    validate_status(&text).map_err(PyValueError::new_err)?;
    Ok(text)
}

fn checked_headers(headers: &Bound<'_, PyAny>) -> PyResult<HeaderList> {
    // Most apps send a few short headers: room for them at once.
    let mut out = HeaderList::with_capacity(8, 256);
    for item in headers.try_iter()? {
        let item = item?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
        let (Ok(n), Ok(v)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
            let which = if name.cast::<PyString>().is_err() {
                "name"
            } else {
                "value"
            };
            return Err(PyAssertionError::new_err(format!(
                "Header {which} {} is not a string in {}",
                if which == "name" {
                    name.repr()?
                } else {
                    value.repr()?
                },
                item.repr()?
            )));
        };
        let (n, v) = (n.to_str()?, v.to_str()?);
        out.push_valid(n, v).map_err(|m| {
            if m.contains("hop-by-hop") {
                PyAssertionError::new_err(m)
            } else {
                PyValueError::new_err(m)
            }
        })?;
    }
    Ok(out)
}

/// The `write(data)` callable returned by `start_response`.
#[pyclass(module = "maitre._maitre", name = "Write", frozen)]
struct Write {
    out: Output,
}

#[pymethods]
impl Write {
    /// Waitress sends the head on every `write()`, even an empty one; a
    /// non-bytes argument fails after the head went out.
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let Ok(bytes) = data.cast::<PyBytes>() else {
            self.out.write_chunk(py, b"", None, None)?;
            return Err(PyTypeError::new_err(format!(
                "write() argument must be bytes, not {}",
                data.get_type().name()?
            )));
        };
        self.out
            .write_chunk(py, bytes.as_bytes(), Some(bytes), None)
    }
}

/// `environ["maitre.client_disconnected"]()`: True once the client has gone.
#[pyclass(module = "maitre._maitre", name = "ClientDisconnectedCheck", frozen)]
pub struct DisconnectedCheck {
    pub ctl: Arc<ReqCtl>,
}

#[pymethods]
impl DisconnectedCheck {
    fn __call__(&self) -> bool {
        self.ctl.is_cancelled()
    }
}
