//! Trusted proxy headers: Waitress 3.0.2's `proxy_headers` middleware as a pure function.
//!
//! The environ builder fills a [`ProxyEnv`] with the few environ values the middleware reads
//! or writes, calls [`apply`], and copies the result into the environ: changed
//! `REMOTE_*`/`SERVER_*`/`HTTP_HOST`/`wsgi.url_scheme` values, rewritten proxy headers, and
//! proxy headers removed (set to `None`). On a malformed header from a trusted peer the app
//! is not called: the caller answers 400 with [`malformed_body`].
//!
//! All strings are environ strings: header bytes decoded as latin-1 (PEP 3333), so every
//! character is at most U+00FF. "Whitespace" and "lower case" are Python's, as Waitress
//! applies `str.strip()` and `str.lower()` to these values.
//!
//! Cheapness: values are `Cow`s so the builder can lend what it already holds. Nothing is
//! allocated for a peer that is not trusted (unless a removal is logged), a #452 rewrite of
//! a borrowed header is a re-slice, and [`ProxySettings::is_active`] says when the whole
//! step can be skipped.

use crate::config::Config;
use std::borrow::Cow;

/// The six proxy headers Waitress knows, in the order of its `PROXY_HEADERS` listing (the
/// order maitre uses in the "Removed untrusted headers" warning; Waitress's order there is
/// that of a Python set, which varies from run to run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyHeader {
    XForwardedFor,
    XForwardedHost,
    XForwardedProto,
    XForwardedPort,
    XForwardedBy,
    Forwarded,
}

impl ProxyHeader {
    pub const ALL: [ProxyHeader; 6] = [
        ProxyHeader::XForwardedFor,
        ProxyHeader::XForwardedHost,
        ProxyHeader::XForwardedProto,
        ProxyHeader::XForwardedPort,
        ProxyHeader::XForwardedBy,
        ProxyHeader::Forwarded,
    ];

    /// The name in `trusted_proxy_headers` (`x-forwarded-for`, ..., `forwarded`).
    pub fn config_name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "x-forwarded-for",
            ProxyHeader::XForwardedHost => "x-forwarded-host",
            ProxyHeader::XForwardedProto => "x-forwarded-proto",
            ProxyHeader::XForwardedPort => "x-forwarded-port",
            ProxyHeader::XForwardedBy => "x-forwarded-by",
            ProxyHeader::Forwarded => "forwarded",
        }
    }

    /// The environ key without `HTTP_`, as in `RequestHead::headers` (`X_FORWARDED_FOR`).
    pub fn wsgi_name(self) -> &'static str {
        &self.environ_key()["HTTP_".len()..]
    }

    /// The environ key (`HTTP_X_FORWARDED_FOR`).
    pub fn environ_key(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "HTTP_X_FORWARDED_FOR",
            ProxyHeader::XForwardedHost => "HTTP_X_FORWARDED_HOST",
            ProxyHeader::XForwardedProto => "HTTP_X_FORWARDED_PROTO",
            ProxyHeader::XForwardedPort => "HTTP_X_FORWARDED_PORT",
            ProxyHeader::XForwardedBy => "HTTP_X_FORWARDED_BY",
            ProxyHeader::Forwarded => "HTTP_FORWARDED",
        }
    }

    /// The name in log messages and 400 bodies (`X-Forwarded-For`, `Forwarded`).
    pub fn display_name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "X-Forwarded-For",
            ProxyHeader::XForwardedHost => "X-Forwarded-Host",
            ProxyHeader::XForwardedProto => "X-Forwarded-Proto",
            ProxyHeader::XForwardedPort => "X-Forwarded-Port",
            ProxyHeader::XForwardedBy => "X-Forwarded-By",
            ProxyHeader::Forwarded => "Forwarded",
        }
    }

    pub fn from_config_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.config_name() == name)
    }

    /// For routing `RequestHead::headers` entries (`X_FORWARDED_FOR`) to a [`ProxyEnv`].
    pub fn from_wsgi_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.wsgi_name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

/// A set of [`ProxyHeader`]s (a bit mask: copying and testing it costs nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeaderSet(u8);

impl HeaderSet {
    pub const EMPTY: HeaderSet = HeaderSet(0);
    pub const ALL: HeaderSet = HeaderSet(0b11_1111);

    /// The headers named by `trusted_proxy_headers` values; unknown names are ignored (the
    /// configuration has already refused them).
    pub fn from_config_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names
            .into_iter()
            .filter_map(ProxyHeader::from_config_name)
            .fold(Self::EMPTY, Self::with)
    }

    pub fn contains(self, h: ProxyHeader) -> bool {
        self.0 & h.bit() != 0
    }

    #[must_use]
    pub fn with(self, h: ProxyHeader) -> Self {
        HeaderSet(self.0 | h.bit())
    }

    #[must_use]
    pub fn without(self, h: ProxyHeader) -> Self {
        HeaderSet(self.0 & !h.bit())
    }

    /// Members in [`ProxyHeader::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = ProxyHeader> {
        ProxyHeader::ALL
            .into_iter()
            .filter(move |&h| self.contains(h))
    }
}

/// The proxy settings, resolved once per server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// A peer address, or `"*"` for every peer.
    pub trusted_proxy: Option<String>,
    /// Hops trusted, counted from the right. 0 keeps every hop (Python's `[-0:]`).
    pub trusted_proxy_count: usize,
    pub trusted_proxy_headers: HeaderSet,
    pub clear_untrusted: bool,
    pub log_untrusted: bool,
}

impl ProxySettings {
    /// From the validated configuration, which has already turned "trusted_proxy with no
    /// trusted headers" into `{x-forwarded-proto}` and an unset count into 1.
    pub fn from_config(config: &Config) -> Self {
        ProxySettings {
            trusted_proxy: config.trusted_proxy.clone(),
            trusted_proxy_count: config.effective_trusted_proxy_count(),
            trusted_proxy_headers: HeaderSet::from_config_names(
                config.trusted_proxy_headers.iter().map(String::as_str),
            ),
            clear_untrusted: config.clear_untrusted_proxy_headers,
            log_untrusted: config.log_untrusted_proxy_headers,
        }
    }

    /// Whether Waitress would install its middleware at all (`trusted_proxy` set, or
    /// clearing on). When false, [`apply`] changes nothing and may be skipped.
    pub fn is_active(&self) -> bool {
        self.trusted_proxy.is_some() || self.clear_untrusted
    }

    /// Whether headers from this peer (`REMOTE_ADDR` as the server saw it) are parsed.
    pub fn trusts(&self, remote_addr: &str) -> bool {
        self.trusted_proxy
            .as_deref()
            .is_some_and(|t| t == "*" || t == remote_addr)
    }
}

/// The environ values the proxy step reads or writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv<'a> {
    pub remote_addr: Cow<'a, str>,
    pub remote_port: Cow<'a, str>,
    pub remote_host: Cow<'a, str>,
    pub server_name: Cow<'a, str>,
    pub server_port: Cow<'a, str>,
    /// `HTTP_HOST`, absent when the request had no Host header.
    pub http_host: Option<Cow<'a, str>>,
    /// `wsgi.url_scheme`.
    pub url_scheme: Cow<'a, str>,
    headers: [Option<Cow<'a, str>>; 6],
}

impl<'a> ProxyEnv<'a> {
    /// An environ with no Host and no proxy header; `REMOTE_HOST` equals `REMOTE_ADDR`.
    pub fn new(
        remote_addr: impl Into<Cow<'a, str>>,
        remote_port: impl Into<Cow<'a, str>>,
        server_name: impl Into<Cow<'a, str>>,
        server_port: impl Into<Cow<'a, str>>,
        url_scheme: impl Into<Cow<'a, str>>,
    ) -> Self {
        let remote_addr = remote_addr.into();
        ProxyEnv {
            remote_host: remote_addr.clone(),
            remote_addr,
            remote_port: remote_port.into(),
            server_name: server_name.into(),
            server_port: server_port.into(),
            http_host: None,
            url_scheme: url_scheme.into(),
            headers: Default::default(),
        }
    }

    /// The value of `HTTP_<h>`, if present.
    pub fn header(&self, h: ProxyHeader) -> Option<&str> {
        self.headers[h.index()].as_deref()
    }

    /// Sets (or with `None` removes) `HTTP_<h>`.
    pub fn set_header(&mut self, h: ProxyHeader, value: Option<Cow<'a, str>>) {
        self.headers[h.index()] = value;
    }

    /// Moves `HTTP_<h>` out (for copying the result into the environ without cloning).
    pub fn take_header(&mut self, h: ProxyHeader) -> Option<Cow<'a, str>> {
        self.headers[h.index()].take()
    }
}

/// A malformed header from a trusted peer: the request gets a 400, the app is not called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The label in the 400 body and the log line: `X-Forwarded-For`, `X-Forwarded-Host`,
    /// `X-Forwarded-Proto`, `X-Forwarded-Port`, `Forwarded` or `Forwarded Proto=`.
    pub header: &'static str,
    /// Why (Waitress's exception text).
    pub reason: &'static str,
    /// The offending value: the raw header value, or for an unsupported proto the
    /// lower-cased proto.
    pub value: String,
    /// Every warning to log, in order: any "Unknown Forwarded token" lines seen before the
    /// failure, then the `Malformed proxy header ...` line.
    pub warnings: Vec<String>,
}

