//! Shared by both fuzz targets: how an input is read, and the checks on the
//! chunked decoder (the head target also decodes the body of chunked heads).
//!
//! Every input starts with a few control bytes that pick limits and split
//! points, so the fuzzer chooses them along with the wire bytes; the rest is
//! fed to the parser. The invariants are those of tests/parser_fuzz.rs.
#![allow(dead_code)] // Each target uses a different part of this module.

use maitre::http::chunked::{ChunkedDecoder, Decoded};
use maitre::http::errors::HttpError;

/// Splits an input into its `N` control bytes and the wire bytes.
pub fn split_control<const N: usize>(data: &[u8]) -> Option<([u8; N], &[u8])> {
    let control = data.get(..N)?.try_into().ok()?;
    Some((control, data.get(N..)?))
}

/// A control byte as a position in `0..=len` (a fraction of the length, so a
/// mutation that grows or shrinks the wire bytes keeps the cut in place).
pub fn cut(control: u8, len: usize) -> usize {
    usize::from(control) * len / 255
}

/// Bytes below 0x80 keep the production default; others pick a tiny limit,
/// where the 413 paths are.
pub fn body_limit(control: u8, default: u64) -> u64 {
    if control < 0x80 {
        default
    } else {
        u64::from(control & 0x7f) * 4
    }
}

/// How a whole feed ended: the body, then `Ok(Some(n))` when done after `n`
/// bytes, `Ok(None)` when more is needed, `Err` on an error. An error keeps no
/// body: what is handed out before it depends on the split (the run that
/// reaches the limit is refused whole).
pub type Outcome = (Vec<u8>, Result<Option<usize>, HttpError>);

/// Feeds `input` to a fresh decoder, cut at `cuts` (sorted, each `<= len`),
/// checking every call's contract on the way.
pub fn decode_pieces(input: &[u8], max_body: u64, cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new(max_body);
    let mut body = Vec::new();
    let mut start = 0;
    for stop in cuts.iter().copied().chain([input.len()]) {
        if stop < start {
            continue;
        }
        let mut offset = start;
        loop {
            let piece = &input[offset..stop];
            let (consumed, decoded) = match decoder.decode(piece) {
                Ok(step) => step,
                Err(e) => {
                    // Once failed, the decoder keeps failing the same way.
                    assert_eq!(decoder.decode(b"0\r\n\r\n"), Err(e.clone()));
                    return (Vec::new(), Err(e));
                }
            };
            assert!(
                consumed <= piece.len(),
                "consumed {consumed} of {}",
                piece.len()
            );
            offset += consumed;
            // Every consumed byte counts towards the limit, and a feed still
            // going has stayed under it (nothing consumed is no byte to count).
            assert_eq!(decoder.wire_len(), offset as u64);
            assert!(offset == 0 || decoder.wire_len() < max_body);
            match decoded {
                Decoded::Data(range) => {
                    assert!(
                        range.start < range.end && range.end <= consumed,
                        "{range:?} beyond {consumed}"
                    );
                    body.extend_from_slice(&piece[range]);
                    assert!(!decoder.is_done());
                }
                Decoded::NeedMore => {
                    assert_eq!(consumed, piece.len(), "NeedMore left bytes");
                    assert!(!decoder.is_done());
                    break;
                }
                Decoded::Done => {
                    assert!(decoder.is_done());
                    assert_eq!(decoder.decoded_len(), body.len() as u64);
                    // Done is final and takes nothing more.
                    assert_eq!(decoder.decode(&input[offset..]), Ok((0, Decoded::Done)));
                    return (body, Ok(Some(offset)));
                }
            }
        }
        start = stop;
    }
    assert_eq!(decoder.decoded_len(), body.len() as u64);
    (body, Ok(None))
}

/// The decoder's answer must not depend on how the bytes arrive: whole, cut
/// at the fuzzer's points, or one byte at a time.
pub fn check_chunked(input: &[u8], max_body: u64, cuts: &[usize]) {
    let whole = decode_pieces(input, max_body, &[]);
    let mut cuts = cuts.to_vec();
    cuts.sort_unstable();
    let split = decode_pieces(input, max_body, &cuts);
    assert_eq!(split, whole, "cut at {cuts:?}");
    let every: Vec<usize> = (1..input.len()).collect();
    let trickled = decode_pieces(input, max_body, &every);
    assert_eq!(trickled, whole, "fed one byte at a time");
}
