//! The production driver: one thread, mio's Poll, a Waker for app events. (STUB)
