//! Strict HTTP/1.x request-head parser.
//!
//! It accepts and rejects exactly what Waitress's `HTTPRequestParser` does
//! (3.0.2 plus the hardening of its `main` branch), with maitre's decisions Q4,
//! Q10, Q12 and Q15 applied. Errors are checked in Waitress's order: head size,
//! bare CR/LF in the request line, header-line layout (bare CR/LF, leading
//! fold), header grammar and duplicates, request line, target, then framing.
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use memchr::{memchr, memchr2, memmem};

use crate::http::errors::HttpError;
use crate::http::request::{BodyFraming, RequestHead, RequestHeaders, Version};

#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// `max_request_header_size`: a head this long or longer is a 431.
    pub max_header: usize,
    /// `max_request_body_size`: a Content-Length this large or larger is a 413.
    pub max_body: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No complete head yet; call again with more bytes.
    Incomplete,
    /// The buffer starts with a "head" made only of whitespace up to its
    /// `\r\n\r\n` (blank lines between requests): drop this many bytes, then
    /// call again. Whitespace before a real request line is not skipped this
    /// way: like Waitress, it counts towards `max_header`, so it stays in the
    /// head and is part of `consumed`.
    Skip(usize),
    /// A complete, valid head occupying `consumed` bytes (terminator included).
    Head { head: RequestHead, consumed: usize },
}

const TERMINATOR: &[u8] = b"\r\n\r\n";
const CRLF: &[u8] = b"\r\n";

pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<Parsed, HttpError> {
    parse_head_from(buf, limits, 0)
}

/// [`parse_head`] for a caller that already got [`Parsed::Incomplete`] for
/// `buf[..scanned]`: the terminator search resumes there instead of at 0, so a
/// head trickling in one byte at a time costs linear, not quadratic, time.
/// `scanned` must not exceed the length of a buffer (same bytes, same start)
/// that gave `Incomplete`: a larger value could skip the real terminator.
pub fn parse_head_from(
    buf: &[u8],
    limits: &HeadLimits,
    scanned: usize,
) -> Result<Parsed, HttpError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let from = scanned.min(buf.len()).saturating_sub(TERMINATOR.len() - 1);
    let tail = buf.get(from..).unwrap_or_default();
    let Some(at) = terminator_finder().find(tail) else {
        // Waitress counts every byte received while the head is incomplete.
        if buf.len() >= limits.max_header {
            return Err(HttpError::header_too_large(limits.max_header));
        }
        return Ok(Parsed::Incomplete);
    };
    let end = from + at + TERMINATOR.len();
    // Once complete, the count is the head length, terminator and any
    // leading whitespace included.
    if end >= limits.max_header {
        return Err(HttpError::header_too_large(limits.max_header));
    }
    let head = buf.get(..end).unwrap_or_default();
    match head.iter().position(|&b| !is_py_space(b)) {
        None => Ok(Parsed::Skip(end)),
        Some(start) => {
            let block = head.get(start..).unwrap_or_default();
            let head = parse_block(block, limits)?;
            Ok(Parsed::Head {
                head,
                consumed: end,
            })
        }
    }
}

/// Building a searcher costs about as much as running it on a small head,
/// so it is built once.
fn terminator_finder() -> &'static memmem::Finder<'static> {
    static FINDER: OnceLock<memmem::Finder<'static>> = OnceLock::new();
    FINDER.get_or_init(|| memmem::Finder::new(TERMINATOR))
}

/// The first CRLF: the first LF that follows a CR (almost always the first LF).
fn find_crlf(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let lf = from + memchr(b'\n', s.get(from..)?)?;
        if lf > 0 && s.get(lf - 1) == Some(&b'\r') {
            return Some(lf - 1);
        }
        from = lf + 1;
    }
}

/// Python's `bytes.isspace()` set, used by Waitress's `lstrip()`/`rstrip()`.
fn is_py_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// `block` starts at the request line and ends with `\r\n\r\n`.
fn parse_block(block: &[u8], limits: &HeadLimits) -> Result<RequestHead, HttpError> {
    let line_end = find_crlf(block).unwrap_or(block.len());
    let first_line = rstrip(block.get(..line_end).unwrap_or_default());
    if memchr2(b'\r', b'\n', first_line).is_some() {
        return Err(HttpError::bad_request(
            "Bare CR or LF found in HTTP message",
            Version::Http10,
        ));
    }
    let fields = block.get(line_end + CRLF.len()..).unwrap_or_default();
    let headers = parse_fields(fields)?;
    let line = parse_request_line(first_line)?;
    build_head(line, headers, limits)
}

fn rstrip(s: &[u8]) -> &[u8] {
    let keep = s
        .iter()
        .rposition(|&b| !is_py_space(b))
        .map_or(0, |i| i + 1);
    s.get(..keep).unwrap_or_default()
}

/// The parts of a valid request line.
struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    is_http11: bool,
}

/// `token SP target [SP "HTTP/" DIGIT "." DIGIT]`, matched whole, where the
/// target is any run of non-SP bytes (Waitress's `first_line_re`).
fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, HttpError> {
    let invalid = || HttpError::bad_request("Start line is invalid", Version::Http10);
    let sp = memchr(b' ', line).ok_or_else(invalid)?;
    let method = line.get(..sp).unwrap_or_default();
    let rest = line.get(sp + 1..).unwrap_or_default();
    let (target, version) = match memchr(b' ', rest) {
        None => (rest, None),
        Some(sp2) => (rest.get(..sp2).unwrap_or_default(), rest.get(sp2 + 1..)),
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) || target.is_empty() {
        return Err(invalid());
    }
    let is_http11 = match version {
        None => false,
        Some(v) => match v {
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                (*major, *minor) == (b'1', b'1')
            }
            _ => return Err(invalid()),
        },
    };
    if method.iter().any(u8::is_ascii_lowercase) {
        return Err(HttpError::bad_request(
            format!("Malformed HTTP method \"{}\"", latin1(method)),
            Version::Http10,
        ));
    }
    Ok(RequestLine {
        method,
        target,
        is_http11,
    })
}

