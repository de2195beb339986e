//! `connection_limit`. When every place is taken by a connection with a
//! request in progress, the engine stops accepting and a new client waits in
//! the backlog until one finishes. Connections that only hold a place (idle
//! keep-alive, or a head still trickling in) are closed to make room, the
//! one waiting for its next head the longest first: idle and slow clients cannot lock out a new
//! one, as they can with Waitress.
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use maitre::config::Config;
use tokio::io::AsyncReadExt;
use tokio::time::{sleep, timeout};

use crate::client::{connect, get, now, send, Reader};
use crate::driver::{Request, Responder};
use crate::harness::{app, start, Setup};

/// `/sleep/N` answers after N seconds; anything else at once.
fn sleepy() -> crate::driver::App {
    app(|req: Request, resp: Responder| async move {
        if let Some(n) = req.target.strip_prefix("/sleep/") {
            sleep(Duration::from_secs(n.parse().unwrap_or(0))).await;
        }
        let body = req.target.into_bytes();
        let len = body.len().to_string();
        resp.start("200 OK", &[("Content-Length", &len)]);
        resp.write(body).await;
        resp.finish();
    })
}

/// (when the late client got its answer, the most connections the server held)
fn run(limit: usize) -> (Duration, usize) {
    let config = Config {
        connection_limit: limit,
        ..Config::default()
    };
    let mut s = start(Setup::default(), config, sleepy());
    for (name, path) in [("a", "/sleep/5"), ("b", "/sleep/10")] {
        s.sim.client(name, async move {
            let mut stream = connect().await;
            let mut reader = Reader::default();
            send(&mut stream, &get(path)).await;
            reader.response(&mut stream, false).await.expect("answered");
            sleep(Duration::from_secs(15) - now()).await;
            drop(stream);
            Ok(())
        });
    }
    let answered = Rc::new(Cell::new(Duration::ZERO));
    let at = answered.clone();
    s.sim.client("late", async move {
        sleep(Duration::from_secs(1)).await;
        let mut stream = connect().await;
        let mut reader = Reader::default();
        send(&mut stream, &get("/late")).await;
        let r = reader
            .response(&mut stream, false)
            .await
            .expect("late client answered");
        assert_eq!(r.body, b"/late");
        at.set(now());
        Ok(())
    });
    s.sim.run().expect("simulation");
    let peak = s.probe.peak_connections.get();
    (answered.get(), peak)
}

#[test]
fn a_client_past_the_limit_waits_until_a_request_finishes() {
    let (answered, peak) = run(2);
    assert_eq!(peak, 2);
    // "a"'s request reached the app at 2 ms, so its answer leaves at 5.002 s;
    // its connection, idle now, gives its place to "late", whose request
    // (sent at connect, waiting in the backlog) is read and answered at once:
    // the answer lands one hop later.
    assert_eq!(answered, Duration::from_millis(5_003));
}

#[test]
fn under_the_limit_the_late_client_is_served_at_once() {
    let (answered, peak) = run(100);
    assert_eq!(peak, 3);
    // Connect at 1 s (handshake 1 ms), request 1 ms, answer 1 ms.
    assert_eq!(answered, Duration::from_millis(1_003));
}

/// 15 clients trickle heads against a limit of 10 while a normal client makes
/// a new connection for each of its requests. Returns the normal client's
/// request latencies (None: not answered within 5 s).
fn slow_crowd(config: Config) -> Vec<Option<Duration>> {
    let tick = Duration::from_millis(10);
    let setup = Setup {
        tick,
        latency: Some(tick),
        duration: Duration::from_secs(40),
        ..Setup::default()
    };
    let mut s = start(setup, config, sleepy());
    for i in 0..15u64 {
        s.sim.client(format!("slow{i}"), async move {
            sleep(Duration::from_millis(100 * i)).await;
            // Reconnect whenever evicted, as an attacker would.
            while now() < Duration::from_secs(20) {
                let mut stream = connect().await;
                let mut buf = [0u8; 16];
                for byte in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                {
                    if now() >= Duration::from_secs(20)
                        || stream.try_write(std::slice::from_ref(byte)).is_err()
                    {
                        break;
                    }
                    match timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                        Err(_) => continue,
                        Ok(_) => break, // closed by the server
                    }
                }
            }
            Ok(())
        });
    }
    let latencies = Rc::new(RefCell::new(Vec::new()));
    let out = latencies.clone();
    let probe = s.probe.clone();
    s.sim.client("normal", async move {
        sleep(Duration::from_secs(5)).await;
        for _ in 0..6 {
            let sent = now();
            let attempt = async {
                let mut stream = connect().await;
                send(&mut stream, &get("/fast")).await;
                Reader::default().response(&mut stream, false).await
            };
            assert_eq!(
                probe.connections.get(),
                10,
                "the server is full of tricklers"
            );
            let answer = timeout(Duration::from_secs(5), attempt).await;
            out.borrow_mut()
                .push(answer.ok().flatten().map(|_| now() - sent));
            sleep(Duration::from_secs(2)).await;
        }
        Ok(())
    });
    s.sim.run().expect("simulation");
    let l = latencies.borrow().clone();
    l
}

#[test]
fn trickling_clients_at_the_limit_cannot_lock_out_a_normal_client() {
    let latencies = slow_crowd(Config {
        connection_limit: 10,
        ..Config::default()
    });
    // Handshake, request and answer: one 10 ms hop each, every time.
    assert_eq!(latencies, vec![Some(Duration::from_millis(30)); 6]);
}
