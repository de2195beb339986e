//! Fuzzes `ChunkedDecoder`.
//!
//! Input: 3 control bytes, then the wire bytes of a chunked body.
//! - byte 0: `max_body` (below 0x80: Waitress's default 1 GiB; else 0..=508);
//! - bytes 1 and 2: two split points, as fractions of the body's length.
//!
//! Checked: no panic; each call consumes at most what it was given, hands out
//! Data ranges inside what it consumed, counts every consumed byte, and says
//! NeedMore only with everything consumed; the outcome (body, end, error) is
//! the same fed whole, cut at the two points, or one byte at a time. The wire
//! bytes are also used as a body: chunk-encoded (chunk sizes from bytes 1 and
//! 2), they must decode back to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

use common::{body_limit, check_chunked, cut, decode_pieces, split_control};

const DEFAULT_MAX_BODY: u64 = 1 << 30;

fuzz_target!(|data: &[u8]| {
    let Some(([limit, a, b], wire)) = split_control::<3>(data) else {
        return;
    };
    let cuts = [cut(a, wire.len()), cut(b, wire.len())];
    check_chunked(wire, body_limit(limit, DEFAULT_MAX_BODY), &cuts);

    let encoded = encode(wire, [usize::from(a) + 1, usize::from(b) + 1]);
    let expected = (wire.to_vec(), Ok(Some(encoded.len())));
    assert_eq!(decode_pieces(&encoded, DEFAULT_MAX_BODY, &[]), expected);
    let cuts = [cut(a, encoded.len()), cut(b, encoded.len())];
    check_chunked(&encoded, DEFAULT_MAX_BODY, &cuts);
});

/// `body` as a valid chunked body, chunk sizes alternating between `sizes`
/// (upper- and lower-case hex in turn), then the last chunk and no trailers.
fn encode(body: &[u8], sizes: [usize; 2]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut rest = body;
    let mut turn = 0;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(sizes[turn % 2].min(rest.len()));
        let size = if turn % 2 == 0 {
            format!("{:X}\r\n", chunk.len())
        } else {
            format!("{:x}\r\n", chunk.len())
        };
        out.extend_from_slice(size.as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
        rest = tail;
        turn += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
