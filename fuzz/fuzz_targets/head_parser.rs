//! Fuzzes the request-head parser (`parse_head`, `parse_head_from`).
//!
//! Input: 4 control bytes, then the wire bytes of a request.
//! - byte 0: `max_header` (below 0x80: the default 64 KiB; else 1..=509);
//! - byte 1: `max_body` (below 0x80: the default 1 GiB; else 0..=508);
//! - bytes 2 and 3: two split points, as fractions of the request's length.
//!
//! Checked (the invariants of tests/parser_fuzz.rs): no panic; Skip and Head
//! never claim more bytes than given; errors are 400/413/431/501 and a 431 is
//! answered as HTTP/1.0; fed in two cuts, resuming the terminator search where
//! the last Incomplete stopped, every prefix is Incomplete or the whole
//! buffer's answer (and resuming changes nothing); a parsed head written back
//! (method SP target SP version CRLF, headers CRLF, CRLF) parses to an equal
//! `RequestHead`; the body of a chunked head decodes the same however split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maitre::http::errors::HttpError;
use maitre::http::parser::{parse_head, parse_head_from, HeadLimits, Parsed};
use maitre::http::request::{BodyFraming, RequestHead, Version};

mod common;

use common::{body_limit, check_chunked, cut, split_control};

fuzz_target!(|data: &[u8]| {
    let Some(([header, body, a, b], input)) = split_control::<4>(data) else {
        return;
    };
    let limits = HeadLimits {
        max_header: header_limit(header),
        max_body: body_limit(body, 1 << 30),
    };
    let whole = parse_head(input, &limits);
    check_parsed(input, &whole);
    let mut cuts = [cut(a, input.len()), cut(b, input.len())];
    cuts.sort_unstable();
    check_splits(input, &limits, &whole, &cuts);
    if let Ok(Parsed::Head { head, consumed }) = &whole {
        check_round_trip(head, &limits);
        if head.framing == BodyFraming::Chunked {
            let rest = &input[*consumed..];
            let cuts = [cut(a, rest.len()), cut(b, rest.len())];
            check_chunked(rest, limits.max_body, &cuts);
        }
    }
});

fn header_limit(control: u8) -> usize {
    if control < 0x80 {
        64 * 1024
    } else {
        1 + usize::from(control & 0x7f) * 4
    }
}

fn check_parsed(input: &[u8], result: &Result<Parsed, HttpError>) {
    match result {
        Ok(Parsed::Skip(n)) => assert!(*n > 0 && *n <= input.len(), "skip {n} of {}", input.len()),
        Ok(Parsed::Head { consumed, .. }) => {
            assert!(
                *consumed <= input.len(),
                "consumed {consumed} of {}",
                input.len()
            )
        }
        Ok(Parsed::Incomplete) => {}
        Err(e) => {
            assert!(matches!(e.status, 400 | 413 | 431 | 501), "{e:?}");
            if e.status == 431 {
                assert_eq!(e.version, Version::Http10);
            }
        }
    }
}

/// Feeds the prefixes ending at `cuts` (sorted) then the whole input, each
/// time resuming the terminator search where the last Incomplete left off.
fn check_splits(
    input: &[u8],
    limits: &HeadLimits,
    whole: &Result<Parsed, HttpError>,
    cuts: &[usize],
) {
    let mut scanned = 0;
    for &end in cuts.iter().chain([&input.len()]) {
        let prefix = &input[..end];
        let got = parse_head_from(prefix, limits, scanned);
        check_parsed(prefix, &got);
        assert_eq!(
            got,
            parse_head(prefix, limits),
            "resumed at {scanned} of {end}"
        );
        match got {
            Ok(Parsed::Incomplete) => scanned = end,
            other => {
                assert_eq!(&other, whole, "prefix of {end} bytes");
                return;
            }
        }
    }
}

/// A parsed head written back in canonical form must parse to the same head.
fn check_round_trip(head: &RequestHead, limits: &HeadLimits) {
    let again = serialise(head);
    // The canonical form may be longer than the original (folds restated as
    // lines...), so only the body limit is kept.
    let roomy = HeadLimits {
        max_header: usize::MAX,
        ..*limits
    };
    match parse_head(&again, &roomy) {
        Ok(Parsed::Head {
            head: reparsed,
            consumed,
        }) => {
            assert_eq!(consumed, again.len());
            assert_eq!(
                &reparsed,
                head,
                "re-serialised {:?}",
                String::from_utf8_lossy(&again)
            );
        }
        other => panic!(
            "{:?} re-parsed as {other:?}",
            String::from_utf8_lossy(&again)
        ),
    }
}

/// method SP target SP version CRLF, one line per header, CRLF. Names come
/// back with `-` (a `_` can only have come from `-`: names with `_` are
/// dropped); framing the parser took out of the headers is restated.
fn serialise(head: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&head.target);
    out.push(b' ');
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        let name = name.replace('_', "-");
        // A value ending in ", " was joined with an empty repeat: one line
        // cannot carry that trailing space, so the empty repeats are restated.
        let mut value = &value[..];
        let mut empty_repeats = 0;
        while let Some(rest) = value.strip_suffix(b", ") {
            value = rest;
            empty_repeats += 1;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
        for _ in 0..empty_repeats {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b":\r\n");
        }
    }
    if head.framing == BodyFraming::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if head.close_after {
        // Content-Length beside chunked is what sets close_after.
        out.extend_from_slice(b"Content-Length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}