/// RFC 9110 tchar, as one lookup: checked on every byte of every name.
const TCHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

pub(crate) fn is_tchar(b: u8) -> bool {
    TCHARS[usize::from(b)]
}

/// Whether every byte may follow the colon of a header line: VCHAR,
/// obs-text, SP, HTAB. Written without an early exit so it vectorises: this
/// loop sees most bytes of every head.
fn all_field_bytes(s: &[u8]) -> bool {
    !s.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20 && b != b'\t') | (b == 0x7f))
    })
}

/// `Content-Type` -> `CONTENT_TYPE` (names are tokens, so ASCII), handed to
/// `f`; made on the stack unless the name is long.
fn with_wsgi_name<R>(name: &[u8], f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 64];
    let mut long = Vec::new();
    let key = match buf.get_mut(..name.len()) {
        Some(key) => {
            key.copy_from_slice(name);
            key
        }
        None => {
            long.extend_from_slice(name);
            &mut long[..]
        }
    };
    for b in key.iter_mut() {
        *b = if *b == b'-' {
            b'_'
        } else {
            b.to_ascii_uppercase()
        };
    }
    f(std::str::from_utf8(key).unwrap_or(""))
}

/// A token as a String (tokens are ASCII; latin-1 is the never-taken fallback).
fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| latin1(e.as_bytes()))
}

/// The method as text: a static string for the common ones.
fn method_name(method: &[u8]) -> Cow<'static, str> {
    const COMMON: [&str; 7] = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"];
    match COMMON.iter().find(|m| m.as_bytes() == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(ascii_string(method.to_vec())),
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// Bytes as latin-1 text, as Waitress decodes them for error details.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Splits the header block into lines and builds the header table.
///
/// Waitress first checks every line's layout (bare CR/LF, a fold on the first
/// line) and only then each unfolded line's grammar, so a layout error on a
/// late line beats a grammar error on an early one. This single pass keeps
/// that order by holding a grammar error back until all lines are seen.
fn parse_fields(fields: &[u8]) -> Result<HeaderTable, HttpError> {
    // Every header line ends in LF: a cheap, exact upper bound.
    let lines = memchr::memchr_iter(b'\n', fields).count();
    let mut table = HeaderTable::with_capacity(lines, fields.len());
    // The first grammar error; later lines are then only checked for layout.
    let mut held: Option<HttpError> = None;
    // The unfolded line being collected: a byte range of `fields` whose inner
    // CRLFs are all fold points.
    let mut current: Option<(usize, usize)> = None;
    let mut pos = 0;
    while pos < fields.len() {
        let (start, end) = next_line(fields, pos)?;
        pos = end + CRLF.len();
        let line = fields.get(start..end).unwrap_or_default();
        match line.first() {
            None => continue,
            Some(&b) if is_ows(b) => match current.as_mut() {
                Some(cur) => cur.1 = end,
                None => {
                    return Err(HttpError::bad_request(
                        format!("Malformed header line \"{}\"", latin1(line)),
                        Version::Http10,
                    ))
                }
            },
            Some(_) => {
                if let Some(done) = current.replace((start, end)) {
                    if held.is_none() {
                        held = table
                            .add_line(fields.get(done.0..done.1).unwrap_or_default())
                            .err();
                    }
                }
            }
        }
    }
    if let (Some(done), None) = (current, &held) {
        held = table
            .add_line(fields.get(done.0..done.1).unwrap_or_default())
            .err();
    }
    held.map_or(Ok(table), Err)
}

/// The line starting at `pos`: `(start, end)` with `fields[end..]` starting
/// with CRLF (or `end == fields.len()`). A bare CR or LF inside is an error
/// quoting the whole line, as far as the next CRLF.
fn next_line(fields: &[u8], pos: usize) -> Result<(usize, usize), HttpError> {
    let rest = fields.get(pos..).unwrap_or_default();
    let Some(i) = memchr2(b'\r', b'\n', rest) else {
        return Ok((pos, fields.len()));
    };
    if rest.get(i..i + 2) == Some(CRLF) {
        return Ok((pos, pos + i));
    }
    let end = find_crlf(rest).unwrap_or(rest.len());
    Err(HttpError::bad_request(
        format!(
            "Bare CR or LF found in header line \"{}\"",
            latin1(rest.get(..end).unwrap_or_default())
        ),
        Version::Http10,
    ))
}

/// Headers Waitress's `main` refuses to see twice (RFC 9112 section 3.2 and friends).
const SINGLETONS: [&str; 3] = ["HOST", "CONTENT_LENGTH", "CONTENT_TYPE"];

/// Past this many distinct names the table keeps a sorted index, so a head
/// of thousands of tiny headers does not cost quadratic time.
const INDEX_FROM: usize = 16;

/// Headers in WSGI form, in order of first appearance, repeats joined.
struct HeaderTable {
    headers: RequestHeaders,
    index: std::collections::BTreeMap<String, usize>,
}

impl HeaderTable {
    fn with_capacity(lines: usize, bytes: usize) -> Self {
        HeaderTable {
            headers: RequestHeaders::with_capacity(lines.min(64), bytes),
            index: std::collections::BTreeMap::new(),
        }
    }

    /// Validates one unfolded line (`name ":" OWS value OWS`, where fold
    /// CRLFs may appear inside the value) and records it.
    fn add_line(&mut self, line: &[u8]) -> Result<(), HttpError> {
        let invalid = || HttpError::bad_request("Invalid header", Version::Http10);
        let colon = memchr(b':', line).ok_or_else(invalid)?;
        let name = line.get(..colon).unwrap_or_default();
        let rest = line.get(colon + 1..).unwrap_or_default();
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(invalid());
        }
        let unfolded: Vec<u8>;
        let value = if memchr(b'\r', rest).is_none() {
            rest
        } else {
            // Folded: the CR and LF left here are fold CRLFs (bare ones were
            // refused earlier), removed to join the pieces.
            unfolded = rest
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            &unfolded
        };
        if !all_field_bytes(value) {
            return Err(invalid());
        }
        if name.contains(&b'_') {
            // Dropped so that `X-Auth_User` cannot pose as `X-Auth-User`.
            return Ok(());
        }
        let value = trim_ows(value);
        with_wsgi_name(name, |key| match self.find(key) {
            Some(_) if SINGLETONS.contains(&key) => Err(HttpError::bad_request(
                format!("Duplicate header: {}", latin1(name)),
                Version::Http10,
            )),
            Some(i) => {
                self.headers.append(i, value);
                Ok(())
            }
            None => {
                self.push(key, value);
                Ok(())
            }
        })
    }

    fn find(&self, key: &str) -> Option<usize> {
        if self.headers.len() > INDEX_FROM {
            self.index.get(key).copied()
        } else {
            self.headers.position(key)
        }
    }

    fn push(&mut self, key: &str, value: &[u8]) {
        self.headers.push(key, value);
        let len = self.headers.len();
        if len == INDEX_FROM + 1 {
            for i in 0..len {
                self.index.insert(self.headers.name(i).to_owned(), i);
            }
        } else if len > INDEX_FROM {
            self.index.insert(key.to_owned(), len - 1);
        }
    }
}

