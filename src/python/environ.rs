//! Building the WSGI environ: a per-server template dict holds every
//! constant key; a request copies it and adds its own values, using interned
//! key strings and latin-1 decoding that cannot fail.
use std::sync::Arc;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use std::borrow::Cow;

use log::warn;

use crate::config::Config;
use crate::engine::{Body, Job, Peer};
use crate::http::proxy::{self, ProxyEnv, ProxyHeader, ProxySettings};
use crate::http::request::Version;
use crate::http::response::decimal;
use crate::http::target::{apply_prefix, split_target};
use crate::python::pool::ReqCtl;
use crate::python::wsgi::DisconnectedCheck;

pub struct Template {
    /// Per listener, per protocol (HTTP/1.0, HTTP/1.1): every constant key,
    /// with that listener's SERVER_PORT and that SERVER_PROTOCOL in place.
    bases: Vec<[Py<PyDict>; 2]>,
    /// For a listener without a port entry: no SERVER_PORT at all.
    portless: [Py<PyDict>; 2],
    /// `SERVER_PORT` per listener (for a Unix socket: its path, Waitress's quirk).
    server_ports: Vec<Py<PyString>>,
    url_prefix: String,
    server_name: String,
    url_scheme: String,
    proxy: ProxySettings,
    bytes_io: Py<PyAny>,
    open: Py<PyAny>,
    peer: PeerCache,
}

/// Keys every request sets: the template has them, with None, so that its
/// copies are born big enough. (SERVER_PORT and SERVER_PROTOCOL come with
/// the template itself: there is one per listener and protocol.)
const PER_REQUEST: [&str; 10] = [
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "REMOTE_ADDR",
    "REMOTE_HOST",
    "REMOTE_PORT",
    "wsgi.input",
    "maitre.client_disconnected",
    "waitress.client_disconnected",
];

/// The last client address as a Python string: clients come back (keep-alive,
/// or many connections from one proxy), and formatting an address is not free.
#[derive(Default)]
struct PeerCache {
    last: std::sync::Mutex<Option<(std::net::IpAddr, Py<PyString>)>>,
}

impl PeerCache {
    /// REMOTE_ADDR and REMOTE_PORT for `peer`.
    fn strings<'py>(
        &self,
        py: Python<'py>,
        peer: &Peer,
    ) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
        let Peer::Tcp(a) = peer else {
            // Waitress's quirk (kept): Unix clients are "localhost" with port "None".
            return (
                intern!(py, "localhost").clone(),
                intern!(py, "None").clone(),
            );
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let addr = match &*last {
            Some((ip, s)) if *ip == a.ip() => s.bind(py).clone(),
            _ => {
                let s = PyString::new(py, &a.ip().to_string());
                *last = Some((a.ip(), s.clone().unbind()));
                s
            }
        };
        drop(last);
        let mut digits = [0u8; 20];
        let port = decimal(u64::from(a.port()), &mut digits);
        (addr, PyString::new(py, port))
    }
}

