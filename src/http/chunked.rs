//! Incremental decoder for chunked request bodies, matching Waitress's
//! `ChunkedReceiver` (with the request parser's wire-byte limit).
//!
//! Framing is read one byte at a time through a small state machine, so no
//! partial size line or trailer is ever buffered: the state is a few integers
//! however the input is split. Errors are found exactly where Waitress finds
//! them: a size line is judged when its CRLF arrives (extension first, then
//! size), a chunk terminator when two bytes are there, and every consumed
//! byte (data, framing, trailers) counts towards `max_body`, checked before
//! any framing error the same byte reveals.
use std::ops::Range;

use crate::http::errors::HttpError;
use crate::http::parser::is_tchar;
use crate::http::request::Version;

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes at this range of the input slice just given.
    Data(Range<usize>),
    /// All input consumed, the body is not finished.
    NeedMore,
    /// The last chunk and trailers were read; bytes after `consumed` belong to the next request.
    Done,
}

#[derive(Debug)]
pub struct ChunkedDecoder {
    max_body: u64,
    /// Wire bytes consumed so far: data, framing and trailers.
    wire: u64,
    decoded: u64,
    state: State,
    /// Once failed, every later call repeats the error.
    failed: Option<HttpError>,
}

#[derive(Clone, Copy, Debug)]
enum State {
    SizeLine(SizeLine),
    Data {
        remaining: u64,
    },
    /// After chunk data; `first` holds the first of the two bytes that must be CRLF.
    DataEnd {
        first: Option<u8>,
    },
    Trailer(Trailer),
    Done,
}

/// A size line being read: `1*HEXDIG *( ";" ext )` up to CRLF.
#[derive(Clone, Copy, Debug, Default)]
struct SizeLine {
    /// Any byte seen (an empty line is skipped, not an error).
    nonempty: bool,
    /// Saturating: a huge size simply runs into `max_body`.
    size: u64,
    digits: bool,
    /// A byte other than a hex digit came before the first `;`.
    bad_size: bool,
    /// None until the first `;`.
    ext: Option<Ext>,
    /// A CR was seen; it ends the line only if LF follows.
    cr: bool,
}

/// States of `(";" token ["=" (token / quoted-string)])*`, no whitespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// Just after `;`: a name must follow.
    NameStart,
    Name,
    /// Just after `=`.
    ValueStart,
    TokenValue,
    Quoted,
    QuotedEscape,
    QuotedEnd,
    Invalid,
}

impl Ext {
    fn step(self, b: u8) -> Ext {
        use Ext::*;
        match (self, b) {
            (NameStart | Name, b) if is_tchar(b) => Name,
            (Name | TokenValue | QuotedEnd, b';') => NameStart,
            (Name, b'=') => ValueStart,
            (ValueStart | TokenValue, b) if is_tchar(b) => TokenValue,
            (ValueStart, b'"') => Quoted,
            (Quoted, b'"') => QuotedEnd,
            (Quoted, b'\\') => QuotedEscape,
            (Quoted, b) if is_qdtext(b) => Quoted,
            (QuotedEscape, b) if is_quoted_pair_char(b) => Quoted,
            _ => Invalid,
        }
    }

    fn accepts(self) -> bool {
        matches!(self, Ext::Name | Ext::TokenValue | Ext::QuotedEnd)
    }
}

/// qdtext: HTAB, SP, VCHAR except `"` and `\`, obs-text.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// What may follow `\` in a quoted-string: HTAB, SP, VCHAR, obs-text.
fn is_quoted_pair_char(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff)
}

/// After the last chunk: either CRLF at once, or anything up to CRLFCRLF.
#[derive(Clone, Copy, Debug, Default)]
struct Trailer {
    /// How much of `\r\n\r\n` the latest bytes match.
    matched: u8,
    /// Bytes so far, saturating (only "is it 2" matters).
    len: u64,
}

const END: &[u8; 4] = b"\r\n\r\n";

/// What one framing byte did.
enum Step {
    Continue,
    Finished,
}

