//! The engine: the connection table, the accept policy (`connection_limit`),
//! the idle sweep (`cleanup_interval`, `channel_timeout`) and event routing.
//!
//! Drivers call the `on_*` methods when something happened and ask
//! [`Engine::next_deadline`] when to call [`Engine::on_timer`]. The engine
//! answers by calling the non-blocking [`Transport`] and the [`Executor`].
use std::collections::BTreeSet;
use std::time::UNIX_EPOCH;

use log::{info, warn};

use crate::config::Config;
use crate::engine::channel::{Channel, Ctx, Ending};
use crate::engine::clock::{Clock, Timestamp};
use crate::engine::executor::{AppEvent, Executor, ReqId};
use crate::engine::settings::EngineSettings;
use crate::engine::transport::{Accepted, Close, ConnId, Transport};

pub struct Engine<T: Transport, C: Clock, E: Executor> {
    io: T,
    clock: C,
    exec: E,
    cfg: EngineSettings,
    /// Indexed by `ConnId` (the transport hands out small, reused ids).
    channels: Vec<Option<Channel>>,
    count: usize,
    accepting: bool,
    next_seq: u64,
    next_sweep: Timestamp,
    /// Pending `header_timeout` deadlines, earliest first.
    head_timers: BTreeSet<(Timestamp, ConnId)>,
    /// Pending `request_timeout` deadlines of running requests, earliest first.
    request_timers: BTreeSet<(Timestamp, ReqId)>,
    /// Counts accept rounds (see `Channel::accept_round`).
    accept_round: u64,
    /// A round stopped because the only connections it could evict were
    /// taken in that same round: accept again once their data is read.
    accept_later: bool,
    /// Set once a graceful stop began: until then no `drain` state exists.
    drain: Option<Drain>,
    date: DateCache,
    /// The read buffer, reused by every channel (`recv_bytes` long).
    scratch: Vec<u8>,
    /// Channels touched by a batch of app events, pumped once at its end.
    touched: Vec<ConnId>,
    /// Response heads are built here (see `Ctx::head_buf`).
    head_buf: Vec<u8>,
}

impl<T: Transport, C: Clock, E: Executor> Engine<T, C, E> {
    pub fn new(config: &Config, io: T, clock: C, exec: E) -> Self {
        let cfg = EngineSettings::from_config(config);
        let next_sweep = clock.now() + cfg.cleanup_interval;
        Engine {
            io,
            clock,
            exec,
            scratch: vec![0; cfg.recv_bytes],
            cfg,
            channels: Vec::new(),
            count: 0,
            accepting: true,
            next_seq: 0,
            next_sweep,
            head_timers: BTreeSet::new(),
            request_timers: BTreeSet::new(),
            drain: None,
            accept_round: 0,
            accept_later: false,
            date: DateCache::default(),
            touched: Vec::new(),
            head_buf: Vec::new(),
        }
    }

    pub fn transport(&self) -> &T {
        &self.io
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.io
    }

    pub fn executor(&self) -> &E {
        &self.exec
    }