impl Template {
    pub fn new(
        py: Python<'_>,
        config: &Config,
        server_ports: &[String],
        file_wrapper: &Bound<'_, PyAny>,
        errors: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let base = PyDict::new(py);
        base.set_item("wsgi.version", (1, 0))?;
        base.set_item("wsgi.url_scheme", &config.url_scheme)?;
        base.set_item("wsgi.errors", errors)?;
        base.set_item("wsgi.multithread", true)?;
        base.set_item("wsgi.multiprocess", false)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.file_wrapper", file_wrapper)?;
        base.set_item("SERVER_NAME", &config.server_name)?;
        // Decision: "" rather than Waitress's None when ident is empty (PEP 3333).
        base.set_item("SERVER_SOFTWARE", config.ident.as_deref().unwrap_or(""))?;
        base.set_item("SCRIPT_NAME", &config.url_prefix)?;
        for key in PER_REQUEST {
            base.set_item(key, py.None())?;
        }
        let io = py.import("io")?;
        let for_port = |port: Option<&str>| -> PyResult<[Py<PyDict>; 2]> {
            let made = |protocol: &str| -> PyResult<Py<PyDict>> {
                let dict = base.copy()?;
                dict.set_item("SERVER_PROTOCOL", protocol)?;
                // Without a port entry (a listener the table does not
                // know), SERVER_PORT is left out, as before.
                if let Some(port) = port {
                    dict.set_item("SERVER_PORT", port)?;
                }
                Ok(dict.unbind())
            };
            Ok([made("HTTP/1.0")?, made("HTTP/1.1")?])
        };
        let bases = server_ports
            .iter()
            .map(|p| for_port(Some(p)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Template {
            bases,
            portless: for_port(None)?,
            server_ports: server_ports
                .iter()
                .map(|p| PyString::new(py, p).unbind())
                .collect(),
            url_prefix: config.url_prefix.clone(),
            server_name: config.server_name.clone(),
            url_scheme: config.url_scheme.clone(),
            proxy: ProxySettings::from_config(config),
            bytes_io: io.getattr("BytesIO")?.unbind(),
            open: io.getattr("open")?.unbind(),
            peer: PeerCache::default(),
        })
    }

    /// The environ for one request, or the 400 body when a trusted proxy sent
    /// a malformed header (the app is then not called). Consumes the job: its
    /// body becomes `wsgi.input`.
    pub fn environ<'py>(
        &self,
        py: Python<'py>,
        job: &mut Job,
        ctl: &Arc<ReqCtl>,
    ) -> PyResult<Environ<'py>> {
        // A copy of a dict that already holds every per-request key (see
        // `PER_REQUEST`): its table is cloned whole, and the sets below
        // replace values instead of inserting and growing it.
        let head = &job.head;
        let by_protocol = self.bases.get(job.listener.0).unwrap_or(&self.portless);
        let base = match head.version {
            Version::Http10 => &by_protocol[0],
            Version::Http11 => &by_protocol[1],
        };
        let env = base.bind(py).copy()?;
        env.set_item(intern!(py, "REQUEST_METHOD"), method(py, &head.method))?;
        let target = split_target(&head.target);
        let path = apply_prefix(&target.path, &self.url_prefix);
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, path))?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, &target.query))?;
        env.set_item(intern!(py, "REQUEST_URI"), latin1(py, &head.target))?;
        let forwarded = match self.forwarded(py, job) {
            Ok(f) => f,
            Err(body) => return Ok(Environ::Malformed(body)),
        };
        self.set_peer(py, &env, job, forwarded.as_ref())?;
        self.set_headers(py, &env, job, forwarded.as_ref())?;
        let body = std::mem::replace(&mut job.body, Body::Empty);
        env.set_item(intern!(py, "wsgi.input"), self.input(py, body)?)?;
        let check = Bound::new(py, DisconnectedCheck { ctl: ctl.clone() })?;
        env.set_item(intern!(py, "maitre.client_disconnected"), &check)?;
        env.set_item(intern!(py, "waitress.client_disconnected"), &check)?;
        Ok(Environ::Ready(env))
    }

    /// Run the proxy-header step when the request carries any proxy header:
    /// `Ok(None)` when there is nothing to change, `Err(body)` for a malformed
    /// header from a trusted proxy (logged here).
    fn forwarded(&self, py: Python<'_>, job: &Job) -> Result<Option<ProxyEnv<'static>>, String> {
        let present = job
            .head
            .headers
            .iter()
            .any(|(n, _)| ProxyHeader::from_wsgi_name(n).is_some());
        if !present || !self.proxy.is_active() {
            return Ok(None);
        }
        let (addr, port) = peer_strings(&job.peer);
        let server_port = self
            .server_ports
            .get(job.listener.0)
            .map(|p| p.bind(py).to_string())
            .unwrap_or_default();
        let mut penv = ProxyEnv::new(
            addr,
            port,
            self.server_name.clone(),
            server_port,
            self.url_scheme.clone(),
        );
        for (name, value) in job.head.headers.iter() {
            let text = Cow::Owned(latin1_string(value));
            if name == "HOST" {
                penv.http_host = Some(text);
            } else if let Some(h) = ProxyHeader::from_wsgi_name(name) {
                penv.set_header(h, Some(text));
            }
        }
        match proxy::apply(&self.proxy, &mut penv) {
            Ok(warnings) => {
                warnings.iter().for_each(|w| warn!(target: "maitre", "{w}"));
                Ok(Some(penv))
            }
            Err(m) => {
                m.warnings
                    .iter()
                    .for_each(|w| warn!(target: "maitre", "{w}"));
                Err(proxy::malformed_body(&m))
            }
        }
    }

    fn set_peer(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        job: &Job,
        forwarded: Option<&ProxyEnv<'_>>,
    ) -> PyResult<()> {
        if let Some(p) = forwarded {
            env.set_item(intern!(py, "REMOTE_ADDR"), p.remote_addr.as_ref())?;
            env.set_item(intern!(py, "REMOTE_HOST"), p.remote_host.as_ref())?;
            env.set_item(intern!(py, "REMOTE_PORT"), p.remote_port.as_ref())?;
            env.set_item(intern!(py, "SERVER_NAME"), p.server_name.as_ref())?;
            env.set_item(intern!(py, "SERVER_PORT"), p.server_port.as_ref())?;
            env.set_item(intern!(py, "wsgi.url_scheme"), p.url_scheme.as_ref())?;
            return Ok(());
        }
        let (addr, port) = self.peer.strings(py, &job.peer);
        env.set_item(intern!(py, "REMOTE_ADDR"), &addr)?;
        env.set_item(intern!(py, "REMOTE_HOST"), &addr)?;
        env.set_item(intern!(py, "REMOTE_PORT"), port)?;
        // SERVER_PORT came with the listener's template.
        Ok(())
    }

    /// `HTTP_*` keys, `CONTENT_TYPE` and `CONTENT_LENGTH`; a header never
    /// replaces a key that is already set. After the proxy step, Host and the
    /// proxy headers come from its result (a removed header is left out).
    fn set_headers(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        job: &Job,
        forwarded: Option<&ProxyEnv<'_>>,
    ) -> PyResult<()> {
        // Each name appears once (the parser joins repeats), and no key set
        // so far is a header's: Waitress's "never replace a key already
        // set" needs no lookup here.
        for (name, value) in job.head.headers.iter() {
            let key = header_key(py, name);
            let replaced = forwarded.and_then(|p| match name {
                "HOST" => Some(p.http_host.as_deref()),
                n => ProxyHeader::from_wsgi_name(n).map(|h| p.header(h)),
            });
            match replaced {
                Some(Some(v)) => env.set_item(key, v)?,
                Some(None) => {}
                None => env.set_item(key, latin1(py, value))?,
            }
        }
        if let Some(host) = forwarded.and_then(|p| p.http_host.as_deref()) {
            if !env.contains(intern!(py, "HTTP_HOST"))? {
                env.set_item(intern!(py, "HTTP_HOST"), host)?;
            }
        }
        Ok(())
    }

    /// `wsgi.input`: a BytesIO over a memory body, the spilled temp file itself
    /// (as a BufferedRandom, like Waitress) for a large one.
    fn input<'py>(&self, py: Python<'py>, body: Body) -> PyResult<Bound<'py, PyAny>> {
        match body {
            Body::Empty => self.bytes_io.bind(py).call0(),
            Body::Memory(v) => self.bytes_io.bind(py).call1((PyBytes::new(py, &v),)),
            Body::File { file, .. } => {
                let fd = into_fd(file);
                self.open.bind(py).call1((fd, "rb+"))
            }
        }
    }
}