/// The checks Waitress makes once the request line is known: target, framing,
/// Content-Length; plus the connection flags.
fn build_head(
    line: RequestLine<'_>,
    table: HeaderTable,
    limits: &HeadLimits,
) -> Result<RequestHead, HttpError> {
    let version = if line.is_http11 {
        Version::Http11
    } else {
        Version::Http10
    };
    // Python's urlsplit refuses non-ASCII bytes; Waitress splits `//...` targets by hand.
    if !line.target.is_ascii() && !line.target.starts_with(b"//") {
        return Err(HttpError::bad_request("Bad URI", version));
    }
    let mut headers = table.headers;
    let mut chunked = false;
    let mut close_after = false;
    if line.is_http11 {
        if let Some(te) = headers.remove("TRANSFER_ENCODING") {
            chunked = transfer_coding_is_chunked(&te, version)?;
        }
        if chunked && headers.remove("CONTENT_LENGTH").is_some() {
            // Q15: both framings given; trust chunked, then close (RFC 9112 section 6.3).
            close_after = true;
        }
    } else if headers.get("TRANSFER_ENCODING").is_some() {
        // Q10: HTTP/1.0 has no transfer codings; a TE there is faulty framing.
        return Err(HttpError::bad_request(
            "Transfer-Encoding is not allowed in HTTP/1.0 requests",
            version,
        ));
    }
    let framing = if chunked {
        BodyFraming::Chunked
    } else {
        content_length_framing(headers.get("CONTENT_LENGTH"), version, limits.max_body)?
    };
    let expect_continue = line.is_http11
        && headers
            .get("EXPECT")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let connection = headers.get("CONNECTION").unwrap_or_default();
    let close_requested = if line.is_http11 {
        has_token(connection, b"close")
    } else {
        !has_token(connection, b"keep-alive")
    };
    Ok(RequestHead {
        method: method_name(line.method),
        target: Arc::from(line.target),
        version,
        headers,
        framing,
        expect_continue,
        close_requested,
        close_after,
    })
}

/// Whether the coding list ends in `chunked` (HTTP/1.1 only). Like Waitress,
/// only items empty *before* SP/HTAB stripping are skipped, so `a, ,b` holds
/// an empty coding, which is unsupported.
fn transfer_coding_is_chunked(te: &[u8], version: Version) -> Result<bool, HttpError> {
    let mut chunked_count = 0usize;
    let mut last_chunked = false;
    for item in te.split(|&b| b == b',').filter(|item| !item.is_empty()) {
        if !trim_ows(item).eq_ignore_ascii_case(b"chunked") {
            return Err(HttpError::new(
                501,
                "Transfer-Encoding requested is not supported.",
                version,
            ));
        }
        chunked_count += 1;
        last_chunked = true;
    }
    if chunked_count > 1 {
        return Err(HttpError::new(
            501,
            "Transfer-Encoding is invalid. Multiple chunked encodings requested.",
            version,
        ));
    }
    Ok(last_chunked)
}

/// `^[0-9]+$` (absent means 0); 0 means no body; the limit is `>=`.
fn content_length_framing(
    value: Option<&[u8]>,
    version: Version,
    max_body: u64,
) -> Result<BodyFraming, HttpError> {
    let value = value.unwrap_or(b"0");
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::bad_request("Content-Length is invalid", version));
    }
    // Saturating: a length past u64 is past any limit too.
    let length = value.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    if length == 0 {
        return Ok(BodyFraming::None);
    }
    if length >= max_body {
        return Err(HttpError::body_too_large(max_body, version));
    }
    Ok(BodyFraming::Length(length))
}

