//! Response head building and the framing decision.
//!
//! Given the app's status and headers (already final: Decision Q6 is the
//! caller's business) and what the request asked for, this module validates
//! them, decides how the body is framed and whether the connection survives,
//! and writes the head exactly as Waitress 3.0.2 would (re-capitalised names,
//! `Server`/`Via`, `Date`, a stable sort by name), with the binding Decisions
//! applied:
//!
//! * Q1: a chunked HTTP/1.1 response keeps the connection open.
//! * Q2: 1xx/204/304 keep it open; they never carry a body; 1xx/204 never
//!   carry a Content-Length, 304 keeps the app's.
//! * Q3: HEAD gets the head only, with the Content-Length a GET would have.
//! * Q7: header names must be RFC 9110 tokens; CR, LF and NUL are refused.
//! * Q12: `close_requested` already holds the parsed `Connection` tokens.
use std::cmp::Ordering;

use crate::engine::executor::AppHead;
use crate::http::request::{RequestHead, Version};

/// What the framing decision needs to know about the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestInfo {
    pub version: Version,
    pub is_head: bool,
    pub close_requested: bool,
    pub close_after: bool,
}

impl RequestInfo {
    pub fn of(head: &RequestHead) -> Self {
        RequestInfo {
            version: head.version,
            is_head: head.is_head(),
            close_requested: head.close_requested,
            close_after: head.close_after,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many body bytes (surplus app bytes are dropped, a shortfall closes).
    Length(u64),
    /// `Transfer-Encoding: chunked`, ended by `0\r\n\r\n`.
    Chunked,
    /// The body ends when the connection closes.
    CloseDelimited,
    /// No body may be sent (HEAD, 1xx, 204, 304): app bytes are dropped.
    NoBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The status line and headers, terminated by an empty line.
    pub bytes: Vec<u8>,
    pub framing: Framing,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
}

/// Headers a WSGI app may not send (PEP 3333, after RFC 2616 §13.5.1, which
/// spells it `Trailers`). Waitress 3.0.2 has `trailers`, so an app may send a
/// `Trailer` header; main's change to `trailer` is not a security fix (a
/// Trailer header is end to end), so maitre keeps 3.0.2's behaviour.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// What `Via` says when the server has no ident (Waitress's `ident or 'waitress'`,
/// kept byte for byte).
const FALLBACK_VIA: &str = "waitress";

/// Check a status as `start_response` would: a latin-1 string without CR, LF
/// or NUL that starts with a three-digit code (100-999) followed by a space or
/// nothing (`"200"` alone is sent as is, like Waitress).
pub fn validate_status(status: &str) -> Result<(), String> {
    parse_status(status).map(|_| ())
}

/// Check one app header as `start_response` would: CR/LF/NUL, token name (Q7),
/// hop-by-hop names, latin-1 value, and an `int()`-parsable Content-Length.
pub fn validate_header(name: &str, value: &str) -> Result<(), String> {
    check_header(name, value).map(|_| ())
}

/// Build the head for the app's answer. `Err` carries the reason the app's
/// status or headers are unacceptable (logged, answered with a 500).
pub fn build_head(
    req: &RequestInfo,
    app: &AppHead,
    ident: Option<&str>,
    date: &str,
) -> Result<ResponseHead, String> {
    let mut bytes = Vec::new();
    let shape = write_response_head(req, app, ident, date, &mut bytes)?;
    Ok(ResponseHead {
        status: shape.status,
        bytes,
        framing: shape.framing,
        keep_alive: shape.keep_alive,
    })
}

/// What a head decided, its bytes aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    pub status: u16,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// [`build_head`] appending to `out` (a buffer the caller reuses: a head is
/// built for every response). On `Err`, `out` is unchanged.
pub fn write_response_head(
    req: &RequestInfo,
    app: &AppHead,
    ident: Option<&str>,
    date: &str,
    out: &mut Vec<u8>,
) -> Result<HeadShape, String> {
    let status = parse_status(&app.status)?;
    let kind = StatusKind::of(status);
    let mut lines = Lines::new();
    let seen = collect_app_headers(app, kind, &mut lines)?;

    let length = content_length(kind, seen.content_length, app.known_length, &mut lines);
    let framing = framing(req, kind, length);
    let keep_alive = keep_alive(req, length);
    add_connection_headers(req, framing, keep_alive, &mut lines);
    add_server_and_date(&seen, ident, date, &mut lines);

    // Stable: same-named headers keep the app's relative order (RFC 9110 §5.3).
    let lines = lines.as_mut_slice();
    lines.sort_by(|a, b| cmp_recapitalised(a.name, b.name));
    write_head(req.version, &app.status, lines, out);
    Ok(HeadShape {
        status,
        framing,
        keep_alive,
    })
}

/// Append a chunk-size line (`HEX\r\n`, upper-case hex) for `len` bytes.
pub fn chunk_header(len: usize, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut at = buf.len();
    let mut rest = len;
    loop {
        at -= 1;
        buf[at] = DIGITS[rest & 0xF];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

// ---------------------------------------------------------------------------
// Status

/// The body rules a status code implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatusKind {
    /// 1xx and 204: no body and no Content-Length (RFC 9110 §8.6).
    NoBodyNoLength,
    /// 304: no body, but the app's Content-Length describes the selected
    /// representation and is kept (RFC 9110 §15.4.5, Decision Q2).
    NotModified,
    /// Everything else may carry a body.
    Body,
}

impl StatusKind {
    fn of(code: u16) -> Self {
        match code {
            100..=199 | 204 => StatusKind::NoBodyNoLength,
            304 => StatusKind::NotModified,
            _ => StatusKind::Body,
        }
    }
}

fn parse_status(status: &str) -> Result<u16, String> {
    let scan = Scan::of(status);
    if scan.cr_or_lf {
        return Err("carriage return/line feed character present in status".to_owned());
    }
    if scan.nul {
        return Err("NUL character present in status".to_owned());
    }
    if !scan.latin1 {
        return Err(format!("status {status:?} cannot be encoded as latin-1"));
    }
    let b = status.as_bytes();
    let code_ok = b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && b[0] != b'0'
        && (b.len() == 3 || b[3] == b' ');
    if !code_ok {
        return Err(format!(
            "status {status:?} does not start with a three-digit status code"
        ));
    }
    Ok(b[..3]
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0')))
}

// ---------------------------------------------------------------------------
// App headers

/// What a valid app header means for the head.
enum Role {
    ContentLength(u64),
    Date,
    Server,
    Other,
}

/// One pass over a string's UTF-8 bytes: the characters that matter here are
/// all ASCII, and any character above U+00FF has a lead byte of 0xC4 or more
/// (continuation bytes stay below 0xC0), so no decoding is needed.
struct Scan {
    cr_or_lf: bool,
    nul: bool,
    latin1: bool,
}

impl Scan {
    fn of(s: &str) -> Self {
        let mut scan = Scan {
            cr_or_lf: false,
            nul: false,
            latin1: true,
        };
        for &b in s.as_bytes() {
            match b {
                b'\r' | b'\n' => scan.cr_or_lf = true,
                0 => scan.nul = true,
                0xC4.. => scan.latin1 = false,
                _ => {}
            }
        }
        scan
    }
}

fn check_header(name: &str, value: &str) -> Result<Role, String> {
    // Waitress checks the value before the name; keep its order of messages.
    let value_scan = Scan::of(value);
    if value_scan.cr_or_lf {
        return Err("carriage return/line feed character present in header value".to_owned());
    }
    if value_scan.nul {
        return Err("NUL character present in header value".to_owned());
    }
    let name_scan = Scan::of(name);
    if name_scan.cr_or_lf {
        return Err("carriage return/line feed character present in header name".to_owned());
    }
    if name_scan.nul {
        return Err("NUL character present in header name".to_owned());
    }
    if !is_token(name) {
        return Err(format!("header name {name:?} is not a valid token"));
    }
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return Err(format!(
            "{name} is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)"
        ));
    }
    if !value_scan.latin1 {
        return Err(format!(
            "value of header {name} cannot be encoded as latin-1: {value:?}"
        ));
    }
    role_of(name, value)
}

fn role_of(name: &str, value: &str) -> Result<Role, String> {
    // Names are tokens (ASCII), so case-insensitive equality is exactly
    // "equal after re-capitalisation", which is what Waitress compares.
    Ok(if name.eq_ignore_ascii_case("content-length") {
        Role::ContentLength(parse_content_length(value)?)
    } else if name.eq_ignore_ascii_case("date") {
        Role::Date
    } else if name.eq_ignore_ascii_case("server") {
        Role::Server
    } else {
        Role::Other
    })
}

/// RFC 9110 `tchar`, as a lookup table: this runs for every byte of every
/// header name of every response.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        b += 1;
    }
    table
};

fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| TCHAR[usize::from(b)])
}