/// REQUEST_METHOD: the common methods as interned strings.
fn method<'py>(py: Python<'py>, method: &str) -> Bound<'py, PyString> {
    let common = match method {
        "GET" => intern!(py, "GET"),
        "POST" => intern!(py, "POST"),
        "HEAD" => intern!(py, "HEAD"),
        _ => return latin1(py, method.as_bytes()),
    };
    common.clone()
}

/// The environ key for a header (in WSGI form): the common ones are
/// interned (their hash is kept, so the dict does not compute it again).
fn header_key<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    let common = match name {
        "CONTENT_LENGTH" => intern!(py, "CONTENT_LENGTH"),
        "CONTENT_TYPE" => intern!(py, "CONTENT_TYPE"),
        "HOST" => intern!(py, "HTTP_HOST"),
        "USER_AGENT" => intern!(py, "HTTP_USER_AGENT"),
        "ACCEPT" => intern!(py, "HTTP_ACCEPT"),
        "ACCEPT_ENCODING" => intern!(py, "HTTP_ACCEPT_ENCODING"),
        "ACCEPT_LANGUAGE" => intern!(py, "HTTP_ACCEPT_LANGUAGE"),
        "CONNECTION" => intern!(py, "HTTP_CONNECTION"),
        "COOKIE" => intern!(py, "HTTP_COOKIE"),
        _ => return prefixed_key(py, name),
    };
    common.clone()
}

