//! A client that resets or vanishes mid-request or mid-response: the server
//! cancels the app, frees the channel and keeps serving others.
use std::time::Duration;

use maitre::config::Config;
use tokio::io::AsyncReadExt;
use tokio::time::sleep;

use crate::client::{connect, get, send, Reader};
use crate::driver::{Request, Responder};
use crate::harness::{app, path_app, start, Setup};

#[test]
fn reset_mid_request_body_frees_the_channel_and_never_calls_the_app() {
    let mut s = start(Setup::default(), Config::default(), path_app());
    s.sim.client("resetter", async move {
        let mut stream = connect().await;
        // The server answers 100 Continue; leaving it unread makes the drop a RST.
        send(
            &mut stream,
            b"POST /up HTTP/1.1\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        )
        .await;
        sleep(Duration::from_millis(10)).await;
        send(&mut stream, &[b'x'; 10]).await;
        sleep(Duration::from_millis(10)).await;
        drop(stream);
        Ok(())
    });
    s.sim.client("after", async move {
        sleep(Duration::from_millis(100)).await;
        let mut stream = connect().await;
        send(&mut stream, &get("/ok")).await;
        let r = Reader::default()
            .response(&mut stream, false)
            .await
            .expect("still serving");
        assert_eq!(r.body, b"/ok");
        Ok(())
    });
    s.sim.run().expect("simulation");
    assert!(
        s.log
            .lines()
            .iter()
            .any(|l| l.contains("server read c0 error")),
        "{:#?}",
        s.log.lines()
    );
    assert_eq!(
        s.probe.dispatched.get(),
        1,
        "only the later client's request ran"
    );
    assert_eq!(
        s.probe.connections.get(),
        1,
        "only the keep-alive client is left"
    );
}

#[test]
fn reset_mid_response_cancels_the_streaming_app_and_frees_the_channel() {
    let streamer = app(|_req: Request, resp: Responder| async move {
        resp.start("200 OK", &[("Content-Length", "10485760")]);
        for _ in 0..640 {
            resp.write(vec![b'z'; 16 * 1024]).await;
            sleep(Duration::from_millis(5)).await;
        }
        resp.finish();
    });
    let mut s = start(Setup::default(), Config::default(), streamer);
    s.sim.client("quitter", async move {
        let mut stream = connect().await;
        send(&mut stream, &get("/stream")).await;
        let mut buf = vec![0u8; 10_000];
        stream.read_exact(&mut buf).await?;
        sleep(Duration::from_millis(50)).await;
        drop(stream); // unread bytes are waiting: turmoil sends RST
        sleep(Duration::from_secs(1)).await;
        Ok(())
    });
    s.sim.run().expect("simulation");
    assert_eq!(s.probe.cancelled.get(), 1, "the app was cancelled");
    assert_eq!(s.probe.running_apps.get(), 0);
    assert_eq!(
        s.probe.connections.get(),
        0,
        "the connection table is empty"
    );
}

#[test]
fn eof_mid_head_frees_the_channel() {
    let mut s = start(Setup::default(), Config::default(), path_app());
    s.sim.client("half", async move {
        let mut stream = connect().await;
        send(&mut stream, b"GET /half HTTP/1.1\r\nHost: x").await;
        sleep(Duration::from_millis(10)).await;
        drop(stream);
        sleep(Duration::from_secs(1)).await;
        Ok(())
    });
    s.sim.run().expect("simulation");
    assert_eq!(s.probe.dispatched.get(), 0);
    assert_eq!(s.probe.connections.get(), 0);
    assert!(
        s.log.lines().iter().any(|l| l.contains("server read c0 0")),
        "{:#?}",
        s.log.lines()
    );
}
