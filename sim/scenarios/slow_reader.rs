//! A client that reads slowly: output past `outbuf_overflow` goes to a temp
//! file, the app is paused while more than `outbuf_high_watermark` bytes wait,
//! memory stays bounded, and every byte arrives in order.
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use maitre::config::Config;
use maitre::engine::buffers::SPILL_CHUNK;
use tokio::io::AsyncReadExt;
use tokio::time::sleep;

use crate::client::{connect, get, now, pattern, send};
use crate::driver::{Request, Responder};
use crate::harness::{app, start, Setup};

const TOTAL: usize = 4 << 20;
const PIECE: usize = 16 * 1024;
const OVERFLOW: usize = 64 * 1024;

struct Outcome {
    received: Vec<u8>,
    app_finished: Duration,
    peak_pending: u64,
    peak_memory: usize,
}

fn run(watermark: usize) -> Outcome {
    let config = Config {
        outbuf_overflow: OVERFLOW,
        outbuf_high_watermark: watermark,
        ..Config::default()
    };
    let finished = Rc::new(Cell::new(Duration::ZERO));
    let done = finished.clone();
    let streamer = app(move |_req: Request, resp: Responder| {
        let done = done.clone();
        async move {
            let len = TOTAL.to_string();
            resp.start("200 OK", &[("Content-Length", &len)]);
            let data = pattern(TOTAL, 3);
            for piece in data.chunks(PIECE) {
                resp.write(piece.to_vec()).await;
            }
            resp.finish();
            done.set(now());
        }
    });
    let setup = Setup {
        duration: Duration::from_secs(120),
        ..Setup::default()
    };
    let mut s = start(setup, config, streamer);
    let received = Rc::new(RefCell::new(Vec::new()));
    let got = received.clone();
    s.sim.client("slow-reader", async move {
        let mut stream = connect().await;
        send(&mut stream, &get("/big")).await;
        let mut all = Vec::new();
        let mut buf = vec![0u8; PIECE];
        let complete = |all: &[u8]| {
            let head_end = all.windows(4).position(|w| w == b"\r\n\r\n");
            head_end.is_some_and(|h| all.len() >= h + 4 + TOTAL)
        };
        while !complete(&all) {
            // About 160 KiB/s: 16 KiB every 100 ms.
            sleep(Duration::from_millis(100)).await;
            let mut piece = 0;
            while piece < PIECE && !complete(&all) {
                match stream.read(&mut buf[..PIECE - piece]).await? {
                    0 => panic!("closed before the whole body arrived"),
                    n => {
                        all.extend_from_slice(&buf[..n]);
                        piece += n;
                    }
                }
            }
        }
        *got.borrow_mut() = all;
        Ok(())
    });
    s.sim.run().expect("simulation");
    let received = received.borrow().clone();
    Outcome {
        received,
        app_finished: finished.get(),
        peak_pending: s.probe.peak_pending_output.get(),
        peak_memory: s.probe.peak_output_in_memory.get(),
    }
}

fn body_of(received: &[u8]) -> &[u8] {
    let h = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    &received[h..]
}

#[test]
fn a_slow_reader_pauses_the_app_and_output_memory_stays_bounded() {
    let watermark = 256 * 1024;
    let out = run(watermark);
    assert!(body_of(&out.received) == pattern(TOTAL, 3), "body differs");
    // The app may overshoot the watermark by at most one piece before it waits.
    assert!(
        out.peak_pending <= (watermark + PIECE) as u64,
        "pending {}",
        out.peak_pending
    );
    // In memory: at most `outbuf_overflow`, plus one chunk read back from the spill file.
    assert!(
        out.peak_memory <= OVERFLOW + SPILL_CHUNK,
        "memory {}",
        out.peak_memory
    );
    // Paused, the app can only finish once all but a watermark's worth was
    // read: at 160 KiB/s that is after 4 MiB - 256 KiB - 64 KiB in flight.
    assert!(
        out.app_finished > Duration::from_secs(20),
        "app finished at {:?}",
        out.app_finished
    );
}

#[test]
fn with_a_huge_watermark_the_app_is_not_paused_and_output_spills_to_disk() {
    let out = run(1 << 30);
    assert!(body_of(&out.received) == pattern(TOTAL, 3), "body differs");
    assert!(
        out.app_finished < Duration::from_millis(10),
        "app finished at {:?}",
        out.app_finished
    );
    // Almost all of it waited in the buffer at once, yet memory stayed bounded.
    assert!(
        out.peak_pending > (TOTAL / 2) as u64,
        "pending {}",
        out.peak_pending
    );
    assert!(
        out.peak_memory <= OVERFLOW + SPILL_CHUNK,
        "memory {}",
        out.peak_memory
    );
}
