//! Time as the engine sees it: a monotonic timestamp handed in by the driver.
//!
//! The engine never reads a clock itself; drivers implement [`Clock`] over
//! `Instant` (production) or turmoil's simulated time (tests).
use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime};

/// Monotonic time since the driver started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub Duration);

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d))
    }
}

impl Sub for Timestamp {
    type Output = Duration;
    fn sub(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

pub trait Clock {
    /// Monotonic now: timeouts and cleanup sweeps.
    fn now(&self) -> Timestamp;
    /// Calendar time: the `Date` header.
    fn wall(&self) -> SystemTime;
}
