//! Determinism canary: the same seed gives the same run to the event; another
//! seed gives another run. Random latency makes the seed matter.
use std::time::Duration;

use maitre::config::Config;
use tokio::time::sleep;

use crate::client::{connect, get, post, send, Reader};
use crate::harness::{echo_app, start, Setup};

fn event_log(seed: u64) -> Vec<String> {
    let setup = Setup {
        seed,
        latency: None,
        ..Setup::default()
    };
    let mut s = start(setup, Config::default(), echo_app());
    for c in 0..5u64 {
        let log = s.log.clone();
        s.sim.client(format!("client{c}"), async move {
            let mut stream = connect().await;
            let mut reader = Reader::default();
            for i in 0..4u64 {
                let req = if i % 2 == 0 {
                    get("/")
                } else {
                    post("/", &vec![b'p'; 3000])
                };
                send(&mut stream, &req).await;
                let r = reader.response(&mut stream, false).await.expect("answered");
                log.push(format!("client{c} got {} bytes", r.body.len()));
                sleep(Duration::from_millis(7 * c)).await;
            }
            Ok(())
        });
    }
    s.sim.run().expect("simulation");
    s.log.lines()
}

#[test]
fn the_same_seed_gives_the_same_event_log_and_another_seed_another() {
    let first = event_log(7);
    assert!(
        first.len() > 100,
        "a non-trivial run: {} events",
        first.len()
    );
    assert_eq!(first, event_log(7));
    assert_ne!(first, event_log(8));
}
