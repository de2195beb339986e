//! What a worker records once a request is over: one access log line
//! (Apache combined or common, or JSON), formatted here and emitted on the
//! Python logger `maitre.access` at INFO, and the request metrics (status
//! class, duration) when a metrics slot is attached.
//!
//! Both are optional and cost nothing when off: [`Observation::begin`] then
//! returns an empty observation and every later step is one `None` check.
//!
//! Times are local, with the UTC offset of that moment: the civil time of
//! each new second comes from Python's `time.localtime` (once per second,
//! cached), the milliseconds from the system clock. `%t` and `time` are the
//! moment the worker took the request; `duration_ms` runs from then until
//! the worker has handed the whole response to the I/O thread.
#![allow(clippy::disallowed_methods)] // the worker's clock: Instant and SystemTime live here

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::config::{AccessLogFormat, Config};
use crate::engine::{Job, Peer};
use crate::http::errors::{error_response, internal_error, HttpError};
use crate::http::request::Version;
use crate::python::wsgi::Shared;

/// The logger the lines go to; the Python layer gives it a handler.
pub const LOGGER: &str = "maitre.access";

/// Status logged for a request whose client left before the app answered
/// (nginx's "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// The access log of one server: its format, where lines go, and the clock.
pub struct AccessLog {
    format: AccessLogFormat,
    /// `logging.getLogger("maitre.access").info`.
    emit: Py<PyAny>,
    /// `time.localtime`.
    localtime: Py<PyAny>,
    /// The civil time of the last second asked for.
    second: Mutex<Option<(u64, Civil)>>,
}

impl AccessLog {
    /// `None` unless `access_log` is set: then nothing is ever formatted.
    pub fn from_config(py: Python<'_>, config: &Config) -> PyResult<Option<AccessLog>> {
        if config.access_log.is_none() {
            return Ok(None);
        }
        let logger = py.import("logging")?.call_method1("getLogger", (LOGGER,))?;
        Ok(Some(AccessLog {
            format: config.access_log_format,
            emit: logger.getattr("info")?.unbind(),
            localtime: py.import("time")?.getattr("localtime")?.unbind(),
            second: Mutex::new(None),
        }))
    }

    /// Local civil time at `wall`.
    fn local(&self, py: Python<'_>, wall: SystemTime) -> LocalTime {
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let millis = since.subsec_millis() as u16;
        let mut cache = self.second.lock().unwrap_or_else(|e| e.into_inner());
        let civil = match *cache {
            Some((s, civil)) if s == secs => civil,
            _ => {
                let civil = python_localtime(py, &self.localtime, secs).unwrap_or_else(|_| {
                    PyErr::take(py);
                    Civil::utc(secs)
                });
                *cache = Some((secs, civil));
                civil
            }
        };
        LocalTime { civil, millis }
    }
}

fn python_localtime(py: Python<'_>, localtime: &Py<PyAny>, secs: u64) -> PyResult<Civil> {
    let t = localtime.bind(py).call1((secs,))?;
    let int = |name: &str| -> PyResult<i64> { t.getattr(name)?.extract() };
    let small = |name: &str| -> PyResult<u8> { Ok(int(name)?.clamp(0, 99) as u8) };
    Ok(Civil {
        year: int("tm_year")?,
        month: small("tm_mon")?,
        day: small("tm_mday")?,
        hour: small("tm_hour")?,
        minute: small("tm_min")?,
        second: small("tm_sec")?,
        offset_secs: int("tm_gmtoff")?,
    })
}

/// A calendar date and wall-clock time, and its offset from UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1..=12
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// East of UTC, in seconds (`+0200` is 7200).
    pub offset_secs: i64,
}

impl Civil {
    /// UTC at `secs` since the epoch (the fallback when Python cannot say).
    pub fn utc(secs: u64) -> Civil {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            offset_secs: 0,
        }
    }
}