/// Q12: `Connection` as a comma-separated, case-insensitive token list.
fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|item| trim_ows(item).eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use Version::{Http10 as V10, Http11 as V11};

    const LIMITS: HeadLimits = HeadLimits {
        max_header: 1000,
        max_body: 100,
    };

    fn parse(input: &[u8]) -> Result<Parsed, HttpError> {
        parse_head(input, &LIMITS)
    }

    /// The head of a request that must parse, with `consumed` checked to be the
    /// whole input.
    fn head(input: &[u8]) -> RequestHead {
        match parse(input) {
            Ok(Parsed::Head { head, consumed }) => {
                assert_eq!(consumed, input.len(), "consumed");
                head
            }
            other => panic!("expected a head, got {other:?}"),
        }
    }

    fn req(lines: &str) -> Vec<u8> {
        format!("{lines}\r\n\r\n").into_bytes()
    }

    fn hdrs(pairs: &[(&str, &[u8])]) -> RequestHeaders {
        pairs.iter().copied().collect()
    }

    #[rstest]
    // Layout of header lines (2.3).
    #[case::bare_cr_in_header(
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"X: a\rb\"",
        V10
    )]
    #[case::bare_lf_in_header(
        b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"X: a\nb\"",
        V10
    )]
    #[case::bare_lf_starts_line(
        b"GET / HTTP/1.1\r\nHost: x\r\n\nY: z\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"\nY: z\"",
        V10
    )]
    #[case::cr_before_crlf(
        b"GET / HTTP/1.1\r\nX: y\r\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"X: y\r\"",
        V10
    )]
    #[case::bare_lf_latin1_quoted(
        b"GET / HTTP/1.1\r\nX: \xe9\nb\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"X: \u{e9}\nb\"",
        V10
    )]
    #[case::first_line_folded(
        b"GET / HTTP/1.1\r\n Host: 0\r\n\r\n",
        400,
        "Malformed header line \" Host: 0\"",
        V10
    )]
    #[case::first_line_folded_tab(
        b"GET / HTTP/1.1\r\n\tHost: 0\r\nA: b\r\n\r\n",
        400,
        "Malformed header line \"\tHost: 0\"",
        V10
    )]
    #[case::layout_beats_grammar(
        b"GET / HTTP/1.1\r\nBad Header\r\nX: a\rb\r\n\r\n",
        400,
        "Bare CR or LF found in header line \"X: a\rb\"",
        V10
    )]
    // Header grammar (2.3).
    #[case::space_before_colon(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "Invalid header", V10)]
    #[case::missing_colon(b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400, "Invalid header", V10)]
    #[case::empty_name(b"GET / HTTP/1.1\r\n: x\r\n\r\n", 400, "Invalid header", V10)]
    #[case::nul_in_value(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400, "Invalid header", V10)]
    #[case::vt_in_value(
        b"GET / HTTP/1.1\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
        400,
        "Invalid header",
        V10
    )]
    #[case::del_in_value(b"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", 400, "Invalid header", V10)]
    #[case::bad_name_char(b"GET / HTTP/1.1\r\nX(y): z\r\n\r\n", 400, "Invalid header", V10)]
    #[case::tab_in_name(b"GET / HTTP/1.1\r\nX\ty: z\r\n\r\n", 400, "Invalid header", V10)]
    #[case::control_in_fold(
        b"GET / HTTP/1.1\r\nX: a\r\n b\x01\r\n\r\n",
        400,
        "Invalid header",
        V10
    )]
    #[case::colon_only_after_fold(
        b"GET / HTTP/1.1\r\nX\r\n :y\r\n\r\n",
        400,
        "Invalid header",
        V10
    )]
    #[case::underscore_name_still_validated(
        b"GET / HTTP/1.1\r\nX_Y: a\x00\r\n\r\n",
        400,
        "Invalid header",
        V10
    )]
    #[case::header_beats_request_line(
        b"get / HTTP/1.1\r\nBad Header\r\n\r\n",
        400,
        "Invalid header",
        V10
    )]
    #[case::grammar_error_survives_later_good_lines(
        b"GET / HTTP/1.1\r\nBad\r\nY: b\r\nZ: c\r\n\r\n",
        400,
        "Invalid header",
        V10
    )]
    #[case::grammar_error_beats_later_duplicate(
        b"GET / HTTP/1.1\r\nBad\r\nHost: a\r\nHost: b\r\nZ: c\r\n\r\n",
        400,
        "Invalid header",
        V10
    )]
    #[case::first_grammar_error_wins(
        b"GET / HTTP/1.1\r\nHost: a\r\nBad\r\nHost: b\r\n\r\n",
        400,
        "Invalid header",
        V10
    )]
    // Duplicates refused on main (0.2), as sent, with a 1.0 status line.
    #[case::duplicate_host(
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        400,
        "Duplicate header: host",
        V10
    )]
    #[case::duplicate_cl(
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        400,
        "Duplicate header: Content-Length",
        V10
    )]
    #[case::duplicate_ct(
        b"POST / HTTP/1.1\r\nContent-Type: a\r\nCONTENT-TYPE: b\r\n\r\n",
        400,
        "Duplicate header: CONTENT-TYPE",
        V10
    )]
    #[case::duplicate_before_later_grammar_error(
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nBad\r\n\r\n",
        400,
        "Duplicate header: Host",
        V10
    )]
    // Request line (2.2).
    #[case::bare_cr_in_request_line(
        b"GET /\rx HTTP/1.1\r\n\r\n",
        400,
        "Bare CR or LF found in HTTP message",
        V10
    )]
    #[case::bare_lf_in_request_line(
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        400,
        "Bare CR or LF found in HTTP message",
        V10
    )]
    #[case::request_line_cr_beats_header_error(
        b"GET /\rx HTTP/1.1\r\nBad\r\n\r\n",
        400,
        "Bare CR or LF found in HTTP message",
        V10
    )]
    #[case::two_spaces(b"GET  / HTTP/1.1\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::two_spaces_before_version(
        b"GET /  HTTP/1.1\r\n\r\n",
        400,
        "Start line is invalid",
        V10
    )]
    #[case::version_two_digits(b"GET / HTTP/1.10\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::foo_protocol(b"GET / FOO/1.1\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::dotted_version(b"GET / HTTP/.1.\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::lowercase_protocol(b"GET / http/1.1\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::method_only(b"GET\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::extra_word(b"GET / HTTP/1.1 x\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::space_in_target(b"GET /a b HTTP/1.1\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::method_not_token(b"G(T / HTTP/1.1\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::tab_separator(b"GET\t/ HTTP/1.1\r\n\r\n", 400, "Start line is invalid", V10)]
    #[case::lowercase_method(b"get / HTTP/1.1\r\n\r\n", 400, "Malformed HTTP method \"get\"", V10)]
    #[case::mixed_case_method(b"Get /x\r\n\r\n", 400, "Malformed HTTP method \"Get\"", V10)]
    #[case::lowercase_and_invalid_line(b"get  /\r\n\r\n", 400, "Start line is invalid", V10)]
    // Target (request's version from here on).
    #[case::non_ascii_target_11(b"GET /caf\xe9 HTTP/1.1\r\n\r\n", 400, "Bad URI", V11)]
    #[case::non_ascii_target_10(b"GET /caf\xe9 HTTP/1.0\r\n\r\n", 400, "Bad URI", V10)]
    #[case::non_ascii_absolute(b"GET http://h/\xff HTTP/1.1\r\n\r\n", 400, "Bad URI", V11)]
    #[case::bad_uri_before_te(
        b"GET /\xff HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
        "Bad URI",
        V11
    )]
    // Transfer-Encoding (2.4, 0.2, Q10).
    #[case::te_gzip_chunked(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        "Transfer-Encoding requested is not supported.",
        V11
    )]
    #[case::te_identity(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        501,
        "Transfer-Encoding requested is not supported.",
        V11
    )]
    #[case::te_chunked_gzip(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        501,
        "Transfer-Encoding requested is not supported.",
        V11
    )]
    #[case::te_nel_not_stripped(
        b"POST / HTTP/1.1\r\nTransfer-Encoding:\x85chunked\r\n\r\n",
        501,
        "Transfer-Encoding requested is not supported.",
        V11
    )]
    #[case::te_blank_item(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, ,chunked\r\n\r\n",
        501,
        "Transfer-Encoding requested is not supported.",
        V11
    )]
    #[case::te_split_over_headers(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        501,
        "Transfer-Encoding requested is not supported.",
        V11
    )]
    #[case::te_split_over_fold(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip,\r\n chunked\r\n\r\n",
        501,
        "Transfer-Encoding requested is not supported.",
        V11
    )]
    #[case::te_chunked_twice(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        501,
        "Transfer-Encoding is invalid. Multiple chunked encodings requested.",
        V11
    )]
    #[case::te_chunked_two_headers(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ntransfer-encoding: CHUNKED\r\n\r\n",
        501,
        "Transfer-Encoding is invalid. Multiple chunked encodings requested.",
        V11
    )]
    #[case::te_chunked_empty_between(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked,,chunked\r\n\r\n",
        501,
        "Transfer-Encoding is invalid. Multiple chunked encodings requested.",
        V11
    )]
    #[case::te_beats_bad_cl(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: abc\r\n\r\n",
        501,
        "Transfer-Encoding requested is not supported.",
        V11
    )]
    #[case::te_on_http10(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "Transfer-Encoding is not allowed in HTTP/1.0 requests",
        V10
    )]
    #[case::te_on_http10_with_cl(
        b"POST / HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "Transfer-Encoding is not allowed in HTTP/1.0 requests",
        V10
    )]
    #[case::te_without_version(
        b"POST /\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "Transfer-Encoding is not allowed in HTTP/1.0 requests",
        V10
    )]
    #[case::te_on_http20(
        b"POST / HTTP/2.0\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
        "Transfer-Encoding is not allowed in HTTP/1.0 requests",
        V10
    )]
    // Content-Length (2.4).
    #[case::cl_plus(
        b"POST / HTTP/1.1\r\nContent-Length: +10\r\n\r\n",
        400,
        "Content-Length is invalid",
        V11
    )]
    #[case::cl_minus(
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        400,
        "Content-Length is invalid",
        V11
    )]
    #[case::cl_inner_space(
        b"POST / HTTP/1.1\r\nContent-Length: 1 0\r\n\r\n",
        400,
        "Content-Length is invalid",
        V11
    )]
    #[case::cl_underscore(
        b"POST / HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n",
        400,
        "Content-Length is invalid",
        V11
    )]
    #[case::cl_list(
        b"POST / HTTP/1.0\r\nContent-Length: 1, 1\r\n\r\n",
        400,
        "Content-Length is invalid",
        V10
    )]
    #[case::cl_hex(
        b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
        400,
        "Content-Length is invalid",
        V11
    )]
    #[case::cl_empty(
        b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        400,
        "Content-Length is invalid",
        V11
    )]
    #[case::cl_at_limit(
        b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n",
        413,
        "exceeds max_body of 100",
        V11
    )]
    #[case::cl_over_limit_10(
        b"POST / HTTP/1.0\r\nContent-Length: 101\r\n\r\n",
        413,
        "exceeds max_body of 100",
        V10
    )]
    #[case::cl_past_u64(
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
        413,
        "exceeds max_body of 100",
        V11
    )]
    fn head_errors(
        #[case] input: &[u8],
        #[case] status: u16,
        #[case] detail: &str,
        #[case] version: Version,
    ) {
        assert_eq!(parse(input), Err(HttpError::new(status, detail, version)));
    }

    #[rstest]
    #[case::obs_fold_keeps_whitespace(b"X: a\r\n  b", &[("X", &b"a  b"[..])])]
    #[case::obs_fold_after_empty_value(b"X:\r\n b", &[("X", &b"b"[..])])]
    #[case::obs_fold_twice(b"X: a\r\n\tb\r\n c", &[("X", &b"a\tb c"[..])])]
    #[case::obs_fold_whitespace_only(b"X: a\r\n \r\nY: b", &[("X", &b"a"[..]), ("Y", &b"b"[..])])]
    #[case::underscore_dropped(b"X-Auth_User: evil\r\nX-Auth-User: good", &[("X_AUTH_USER", &b"good"[..])])]
    #[case::underscore_dropped_with_fold(b"A_B: x\r\n y\r\nC: d", &[("C", &b"d"[..])])]
    #[case::duplicates_joined(b"X-Dup: 1\r\nA: z\r\nx-dup: 2", &[("X_DUP", &b"1, 2"[..]), ("A", &b"z"[..])])]
    #[case::duplicate_empty_joined(b"X: \r\nX: b", &[("X", &b", b"[..])])]
    #[case::only_sp_htab_stripped(b"X: \xa0v\x85", &[("X", &b"\xa0v\x85"[..])])]
    #[case::sp_htab_stripped(b"X: \t a  b \t", &[("X", &b"a  b"[..])])]
    #[case::no_space_after_colon(b"X:v", &[("X", &b"v"[..])])]
    #[case::empty_value(b"X:", &[("X", &b""[..])])]
    #[case::blank_value(b"X:   ", &[("X", &b""[..])])]
    #[case::latin1_kept(b"X: caf\xe9", &[("X", &b"caf\xe9"[..])])]
    #[case::colon_in_value(b"Host: h:80", &[("HOST", &b"h:80"[..])])]
    #[case::names_normalised(b"content-type: t\r\nX-a-B: 1", &[("CONTENT_TYPE", &b"t"[..]), ("X_A_B", &b"1"[..])])]
    #[case::token_punctuation_name(b"X!#$%&'*+.^`|~: v", &[("X!#$%&'*+.^`|~", &b"v"[..])])]
    #[case::te_removed_on_11(b"Transfer-Encoding: chunked\r\nA: b", &[("A", &b"b"[..])])]
    fn header_fields(#[case] fields: &[u8], #[case] want: &[(&str, &[u8])]) {
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        input.extend_from_slice(fields);
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head(&input).headers, hdrs(want));
    }

    #[test]
    fn many_headers_use_the_index_and_keep_order() {
        let mut lines = String::from("GET / HTTP/1.1");
        for i in 0..40 {
            lines.push_str(&format!("\r\nH{i}: {i}"));
        }
        lines.push_str("\r\nh3: again\r\nh39: last\r\nHost: x");
        let got = head(&req(&lines)).headers;
        assert_eq!(got.len(), 41);
        let got: Vec<_> = got.iter().collect();
        assert_eq!(got[3], ("H3", &b"3, again"[..]));
        assert_eq!(got[39], ("H39", &b"39, last"[..]));
        assert_eq!(got[40], ("HOST", &b"x"[..]));
        let dup = format!("{lines}\r\nhost: y");
        assert_eq!(
            parse(&req(&dup)),
            Err(HttpError::new(400, "Duplicate header: host", V10))
        );
    }

    #[rstest]
    #[case::http11(b"GET / HTTP/1.1", "GET", b"/", V11)]
    #[case::http10(b"GET / HTTP/1.0", "GET", b"/", V10)]
    #[case::no_version(b"GET /path", "GET", b"/path", V10)]
    #[case::http20(b"GET / HTTP/2.0", "GET", b"/", V10)]
    #[case::http09_style_version(b"GET / HTTP/0.9", "GET", b"/", V10)]
    #[case::any_upper_token_method(b"FOO /x HTTP/1.1", "FOO", b"/x", V11)]
    #[case::method_with_underscore(b"M_X-1 / HTTP/1.1", "M_X-1", b"/", V11)]
    #[case::trailing_spaces(b"GET / HTTP/1.1   ", "GET", b"/", V11)]
    #[case::trailing_vt_ff(b"GET / HTTP/1.1\x0b\x0c\t", "GET", b"/", V11)]
    #[case::trailing_cr(b"GET / HTTP/1.1\r", "GET", b"/", V11)]
    #[case::absolute_form(b"GET http://h:81/x?q#f HTTP/1.1", "GET", b"http://h:81/x?q#f", V11)]
    #[case::asterisk(b"OPTIONS * HTTP/1.1", "OPTIONS", b"*", V11)]
    #[case::nul_and_del_in_target(b"GET /a\x00b\x7f HTTP/1.1", "GET", b"/a\x00b\x7f", V11)]
    #[case::tab_in_target(b"GET /a\tb HTTP/1.1", "GET", b"/a\tb", V11)]
    #[case::non_ascii_after_double_slash(b"GET //caf\xe9 HTTP/1.1", "GET", b"//caf\xe9", V11)]
    #[case::leading_blank_lines(b"\r\n \t\x0b\x0c\nGET / HTTP/1.1", "GET", b"/", V11)]
    fn request_lines(
        #[case] line: &[u8],
        #[case] method: &str,
        #[case] target: &[u8],
        #[case] version: Version,
    ) {
        let mut input = line.to_vec();
        input.extend_from_slice(b"\r\nHost: h\r\n\r\n");
        let got = head(&input);
        assert_eq!(
            (&*got.method, &*got.target, got.version),
            (method, target, version)
        );
    }

    #[rstest]
    #[case::no_length(b"POST / HTTP/1.1", BodyFraming::None, false, None)]
    #[case::zero(b"POST / HTTP/1.1\r\nContent-Length: 0", BodyFraming::None, false, Some(&b"0"[..]))]
    #[case::zeros(b"POST / HTTP/1.1\r\nContent-Length: 000", BodyFraming::None, false, Some(&b"000"[..]))]
    #[case::length(b"POST / HTTP/1.1\r\nContent-Length: 5", BodyFraming::Length(5), false, Some(&b"5"[..]))]
    #[case::leading_zeros(b"POST / HTTP/1.0\r\nContent-Length:  007 ", BodyFraming::Length(7), false, Some(&b"007"[..]))]
    #[case::just_under_limit(b"POST / HTTP/1.1\r\nContent-Length: 99", BodyFraming::Length(99), false, Some(&b"99"[..]))]
    #[case::no_version_length(b"POST /\r\nContent-Length: 3", BodyFraming::Length(3), false, Some(&b"3"[..]))]
    #[case::chunked(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked",
        BodyFraming::Chunked,
        false,
        None
    )]
    #[case::chunked_any_case(
        b"POST / HTTP/1.1\r\nTransfer-Encoding:  ChUnKeD\t",
        BodyFraming::Chunked,
        false,
        None
    )]
    #[case::chunked_empty_items(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked,",
        BodyFraming::Chunked,
        false,
        None
    )]
    #[case::chunked_folded(
        b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked",
        BodyFraming::Chunked,
        false,
        None
    )]
    #[case::empty_te_uses_length(b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\nContent-Length: 4", BodyFraming::Length(4), false, Some(&b"4"[..]))]
    #[case::cl_and_chunked(
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",
        BodyFraming::Chunked,
        true,
        None
    )]
    #[case::bad_cl_and_chunked(
        b"POST / HTTP/1.1\r\nContent-Length: abc\r\nTransfer-Encoding: chunked",
        BodyFraming::Chunked,
        true,
        None
    )]
    fn body_framing(
        #[case] lines: &[u8],
        #[case] framing: BodyFraming,
        #[case] close_after: bool,
        #[case] content_length: Option<&[u8]>,
    ) {
        let mut input = lines.to_vec();
        input.extend_from_slice(b"\r\n\r\n");
        let got = head(&input);
        assert_eq!(got.framing, framing);
        assert_eq!(got.close_after, close_after);
        assert_eq!(got.header("CONTENT_LENGTH"), content_length);
        assert_eq!(got.header("TRANSFER_ENCODING"), None);
    }

    #[rstest]
    #[case::http11_default("GET / HTTP/1.1", false)]
    #[case::http11_close("GET / HTTP/1.1\r\nConnection: close", true)]
    #[case::http11_close_any_case("GET / HTTP/1.1\r\nConnection: CLOSE", true)]
    #[case::http11_close_in_list("GET / HTTP/1.1\r\nConnection: keep-alive, close", true)]
    #[case::http11_close_no_space("GET / HTTP/1.1\r\nConnection: upgrade,close", true)]
    #[case::http11_close_in_second_header(
        "GET / HTTP/1.1\r\nConnection: te\r\nConnection: close",
        true
    )]
    #[case::http11_closed_is_not_close("GET / HTTP/1.1\r\nConnection: closed", false)]
    #[case::http11_keep_alive("GET / HTTP/1.1\r\nConnection: keep-alive", false)]
    #[case::http10_default("GET / HTTP/1.0", true)]
    #[case::http10_keep_alive("GET / HTTP/1.0\r\nConnection: Keep-Alive", false)]
    #[case::http10_keep_alive_in_list("GET / HTTP/1.0\r\nConnection: foo ,\tkeep-alive", false)]
    #[case::http10_close("GET / HTTP/1.0\r\nConnection: close", true)]
    #[case::http10_keep_alive_prefix("GET / HTTP/1.0\r\nConnection: keep-alive-x", true)]
    #[case::no_version_keep_alive("GET /\r\nConnection: keep-alive", false)]
    #[case::http20_default("GET / HTTP/2.0", true)]
    fn close_requested(#[case] lines: &str, #[case] want: bool) {
        assert_eq!(head(&req(lines)).close_requested, want);
    }

    #[rstest]
    #[case::exact("POST / HTTP/1.1\r\nExpect: 100-continue", true)]
    #[case::any_case("POST / HTTP/1.1\r\nExpect: 100-Continue", true)]
    #[case::no_header("POST / HTTP/1.1", false)]
    #[case::http10("POST / HTTP/1.0\r\nExpect: 100-continue", false)]
    #[case::no_version("POST /\r\nExpect: 100-continue", false)]
    #[case::list_is_not_equal("POST / HTTP/1.1\r\nExpect: 100-continue, x", false)]
    #[case::other("POST / HTTP/1.1\r\nExpect: 200-ok", false)]
    fn expect_continue(#[case] lines: &str, #[case] want: bool) {
        let got = head(&req(lines));
        assert_eq!(got.expect_continue, want);
        // Expect stays visible to the app either way.
        assert_eq!(got.header("EXPECT").is_some(), lines.contains("Expect"));
    }

    const GET18: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    #[rstest]
    #[case::incomplete_under_limit(b"GET / HTTP/1.1\r\n", 20, Ok(Parsed::Incomplete))]
    #[case::incomplete_at_limit(b"GET / HTTP/1.1\r\nX: y", 20, Err(431))]
    #[case::complete_under_limit(GET18, 19, Ok(Parsed::Head { head: plain_get(), consumed: 18 }))]
    #[case::complete_at_limit(GET18, 18, Err(431))]
    #[case::leading_crlf_counts(b"\r\nGET / HTTP/1.1\r\n\r\n", 20, Err(431))]
    #[case::leading_crlf_under(b"\r\nGET / HTTP/1.1\r\n\r\n", 21, Ok(Parsed::Head { head: plain_get(), consumed: 20 }))]
    #[case::body_bytes_not_counted(b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxxxxxxxxx", 19, Ok(Parsed::Head { head: plain_get(), consumed: 18 }))]
    #[case::bare_lf_never_ends(b"GET / HTTP/1.1\n\n", 100, Ok(Parsed::Incomplete))]
    #[case::bare_lf_hits_limit(b"GET / HTTP/1.1\nX: y\n\nxxxx", 25, Err(431))]
    #[case::whitespace_counts(b"   \r\n   \r\n  ", 12, Err(431))]
    #[case::whitespace_only_head(b" \t\r\n\r\nGET", 100, Ok(Parsed::Skip(6)))]
    #[case::whitespace_only_head_at_limit(b" \t\r\n\r\n", 6, Err(431))]
    #[case::blank_lines(b"\r\n\r\n", 100, Ok(Parsed::Skip(4)))]
    #[case::blank_lines_then_request(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 100, Ok(Parsed::Skip(4)))]
    #[case::lone_crlf(b"\r\n", 100, Ok(Parsed::Incomplete))]
    #[case::nothing(b"", 0, Ok(Parsed::Incomplete))]
    #[case::pipelined(b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", 100, Ok(Parsed::Head { head: plain_get(), consumed: 18 }))]
    fn head_size_and_blank_lines(
        #[case] input: &[u8],
        #[case] max_header: usize,
        #[case] want: Result<Parsed, u16>,
    ) {
        let limits = HeadLimits {
            max_header,
            max_body: 100,
        };
        let want = want
            .map_err(|_| HttpError::new(431, format!("exceeds max_header of {max_header}"), V10));
        assert_eq!(parse_head(input, &limits), want);
    }

    fn plain_get() -> RequestHead {
        RequestHead {
            method: "GET".into(),
            target: b"/".to_vec().into(),
            version: V11,
            headers: Default::default(),
            framing: BodyFraming::None,
            expect_continue: false,
            close_requested: false,
            close_after: false,
        }
    }

    #[test]
    fn full_head() {
        let input = b"POST /a?b=c HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n\
                      Transfer-Encoding: chunked\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n5\r\n";
        let got = parse(input);
        let want = RequestHead {
            method: "POST".into(),
            target: b"/a?b=c".to_vec().into(),
            version: V11,
            headers: hdrs(&[
                ("HOST", &b"example.com"[..]),
                ("CONTENT_TYPE", &b"text/plain"[..]),
                ("EXPECT", &b"100-continue"[..]),
            ]),
            framing: BodyFraming::Chunked,
            expect_continue: true,
            close_requested: false,
            close_after: true,
        };
        assert_eq!(
            got,
            Ok(Parsed::Head {
                head: want,
                consumed: input.len() - 3
            })
        );
    }

    /// Feeding a head one byte at a time, resuming the terminator search,
    /// gives the same answer as parsing it whole, and Incomplete before.
    #[rstest]
    #[case(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\nrest")]
    #[case(b"\r\n\r\n")]
    #[case(b"GET / HTTP/1.1\r\nBad\r\n\r\n")]
    #[case(b"\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")]
    fn resumed_search_matches_whole_parse(#[case] input: &[u8]) {
        let whole = parse(input);
        let mut scanned = 0;
        for end in 1..=input.len() {
            match parse_head_from(&input[..end], &LIMITS, scanned) {
                Ok(Parsed::Incomplete) => scanned = end,
                other => {
                    assert_eq!(other, whole, "at {end}");
                    return;
                }
            }
        }
        panic!("never completed");
    }
}

