//! Building the WSGI environ: a per-server template dict holds every
//! constant key; a request copies it and adds its own values, using interned
//! key strings and latin-1 decoding that cannot fail.
use std::sync::Arc;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::config::Config;
use crate::engine::{Body, Job, Peer};
use crate::python::pool::ReqCtl;
use crate::python::wsgi::DisconnectedCheck;

/// The proxy headers Waitress removes when they do not come from a trusted proxy.
const PROXY_HEADERS: [&str; 6] = [
    "FORWARDED",
    "X_FORWARDED_FOR",
    "X_FORWARDED_HOST",
    "X_FORWARDED_PROTO",
    "X_FORWARDED_PORT",
    "X_FORWARDED_BY",
];

pub struct Template {
    base: Py<PyDict>,
    /// `SERVER_PORT` per listener (for a Unix socket: its path, Waitress's quirk).
    server_ports: Vec<Py<PyString>>,
    url_prefix: String,
    /// Drop proxy headers: no proxy is trusted and clearing is on (the default).
    clear_proxy_headers: bool,
    bytes_io: Py<PyAny>,
    open: Py<PyAny>,
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
        let io = py.import("io")?;
        Ok(Template {
            base: base.unbind(),
            server_ports: server_ports
                .iter()
                .map(|p| PyString::new(py, p).unbind())
                .collect(),
            url_prefix: config.url_prefix.clone(),
            clear_proxy_headers: config.trusted_proxy.is_none()
                && config.clear_untrusted_proxy_headers,
            bytes_io: io.getattr("BytesIO")?.unbind(),
            open: io.getattr("open")?.unbind(),
        })
    }

    /// The environ for one request. Consumes the job (its body becomes `wsgi.input`).
    pub fn environ<'py>(
        &self,
        py: Python<'py>,
        job: Job,
        ctl: &Arc<ReqCtl>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.base.bind(py).copy()?;
        let head = &job.head;
        env.set_item(
            intern!(py, "REQUEST_METHOD"),
            latin1(py, head.method.as_bytes()),
        )?;
        env.set_item(intern!(py, "SERVER_PROTOCOL"), head.version.as_str())?;
        let (path, query) = split_target(&head.target);
        let path = apply_prefix(&path, &self.url_prefix);
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, &path))?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1(py, &query))?;
        env.set_item(intern!(py, "REQUEST_URI"), latin1(py, &head.target))?;
        self.set_peer(py, &env, &job)?;
        self.set_headers(py, &env, &job)?;
        env.set_item(intern!(py, "wsgi.input"), self.input(py, job.body)?)?;
        let check = Bound::new(py, DisconnectedCheck { ctl: ctl.clone() })?;
        env.set_item(intern!(py, "maitre.client_disconnected"), &check)?;
        env.set_item(intern!(py, "waitress.client_disconnected"), &check)?;
        Ok(env)
    }

    fn set_peer(&self, py: Python<'_>, env: &Bound<'_, PyDict>, job: &Job) -> PyResult<()> {
        let (addr, port) = match &job.peer {
            Peer::Tcp(a) => (a.ip().to_string(), a.port().to_string()),
            // Waitress's quirk (kept): Unix clients are "localhost" with port "None".
            Peer::Unix => ("localhost".to_string(), "None".to_string()),
        };
        env.set_item(intern!(py, "REMOTE_ADDR"), &addr)?;
        env.set_item(intern!(py, "REMOTE_HOST"), &addr)?;
        env.set_item(intern!(py, "REMOTE_PORT"), port)?;
        if let Some(p) = self.server_ports.get(job.listener.0) {
            env.set_item(intern!(py, "SERVER_PORT"), p.bind(py))?;
        }
        Ok(())
    }

    /// `HTTP_*` keys, `CONTENT_TYPE` and `CONTENT_LENGTH`; a header never
    /// replaces a key that is already set.
    fn set_headers(&self, py: Python<'_>, env: &Bound<'_, PyDict>, job: &Job) -> PyResult<()> {
        for (name, value) in &job.head.headers {
            if self.clear_proxy_headers && PROXY_HEADERS.contains(&name.as_str()) {
                continue;
            }
            let key = match name.as_str() {
                "CONTENT_LENGTH" => intern!(py, "CONTENT_LENGTH").clone(),
                "CONTENT_TYPE" => intern!(py, "CONTENT_TYPE").clone(),
                other => PyString::new(py, &format!("HTTP_{other}")),
            };
            if !env.contains(&key)? {
                env.set_item(key, latin1(py, value))?;
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
    match std::str::from_utf8(bytes) {
        Ok(s) if bytes.is_ascii() => PyString::new(py, s),
        _ => {
            let s: String = bytes.iter().map(|&b| char::from(b)).collect();
            PyString::new(py, &s)
        }
    }
}

/// Until the shared target module lands: path and query of a request target.
fn split_target(target: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let t = target.split(|&b| b == b'#').next().unwrap_or(&[]);
    let (path, query) = match t.iter().position(|&b| b == b'?') {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, &[][..]),
    };
    (path.to_vec(), query.to_vec())
}

fn apply_prefix(path: &[u8], prefix: &str) -> Vec<u8> {
    let p = prefix.as_bytes();
    if p.is_empty() {
        path.to_vec()
    } else if path == p {
        Vec::new()
    } else if path.starts_with(p) && path.get(p.len()) == Some(&b'/') {
        path[p.len()..].to_vec()
    } else {
        path.to_vec()
    }
}
