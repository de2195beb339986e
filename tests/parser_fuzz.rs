//! Bounded, deterministic property test of the request-head parser and the
//! chunked decoder: random and mutated requests must never panic, never be
//! reported as consuming more than given, give the same answer however the
//! bytes are split, and a parsed head written back out must parse the same.
use maitre::http::chunked::{ChunkedDecoder, Decoded};
use maitre::http::errors::HttpError;
use maitre::http::parser::{parse_head, parse_head_from, HeadLimits, Parsed};
use maitre::http::request::{BodyFraming, RequestHead, Version};

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const CORPUS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"POST /submit?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=v\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
    b"GET http://h:81/abs HTTP/1.0\r\nConnection: keep-alive\r\nX-Folded: a\r\n b\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    b"\r\n\r\nGET /x\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /q HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"GET //caf\xe9?a#b HTTP/1.1\r\nX: \xa0v\x85\r\nX_Y: dropped\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\"q\\\"x\"\r\nx\r\n\r\n00\r\n\r\nGET / HTTP/1.1\r\n\r\n",
];

/// Bytes that tend to matter to a parser.
const SPECIAL: &[u8] = b"\r\n\x00\x0b\x85 \t,;:=\"\\_-0aZ\x7f\xff";

const TCHARS: &[u8] =
    b"!#$%&'*+-.^`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const NAMES: &[&str] = &[
    "Host",
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Expect",
    "X-Dup",
    "Accept",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "FOO"];
const VERSIONS: &[&str] = &[" HTTP/1.1", " HTTP/1.0", "", " HTTP/2.0"];

/// A random request that is valid by construction (before mutation).
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(10) {
        out.extend_from_slice(b"\r\n");
    }
    let version = *rng.pick(VERSIONS);
    out.extend_from_slice(rng.pick(METHODS).as_bytes());
    out.extend_from_slice(b" /");
    for _ in 0..rng.below(12) {
        out.push(*rng.pick(b"abc/?=&%#*:@.~!$0129"));
    }
    out.extend_from_slice(version.as_bytes());
    out.extend_from_slice(b"\r\n");
    let chunked = version == " HTTP/1.1" && rng.chance(40);
    for _ in 0..rng.below(8) {
        let name = if rng.chance(60) {
            rng.pick(NAMES).as_bytes().to_vec()
        } else {
            (0..1 + rng.below(8)).map(|_| *rng.pick(TCHARS)).collect()
        };
        if matches!(
            &name[..],
            b"Transfer-Encoding" | b"Content-Length" | b"Host" | b"Content-Type"
        ) {
            continue;
        }
        out.extend_from_slice(&name);
        out.push(b':');
        if rng.chance(70) {
            out.push(b' ');
        }
        for i in 0..rng.below(10) {
            let b = match rng.below(10) {
                0 if i > 0 => b' ',
                1 => 0x80 + rng.below(128) as u8,
                _ => 0x21 + rng.below(94) as u8,
            };
            out.push(b);
        }
        if rng.chance(10) {
            out.extend_from_slice(b"\r\n\tfolded");
        }
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for _ in 0..rng.below(4) {
            let len = 1 + rng.below(20);
            out.extend_from_slice(format!("{len:x}").as_bytes());
            if rng.chance(20) {
                out.extend_from_slice(b";n=v");
            }
            out.extend_from_slice(b"\r\n");
            out.extend((0..len).map(|_| rng.below(256) as u8));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        let len = rng.below(6);
        if len > 0 {
            out.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend((0..len).map(|_| b'x'));
    }
    out
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            0 if at < input.len() => input[at] ^= 1 << rng.below(8),
            1 => input.insert(at, rng.below(256) as u8),
            2 if at < input.len() => {
                input.remove(at);
            }
            3 => input.insert(at, *rng.pick(SPECIAL)),
            4 if at < input.len() => input[at] = *rng.pick(SPECIAL),
            5 => duplicate_line(rng, input),
            6 => input.truncate(at),
            _ => {
                const PIECES: [&[u8]; 5] = [b"\r\n", b"\r\n ", b" ", b"\n", b"\r\n\r\n"];
                let piece = *rng.pick(&PIECES);
                input.splice(at..at, piece.iter().copied());
            }
        }
    }
}