/// The status line text of the answer to a [`Malformed`] header.
pub const MALFORMED_STATUS: &str = "400 Bad Request";
/// Its only header (Waitress sends no Content-Length: the caller frames the body).
pub const MALFORMED_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The body of the 400: tagged "(generated by server)" whatever `ident` is, as Waitress's
/// middleware does.
pub fn malformed_body(m: &Malformed) -> String {
    format!(
        "Bad Request\r\n\r\nHeader \"{}\" malformed.\r\n\r\n(generated by server)",
        m.header
    )
}

/// Runs Waitress's proxy-header step on `env`: parses the trusted headers when the peer is
/// trusted, then removes the untrusted ones when clearing is on. Returns the warnings to log
/// on the `maitre` logger, in order.
pub fn apply(settings: &ProxySettings, env: &mut ProxyEnv<'_>) -> Result<Vec<String>, Malformed> {
    let mut warnings = Vec::new();
    let untrusted = if settings.trusts(&env.remote_addr) {
        match read_trusted(settings, env, &mut warnings) {
            Ok(found) => {
                let untrusted = found.untrusted;
                write_found(env, found);
                untrusted
            }
            Err(fail) => return Err(malformed(fail, &env.remote_addr, warnings)),
        }
    } else {
        HeaderSet::ALL
    };
    if settings.clear_untrusted {
        clear_untrusted(env, untrusted, settings.log_untrusted, &mut warnings);
    }
    Ok(warnings)
}

/// Removes the untrusted headers that are present and, if asked, says which.
fn clear_untrusted(env: &mut ProxyEnv<'_>, untrusted: HeaderSet, log: bool, out: &mut Vec<String>) {
    let mut removed = Vec::new();
    for h in untrusted.iter() {
        if env.take_header(h).is_some() && log {
            removed.push(h.display_name());
        }
    }
    if log && !removed.is_empty() {
        out.push(format!(
            "Removed untrusted headers ({}). Waitress recommends these be removed upstream.",
            removed.join(", ")
        ));
    }
}

/// A parse failure before it becomes a [`Malformed`].
struct Fail {
    header: &'static str,
    reason: &'static str,
    value: String,
}

impl Fail {
    fn of(h: ProxyHeader, reason: &'static str, value: &str) -> Self {
        Fail {
            header: h.display_name(),
            reason,
            value: value.to_string(),
        }
    }
}

fn malformed(fail: Fail, peer: &str, mut warnings: Vec<String>) -> Malformed {
    warnings.push(format!(
        "Malformed proxy header \"{}\" from \"{}\": {} value: {}",
        fail.header, peer, fail.reason, fail.value
    ));
    Malformed {
        header: fail.header,
        reason: fail.reason,
        value: fail.value,
        warnings,
    }
}

const INVALID_QUOTING: &str = "Invalid quoting in value";
const MULTIPLE_VALUES: &str = "Unspecified behavior for multiple values found in header";
const MISSING_EQUALS: &str = "Invalid forwarded-pair missing \"=\"";
const TOKEN_WHITESPACE: &str = "Token may not be surrounded by whitespace";
const VALUE_WHITESPACE: &str = "Value may not be surrounded by whitespace";
const UNSUPPORTED_PROTO: &str = "unsupported proto value";
/// maitre's reason where Waitress crashes (IndexError, a 500): a client address that is
/// empty once stripped (`X-Forwarded-For: ":1.2"`, `Forwarded: for=":80"`).
const EMPTY_CLIENT: &str = "Empty client address";

/// What the trusted headers say, gathered before anything in the environ changes.
#[derive(Default)]
struct Found {
    /// The client address and the header it came from.
    client: Option<(String, ProxyHeader)>,
    host: String,
    proto: String,
    port: String,
    /// Byte offsets where the kept (last N) items of these headers start.
    keep_from: [Option<usize>; 6],
    untrusted: HeaderSet,
}

/// Waitress's `parse_proxy_headers` up to, but not including, its writes to the environ.
fn read_trusted(
    settings: &ProxySettings,
    env: &ProxyEnv<'_>,
    warnings: &mut Vec<String>,
) -> Result<Found, Fail> {
    let trusted = settings.trusted_proxy_headers;
    let n = settings.trusted_proxy_count;
    let mut found = Found {
        untrusted: HeaderSet::ALL,
        ..Found::default()
    };
    read_x_forwarded(trusted, n, env, &mut found)?;
    let mut forwarded_used = false;
    if trusted.contains(ProxyHeader::Forwarded) {
        found.untrusted = HeaderSet::ALL.without(ProxyHeader::Forwarded);
        if let Some(value) = env.header(ProxyHeader::Forwarded).filter(|v| !v.is_empty()) {
            read_forwarded(value, n, &mut found, warnings)?;
            forwarded_used = true;
        }
    }
    check_proto(&mut found, forwarded_used)?;
    validate_client(&found)?;
    Ok(found)
}

/// The X-Forwarded-* headers, in Waitress's order (For, Host, Proto, Port, By).
fn read_x_forwarded(
    trusted: HeaderSet,
    n: usize,
    env: &ProxyEnv<'_>,
    found: &mut Found,
) -> Result<(), Fail> {
    use ProxyHeader::*;
    if let Some(value) = env
        .header(XForwardedFor)
        .filter(|_| trusted.contains(XForwardedFor))
    {
        let (first, from) =
            first_kept_item(value, n).map_err(|r| Fail::of(XForwardedFor, r, value))?;
        found.client = Some((bracket_bare_ipv6(first), XForwardedFor));
        found.keep_from[XForwardedFor.index()] = Some(from);
        found.untrusted = found.untrusted.without(XForwardedFor);
    }
    if let Some(value) = env
        .header(XForwardedHost)
        .filter(|_| trusted.contains(XForwardedHost))
    {
        let (first, from) =
            first_kept_item(value, n).map_err(|r| Fail::of(XForwardedHost, r, value))?;
        found.host = first.into_owned();
        found.keep_from[XForwardedHost.index()] = Some(from);
        found.untrusted = found.untrusted.without(XForwardedHost);
    }
    for (h, slot) in [
        (XForwardedProto, &mut found.proto),
        (XForwardedPort, &mut found.port),
    ] {
        if trusted.contains(h) {
            // Trusted even when absent (then it reads as "").
            let value = env.header(h).unwrap_or("");
            *slot = single_value(value).map_err(|r| Fail::of(h, r, value))?;
            found.untrusted = found.untrusted.without(h);
        }
    }
    if trusted.contains(XForwardedBy) {
        // Never used, only let through.
        found.untrusted = found.untrusted.without(XForwardedBy);
    }
    Ok(())
}

/// X-Forwarded-Proto/-Port: one un-quoted value without a comma.
fn single_value(value: &str) -> Result<String, &'static str> {
    let v = undquote(value)?;
    if v.contains(',') {
        return Err(MULTIPLE_VALUES);
    }
    Ok(v.into_owned())
}

/// X-Forwarded-For/-Host: every comma-separated item is stripped and must un-quote; the
/// first of the last `n` is returned with the byte offset where that item starts.
fn first_kept_item(value: &str, n: usize) -> Result<(Cow<'_, str>, usize), &'static str> {
    let count = value.split(',').count();
    let wanted = kept_start(count, n);
    let mut first = None;
    let mut offset = 0;
    for (i, item) in value.split(',').enumerate() {
        let unquoted = undquote(py_strip(item))?;
        if i == wanted {
            first = Some((unquoted, offset));
        }
        offset += item.len() + 1;
    }
    // `wanted < count` always holds, so `first` is set; "" is the harmless fallback.
    Ok(first.unwrap_or((Cow::Borrowed(""), 0)))
}

/// The index of the first of the last `n` of `count` items (Python's `items[-n:]`, where
/// `n == 0` keeps them all).
fn kept_start(count: usize, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        count.saturating_sub(n)
    }
}

/// X-Forwarded-For items that look like bare IPv6 addresses (a `:`, no `.`, not ending in
/// `]`) get brackets, so that a later `host:port` split leaves them whole.
fn bracket_bare_ipv6(item: Cow<'_, str>) -> String {
    if !item.contains('.') && item.contains(':') && !item.ends_with(']') {
        format!("[{item}]")
    } else {
        item.into_owned()
    }
}

/// One element of a Forwarded header.
#[derive(Default)]
struct Element {
    for_: String,
    host: String,
    proto: String,
}

/// Forwarded (RFC 7239, as Waitress reads it): every element must parse; of the last `n`,
/// the oldest non-empty `for`, `host` and `proto` win. Its presence discards what
/// X-Forwarded-Host/-Proto/-Port said; X-Forwarded-For stays the fallback client.
fn read_forwarded(
    value: &str,
    n: usize,
    found: &mut Found,
    warnings: &mut Vec<String>,
) -> Result<(), Fail> {
    let fail = |reason| Fail::of(ProxyHeader::Forwarded, reason, value);
    let count = value.split(',').count();
    let wanted = kept_start(count, n);
    let (mut client, mut host, mut proto) = (None, None, None);
    let mut offset = 0;
    for (i, raw) in value.split(',').enumerate() {
        let element = parse_element(py_strip(raw), warnings).map_err(fail)?;
        if i == wanted {
            found.keep_from[ProxyHeader::Forwarded.index()] = Some(offset);
        }
        if i >= wanted {
            client = client.or_else(|| non_empty(element.for_));
            host = host.or_else(|| non_empty(element.host));
            proto = proto.or_else(|| non_empty(element.proto));
        }
        offset += raw.len() + 1;
    }
    if let Some(addr) = client {
        found.client = Some((addr, ProxyHeader::Forwarded));
    }
    found.host = host.unwrap_or_default();
    found.proto = proto.unwrap_or_default();
    found.port = String::new();
    Ok(())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// `pair *( ";" pair )`, each pair lower-cased (values too) and `token=value` with no
/// whitespace around either side; empty pairs are skipped, unknown tokens logged.
fn parse_element(element: &str, warnings: &mut Vec<String>) -> Result<Element, &'static str> {
    let mut out = Element::default();
    for pair in element.split(';').filter(|p| !p.is_empty()) {
        let pair = pair.to_lowercase();
        let (token, value) = pair.split_once('=').ok_or(MISSING_EQUALS)?;
        if py_strip(token) != token {
            return Err(TOKEN_WHITESPACE);
        }
        if py_strip(value) != value {
            return Err(VALUE_WHITESPACE);
        }
        let slot = match token {
            "for" => &mut out.for_,
            "host" => &mut out.host,
            "proto" => &mut out.proto,
            "by" => {
                // Unused, but it must still un-quote.
                undquote(value)?;
                continue;
            }
            _ => {
                warnings.push(format!("Unknown Forwarded token: {token}"));
                continue;
            }
        };
        *slot = undquote(value)?.into_owned();
    }
    Ok(out)
}

