//! Simulated HTTP clients: raw bytes out, responses parsed back.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::driver::PORT;

pub async fn connect() -> TcpStream {
    TcpStream::connect(("server", PORT))
        .await
        .expect("connect to server")
}

pub async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("send");
}

/// Seconds since the simulation started.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads responses from a stream, keeping bytes that belong to the next one.
#[derive(Default)]
pub struct Reader {
    pub buf: Vec<u8>,
    pub eof: bool,
    /// Every byte received, for wire transcripts.
    pub raw: Vec<u8>,
}

impl Reader {
    /// Read more bytes; false at end of stream or on reset.
    async fn fill(&mut self, stream: &mut TcpStream) -> bool {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.raw.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn line(&mut self, stream: &mut TcpStream) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill(stream).await {
                return None;
            }
        }
    }

    async fn exactly(&mut self, stream: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill(stream).await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// The next response, or None if the connection ended first. `head_only`
    /// for answers to HEAD (no body whatever the headers say).
    pub async fn response(&mut self, stream: &mut TcpStream, head_only: bool) -> Option<Response> {
        let status_line = self.line(stream).await?;
        let mut headers = Vec::new();
        loop {
            let line = self.line(stream).await?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line.split_once(':')?;
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut r = Response {
            status_line,
            headers,
            body: Vec::new(),
        };
        let code = r.status_line.split(' ').nth(1).unwrap_or("");
        if head_only || code.starts_with('1') || code == "204" || code == "304" {
            return Some(r);
        }
        if let Some(cl) = r.header("Content-Length") {
            let n: usize = cl.parse().ok()?;
            r.body = self.exactly(stream, n).await?;
        } else if r.header("Transfer-Encoding") == Some("chunked") {
            r.body = self.chunked(stream).await?;
        } else {
            while self.fill(stream).await {}
            r.body = std::mem::take(&mut self.buf);
        }
        Some(r)
    }

    async fn chunked(&mut self, stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size = usize::from_str_radix(&self.line(stream).await?, 16).ok()?;
            if size == 0 {
                self.line(stream).await?;
                return Some(body);
            }
            body.extend(self.exactly(stream, size).await?);
            self.line(stream).await?;
        }
    }

    /// Wait for the server to close; returns the bytes that came before.
    pub async fn until_closed(&mut self, stream: &mut TcpStream) -> Vec<u8> {
        while self.fill(stream).await {}
        std::mem::take(&mut self.buf)
    }
}

/// A GET with keep-alive (HTTP/1.1).
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: server\r\n\r\n").into_bytes()
}

/// A POST with a Content-Length body.
pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: server\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Deterministic pseudo-random bytes (xorshift), for byte-exact checks.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