/// A moment as the log shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub civil: Civil,
    pub millis: u16,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl LocalTime {
    /// Apache's `%t` inside the brackets: `10/Oct/2000:13:55:36 -0700`.
    fn apache(&self, out: &mut String) {
        let c = &self.civil;
        let month = MONTHS[usize::from(c.month.clamp(1, 12)) - 1];
        let (sign, off) = offset_parts(c.offset_secs);
        let _ = write!(
            out,
            "{:02}/{month}/{:04}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
            c.day,
            c.year,
            c.hour,
            c.minute,
            c.second,
            off / 3600,
            off / 60 % 60
        );
    }

    /// ISO 8601 with milliseconds: `2000-10-10T13:55:36.123-07:00`.
    fn iso(&self, out: &mut String) {
        let c = &self.civil;
        let (sign, off) = offset_parts(c.offset_secs);
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}",
            c.year,
            c.month,
            c.day,
            c.hour,
            c.minute,
            c.second,
            self.millis,
            off / 3600,
            off / 60 % 60
        );
    }
}

fn offset_parts(offset_secs: i64) -> (char, i64) {
    let sign = if offset_secs < 0 { '-' } else { '+' };
    (sign, offset_secs.abs())
}

/// Everything one line shows. Byte fields are latin-1 (as on the wire); text
/// fields come from the environ (Python strings).
#[derive(Clone, Debug)]
pub struct Record<'a> {
    pub time: LocalTime,
    pub remote_addr: &'a str,
    pub remote_user: Option<&'a str>,
    pub method: &'a str,
    pub target: &'a [u8],
    pub protocol: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub duration: Duration,
}

/// One log line, without its newline.
pub fn format_line(format: AccessLogFormat, r: &Record<'_>) -> String {
    let mut out = String::with_capacity(160);
    match format {
        AccessLogFormat::Common => apache_common(&mut out, r),
        AccessLogFormat::Combined => {
            apache_common(&mut out, r);
            out.push_str(" \"");
            apache_field(&mut out, r.referer.map(latin1));
            out.push_str("\" \"");
            apache_field(&mut out, r.user_agent.map(latin1));
            out.push('"');
        }
        AccessLogFormat::Json => json_line(&mut out, r),
    }
    out
}

/// `%h - %u [%t] "%r" %>s %b`.
fn apache_common(out: &mut String, r: &Record<'_>) {
    apache_field(out, Some(Cow::Borrowed(r.remote_addr)));
    out.push_str(" - ");
    apache_field(out, r.remote_user.map(Cow::Borrowed));
    out.push_str(" [");
    r.time.apache(out);
    out.push_str("] \"");
    apache_escape(out, r.method);
    out.push(' ');
    apache_escape(out, &latin1(r.target));
    out.push(' ');
    apache_escape(out, r.protocol);
    let _ = write!(out, "\" {} ", r.status);
    if r.bytes == 0 {
        out.push('-');
    } else {
        let _ = write!(out, "{}", r.bytes);
    }
}

/// A value, or `-` when it is absent or empty (as Apache shows them).
fn apache_field(out: &mut String, value: Option<Cow<'_, str>>) {
    match value {
        Some(v) if !v.is_empty() => apache_escape(out, &v),
        _ => out.push('-'),
    }
}

/// Apache's `ap_escape_logitem`: `"` and `\` get a backslash; `\b \n \r \t
/// \v` their C escapes; other control characters and anything outside
/// printable ASCII become `\xhh`: the latin-1 byte for U+0000..U+00FF (the
/// wire byte of a header), each UTF-8 byte beyond that. Lines stay ASCII.
pub fn apache_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\u{8}' => out.push_str("\\b"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' '..='~' => out.push(c),
            _ => match u8::try_from(u32::from(c)) {
                Ok(b) => hex_byte(out, b),
                Err(_) => {
                    let mut utf8 = [0u8; 4];
                    for &b in c.encode_utf8(&mut utf8).as_bytes() {
                        hex_byte(out, b);
                    }
                }
            },
        }
    }
}

fn hex_byte(out: &mut String, b: u8) {
    let _ = write!(out, "\\x{b:02x}");
}

fn json_line(out: &mut String, r: &Record<'_>) {
    out.push_str("{\"time\":\"");
    r.time.iso(out);
    out.push_str("\",\"remote_addr\":");
    json_string(out, r.remote_addr);
    out.push_str(",\"remote_user\":");
    json_optional(out, r.remote_user.map(Cow::Borrowed));
    out.push_str(",\"method\":");
    json_string(out, r.method);
    out.push_str(",\"path\":");
    json_string(out, &latin1(r.target));
    out.push_str(",\"protocol\":");
    json_string(out, r.protocol);
    let _ = write!(
        out,
        ",\"status\":{},\"bytes\":{},\"referer\":",
        r.status, r.bytes
    );
    json_optional(out, r.referer.map(latin1));
    out.push_str(",\"user_agent\":");
    json_optional(out, r.user_agent.map(latin1));
    let ms = r.duration.as_secs_f64() * 1000.0;
    let _ = write!(out, ",\"duration_ms\":{ms:.3}}}");
}

