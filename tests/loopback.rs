//! The production driver over real loopback sockets (TCP v4, v6, Unix).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use maitre::config::Config;
use maitre::drivers::mio::{bind_tcp, EventSender, Listener, MioServer, StopHandle, Wiring};
use maitre::engine::{AppEvent, AppHead, Body, Executor, Job, ReqId};

type Handler = dyn Fn(&Job, Vec<u8>) -> (String, Vec<(String, String)>, Vec<u8>) + Send + Sync;

/// Runs each job on a small pool of plain threads, as the Python pool will.
struct ThreadPool {
    jobs: Sender<Job>,
}

impl ThreadPool {
    fn new(threads: usize, events: EventSender, handler: Arc<Handler>) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads {
            let (rx, events, handler) = (rx.clone(), events.clone(), handler.clone());
            thread::spawn(move || loop {
                let Ok(mut job) = rx.lock().unwrap().recv() else {
                    return;
                };
                let body = read_body(&mut job.body);
                let (status, headers, out) = handler(&job, body);
                let head = AppHead {
                    status,
                    headers: headers.into_iter().collect(),
                    known_length: None,
                };
                events.send(AppEvent::Head { req: job.req, head });
                events.send(AppEvent::Data {
                    req: job.req,
                    bytes: out.into(),
                });
                events.send(AppEvent::Done { req: job.req });
            });
        }
        ThreadPool { jobs }
    }
}

fn read_body(body: &mut Body) -> Vec<u8> {
    match body {
        Body::Empty => Vec::new(),
        Body::Memory(v) => std::mem::take(v),
        Body::File { file, .. } => {
            let mut v = Vec::new();
            file.read_to_end(&mut v).unwrap();
            v
        }
    }
}

impl Executor for ThreadPool {
    fn dispatch(&mut self, job: Job) {
        self.jobs.send(job).unwrap();
    }
    fn grant(&mut self, _req: ReqId, _bytes: usize) {}
    fn cancel(&mut self, _req: ReqId) {}
}

struct Running {
    stop: StopHandle,
    thread: Option<JoinHandle<()>>,
    described: Vec<(String, String)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve(config: Config, listeners: Vec<Listener>, handler: Arc<Handler>) -> Running {
    let wiring = Wiring::new().unwrap();
    let pool = ThreadPool::new(4, wiring.sender.clone(), handler);
    let mut server = MioServer::new(&config, listeners, wiring, pool).unwrap();
    let described = server
        .listeners()
        .iter()
        .map(|l| l.describe().unwrap())
        .collect();
    let stop = server.stop_handle();
    let thread = thread::spawn(move || server.run().unwrap());
    Running {
        stop,
        thread: Some(thread),
        described,
    }
}

/// Echoes the method, the target and the body.
fn echo() -> Arc<Handler> {
    Arc::new(|job: &Job, body: Vec<u8>| {
        let mut out = format!(
            "{} {} ",
            job.head.method,
            String::from_utf8_lossy(&job.head.target)
        )
        .into_bytes();
        out.extend(body);
        let headers = vec![("Content-Length".to_string(), out.len().to_string())];
        ("200 OK".to_string(), headers, out)
    })
}

fn tcp_server(addr: &str, handler: Arc<Handler>) -> (Running, SocketAddr) {
    let listener = bind_tcp(addr.parse().unwrap(), 128).unwrap();
    let running = serve(Config::default(), vec![listener], handler);
    let (host, port) = running.described[0].clone();
    let ip: std::net::IpAddr = host.parse().unwrap();
    (running, SocketAddr::new(ip, port.parse().unwrap()))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Read one Content-Length framed response; returns (head, body).
fn response(stream: &mut impl Read) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed inside a head"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    (head, body)
}

fn without_date(head: &str) -> String {
    head.lines()
        .filter(|l| !l.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn keep_alive_requests_share_one_connection() {
    let (_server, addr) = tcp_server("127.0.0.1:0", echo());
    let mut s = connect(addr);
    for path in ["/one", "/two"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let (head, body) = response(&mut s);
        assert_eq!(
            without_date(&head),
            format!(
                "HTTP/1.1 200 OK\nContent-Length: {}\nServer: maitre\n",
                5 + path.len()
            )
        );
        assert_eq!(body, format!("GET {path} ").into_bytes());
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_server, addr) = tcp_server("127.0.0.1:0", echo());
    let mut s = connect(addr);
    let all: String = (0..20)
        .map(|i| format!("GET /p{i} HTTP/1.1\r\n\r\n"))
        .collect();
    s.write_all(all.as_bytes()).unwrap();
    for i in 0..20 {
        let (_, body) = response(&mut s);
        assert_eq!(body, format!("GET /p{i} ").into_bytes());
    }
}

#[test]
fn chunked_and_large_bodies_arrive_intact() {
    let (_server, addr) = tcp_server("127.0.0.1:0", echo());
    let mut s = connect(addr);
    s.write_all(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n")
        .unwrap();
    assert_eq!(response(&mut s).1, b"POST /c hello world");

    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let head = format!(
        "POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let mut writer = s.try_clone().unwrap();
    let sent = big.clone();
    let feeder = thread::spawn(move || {
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(&sent).unwrap();
    });
    let (_, body) = response(&mut s);
    feeder.join().unwrap();
    assert_eq!(&body[..9], b"POST /big");
    assert!(
        body[10..] == big[..],
        "the 3 MB body (spilled past inbuf_overflow) differs"
    );
}

#[test]
fn a_bad_request_gets_waitress_error_bytes_and_a_close() {
    let (_server, addr) = tcp_server("127.0.0.1:0", echo());
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nContent-Length: +10\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8(all).unwrap();
    let body = "Bad Request\r\n\r\nContent-Length is invalid\r\n\r\n(generated by maitre)";
    assert_eq!(
        without_date(&text),
        without_date(&format!(
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: {}\r\n\
             Content-Type: text/plain; charset=utf-8\r\nDate: x\r\nServer: maitre\r\n\r\n{body}",
            body.len()
        ))
    );
}

#[test]
fn ipv6_loopback_is_served() {
    let (_server, addr) = tcp_server("[::1]:0", echo());
    assert!(addr.is_ipv6());
    let mut s = connect(addr);
    s.write_all(b"GET /v6 HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(response(&mut s).1, b"GET /v6 ");
}

#[cfg(unix)]
#[test]
fn unix_socket_is_served_with_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("maitre.sock");
    let listener = maitre::drivers::mio::bind_unix(&path, 0o660, 16).unwrap();
    let server = serve(Config::default(), vec![listener], echo());
    assert_eq!(
        server.described[0],
        ("unix".to_string(), path.display().to_string())
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"GET /unix HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(response(&mut s).1, b"GET /unix ");
}

#[test]
fn a_large_response_reaches_a_slow_reader_byte_for_byte() {
    let data: Arc<Vec<u8>> = Arc::new((0..8_000_000u32).map(|i| (i * 7 % 253) as u8).collect());
    let served = data.clone();
    let handler: Arc<Handler> = Arc::new(move |_job: &Job, _body: Vec<u8>| {
        let headers = vec![("Content-Length".to_string(), served.len().to_string())];
        ("200 OK".to_string(), headers, served.to_vec())
    });
    let (_server, addr) = tcp_server("127.0.0.1:0", handler);
    let mut s = connect(addr);
    s.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
    thread::sleep(Duration::from_millis(200)); // let the server fill the socket and spill the rest
    let (_, body) = response(&mut s);
    assert!(body == data[..], "8 MB response differs");
}