/// A proto must be `http` or `https` (compared lower-cased); the label says which header
/// it came from.
fn check_proto(found: &mut Found, forwarded_used: bool) -> Result<(), Fail> {
    if found.proto.is_empty() {
        return Ok(());
    }
    let proto = found.proto.to_lowercase();
    if proto != "http" && proto != "https" {
        return Err(Fail {
            header: if forwarded_used {
                "Forwarded Proto="
            } else {
                ProxyHeader::XForwardedProto.display_name()
            },
            reason: UNSUPPORTED_PROTO,
            value: proto,
        });
    }
    found.proto = proto;
    Ok(())
}

/// Refuses a client address whose address part is empty once stripped (see
/// [`EMPTY_CLIENT`]); the value reported is the header the address came from.
fn validate_client(found: &Found) -> Result<(), Fail> {
    let Some((client, source)) = &found.client else {
        return Ok(());
    };
    if !client.is_empty() && py_strip(split_client(client).0).is_empty() {
        return Err(Fail {
            header: source.display_name(),
            reason: EMPTY_CLIENT,
            value: client.clone(),
        });
    }
    Ok(())
}

/// `addr:port` split at the last `:`, unless the value ends in `]` (a bracketed IPv6
/// address without a port) or has no `:`.
fn split_client(client: &str) -> (&str, Option<&str>) {
    match client.rsplit_once(':') {
        Some((addr, port)) if !client.ends_with(']') => (addr, Some(port)),
        _ => (client, None),
    }
}

/// The environ writes of Waitress's `parse_proxy_headers`, in its order.
fn write_found(env: &mut ProxyEnv<'_>, found: Found) {
    for h in ProxyHeader::ALL {
        if let Some(from) = found.keep_from[h.index()] {
            keep_tail(&mut env.headers[h.index()], from);
        }
    }
    let mut port = found.port;
    if !found.proto.is_empty() {
        let https = found.proto == "https";
        env.url_scheme = Cow::Borrowed(if https { "https" } else { "http" });
        if port.is_empty() {
            port = (if https { "443" } else { "80" }).to_string();
        }
    }
    if !found.host.is_empty() {
        write_host(env, found.host, &mut port);
    }
    if !port.is_empty() {
        env.server_port = Cow::Owned(port);
    }
    if let Some((client, _)) = found.client.filter(|(c, _)| !c.is_empty()) {
        write_client(env, &client);
    }
}

/// A forwarded host: its own `:port` wins over X-Forwarded-Port and the proto's default;
/// without one, `HTTP_HOST` shows the port unless it is the scheme's default.
fn write_host(env: &mut ProxyEnv<'_>, host: String, port: &mut String) {
    if let (name, Some(host_port)) = split_client(&host) {
        *port = host_port.to_string();
        env.server_name = Cow::Owned(py_strip(name).to_string());
        env.http_host = Some(Cow::Owned(host));
        return;
    }
    let scheme_default = matches!(
        (port.as_str(), env.url_scheme.as_ref()),
        ("80", "http") | ("443", "https")
    );
    env.http_host = Some(Cow::Owned(if port.is_empty() || scheme_default {
        host.clone()
    } else {
        format!("{host}:{port}")
    }));
    env.server_name = Cow::Owned(host);
}

/// `REMOTE_ADDR` (brackets removed), `REMOTE_PORT` when the address has one, and
/// `REMOTE_HOST` equal to `REMOTE_ADDR`.
fn write_client(env: &mut ProxyEnv<'_>, client: &str) {
    let (addr, port) = split_client(client);
    let addr = strip_brackets(py_strip(addr)).to_string();
    if let Some(port) = port {
        env.remote_port = Cow::Owned(py_strip(port).to_string());
    }
    env.remote_host = Cow::Owned(addr.clone());
    env.remote_addr = Cow::Owned(addr);
}

fn strip_brackets(addr: &str) -> &str {
    addr.strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr)
}

/// #452: a rewritten header holds only its kept items (from byte `from`), stripped.
fn keep_tail(value: &mut Option<Cow<'_, str>>, from: usize) {
    let Some(v) = value else { return };
    let Some(tail) = v.get(from..) else { return };
    let kept = py_strip(tail);
    if kept.len() == v.len() {
        return;
    }
    let start = from + (tail.len() - tail.trim_start_matches(is_py_space).len());
    let end = start + kept.len();
    match v {
        Cow::Borrowed(s) => *s = &s[start..end],
        Cow::Owned(s) => {
            s.truncate(end);
            s.drain(..start);
        }
    }
}

/// Waitress's `undquote`: a value both starting and ending with `"` must be exactly one
/// RFC 7230 quoted-string and loses its quotes and escapes; a value with neither is kept
/// as is; anything else is refused.
fn undquote(value: &str) -> Result<Cow<'_, str>, &'static str> {
    match (value.starts_with('"'), value.ends_with('"')) {
        (false, false) => Ok(Cow::Borrowed(value)),
        (true, true) => unquote_whole(value).ok_or(INVALID_QUOTING),
        _ => Err(INVALID_QUOTING),
    }
}

/// The content of `value` if all of it is one quoted-string (`"` *(qdtext / quoted-pair)
/// `"`), with each quoted-pair replaced by its character.
fn unquote_whole(value: &str) -> Option<Cow<'_, str>> {
    let inner = value.strip_prefix('"')?;
    let mut escaped = false;
    let mut chars = inner.char_indices();
    let end = loop {
        let (i, c) = chars.next()?;
        match c {
            '"' => break i,
            '\\' => {
                let (_, next) = chars.next()?;
                if !is_quoted_pair_char(next) {
                    return None;
                }
                escaped = true;
            }
            c if is_qdtext(c) => {}
            _ => return None,
        }
    };
    // The closing quote must be the last character.
    if end + 1 != inner.len() {
        return None;
    }
    let content = &inner[..end];
    if !escaped {
        return Some(Cow::Borrowed(content));
    }
    let mut out = String::with_capacity(content.len());
    let mut chars = content.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(Cow::Owned(out))
}

/// RFC 7230 qdtext: HTAB, SP, `!`, `#`-`[`, `]`-`~`, obs-text.
fn is_qdtext(c: char) -> bool {
    matches!(c, '\t' | ' ' | '!' | '#'..='[' | ']'..='~' | '\u{80}'..='\u{ff}')
}

/// What may follow a backslash in a quoted-pair: HTAB, SP, VCHAR, obs-text.
fn is_quoted_pair_char(c: char) -> bool {
    matches!(c, '\t' | ' ' | '!'..='~' | '\u{80}'..='\u{ff}')
}

