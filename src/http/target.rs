//! The request target as the WSGI environ sees it: `PATH_INFO` bytes and `QUERY_STRING`.
//!
//! Waitress 3.0.2 cuts the target with Python's `urllib.parse.urlsplit` (CPython 3.11.4+
//! semantics), except for targets starting with `//`, which it splits by hand because
//! `urlsplit` would read them as a scheme-less authority. The path is then percent-decoded
//! to bytes (PEP 3333 "bytes in str": the caller decodes them as latin-1) and its leading
//! slashes are collapsed. `url_prefix` is applied afterwards, by [`apply_prefix`].
//!
//! Where `urlsplit` raises instead of answering (an unmatched `[`/`]` in the authority of
//! an absolute-form target, or a bracketed host that is not an IP address, such as
//! `http://[::1/x` or `http://[foo]/x`), Waitress lets the exception escape its parser and
//! drops the connection without a response. [`split_target`] never fails: it skips that
//! validation and splits such targets exactly as `urlsplit` would split a well-formed one
//! (authority up to the first `/`, `?` or `#`), so `http://[::1/x?q` gives path `/x` and
//! query `q`. Rejecting them is the request parser's business, not this module's.

use std::borrow::Cow;

/// A request target split into its WSGI parts: borrowed from the target
/// unless decoding changed them (every request goes through here; most
/// targets need no copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target<'a> {
    /// Percent-decoded path with leading repeated slashes collapsed to one; `PATH_INFO`
    /// (before `url_prefix`) once decoded as latin-1.
    pub path: Cow<'a, [u8]>,
    /// The raw query (`QUERY_STRING`): not decoded, fragment removed, empty if none.
    pub query: Cow<'a, [u8]>,
}

/// Splits a raw request target (as in `RequestHead::target`) into path and query.
pub fn split_target(target: &[u8]) -> Target<'_> {
    let (path, query) = if target.starts_with(b"//") {
        split_by_hand(target)
    } else {
        match clean_like_urlsplit(target) {
            Cow::Borrowed(url) => {
                let (path, query) = split_like_urlsplit(url);
                (Cow::Borrowed(path), Cow::Borrowed(query))
            }
            Cow::Owned(url) => {
                let (path, query) = split_like_urlsplit(&url);
                (Cow::Owned(path.to_vec()), Cow::Owned(query.to_vec()))
            }
        }
    };
    let path = match path {
        Cow::Borrowed(p) => percent_decode(p),
        Cow::Owned(p) => Cow::Owned(percent_decode(&p).into_owned()),
    };
    Target {
        path: collapse_leading_slashes(path),
        query,
    }
}

/// `url_prefix` handling: the path equal to the prefix becomes empty, a path under
/// `prefix + "/"` loses the prefix, anything else is left unchanged (`SCRIPT_NAME` is the
/// prefix either way; that is the caller's business). An empty prefix changes nothing.
///
/// The prefix is compared as Waitress compares it, with the path decoded as latin-1: a
/// prefix holding a character above U+00FF can never match.
pub fn apply_prefix<'a>(path: &'a [u8], url_prefix: &str) -> &'a [u8] {
    if url_prefix.is_empty() {
        return path;
    }
    let Some(prefix) = latin1(url_prefix) else {
        return path;
    };
    if path == &prefix[..] {
        return b"";
    }
    match path.strip_prefix(&prefix[..]) {
        Some(rest) if rest.starts_with(b"/") => rest,
        _ => path,
    }
}

/// `//`-targets: the fragment goes first (at the first `#`), then the query (at the first
/// `?`); everything else, authority-looking part included, is path.
fn split_by_hand(target: &[u8]) -> (Cow<'_, [u8]>, Cow<'_, [u8]>) {
    let before_fragment = cut_at(target, b'#').0;
    let (path, query) = cut_at(before_fragment, b'?');
    (
        Cow::Borrowed(path),
        Cow::Borrowed(query.unwrap_or_default()),
    )
}

/// What `urlsplit` does to its input before splitting: leading C0 controls and spaces are
/// stripped, and every TAB, CR and LF is removed wherever it is.
fn clean_like_urlsplit(target: &[u8]) -> Cow<'_, [u8]> {
    let start = target
        .iter()
        .position(|&b| b > b' ')
        .unwrap_or(target.len());
    let url = &target[start..];
    if url.iter().any(|b| matches!(b, b'\t' | b'\r' | b'\n')) {
        Cow::Owned(
            url.iter()
                .copied()
                .filter(|b| !matches!(b, b'\t' | b'\r' | b'\n'))
                .collect(),
        )
    } else {
        Cow::Borrowed(url)
    }
}

/// `urlsplit`'s path and query for a cleaned target (scheme and authority dropped, fragment
/// removed). The authority is not validated (see the module documentation).
fn split_like_urlsplit(url: &[u8]) -> (&[u8], &[u8]) {
    let mut url = strip_scheme(url);
    if url.starts_with(b"//") {
        let end = url[2..]
            .iter()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .map_or(url.len(), |i| i + 2);
        url = &url[end..];
    }
    let before_fragment = cut_at(url, b'#').0;
    let (path, query) = cut_at(before_fragment, b'?');
    (path, query.unwrap_or_default())
}

