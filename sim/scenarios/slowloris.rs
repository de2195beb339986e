//! 50 clients trickle a request head one byte per second. `channel_timeout`
//! alone never closes them (each byte is activity); `header_timeout` does,
//! while a normal client keeps being served at network speed.
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use maitre::config::Config;
use tokio::io::AsyncReadExt;
use tokio::time::{sleep, timeout};

use crate::client::{self, connect, get, now, send, Reader};
use crate::harness::{path_app, start, Setup};

const SLOW: usize = 50;
const TICK: Duration = Duration::from_millis(10);

/// Returns (when each slow client saw its connection closed, normal client latencies).
fn run(header_timeout: Duration, horizon: Duration) -> (Vec<Option<Duration>>, Vec<Duration>) {
    let setup = Setup {
        tick: TICK,
        latency: Some(TICK),
        duration: horizon + Duration::from_secs(5),
        ..Setup::default()
    };
    let config = Config {
        header_timeout,
        ..Config::default()
    };
    let mut s = start(setup, config, path_app());
    let closed = Rc::new(RefCell::new(vec![None; SLOW]));
    for i in 0..SLOW {
        let closed = closed.clone();
        s.sim.client(format!("slow{i}"), async move {
            let mut stream = connect().await;
            let head = format!(
                "GET /slow HTTP/1.1\r\nHost: server\r\nX-Pad: {}\r\n\r\n",
                "a".repeat(200)
            );
            let mut buf = [0u8; 64];
            for byte in head.as_bytes() {
                if stream.try_write(std::slice::from_ref(byte)).is_err() {
                    break;
                }
                match timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                    Err(_) => {}
                    Ok(Ok(n)) if n > 0 => panic!("a slow client was answered"),
                    Ok(_) => {
                        closed.borrow_mut()[i] = Some(now());
                        break;
                    }
                }
                if now() > horizon {
                    break;
                }
            }
            Ok(())
        });
    }
    let latencies = Rc::new(RefCell::new(Vec::new()));
    let lat = latencies.clone();
    s.sim.client("normal", async move {
        sleep(Duration::from_secs(5)).await;
        let mut stream = connect().await;
        let mut reader = Reader::default();
        while now() + Duration::from_secs(10) < horizon {
            let sent = now();
            send(&mut stream, &get("/fast")).await;
            let r = reader
                .response(&mut stream, false)
                .await
                .expect("normal client answered");
            assert_eq!(r.status_line, "HTTP/1.1 200 OK");
            assert_eq!(r.body, b"/fast");
            lat.borrow_mut().push(now() - sent);
            sleep(Duration::from_secs(10)).await;
        }
        Ok(())
    });
    s.sim.run().expect("simulation");
    let _ = client::pattern;
    let closed = closed.borrow().clone();
    let latencies = latencies.borrow().clone();
    (closed, latencies)
}

#[test]
fn slowloris_heads_are_closed_at_header_timeout_while_a_normal_client_is_served() {
    let (closed, latencies) = run(Duration::from_secs(60), Duration::from_secs(90));
    // Each slow client is accepted when its SYN lands (10 ms), so its head
    // deadline is 60.010 s; the timer fires on that very tick and the FIN
    // takes one latency (10 ms) to reach the client.
    for (i, at) in closed.iter().enumerate() {
        assert_eq!(*at, Some(Duration::from_millis(60_020)), "slow client {i}");
    }
    // Request out (10 ms) + response back (10 ms): the 50 slow connections
    // add nothing to the normal client's time.
    assert_eq!(latencies.len(), 8);
    assert!(
        latencies.iter().all(|l| *l == Duration::from_millis(20)),
        "{latencies:?}"
    );
}

#[test]
fn without_header_timeout_slow_heads_hold_their_connections() {
    // The control: with the mechanism effectively off, the trickling clients
    // are still connected when the run ends (channel_timeout never fires).
    let (closed, _) = run(Duration::from_secs(3600), Duration::from_secs(90));
    assert!(closed.iter().all(Option::is_none), "{closed:?}");
}