/// Whitespace Python's `int()` strips, restricted to latin-1 (CR and LF never
/// get this far). Note that \x1c-\x1f, although `isspace()`, are not stripped.
fn is_int_space(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | ' ' | '\u{85}' | '\u{a0}')
}

/// The app's Content-Length, read the way Python's `int()` reads it: optional
/// surrounding whitespace, an optional `+`, ASCII digits with single
/// underscores between them. (`int()` also takes non-ASCII decimal digits,
/// but none exist in latin-1.) A `-` sign is refused outright, `-0` included:
/// a length cannot be negative and `-0` is no valid header value either.
fn parse_content_length(value: &str) -> Result<u64, String> {
    let invalid = || format!("Content-Length {value:?} is not a valid integer");
    let trimmed = value.trim_matches(is_int_space);
    let digits = match trimmed.as_bytes().first() {
        Some(b'+') => &trimmed[1..],
        Some(b'-') => return Err(format!("Content-Length {value:?} is negative")),
        _ => trimmed,
    };
    let b = digits.as_bytes();
    let well_formed = b.first().is_some_and(u8::is_ascii_digit)
        && b.last().is_some_and(u8::is_ascii_digit)
        && b.iter().all(|&c| c.is_ascii_digit() || c == b'_')
        && !digits.contains("__");
    if !well_formed {
        return Err(invalid());
    }
    let mut n: u64 = 0;
    for d in b.iter().filter(|c| c.is_ascii_digit()) {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| format!("Content-Length {value:?} is too large"))?;
    }
    Ok(n)
}

/// One header line of the head before sorting: borrowed from the app or static.
#[derive(Clone, Copy)]
struct Line<'a> {
    name: &'a str,
    value: Value<'a>,
}

#[derive(Clone, Copy)]
enum Value<'a> {
    Text(&'a str),
    Number(u64),
}

/// Lines kept on the stack before they spill to the heap.
const INLINE_LINES: usize = 16;

/// The head's lines while it is built: a head is built for every response,
/// and a usual one fits on the stack (no allocation).
struct Lines<'a> {
    inline: [Line<'a>; INLINE_LINES],
    len: usize,
    spilled: Vec<Line<'a>>,
}

impl<'a> Lines<'a> {
    fn new() -> Self {
        let empty = Line {
            name: "",
            value: Value::Number(0),
        };
        Lines {
            inline: [empty; INLINE_LINES],
            len: 0,
            spilled: Vec::new(),
        }
    }

    fn push(&mut self, line: Line<'a>) {
        if self.spilled.is_empty() && self.len < INLINE_LINES {
            self.inline[self.len] = line;
            self.len += 1;
            return;
        }
        if self.spilled.is_empty() {
            self.spilled.extend_from_slice(&self.inline[..self.len]);
        }
        self.spilled.push(line);
    }

    fn as_mut_slice(&mut self) -> &mut [Line<'a>] {
        if self.spilled.is_empty() {
            &mut self.inline[..self.len]
        } else {
            &mut self.spilled
        }
    }
}

/// What the app's headers said, beyond the lines themselves.
struct Seen {
    /// The app's Content-Length, whether or not its line is sent.
    content_length: Option<u64>,
    /// Waitress looks at the *last* Date/Server value and treats an empty one
    /// as absent; so do we.
    date_set: bool,
    server_set: bool,
}

fn collect_app_headers<'a>(
    app: &'a AppHead,
    kind: StatusKind,
    lines: &mut Lines<'a>,
) -> Result<Seen, String> {
    let mut seen = Seen {
        content_length: None,
        date_set: false,
        server_set: false,
    };
    // Headers validated on their way in (start_response) are not checked again.
    let valid = app.headers.all_valid();
    for (name, value) in app.headers.iter() {
        let role = if valid {
            role_of(name, value)?
        } else {
            check_header(name, value)?
        };
        match role {
            Role::ContentLength(n) => {
                // Waitress would send both lines and frame by the last one;
                // two different lengths leave proxies to guess where it ends.
                if let Some(first) = seen.content_length.filter(|&first| first != n) {
                    return Err(format!(
                        "conflicting Content-Length headers: {first} and {value:?}"
                    ));
                }
                seen.content_length = Some(n);
                if kind == StatusKind::NoBodyNoLength {
                    continue;
                }
            }
            Role::Date => seen.date_set = !value.is_empty(),
            Role::Server => seen.server_set = !value.is_empty(),
            Role::Other => {}
        }
        lines.push(Line {
            name,
            value: Value::Text(value),
        });
    }
    Ok(seen)
}

// ---------------------------------------------------------------------------
// Framing and persistence

/// The Content-Length the response carries, if any, adding the line for a
/// `known_length` when the app set none. HEAD takes this path too: its head
/// says what the GET's would (Q3).
fn content_length(
    kind: StatusKind,
    app_length: Option<u64>,
    known_length: Option<u64>,
    lines: &mut Lines<'_>,
) -> Option<u64> {
    match (kind, app_length) {
        (StatusKind::NoBodyNoLength, _) => None,
        (_, Some(n)) => Some(n),
        // A 304 keeps only what the app said; a guessed length would describe
        // the (empty) 304 body, not the representation.
        (StatusKind::NotModified, None) => None,
        (StatusKind::Body, None) => {
            let n = known_length?;
            lines.push(Line {
                name: "Content-Length",
                value: Value::Number(n),
            });
            Some(n)
        }
    }
}