/// A scheme is a letter followed by letters, digits, `+`, `-` or `.`, up to the first `:`.
fn strip_scheme(url: &[u8]) -> &[u8] {
    let Some(colon) = url.iter().position(|&b| b == b':') else {
        return url;
    };
    let scheme = &url[..colon];
    let is_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if is_scheme {
        &url[colon + 1..]
    } else {
        url
    }
}

/// Splits at the first `sep`: `(before, Some(after))`, or `(all, None)` without one.
fn cut_at(s: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == sep) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Python's `unquote_to_bytes`: `%XX` with two hex digits (either case) becomes the byte;
/// any other `%` stays literal and scanning resumes right after it; `+` is not a space.
fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let escaped = match (s[i], s.get(i + 1), s.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex_value(hi).zip(hex_value(lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A path starting with `/` keeps exactly one leading slash; inner slashes stay. This runs
/// on the decoded path, so `/%2F%2Fx` collapses too.
fn collapse_leading_slashes(path: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    let slashes = path.iter().take_while(|&&b| b == b'/').count();
    if slashes <= 1 {
        return path;
    }
    match path {
        Cow::Borrowed(p) => Cow::Borrowed(&p[slashes - 1..]),
        Cow::Owned(mut p) => {
            p.drain(..slashes - 1);
            Cow::Owned(p)
        }
    }
}

/// The latin-1 bytes of `s`, or `None` if a character does not fit in one byte.
fn latin1(s: &str) -> Option<Cow<'_, [u8]>> {
    if s.is_ascii() {
        return Some(Cow::Borrowed(s.as_bytes()));
    }
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Expected values were checked against Waitress 3.0.2 (`parser.split_uri` plus the
    /// slash handling of `WSGITask.get_environment`) on CPython 3.11.
    #[rstest]
    #[case::origin_simple(b"/x/y", b"/x/y", b"")]
    #[case::root(b"/", b"/", b"")]
    #[case::query(b"/search?q=1&r=2", b"/search", b"q=1&r=2")]
    #[case::empty_query(b"/p?", b"/p", b"")]
    #[case::query_keeps_second_qmark(b"/p?a=1?b=2", b"/p", b"a=1?b=2")]
    #[case::fragment_removed(b"/p#frag", b"/p", b"")]
    #[case::fragment_after_query(b"/p?q=1#frag", b"/p", b"q=1")]
    #[case::qmark_inside_fragment(b"/p#f?x", b"/p", b"")]
    #[case::absolute_form(b"http://h:81/x?q", b"/x", b"q")]
    #[case::absolute_form_https(b"https://example.com/a/b", b"/a/b", b"")]
    #[case::absolute_form_no_path(b"http://example.com", b"", b"")]
    #[case::absolute_form_query_no_path(b"http://example.com?x=1", b"", b"x=1")]
    #[case::absolute_form_fragment_no_path(b"http://example.com#top", b"", b"")]
    #[case::absolute_form_upper_scheme(b"HTTP://Example.com/Up", b"/Up", b"")]
    #[case::absolute_form_userinfo(b"http://u:p@h/x", b"/x", b"")]
    #[case::absolute_form_ipv6(b"http://[::1]:8080/v6?z", b"/v6", b"z")]
    #[case::absolute_form_empty_authority(b"http:///x", b"/x", b"")]
    #[case::absolute_form_many_slashes(b"http:////x//y", b"/x//y", b"")]
    #[case::scheme_only(b"http:", b"", b"")]
    #[case::scheme_then_path(b"http:/x", b"/x", b"")]
    #[case::scheme_then_relative(b"http:x", b"x", b"")]
    #[case::other_scheme(b"mailto:a@b", b"a@b", b"")]
    #[case::scheme_like_with_digit_first(b"1a:b", b"1a:b", b"")]
    #[case::scheme_like_with_percent(b"a%b:c", b"a%b:c", b"")]
    #[case::colon_later_in_path(b"/a:b", b"/a:b", b"")]
    #[case::double_slash_by_hand(b"//x//y", b"/x//y", b"")]
    #[case::double_slash_query(b"//a?b#c", b"/a", b"b")]
    #[case::double_slash_fragment_before_query(b"//a#b?c", b"/a", b"")]
    #[case::triple_slash(b"///x", b"/x", b"")]
    #[case::double_slash_non_ascii(b"//caf\xc3\xa9?\xff", b"/caf\xc3\xa9", b"\xff")]
    #[case::asterisk(b"*", b"*", b"")]
    #[case::relative(b"foo", b"foo", b"")]
    #[case::relative_query(b"foo?bar", b"foo", b"bar")]
    #[case::pct_slash(b"/a%2Fb", b"/a/b", b"")]
    #[case::pct_slash_lower(b"/a%2fb", b"/a/b", b"")]
    #[case::pct_qmark(b"/a%3Fb?c", b"/a?b", b"c")]
    #[case::pct_hash(b"/a%23b", b"/a#b", b"")]
    #[case::pct_invalid(b"/%zz/%4", b"/%zz/%4", b"")]
    #[case::pct_half_valid(b"/%%41", b"/%A", b"")]
    #[case::pct_at_end(b"/x%", b"/x%", b"")]
    #[case::pct_dot_dot(b"/%2e%2e/etc", b"/../etc", b"")]
    #[case::pct_high_byte(b"/caf%C3%A9", b"/caf\xc3\xa9", b"")]
    #[case::pct_nul(b"/a%00b", b"/a\x00b", b"")]
    #[case::plus_kept(b"/a+b?c+d", b"/a+b", b"c+d")]
    #[case::query_not_decoded(b"/p?x=%20%2F", b"/p", b"x=%20%2F")]
    #[case::leading_slashes_decoded(b"/%2F%2Fx", b"/x", b"")]
    #[case::leading_slashes_collapsed_inner_kept(b"/x//y", b"/x//y", b"")]
    #[case::tab_removed(b"/a\x09b", b"/ab", b"")]
    #[case::leading_control_stripped(b"\x01\x1f/x", b"/x", b"")]
    #[case::leading_control_then_double_slash(b"\x01//host/p", b"/p", b"")]
    #[case::double_slash_keeps_tab(b"//a\x09b", b"/a\x09b", b"")]
    #[case::empty_after_strip(b"\x01", b"", b"")]
    #[case::nul_and_del(b"/a\x00\x7f", b"/a\x00\x7f", b"")]
    #[case::absolute_form_pct_in_path(b"http://h/%41%2F", b"/A/", b"")]
    fn splits_like_waitress(#[case] target: &[u8], #[case] path: &[u8], #[case] query: &[u8]) {
        let split = split_target(target);
        assert_eq!(
            (&split.path[..], &split.query[..]),
            (path, query),
            "target {:?}",
            String::from_utf8_lossy(target)
        );
    }

    /// Targets Python's `urlsplit` refuses (Waitress drops the connection): split as if the
    /// authority were valid, never panic.
    #[rstest]
    #[case::unmatched_open_bracket(b"http://[::1/x?q", b"/x", b"q")]
    #[case::unmatched_close_bracket(b"http://::1]/x", b"/x", b"")]
    #[case::bracketed_non_ip(b"http://[foo]/y#z", b"/y", b"")]
    #[case::bracket_only_authority(b"http://[", b"", b"")]
    #[case::non_ascii_absolute_form(b"http://h/\xe9", b"/\xe9", b"")]
    fn never_panics_on_what_urlsplit_rejects(
        #[case] target: &[u8],
        #[case] path: &[u8],
        #[case] query: &[u8],
    ) {
        let split = split_target(target);
        assert_eq!((&split.path[..], &split.query[..]), (path, query));
    }

    #[rstest]
    #[case::no_prefix(b"/app/x", "", b"/app/x")]
    #[case::equal_to_prefix(b"/app", "/app", b"")]
    #[case::under_prefix(b"/app/x/y", "/app", b"/x/y")]
    #[case::prefix_then_slash_only(b"/app/", "/app", b"/")]
    #[case::longer_segment_kept(b"/application/x", "/app", b"/application/x")]
    #[case::outside_prefix(b"/other", "/app", b"/other")]
    #[case::shorter_than_prefix(b"/ap", "/app", b"/ap")]
    #[case::case_sensitive(b"/APP/x", "/app", b"/APP/x")]
    #[case::nested_prefix(b"/a/b/c", "/a/b", b"/c")]
    #[case::root_prefix_keeps_path(b"/x", "/", b"/x")]
    #[case::root_prefix_root_path(b"/", "/", b"")]
    #[case::asterisk(b"*", "/app", b"*")]
    #[case::empty_path(b"", "/app", b"")]
    #[case::latin1_prefix(b"/caf\xe9/x", "/caf\u{e9}", b"/x")]
    #[case::utf8_bytes_do_not_match_latin1_prefix(
        b"/caf\xc3\xa9/x",
        "/caf\u{e9}",
        b"/caf\xc3\xa9/x"
    )]
    #[case::prefix_beyond_latin1(b"/\xe2\x82\xac/x", "/\u{20ac}", b"/\xe2\x82\xac/x")]
    fn prefix_like_waitress(#[case] path: &[u8], #[case] prefix: &str, #[case] expected: &[u8]) {
        assert_eq!(apply_prefix(path, prefix), expected);
    }

    /// The whole chain as the environ builder runs it: decode, collapse, then the prefix.
    #[rstest]
    #[case::decoded_slash_reaches_prefix(b"/app%2Fx", "/app", b"/x")]
    #[case::collapsed_before_prefix(b"//app/x", "/app", b"/x")]
    #[case::absolute_form_with_prefix(b"http://h/app?q", "/app", b"")]
    fn split_then_prefix(#[case] target: &[u8], #[case] prefix: &str, #[case] expected: &[u8]) {
        assert_eq!(apply_prefix(&split_target(target).path, prefix), expected);
    }
}