    pub fn executor_mut(&mut self) -> &mut E {
        &mut self.exec
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Open client connections.
    pub fn connection_count(&self) -> usize {
        self.count
    }

    /// Whether the engine currently takes new connections.
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    /// Stop gracefully: take no new connection (listeners are closed), close
    /// connections with nothing in progress, let requests in progress finish
    /// (each closes its connection after its response), and cut whatever is
    /// left after `graceful_timeout`. [`Engine::is_drained`] tells when done.
    pub fn begin_drain(&mut self) {
        if self.drain.is_some() {
            return;
        }
        let deadline = self.clock.now() + self.cfg.graceful_timeout;
        self.drain = Some(Drain {
            deadline,
            retired: false,
            cut: 0,
        });
        self.accepting = false;
        self.io.stop_listening();
        let conns: Vec<ConnId> = self.live().map(|ch| ch.id).collect();
        info!(target: "maitre", "stopping gracefully: {} connections open", conns.len());
        for conn in conns {
            let idle = self
                .channels
                .get(conn.0)
                .and_then(Option::as_ref)
                .is_some_and(|ch| ch.is_evictable() && ch.is_between_requests());
            if idle {
                self.shut(conn, Close::Fin);
            } else {
                self.with_channel(conn, |channel, _, _| channel.begin_drain());
                self.pump(conn);
            }
        }
        self.after_event();
    }

    /// A graceful stop began (by request, or because `max_requests` was reached).
    pub fn is_draining(&self) -> bool {
        self.drain.is_some()
    }

    /// A graceful stop began and every connection is closed: the driver may return.
    pub fn is_drained(&self) -> bool {
        self.drain.is_some() && self.count == 0
    }

    /// The stop was started by `max_requests`, not asked for.
    pub fn is_retiring(&self) -> bool {
        self.drain.as_ref().is_some_and(|d| d.retired)
    }

    /// Connections still busy when `graceful_timeout` ran out, and so cut.
    pub fn drain_cut(&self) -> usize {
        self.drain.as_ref().map_or(0, |d| d.cut)
    }

    /// Bytes waiting to be written, over all connections.
    pub fn pending_output(&self) -> u64 {
        self.live().map(Channel::pending_output).sum()
    }

    /// Output bytes held in memory (not spilled), over all connections.
    pub fn output_in_memory(&self) -> usize {
        self.live().map(Channel::output_in_memory).sum()
    }

    fn live(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter().flatten()
    }

    /// One or more connections may be waiting on a listener.
    /// Drivers call this after the other events of a readiness batch, so a
    /// connection taken in an earlier round has had its data read before a
    /// newcomer may evict it.
    pub fn on_acceptable(&mut self) {
        self.accept_round += 1;
        self.refresh_date();
        self.accept_waiting();
    }

    pub fn on_readable(&mut self, conn: ConnId) {
        self.refresh_date();
        self.pump(conn);
        self.after_event();
    }

    pub fn on_writable(&mut self, conn: ConnId) {
        self.on_readable(conn);
    }

    pub fn on_app_event(&mut self, ev: AppEvent) {
        self.on_app_events(std::iter::once(ev));
    }

    /// A batch of app events; each touched connection is flushed once at the
    /// end, so a head, a small body and its end leave in one write.
    pub fn on_app_events(&mut self, events: impl IntoIterator<Item = AppEvent>) {
        self.refresh_date();
        for ev in events {
            let conn = ev.req().conn();
            let routed = self.with_channel(conn, |channel, cx, _| channel.on_app_event(cx, ev));
            if routed.is_some() && !self.touched.contains(&conn) {
                self.touched.push(conn);
            }
        }
        let touched = std::mem::take(&mut self.touched);
        for conn in &touched {
            self.pump(*conn);
        }
        self.touched = touched;
        self.touched.clear();
        self.after_event();
    }

    /// Call when `next_deadline` has passed.
    pub fn on_timer(&mut self) {
        self.refresh_date();
        let now = self.clock.now();
        self.expire_requests(now);
        if std::mem::take(&mut self.accept_later) {
            self.accept_round += 1;
            self.accept_waiting();
        }
        while let Some(&(at, conn)) = self.head_timers.first() {
            if at > now {
                break;
            }
            self.head_timers.pop_first();
            info!(target: "maitre", "closing connection: no complete request head within header_timeout");
            self.shut(conn, Close::Fin);
        }
        if now >= self.next_sweep {
            self.sweep_idle(now);
            self.next_sweep = now + self.cfg.cleanup_interval;
        }
        if self.drain.as_ref().is_some_and(|d| now >= d.deadline) {
            self.cut_remaining();
        }
        self.after_event();
    }

    /// When `on_timer` must run next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let firsts = [
            self.head_timers.first().map(|&(at, _)| at),
            self.request_timers.first().map(|&(at, _)| at),
            self.drain
                .as_ref()
                .filter(|_| self.count > 0)
                .map(|d| d.deadline),
            // At once, but after the driver has read what is ready.
            self.accept_later.then(|| self.clock.now()),
        ];
        Some(
            firsts
                .into_iter()
                .flatten()
                .fold(self.next_sweep, Timestamp::min),
        )
    }

    /// Requests running past `request_timeout` are answered without the app.
    fn expire_requests(&mut self, now: Timestamp) {
        while let Some(&(at, req)) = self.request_timers.first() {
            if at > now {
                break;
            }
            self.request_timers.pop_first();
            let conn = req.conn();
            self.with_channel(conn, |channel, cx, _| {
                channel.request_armed = None;
                channel.time_out(cx, req);
            });
            self.pump(conn);
        }
    }

    /// `graceful_timeout` ran out: close what is still open.
    fn cut_remaining(&mut self) {
        let conns: Vec<ConnId> = self.live().map(|ch| ch.id).collect();
        if conns.is_empty() {
            return;
        }
        warn!(
            target: "maitre",
            "graceful_timeout reached: closing {} connections still in progress",
            conns.len()
        );
        if let Some(drain) = &mut self.drain {
            drain.cut += conns.len();
        }
        for conn in conns {
            self.shut(conn, Close::Fin);
        }
    }

    /// Waitress's maintenance: close every channel with no request queued or
    /// running that has seen no I/O for longer than `channel_timeout`.
    /// Half-received heads count as idle, which bounds slowloris clients.
    fn sweep_idle(&mut self, now: Timestamp) {
        let timeout = self.cfg.channel_timeout;
        let stale: Vec<ConnId> = self
            .live()
            .filter(|ch| ch.is_idle() && now - ch.last_activity > timeout)
            .map(|ch| ch.id)
            .collect();
        for conn in stale {
            self.shut(conn, Close::Fin);
        }
    }

    /// Close a connection from outside its own flow, cancelling its request.
    pub fn shut(&mut self, conn: ConnId, how: Close) {
        if let Some(channel) = self.channels.get_mut(conn.0).and_then(Option::as_mut) {
            channel.shut(&mut self.exec);
            self.remove(conn, how);
        }
        self.after_event();
    }

    /// Take waiting connections while there is room: below
    /// `connection_limit`, or at it by closing a connection that only holds
    /// a place (idle between requests, or still trickling a head), the one
    /// that has waited for its next head the longest first (see
    /// `Channel::waiting_since`). So slow or idle clients cannot lock out a
    /// new one; only connections with requests in progress count as full.
    fn accept_waiting(&mut self) {
        while self.accepting {
            let room = self.room();
            if room == Room::Full {
                self.pause_accepting();
                break;
            }
            if room == Room::Later {
                self.accept_later = true;
                break;
            }
            match self.io.accept() {
                Ok(Some(accepted)) => {
                    if let Room::Evict(victim) = room {
                        info!(
                            target: "maitre",
                            "closing an idle connection to make room for a new one (connection_limit)"
                        );
                        self.shut(victim, Close::Fin);
                    }
                    self.open(accepted);
                }
                Ok(None) => break,
                Err(e) => match e.kind() {
                    std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => break,
                    _ => {
                        if self.cfg.log_socket_errors {
                            warn!(target: "maitre", "server accept() threw an exception: {e}");
                        }
                        break;
                    }
                },
            }
        }
    }

    fn room(&self) -> Room {
        if self.count < self.cfg.connection_limit {
            return Room::Free;
        }
        let mut just_taken = false;
        let victim = self
            .live()
            .filter(|ch| ch.is_evictable())
            .filter(|ch| {
                let fresh = ch.accept_round >= self.accept_round;
                just_taken |= fresh;
                !fresh
            })
            .min_by_key(|ch| (ch.waiting_since, ch.id));
        match victim {
            Some(ch) => Room::Evict(ch.id),
            None if just_taken => Room::Later,
            None => Room::Full,
        }
    }

    fn pause_accepting(&mut self) {
        self.accepting = false;
        self.io.set_accepting(false);
        warn!(
            target: "maitre",
            "total open connections reached the connection limit, no longer accepting new connections"
        );
    }

    fn open(&mut self, accepted: Accepted) {
        let conn = accepted.conn;
        let now = self.clock.now();
        if self.channels.len() <= conn.0 {
            self.channels.resize_with(conn.0 + 1, || None);
        }
        let mut channel = Channel::new(conn, accepted.peer, accepted.listener, now, &self.cfg);
        channel.accept_round = self.accept_round;
        if self.channels[conn.0].replace(channel).is_none() {
            self.count += 1;
        }
        self.pump(conn);
    }

    /// Run `f` on one channel with a `Ctx` over the engine's parts (and the
    /// shared read buffer); None if the connection is gone.
    fn with_channel<R>(
        &mut self,
        conn: ConnId,
        f: impl FnOnce(&mut Channel, &mut Ctx<'_, T, E>, &mut [u8]) -> R,
    ) -> Option<R> {
        let channel = self.channels.get_mut(conn.0)?.as_mut()?;
        let mut cx = Ctx {
            io: &mut self.io,
            exec: &mut self.exec,
            now: self.clock.now(),
            date: self.date.text(),
            cfg: &self.cfg,
            next_seq: &mut self.next_seq,
            head_buf: &mut self.head_buf,
        };
        Some(f(channel, &mut cx, &mut self.scratch))
    }

    /// Let one channel do all it can, then close it if it ended, or move its
    /// `header_timeout` deadline if that changed.
    fn pump(&mut self, conn: ConnId) {
        let pumped = self.with_channel(conn, |channel, cx, scratch| {
            channel.pump(cx, scratch);
            let request = (channel.request_deadline(), channel.request_armed);
            (
                channel.ending(),
                channel.head_deadline(),
                channel.armed,
                request,
            )
        });
        match pumped {
            None => {}
            Some((Ending::Open, wanted, armed, (request, request_armed))) => {
                if wanted != armed {
                    self.rearm(conn, armed, wanted);
                }
                if request != request_armed {
                    self.rearm_request(conn, request_armed, request);
                }
            }
            Some((Ending::Finished | Ending::Broken, ..)) => self.remove(conn, Close::Fin),
        }
    }

    fn rearm_request(
        &mut self,
        conn: ConnId,
        old: Option<(Timestamp, ReqId)>,
        new: Option<(Timestamp, ReqId)>,
    ) {
        if let Some(entry) = old {
            self.request_timers.remove(&entry);
        }
        if let Some(entry) = new {
            self.request_timers.insert(entry);
        }
        if let Some(channel) = self.channels.get_mut(conn.0).and_then(Option::as_mut) {
            channel.request_armed = new;
        }
    }

    fn rearm(&mut self, conn: ConnId, old: Option<Timestamp>, new: Option<Timestamp>) {
        if let Some(at) = old {
            self.head_timers.remove(&(at, conn));
        }
        if let Some(at) = new {
            self.head_timers.insert((at, conn));
        }
        if let Some(channel) = self.channels.get_mut(conn.0).and_then(Option::as_mut) {
            channel.armed = new;
        }
    }

    fn remove(&mut self, conn: ConnId, how: Close) {
        let Some(channel) = self.channels.get_mut(conn.0).and_then(Option::take) else {
            return;
        };
        if let Some(at) = channel.armed {
            self.head_timers.remove(&(at, conn));
        }
        if let Some(entry) = channel.request_armed {
            self.request_timers.remove(&entry);
        }
        self.io.close(conn, how);
        self.count -= 1;
    }

    /// After every event: if accepting was paused and there is room again (a
    /// connection closed, or one became idle and may be evicted), take the
    /// connections waiting in the backlog; they produce no new readiness event.
    fn after_event(&mut self) {
        self.retire_if_due();
        if !self.accepting && self.drain.is_none() && self.room() != Room::Full {
            self.accepting = true;
            self.io.set_accepting(true);
            info!(
                target: "maitre",
                "total open connections dropped below the connection limit, listening again"
            );
            self.accept_waiting();
        }
    }

    /// `max_requests`: once that many requests were dispatched, stop
    /// gracefully so a supervisor can replace this process.
    fn retire_if_due(&mut self) {
        let Some(limit) = self.cfg.max_requests else {
            return;
        };
        if self.drain.is_none() && self.next_seq >= limit {
            info!(target: "maitre", "served max_requests ({limit}): retiring");
            self.begin_drain();
            if let Some(drain) = &mut self.drain {
                drain.retired = true;
            }
        }
    }

    fn refresh_date(&mut self) {
        self.date.update(self.clock.wall());
    }
}

/// A graceful stop in progress.
struct Drain {
    /// `graceful_timeout` from the stop's start.
    deadline: Timestamp,
    /// Started by `max_requests`.
    retired: bool,
    /// Connections closed at the deadline with work in progress.
    cut: usize,
}

/// Whether a new connection fits under `connection_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Room {
    Free,
    /// At the limit, but this connection only holds a place.
    Evict(ConnId),
    /// At the limit; only connections taken this round could make room.
    Later,
    Full,
}

/// The `Date` header text, formatted once per second.
#[derive(Default)]
struct DateCache {
    second: Option<u64>,
    text: String,
}

impl DateCache {
    fn update(&mut self, wall: std::time::SystemTime) {
        let second = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.second != Some(second) {
            self.second = Some(second);
            self.text = httpdate::fmt_http_date(wall);
        }
    }

    fn text(&self) -> &str {
        &self.text
    }
}
