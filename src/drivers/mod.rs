//! Event loops that own the sockets and the clock and feed the engine.
pub mod mio;
