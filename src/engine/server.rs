//! The engine: accept policy, connection table, sweeps, event routing. (STUB)
use crate::config::Config;
use crate::engine::clock::{Clock, Timestamp};
use crate::engine::executor::{AppEvent, Executor};
use crate::engine::transport::{ConnId, Transport};

pub struct Engine<T: Transport, C: Clock, E: Executor> {
    pub(crate) io: T,
    pub(crate) clock: C,
    pub(crate) exec: E,
}

impl<T: Transport, C: Clock, E: Executor> Engine<T, C, E> {
    pub fn new(config: &Config, io: T, clock: C, exec: E) -> Self {
        let _ = config;
        Engine { io, clock, exec }
    }
    pub fn transport(&self) -> &T {
        &self.io
    }
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.io
    }
    pub fn executor_mut(&mut self) -> &mut E {
        &mut self.exec
    }
    pub fn clock(&self) -> &C {
        &self.clock
    }
    /// One or more connections may be waiting on a listener.
    pub fn on_acceptable(&mut self) {
        todo!()
    }
    pub fn on_readable(&mut self, conn: ConnId) {
        let _ = conn;
        todo!()
    }
    pub fn on_writable(&mut self, conn: ConnId) {
        let _ = conn;
        todo!()
    }
    pub fn on_app_event(&mut self, ev: AppEvent) {
        let _ = ev;
        todo!()
    }
    /// Call when `next_deadline` has passed.
    pub fn on_timer(&mut self) {
        todo!()
    }
    /// When `on_timer` must run next, if ever.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        todo!()
    }
    /// Open client connections.
    pub fn connection_count(&self) -> usize {
        todo!()
    }
}
