//! Building simulations: one server host, any number of clients, shared
//! observation cells.
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use maitre::config::Config;

use crate::driver::{self, App, AppFuture, EventLog, Probe, Request, Responder};

pub struct Setup {
    pub seed: u64,
    /// Virtual time per simulation step.
    pub tick: Duration,
    /// Fixed one-way latency, or None for turmoil's random 0-50 ms.
    pub latency: Option<Duration>,
    /// Largest server write per call (turmoil never splits writes itself).
    pub write_cap: usize,
    pub duration: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            seed: 1,
            tick: Duration::from_millis(1),
            latency: Some(Duration::from_millis(1)),
            write_cap: 1024,
            duration: Duration::from_secs(60),
        }
    }
}

pub struct Sim<'a> {
    pub sim: turmoil::Sim<'a>,
    pub log: EventLog,
    pub probe: Rc<Probe>,
}

/// A simulation with one server host named "server" serving `app`.
pub fn start(setup: Setup, config: Config, app: App) -> Sim<'static> {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(setup.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .tick_duration(setup.tick)
        .simulation_duration(setup.duration);
    match setup.latency {
        Some(l) => builder.min_message_latency(l).max_message_latency(l),
        None => builder
            .min_message_latency(Duration::ZERO)
            .max_message_latency(Duration::from_millis(50)),
    };
    let mut sim = builder.build();
    let log = EventLog::default();
    let probe = Rc::new(Probe::default());
    let (l, p, cap) = (log.clone(), probe.clone(), setup.write_cap);
    sim.host("server", move || {
        driver::serve(config.clone(), app.clone(), cap, l.clone(), p.clone())
    });
    Sim { sim, log, probe }
}

/// Build an `App` from an async closure.
pub fn app<F, Fut>(f: F) -> App
where
    F: Fn(Request, Responder) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    Rc::new(move |req, resp| -> AppFuture { Box::pin(f(req, resp)) })
}

/// Answers every request with its path as the body.
pub fn path_app() -> App {
    app(|req: Request, resp: Responder| async move {
        let body = req.target.into_bytes();
        let len = body.len().to_string();
        resp.start(
            "200 OK",
            &[("Content-Type", "text/plain"), ("Content-Length", &len)],
        );
        resp.write(body).await;
        resp.finish();
    })
}

/// Answers every request with its body.
pub fn echo_app() -> App {
    app(|req: Request, resp: Responder| async move {
        let len = req.body.len().to_string();
        resp.start("200 OK", &[("Content-Length", &len)]);
        resp.write(req.body).await;
        resp.finish();
    })
}
