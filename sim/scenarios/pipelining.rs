//! 25 pipelined requests in one packet while the server may write only a few
//! bytes per call: every response arrives, whole and in request order.
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use maitre::config::Config;

use crate::client::{connect, get, send, Reader};
use crate::driver::{Request, Responder};
use crate::harness::{app, start, Setup};

/// Make CR and LF visible so the snapshot shows the exact wire bytes.
fn visible(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace('\r', "␍")
        .replace('\n', "␊\n")
}

fn run(write_cap: usize) -> Vec<u8> {
    // Later requests answer faster than earlier ones: order is the server's doing.
    let slow_first = app(|req: Request, resp: Responder| async move {
        let n: u64 = req.target.trim_start_matches("/r").parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(30 - n)).await;
        let body = req.target.into_bytes();
        let len = body.len().to_string();
        resp.start("200 OK", &[("Content-Length", &len)]);
        resp.write(body).await;
        resp.finish();
    });
    let setup = Setup {
        write_cap,
        ..Setup::default()
    };
    let mut s = start(setup, Config::default(), slow_first);
    let wire = Rc::new(RefCell::new(Vec::new()));
    let out = wire.clone();
    s.sim.client("pipeliner", async move {
        let mut stream = connect().await;
        let all: Vec<u8> = (0..25).flat_map(|i| get(&format!("/r{i}"))).collect();
        send(&mut stream, &all).await;
        let mut reader = Reader::default();
        for i in 0..25 {
            let r = reader
                .response(&mut stream, false)
                .await
                .expect("every response arrives");
            assert_eq!(r.status_line, "HTTP/1.1 200 OK");
            assert_eq!(
                r.body,
                format!("/r{i}").into_bytes(),
                "response {i} out of order"
            );
        }
        assert!(reader.buf.is_empty(), "nothing after the 25th response");
        *out.borrow_mut() = std::mem::take(&mut reader.raw);
        Ok(())
    });
    s.sim.run().expect("simulation");
    let transcript = wire.borrow().clone();
    transcript
}

#[test]
fn pipelined_requests_are_answered_in_order_through_3_byte_writes() {
    let transcript = run(3);
    insta::with_settings!({snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"), prepend_module_to_snapshot => true}, {
        insta::assert_snapshot!("pipelined_25_in_order", visible(&transcript));
    });
}

#[test]
fn the_write_size_does_not_change_the_bytes() {
    assert_eq!(run(3), run(64 * 1024));
}