/// Copies one CRLF-terminated line of the head right after itself.
fn duplicate_line(rng: &mut Rng, input: &mut Vec<u8>) {
    let starts: Vec<usize> = input
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == b"\r\n")
        .map(|(i, _)| i + 2)
        .collect();
    if starts.len() < 2 {
        return;
    }
    let i = rng.below(starts.len() - 1);
    let (start, end) = (starts[i], starts[i + 1]);
    let line = input[start..end].to_vec();
    input.splice(end..end, line);
}

/// The head written back in canonical form. Names come back with `-` (their
/// `_` can only have come from `-`: names with `_` are dropped), framing that
/// the parser removed from the headers is restated.
fn serialise(head: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&head.target);
    out.push(b' ');
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.headers.iter() {
        let name = name.replace('_', "-");
        // A value ending in ", " was joined with an empty repeat: one line
        // cannot carry that trailing space, so the empty repeats are restated.
        let mut value = value;
        let mut empty_repeats = 0;
        while let Some(rest) = value.strip_suffix(b", ") {
            value = rest;
            empty_repeats += 1;
        }
        out.extend_from_slice(format!("{name}: ").as_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
        for _ in 0..empty_repeats {
            out.extend_from_slice(format!("{name}:\r\n").as_bytes());
        }
    }
    if head.framing == BodyFraming::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if head.close_after {
        out.extend_from_slice(b"Content-Length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn check_parsed(input: &[u8], result: &Result<Parsed, HttpError>) {
    match result {
        Ok(Parsed::Skip(n)) => assert!(*n > 0 && *n <= input.len(), "skip {n} of {}", input.len()),
        Ok(Parsed::Head { consumed, .. }) => assert!(*consumed <= input.len()),
        Ok(Parsed::Incomplete) => {}
        Err(e) => {
            assert!(matches!(e.status, 400 | 413 | 431 | 501), "{e:?}");
            if e.status == 431 {
                assert_eq!(e.version, Version::Http10);
            }
        }
    }
}

/// Every prefix gives Incomplete or the whole buffer's answer, also when the
/// terminator search resumes where the last Incomplete left off.
fn check_splits(
    rng: &mut Rng,
    input: &[u8],
    limits: &HeadLimits,
    whole: &Result<Parsed, HttpError>,
) {
    let mut cuts: Vec<usize> = (0..rng.below(5))
        .map(|_| rng.below(input.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut scanned = 0;
    for cut in cuts {
        let prefix = &input[..cut];
        let got = parse_head_from(prefix, limits, scanned);
        check_parsed(prefix, &got);
        match got {
            Ok(Parsed::Incomplete) => scanned = cut,
            other => {
                assert_eq!(
                    &other,
                    whole,
                    "prefix {cut} of {:?}",
                    String::from_utf8_lossy(input)
                );
                return;
            }
        }
    }
}

/// Decodes `body` whole and in random pieces; both must agree.
fn check_chunked(rng: &mut Rng, body: &[u8], max_body: u64) {
    let whole = decode_all(body, max_body, &[]);
    let mut cuts: Vec<usize> = (0..1 + rng.below(8))
        .map(|_| rng.below(body.len() + 1))
        .collect();
    if rng.chance(5) {
        cuts = (1..body.len()).collect();
    }
    cuts.sort_unstable();
    assert_eq!(
        decode_all(body, max_body, &cuts),
        whole,
        "cuts {cuts:?} of {:?}",
        String::from_utf8_lossy(body)
    );
}

/// (body bytes, end) where end is Ok(Some(consumed)) when done, Ok(None) when
/// more is needed, Err on error.
type Outcome = (Vec<u8>, Result<Option<usize>, HttpError>);

/// Body bytes handed out before an error depend on the split (the run that
/// reaches the limit is refused whole), so an error outcome keeps no body.
fn decode_all(input: &[u8], max_body: u64, cuts: &[usize]) -> Outcome {
    match decode_pieces(input, max_body, cuts) {
        (_, Err(e)) => (Vec::new(), Err(e)),
        done => done,
    }
}

fn decode_pieces(input: &[u8], max_body: u64, cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new(max_body);
    let mut out = Vec::new();
    let mut start = 0;
    for stop in cuts.iter().copied().chain([input.len()]) {
        if stop < start {
            continue;
        }
        let mut offset = start;
        while offset <= stop {
            let piece = &input[offset..stop];
            let (consumed, decoded) = match decoder.decode(piece) {
                Ok(step) => step,
                Err(e) => return (out, Err(e)),
            };
            assert!(
                consumed <= piece.len(),
                "consumed {consumed} of {}",
                piece.len()
            );
            match decoded {
                Decoded::Data(r) => {
                    assert!(
                        r.start < r.end && r.end <= consumed,
                        "{r:?} beyond {consumed}"
                    );
                    out.extend_from_slice(&piece[r]);
                }
                Decoded::NeedMore => {
                    assert_eq!(consumed, piece.len());
                    break;
                }
                Decoded::Done => {
                    assert_eq!(decoder.decoded_len(), out.len() as u64);
                    return (out, Ok(Some(offset + consumed)));
                }
            }
            offset += consumed;
        }
        start = stop;
    }
    (out, Ok(None))
}

fn run_one(rng: &mut Rng, input: &[u8], stats: &mut [usize; 4]) {
    let limits = if rng.chance(10) {
        HeadLimits {
            max_header: 1 + rng.below(120),
            max_body: rng.below(40) as u64,
        }
    } else {
        HeadLimits {
            max_header: 64 * 1024,
            max_body: 1 << 20,
        }
    };
    let whole = parse_head(input, &limits);
    check_parsed(input, &whole);
    check_splits(rng, input, &limits, &whole);
    match &whole {
        Ok(Parsed::Head { head, consumed }) => {
            stats[0] += 1;
            let again = serialise(head);
            // The canonical form may be longer than the original (folds
            // restated as lines...), so only the body limit is kept.
            let roomy = HeadLimits {
                max_header: usize::MAX,
                ..limits
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
            if head.framing == BodyFraming::Chunked {
                stats[1] += 1;
                check_chunked(rng, &input[*consumed..], limits.max_body);
            }
        }
        Err(_) => stats[2] += 1,
        Ok(_) => stats[3] += 1,
    }
    // The decoder must also survive bytes that were never a chunked body.
    if rng.chance(15) {
        let max_body = 1 + rng.below(400) as u64;
        check_chunked(rng, input, max_body);
    }
}

#[test]
fn random_and_mutated_requests() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    // [parsed heads, chunked bodies decoded, errors, incomplete/skip]
    let mut stats = [0usize; 4];
    for i in 0..20_000 {
        let mut input = match i % 4 {
            0 => rng.pick(CORPUS).to_vec(),
            1 => generate(&mut rng),
            _ if rng.chance(50) => rng.pick(CORPUS).to_vec(),
            _ => generate(&mut rng),
        };
        if i % 4 >= 2 {
            mutate(&mut rng, &mut input);
        }
        if i % 97 == 0 {
            input = (0..rng.below(300)).map(|_| rng.below(256) as u8).collect();
        }
        run_one(&mut rng, &input, &mut stats);
    }
    // The mix must really exercise every outcome, or the test proves little.
    assert!(stats.iter().all(|&n| n > 500), "{stats:?}");
}

#[test]
fn random_chunked_bodies() {
    let mut rng = Rng(0xc0ff_ee00_1234_5678);
    for _ in 0..3_000 {
        let mut body = Vec::new();
        for _ in 0..rng.below(5) {
            let len = 1 + rng.below(30);
            body.extend_from_slice(format!("{len:X}").as_bytes());
            body.extend_from_slice(b"\r\n");
            body.extend((0..len).map(|_| rng.below(256) as u8));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n");
        if rng.chance(30) {
            body.extend_from_slice(b"X-Trailer: v\r\n");
        }
        body.extend_from_slice(b"\r\nNEXT");
        let valid = body.clone();
        if rng.chance(60) {
            mutate(&mut rng, &mut body);
        }
        let max_body = 1 + rng.below(600) as u64;
        check_chunked(&mut rng, &body, max_body);
        if body == valid {
            let (_, end) = decode_all(&body, 1 << 20, &[]);
            assert_eq!(end, Ok(Some(body.len() - 4)));
        }
    }
}