/// Python's `str.isspace()`: Unicode White_Space plus the separators 0x1c-0x1f.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::collections::BTreeSet;

    /// Trusting `proxy` for `trusted` headers, clearing on, logging off.
    fn set(proxy: Option<&str>, count: usize, trusted: &[&str]) -> ProxySettings {
        ProxySettings {
            trusted_proxy: proxy.map(str::to_string),
            trusted_proxy_count: count,
            trusted_proxy_headers: HeaderSet::from_config_names(trusted.iter().copied()),
            clear_untrusted: true,
            log_untrusted: false,
        }
    }

    fn logging(mut s: ProxySettings) -> ProxySettings {
        s.log_untrusted = true;
        s
    }

    fn keeping(mut s: ProxySettings) -> ProxySettings {
        s.clear_untrusted = false;
        s
    }

    /// The environ Waitress's own tests start from (peer port 8080, `SERVER_NAME`
    /// localhost, Host `192.168.1.1:80`, scheme http) plus `headers` by WSGI name; the
    /// pseudo-names `HOST` and `URL_SCHEME` override those two values.
    fn env<'a>(peer: &'a str, headers: &[(&'a str, &'a str)]) -> ProxyEnv<'a> {
        let mut e = ProxyEnv::new(peer, "8080", "localhost", "8080", "http");
        e.http_host = Some(Cow::Borrowed("192.168.1.1:80"));
        for &(name, value) in headers {
            match name {
                "HOST" => e.http_host = Some(Cow::Borrowed(value)),
                "URL_SCHEME" => e.url_scheme = Cow::Borrowed(value),
                _ => {
                    let h = ProxyHeader::from_wsgi_name(name).expect("a proxy header name");
                    e.set_header(h, Some(Cow::Borrowed(value)));
                }
            }
        }
        e
    }

    /// The values that changed, then every proxy header still present (by WSGI name).
    fn changes(before: &ProxyEnv<'_>, after: &ProxyEnv<'_>) -> Vec<String> {
        let fields = |e: &ProxyEnv<'_>| {
            [
                ("REMOTE_ADDR", Some(e.remote_addr.to_string())),
                ("REMOTE_PORT", Some(e.remote_port.to_string())),
                ("REMOTE_HOST", Some(e.remote_host.to_string())),
                ("SERVER_NAME", Some(e.server_name.to_string())),
                ("SERVER_PORT", Some(e.server_port.to_string())),
                ("HTTP_HOST", e.http_host.as_deref().map(str::to_string)),
                ("URL_SCHEME", Some(e.url_scheme.to_string())),
            ]
        };
        let mut out: Vec<String> = fields(before)
            .into_iter()
            .zip(fields(after))
            .filter(|(b, a)| b != a)
            .map(|(_, (k, v))| format!("{k}={}", v.unwrap_or_else(|| "<absent>".into())))
            .collect();
        for h in ProxyHeader::ALL {
            if let Some(v) = after.header(h) {
                out.push(format!("{}={v}", h.wsgi_name()));
            }
        }
        out
    }

    /// Expected values and warnings were checked against Waitress 3.0.2's middleware
    /// (the "Removed untrusted headers" names put in maitre's fixed order).
    #[rstest]
    #[case::untrusted_default_proto_ignored(
        set(None, 1, &[]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "https")],
        &[],
        &[],
    )]
    #[case::trusted_proto_sets_scheme_and_port(
        set(Some("10.0.0.2"), 1, &["x-forwarded-proto"]),
        "10.0.0.2",
        &[("X_FORWARDED_PROTO", "https")],
        &["SERVER_PORT=443", "URL_SCHEME=https", "X_FORWARDED_PROTO=https"],
        &[],
    )]
    #[case::forwarded_trusted_xff_removed_and_logged(
        logging(set(Some("10.0.0.2"), 1, &["forwarded"])),
        "10.0.0.2",
        &[("X_FORWARDED_FOR", "[2001:db8::7]"), ("FORWARDED", "For=203.0.113.9;host=shop.example:8081;proto=https")],
        &["REMOTE_ADDR=203.0.113.9", "REMOTE_HOST=203.0.113.9", "SERVER_NAME=shop.example", "SERVER_PORT=8081", "HTTP_HOST=shop.example:8081", "URL_SCHEME=https", "FORWARDED=For=203.0.113.9;host=shop.example:8081;proto=https"],
        &["Removed untrusted headers (X-Forwarded-For). Waitress recommends these be removed upstream."],
    )]
    #[case::no_clearing_keeps_everything(
        keeping(set(Some("10.0.0.2"), 1, &["x-forwarded-by"])),
        "10.0.0.2",
        &[("X_FORWARDED_FOR", "203.0.113.9"), ("X_FORWARDED_BY", "edge-1"), ("X_FORWARDED_PROTO", "https"), ("X_FORWARDED_HOST", "shop.example")],
        &["X_FORWARDED_FOR=203.0.113.9", "X_FORWARDED_HOST=shop.example", "X_FORWARDED_PROTO=https", "X_FORWARDED_BY=edge-1"],
        &[],
    )]
    #[case::clearing_keeps_only_trusted_by(
        set(Some("10.0.0.2"), 1, &["x-forwarded-by"]),
        "10.0.0.2",
        &[("X_FORWARDED_FOR", "203.0.113.9"), ("X_FORWARDED_BY", "edge-1"), ("X_FORWARDED_PROTO", "https"), ("X_FORWARDED_HOST", "shop.example")],
        &["X_FORWARDED_BY=edge-1"],
        &[],
    )]
    #[case::untrusted_peer_loses_all(
        set(Some("10.0.0.2"), 1, &["x-forwarded-by"]),
        "10.0.0.3",
        &[("X_FORWARDED_FOR", "203.0.113.9"), ("X_FORWARDED_BY", "edge-1"), ("X_FORWARDED_PROTO", "https"), ("X_FORWARDED_HOST", "shop.example")],
        &[],
        &[],
    )]
    #[case::xff_single(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.40")],
        &["REMOTE_ADDR=198.51.100.40", "REMOTE_HOST=198.51.100.40", "X_FORWARDED_FOR=198.51.100.40"],
        &[],
    )]
    #[case::xff_bare_ipv6(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "2001:db8::40")],
        &["REMOTE_ADDR=2001:db8::40", "REMOTE_HOST=2001:db8::40", "X_FORWARDED_FOR=2001:db8::40"],
        &[],
    )]
    #[case::xff_two_of_three(
        set(Some("*"), 2, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1, 198.51.100.2, 198.51.100.3")],
        &["REMOTE_ADDR=198.51.100.2", "REMOTE_HOST=198.51.100.2", "X_FORWARDED_FOR=198.51.100.2, 198.51.100.3"],
        &[],
    )]
    #[case::forwarded_two_of_three(
        set(Some("*"), 2, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "For=198.51.100.1;host=spoofed.example, For=198.51.100.2;host=real.example:8082, For=198.51.100.3")],
        &["REMOTE_ADDR=198.51.100.2", "REMOTE_HOST=198.51.100.2", "SERVER_NAME=real.example", "SERVER_PORT=8082", "HTTP_HOST=real.example:8082", "FORWARDED=For=198.51.100.2;host=real.example:8082, For=198.51.100.3"],
        &[],
    )]
    #[case::forwarded_quoted_ipv6_with_port(
        set(Some("*"), 2, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=\"[2001:db8::a]:4711\";host=\"app.example:9443\";proto=\"https\", for=198.51.100.7;host=\"internal.example:8080\"")],
        &["REMOTE_ADDR=2001:db8::a", "REMOTE_PORT=4711", "REMOTE_HOST=2001:db8::a", "SERVER_NAME=app.example", "SERVER_PORT=9443", "HTTP_HOST=app.example:9443", "URL_SCHEME=https", "FORWARDED=for=\"[2001:db8::a]:4711\";host=\"app.example:9443\";proto=\"https\", for=198.51.100.7;host=\"internal.example:8080\""],
        &[],
    )]
    #[case::forwarded_minimal_host_from_newer(
        set(Some("*"), 2, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=\"[2001:db8::a]\";proto=\"https\", for=198.51.100.7;host=\"app.example\"")],
        &["REMOTE_ADDR=2001:db8::a", "REMOTE_HOST=2001:db8::a", "SERVER_NAME=app.example", "SERVER_PORT=443", "HTTP_HOST=app.example", "URL_SCHEME=https", "FORWARDED=for=\"[2001:db8::a]\";proto=\"https\", for=198.51.100.7;host=\"app.example\""],
        &[],
    )]
    #[case::xfh_with_port(
        set(Some("*"), 2, &["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1, 198.51.100.2, 198.51.100.3"), ("X_FORWARDED_PROTO", "http"), ("X_FORWARDED_HOST", "app.example:8088")],
        &["REMOTE_ADDR=198.51.100.2", "REMOTE_HOST=198.51.100.2", "SERVER_NAME=app.example", "SERVER_PORT=8088", "HTTP_HOST=app.example:8088", "X_FORWARDED_FOR=198.51.100.2, 198.51.100.3", "X_FORWARDED_HOST=app.example:8088", "X_FORWARDED_PROTO=http"],
        &[],
    )]
    #[case::xfh_without_port(
        set(Some("*"), 2, &["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1, 198.51.100.2, 198.51.100.3"), ("X_FORWARDED_PROTO", "http"), ("X_FORWARDED_HOST", "app.example")],
        &["REMOTE_ADDR=198.51.100.2", "REMOTE_HOST=198.51.100.2", "SERVER_NAME=app.example", "SERVER_PORT=80", "HTTP_HOST=app.example", "X_FORWARDED_FOR=198.51.100.2, 198.51.100.3", "X_FORWARDED_HOST=app.example", "X_FORWARDED_PROTO=http"],
        &[],
    )]
    #[case::xfh_with_x_forwarded_port(
        set(Some("*"), 2, &["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1, 198.51.100.2, 198.51.100.3"), ("X_FORWARDED_PROTO", "http"), ("X_FORWARDED_HOST", "app.example"), ("X_FORWARDED_PORT", "8088")],
        &["REMOTE_ADDR=198.51.100.2", "REMOTE_HOST=198.51.100.2", "SERVER_NAME=app.example", "SERVER_PORT=8088", "HTTP_HOST=app.example:8088", "X_FORWARDED_FOR=198.51.100.2, 198.51.100.3", "X_FORWARDED_HOST=app.example", "X_FORWARDED_PROTO=http", "X_FORWARDED_PORT=8088"],
        &[],
    )]
    #[case::xfh_two_hosts_count_two(
        set(Some("*"), 2, &["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1, 198.51.100.2, 198.51.100.3"), ("X_FORWARDED_PROTO", "http"), ("X_FORWARDED_HOST", "app.example, app.internal"), ("X_FORWARDED_PORT", "8088")],
        &["REMOTE_ADDR=198.51.100.2", "REMOTE_HOST=198.51.100.2", "SERVER_NAME=app.example", "SERVER_PORT=8088", "HTTP_HOST=app.example:8088", "X_FORWARDED_FOR=198.51.100.2, 198.51.100.3", "X_FORWARDED_HOST=app.example, app.internal", "X_FORWARDED_PROTO=http", "X_FORWARDED_PORT=8088"],
        &[],
    )]
    #[case::xfh_two_hosts_count_one(
        set(Some("*"), 1, &["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1, 198.51.100.2, 198.51.100.3"), ("X_FORWARDED_PROTO", "http"), ("X_FORWARDED_HOST", "app.example, app.internal"), ("X_FORWARDED_PORT", "8088")],
        &["REMOTE_ADDR=198.51.100.3", "REMOTE_HOST=198.51.100.3", "SERVER_NAME=app.internal", "SERVER_PORT=8088", "HTTP_HOST=app.internal:8088", "X_FORWARDED_FOR=198.51.100.3", "X_FORWARDED_HOST=app.internal", "X_FORWARDED_PROTO=http", "X_FORWARDED_PORT=8088"],
        &[],
    )]
    #[case::forwarded_for_with_port(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "For=198.51.100.8:6060;host=app.example:8088;proto=https")],
        &["REMOTE_ADDR=198.51.100.8", "REMOTE_PORT=6060", "REMOTE_HOST=198.51.100.8", "SERVER_NAME=app.example", "SERVER_PORT=8088", "HTTP_HOST=app.example:8088", "URL_SCHEME=https", "FORWARDED=For=198.51.100.8:6060;host=app.example:8088;proto=https"],
        &[],
    )]
    #[case::forwarded_empty_pair_skipped(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "For=198.51.100.8;;proto=https;by=_hidden")],
        &["REMOTE_ADDR=198.51.100.8", "REMOTE_HOST=198.51.100.8", "SERVER_PORT=443", "URL_SCHEME=https", "FORWARDED=For=198.51.100.8;;proto=https;by=_hidden"],
        &[],
    )]
    #[case::forwarded_unknown_token_logged(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "For=198.51.100.8;host=app.example:8088;proto=https;secret=\"x\"")],
        &["REMOTE_ADDR=198.51.100.8", "REMOTE_HOST=198.51.100.8", "SERVER_NAME=app.example", "SERVER_PORT=8088", "HTTP_HOST=app.example:8088", "URL_SCHEME=https", "FORWARDED=For=198.51.100.8;host=app.example:8088;proto=https;secret=\"x\""],
        &["Unknown Forwarded token: secret"],
    )]
    #[case::star_without_trusted_headers_clears_all(
        set(Some("*"), 1, &[]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.8"), ("FORWARDED", "For=198.51.100.8;host=app.example:8088;proto=https")],
        &[],
        &[],
    )]
    #[case::port_80_with_https_shown(
        set(Some("*"), 1, &["x-forwarded-port", "x-forwarded-host", "x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PORT", "80"), ("X_FORWARDED_PROTO", "https"), ("X_FORWARDED_HOST", "app.example")],
        &["SERVER_NAME=app.example", "SERVER_PORT=80", "HTTP_HOST=app.example:80", "URL_SCHEME=https", "X_FORWARDED_HOST=app.example", "X_FORWARDED_PROTO=https", "X_FORWARDED_PORT=80"],
        &[],
    )]
    #[case::port_443_with_http_shown(
        set(Some("*"), 1, &["x-forwarded-port", "x-forwarded-host", "x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PORT", "443"), ("X_FORWARDED_PROTO", "http"), ("X_FORWARDED_HOST", "app.example")],
        &["SERVER_NAME=app.example", "SERVER_PORT=443", "HTTP_HOST=app.example:443", "X_FORWARDED_HOST=app.example", "X_FORWARDED_PROTO=http", "X_FORWARDED_PORT=443"],
        &[],
    )]
    #[case::gh452_xff_drops_spoofed_hop(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "evil, 1.2.3.4")],
        &["REMOTE_ADDR=1.2.3.4", "REMOTE_HOST=1.2.3.4", "X_FORWARDED_FOR=1.2.3.4"],
        &[],
    )]
    #[case::gh452_xfh_drops_spoofed_hop(
        set(Some("*"), 1, &["x-forwarded-host"]),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "evil.example, good.example")],
        &["SERVER_NAME=good.example", "HTTP_HOST=good.example", "X_FORWARDED_HOST=good.example"],
        &[],
    )]
    #[case::gh452_forwarded_drops_spoofed_element(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=evil;host=evil.example, for=1.2.3.4")],
        &["REMOTE_ADDR=1.2.3.4", "REMOTE_HOST=1.2.3.4", "FORWARDED=for=1.2.3.4"],
        &[],
    )]
    #[case::gh452_count_larger_than_hops(
        set(Some("*"), 5, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1 , 198.51.100.2")],
        &["REMOTE_ADDR=198.51.100.1", "REMOTE_HOST=198.51.100.1", "X_FORWARDED_FOR=198.51.100.1 , 198.51.100.2"],
        &[],
    )]
    #[case::gh452_count_zero_keeps_all(
        set(Some("*"), 0, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1, 198.51.100.2")],
        &["REMOTE_ADDR=198.51.100.1", "REMOTE_HOST=198.51.100.1", "X_FORWARDED_FOR=198.51.100.1, 198.51.100.2"],
        &[],
    )]
    #[case::gh452_forwarded_empty_element_kept(
        set(Some("*"), 2, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=198.51.100.1,,for=198.51.100.3")],
        &["REMOTE_ADDR=198.51.100.3", "REMOTE_HOST=198.51.100.3", "FORWARDED=,for=198.51.100.3"],
        &[],
    )]
    #[case::doc_xff_last_with_port(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "9.9.9.9, 8.8.8.8:1234")],
        &["REMOTE_ADDR=8.8.8.8", "REMOTE_PORT=1234", "REMOTE_HOST=8.8.8.8", "X_FORWARDED_FOR=8.8.8.8:1234"],
        &[],
    )]
    #[case::doc_host_proto_port(
        set(Some("*"), 1, &["x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "ex.com"), ("X_FORWARDED_PROTO", "https"), ("X_FORWARDED_PORT", "8443")],
        &["SERVER_NAME=ex.com", "SERVER_PORT=8443", "HTTP_HOST=ex.com:8443", "URL_SCHEME=https", "X_FORWARDED_HOST=ex.com", "X_FORWARDED_PROTO=https", "X_FORWARDED_PORT=8443"],
        &[],
    )]
    #[case::doc_forwarded_oldest_non_empty(
        set(Some("*"), 2, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=7.7.7.7;host=a.example;proto=http, for=8.8.8.8;host=b.example;proto=https, for=9.9.9.9")],
        &["REMOTE_ADDR=8.8.8.8", "REMOTE_HOST=8.8.8.8", "SERVER_NAME=b.example", "SERVER_PORT=443", "HTTP_HOST=b.example", "URL_SCHEME=https", "FORWARDED=for=8.8.8.8;host=b.example;proto=https, for=9.9.9.9"],
        &[],
    )]
    #[case::peer_must_match_exactly(
        set(Some("10.0.0.2"), 1, &["x-forwarded-for"]),
        "10.0.0.20",
        &[("X_FORWARDED_FOR", "198.51.100.1")],
        &[],
        &[],
    )]
    #[case::nothing_active(
        keeping(set(None, 1, &[])),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1"), ("FORWARDED", "for=x")],
        &["X_FORWARDED_FOR=198.51.100.1", "FORWARDED=for=x"],
        &[],
    )]
    #[case::untrusted_logged_in_fixed_order(
        logging(set(None, 1, &[])),
        "127.0.0.1",
        &[("FORWARDED", "for=x"), ("X_FORWARDED_BY", "b"), ("X_FORWARDED_FOR", "198.51.100.1")],
        &[],
        &["Removed untrusted headers (X-Forwarded-For, X-Forwarded-By, Forwarded). Waitress recommends these be removed upstream."],
    )]
    #[case::log_without_headers_is_silent(
        logging(set(None, 1, &[])),
        "127.0.0.1",
        &[],
        &[],
        &[],
    )]
    #[case::empty_header_still_removed(
        logging(set(None, 1, &[])),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "")],
        &[],
        &["Removed untrusted headers (X-Forwarded-Host). Waitress recommends these be removed upstream."],
    )]
    #[case::xff_quoted(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "\"198.51.100.5\"")],
        &["REMOTE_ADDR=198.51.100.5", "REMOTE_HOST=198.51.100.5", "X_FORWARDED_FOR=\"198.51.100.5\""],
        &[],
    )]
    #[case::xff_quoted_escapes(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "\"198.51.\\100.5\"")],
        &["REMOTE_ADDR=198.51.100.5", "REMOTE_HOST=198.51.100.5", "X_FORWARDED_FOR=\"198.51.\\100.5\""],
        &[],
    )]
    #[case::xff_bracketed_ipv6_with_port(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "\"[2001:db8::5]:4711\"")],
        &["REMOTE_ADDR=[2001:db8::5]:4711", "REMOTE_HOST=[2001:db8::5]:4711", "X_FORWARDED_FOR=\"[2001:db8::5]:4711\""],
        &[],
    )]
    #[case::xff_bracketed_ipv6(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "[2001:db8::5]")],
        &["REMOTE_ADDR=2001:db8::5", "REMOTE_HOST=2001:db8::5", "X_FORWARDED_FOR=[2001:db8::5]"],
        &[],
    )]
    #[case::xff_v4_mapped_splits_quirk(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "::ffff:10.0.0.1")],
        &["REMOTE_ADDR=::ffff", "REMOTE_PORT=10.0.0.1", "REMOTE_HOST=::ffff", "X_FORWARDED_FOR=::ffff:10.0.0.1"],
        &[],
    )]
    #[case::xff_bracketed_with_port_double_bracket_quirk(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "[::1]:80")],
        &["REMOTE_ADDR=[::1]:80", "REMOTE_HOST=[::1]:80", "X_FORWARDED_FOR=[::1]:80"],
        &[],
    )]
    #[case::xff_empty_last_item(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1, ")],
        &["X_FORWARDED_FOR="],
        &[],
    )]
    #[case::xff_python_whitespace_stripped(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "evil,\u{a0}1.2.3.4\u{a0}")],
        &["REMOTE_ADDR=1.2.3.4", "REMOTE_HOST=1.2.3.4", "X_FORWARDED_FOR=1.2.3.4"],
        &[],
    )]
    #[case::xff_port_whitespace_stripped(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "\"198.51.100.1: 81 \"")],
        &["REMOTE_ADDR=198.51.100.1", "REMOTE_PORT=81", "REMOTE_HOST=198.51.100.1", "X_FORWARDED_FOR=\"198.51.100.1: 81 \""],
        &[],
    )]
    #[case::xfp_upper_case(
        set(Some("*"), 1, &["x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "HTTPS")],
        &["SERVER_PORT=443", "URL_SCHEME=https", "X_FORWARDED_PROTO=HTTPS"],
        &[],
    )]
    #[case::xfp_quoted(
        set(Some("*"), 1, &["x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "\"https\"")],
        &["SERVER_PORT=443", "URL_SCHEME=https", "X_FORWARDED_PROTO=\"https\""],
        &[],
    )]
    #[case::xfp_trusted_but_absent(
        logging(set(Some("*"), 1, &["x-forwarded-proto"])),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "198.51.100.1")],
        &[],
        &["Removed untrusted headers (X-Forwarded-For). Waitress recommends these be removed upstream."],
    )]
    #[case::xfport_alone(
        set(Some("*"), 1, &["x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_PORT", "8443")],
        &["SERVER_PORT=8443", "X_FORWARDED_PORT=8443"],
        &[],
    )]
    #[case::xfport_not_numeric_quirk(
        set(Some("*"), 1, &["x-forwarded-port", "x-forwarded-host"]),
        "127.0.0.1",
        &[("X_FORWARDED_PORT", "abc"), ("X_FORWARDED_HOST", "app.example")],
        &["SERVER_NAME=app.example", "SERVER_PORT=abc", "HTTP_HOST=app.example:abc", "X_FORWARDED_HOST=app.example", "X_FORWARDED_PORT=abc"],
        &[],
    )]
    #[case::xfh_port_beats_xfport(
        set(Some("*"), 1, &["x-forwarded-port", "x-forwarded-host", "x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PORT", "8443"), ("X_FORWARDED_PROTO", "https"), ("X_FORWARDED_HOST", "app.example:9000")],
        &["SERVER_NAME=app.example", "SERVER_PORT=9000", "HTTP_HOST=app.example:9000", "URL_SCHEME=https", "X_FORWARDED_HOST=app.example:9000", "X_FORWARDED_PROTO=https", "X_FORWARDED_PORT=8443"],
        &[],
    )]
    #[case::xfh_empty_port(
        set(Some("*"), 1, &["x-forwarded-host", "x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "https"), ("X_FORWARDED_HOST", "app.example:")],
        &["SERVER_NAME=app.example", "HTTP_HOST=app.example:", "URL_SCHEME=https", "X_FORWARDED_HOST=app.example:", "X_FORWARDED_PROTO=https"],
        &[],
    )]
    #[case::xfh_bracketed_ipv6(
        set(Some("*"), 1, &["x-forwarded-host", "x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "[2001:db8::9]"), ("X_FORWARDED_PORT", "8080")],
        &["SERVER_NAME=[2001:db8::9]", "HTTP_HOST=[2001:db8::9]:8080", "X_FORWARDED_HOST=[2001:db8::9]", "X_FORWARDED_PORT=8080"],
        &[],
    )]
    #[case::xfh_bracketed_ipv6_with_port(
        set(Some("*"), 1, &["x-forwarded-host"]),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "[2001:db8::9]:8443")],
        &["SERVER_NAME=[2001:db8::9]", "SERVER_PORT=8443", "HTTP_HOST=[2001:db8::9]:8443", "X_FORWARDED_HOST=[2001:db8::9]:8443"],
        &[],
    )]
    #[case::xfh_default_port_for_scheme(
        set(Some("*"), 1, &["x-forwarded-host", "x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "app.example"), ("X_FORWARDED_PORT", "443"), ("URL_SCHEME", "https")],
        &["SERVER_NAME=app.example", "SERVER_PORT=443", "HTTP_HOST=app.example", "X_FORWARDED_HOST=app.example", "X_FORWARDED_PORT=443"],
        &[],
    )]
    #[case::xfh_keeps_case(
        set(Some("*"), 1, &["x-forwarded-host"]),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "App.Example")],
        &["SERVER_NAME=App.Example", "HTTP_HOST=App.Example", "X_FORWARDED_HOST=App.Example"],
        &[],
    )]
    #[case::forwarded_lower_cases_values(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "FOR=198.51.100.1;HOST=App.Example;PROTO=HTTPS")],
        &["REMOTE_ADDR=198.51.100.1", "REMOTE_HOST=198.51.100.1", "SERVER_NAME=app.example", "SERVER_PORT=443", "HTTP_HOST=app.example", "URL_SCHEME=https", "FORWARDED=FOR=198.51.100.1;HOST=App.Example;PROTO=HTTPS"],
        &[],
    )]
    #[case::forwarded_quoted_pair_in_host(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "host=\"app\\.example\"")],
        &["SERVER_NAME=app.example", "HTTP_HOST=app.example", "FORWARDED=host=\"app\\.example\""],
        &[],
    )]
    #[case::forwarded_trailing_blank_pair_stripped(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=198.51.100.1;  ")],
        &["REMOTE_ADDR=198.51.100.1", "REMOTE_HOST=198.51.100.1", "FORWARDED=for=198.51.100.1;"],
        &[],
    )]
    #[case::forwarded_leading_semicolon(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", ";for=198.51.100.1")],
        &["REMOTE_ADDR=198.51.100.1", "REMOTE_HOST=198.51.100.1", "FORWARDED=;for=198.51.100.1"],
        &[],
    )]
    #[case::forwarded_empty_value_ignored(
        logging(set(Some("*"), 1, &["forwarded"])),
        "127.0.0.1",
        &[("FORWARDED", ""), ("X_FORWARDED_FOR", "198.51.100.1")],
        &["FORWARDED="],
        &["Removed untrusted headers (X-Forwarded-For). Waitress recommends these be removed upstream."],
    )]
    #[case::forwarded_no_for_keeps_peer(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "host=app.example")],
        &["SERVER_NAME=app.example", "HTTP_HOST=app.example", "FORWARDED=host=app.example"],
        &[],
    )]
    #[case::forwarded_unknown_tokens_in_every_element(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "a=1, b=2;for=198.51.100.1")],
        &["REMOTE_ADDR=198.51.100.1", "REMOTE_HOST=198.51.100.1", "FORWARDED=b=2;for=198.51.100.1"],
        &["Unknown Forwarded token: a", "Unknown Forwarded token: b"],
    )]
    #[case::forwarded_later_duplicate_token_wins(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=198.51.100.1;for=198.51.100.2")],
        &["REMOTE_ADDR=198.51.100.2", "REMOTE_HOST=198.51.100.2", "FORWARDED=for=198.51.100.1;for=198.51.100.2"],
        &[],
    )]
    #[case::forwarded_overrides_x_forwarded_but_xff_is_fallback(
        set(Some("*"), 1, &["forwarded", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto"]),
        "127.0.0.1",
        &[("FORWARDED", "host=app.example"), ("X_FORWARDED_FOR", "198.51.100.1"), ("X_FORWARDED_PORT", "8443"), ("X_FORWARDED_PROTO", "https")],
        &["REMOTE_ADDR=198.51.100.1", "REMOTE_HOST=198.51.100.1", "SERVER_NAME=app.example", "HTTP_HOST=app.example", "FORWARDED=host=app.example"],
        &[],
    )]
    fn rewrites_like_waitress(
        #[case] settings: ProxySettings,
        #[case] peer: &str,
        #[case] headers: &[(&str, &str)],
        #[case] expected: &[&str],
        #[case] expected_warnings: &[&str],
    ) {
        let before = env(peer, headers);
        let mut after = before.clone();
        let warnings = apply(&settings, &mut after).expect("accepted");
        assert_eq!(changes(&before, &after), expected);
        assert_eq!(warnings, expected_warnings);
    }

    /// Malformed headers from a trusted peer: label, reason, value and log lines as
    /// Waitress 3.0.2 gives them.
    #[rstest]
    #[case::bogus_proto(
        set(Some("10.0.0.2"), 1, &["x-forwarded-proto"]),
        "10.0.0.2",
        &[("X_FORWARDED_PROTO", "http://evil.example?u=HTTP")],
        "X-Forwarded-Proto",
        "unsupported proto value",
        "http://evil.example?u=http",
        &["Malformed proxy header \"X-Forwarded-Proto\" from \"10.0.0.2\": unsupported proto value value: http://evil.example?u=http"],
    )]
    #[case::forwarded_token_whitespace(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "For=198.51.100.1; proto =https")],
        "Forwarded",
        "Token may not be surrounded by whitespace",
        "For=198.51.100.1; proto =https",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Token may not be surrounded by whitespace value: For=198.51.100.1; proto =https"],
    )]
    #[case::forwarded_value_whitespace(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "For= \"198.51.100.1\"; proto =https")],
        "Forwarded",
        "Value may not be surrounded by whitespace",
        "For= \"198.51.100.1\"; proto =https",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Value may not be surrounded by whitespace value: For= \"198.51.100.1\"; proto =https"],
    )]
    #[case::forwarded_pair_without_equals(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "For")],
        "Forwarded",
        "Invalid forwarded-pair missing \"=\"",
        "For",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Invalid forwarded-pair missing \"=\" value: For"],
    )]
    #[case::xfp_two_values(
        set(Some("*"), 1, &["x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "https, http")],
        "X-Forwarded-Proto",
        "Unspecified behavior for multiple values found in header",
        "https, http",
        &["Malformed proxy header \"X-Forwarded-Proto\" from \"127.0.0.1\": Unspecified behavior for multiple values found in header value: https, http"],
    )]
    #[case::xfport_two_values(
        set(Some("*"), 1, &["x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_PORT", "80, 443")],
        "X-Forwarded-Port",
        "Unspecified behavior for multiple values found in header",
        "80, 443",
        &["Malformed proxy header \"X-Forwarded-Port\" from \"127.0.0.1\": Unspecified behavior for multiple values found in header value: 80, 443"],
    )]
    #[case::xff_open_quote(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "\"bar")],
        "X-Forwarded-For",
        "Invalid quoting in value",
        "\"bar",
        &["Malformed proxy header \"X-Forwarded-For\" from \"127.0.0.1\": Invalid quoting in value value: \"bar"],
    )]
    #[case::xfh_open_quote(
        set(Some("*"), 1, &["x-forwarded-host"]),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "\"bar")],
        "X-Forwarded-Host",
        "Invalid quoting in value",
        "\"bar",
        &["Malformed proxy header \"X-Forwarded-Host\" from \"127.0.0.1\": Invalid quoting in value value: \"bar"],
    )]
    #[case::xff_bad_quote_in_untrusted_hop(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "bar\", 198.51.100.1")],
        "X-Forwarded-For",
        "Invalid quoting in value",
        "bar\", 198.51.100.1",
        &["Malformed proxy header \"X-Forwarded-For\" from \"127.0.0.1\": Invalid quoting in value value: bar\", 198.51.100.1"],
    )]
    #[case::xff_quote_not_closing_at_end(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "\"a\"b\"")],
        "X-Forwarded-For",
        "Invalid quoting in value",
        "\"a\"b\"",
        &["Malformed proxy header \"X-Forwarded-For\" from \"127.0.0.1\": Invalid quoting in value value: \"a\"b\""],
    )]
    #[case::xff_lone_quote(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "\"")],
        "X-Forwarded-For",
        "Invalid quoting in value",
        "\"",
        &["Malformed proxy header \"X-Forwarded-For\" from \"127.0.0.1\": Invalid quoting in value value: \""],
    )]
    #[case::xff_escaped_closing_quote(
        set(Some("*"), 1, &["x-forwarded-for"]),
        "127.0.0.1",
        &[("X_FORWARDED_FOR", "\"a\\\"")],
        "X-Forwarded-For",
        "Invalid quoting in value",
        "\"a\\\"",
        &["Malformed proxy header \"X-Forwarded-For\" from \"127.0.0.1\": Invalid quoting in value value: \"a\\\""],
    )]
    #[case::xfh_control_char_in_quotes(
        set(Some("*"), 1, &["x-forwarded-host"]),
        "127.0.0.1",
        &[("X_FORWARDED_HOST", "\"a\u{7f}b\"")],
        "X-Forwarded-Host",
        "Invalid quoting in value",
        "\"a\u{7f}b\"",
        &["Malformed proxy header \"X-Forwarded-Host\" from \"127.0.0.1\": Invalid quoting in value value: \"a\u{7f}b\""],
    )]
    #[case::xfp_quoted_list(
        set(Some("*"), 1, &["x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "\"http,https\"")],
        "X-Forwarded-Proto",
        "Unspecified behavior for multiple values found in header",
        "\"http,https\"",
        &["Malformed proxy header \"X-Forwarded-Proto\" from \"127.0.0.1\": Unspecified behavior for multiple values found in header value: \"http,https\""],
    )]
    #[case::xfp_bad_quote(
        set(Some("*"), 1, &["x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "https\"")],
        "X-Forwarded-Proto",
        "Invalid quoting in value",
        "https\"",
        &["Malformed proxy header \"X-Forwarded-Proto\" from \"127.0.0.1\": Invalid quoting in value value: https\""],
    )]
    #[case::xfp_unsupported_upper(
        set(Some("*"), 1, &["x-forwarded-proto"]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "FTP")],
        "X-Forwarded-Proto",
        "unsupported proto value",
        "ftp",
        &["Malformed proxy header \"X-Forwarded-Proto\" from \"127.0.0.1\": unsupported proto value value: ftp"],
    )]
    #[case::xfport_bad_quote(
        set(Some("*"), 1, &["x-forwarded-port"]),
        "127.0.0.1",
        &[("X_FORWARDED_PORT", "\"443")],
        "X-Forwarded-Port",
        "Invalid quoting in value",
        "\"443",
        &["Malformed proxy header \"X-Forwarded-Port\" from \"127.0.0.1\": Invalid quoting in value value: \"443"],
    )]
    #[case::forwarded_proto_unsupported(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=198.51.100.1;proto=WS")],
        "Forwarded Proto=",
        "unsupported proto value",
        "ws",
        &["Malformed proxy header \"Forwarded Proto=\" from \"127.0.0.1\": unsupported proto value value: ws"],
    )]
    #[case::forwarded_bad_quote_in_for(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=\"198.51.100.1")],
        "Forwarded",
        "Invalid quoting in value",
        "for=\"198.51.100.1",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Invalid quoting in value value: for=\"198.51.100.1"],
    )]
    #[case::forwarded_bad_quote_in_by(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "by=\"x;for=198.51.100.1")],
        "Forwarded",
        "Invalid quoting in value",
        "by=\"x;for=198.51.100.1",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Invalid quoting in value value: by=\"x;for=198.51.100.1"],
    )]
    #[case::forwarded_whitespace_pair(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=198.51.100.1; ;proto=http")],
        "Forwarded",
        "Invalid forwarded-pair missing \"=\"",
        "for=198.51.100.1; ;proto=http",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Invalid forwarded-pair missing \"=\" value: for=198.51.100.1; ;proto=http"],
    )]
    #[case::forwarded_value_trailing_space(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=198.51.100.1 ;proto=http")],
        "Forwarded",
        "Value may not be surrounded by whitespace",
        "for=198.51.100.1 ;proto=http",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Value may not be surrounded by whitespace value: for=198.51.100.1 ;proto=http"],
    )]
    #[case::forwarded_error_in_untrusted_element(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "junk, for=198.51.100.1")],
        "Forwarded",
        "Invalid forwarded-pair missing \"=\"",
        "junk, for=198.51.100.1",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Invalid forwarded-pair missing \"=\" value: junk, for=198.51.100.1"],
    )]
    #[case::forwarded_unknown_token_then_error(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "x=1, y=2;for")],
        "Forwarded",
        "Invalid forwarded-pair missing \"=\"",
        "x=1, y=2;for",
        &["Unknown Forwarded token: x", "Unknown Forwarded token: y", "Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Invalid forwarded-pair missing \"=\" value: x=1, y=2;for"],
    )]
    #[case::forwarded_quoted_comma_splits(
        set(Some("*"), 1, &["forwarded"]),
        "127.0.0.1",
        &[("FORWARDED", "for=\"a,b\"")],
        "Forwarded",
        "Invalid quoting in value",
        "for=\"a,b\"",
        &["Malformed proxy header \"Forwarded\" from \"127.0.0.1\": Invalid quoting in value value: for=\"a,b\""],
    )]
    #[case::xfp_checked_before_forwarded(
        set(Some("*"), 1, &["x-forwarded-proto", "forwarded"]),
        "127.0.0.1",
        &[("X_FORWARDED_PROTO", "a,b"), ("FORWARDED", "for")],
        "X-Forwarded-Proto",
        "Unspecified behavior for multiple values found in header",
        "a,b",
        &["Malformed proxy header \"X-Forwarded-Proto\" from \"127.0.0.1\": Unspecified behavior for multiple values found in header value: a,b"],
    )]
    fn refuses_like_waitress(
        #[case] settings: ProxySettings,
        #[case] peer: &str,
        #[case] headers: &[(&str, &str)],
        #[case] label: &str,
        #[case] reason: &str,
        #[case] value: &str,
        #[case] expected_warnings: &[&str],
    ) {
        let mut e = env(peer, headers);
        let m = apply(&settings, &mut e).expect_err("refused");
        assert_eq!(
            (m.header, m.reason, m.value.as_str()),
            (label, reason, value)
        );
        assert_eq!(m.warnings, expected_warnings);
        assert_eq!(
            malformed_body(&m),
            format!(
                "Bad Request\r\n\r\nHeader \"{label}\" malformed.\r\n\r\n(generated by server)"
            )
        );
    }

    /// Where Waitress crashes with an IndexError (a 500 from an uncaught exception), maitre
    /// answers the 400 of a malformed header instead.
    #[rstest]
    #[case::xff_nothing_before_port(
        set(Some("*"), 1, &["x-forwarded-for"]),
        &[("X_FORWARDED_FOR", "198.51.100.1, :1.2")],
        "X-Forwarded-For",
        ":1.2"
    )]
    #[case::xff_quoted_blank(
        set(Some("*"), 1, &["x-forwarded-for"]),
        &[("X_FORWARDED_FOR", "\" \"")],
        "X-Forwarded-For",
        " "
    )]
    #[case::forwarded_port_only(
        set(Some("*"), 1, &["forwarded"]),
        &[("FORWARDED", "for=:80")],
        "Forwarded",
        ":80"
    )]
    #[case::forwarded_quoted_blank(
        set(Some("*"), 1, &["forwarded"]),
        &[("FORWARDED", "for=\"\u{a0}\";proto=https")],
        "Forwarded",
        "\u{a0}"
    )]
    #[case::xff_fallback_blank_under_forwarded(
        set(Some("*"), 1, &["forwarded", "x-forwarded-for"]),
        &[("X_FORWARDED_FOR", "\" \""), ("FORWARDED", "host=app.example")],
        "X-Forwarded-For",
        " "
    )]
    fn empty_client_address_is_malformed(
        #[case] settings: ProxySettings,
        #[case] headers: &[(&str, &str)],
        #[case] label: &str,
        #[case] value: &str,
    ) {
        let mut e = env("127.0.0.1", headers);
        let m = apply(&settings, &mut e).expect_err("refused");
        assert_eq!(
            (m.header, m.reason, m.value.as_str()),
            (label, EMPTY_CLIENT, value)
        );
        assert_eq!(
            m.warnings,
            [format!(
                "Malformed proxy header \"{label}\" from \"127.0.0.1\": Empty client address value: {value}"
            )]
        );
    }

    /// Without a Host header, a forwarded host adds one.
    #[test]
    fn forwarded_host_creates_http_host() {
        let settings = set(Some("*"), 1, &["x-forwarded-host", "x-forwarded-proto"]);
        let mut e = ProxyEnv::new("127.0.0.1", "50000", "waitress.invalid", "8080", "http");
        e.set_header(ProxyHeader::XForwardedHost, Some("app.example".into()));
        e.set_header(ProxyHeader::XForwardedProto, Some("https".into()));
        assert_eq!(apply(&settings, &mut e), Ok(vec![]));
        assert_eq!(e.http_host.as_deref(), Some("app.example"));
        assert_eq!(
            (&*e.server_name, &*e.server_port, &*e.url_scheme),
            ("app.example", "443", "https")
        );
        assert_eq!((&*e.remote_addr, &*e.remote_port), ("127.0.0.1", "50000"));
    }

    /// Values lent by the caller stay borrowed when nothing changes them, and a #452
    /// rewrite of a borrowed value is a re-slice, not a copy.
    #[test]
    fn unchanged_values_stay_borrowed() {
        let settings = set(Some("*"), 1, &["x-forwarded-for"]);
        let mut e = env("127.0.0.1", &[("X_FORWARDED_FOR", "evil, 1.2.3.4")]);
        assert_eq!(apply(&settings, &mut e), Ok(vec![]));
        assert!(matches!(e.server_name, Cow::Borrowed("localhost")));
        assert!(matches!(e.url_scheme, Cow::Borrowed("http")));
        assert!(matches!(
            e.take_header(ProxyHeader::XForwardedFor),
            Some(Cow::Borrowed("1.2.3.4"))
        ));
    }

    /// A rewrite of an owned value keeps exactly the stripped tail.
    #[test]
    fn owned_values_are_rewritten_in_place() {
        let settings = set(Some("*"), 2, &["forwarded"]);
        let mut e = env("127.0.0.1", &[]);
        let value = "for=a, for=b ,\u{a0}for=c\u{a0}".to_string();
        e.set_header(ProxyHeader::Forwarded, Some(Cow::Owned(value)));
        assert_eq!(apply(&settings, &mut e), Ok(vec![]));
        assert_eq!(e.header(ProxyHeader::Forwarded), Some("for=b ,\u{a0}for=c"));
        assert_eq!(&*e.remote_addr, "b");
    }

    #[rstest]
    #[case::nothing_set(None, false, false)]
    #[case::clearing_only(None, true, true)]
    #[case::proxy_only(Some("10.0.0.2"), false, true)]
    fn active_when_waitress_installs_the_middleware(
        #[case] proxy: Option<&str>,
        #[case] clear: bool,
        #[case] active: bool,
    ) {
        let mut s = set(proxy, 1, &[]);
        s.clear_untrusted = clear;
        assert_eq!(s.is_active(), active);
    }

    #[rstest]
    #[case::star(Some("*"), "203.0.113.1", true)]
    #[case::same_address(Some("10.0.0.2"), "10.0.0.2", true)]
    #[case::other_address(Some("10.0.0.2"), "10.0.0.20", false)]
    #[case::unix_socket_peer(Some("localhost"), "localhost", true)]
    #[case::no_proxy(None, "10.0.0.2", false)]
    fn trusts_star_or_the_exact_peer(
        #[case] proxy: Option<&str>,
        #[case] peer: &str,
        #[case] trusted: bool,
    ) {
        assert_eq!(set(proxy, 1, &[]).trusts(peer), trusted);
    }

    #[test]
    fn settings_from_config() {
        let config = Config {
            trusted_proxy: Some("10.0.0.2".into()),
            trusted_proxy_count: Some(3),
            trusted_proxy_headers: BTreeSet::from([
                "x-forwarded-for".into(),
                "x-forwarded-host".into(),
            ]),
            log_untrusted_proxy_headers: true,
            clear_untrusted_proxy_headers: false,
            ..Config::default()
        };
        let s = ProxySettings::from_config(&config);
        assert_eq!(s.trusted_proxy.as_deref(), Some("10.0.0.2"));
        assert_eq!(s.trusted_proxy_count, 3);
        assert_eq!(
            s.trusted_proxy_headers.iter().collect::<Vec<_>>(),
            [ProxyHeader::XForwardedFor, ProxyHeader::XForwardedHost]
        );
        assert!(s.log_untrusted && !s.clear_untrusted);
        let defaults = ProxySettings::from_config(&Config::default());
        assert_eq!(defaults, set(None, 1, &[]));
    }

    #[rstest]
    #[case::xff(
        ProxyHeader::XForwardedFor,
        "x-forwarded-for",
        "X_FORWARDED_FOR",
        "HTTP_X_FORWARDED_FOR",
        "X-Forwarded-For"
    )]
    #[case::xfh(
        ProxyHeader::XForwardedHost,
        "x-forwarded-host",
        "X_FORWARDED_HOST",
        "HTTP_X_FORWARDED_HOST",
        "X-Forwarded-Host"
    )]
    #[case::xfp(
        ProxyHeader::XForwardedProto,
        "x-forwarded-proto",
        "X_FORWARDED_PROTO",
        "HTTP_X_FORWARDED_PROTO",
        "X-Forwarded-Proto"
    )]
    #[case::xfport(
        ProxyHeader::XForwardedPort,
        "x-forwarded-port",
        "X_FORWARDED_PORT",
        "HTTP_X_FORWARDED_PORT",
        "X-Forwarded-Port"
    )]
    #[case::xfby(
        ProxyHeader::XForwardedBy,
        "x-forwarded-by",
        "X_FORWARDED_BY",
        "HTTP_X_FORWARDED_BY",
        "X-Forwarded-By"
    )]
    #[case::forwarded(
        ProxyHeader::Forwarded,
        "forwarded",
        "FORWARDED",
        "HTTP_FORWARDED",
        "Forwarded"
    )]
    fn header_names(
        #[case] h: ProxyHeader,
        #[case] config: &str,
        #[case] wsgi: &str,
        #[case] environ: &str,
        #[case] display: &str,
    ) {
        assert_eq!(
            (
                h.config_name(),
                h.wsgi_name(),
                h.environ_key(),
                h.display_name()
            ),
            (config, wsgi, environ, display)
        );
        assert_eq!(ProxyHeader::from_config_name(config), Some(h));
        assert_eq!(ProxyHeader::from_wsgi_name(wsgi), Some(h));
        assert!(HeaderSet::EMPTY.with(h).contains(h) && !HeaderSet::ALL.without(h).contains(h));
    }

    #[test]
    fn config_knows_the_same_names() {
        let ours: BTreeSet<&str> = ProxyHeader::ALL.iter().map(|h| h.config_name()).collect();
        let theirs: BTreeSet<&str> = crate::config::KNOWN_PROXY_HEADERS.iter().copied().collect();
        assert_eq!(ours, theirs);
        assert_eq!(HeaderSet::from_config_names(ours), HeaderSet::ALL);
    }

    /// Waitress's quoted-string rules, one value at a time.
    #[rstest]
    #[case::plain("abc", Ok("abc"))]
    #[case::empty("", Ok(""))]
    #[case::quoted("\"abc\"", Ok("abc"))]
    #[case::quoted_empty("\"\"", Ok(""))]
    #[case::escapes("\"a\\\"b\\\\c\"", Ok("a\"b\\c"))]
    #[case::escaped_tab_and_obs_text("\"\\\t\\\u{e9}\"", Ok("\t\u{e9}"))]
    #[case::obs_text_and_space("\"caf\u{e9} x\"", Ok("caf\u{e9} x"))]
    #[case::inner_quote_unquoted("a\"b", Ok("a\"b"))]
    #[case::lone_quote("\"", Err(INVALID_QUOTING))]
    #[case::open_only("\"abc", Err(INVALID_QUOTING))]
    #[case::close_only("abc\"", Err(INVALID_QUOTING))]
    #[case::two_strings("\"a\",\"b\"", Err(INVALID_QUOTING))]
    #[case::escape_of_control("\"a\\\u{1}\"", Err(INVALID_QUOTING))]
    #[case::raw_control("\"a\u{1}\"", Err(INVALID_QUOTING))]
    #[case::raw_del("\"\u{7f}\"", Err(INVALID_QUOTING))]
    #[case::beyond_latin1("\"\u{100}\"", Err(INVALID_QUOTING))]
    fn undquote_cases(#[case] input: &str, #[case] expected: Result<&str, &str>) {
        assert_eq!(undquote(input).as_deref().map_err(|e| *e), expected);
    }
}
