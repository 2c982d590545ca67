//! This host's clock: JavaScript's `Date.now()`, since the system clock
//! `duraclaw_core::clock::SystemClock` reads is not there on wasm32.

use std::sync::Arc;

use duraclaw_core::clock::{Clock, SharedClock};
use worker::Date;

/// The Worker's clock, `Date.now()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerClock;

impl WorkerClock {
    /// A [`SharedClock`] over the Worker's clock.
    pub fn shared() -> SharedClock {
        Arc::new(WorkerClock)
    }
}

impl Clock for WorkerClock {
    fn now_ms(&self) -> i64 {
        i64::try_from(Date::now().as_millis()).unwrap_or(i64::MAX)
    }
}

/// Milliseconds since the Unix epoch, from [`WorkerClock`].
pub fn now_ms() -> i64 {
    WorkerClock.now_ms()
}
