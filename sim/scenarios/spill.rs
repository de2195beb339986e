//! A request body of at least `inbuf_overflow` bytes is buffered in a temp
//! file, and reaches the app byte for byte.
use std::cell::RefCell;
use std::rc::Rc;

use maitre::config::Config;

use crate::client::{connect, pattern, post, send, Reader};
use crate::harness::{echo_app, start, Setup};

const BODY: usize = 1 << 20;

/// (the echoed body, how many bodies the engine spilled to disk)
fn run(inbuf_overflow: usize) -> (Vec<u8>, usize) {
    let config = Config {
        inbuf_overflow,
        ..Config::default()
    };
    let mut s = start(Setup::default(), config, echo_app());
    let echoed = Rc::new(RefCell::new(Vec::new()));
    let out = echoed.clone();
    s.sim.client("uploader", async move {
        let mut stream = connect().await;
        let mut reader = Reader::default();
        send(&mut stream, &post("/upload", &pattern(BODY, 7))).await;
        let r = reader.response(&mut stream, false).await.expect("answered");
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
        *out.borrow_mut() = r.body;
        Ok(())
    });
    s.sim.run().expect("simulation");
    let body = echoed.borrow().clone();
    (body, s.probe.spilled_bodies.get())
}

#[test]
fn a_body_past_inbuf_overflow_arrives_intact_through_a_temp_file() {
    let (body, spilled) = run(64 * 1024);
    assert_eq!(spilled, 1);
    assert!(body == pattern(BODY, 7), "echoed body differs");
}

#[test]
fn a_body_under_inbuf_overflow_stays_in_memory() {
    let (body, spilled) = run(2 * BODY);
    assert_eq!(spilled, 0);
    assert!(body == pattern(BODY, 7), "echoed body differs");
}
