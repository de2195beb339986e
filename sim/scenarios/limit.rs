//! `connection_limit`: past the limit the engine stops accepting; a client
//! that arrives then waits, and is served as soon as a slot frees.
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use maitre::config::Config;
use tokio::time::sleep;

use crate::client::{connect, get, now, send, Reader};
use crate::harness::{path_app, start, Setup};

/// (when the late client got its answer, the most connections the server held)
fn run(limit: usize) -> (Duration, usize) {
    let config = Config {
        connection_limit: limit,
        ..Config::default()
    };
    let mut s = start(Setup::default(), config, path_app());
    for (name, leave_at) in [("a", 5u64), ("b", 10)] {
        s.sim.client(name, async move {
            let mut stream = connect().await;
            let mut reader = Reader::default();
            send(&mut stream, &get("/hold")).await;
            reader.response(&mut stream, false).await.expect("answered");
            sleep(Duration::from_secs(leave_at) - now()).await;
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
fn a_client_past_the_limit_waits_until_a_slot_frees() {
    let (answered, peak) = run(2);
    assert_eq!(peak, 2);
    // "a" leaves at 5 s; its FIN reaches the server 1 ms later, the server
    // closes it, takes "late" from the backlog, reads the request it already
    // sent, and the answer takes 1 ms back.
    assert_eq!(answered, Duration::from_millis(5_002));
}

#[test]
fn under_the_limit_the_late_client_is_served_at_once() {
    let (answered, peak) = run(100);
    assert_eq!(peak, 3);
    // Connect at 1 s (handshake 1 ms), request 1 ms, answer 1 ms.
    assert_eq!(answered, Duration::from_millis(1_003));
}