/// HEAD is always `NoBody` (Q3). HEAD without a length on HTTP/1.1, where the
/// GET would have been chunked, therefore sends no `Transfer-Encoding`:
/// RFC 9110 §9.3.2 lets a server omit fields whose value is only known while
/// generating the content, the answer delimits itself so the connection
/// persists, and a stray `chunked` on a bodiless answer only tempts naive
/// clients or proxies to wait for a chunk that never comes.
fn framing(req: &RequestInfo, kind: StatusKind, length: Option<u64>) -> Framing {
    if req.is_head || kind != StatusKind::Body {
        return Framing::NoBody;
    }
    match (length, req.version) {
        (Some(n), _) => Framing::Length(n),
        (None, Version::Http11) => Framing::Chunked,
        (None, Version::Http10) => Framing::CloseDelimited,
    }
}

/// HTTP/1.1 persists unless asked not to: chunked (Q1), bodiless statuses
/// (Q2) and HEAD without a length all delimit themselves. HTTP/1.0 persists
/// only with a Content-Length (Q12), as in Waitress; so a 1.0 keep-alive
/// request answered by a 204 (no length by rule) closes, like Waitress.
///
/// Note: Q2 keeps 1xx open too, as decided. A 1xx sent as a *final* response
/// looks interim to the client, which then waits for another answer; closing
/// would fail faster. Should that be wanted, make 1xx force a close here.
fn keep_alive(req: &RequestInfo, length: Option<u64>) -> bool {
    if req.close_requested || req.close_after {
        return false;
    }
    match req.version {
        Version::Http11 => true,
        Version::Http10 => length.is_some(),
    }
}

fn add_connection_headers(
    req: &RequestInfo,
    framing: Framing,
    keep_alive: bool,
    lines: &mut Lines<'_>,
) {
    let connection = match (keep_alive, req.version) {
        (false, _) => Some("close"),
        (true, Version::Http10) => Some("Keep-Alive"),
        (true, Version::Http11) => None,
    };
    if let Some(token) = connection {
        lines.push(Line {
            name: "Connection",
            value: Value::Text(token),
        });
    }
    if framing == Framing::Chunked {
        lines.push(Line {
            name: "Transfer-Encoding",
            value: Value::Text("chunked"),
        });
    }
}

/// `Server: <ident>` unless the app named a server (then `Via`), and `Date`
/// unless the app gave one. An empty ident means "do not identify".
fn add_server_and_date<'a>(
    seen: &Seen,
    ident: Option<&'a str>,
    date: &'a str,
    lines: &mut Lines<'a>,
) {
    let ident = ident.filter(|i| !i.is_empty());
    if seen.server_set {
        let via = ident.unwrap_or(FALLBACK_VIA);
        lines.push(Line {
            name: "Via",
            value: Value::Text(via),
        });
    } else if let Some(ident) = ident {
        lines.push(Line {
            name: "Server",
            value: Value::Text(ident),
        });
    }
    if !seen.date_set {
        lines.push(Line {
            name: "Date",
            value: Value::Text(date),
        });
    }
}

// ---------------------------------------------------------------------------
// Writing

/// Order by re-capitalised name (what Waitress sorts on) without building it.
fn cmp_recapitalised(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    // Equal so far, so both names are at the start of a part or neither is
    // (`-` maps to itself): one flag serves both.
    let mut part_start = true;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = if part_start {
            (x.to_ascii_uppercase(), y.to_ascii_uppercase())
        } else {
            (x.to_ascii_lowercase(), y.to_ascii_lowercase())
        };
        match x.cmp(&y) {
            Ordering::Equal => part_start = x == b'-',
            unequal => return unequal,
        }
    }
    a.len().cmp(&b.len())
}

/// Append `name` as Waitress re-capitalises it: upper case at the start of
/// each `-`-separated part, lower case elsewhere. Names are ASCII tokens by
/// now, so byte-wise case mapping is exact.
fn write_recapitalised(name: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(name);
    let mut part_start = true;
    for b in &mut out[start..] {
        *b = if part_start {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        };
        part_start = *b == b'-';
    }
}