fn json_optional(out: &mut String, value: Option<Cow<'_, str>>) {
    match value {
        Some(v) => json_string(out, &v),
        None => out.push_str("null"),
    }
}

/// A JSON string literal (RFC 8259), ASCII only: `"` and `\` escaped, the
/// short escapes where they exist, every other control character, DEL and
/// non-ASCII character as `\uhhhh` (a surrogate pair beyond the BMP).
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// Latin-1 bytes as text (every byte is the character of that code).
fn latin1(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if bytes.is_ascii() => Cow::Borrowed(s),
        _ => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// How the worker's part of a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The app returned (its result was iterated and closed).
    Completed,
    /// The app raised: the engine answers 500 with this detail (a traceback
    /// when `expose_tracebacks`) unless the head already went out.
    Failed(Option<String>),
    /// The client left before the response was complete.
    Disconnected,
    /// The engine gave up on the request (`request_timeout`): a 503 unless
    /// the head already went out (then the response was cut).
    TimedOut,
}

/// The response as the worker handed it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The app's status code, if `start_response` was called.
    pub status: Option<u16>,
    pub head_sent: bool,
    /// Body bytes handed to the I/O thread (a file segment counts its length).
    pub sent: u64,
    /// The app's Content-Length, if it gave one.
    pub app_length: Option<u64>,
    pub end: End,
}

/// What the log and the metrics report: the status sent and the body bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: u16,
    pub bytes: u64,
}

/// The status and body size the client got (or was being sent), following
/// the engine's rules: a 500 for an app that failed (or never called
/// `start_response`) before its head went out, a 503 for one that outlived
/// `request_timeout`; no body for HEAD, 1xx, 204 and 304; the body cut at the
/// app's Content-Length.
pub fn outcome(summary: &Summary, head: bool, config: &Config) -> Outcome {
    let code = summary.status;
    let ident = config.ident.as_deref();
    let internal = |detail: Option<&str>| Outcome {
        status: 500,
        bytes: error_body_len(&internal_error(detail, Version::Http11), ident),
    };
    let status = match (&summary.end, code) {
        (End::TimedOut, _) if !summary.head_sent => {
            return Outcome {
                status: 503,
                bytes: error_body_len(&timeout_error(config), ident),
            }
        }
        (End::TimedOut | End::Disconnected, code) => return disconnected(code, summary.sent),
        (End::Failed(detail), _) if !summary.head_sent => return internal(detail.as_deref()),
        (End::Completed, None) => return internal(None),
        (_, code) => code.unwrap_or(500),
    };
    let bodiless = head || status < 200 || status == 204 || status == 304;
    let bytes = if bodiless {
        0
    } else {
        summary
            .app_length
            .map_or(summary.sent, |cl| cl.min(summary.sent))
    };
    Outcome { status, bytes }
}

fn disconnected(code: Option<u16>, sent: u64) -> Outcome {
    Outcome {
        status: code.unwrap_or(CLIENT_CLOSED),
        bytes: sent,
    }
}

/// The engine's 503 for `request_timeout` (its wording is the engine's, in
/// `Channel::time_out`; a live test compares the logged size with the body).
fn timeout_error(config: &Config) -> HttpError {
    let limit = config.request_timeout.unwrap_or_default().as_secs();
    let detail = format!("The application did not answer within request_timeout ({limit} s)");
    HttpError::new(503, detail, Version::Http11)
}

/// The body length of one of the engine's error responses.
fn error_body_len(err: &HttpError, ident: Option<&str>) -> u64 {
    let whole = error_response(err, ident, "");
    let head = memchr::memmem::find(&whole, b"\r\n\r\n").map_or(whole.len(), |i| i + 4);
    (whole.len() - head) as u64
}

/// The request fields a log line needs, taken before the job is consumed.
struct Pending {
    wall: SystemTime,
    method: std::borrow::Cow<'static, str>,
    target: std::sync::Arc<[u8]>,
    protocol: &'static str,
    /// The peer address, used when there is no environ (a malformed proxy
    /// header refused before the app ran).
    peer: String,
    referer: Option<Vec<u8>>,
    user_agent: Option<Vec<u8>>,
    environ: Option<Py<PyDict>>,
}

