//! Incremental decoder for chunked request bodies. (STUB: to be written.)
use std::ops::Range;

use crate::http::errors::HttpError;

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
    _private: (),
}

impl ChunkedDecoder {
    /// `max_body` bounds the wire bytes (framing and trailers included): reaching it is a 413.
    pub fn new(max_body: u64) -> Self {
        let _ = max_body;
        todo!()
    }

    /// Decode from `input`; returns the bytes consumed and what they were.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), HttpError> {
        let _ = input;
        todo!()
    }

    /// Body bytes produced so far.
    pub fn decoded_len(&self) -> u64 {
        todo!()
    }
}
