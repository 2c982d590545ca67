//! Where the time comes from.
//!
//! Code that stamps events and metadata (the session actor, the hosts)
//! holds a [`Clock`] instead of taking a bare `now_ms` on every call.
//! `SystemClock` reads the operating system's clock and exists only
//! where there is one (not on `wasm32-unknown-unknown`, where
//! `SystemTime::now` panics; a host there brings its own, e.g. from
//! JavaScript's `Date.now()`). [`ManualClock`] is set by hand, for tests.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time.
pub trait Clock: fmt::Debug + Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// A clock shared by everything that stamps times in one host.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
impl SystemClock {
    /// A [`SharedClock`] over the system clock.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that says what it was last set to; clones share the time.
///
/// ```
/// use duraclaw_core::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new(1_000);
/// let held = clock.clone();
/// clock.advance(500);
/// assert_eq!(held.now_ms(), 1_500);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(now_ms)))
    }

    /// Sets the time.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the time on by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// A [`SharedClock`] reading this clock.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
