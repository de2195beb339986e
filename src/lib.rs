//! maitre: a WSGI server engine written as a sans-IO state machine.
pub mod config;
pub mod drivers;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod python;
