//! Request-body and response-output buffers that spill to temp files.
//!
//! Both keep memory bounded by their overflow size: past it, bytes go to an
//! anonymous temp file (`tempfile::tempfile`, removed by the OS when closed).
//! Neither ever panics; I/O errors are returned and leave the buffer usable
//! (`OutBuffer`) or refusing further use (`BodyBuffer`, whose body is then
//! incomplete).
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};

use crate::engine::executor::{Body, Chunk};
use crate::engine::transport::{ConnId, Transport};

/// Bytes read back from the output spill file at a time (one reusable buffer).
pub const SPILL_CHUNK: usize = 64 * 1024;
/// Most `IoSlice`s handed to one `write_vectored` call.
const MAX_IOSLICES: usize = 64;
/// A coalescing tail segment stops taking copies at this size, so that a
/// partially sent tail never pins much more than this.
const TAIL_CAP: usize = 16 * 1024;
/// `push_vec` copies vectors up to this size into the tail instead of queueing
/// them: many small segments would cost more than the copy.
const COPY_MAX: usize = 4 * 1024;
/// Largest range asked of one `send_file` call (fits a 32-bit `usize`).
const MAX_SEND_FILE: u64 = 1 << 30;
/// Largest read made straight into a request body.
const DIRECT_READ_MAX: usize = 64 * 1024;
/// First allocation of a body kept in memory, to skip tiny reallocations.
const BODY_MIN_ALLOC: usize = 8 * 1024;

/// Accumulates one request body: memory up to `inbuf_overflow`, then a temp file.
///
/// Like Waitress, the body goes to disk as soon as its total size reaches the
/// overflow (`>=`), so a body of exactly `inbuf_overflow` bytes is a file.
#[derive(Debug)]
pub struct BodyBuffer {
    overflow: usize,
    len: u64,
    store: BodyStore,
}

#[derive(Debug)]
enum BodyStore {
    Memory(Vec<u8>),
    File(File),
    /// A write to the temp file failed: the body is incomplete, refuse it.
    Failed,
}

impl BodyBuffer {
    pub fn new(overflow: usize) -> Self {
        BodyBuffer {
            overflow,
            len: 0,
            store: BodyStore::Memory(Vec::new()),
        }
    }

