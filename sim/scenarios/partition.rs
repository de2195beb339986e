//! A network partition strands a response mid-flight. Nothing more can be
//! sent, so the channel goes idle and the sweep frees it after
//! `channel_timeout`; after the repair the server serves new clients.
use std::time::Duration;

use maitre::config::Config;
use tokio::io::AsyncReadExt;
use tokio::time::sleep;

use crate::client::{connect, get, send, Reader};
use crate::driver::{Request, Responder};
use crate::harness::{app, start, Setup};

/// The simulated time of the server's close of the first connection, if any.
fn run(channel_timeout: Duration) -> Option<f64> {
    let big = app(|req: Request, resp: Responder| async move {
        let body = if req.target == "/big" {
            vec![b'b'; 512 * 1024]
        } else {
            b"small".to_vec()
        };
        let len = body.len().to_string();
        resp.start("200 OK", &[("Content-Length", &len)]);
        resp.write(body).await;
        resp.finish();
    });
    let config = Config {
        channel_timeout,
        cleanup_interval: Duration::from_secs(5),
        ..Config::default()
    };
    let setup = Setup {
        duration: Duration::from_secs(40),
        ..Setup::default()
    };
    let mut s = start(setup, config, big);
    s.sim.client("client", async move {
        let mut stream = connect().await;
        send(&mut stream, &get("/big")).await;
        let mut buf = vec![0u8; 8192];
        stream.read_exact(&mut buf).await?;
        turmoil::partition("client", "server");
        sleep(Duration::from_secs(20)).await;
        turmoil::repair("client", "server");
        let mut fresh = connect().await;
        send(&mut fresh, &get("/small")).await;
        let r = Reader::default()
            .response(&mut fresh, false)
            .await
            .expect("served after repair");
        assert_eq!(r.body, b"small");
        Ok(())
    });
    s.sim.run().expect("simulation");
    let lines = s.log.lines();
    let close = lines.iter().find(|l| l.ends_with("server close c0 Fin"))?;
    close.split_whitespace().next()?.parse().ok()
}

#[test]
fn a_partitioned_connection_is_freed_by_the_idle_sweep() {
    // The last byte left before 5 s; the sweeps at 5 and 10 s see less than
    // 10 s of silence, the one at 15 s closes.
    assert_eq!(run(Duration::from_secs(10)), Some(15.0));
}

#[test]
fn without_the_timeout_the_stranded_connection_stays() {
    assert_eq!(run(Duration::from_secs(3600)), None);
}
