//! `Expect: 100-continue`: the 100 goes out as soon as a valid head that
//! announces a body is parsed; never for a bodiless request, and never
//! before an error that is already known (Decision Q4).
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use maitre::config::Config;
use tokio::io::AsyncReadExt;

use crate::client::{connect, now, send, Reader};
use crate::harness::{echo_app, start, Setup};

fn exchange(
    config: Config,
    head: &'static [u8],
    body: &'static [u8],
) -> (Vec<(Duration, String)>, Vec<u8>) {
    let mut s = start(Setup::default(), config, echo_app());
    let seen = Rc::new(RefCell::new((Vec::new(), Vec::new())));
    let out = seen.clone();
    s.sim.client("expecter", async move {
        let mut stream = connect().await;
        send(&mut stream, head).await;
        let mut reader = Reader::default();
        let first = reader
            .response(&mut stream, false)
            .await
            .expect("an answer");
        out.borrow_mut().0.push((now(), first.status_line.clone()));
        if first.status_line.contains(" 100 ") {
            send(&mut stream, body).await;
            let r = reader
                .response(&mut stream, false)
                .await
                .expect("the final answer");
            out.borrow_mut().0.push((now(), r.status_line));
            out.borrow_mut().1 = r.body;
        } else {
            out.borrow_mut().1 = first.body;
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut rest)).await;
        }
        Ok(())
    });
    s.sim.run().expect("simulation");
    let r = seen.borrow().clone();
    r
}

#[test]
fn continue_is_sent_at_once_and_the_body_follows() {
    let (answers, body) = exchange(
        Config::default(),
        b"POST /e HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        b"hello",
    );
    // Head out 1 ms, 100 back 1 ms; body out 1 ms, answer back 1 ms.
    assert_eq!(
        answers,
        vec![
            (
                Duration::from_millis(3),
                "HTTP/1.1 100 Continue".to_string()
            ),
            (Duration::from_millis(5), "HTTP/1.1 200 OK".to_string()),
        ]
    );
    assert_eq!(body, b"hello");
}

#[test]
fn a_bodiless_request_gets_no_continue_and_is_answered() {
    let (answers, _) = exchange(
        Config::default(),
        b"GET /e HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"",
    );
    assert_eq!(
        answers,
        vec![(Duration::from_millis(3), "HTTP/1.1 200 OK".to_string())]
    );
}

#[test]
fn a_body_over_the_limit_is_refused_without_continue() {
    let config = Config {
        max_request_body_size: 100,
        ..Config::default()
    };
    let (answers, body) = exchange(
        config,
        b"POST /e HTTP/1.1\r\nContent-Length: 500\r\nExpect: 100-continue\r\n\r\n",
        b"",
    );
    assert_eq!(
        answers,
        vec![(
            Duration::from_millis(3),
            "HTTP/1.1 413 Request Entity Too Large".to_string()
        )]
    );
    assert!(String::from_utf8_lossy(&body).contains("exceeds max_body of 100"));
}
