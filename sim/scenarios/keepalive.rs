//! An idle keep-alive connection is closed by the sweep that runs every
//! `cleanup_interval`, the first one after `channel_timeout` of silence.
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use maitre::config::Config;

use crate::client::{connect, get, now, send, Reader};
use crate::harness::{path_app, start, Setup};

const TICK: Duration = Duration::from_millis(10);

/// When the idle client saw the server close, if it did within the run.
fn idle_close(channel_timeout: Duration) -> Option<Duration> {
    let setup = Setup {
        tick: TICK,
        latency: Some(TICK),
        duration: Duration::from_secs(300),
        ..Setup::default()
    };
    let config = Config {
        channel_timeout,
        cleanup_interval: Duration::from_secs(30),
        ..Config::default()
    };
    let mut s = start(setup, config, path_app());
    let closed = Rc::new(Cell::new(None));
    let seen = closed.clone();
    s.sim.client("idle", async move {
        let mut stream = connect().await;
        let mut reader = Reader::default();
        send(&mut stream, &get("/once")).await;
        let r = reader.response(&mut stream, false).await.expect("answered");
        assert_eq!(r.body, b"/once");
        let rest =
            tokio::time::timeout(Duration::from_secs(280), reader.until_closed(&mut stream)).await;
        if let Ok(rest) = rest {
            assert!(rest.is_empty(), "the close is silent: no 408");
            seen.set(Some(now()));
        }
        Ok(())
    });
    s.sim.run().expect("simulation");
    closed.get()
}

#[test]
fn idle_keepalive_is_closed_by_the_first_sweep_after_channel_timeout() {
    // Last activity: the response write at 30 ms. Sweeps run every 30 s from
    // the start; the one at 120 s finds 119.97 s of silence (not more than
    // 120), the one at 150 s closes; the FIN lands one latency later.
    assert_eq!(
        idle_close(Duration::from_secs(120)),
        Some(Duration::from_millis(150_010))
    );
}

#[test]
fn a_shorter_channel_timeout_closes_at_an_earlier_sweep() {
    // 45 s of silence is first exceeded at the sweep at 60 s.
    assert_eq!(
        idle_close(Duration::from_secs(45)),
        Some(Duration::from_millis(60_010))
    );
}

#[test]
fn with_a_long_channel_timeout_the_idle_connection_stays_open() {
    assert_eq!(idle_close(Duration::from_secs(1000)), None);
}
