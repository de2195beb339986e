//! Request-body and response-output buffers that spill to temp files. (STUB: to be written.)
use std::fs::File;
use std::io;

use crate::engine::executor::Body;
use crate::engine::transport::{ConnId, Transport};

/// Accumulates one request body: memory up to `inbuf_overflow`, then a temp file.
#[derive(Debug)]
pub struct BodyBuffer {
    _private: (),
}

impl BodyBuffer {
    pub fn new(overflow: usize) -> Self {
        let _ = overflow;
        todo!()
    }
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let _ = data;
        todo!()
    }
    pub fn len(&self) -> u64 {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the body has spilled to disk.
    pub fn spilled(&self) -> bool {
        todo!()
    }
    /// The finished body, file rewound to 0.
    pub fn finish(self) -> io::Result<Body> {
        todo!()
    }
}

/// Pending output of one connection, in order: memory up to `outbuf_overflow`,
/// then appended to a temp file; plus file ranges sent with `send_file`.
#[derive(Debug)]
pub struct OutBuffer {
    _private: (),
}

impl OutBuffer {
    pub fn new(overflow: usize) -> Self {
        let _ = overflow;
        todo!()
    }
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        let _ = data;
        todo!()
    }
    /// Like `push`, but takes ownership so in-memory data is not copied.
    pub fn push_vec(&mut self, data: Vec<u8>) -> io::Result<()> {
        let _ = data;
        todo!()
    }
    pub fn push_file(&mut self, file: File, offset: u64, len: u64) {
        let _ = (file, offset, len);
        todo!()
    }
    /// Pending bytes (memory, spill file and file ranges).
    pub fn len(&self) -> u64 {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes held in memory right now (the spill file does not count).
    pub fn memory_len(&self) -> usize {
        todo!()
    }
    /// Write until empty or `WouldBlock`; returns the bytes written. Errors other
    /// than `WouldBlock` are returned (the connection is broken).
    pub fn write_to<T: Transport>(&mut self, io: &mut T, conn: ConnId) -> io::Result<usize> {
        let _ = (io, conn);
        todo!()
    }
}