    /// Add bytes at the end. After an error the buffer is failed for good:
    /// later `append`s and `finish` return errors.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let overflow = self.overflow;
        let spilled = match &mut self.store {
            BodyStore::Failed => Err(failed_body()),
            BodyStore::Memory(_) if data.is_empty() => Ok(None),
            BodyStore::Memory(vec) if vec.len().saturating_add(data.len()) < overflow => {
                reserve_bounded(vec, data.len(), overflow);
                vec.extend_from_slice(data);
                Ok(None)
            }
            BodyStore::Memory(vec) => spill_body(vec, data).map(Some),
            BodyStore::File(file) => file.write_all(data).map(|()| None),
        };
        match spilled {
            // Replacing the store drops the in-memory copy right away.
            Ok(Some(file)) => self.store = BodyStore::File(file),
            Ok(None) => {}
            Err(e) => {
                self.store = BodyStore::Failed;
                return Err(e);
            }
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Let `read` write up to `want` bytes (at most `DIRECT_READ_MAX`)
    /// straight into the in-memory body, with no copy through other buffers.
    /// None when the body is not in memory or would not stay there; else
    /// what `read` returned, with the bytes it reported kept. The buffer
    /// grows as bytes arrive, not by what the client announced.
    pub fn fill_with(
        &mut self,
        want: usize,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> Option<io::Result<usize>> {
        let BodyStore::Memory(vec) = &mut self.store else {
            return None;
        };
        let start = vec.len();
        let want = want.min(DIRECT_READ_MAX);
        let end = start.checked_add(want).filter(|&end| end < self.overflow)?;
        reserve_bounded(vec, want, self.overflow);
        vec.resize(end, 0);
        let result = read(&mut vec[start..end]);
        let got = match &result {
            Ok(n) => (*n).min(want),
            Err(_) => 0,
        };
        vec.truncate(start + got);
        self.len += got as u64;
        Some(result)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the body has spilled to disk.
    pub fn spilled(&self) -> bool {
        matches!(self.store, BodyStore::File(_))
    }

    /// The finished body, file rewound to 0.
    pub fn finish(self) -> io::Result<Body> {
        match self.store {
            BodyStore::Failed => Err(failed_body()),
            _ if self.len == 0 => Ok(Body::Empty),
            BodyStore::Memory(vec) => Ok(Body::Memory(vec)),
            BodyStore::File(mut file) => {
                file.seek(SeekFrom::Start(0))?;
                Ok(Body::File {
                    file,
                    len: self.len,
                })
            }
        }
    }
}

fn failed_body() -> io::Error {
    io::Error::other("request body buffer failed earlier")
}

/// Grow `vec` for `extra` more bytes, doubling as usual but never past
/// `limit`: the caller guarantees `vec.len() + extra < limit`.
fn reserve_bounded(vec: &mut Vec<u8>, extra: usize, limit: usize) {
    let needed = vec.len().saturating_add(extra);
    if needed <= vec.capacity() {
        return;
    }
    let target = vec
        .capacity()
        .saturating_mul(2)
        .max(BODY_MIN_ALLOC)
        .min(limit)
        .max(needed);
    vec.reserve_exact(target - vec.len());
}

/// Move the in-memory body plus `data` into a fresh temp file.
fn spill_body(memory: &[u8], data: &[u8]) -> io::Result<File> {
    let mut file = tempfile::tempfile()?;
    file.write_all(memory)?;
    file.write_all(data)?;
    Ok(file)
}

/// Pending output of one connection, in order: memory up to `outbuf_overflow`,
/// then appended to a temp file; plus file ranges sent with `send_file`.
///
/// The queue holds three kinds of segment. Memory segments are either a
/// coalescing tail (small pushes are copied into it) or a vector taken over
/// from `push_vec`. Spill segments are runs of bytes in one shared temp file
/// used as a FIFO: written at its end, read back from its front in
/// `SPILL_CHUNK` pieces when their turn comes, and truncated once drained.
/// File segments are ranges of caller files, closed once sent.
///
/// Memory stays bounded: `memory_len() <= overflow + SPILL_CHUNK`.
#[derive(Debug)]
pub struct OutBuffer {
    overflow: usize,
    segs: VecDeque<Segment>,
    /// Unsent bytes in memory segments (not counting the spill read-back chunk).
    mem_len: usize,
    /// Unsent bytes of all kinds.
    total: u64,
    /// Created on first spill, kept for reuse.
    spill: Option<Spill>,
    /// The allocation of the last drained tail, reused by the next one.
    spare: Vec<u8>,
}

#[derive(Debug)]
enum Segment {
    /// `buf[pos..]` is unsent. `tail` marks a coalescing buffer that small
    /// pushes extend and whose allocation is recycled.
    Mem { buf: Chunk, pos: usize, tail: bool },
    /// The next `len` unsent bytes of the spill FIFO (including any already
    /// read back into the chunk).
    Spill { len: u64 },
    File {
        file: File,
        offset: u64,
        remaining: u64,
    },
}

/// The spill temp file used as a FIFO, with its read-back chunk.
#[derive(Debug)]
struct Spill {
    file: File,
    /// Bytes before `read_pos` have been read back into `chunk` (or sent).
    read_pos: u64,
    /// Where the next spilled byte goes.
    write_pos: u64,
    /// The OS file position when known, to skip needless seeks.
    cursor: Option<u64>,
    /// `chunk[start..end]` is read back but unsent; it always belongs to the
    /// front segment, which is then a spill segment.
    chunk: Vec<u8>,
    start: usize,
    end: usize,
}

impl Spill {
    fn create() -> io::Result<Spill> {
        Ok(Spill {
            file: tempfile::tempfile()?,
            read_pos: 0,
            write_pos: 0,
            cursor: Some(0),
            chunk: Vec::new(),
            start: 0,
            end: 0,
        })
    }

    fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        if self.cursor != Some(pos) {
            self.cursor = None;
            self.file.seek(SeekFrom::Start(pos))?;
            self.cursor = Some(pos);
        }
        Ok(())
    }

    /// Append at the end; on error nothing counts as written (a later append
    /// overwrites the partial bytes).
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let written = self
            .seek_to(self.write_pos)
            .and_then(|()| self.file.write_all(data));
        match written {
            Ok(()) => {
                self.write_pos += data.len() as u64;
                self.cursor = Some(self.write_pos);
                Ok(())
            }
            Err(e) => {
                self.cursor = None;
                Err(e)
            }
        }
    }

    fn pending(&self) -> &[u8] {
        self.chunk.get(self.start..self.end).unwrap_or(&[])
    }

    /// Read the next at most `max` bytes back into the (drained) chunk.
    fn load(&mut self, max: u64) -> io::Result<()> {
        let unread = self.write_pos.saturating_sub(self.read_pos);
        let n = max.min(unread).min(SPILL_CHUNK as u64) as usize;
        if n == 0 {
            return Err(io::Error::other("output spill file out of step"));
        }
        if self.chunk.len() < SPILL_CHUNK {
            self.chunk.resize(SPILL_CHUNK, 0);
        }
        self.start = 0;
        self.end = 0;
        self.seek_to(self.read_pos)?;
        let Some(dest) = self.chunk.get_mut(..n) else {
            return Err(io::Error::other("output spill chunk too small"));
        };
        if let Err(e) = self.file.read_exact(dest) {
            self.cursor = None;
            return Err(e);
        }
        self.read_pos += n as u64;
        self.cursor = Some(self.read_pos);
        self.end = n;
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Once everything spilled has been sent, start the FIFO over from 0 so
    /// the file does not grow for the life of the connection.
    fn reset_if_drained(&mut self) {
        if self.read_pos == self.write_pos && self.end == 0 && self.write_pos > 0 {
            // A failed truncation only leaves stale bytes past `write_pos`,
            // which are never read: lengths are tracked here, not by EOF.
            let _ = self.file.set_len(0);
            self.read_pos = 0;
            self.write_pos = 0;
        }
    }
}

impl OutBuffer {
    pub fn new(overflow: usize) -> Self {
        OutBuffer {
            overflow,
            segs: VecDeque::new(),
            mem_len: 0,
            total: 0,
            spill: None,
            spare: Vec::new(),
        }
    }

    /// Queue a copy of `data` (coalesced with neighbouring small pushes).
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.must_spill(data.len()) {
            return self.push_spill(data);
        }
        if data.len() > TAIL_CAP {
            self.push_mem(data.to_vec().into(), false);
        } else {
            self.push_tail(data);
        }
        Ok(())
    }

    /// Like `push`, but takes ownership so in-memory data is not copied.
    pub fn push_vec(&mut self, data: Vec<u8>) -> io::Result<()> {
        self.push_chunk(data.into())
    }

    /// Like `push`, but a large chunk is queued as it is (not copied).
    pub fn push_chunk(&mut self, data: Chunk) -> io::Result<()> {
        if data.len() <= COPY_MAX {
            return self.push(data.as_slice());
        }
        if self.must_spill(data.len()) {
            return self.push_spill(data.as_slice());
        }
        self.push_mem(data, false);
        Ok(())
    }

    /// Like `push_vec`, but when `data` would not fit under `overflow` it is
    /// first offered to the socket (behind what is already queued, in the
    /// same `writev`), and only what the socket cannot take now is spilled.
    /// A big response to a prompt client so never touches the disk, and
    /// memory stays bounded once this returns. Returns the bytes written.
    pub fn push_chunk_writing<T: Transport>(
        &mut self,
        data: Chunk,
        io: &mut T,
        conn: ConnId,
    ) -> io::Result<usize> {
        if !self.must_spill(data.len()) {
            self.push_chunk(data)?;
            return Ok(0);
        }
        self.push_mem(data, false);
        let written = self.write_to(io, conn)?;
        if self.mem_len > self.overflow {
            self.spill_back()?;
        }
        Ok(written)
    }

    /// Move the unsent part of the last memory segment to the spill file.
    fn spill_back(&mut self) -> io::Result<()> {
        let Some(Segment::Mem { buf, pos, .. }) = self.segs.pop_back() else {
            return Err(out_of_step());
        };
        let rest = buf.as_slice().get(pos..).unwrap_or(&[]);
        self.mem_len = self.mem_len.saturating_sub(rest.len());
        self.total = self.total.saturating_sub(rest.len() as u64);
        // Partly sent at the front, it stays there as a spill segment.
        self.push_spill(rest)
    }

    /// Queue `len` bytes of `file` from `offset`; the file is closed once sent
    /// (or at once when `len` is 0).
    pub fn push_file(&mut self, file: File, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.segs.push_back(Segment::File {
            file,
            offset,
            remaining: len,
        });
        self.total += len;
    }

    /// Pending bytes (memory, spill file and file ranges).
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in memory right now (the spill file does not count; its
    /// read-back chunk does).
    pub fn memory_len(&self) -> usize {
        self.mem_len + self.spill.as_ref().map_or(0, |s| s.pending().len())
    }

    /// Write until empty or `WouldBlock`; returns the bytes written. Errors other
    /// than `WouldBlock` are returned (the connection is broken).
    pub fn write_to<T: Transport>(&mut self, io: &mut T, conn: ConnId) -> io::Result<usize> {
        let mut written = 0usize;
        loop {
            let step = match self.segs.front() {
                None => return Ok(written),
                Some(Segment::File { .. }) => self.send_file_step(io, conn),
                Some(_) => self.write_step(io, conn),
            };
            match step {
                Ok(n) => written = written.saturating_add(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn must_spill(&self, n: usize) -> bool {
        self.mem_len.saturating_add(n) > self.overflow
    }

    fn push_mem(&mut self, buf: Chunk, tail: bool) {
        self.mem_len += buf.len();
        self.total += buf.len() as u64;
        self.segs.push_back(Segment::Mem { buf, pos: 0, tail });
    }

    fn push_tail(&mut self, data: &[u8]) {
        if let Some(Segment::Mem {
            buf: Chunk::Owned(buf),
            tail: true,
            ..
        }) = self.segs.back_mut()
        {
            if buf.len().saturating_add(data.len()) <= TAIL_CAP {
                buf.extend_from_slice(data);
                self.mem_len += data.len();
                self.total += data.len() as u64;
                return;
            }
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.extend_from_slice(data);
        self.push_mem(buf.into(), true);
    }

    fn push_spill(&mut self, data: &[u8]) -> io::Result<()> {
        let spill = match &mut self.spill {
            Some(spill) => spill,
            None => self.spill.insert(Spill::create()?),
        };
        spill.append(data)?;
        let n = data.len() as u64;
        match self.segs.back_mut() {
            Some(Segment::Spill { len }) => *len += n,
            _ => self.segs.push_back(Segment::Spill { len: n }),
        }
        self.total += n;
        Ok(())
    }

    /// One `write_vectored` of the in-memory run at the front of the queue.
    fn write_step<T: Transport>(&mut self, io: &mut T, conn: ConnId) -> io::Result<usize> {
        self.load_front_spill()?;
        let mut slices = [IoSlice::new(&[]); MAX_IOSLICES];
        let (count, offered) = self.gather(&mut slices);
        let n = io.write_vectored(conn, slices.get(..count).unwrap_or(&[]))?;
        check_progress(n, offered)?;
        self.advance(n)?;
        Ok(n)
    }

    /// Make sure a spill segment at the front has bytes in the chunk.
    fn load_front_spill(&mut self) -> io::Result<()> {
        if let Some(Segment::Spill { len }) = self.segs.front() {
            let spill = self.spill.as_mut().ok_or_else(out_of_step)?;
            if spill.pending().is_empty() {
                spill.load(*len)?;
            }
        }
        Ok(())
    }

    /// Fill `slices` from the front: memory segments and a loaded front spill
    /// chunk, stopping at a file segment, an unloaded spill segment, or a spill
    /// segment not wholly in the chunk. Returns (slices used, bytes offered).
    fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> (usize, usize) {
        let mut count = 0;
        let mut offered = 0usize;
        for (i, seg) in self.segs.iter().enumerate() {
            let Some(slot) = slices.get_mut(count) else {
                break;
            };
            let (part, whole) = match seg {
                Segment::Mem { buf, pos, .. } => (buf.as_slice().get(*pos..).unwrap_or(&[]), true),
                Segment::Spill { len } if i == 0 => {
                    let part = self.spill.as_ref().map_or(&[][..], |s| s.pending());
                    (part, part.len() as u64 == *len)
                }
                _ => break,
            };
            *slot = IoSlice::new(part);
            count += 1;
            offered = offered.saturating_add(part.len());
            if !whole {
                break;
            }
        }
        (count, offered)
    }

    /// Drop `n` sent bytes from the front of the queue (memory and spill only).
    fn advance(&mut self, mut left: usize) -> io::Result<()> {
        while left > 0 {
            let (took, done) = match self.segs.front_mut() {
                Some(Segment::Mem { buf, pos, .. }) => {
                    let took = left.min(buf.len().saturating_sub(*pos));
                    *pos += took;
                    self.mem_len = self.mem_len.saturating_sub(took);
                    (took, *pos >= buf.len())
                }
                Some(Segment::Spill { len }) => {
                    let spill = self.spill.as_mut().ok_or_else(out_of_step)?;
                    let took = left.min(spill.pending().len());
                    spill.consume(took);
                    *len = len.saturating_sub(took as u64);
                    (took, *len == 0)
                }
                _ => (0, false),
            };
            if took == 0 {
                return Err(out_of_step());
            }
            self.total = self.total.saturating_sub(took as u64);
            left -= took;
            if done {
                self.pop_front();
            }
        }
        Ok(())
    }

    fn pop_front(&mut self) {
        match self.segs.pop_front() {
            // Keep the bigger allocation for the next tail.
            Some(Segment::Mem {
                buf: Chunk::Owned(mut buf),
                tail: true,
                ..
            }) if buf.capacity() > self.spare.capacity() => {
                buf.clear();
                self.spare = buf;
            }
            Some(Segment::Spill { .. }) => {
                if let Some(spill) = &mut self.spill {
                    spill.reset_if_drained();
                }
            }
            _ => {}
        }
    }

    /// One `send_file` of the file segment at the front.
    fn send_file_step<T: Transport>(&mut self, io: &mut T, conn: ConnId) -> io::Result<usize> {
        let Some(Segment::File {
            file,
            offset,
            remaining,
        }) = self.segs.front_mut()
        else {
            return Err(out_of_step());
        };
        let want = usize::try_from((*remaining).min(MAX_SEND_FILE)).unwrap_or(1 << 20);
        let n = io.send_file(conn, file, *offset, want)?;
        check_progress(n, want)?;
        *offset += n as u64;
        *remaining -= n as u64;
        let done = *remaining == 0;
        self.total = self.total.saturating_sub(n as u64);
        if done {
            self.segs.pop_front();
        }
        Ok(n)
    }
}

/// A write of 0 bytes (nothing more can go out) or of more than was offered
/// (a broken transport) ends the connection instead of looping or panicking.
fn check_progress(n: usize, offered: usize) -> io::Result<()> {
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "connection accepted no bytes",
        ));
    }
    if n > offered {
        return Err(io::Error::other(
            "transport reported more bytes than offered",
        ));
    }
    Ok(())
}

fn out_of_step() -> io::Error {
    io::Error::other("output buffer out of step")
}

#[cfg(test)]
mod fill_tests {
    use super::*;

    #[test]
    fn fill_with_reads_in_place_and_keeps_only_what_was_read() {
        let mut body = BodyBuffer::new(100);
        body.append(b"ab").unwrap();
        let got = body.fill_with(10, |buf| {
            assert_eq!(buf.len(), 10);
            buf[..3].copy_from_slice(b"cde");
            Ok(3)
        });
        assert_eq!(got.unwrap().unwrap(), 3);
        let failed = body.fill_with(5, |_| Err(io::ErrorKind::WouldBlock.into()));
        assert!(failed.unwrap().is_err());
        assert_eq!(body.len(), 5);
        match body.finish().unwrap() {
            Body::Memory(v) => assert_eq!(v, b"abcde"),
            other => panic!("expected memory, got {other:?}"),
        }
    }

    #[test]
    fn fill_with_grows_by_what_arrives_not_by_what_was_announced() {
        let mut body = BodyBuffer::new(1 << 30);
        let got = body.fill_with(500 << 20, |buf| {
            assert_eq!(buf.len(), DIRECT_READ_MAX);
            Ok(10)
        });
        assert_eq!(got.unwrap().unwrap(), 10);
        let BodyStore::Memory(vec) = &body.store else {
            panic!("in memory")
        };
        assert!(vec.capacity() <= 2 * DIRECT_READ_MAX);
    }

    #[test]
    fn fill_with_declines_what_would_reach_the_overflow() {
        let mut body = BodyBuffer::new(10);
        body.append(b"12345").unwrap();
        assert!(body.fill_with(5, |_| Ok(5)).is_none(), "5 + 5 is not < 10");
        assert!(body.fill_with(4, |_| Ok(4)).is_some());
        assert_eq!(body.len(), 9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::transport::{Accepted, Close, Want};
    use rstest::rstest;

    const CONN: ConnId = ConnId(3);

    /// Small deterministic PRNG (xorshift64) for varied test data.
    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> Self {
            XorShift(seed.max(1))
        }
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        /// Uniform-enough value in `0..n` (`n > 0`).
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// Random data of `lo + below(span)` bytes.
        fn data(&mut self, lo: usize, span: usize) -> Vec<u8> {
            let n = lo + self.below(span);
            self.bytes(n)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(n + 8);
            while out.len() < n {
                out.extend_from_slice(&self.next().to_le_bytes());
            }
            out.truncate(n);
            out
        }
    }

    /// A scripted in-memory transport: records what is written, takes at most
    /// `max_per_call` bytes per call, and injects WouldBlock, errors, zero or
    /// over-reported writes on demand.
    struct Fake {
        out: Vec<u8>,
        max_per_call: usize,
        /// Odd-numbered calls (the 1st, 3rd, ...) fail with WouldBlock.
        block_every_other: bool,
        /// Fail with this kind once `out` holds this many bytes.
        fail_at: Option<(usize, io::ErrorKind)>,
        /// This many calls fail with Interrupted before anything else.
        interrupts: usize,
        zero_writes: bool,
        over_report: bool,
        calls: usize,
        vectored_calls: usize,
        file_calls: usize,
    }

    impl Fake {
        fn new(max_per_call: usize) -> Self {
            Fake {
                out: Vec::new(),
                max_per_call,
                block_every_other: false,
                fail_at: None,
                interrupts: 0,
                zero_writes: false,
                over_report: false,
                calls: 0,
                vectored_calls: 0,
                file_calls: 0,
            }
        }
        fn blocking(mut self, on: bool) -> Self {
            self.block_every_other = on;
            self
        }
        /// The byte budget of this call, or its scripted error.
        fn admit(&mut self) -> io::Result<usize> {
            self.calls += 1;
            if self.interrupts > 0 {
                self.interrupts -= 1;
                return Err(io::ErrorKind::Interrupted.into());
            }
            if self.block_every_other && self.calls % 2 == 1 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.zero_writes {
                return Ok(0);
            }
            let mut budget = self.max_per_call;
            if let Some((at, kind)) = self.fail_at {
                if self.out.len() >= at {
                    return Err(kind.into());
                }
                budget = budget.min(at - self.out.len());
            }
            Ok(budget)
        }
        fn reported(&self, n: usize) -> usize {
            if self.over_report {
                n + 1
            } else {
                n
            }
        }
    }

    impl Transport for Fake {
        fn accept(&mut self) -> io::Result<Option<Accepted>> {
            Ok(None)
        }
        fn set_accepting(&mut self, _on: bool) {}
        fn read(&mut self, _conn: ConnId, _buf: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn write_vectored(&mut self, conn: ConnId, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            assert_eq!(conn, CONN);
            assert!(bufs.len() <= MAX_IOSLICES);
            self.vectored_calls += 1;
            let mut budget = self.admit()?;
            let mut n = 0;
            for b in bufs {
                let take = budget.min(b.len());
                self.out.extend_from_slice(&b[..take]);
                budget -= take;
                n += take;
            }
            Ok(self.reported(n))
        }
        fn send_file(
            &mut self,
            conn: ConnId,
            file: &File,
            offset: u64,
            len: usize,
        ) -> io::Result<usize> {
            assert_eq!(conn, CONN);
            self.file_calls += 1;
            let budget = self.admit()?.min(len);
            let mut f = file;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0; budget];
            let mut n = 0;
            while n < budget {
                match f.read(&mut buf[n..])? {
                    0 => break,
                    r => n += r,
                }
            }
            self.out.extend_from_slice(&buf[..n]);
            Ok(self.reported(n))
        }
        fn set_interest(&mut self, _conn: ConnId, _want: Want) {}
        fn close(&mut self, _conn: ConnId, _how: Close) {}
    }

    fn file_with(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(content).expect("write");
        f
    }

    /// Call `write_to` until the buffer is empty, failing on lack of progress.
    fn drain(buf: &mut OutBuffer, fake: &mut Fake) {
        let mut idle = 0;
        while !buf.is_empty() {
            let n = buf.write_to(fake, CONN).expect("write_to");
            idle = if n == 0 { idle + 1 } else { 0 };
            assert!(idle < 3, "no progress with {} bytes pending", buf.len());
            check_invariants(buf);
        }
        assert_eq!(buf.memory_len(), 0);
    }

    fn assert_same(got: &[u8], want: &[u8]) {
        if got != want {
            let at = got.iter().zip(want).position(|(a, b)| a != b);
            panic!(
                "output differs: got {} bytes, want {}, first difference at {at:?}",
                got.len(),
                want.len()
            );
        }
    }

    /// The bookkeeping agrees with the queue it describes.
    fn check_invariants(buf: &OutBuffer) {
        let mut total = 0u64;
        let mut mem = 0usize;
        let mut spilled = 0u64;
        for seg in &buf.segs {
            match seg {
                Segment::Mem { buf: b, pos, .. } => {
                    assert!(*pos < b.len(), "empty memory segment queued");
                    mem += b.len() - pos;
                    total += (b.len() - pos) as u64;
                }
                Segment::Spill { len } => {
                    assert!(*len > 0, "empty spill segment queued");
                    spilled += len;
                    total += len;
                }
                Segment::File { remaining, .. } => {
                    assert!(*remaining > 0, "empty file segment queued");
                    total += remaining;
                }
            }
        }
        assert_eq!(buf.len(), total);
        assert_eq!(buf.mem_len, mem);
        assert!(mem <= buf.overflow);
        match &buf.spill {
            Some(s) => {
                let chunk = s.pending().len() as u64;
                assert_eq!(spilled, s.write_pos - s.read_pos + chunk);
                if chunk > 0 {
                    assert!(matches!(buf.segs.front(), Some(Segment::Spill { .. })));
                }
            }
            None => assert_eq!(spilled, 0),
        }
        assert!(buf.memory_len() <= buf.overflow + SPILL_CHUNK);
    }

    fn body_bytes(body: Body) -> Vec<u8> {
        match body {
            Body::Empty => Vec::new(),
            Body::Memory(v) => v,
            Body::File { mut file, len } => {
                // Read from the current position: proves the file was rewound.
                let mut v = Vec::new();
                file.read_to_end(&mut v).expect("read body file");
                assert_eq!(v.len() as u64, len);
                v
            }
        }
    }

    // ---- BodyBuffer ----

    #[rstest]
    #[case::nothing(16, &[], false)]
    #[case::empty_appends(16, &[0, 0], false)]
    #[case::just_below(16, &[15], false)]
    #[case::exactly_at(16, &[16], true)]
    #[case::above(16, &[17], true)]
    #[case::two_below(16, &[8, 7], false)]
    #[case::two_reaching(16, &[8, 8], true)]
    #[case::crossing_then_more(16, &[8, 7, 1, 0, 30], true)]
    #[case::large(16, &[100, 3, 50], true)]
    #[case::zero_overflow(0, &[1], true)]
    #[case::zero_overflow_empty(0, &[0], false)]
    #[case::one_overflow(1, &[1], true)]
    fn body_spills_at_overflow(
        #[case] overflow: usize,
        #[case] sizes: &[usize],
        #[case] spilled: bool,
    ) {
        let mut rng = XorShift::new(overflow as u64 * 31 + sizes.len() as u64);
        let mut body = BodyBuffer::new(overflow);
        let mut expected = Vec::new();
        for &n in sizes {
            let data = rng.bytes(n);
            body.append(&data).expect("append");
            expected.extend_from_slice(&data);
            assert_eq!(body.len(), expected.len() as u64);
        }
        assert_eq!(body.spilled(), spilled);
        assert_eq!(body.is_empty(), expected.is_empty());
        let out = body.finish().expect("finish");
        match (&out, expected.len(), spilled) {
            (Body::Empty, 0, false)
            | (Body::Memory(_), 1.., false)
            | (Body::File { .. }, _, true) => {}
            _ => panic!("wrong body kind {out:?} for {} bytes", expected.len()),
        }
        assert_eq!(out.len(), expected.len() as u64);
        assert_eq!(body_bytes(out), expected);
    }

    #[test]
    fn body_of_megabytes_reads_back_exactly() {
        let mut rng = XorShift::new(7);
        let mut body = BodyBuffer::new(512 * 1024);
        let mut expected = Vec::new();
        while expected.len() < 3 * 1024 * 1024 {
            let data = rng.data(1, 70_000);
            body.append(&data).expect("append");
            expected.extend_from_slice(&data);
        }
        assert!(body.spilled());
        assert_same(&body_bytes(body.finish().expect("finish")), &expected);
    }

    #[test]
    fn body_memory_stays_within_overflow_and_is_freed_on_spill() {
        let overflow = 100_000;
        let mut body = BodyBuffer::new(overflow);
        for _ in 0..99 {
            body.append(&[7; 1000]).expect("append");
            match &body.store {
                BodyStore::Memory(v) => {
                    assert!(v.capacity() <= overflow, "capacity {}", v.capacity())
                }
                other => panic!("spilled early: {other:?}"),
            }
        }
        body.append(&[7; 1000]).expect("append");
        assert!(
            matches!(body.store, BodyStore::File(_)),
            "no in-memory copy after the spill"
        );
        body.append(&[8; 10]).expect("append after spill");
        let bytes = body_bytes(body.finish().expect("finish"));
        assert_eq!(bytes.len(), 100_010);
        assert!(
            bytes[..100_000].iter().all(|&b| b == 7) && bytes[100_000..].iter().all(|&b| b == 8)
        );
    }

    #[test]
    fn failed_body_refuses_further_use() {
        let mut body = BodyBuffer::new(10);
        body.append(b"abc").expect("append");
        body.store = BodyStore::Failed;
        assert!(body.append(b"more").is_err());
        assert!(body.append(b"").is_err());
        assert!(body.finish().is_err());
    }

    // ---- OutBuffer ----

    /// Random memory, spill and file segments, interleaved with partial drains,
    /// arrive byte-exact and in order.
    #[rstest]
    #[case::one_byte(1, false, 1, 120)]
    #[case::one_byte_blocking(1, true, 2, 120)]
    #[case::seven_bytes(7, false, 3, 250)]
    #[case::seven_bytes_blocking(7, true, 4, 250)]
    #[case::page_blocking(4096, true, 5, 400)]
    #[case::unlimited(usize::MAX, false, 6, 400)]
    #[case::unlimited_blocking(usize::MAX, true, 7, 400)]
    fn mixed_segments_arrive_in_order(
        #[case] max_per_call: usize,
        #[case] blocking: bool,
        #[case] seed: u64,
        #[case] ops: usize,
    ) {
        let mut rng = XorShift::new(seed);
        let mut buf = OutBuffer::new(3000);
        let mut fake = Fake::new(max_per_call).blocking(blocking);
        let mut expected = Vec::new();
        let (mut spilled, mut files) = (false, 0);
        for _ in 0..ops {
            match rng.below(10) {
                0..=3 => {
                    let d = rng.data(1, 200);
                    buf.push(&d).expect("push");
                    expected.extend_from_slice(&d);
                }
                4 | 5 => {
                    let d = rng.data(COPY_MAX + 1, 10_000);
                    expected.extend_from_slice(&d);
                    buf.push_vec(d).expect("push_vec");
                }
                6 => {
                    let d = rng.data(1, COPY_MAX);
                    expected.extend_from_slice(&d);
                    buf.push_vec(d).expect("push_vec");
                }
                7 => {
                    let content = rng.data(0, 8000);
                    let offset = rng.below(content.len() + 1);
                    let len = rng.below(content.len() - offset + 1);
                    buf.push_file(file_with(&content), offset as u64, len as u64);
                    expected.extend_from_slice(&content[offset..offset + len]);
                    files += usize::from(len > 0);
                }
                _ => {
                    buf.write_to(&mut fake, CONN).expect("write_to");
                }
            }
            spilled |= buf.segs.iter().any(|s| matches!(s, Segment::Spill { .. }));
            check_invariants(&buf);
            assert_eq!(buf.len(), (expected.len() - fake.out.len()) as u64);
        }
        drain(&mut buf, &mut fake);
        assert!(
            spilled && files > 0,
            "the scenario must exercise spill and file segments"
        );
        assert_same(&fake.out, &expected);
    }

    /// A slow reader lets 10 MiB pile up: they go to the spill file, memory
    /// stays at the overflow plus one read-back chunk.
    #[test]
    fn memory_stays_bounded_while_megabytes_pile_up() {
        let overflow = 256 * 1024;
        let mut rng = XorShift::new(99);
        let mut buf = OutBuffer::new(overflow);
        let mut fake = Fake::new(1000).blocking(true);
        let mut expected = Vec::new();
        let (mut max_memory, mut max_spilled) = (0, 0);
        while expected.len() < 10 * 1024 * 1024 {
            let d = rng.data(1, 32 * 1024);
            expected.extend_from_slice(&d);
            if rng.below(2) == 0 {
                buf.push(&d).expect("push");
            } else {
                buf.push_vec(d).expect("push_vec");
            }
            buf.write_to(&mut fake, CONN).expect("write_to");
            max_memory = max_memory.max(buf.memory_len());
            max_spilled =
                max_spilled.max(buf.spill.as_ref().map_or(0, |s| s.write_pos - s.read_pos));
            assert!(
                buf.memory_len() <= overflow + SPILL_CHUNK,
                "memory_len {}",
                buf.memory_len()
            );
        }
        assert!(max_memory > overflow / 2, "memory was used: {max_memory}");
        assert!(
            max_spilled > 8 * 1024 * 1024,
            "megabytes went to disk: {max_spilled}"
        );
        fake.max_per_call = 100_000;
        drain(&mut buf, &mut fake);
        assert_same(&fake.out, &expected);
    }

    #[rstest]
    #[case::whole(0, 1000)]
    #[case::middle(10, 20)]
    #[case::last_byte(999, 1)]
    #[case::empty(500, 0)]
    #[case::large_offset(300, 700)]
    fn file_segments_honour_offsets(#[case] offset: usize, #[case] len: usize) {
        let content: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut file = file_with(&content);
        // The file's own cursor must not matter.
        file.seek(SeekFrom::Start(3)).expect("seek");
        let mut buf = OutBuffer::new(1 << 20);
        buf.push(b"head").expect("push");
        buf.push_file(file, offset as u64, len as u64);
        buf.push(b"tail").expect("push");
        assert_eq!(buf.len(), 8 + len as u64);
        assert_eq!(buf.memory_len(), 8);
        let mut fake = Fake::new(7).blocking(true);
        drain(&mut buf, &mut fake);
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&content[offset..offset + len]);
        expected.extend_from_slice(b"tail");
        assert_eq!(fake.out, expected);
        assert_eq!(fake.file_calls > 0, len > 0);
    }

    #[test]
    fn short_file_is_a_write_zero_error() {
        let mut buf = OutBuffer::new(1024);
        buf.push_file(file_with(b"0123456789"), 5, 100);
        let mut fake = Fake::new(usize::MAX);
        let err = buf.write_to(&mut fake, CONN).expect_err("file too short");
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert_eq!(fake.out, b"56789");
        assert_eq!(buf.len(), 95);
    }

    /// An error mid-way is returned; the buffer stays consistent, so after the
    /// error clears the rest still goes out in order.
    #[rstest]
    #[case::broken_pipe(io::ErrorKind::BrokenPipe, 30)]
    #[case::reset_in_file(io::ErrorKind::ConnectionReset, 120)]
    #[case::reset_in_spill(io::ErrorKind::ConnectionReset, 250)]
    #[case::other_at_start(io::ErrorKind::Other, 0)]
    fn errors_propagate(#[case] kind: io::ErrorKind, #[case] at: usize) {
        let mut rng = XorShift::new(at as u64 + 11);
        let mut buf = OutBuffer::new(100);
        let (a, content, b) = (rng.bytes(90), rng.bytes(150), rng.bytes(200));
        buf.push(&a).expect("push");
        buf.push_file(file_with(&content), 20, 100);
        buf.push(&b).expect("push spills");
        let mut expected = a.clone();
        expected.extend_from_slice(&content[20..120]);
        expected.extend_from_slice(&b);
        let mut fake = Fake::new(13);
        fake.fail_at = Some((at, kind));
        let err = buf.write_to(&mut fake, CONN).expect_err("injected");
        assert_eq!(err.kind(), kind);
        assert_eq!(fake.out.len(), at);
        assert_eq!(buf.len(), (expected.len() - at) as u64);
        check_invariants(&buf);
        assert_eq!(
            buf.write_to(&mut fake, CONN)
                .expect_err("still failing")
                .kind(),
            kind
        );
        fake.fail_at = None;
        drain(&mut buf, &mut fake);
        assert_same(&fake.out, &expected);
    }

    #[test]
    fn zero_write_is_write_zero_and_loses_nothing() {
        let mut buf = OutBuffer::new(100);
        buf.push(b"hello").expect("push");
        let mut fake = Fake::new(usize::MAX);
        fake.zero_writes = true;
        let err = buf.write_to(&mut fake, CONN).expect_err("zero write");
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert_eq!(buf.len(), 5);
        fake.zero_writes = false;
        drain(&mut buf, &mut fake);
        assert_eq!(fake.out, b"hello");
    }

    #[test]
    fn over_reporting_transport_is_an_error_not_a_panic() {
        let mut buf = OutBuffer::new(4);
        buf.push(b"ab").expect("push");
        buf.push(b"cdef").expect("push spills");
        buf.push_file(file_with(b"xyz"), 0, 3);
        let mut fake = Fake::new(usize::MAX);
        fake.over_report = true;
        for _ in 0..3 {
            assert!(buf.write_to(&mut fake, CONN).is_err());
            check_invariants(&buf);
        }
    }

    #[test]
    fn would_block_returns_bytes_written_so_far() {
        let mut buf = OutBuffer::new(1000);
        buf.push(&[1; 100]).expect("push");
        let mut fake = Fake::new(10).blocking(true);
        assert_eq!(buf.write_to(&mut fake, CONN).expect("blocked"), 0);
        assert_eq!(buf.write_to(&mut fake, CONN).expect("one write"), 10);
        assert_eq!(buf.len(), 90);
        fake.block_every_other = false;
        assert_eq!(buf.write_to(&mut fake, CONN).expect("rest"), 90);
        assert!(buf.is_empty());
    }

    #[test]
    fn interrupted_is_retried() {
        let mut buf = OutBuffer::new(1000);
        buf.push(b"abc").expect("push");
        buf.push_file(file_with(b"def"), 0, 3);
        let mut fake = Fake::new(usize::MAX);
        fake.interrupts = 3;
        assert_eq!(buf.write_to(&mut fake, CONN).expect("retried"), 6);
        assert_eq!(fake.out, b"abcdef");
    }

    #[test]
    fn empty_buffer_writes_nothing() {
        let mut buf = OutBuffer::new(10);
        buf.push(b"").expect("push");
        buf.push_vec(Vec::new()).expect("push_vec");
        buf.push_file(file_with(b"abc"), 1, 0);
        let mut fake = Fake::new(usize::MAX);
        assert_eq!(buf.write_to(&mut fake, CONN).expect("nothing"), 0);
        assert_eq!(fake.calls, 0);
        assert!(buf.is_empty() && buf.segs.is_empty());
    }

    /// After a full drain the spill file is truncated and reused, and the tail
    /// allocation is recycled.
    #[test]
    fn reuse_after_drain() {
        let mut rng = XorShift::new(5);
        let mut buf = OutBuffer::new(100);
        let mut fake = Fake::new(33);
        let mut expected = Vec::new();
        for round in 0..3 {
            let small = rng.bytes(60);
            let big = rng.bytes(5000 + round * 1000);
            buf.push(&small).expect("push");
            buf.push_vec(big.clone()).expect("push_vec");
            expected.extend_from_slice(&small);
            expected.extend_from_slice(&big);
            let spill = buf.spill.as_ref().expect("spilled");
            assert_eq!(
                spill.file.metadata().expect("metadata").len(),
                big.len() as u64
            );
            drain(&mut buf, &mut fake);
            let spill = buf.spill.as_ref().expect("kept");
            assert_eq!((spill.read_pos, spill.write_pos), (0, 0));
            assert_eq!(
                spill.file.metadata().expect("metadata").len(),
                0,
                "truncated"
            );
            assert!(buf.spare.capacity() >= 60, "tail allocation recycled");
        }
        assert_same(&fake.out, &expected);
        let spare = buf.spare.as_ptr();
        buf.push(b"again").expect("push");
        match buf.segs.back() {
            Some(Segment::Mem {
                buf: b, tail: true, ..
            }) => assert_eq!(b.as_slice().as_ptr(), spare),
            other => panic!("expected a tail segment, got {other:?}"),
        }
    }

    #[rstest]
    #[case::push(false)]
    #[case::push_vec(true)]
    fn tiny_writes_are_coalesced(#[case] owned: bool) {
        let mut buf = OutBuffer::new(1 << 20);
        let mut expected = Vec::new();
        for i in 0..10_000u32 {
            let d = [i as u8, (i >> 8) as u8, b'.'];
            expected.extend_from_slice(&d);
            if owned {
                buf.push_vec(d.to_vec()).expect("push_vec");
            } else {
                buf.push(&d).expect("push");
            }
        }
        assert!(buf.segs.len() <= 2, "{} segments", buf.segs.len());
        let mut fake = Fake::new(usize::MAX);
        assert_eq!(buf.write_to(&mut fake, CONN).expect("write"), 30_000);
        assert_eq!(fake.vectored_calls, 1);
        assert_eq!(fake.out, expected);
    }

    #[test]
    fn many_segments_are_gathered_into_few_calls() {
        let mut buf = OutBuffer::new(1 << 20);
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let d = vec![i; COPY_MAX + 1];
            expected.extend_from_slice(&d);
            buf.push_vec(d).expect("push_vec");
        }
        let mut fake = Fake::new(usize::MAX);
        buf.write_to(&mut fake, CONN).expect("write");
        assert_eq!(fake.vectored_calls, 2, "64 slices, then 36");
        assert_same(&fake.out, &expected);
    }

    /// Random calls with random transport failures: never a panic, and the
    /// bookkeeping always matches the queue.
    #[rstest]
    fn random_calls_never_panic(#[values(1, 2, 3, 4, 5, 6, 7, 8)] seed: u64) {
        let mut rng = XorShift::new(seed * 0x9e37_79b9);
        let mut buf = OutBuffer::new(rng.below(2000));
        let mut fake = Fake::new(1);
        for _ in 0..400 {
            match rng.below(8) {
                0 => buf.push(&rng.data(0, 300)).expect("push"),
                1 => buf.push_vec(rng.data(0, 20_000)).expect("push_vec"),
                2 => {
                    let content = rng.data(0, 500);
                    // Sometimes claim more than the file holds.
                    buf.push_file(
                        file_with(&content),
                        rng.below(600) as u64,
                        rng.below(600) as u64,
                    );
                }
                _ => {
                    fake.max_per_call = [1, 7, 100, usize::MAX][rng.below(4)];
                    fake.block_every_other = rng.below(2) == 0;
                    fake.zero_writes = rng.below(10) == 0;
                    fake.over_report = rng.below(10) == 0;
                    fake.interrupts = rng.below(2);
                    fake.fail_at = (rng.below(10) == 0)
                        .then(|| (fake.out.len() + rng.below(50), io::ErrorKind::BrokenPipe));
                    let before = buf.len();
                    match buf.write_to(&mut fake, CONN) {
                        Ok(n) => assert_eq!(buf.len(), before - n as u64),
                        Err(_) => assert!(buf.len() <= before),
                    }
                }
            }
            check_invariants(&buf);
        }
    }
}
