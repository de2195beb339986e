//! Deterministic simulation of the engine over turmoil's network and clock.
//!
//! Every scenario builds a seeded simulation, serves a Rust app with the
//! production engine through the turmoil driver, and asserts exact simulated
//! times and exact bytes.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod client;
mod driver;
mod harness;
mod scenarios;