fn bad(detail: &str) -> HttpError {
    HttpError::bad_request(detail, Version::Http11)
}

impl ChunkedDecoder {
    /// `max_body` bounds the wire bytes (framing and trailers included): reaching it is a 413.
    pub fn new(max_body: u64) -> Self {
        ChunkedDecoder {
            max_body,
            wire: 0,
            decoded: 0,
            state: State::SizeLine(SizeLine::default()),
            failed: None,
        }
    }

    /// Total body bytes produced so far (the request's CONTENT_LENGTH once done).
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Wire bytes consumed so far, framing and trailers included.
    pub fn wire_len(&self) -> u64 {
        self.wire
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Decode from `input`; returns the bytes consumed and what they were.
    ///
    /// Returns at most one `Data` run per call (framing before it is consumed
    /// in the same call); `NeedMore` always means all of `input` was consumed.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), HttpError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok((pos, Decoded::Done)),
                State::Data { remaining } => {
                    let avail = input.len().saturating_sub(pos);
                    if avail == 0 {
                        return Ok((pos, Decoded::NeedMore));
                    }
                    let take = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                    self.count(take)?;
                    self.decoded = self.decoded.saturating_add(take as u64);
                    let remaining = remaining.saturating_sub(take as u64);
                    self.state = if remaining == 0 {
                        State::DataEnd { first: None }
                    } else {
                        State::Data { remaining }
                    };
                    return Ok((pos + take, Decoded::Data(pos..pos + take)));
                }
                _ => {
                    let Some(&b) = input.get(pos) else {
                        return Ok((pos, Decoded::NeedMore));
                    };
                    pos += 1;
                    self.count(1)?;
                    if let Err(e) = self.framing_byte(b) {
                        self.failed = Some(e.clone());
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Counts consumed wire bytes; the limit is `>=`, like Waitress's.
    fn count(&mut self, n: usize) -> Result<(), HttpError> {
        self.wire = self.wire.saturating_add(n as u64);
        if self.wire >= self.max_body {
            let e = HttpError::body_too_large(self.max_body, Version::Http11);
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }

    fn framing_byte(&mut self, b: u8) -> Result<(), HttpError> {
        self.state = match self.state {
            State::SizeLine(mut line) => match line.push(b) {
                Step::Continue => State::SizeLine(line),
                Step::Finished => line.finish()?,
            },
            State::DataEnd { first: None } => State::DataEnd { first: Some(b) },
            State::DataEnd { first: Some(first) } => {
                if [first, b] != *b"\r\n" {
                    return Err(bad("Chunk not properly terminated"));
                }
                State::SizeLine(SizeLine::default())
            }
            State::Trailer(mut trailer) => match trailer.push(b) {
                Step::Continue => State::Trailer(trailer),
                Step::Finished => State::Done,
            },
            // Data and Done never take single framing bytes.
            other => other,
        };
        Ok(())
    }
}

impl SizeLine {
    fn push(&mut self, b: u8) -> Step {
        if self.cr {
            if b == b'\n' {
                return Step::Finished;
            }
            // A CR not followed by LF is an ordinary (and invalid) line byte.
            self.cr = false;
            self.content(b'\r');
        }
        if b == b'\r' {
            self.cr = true;
        } else {
            self.content(b);
        }
        Step::Continue
    }

    fn content(&mut self, b: u8) {
        self.nonempty = true;
        match self.ext {
            Some(ext) => self.ext = Some(ext.step(b)),
            None if b == b';' => self.ext = Some(Ext::NameStart),
            None => match hex_value(b) {
                Some(d) => {
                    self.digits = true;
                    self.size = self.size.saturating_mul(16).saturating_add(u64::from(d));
                }
                // Includes a bare LF: unlike Python's `$`, no trailing newline is allowed.
                None => self.bad_size = true,
            },
        }
    }

    /// The state after this line's CRLF.
    fn finish(self) -> Result<State, HttpError> {
        if !self.nonempty {
            return Ok(State::SizeLine(SizeLine::default()));
        }
        if self.ext.is_some_and(|ext| !ext.accepts()) {
            return Err(bad("Invalid chunk extension"));
        }
        if self.bad_size || !self.digits {
            return Err(bad("Invalid chunk size"));
        }
        Ok(if self.size > 0 {
            State::Data {
                remaining: self.size,
            }
        } else {
            State::Trailer(Trailer::default())
        })
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl Trailer {
    fn push(&mut self, b: u8) -> Step {
        self.len = self.len.saturating_add(1);
        let next = END.get(usize::from(self.matched)).copied();
        self.matched = if next == Some(b) {
            self.matched + 1
        } else if b == b'\r' {
            1
        } else {
            0
        };
        // No trailers: the CRLF right after the last chunk ends the body.
        let bare_end = self.matched == 2 && self.len == 2;
        if bare_end || usize::from(self.matched) == END.len() {
            Step::Finished
        } else {
            Step::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// How a feed ended.
    #[derive(Debug, PartialEq, Eq)]
    enum End {
        /// Done, after consuming this many bytes of the whole input.
        Done(usize),
        NeedMore,
        Failed(u16, String),
    }

    /// Feeds `input` cut at `cuts` (positions), calling `decode` until each
    /// piece is used up, and checks the API contract on every call.
    fn feed(max_body: u64, input: &[u8], cuts: &[usize]) -> (Vec<u8>, End) {
        let mut decoder = ChunkedDecoder::new(max_body);
        let mut body = Vec::new();
        let mut bounds: Vec<usize> = cuts
            .iter()
            .copied()
            .filter(|&c| c > 0 && c < input.len())
            .collect();
        bounds.push(input.len());
        let mut start = 0;
        for stop in bounds {
            let mut piece = &input[start..stop];
            let mut offset = start;
            start = stop;
            loop {
                match decoder.decode(piece) {
                    Err(e) => return (body, End::Failed(e.status, e.detail)),
                    Ok((consumed, decoded)) => {
                        assert!(consumed <= piece.len());
                        match decoded {
                            Decoded::Data(r) => {
                                assert!(
                                    r.start < r.end && r.end <= consumed,
                                    "{r:?} vs {consumed}"
                                );
                                body.extend_from_slice(&piece[r]);
                            }
                            Decoded::NeedMore => {
                                assert_eq!(consumed, piece.len());
                                break;
                            }
                            Decoded::Done => {
                                assert_eq!(decoder.decoded_len(), body.len() as u64);
                                return (body, End::Done(offset + consumed));
                            }
                        }
                        piece = &piece[consumed..];
                        offset += consumed;
                    }
                }
            }
        }
        (body, End::NeedMore)
    }

    fn whole(max_body: u64, input: &[u8]) -> (Vec<u8>, End) {
        feed(max_body, input, &[])
    }

    fn failed(status: u16, detail: &str) -> End {
        End::Failed(status, detail.to_string())
    }

    #[rstest]
    #[case::one_chunk(b"5\r\nhello\r\n0\r\n\r\n", b"hello", 15)]
    #[case::two_chunks(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde", 20)]
    #[case::upper_hex(b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 20)]
    #[case::lower_hex(b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789", 20)]
    #[case::leading_zeros(b"005\r\nhello\r\n000\r\n\r\n", b"hello", 19)]
    #[case::empty_body(b"0\r\n\r\n", b"", 5)]
    #[case::extensions(b"5;a=b;c;d=\"q\\\"x\"\r\nhello\r\n0;e\r\n\r\n", b"hello", 32)]
    #[case::quoted_ext_with_space_and_obs_text(b"1;n=\"a b\t\xff\"\r\nx\r\n0\r\n\r\n", b"x", 21)]
    #[case::token_ext_punctuation(b"1;!#$%&'*+-.^_`|~=!#\r\nx\r\n0\r\n\r\n", b"x", 30)]
    #[case::empty_lines_skipped(b"\r\n\r\n5\r\nhello\r\n\r\n0\r\n\r\n", b"hello", 21)]
    #[case::trailers(b"0\r\nX-T: 1\r\nY: 2\r\n\r\n", b"", 19)]
    #[case::trailers_not_validated(b"0\r\n\x00bad\nline\r\n\r\n", b"", 16)]
    #[case::trailer_lone_cr(b"0\r\n\rX\r\n\r\n", b"", 9)]
    #[case::trailer_cr_cr_lf(b"0\r\n\r\r\n\r\n", b"", 8)]
    #[case::next_request_left_alone(b"1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", b"x", 11)]
    #[case::next_request_after_trailer(b"0\r\nT: v\r\n\r\n\r\nGET", b"", 11)]
    #[case::binary_data(b"4\r\n\r\n\x00\xff\r\n0\r\n\r\n", b"\r\n\x00\xff", 14)]
    fn valid_bodies(#[case] input: &[u8], #[case] body: &[u8], #[case] consumed: usize) {
        assert_eq!(whole(1000, input), (body.to_vec(), End::Done(consumed)));
    }

    #[rstest]
    #[case::trailing_space(b"5 \r\nhello\r\n0\r\n\r\n", "Invalid chunk size")]
    #[case::leading_space(b" 5\r\nhello\r\n", "Invalid chunk size")]
    #[case::hex_prefix(b"0x5\r\nhello\r\n", "Invalid chunk size")]
    #[case::plus_sign(b"+1\r\nx\r\n", "Invalid chunk size")]
    #[case::not_hex(b"g\r\n", "Invalid chunk size")]
    #[case::bare_lf_line(b"5\nhello\r\n0\r\n\r\n", "Invalid chunk size")]
    #[case::trailing_lf(b"5\n\r\nhello\r\n", "Invalid chunk size")]
    #[case::lf_first(b"\n5\r\nhello\r\n", "Invalid chunk size")]
    #[case::lone_cr_in_line(b"5\r5\r\n", "Invalid chunk size")]
    #[case::cr_cr_lf(b"5\r\r\n", "Invalid chunk size")]
    #[case::extension_without_size(b";a\r\n", "Invalid chunk size")]
    #[case::ext_empty_value(b"1;a=\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_space(b"1; a=b\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_no_name(b"1;\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_no_name_value(b"1;=b\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_space_in_value(b"1;a=b c\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_unterminated_quote(b"1;a=\"x\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_text_after_quote(b"1;a=\"q\"x\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_bad_escape(b"1;a=\"\\\x01\"\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_ctl_in_quote(b"1;a=\"\x01\"\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_trailing_lf(b"1;a=b\n\r\nx\r\n", "Invalid chunk extension")]
    #[case::ext_beats_size(b"Z;=\r\n", "Invalid chunk extension")]
    #[case::ext_on_last_chunk(b"0;\r\n\r\n", "Invalid chunk extension")]
    #[case::data_overrun(b"5\r\nhelloX\r\n0\r\n\r\n", "Chunk not properly terminated")]
    #[case::data_lf_only(b"5\r\nhello\n\r\n0\r\n\r\n", "Chunk not properly terminated")]
    #[case::data_cr_cr(b"5\r\nhello\r\r\n", "Chunk not properly terminated")]
    #[case::data_no_terminator(b"2\r\nhi0\r\n\r\n", "Chunk not properly terminated")]
    fn framing_errors(#[case] input: &[u8], #[case] detail: &str) {
        assert_eq!(whole(1000, input).1, failed(400, detail));
    }

    #[rstest]
    // The reference's example: 13 wire bytes against a limit of 10.
    #[case::doc_example(10, b"3\r\nabc\r\n0\r\n\r\n", failed(413, "exceeds max_body of 10"))]
    #[case::exactly_at_limit(13, b"3\r\nabc\r\n0\r\n\r\n", failed(413, "exceeds max_body of 13"))]
    #[case::one_over_wire_length(14, b"3\r\nabc\r\n0\r\n\r\n", End::Done(13))]
    #[case::data_reaches_limit(8, b"5\r\nhello\r\n0\r\n\r\n", failed(413, "exceeds max_body of 8"))]
    #[case::endless_size_line(100, &[b'Z'; 200], failed(413, "exceeds max_body of 100"))]
    #[case::endless_extension(50, &[b';'; 80], failed(413, "exceeds max_body of 50"))]
    #[case::endless_trailer(60, &[&b"0\r\n"[..], &[b'x'; 100]].concat(), failed(413, "exceeds max_body of 60"))]
    #[case::huge_chunk_size(
        40,
        b"ffffffffffffffffffffffffffffffff\r\nabcdefghijklmnop",
        failed(413, "exceeds max_body of 40")
    )]
    #[case::limit_beats_error_on_same_byte(4, b"5 \r\n", failed(413, "exceeds max_body of 4"))]
    #[case::error_before_limit(5, b"5 \r\n", failed(400, "Invalid chunk size"))]
    #[case::zero_limit(0, b"0\r\n\r\n", failed(413, "exceeds max_body of 0"))]
    fn wire_limit(#[case] max_body: u64, #[case] input: &[u8], #[case] end: End) {
        assert_eq!(whole(max_body, input).1, end);
    }

    #[rstest]
    #[case::mid_size_line(b"5\r")]
    #[case::mid_data(b"5\r\nhel")]
    #[case::after_data(b"5\r\nhello")]
    #[case::half_terminator(b"5\r\nhello\r")]
    #[case::one_bad_terminator_byte(b"5\r\nhelloX")]
    #[case::mid_trailer(b"0\r\nX: y\r\n")]
    #[case::last_chunk_no_crlf(b"0\r\n")]
    #[case::only_blank_lines(b"\r\n\r\n\r\n")]
    fn incomplete_bodies_need_more(#[case] input: &[u8]) {
        assert_eq!(whole(1000, input).1, End::NeedMore);
    }

    /// A deterministic xorshift64 for split points.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[rstest]
    #[case(b"5\r\nhello\r\n0\r\n\r\n")]
    #[case(b"3;x=\"a\\\"b\"\r\nabc\r\n\r\n10\r\n0123456789abcdef\r\n0;q\r\nT: 1\r\n\r\nNEXT")]
    #[case(b"\r\n1\r\n\r\r\n0\r\n\r\n")]
    #[case(b"4\r\nabcd\r\n5 \r\nhello\r\n")]
    #[case(b"2\r\nab\r\n0\r\n\rX\r\n\r\n")]
    #[case(b"fff;\r\n")]
    fn same_result_however_split(#[case] input: &[u8]) {
        let want = whole(1000, input);
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(feed(1000, input, &bytewise), want, "byte by byte");
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            let mut cuts: Vec<usize> = (0..(next(&mut seed) % 6))
                .map(|_| (next(&mut seed) % (input.len() as u64 + 1)) as usize)
                .collect();
            cuts.sort_unstable();
            assert_eq!(feed(1000, input, &cuts), want, "cuts {cuts:?}");
        }
    }

    #[test]
    fn errors_are_sticky_and_done_consumes_nothing() {
        let mut d = ChunkedDecoder::new(1000);
        let err = d.decode(b"x\r\n").unwrap_err();
        assert_eq!(
            err,
            HttpError::new(400, "Invalid chunk size", Version::Http11)
        );
        assert_eq!(d.decode(b"0\r\n\r\n"), Err(err));

        let mut d = ChunkedDecoder::new(1000);
        assert_eq!(d.decode(b"2\r\nab"), Ok((5, Decoded::Data(3..5))));
        assert_eq!(d.decode(b"\r\n0\r\n\r\nrest"), Ok((7, Decoded::Done)));
        assert!(d.is_done());
        assert_eq!(d.decode(b"rest"), Ok((0, Decoded::Done)));
        assert_eq!((d.decoded_len(), d.wire_len()), (2, 12));
    }

    #[test]
    fn empty_input_needs_more() {
        let mut d = ChunkedDecoder::new(1000);
        assert_eq!(d.decode(b""), Ok((0, Decoded::NeedMore)));
        assert_eq!(d.wire_len(), 0);
    }
}