fn write_head(version: Version, status: &str, lines: &[Line<'_>], out: &mut Vec<u8>) {
    let size: usize = lines
        .iter()
        .map(|l| l.name.len() + 4 + l.value.len_guess())
        .sum();
    out.reserve(9 + status.len() + 2 + size + 2);
    out.extend_from_slice(version.as_str().as_bytes());
    out.push(b' ');
    write_latin1(status, out);
    out.extend_from_slice(b"\r\n");
    for line in lines {
        write_recapitalised(line.name.as_bytes(), out);
        out.extend_from_slice(b": ");
        match line.value {
            Value::Text(text) => write_latin1(text, out),
            Value::Number(n) => write_decimal(n, out),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

impl Value<'_> {
    fn len_guess(&self) -> usize {
        match self {
            Value::Text(text) => text.len(),
            Value::Number(_) => 20,
        }
    }
}

/// Encode as latin-1. App text was checked to fit; `ident` and `date` come
/// from the server itself, and should one hold a wider character it becomes
/// `?` rather than a truncated byte.
fn write_latin1(text: &str, out: &mut Vec<u8>) {
    if text.is_ascii() {
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend(text.chars().map(|c| u8::try_from(c).unwrap_or(b'?')));
    }
}

fn write_decimal(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(decimal(n, &mut [0u8; 20]).as_bytes());
}

/// `n` in decimal, written into `buf` (no `fmt`, no allocation).
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    let mut rest = n;
    loop {
        at -= 1;
        // `rest % 10` is below 10, so the cast is lossless.
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // ASCII digits only.
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {

    /// More lines than fit on the stack: all of them, sorted, same-named
    /// ones in the app's order.
    #[test]
    fn a_head_with_many_headers_keeps_them_all_in_order() {
        let names: Vec<String> = (0..30).rev().map(|i| format!("x-h{i:02}")).collect();
        let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        pairs.push(("X-H05", "second"));
        let a = app("200 OK", &pairs, Some(0));
        let head = build(GET11, &a).expect("valid head");
        let text = latin1(&head.bytes);
        let got: Vec<&str> = text.lines().filter(|l| l.starts_with("X-H")).collect();
        let mut want: Vec<String> = (0..30).map(|i| format!("X-H{i:02}: v")).collect();
        want.insert(6, "X-H05: second".to_string());
        assert_eq!(got, want);
    }

    /// The comparison agrees with sorting the re-capitalised names themselves.
    #[test]
    fn recapitalised_order_is_the_order_of_the_written_names() {
        let names = [
            "x-a",
            "X-A",
            "x-B",
            "xa",
            "x",
            "x-",
            "-a",
            "-",
            "Content-Type",
            "CONTENT-length",
            "content-LENGTH-x",
            "a-b-c",
            "A-B",
            "a--b",
            "date",
            "Date",
        ];
        let written = |n: &str| {
            let mut out = Vec::new();
            write_recapitalised(n.as_bytes(), &mut out);
            out
        };
        assert_eq!(written("cONTENT-tYPE"), b"Content-Type");
        assert_eq!(written("a--b-"), b"A--B-");
        for a in names {
            for b in names {
                assert_eq!(
                    cmp_recapitalised(a, b),
                    written(a).cmp(&written(b)),
                    "{a} vs {b}"
                );
            }
        }
    }
    use super::*;
    use rstest::rstest;

    /// Table tests pass this date: `build_head` copies it verbatim, and a short
    /// one keeps the expected heads readable. Snapshots use a real date.
    const D: &str = "D";
    const SNAPSHOT_DATE: &str = "Thu, 01 Jan 1970 00:00:00 GMT";

    const fn req(
        version: Version,
        is_head: bool,
        close_requested: bool,
        close_after: bool,
    ) -> RequestInfo {
        RequestInfo {
            version,
            is_head,
            close_requested,
            close_after,
        }
    }
    const V10: Version = Version::Http10;
    const V11: Version = Version::Http11;
    /// HTTP/1.1 with no `Connection: close`.
    const GET11: RequestInfo = req(V11, false, false, false);
    const GET11_CLOSE: RequestInfo = req(V11, false, true, false);
    const GET11_AFTER: RequestInfo = req(V11, false, false, true);
    /// HTTP/1.0 with `Connection: keep-alive`.
    const GET10_KA: RequestInfo = req(V10, false, false, false);
    /// HTTP/1.0 without keep-alive.
    const GET10: RequestInfo = req(V10, false, true, false);
    const GET10_KA_AFTER: RequestInfo = req(V10, false, false, true);
    const HEAD11: RequestInfo = req(V11, true, false, false);
    const HEAD11_CLOSE: RequestInfo = req(V11, true, true, false);
    const HEAD10_KA: RequestInfo = req(V10, true, false, false);
    const HEAD10: RequestInfo = req(V10, true, true, false);

    fn app(status: &str, headers: &[(&str, &str)], known_length: Option<u64>) -> AppHead {
        AppHead {
            status: status.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            known_length,
        }
    }

    /// The expected wire head: these lines, CRLF-terminated, then an empty
    /// line, in latin-1.
    fn wire(lines: &[&str]) -> Vec<u8> {
        let text = lines.join("\r\n") + "\r\n\r\n";
        text.chars()
            .map(|c| u8::try_from(c).expect("test data is latin-1"))
            .collect()
    }

    fn latin1(bytes: &[u8]) -> String {
        bytes.iter().map(|&b| char::from(b)).collect()
    }

    fn visible(bytes: &[u8]) -> String {
        latin1(bytes).replace('\r', "␍").replace('\n', "␊\n")
    }

    fn build(r: RequestInfo, a: &AppHead) -> Result<ResponseHead, String> {
        build_head(&r, a, Some("maitre"), D)
    }

    /// Section 2.7's keep-alive table, as changed by Decisions Q1, Q2, Q3, Q12
    /// and Q15 (`close_after`): framing, persistence and the exact head.
    #[rstest]
    #[case::v10_ka_app_length(GET10_KA, "200 OK", &[("Content-Length", "5")], None,
        Framing::Length(5), true,
        &["HTTP/1.0 200 OK", "Connection: Keep-Alive", "Content-Length: 5", "Date: D", "Server: maitre"])]
    #[case::v10_ka_known_length(GET10_KA, "200 OK", &[], Some(5),
        Framing::Length(5), true,
        &["HTTP/1.0 200 OK", "Connection: Keep-Alive", "Content-Length: 5", "Date: D", "Server: maitre"])]
    #[case::v10_ka_no_length_closes(GET10_KA, "200 OK", &[], None,
        Framing::CloseDelimited, false,
        &["HTTP/1.0 200 OK", "Connection: close", "Date: D", "Server: maitre"])]
    #[case::v10_no_ka_length(GET10, "200 OK", &[("Content-Length", "5")], None,
        Framing::Length(5), false,
        &["HTTP/1.0 200 OK", "Connection: close", "Content-Length: 5", "Date: D", "Server: maitre"])]
    #[case::v10_no_ka_no_length(GET10, "200 OK", &[], None,
        Framing::CloseDelimited, false,
        &["HTTP/1.0 200 OK", "Connection: close", "Date: D", "Server: maitre"])]
    #[case::v10_ka_204_closes(GET10_KA, "204 No Content", &[("Content-Length", "0")], None,
        Framing::NoBody, false,
        &["HTTP/1.0 204 No Content", "Connection: close", "Date: D", "Server: maitre"])]
    #[case::v10_ka_304_with_length_persists(GET10_KA, "304 Not Modified", &[("Content-Length", "9")], None,
        Framing::NoBody, true,
        &["HTTP/1.0 304 Not Modified", "Connection: Keep-Alive", "Content-Length: 9", "Date: D", "Server: maitre"])]
    #[case::v10_ka_304_without_length_closes(GET10_KA, "304 Not Modified", &[], Some(9),
        Framing::NoBody, false,
        &["HTTP/1.0 304 Not Modified", "Connection: close", "Date: D", "Server: maitre"])]
    #[case::v10_ka_close_after(GET10_KA_AFTER, "200 OK", &[("Content-Length", "5")], None,
        Framing::Length(5), false,
        &["HTTP/1.0 200 OK", "Connection: close", "Content-Length: 5", "Date: D", "Server: maitre"])]
    #[case::v11_length(GET11, "200 OK", &[("Content-Length", "5")], None,
        Framing::Length(5), true,
        &["HTTP/1.1 200 OK", "Content-Length: 5", "Date: D", "Server: maitre"])]
    #[case::v11_known_length(GET11, "200 OK", &[], Some(0),
        Framing::Length(0), true,
        &["HTTP/1.1 200 OK", "Content-Length: 0", "Date: D", "Server: maitre"])]
    #[case::v11_chunked_persists_q1(GET11, "200 OK", &[], None,
        Framing::Chunked, true,
        &["HTTP/1.1 200 OK", "Date: D", "Server: maitre", "Transfer-Encoding: chunked"])]
    #[case::v11_app_length_beats_known(GET11, "200 OK", &[("Content-Length", "3")], Some(99),
        Framing::Length(3), true,
        &["HTTP/1.1 200 OK", "Content-Length: 3", "Date: D", "Server: maitre"])]
    #[case::v11_close_length(GET11_CLOSE, "200 OK", &[("Content-Length", "5")], None,
        Framing::Length(5), false,
        &["HTTP/1.1 200 OK", "Connection: close", "Content-Length: 5", "Date: D", "Server: maitre"])]
    #[case::v11_close_chunked(GET11_CLOSE, "200 OK", &[], None,
        Framing::Chunked, false,
        &["HTTP/1.1 200 OK", "Connection: close", "Date: D", "Server: maitre", "Transfer-Encoding: chunked"])]
    #[case::v11_close_after_length(GET11_AFTER, "200 OK", &[("Content-Length", "5")], None,
        Framing::Length(5), false,
        &["HTTP/1.1 200 OK", "Connection: close", "Content-Length: 5", "Date: D", "Server: maitre"])]
    #[case::v11_close_after_chunked(GET11_AFTER, "200 OK", &[], None,
        Framing::Chunked, false,
        &["HTTP/1.1 200 OK", "Connection: close", "Date: D", "Server: maitre", "Transfer-Encoding: chunked"])]
    #[case::v11_204_persists_q2(GET11, "204 No Content", &[], None,
        Framing::NoBody, true,
        &["HTTP/1.1 204 No Content", "Date: D", "Server: maitre"])]
    #[case::v11_204_drops_length(GET11, "204 No Content", &[("Content-Length", "3")], Some(3),
        Framing::NoBody, true,
        &["HTTP/1.1 204 No Content", "Date: D", "Server: maitre"])]
    #[case::v11_304_persists_q2(GET11, "304 Not Modified", &[], Some(4),
        Framing::NoBody, true,
        &["HTTP/1.1 304 Not Modified", "Date: D", "Server: maitre"])]
    #[case::v11_304_keeps_app_length(GET11, "304 Not Modified", &[("Content-Length", "4")], None,
        Framing::NoBody, true,
        &["HTTP/1.1 304 Not Modified", "Content-Length: 4", "Date: D", "Server: maitre"])]
    #[case::v11_100_persists_q2(GET11, "100 Continue", &[("Content-Length", "4")], Some(4),
        Framing::NoBody, true,
        &["HTTP/1.1 100 Continue", "Date: D", "Server: maitre"])]
    #[case::v11_199_drops_length(GET11, "199 Misc", &[("content-length", "4")], None,
        Framing::NoBody, true,
        &["HTTP/1.1 199 Misc", "Date: D", "Server: maitre"])]
    #[case::v11_close_204(GET11_CLOSE, "204 No Content", &[], None,
        Framing::NoBody, false,
        &["HTTP/1.1 204 No Content", "Connection: close", "Date: D", "Server: maitre"])]
    #[case::v11_205_is_chunked(GET11, "205 Reset Content", &[], None,
        Framing::Chunked, true,
        &["HTTP/1.1 205 Reset Content", "Date: D", "Server: maitre", "Transfer-Encoding: chunked"])]
    #[case::head11_app_length_q3(HEAD11, "200 OK", &[("Content-Length", "1234")], None,
        Framing::NoBody, true,
        &["HTTP/1.1 200 OK", "Content-Length: 1234", "Date: D", "Server: maitre"])]
    #[case::head11_known_length_q3(HEAD11, "200 OK", &[], Some(77),
        Framing::NoBody, true,
        &["HTTP/1.1 200 OK", "Content-Length: 77", "Date: D", "Server: maitre"])]
    #[case::head11_no_length_no_te(HEAD11, "200 OK", &[], None,
        Framing::NoBody, true,
        &["HTTP/1.1 200 OK", "Date: D", "Server: maitre"])]
    #[case::head11_close_no_length(HEAD11_CLOSE, "200 OK", &[], None,
        Framing::NoBody, false,
        &["HTTP/1.1 200 OK", "Connection: close", "Date: D", "Server: maitre"])]
    #[case::head11_304_keeps_length(HEAD11, "304 Not Modified", &[("Content-Length", "8")], None,
        Framing::NoBody, true,
        &["HTTP/1.1 304 Not Modified", "Content-Length: 8", "Date: D", "Server: maitre"])]
    #[case::head11_204_drops_length(HEAD11, "204 No Content", &[("Content-Length", "8")], Some(8),
        Framing::NoBody, true,
        &["HTTP/1.1 204 No Content", "Date: D", "Server: maitre"])]
    #[case::head10_ka_length(HEAD10_KA, "200 OK", &[("Content-Length", "8")], None,
        Framing::NoBody, true,
        &["HTTP/1.0 200 OK", "Connection: Keep-Alive", "Content-Length: 8", "Date: D", "Server: maitre"])]
    #[case::head10_ka_no_length_closes(HEAD10_KA, "200 OK", &[], None,
        Framing::NoBody, false,
        &["HTTP/1.0 200 OK", "Connection: close", "Date: D", "Server: maitre"])]
    #[case::head10_no_ka(HEAD10, "200 OK", &[], Some(8),
        Framing::NoBody, false,
        &["HTTP/1.0 200 OK", "Connection: close", "Content-Length: 8", "Date: D", "Server: maitre"])]
    #[allow(clippy::too_many_arguments)]
    fn keep_alive_table(
        #[case] r: RequestInfo,
        #[case] status: &str,
        #[case] headers: &[(&str, &str)],
        #[case] known: Option<u64>,
        #[case] framing: Framing,
        #[case] keep_alive: bool,
        #[case] lines: &[&str],
    ) {
        let head = build(r, &app(status, headers, known)).expect("valid head");
        assert_eq!(latin1(&head.bytes), latin1(&wire(lines)));
        assert_eq!(head.framing, framing);
        assert_eq!(head.keep_alive, keep_alive);
        assert_eq!(
            u32::from(head.status),
            status[..3].parse::<u32>().expect("code")
        );
    }

    /// Section 2.8: normalisation and additions, byte for byte.
    #[rstest]
    #[case::recapitalised(GET11, "200 OK",
        &[("content-TYPE", "text/plain"), ("WWW-Authenticate", "Basic"), ("ETag", "\"x\""), ("x-a-b-c", "1")],
        Some("maitre"),
        &["HTTP/1.1 200 OK", "Content-Type: text/plain", "Date: D", "Etag: \"x\"", "Server: maitre",
          "Transfer-Encoding: chunked", "Www-Authenticate: Basic", "X-A-B-C: 1"])]
    #[case::recapitalised_odd_tokens(GET11, "200 OK",
        &[("x--y", "1"), ("x-", "2"), ("-x", "3"), ("x.y_z", "4"), ("1a-2B", "5")],
        Some("maitre"),
        &["HTTP/1.1 200 OK", "-X: 3", "1a-2b: 5", "Date: D", "Server: maitre", "Transfer-Encoding: chunked",
          "X-: 2", "X--Y: 1", "X.y_z: 4"])]
    #[case::sort_is_stable(GET11, "200 OK",
        &[("X-B", "1"), ("x-a", "2"), ("x-b", "3"), ("set-cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-B", "4")],
        Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: D", "Server: maitre", "Set-Cookie: a=1", "Set-Cookie: b=2",
          "Transfer-Encoding: chunked", "X-A: 2", "X-B: 1", "X-B: 3", "X-B: 4"])]
    #[case::sorted_on_recapitalised_names(GET11, "200 OK",
        &[("AC", "1"), ("ab", "2"), ("xa", "3"), ("x-a", "4")],
        Some("maitre"),
        &["HTTP/1.1 200 OK", "Ab: 2", "Ac: 1", "Date: D", "Server: maitre", "Transfer-Encoding: chunked",
          "X-A: 4", "Xa: 3"])]
    #[case::app_server_gives_via(GET11, "200 OK", &[("server", "gunicorn")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: D", "Server: gunicorn", "Transfer-Encoding: chunked", "Via: maitre"])]
    #[case::app_via_kept_before_ours(GET11, "200 OK", &[("Server", "x"), ("Via", "1.1 proxy")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: D", "Server: x", "Transfer-Encoding: chunked", "Via: 1.1 proxy", "Via: maitre"])]
    #[case::empty_app_server_counts_as_none(GET11, "200 OK", &[("Server", "")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: D", "Server: ", "Server: maitre", "Transfer-Encoding: chunked"])]
    #[case::last_server_value_decides(GET11, "200 OK", &[("Server", "x"), ("SERVER", "")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: D", "Server: x", "Server: ", "Server: maitre", "Transfer-Encoding: chunked"])]
    #[case::no_ident_no_server(GET11, "200 OK", &[], None,
        &["HTTP/1.1 200 OK", "Date: D", "Transfer-Encoding: chunked"])]
    #[case::empty_ident_no_server(GET11, "200 OK", &[], Some(""),
        &["HTTP/1.1 200 OK", "Date: D", "Transfer-Encoding: chunked"])]
    #[case::no_ident_via_waitress(GET11, "200 OK", &[("Server", "app")], None,
        &["HTTP/1.1 200 OK", "Date: D", "Server: app", "Transfer-Encoding: chunked", "Via: waitress"])]
    #[case::custom_ident(GET11, "200 OK", &[], Some("waitress"),
        &["HTTP/1.1 200 OK", "Date: D", "Server: waitress", "Transfer-Encoding: chunked"])]
    #[case::app_date_kept(GET11, "200 OK", &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: Sun, 06 Nov 1994 08:49:37 GMT", "Server: maitre", "Transfer-Encoding: chunked"])]
    #[case::empty_app_date_counts_as_none(GET11, "200 OK", &[("Date", "")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: ", "Date: D", "Server: maitre", "Transfer-Encoding: chunked"])]
    #[case::status_without_reason(GET11, "200", &[("Content-Length", "0")], Some("maitre"),
        &["HTTP/1.1 200", "Content-Length: 0", "Date: D", "Server: maitre"])]
    #[case::status_odd_reason_kept(GET11, "299 Whatever you like\t!", &[("Content-Length", "0")], Some("maitre"),
        &["HTTP/1.1 299 Whatever you like\t!", "Content-Length: 0", "Date: D", "Server: maitre"])]
    #[case::app_length_string_verbatim(GET11, "200 OK", &[("Content-Length", " 0012 ")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Content-Length:  0012 ", "Date: D", "Server: maitre"])]
    #[case::equal_lengths_both_sent(GET11, "200 OK", &[("Content-Length", "5"), ("content-length", "+5")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Content-Length: 5", "Content-Length: +5", "Date: D", "Server: maitre"])]
    #[case::value_whitespace_and_controls_kept(GET11, "200 OK", &[("X-Y", "  a\tb\x01 ")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: D", "Server: maitre", "Transfer-Encoding: chunked", "X-Y:   a\tb\x01 "])]
    #[case::trailer_is_not_hop_by_hop(GET11, "200 OK", &[("Trailer", "x")], Some("maitre"),
        &["HTTP/1.1 200 OK", "Date: D", "Server: maitre", "Trailer: x", "Transfer-Encoding: chunked"])]
    #[case::status_line_version_10(GET10, "404 Not Found", &[("Content-Type", "text/html")], Some("maitre"),
        &["HTTP/1.0 404 Not Found", "Connection: close", "Content-Type: text/html", "Date: D", "Server: maitre"])]
    fn normalisation_rules(
        #[case] r: RequestInfo,
        #[case] status: &str,
        #[case] headers: &[(&str, &str)],
        #[case] ident: Option<&str>,
        #[case] lines: &[&str],
    ) {
        let head = build_head(&r, &app(status, headers, None), ident, D).expect("valid head");
        assert_eq!(latin1(&head.bytes), latin1(&wire(lines)));
    }

    #[test]
    fn latin1_values_are_written_as_single_bytes() {
        let a = app(
            "200 Ça va",
            &[("X-Name", "café ÿ"), ("Content-Length", "\u{a0}2\u{85}")],
            None,
        );
        let head = build(GET11, &a).expect("valid head");
        let mut expected = b"HTTP/1.1 200 \xC7a va\r\nContent-Length: \xA02\x85\r\n".to_vec();
        expected.extend_from_slice(b"Date: D\r\nServer: maitre\r\nX-Name: caf\xE9 \xFF\r\n\r\n");
        assert_eq!(head.bytes, expected);
        assert_eq!(head.framing, Framing::Length(2));
    }

    /// Content-Length read like Python's `int()`; the app's string goes out as is.
    #[rstest]
    #[case::plain("12", 12)]
    #[case::zero("0", 0)]
    #[case::surrounding_spaces(" 12 ", 12)]
    #[case::tabs_vt_ff("\t\x0b\x0c7\x0c\x0b\t", 7)]
    #[case::nbsp_and_nel("\u{a0}3\u{85}", 3)]
    #[case::plus_sign("+5", 5)]
    #[case::plus_zero(" +0", 0)]
    #[case::leading_zeros("007", 7)]
    #[case::underscores("1_000_0", 10_000)]
    #[case::zero_underscore("0_0", 0)]
    #[case::u64_max("18446744073709551615", u64::MAX)]
    fn content_length_accepted(#[case] value: &str, #[case] n: u64) {
        assert_eq!(validate_header("Content-Length", value), Ok(()));
        let head =
            build(GET11, &app("200 OK", &[("Content-Length", value)], None)).expect("valid head");
        assert_eq!(head.framing, Framing::Length(n));
        assert!(head.keep_alive);
        let line = format!("Content-Length: {value}");
        let expected = [
            "HTTP/1.1 200 OK",
            line.as_str(),
            "Date: D",
            "Server: maitre",
        ];
        assert_eq!(latin1(&head.bytes), latin1(&wire(&expected)));
    }

    /// Every way an app's status or headers are refused, with the exact message,
    /// from `build_head` and from the early `validate_*` checks alike.
    #[rstest]
    #[case::hop_connection("Connection", "close",
        "Connection is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)")]
    #[case::hop_keep_alive("keep-alive", "timeout=5",
        "keep-alive is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)")]
    #[case::hop_proxy_authenticate("Proxy-Authenticate", "Basic",
        "Proxy-Authenticate is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)")]
    #[case::hop_proxy_authorization("PROXY-AUTHORIZATION", "x",
        "PROXY-AUTHORIZATION is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)")]
    #[case::hop_te(
        "TE",
        "trailers",
        "TE is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)"
    )]
    #[case::hop_trailers("Trailers", "X-Checksum",
        "Trailers is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)")]
    #[case::hop_transfer_encoding("Transfer-Encoding", "chunked",
        "Transfer-Encoding is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)")]
    #[case::hop_upgrade("upgrade", "websocket",
        "upgrade is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)")]
    #[case::cr_in_value(
        "X-A",
        "a\rb",
        "carriage return/line feed character present in header value"
    )]
    #[case::lf_in_value(
        "X-A",
        "a\nSet-Cookie: x=1",
        "carriage return/line feed character present in header value"
    )]
    #[case::nul_in_value("X-A", "a\0b", "NUL character present in header value")]
    #[case::cr_in_name(
        "X\rA",
        "v",
        "carriage return/line feed character present in header name"
    )]
    #[case::lf_in_name(
        "X-A\n",
        "v",
        "carriage return/line feed character present in header name"
    )]
    #[case::nul_in_name("X\0A", "v", "NUL character present in header name")]
    #[case::value_checked_before_name("X\rA", "a\0", "NUL character present in header value")]
    #[case::crlf_before_nul(
        "X-A",
        "\0\r",
        "carriage return/line feed character present in header value"
    )]
    #[case::name_with_space("X Bad", "v", "header name \"X Bad\" is not a valid token")]
    #[case::name_with_colon("X:Name", "v", "header name \"X:Name\" is not a valid token")]
    #[case::empty_name("", "v", "header name \"\" is not a valid token")]
    #[case::name_with_parens("X(y)", "v", "header name \"X(y)\" is not a valid token")]
    #[case::name_with_tab("X\tY", "v", "header name \"X\\tY\" is not a valid token")]
    #[case::name_with_del("X\u{7f}", "v", "header name \"X\\u{7f}\" is not a valid token")]
    #[case::name_latin1("Caf\u{e9}", "v", "header name \"Café\" is not a valid token")]
    #[case::name_wide("X-\u{20ac}", "v", "header name \"X-€\" is not a valid token")]
    #[case::value_not_latin1(
        "X-Price",
        "5 \u{20ac}",
        "value of header X-Price cannot be encoded as latin-1: \"5 €\""
    )]
    #[case::value_u100(
        "X-A",
        "\u{100}",
        "value of header X-A cannot be encoded as latin-1: \"Ā\""
    )]
    #[case::cl_word(
        "Content-Length",
        "abc",
        "Content-Length \"abc\" is not a valid integer"
    )]
    #[case::cl_empty("Content-Length", "", "Content-Length \"\" is not a valid integer")]
    #[case::cl_blank("Content-Length", "  ", "Content-Length \"  \" is not a valid integer")]
    #[case::cl_double_underscore(
        "content-length",
        "1__0",
        "Content-Length \"1__0\" is not a valid integer"
    )]
    #[case::cl_leading_underscore(
        "Content-Length",
        "_1",
        "Content-Length \"_1\" is not a valid integer"
    )]
    #[case::cl_trailing_underscore(
        "Content-Length",
        "1_",
        "Content-Length \"1_\" is not a valid integer"
    )]
    #[case::cl_sign_underscore(
        "Content-Length",
        "+_1",
        "Content-Length \"+_1\" is not a valid integer"
    )]
    #[case::cl_hex(
        "Content-Length",
        "0x10",
        "Content-Length \"0x10\" is not a valid integer"
    )]
    #[case::cl_inner_space(
        "Content-Length",
        "1 2",
        "Content-Length \"1 2\" is not a valid integer"
    )]
    #[case::cl_space_after_sign(
        "Content-Length",
        "+ 1",
        "Content-Length \"+ 1\" is not a valid integer"
    )]
    #[case::cl_bare_sign("Content-Length", "+", "Content-Length \"+\" is not a valid integer")]
    #[case::cl_double_sign(
        "Content-Length",
        "++1",
        "Content-Length \"++1\" is not a valid integer"
    )]
    #[case::cl_decimal(
        "Content-Length",
        "1.0",
        "Content-Length \"1.0\" is not a valid integer"
    )]
    #[case::cl_fs_not_stripped(
        "Content-Length",
        "\x1c3",
        "Content-Length \"\\u{1c}3\" is not a valid integer"
    )]
    #[case::cl_superscript(
        "Content-Length",
        "\u{b2}",
        "Content-Length \"²\" is not a valid integer"
    )]
    #[case::cl_negative("Content-Length", "-5", "Content-Length \"-5\" is negative")]
    #[case::cl_negative_zero("Content-Length", " -0", "Content-Length \" -0\" is negative")]
    #[case::cl_overflow(
        "Content-Length",
        "18446744073709551616",
        "Content-Length \"18446744073709551616\" is too large"
    )]
    #[case::cl_arabic_digits(
        "Content-Length",
        "\u{663}",
        "value of header Content-Length cannot be encoded as latin-1: \"٣\""
    )]
    fn header_errors(#[case] name: &str, #[case] value: &str, #[case] error: &str) {
        assert_eq!(validate_header(name, value), Err(error.to_owned()));
        let a = app("200 OK", &[("X-Fine", "1"), (name, value)], None);
        assert_eq!(build(GET11, &a), Err(error.to_owned()));
        // A bodiless status does not excuse a bad Content-Length either.
        let a = app("204 No Content", &[(name, value)], None);
        assert_eq!(build(GET11, &a), Err(error.to_owned()));
    }

    #[rstest]
    #[case::crlf(
        "200 OK\r\nSet-Cookie: x=1",
        "carriage return/line feed character present in status"
    )]
    #[case::lf("200 OK\n", "carriage return/line feed character present in status")]
    #[case::cr("200\r", "carriage return/line feed character present in status")]
    #[case::nul("200 O\0K", "NUL character present in status")]
    #[case::wide("200 \u{20ac}", "status \"200 €\" cannot be encoded as latin-1")]
    #[case::empty("", "status \"\" does not start with a three-digit status code")]
    #[case::reason_only("OK", "status \"OK\" does not start with a three-digit status code")]
    #[case::two_digits("20", "status \"20\" does not start with a three-digit status code")]
    #[case::four_digits(
        "2000 OK",
        "status \"2000 OK\" does not start with a three-digit status code"
    )]
    #[case::no_space(
        "200OK",
        "status \"200OK\" does not start with a three-digit status code"
    )]
    #[case::tab(
        "200\tOK",
        "status \"200\\tOK\" does not start with a three-digit status code"
    )]
    #[case::leading_space(
        " 200 OK",
        "status \" 200 OK\" does not start with a three-digit status code"
    )]
    #[case::below_100(
        "099 Low",
        "status \"099 Low\" does not start with a three-digit status code"
    )]
    #[case::sign(
        "+20 OK",
        "status \"+20 OK\" does not start with a three-digit status code"
    )]
    fn status_errors(#[case] status: &str, #[case] error: &str) {
        assert_eq!(validate_status(status), Err(error.to_owned()));
        assert_eq!(build(GET11, &app(status, &[], None)), Err(error.to_owned()));
    }

    #[rstest]
    #[case::ok("200 OK", 200)]
    #[case::bare("200", 200)]
    #[case::lowest("100 Continue", 100)]
    #[case::highest("999 Custom", 999)]
    #[case::empty_reason("404 ", 404)]
    fn status_codes(#[case] status: &str, #[case] code: u16) {
        assert_eq!(validate_status(status), Ok(()));
        let head = build(GET11, &app(status, &[], None)).expect("valid head");
        assert_eq!(head.status, code);
        assert!(head
            .bytes
            .starts_with(format!("HTTP/1.1 {status}\r\n").as_bytes()));
    }

    /// Exactly RFC 9110's tchar set makes a name: every ASCII byte checked.
    #[test]
    fn token_characters_are_rfc9110() {
        let tchars =
            "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        for c in (0u8..0x80).map(char::from) {
            let name = format!("X{c}");
            let verdict = validate_header(&name, "v");
            if tchars.contains(c) {
                assert_eq!(verdict, Ok(()), "{name:?}");
            } else {
                assert!(verdict.is_err(), "{name:?}");
            }
        }
    }

    #[test]
    fn conflicting_content_lengths_are_refused() {
        let a = app(
            "200 OK",
            &[("Content-Length", "5"), ("Content-Length", " 6")],
            None,
        );
        assert_eq!(
            build(GET11, &a),
            Err("conflicting Content-Length headers: 5 and \" 6\"".to_owned())
        );
    }

    #[test]
    fn first_bad_header_is_reported() {
        let a = app("200 OK", &[("Upgrade", "h2c"), ("X Y", "1")], None);
        assert_eq!(
            build(GET11, &a),
            Err("Upgrade is a \"hop-by-hop\" header; it cannot be used by a WSGI application (see PEP 3333)".to_owned())
        );
    }

    #[test]
    fn bad_status_is_reported_before_headers() {
        let a = app("OK", &[("Upgrade", "h2c")], None);
        assert_eq!(
            build(GET11, &a),
            Err("status \"OK\" does not start with a three-digit status code".to_owned())
        );
    }

    #[test]
    fn request_info_reads_the_head() {
        let head = RequestHead {
            method: "HEAD".into(),
            target: b"/".to_vec().into(),
            version: V10,
            headers: Default::default(),
            framing: crate::http::request::BodyFraming::None,
            expect_continue: false,
            close_requested: true,
            close_after: true,
        };
        assert_eq!(RequestInfo::of(&head), req(V10, true, true, true));
        let get = RequestHead {
            method: "GET".into(),
            close_after: false,
            ..head
        };
        assert_eq!(RequestInfo::of(&get), req(V10, false, true, false));
    }

    #[rstest]
    #[case(0, "0\r\n")]
    #[case(1, "1\r\n")]
    #[case(10, "A\r\n")]
    #[case(15, "F\r\n")]
    #[case(16, "10\r\n")]
    #[case(255, "FF\r\n")]
    #[case(4096, "1000\r\n")]
    #[case(0xABCDEF, "ABCDEF\r\n")]
    fn chunk_headers(#[case] len: usize, #[case] expected: &str) {
        let mut out = b"data".to_vec();
        chunk_header(len, &mut out);
        assert_eq!(latin1(&out), format!("data{expected}"));
    }

    #[test]
    fn chunk_header_of_usize_max() {
        let mut out = Vec::new();
        chunk_header(usize::MAX, &mut out);
        assert_eq!(latin1(&out), format!("{:X}\r\n", usize::MAX));
    }

    #[test]
    fn last_chunk_is_the_terminator() {
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
    }

    /// Every character up to U+0200 in every position: never a panic, and any
    /// accepted head is well-formed (no stray CR/LF/NUL, one blank line at the end).
    #[test]
    fn odd_characters_never_panic_or_leak() {
        for c in (0u32..0x200).filter_map(char::from_u32) {
            let s = c.to_string();
            let cases = [
                app(&format!("200 {c}"), &[], None),
                app("200 OK", &[(s.as_str(), "v")], None),
                app("200 OK", &[("X-V", s.as_str())], None),
                app("200 OK", &[("Content-Length", s.as_str())], None),
            ];
            for a in &cases {
                if let Ok(head) = build(GET11, a) {
                    let body = &head.bytes[..head.bytes.len() - 2];
                    assert!(!body.contains(&0));
                    assert_eq!(
                        body.windows(2).filter(|w| w == b"\r\n").count(),
                        body.iter().filter(|&&b| b == b'\n').count()
                    );
                    assert!(head.bytes.ends_with(b"\r\n\r\n"));
                }
            }
        }
    }

    /// Representative full heads, with the real date format.
    #[rstest]
    #[case::get11_hello("head_get11_hello", GET11, "200 OK",
        &[("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "13")], None)]
    #[case::get11_streaming_chunked("head_get11_streaming_chunked", GET11, "200 OK",
        &[("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")], None)]
    #[case::get10_keep_alive_known_length("head_get10_keep_alive_known_length", GET10_KA, "200 OK",
        &[("content-type", "application/json"), ("set-cookie", "a=1; Path=/"), ("Set-Cookie", "b=2")], Some(42))]
    #[case::get10_close_delimited("head_get10_close_delimited", GET10, "500 Internal Server Error", &[("Content-Type", "text/html")], None)]
    #[case::head11_redirect("head_head11_redirect", HEAD11, "302 Found",
        &[("Location", "/elsewhere"), ("Content-Length", "0"), ("Server", "app/1.0")], None)]
    #[case::head11_unknown_length("head_head11_unknown_length", HEAD11, "200 OK",
        &[("Content-Type", "text/csv"), ("Content-Disposition", "attachment")], None)]
    #[case::get11_close_not_modified("head_get11_close_not_modified", GET11_CLOSE, "304 Not Modified",
        &[("ETag", "\"abc\""), ("Content-Length", "1024"), ("Date", "Sun, 06 Nov 1994 08:49:37 GMT")], Some(1024))]
    #[case::get11_no_content("head_get11_no_content", GET11, "204 No Content", &[("Content-Length", "0"), ("X-Request-Id", "7")], None)]
    fn snapshot_heads(
        #[case] name: &str,
        #[case] r: RequestInfo,
        #[case] status: &str,
        #[case] headers: &[(&str, &str)],
        #[case] known: Option<u64>,
    ) {
        let a = app(status, headers, known);
        let head = build_head(&r, &a, Some("maitre"), SNAPSHOT_DATE).expect("valid head");
        let shown = format!(
            "framing: {:?}, keep_alive: {}\n{}",
            head.framing,
            head.keep_alive,
            visible(&head.bytes)
        );
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
            prepend_module_to_snapshot => true,
        }, {
            insta::assert_snapshot!(name, shown);
        });
    }
}