/// `HTTP_` + `name`, built on the stack when it is short.
fn prefixed_key<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyString> {
    const PREFIX: &[u8] = b"HTTP_";
    let mut buf = [0u8; 64];
    let len = PREFIX.len() + name.len();
    if len > buf.len() {
        return PyString::new(py, &format!("HTTP_{name}"));
    }
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    buf[PREFIX.len()..len].copy_from_slice(name.as_bytes());
    // ASCII prefix + a valid str: valid UTF-8.
    let key = std::str::from_utf8(&buf[..len]).unwrap_or(name);
    PyString::new(py, key)
}

#[cfg(unix)]
fn into_fd(file: std::fs::File) -> i64 {
    i64::from(std::os::unix::io::IntoRawFd::into_raw_fd(file))
}

#[cfg(windows)]
fn into_fd(file: std::fs::File) -> i64 {
    // Python's io.open takes a C runtime fd on Windows, not a HANDLE: hand it
    // over through msvcrt.open_osfhandle in the Python layer if ever needed.
    std::os::windows::io::IntoRawHandle::into_raw_handle(file) as i64
}

/// Bytes as a PEP 3333 "bytes in str": latin-1, which never fails.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    // Python's own latin-1 decoder copies the bytes into a one-byte-per-
    // character string: no UTF-8 validation here, no decoding there.
    let Ok(len) = pyo3::ffi::Py_ssize_t::try_from(bytes.len()) else {
        return PyString::new(py, &latin1_string(bytes));
    };
    // SAFETY: `bytes` is valid for `len` bytes and the GIL is held.
    let ptr =
        unsafe { pyo3::ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null()) };
    if ptr.is_null() {
        // Only when out of memory: latin-1 decoding cannot fail otherwise.
        PyErr::take(py);
        return PyString::new(py, &latin1_string(bytes));
    }
    // SAFETY: a new reference to the str the decoder made.
    unsafe { Bound::from_owned_ptr(py, ptr).cast_into_unchecked() }
}

fn peer_strings(peer: &Peer) -> (String, String) {
    match peer {
        Peer::Tcp(a) => (a.ip().to_string(), a.port().to_string()),
        // Waitress's quirk (kept): Unix clients are "localhost" with port "None".
        Peer::Unix => ("localhost".to_string(), "None".to_string()),
    }
}

fn latin1_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// What the worker hands the app, or why it must not call it.
pub enum Environ<'py> {
    Ready(Bound<'py, PyDict>),
    /// A trusted proxy sent a malformed header: answer 400 with this body,
    /// do not call the app.
    Malformed(String),
}