struct Started {
    at: Instant,
    log: Option<Pending>,
}

/// One request being observed; empty when neither the access log nor the
/// metrics are on.
pub struct Observation(Option<Started>);

impl Observation {
    /// Note the start of a request (call before the job is consumed).
    pub fn begin(shared: &Shared, job: &Job) -> Observation {
        if shared.access_log.is_none() && !shared.meter.is_on() {
            return Observation(None);
        }
        let log = shared.access_log.as_ref().map(|_| pending(job));
        Observation(Some(Started {
            at: Instant::now(),
            log,
        }))
    }

    /// The environ the app got: REMOTE_ADDR (after the proxy step) and
    /// REMOTE_USER (set by auth middleware) are read from it at the end.
    pub fn environ(&mut self, environ: &Bound<'_, PyDict>) {
        if let Some(Started { log: Some(p), .. }) = &mut self.0 {
            p.environ = Some(environ.clone().unbind());
        }
    }

    /// The request is over: count it and log its line.
    pub fn finish(self, py: Python<'_>, shared: &Shared, head: bool, summary: Summary) {
        let Some(started) = self.0 else { return };
        let elapsed = started.at.elapsed();
        let result = outcome(&summary, head, &shared.config);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        shared.meter.record(result.status, micros);
        if let (Some(log), Some(p)) = (&shared.access_log, started.log) {
            emit(py, log, p, result, elapsed);
        }
    }
}

fn pending(job: &Job) -> Pending {
    let header = |name: &str| job.head.headers.get(name).map(<[u8]>::to_vec);
    Pending {
        wall: SystemTime::now(),
        method: job.head.method.clone(),
        target: job.head.target.clone(),
        protocol: job.head.version.as_str(),
        peer: match &job.peer {
            Peer::Tcp(a) => a.ip().to_string(),
            Peer::Unix => "localhost".to_string(),
        },
        referer: header("REFERER"),
        user_agent: header("USER_AGENT"),
        environ: None,
    }
}

