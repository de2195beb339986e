//! A parsed request head, owned, ready to cross to a worker thread.
use std::borrow::Cow;
use std::sync::Arc;

/// The version a request is *answered* with. Waitress answers every version
/// other than 1.1 (1.0, 0.9-style, 2.0, 8.4 ...) as HTTP/1.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no Content-Length and not chunked, or Content-Length 0).
    None,
    Length(u64),
    Chunked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Token, as received (the common methods need no allocation).
    pub method: Cow<'static, str>,
    /// The raw request target bytes (REQUEST_URI), fragment and absolute-form
    /// included; shared, so the engine keeps it for its log messages without
    /// a copy.
    pub target: Arc<[u8]>,
    pub version: Version,
    /// Headers in WSGI form: name upper-cased with `-` turned into `_` (no `HTTP_`
    /// prefix), value stripped of SP/HTAB, repeated names joined with `", "` in
    /// arrival order; listed in order of first appearance. Names containing `_`
    /// on the wire are dropped. `TRANSFER_ENCODING` is removed for HTTP/1.1
    /// requests; for chunked requests `CONTENT_LENGTH` holds the decoded length
    /// once the body is complete (the channel sets it).
    pub headers: RequestHeaders,
    pub framing: BodyFraming,
    /// HTTP/1.1 and `Expect: 100-continue` (case-insensitive).
    pub expect_continue: bool,
    /// The request asked for `Connection: close` (1.1) or did not ask for
    /// keep-alive (1.0), by token-list parsing (Decision Q12).
    pub close_requested: bool,
    /// Content-Length and chunked together: decode as chunked, close afterwards (Q15).
    pub close_after: bool,
}

impl RequestHead {
    /// The header with this WSGI-form name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Request headers (see `RequestHead::headers`), packed: names and values in
/// one buffer, so a request's headers cost two allocations however many
/// there are, against two per header as owned pairs.
#[derive(Clone, Default)]
pub struct RequestHeaders {
    bytes: Vec<u8>,
    lines: Vec<Line>,
    /// Values of repeated headers, joined out of line: appending in place
    /// would move a value to the end of `bytes` at every repeat, quadratic
    /// for a head that alternates two names thousands of times.
    joined: Vec<Vec<u8>>,
}

#[derive(Clone, Copy)]
struct Line {
    name: (usize, usize),
    value: Value,
}

#[derive(Clone, Copy)]
enum Value {
    /// A range of `bytes`.
    Packed(usize, usize),
    /// An entry of `joined`.
    Joined(usize),
}

impl RequestHeaders {
    /// Room for `lines` headers of `bytes` bytes in all.
    pub fn with_capacity(lines: usize, bytes: usize) -> Self {
        RequestHeaders {
            bytes: Vec::with_capacity(bytes),
            lines: Vec::with_capacity(lines),
            joined: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Add a header (the caller makes sure `name` is not there yet).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        let name = self.store(name.as_bytes());
        let (start, end) = self.store(value);
        self.lines.push(Line {
            name,
            value: Value::Packed(start, end),
        });
    }

    /// Join `more` to the value of header `i` with `", "`.
    pub fn append(&mut self, i: usize, more: &[u8]) {
        let Some(line) = self.lines.get(i).copied() else {
            return;
        };
        let slot = match line.value {
            Value::Joined(slot) => slot,
            Value::Packed(start, end) => {
                self.joined.push(self.bytes[start..end].to_vec());
                let slot = self.joined.len() - 1;
                self.lines[i].value = Value::Joined(slot);
                slot
            }
        };
        let joined = &mut self.joined[slot];
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(more);
    }

    /// Set `name` to `value`, in its place if it is there, else at the end.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        match self.position(name) {
            Some(i) => {
                let (start, end) = self.store(value);
                self.lines[i].value = Value::Packed(start, end);
            }
            None => self.push(name, value),
        }
    }

    /// Remove `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Vec<u8>> {
        let i = self.position(name)?;
        let value = self.value(&self.lines[i]).to_vec();
        self.lines.remove(i);
        Some(value)
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.position(name).map(|i| self.value(&self.lines[i]))
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| &self.bytes[l.name.0..l.name.1] == name.as_bytes())
    }

    /// The name of header `i`.
    pub fn name(&self, i: usize) -> &str {
        self.lines.get(i).map_or("", |l| self.text(l.name))
    }

    /// `(name, value)` per header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.lines
            .iter()
            .map(move |l| (self.text(l.name), self.value(l)))
    }

    fn store(&mut self, data: &[u8]) -> (usize, usize) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        (start, self.bytes.len())
    }

    fn value(&self, line: &Line) -> &[u8] {
        match line.value {
            Value::Packed(start, end) => &self.bytes[start..end],
            Value::Joined(slot) => &self.joined[slot],
        }
    }

    /// Names are stored from `&str`s and cut where they were put.
    fn text(&self, (start, end): (usize, usize)) -> &str {
        std::str::from_utf8(&self.bytes[start..end]).unwrap_or("")
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for RequestHeaders {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = RequestHeaders::default();
        for (name, value) in iter {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

impl PartialEq for RequestHeaders {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for RequestHeaders {}

impl std::fmt::Debug for RequestHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_join_set_and_remove() {
        let mut h: RequestHeaders = [("HOST", &b"x"[..]), ("ACCEPT", b"a")]
            .into_iter()
            .collect();
        h.push("COOKIE", b"1");
        h.append(2, b"2");
        h.append(1, b"b");
        h.append(2, b"3");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [
                ("HOST", &b"x"[..]),
                ("ACCEPT", b"a, b"),
                ("COOKIE", b"1, 2, 3")
            ]
        );
        h.set("HOST", b"y");
        h.set("CONTENT_LENGTH", b"5");
        assert_eq!(h.get("HOST"), Some(&b"y"[..]));
        assert_eq!(h.remove("ACCEPT"), Some(b"a, b".to_vec()));
        assert_eq!(h.get("ACCEPT"), None);
        assert_eq!(h.name(1), "COOKIE");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [
                ("HOST", &b"y"[..]),
                ("COOKIE", b"1, 2, 3"),
                ("CONTENT_LENGTH", b"5")
            ]
        );
        let empty = RequestHeaders::default();
        assert!(empty.is_empty() && empty.get("HOST").is_none());
    }
}