#[cfg(test)]
mod method_tests {
    use super::*;

    #[test]
    fn common_methods_are_static_and_others_are_kept_as_sent() {
        assert!(matches!(method_name(b"GET"), Cow::Borrowed("GET")));
        assert!(matches!(method_name(b"PATCH"), Cow::Borrowed("PATCH")));
        assert_eq!(method_name(b"PROPFIND"), "PROPFIND");
        assert!(matches!(method_name(b"get"), Cow::Owned(m) if m == "get"));
    }
}

#[cfg(test)]
mod join_tests {
    use super::*;

    /// Two names repeated alternately thousands of times: each value is
    /// joined in arrival order (and out of line, so the work stays linear).
    #[test]
    fn alternating_repeats_join_in_order() {
        let mut block = String::from("GET / HTTP/1.1\r\nHost: x");
        for i in 0..3000 {
            block.push_str(&format!("\r\nA: {i}\r\nB: {i}"));
        }
        block.push_str("\r\n\r\n");
        let limits = HeadLimits {
            max_header: block.len() + 1,
            max_body: 0,
        };
        let Ok(Parsed::Head { head, .. }) = parse_head(block.as_bytes(), &limits) else {
            panic!("the head did not parse");
        };
        let want: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        let want = want.join(", ");
        assert_eq!(head.headers.get("A"), Some(want.as_bytes()));
        assert_eq!(head.headers.get("B"), Some(want.as_bytes()));
        assert_eq!(head.headers.len(), 3);
    }
}