fn emit(py: Python<'_>, log: &AccessLog, p: Pending, result: Outcome, elapsed: Duration) {
    let env = p.environ.as_ref().map(|e| e.bind(py));
    let text = |key: &Bound<'_, pyo3::types::PyString>| -> Option<String> {
        let value = env?.get_item(key).ok()??;
        value.extract::<String>().ok()
    };
    let remote_addr = text(intern!(py, "REMOTE_ADDR")).unwrap_or(p.peer);
    let remote_user = text(intern!(py, "REMOTE_USER"));
    let record = Record {
        time: log.local(py, p.wall),
        remote_addr: &remote_addr,
        remote_user: remote_user.as_deref(),
        method: &p.method,
        target: &p.target,
        protocol: p.protocol,
        status: result.status,
        bytes: result.bytes,
        referer: p.referer.as_deref(),
        user_agent: p.user_agent.as_deref(),
        duration: elapsed,
    };
    let line = format_line(log.format, &record);
    if log.emit.bind(py).call1((line,)).is_err() {
        PyErr::take(py); // logging reports handler errors itself
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn time() -> LocalTime {
        LocalTime {
            civil: Civil {
                year: 2000,
                month: 10,
                day: 10,
                hour: 13,
                minute: 55,
                second: 36,
                offset_secs: -7 * 3600,
            },
            millis: 7,
        }
    }

    fn record() -> Record<'static> {
        Record {
            time: time(),
            remote_addr: "127.0.0.1",
            remote_user: None,
            method: "GET",
            target: b"/apache_pb.gif?a=1",
            protocol: "HTTP/1.0",
            status: 200,
            bytes: 2326,
            referer: Some(b"http://www.example.com/start.html"),
            user_agent: Some(b"Mozilla/4.08 [en] (Win98; I ;Nav)"),
            duration: Duration::from_micros(1500),
        }
    }

    #[rstest]
    #[case::combined(
        AccessLogFormat::Combined,
        r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?a=1 HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#
    )]
    #[case::common(
        AccessLogFormat::Common,
        r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?a=1 HTTP/1.0" 200 2326"#
    )]
    #[case::json(
        AccessLogFormat::Json,
        r#"{"time":"2000-10-10T13:55:36.007-07:00","remote_addr":"127.0.0.1","remote_user":null,"method":"GET","path":"/apache_pb.gif?a=1","protocol":"HTTP/1.0","status":200,"bytes":2326,"referer":"http://www.example.com/start.html","user_agent":"Mozilla/4.08 [en] (Win98; I ;Nav)","duration_ms":1.500}"#
    )]
    fn formats(#[case] format: AccessLogFormat, #[case] line: &str) {
        assert_eq!(format_line(format, &record()), line);
    }

    #[rstest]
    #[case::combined(
        AccessLogFormat::Combined,
        r#"::1 - alice [10/Oct/2000:13:55:36 -0700] "HEAD / HTTP/1.1" 304 - "-" "-""#
    )]
    #[case::json(
        AccessLogFormat::Json,
        r#"{"time":"2000-10-10T13:55:36.007-07:00","remote_addr":"::1","remote_user":"alice","method":"HEAD","path":"/","protocol":"HTTP/1.1","status":304,"bytes":0,"referer":null,"user_agent":null,"duration_ms":0.000}"#
    )]
    fn absent_and_empty_fields(#[case] format: AccessLogFormat, #[case] line: &str) {
        let r = Record {
            remote_addr: "::1",
            remote_user: Some("alice"),
            method: "HEAD",
            target: b"/",
            protocol: "HTTP/1.1",
            status: 304,
            bytes: 0,
            referer: None,
            user_agent: None,
            duration: Duration::ZERO,
            ..record()
        };
        assert_eq!(format_line(format, &r), line);
    }

    #[test]
    fn empty_header_is_a_dash_in_apache_and_empty_in_json() {
        let r = Record {
            referer: Some(b""),
            ..record()
        };
        assert!(format_line(AccessLogFormat::Combined, &r).contains(r#" 2326 "-" "Mozilla"#));
        assert!(format_line(AccessLogFormat::Json, &r).contains(r#""referer":"","#));
    }

    #[rstest]
    #[case::plain("abc /x?y=1", "abc /x?y=1")]
    #[case::quote(r#"say "hi""#, r#"say \"hi\""#)]
    #[case::backslash(r"a\b", r"a\\b")]
    #[case::newline("a\nb\r\n", r"a\nb\r\n")]
    #[case::tab_bs_vt("\t\u{8}\u{b}", r"\t\b\v")]
    #[case::control("\u{0}\u{1b}\u{7f}", r"\x00\x1b\x7f")]
    #[case::latin1("caf\u{e9}\u{ff}", r"caf\xe9\xff")]
    #[case::beyond_latin1("\u{20ac}", r"\xe2\x82\xac")]
    #[case::empty("", "")]
    fn apache_escaping(#[case] raw: &str, #[case] escaped: &str) {
        let mut out = String::new();
        apache_escape(&mut out, raw);
        assert_eq!(out, escaped);
    }

    #[rstest]
    #[case::plain("abc /x", r#""abc /x""#)]
    #[case::quote(r#"say "hi""#, r#""say \"hi\"""#)]
    #[case::backslash(r"a\b", r#""a\\b""#)]
    #[case::newline("a\nb\r", r#""a\nb\r""#)]
    #[case::short("\t\u{8}\u{c}", r#""\t\b\f""#)]
    #[case::control("\u{0}\u{1f}\u{7f}", r#""\u0000\u001f\u007f""#)]
    #[case::latin1("caf\u{e9}", r#""caf\u00e9""#)]
    #[case::bmp("\u{20ac}", r#""\u20ac""#)]
    #[case::astral("\u{1f600}", r#""\ud83d\ude00""#)]
    #[case::slash("</script>", r#""</script>""#)]
    #[case::empty("", r#""""#)]
    fn json_escaping(#[case] raw: &str, #[case] literal: &str) {
        let mut out = String::new();
        json_string(&mut out, raw);
        assert_eq!(out, literal);
    }

    #[test]
    fn hostile_fields_stay_on_one_parseable_line() {
        let r = Record {
            target: b"/a%22b\"c\\d",
            referer: Some(b"x\"y\\z\r\nFAKE 200"),
            user_agent: Some(b"\xe9t\xe9 \x01"),
            remote_user: Some("bob\"\n"),
            ..record()
        };
        let combined = format_line(AccessLogFormat::Combined, &r);
        assert_eq!(
            combined,
            r#"127.0.0.1 - bob\"\n [10/Oct/2000:13:55:36 -0700] "GET /a%22b\"c\\d HTTP/1.0" 200 2326 "x\"y\\z\r\nFAKE 200" "\xe9t\xe9 \x01""#
        );
        let json = format_line(AccessLogFormat::Json, &r);
        assert!(json.is_ascii() && !json.contains('\n'));
        assert!(json.contains(r#""path":"/a%22b\"c\\d""#), "{json}");
        assert!(
            json.contains(r#""referer":"x\"y\\z\r\nFAKE 200","user_agent":"\u00e9t\u00e9 \u0001""#),
            "{json}"
        );
    }

    #[rstest]
    #[case(0, (1970, 1, 1, 0, 0, 0))]
    #[case(951_782_400, (2000, 2, 29, 0, 0, 0))]
    #[case(971_186_136, (2000, 10, 10, 13, 55, 36))]
    #[case(4_107_542_399, (2100, 2, 28, 23, 59, 59))]
    fn utc_civil(#[case] secs: u64, #[case] want: (i64, u8, u8, u8, u8, u8)) {
        let c = Civil::utc(secs);
        assert_eq!((c.year, c.month, c.day, c.hour, c.minute, c.second), want);
        assert_eq!(c.offset_secs, 0);
    }

    #[rstest]
    #[case(0, "+0000", "+00:00")]
    #[case(19_800, "+0530", "+05:30")]
    #[case(-34_200, "-0930", "-09:30")]
    fn offsets(#[case] offset_secs: i64, #[case] apache: &str, #[case] iso: &str) {
        let mut t = time();
        t.civil.offset_secs = offset_secs;
        let (mut a, mut i) = (String::new(), String::new());
        t.apache(&mut a);
        t.iso(&mut i);
        assert!(a.ends_with(apache), "{a}");
        assert!(i.ends_with(iso), "{i}");
    }

    fn summary(status: Option<u16>, sent: u64, end: End) -> Summary {
        Summary {
            status,
            head_sent: status.is_some(),
            sent,
            app_length: None,
            end,
        }
    }

    const DEFAULT_500: u64 = "Internal Server Error\r\n\r\nThe server encountered an unexpected internal server error\r\n\r\n(generated by maitre)".len() as u64;

    #[rstest]
    #[case::ok(summary(Some(200), 12, End::Completed), false, 200, 12)]
    #[case::head(summary(Some(200), 12, End::Completed), true, 200, 0)]
    #[case::no_content(summary(Some(204), 5, End::Completed), false, 204, 0)]
    #[case::not_modified(summary(Some(304), 5, End::Completed), false, 304, 0)]
    #[case::info(summary(Some(103), 5, End::Completed), false, 103, 0)]
    #[case::failed_before_head(Summary { head_sent: false, ..summary(Some(200), 0, End::Failed(None)) }, false, 500, DEFAULT_500)]
    #[case::failed_with_detail(summary(None, 0, End::Failed(Some("boom".into()))), false, 500, "Internal Server Error\r\n\r\nboom\r\n\r\n(generated by maitre)".len() as u64)]
    #[case::failed_after_head(summary(Some(200), 7, End::Failed(None)), false, 200, 7)]
    #[case::never_started(summary(None, 0, End::Completed), false, 500, DEFAULT_500)]
    #[case::gone_early(summary(None, 0, End::Disconnected), false, 499, 0)]
    #[case::gone_late(summary(Some(200), 64, End::Disconnected), false, 200, 64)]
    #[case::timed_out(summary(None, 0, End::TimedOut), false, 503, "Service Unavailable\r\n\r\nThe application did not answer within request_timeout (7 s)\r\n\r\n(generated by maitre)".len() as u64)]
    #[case::timed_out_late(summary(Some(200), 9, End::TimedOut), false, 200, 9)]
    #[case::trimmed(Summary { app_length: Some(10), ..summary(Some(200), 15, End::Completed) }, false, 200, 10)]
    #[case::short(Summary { app_length: Some(10), ..summary(Some(200), 4, End::Completed) }, false, 200, 4)]
    fn outcomes(#[case] s: Summary, #[case] head: bool, #[case] status: u16, #[case] bytes: u64) {
        let config = Config {
            ident: Some("maitre".into()),
            request_timeout: Some(Duration::from_secs(7)),
            ..Config::default()
        };
        assert_eq!(outcome(&s, head, &config), Outcome { status, bytes });
    }
}
