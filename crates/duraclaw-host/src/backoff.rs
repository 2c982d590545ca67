//! Reconnect delays: capped exponential backoff with jitter.
//!
//! The caller supplies the randomness (any `u32`: a clock's low bits,
//! `Math.random`), so the schedule is deterministic under test.

use std::time::Duration;

/// How often a run of failures is logged: the first, then every this many.
pub const LOG_EVERY: u32 = 20;

/// The delays before redialling a link, by failures in a row.
///
/// After `n` failures in a row the delay is `first * 2^(n-1)`, capped at
/// `cap`, then scaled by a factor in `[0.5, 1.5)` taken from the caller's
/// random value (so many clients that lost the same peer do not redial in
/// step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    failures: u32,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait this long before the next attempt.
    pub delay: Duration,
    /// Failures in a row, this one included.
    pub failures: u32,
    /// Log this failure (the first of a run and every [`LOG_EVERY`]th), so
    /// a peer that stays away does not flood the log.
    pub log: bool,
}

impl Backoff {
    /// A schedule starting at `first` and never waiting longer than `cap`
    /// (before jitter).
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            failures: 0,
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// An attempt failed: one more failure in a row, and how long to wait.
    pub fn failed(&mut self, random: u32) -> Retry {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(16);
        let delay = self.first.saturating_mul(1 << doublings).min(self.cap);
        Retry {
            delay: jitter(delay, random),
            failures: self.failures,
            log: self.failures == 1 || self.failures.is_multiple_of(LOG_EVERY),
        }
    }

    /// The link opened: the next failure starts a new run.
    pub fn connected(&mut self) {
        self.failures = 0;
    }

    /// A link that was up ended: redial promptly (backing off is for a
    /// peer that cannot be reached). Starts a new run; the delay is the
    /// first one, with jitter.
    pub fn lost(&mut self, random: u32) -> Duration {
        self.failures = 0;
        jitter(self.first, random)
    }
}

/// `d` scaled by a factor in `[0.5, 1.5)` from `random`.
pub fn jitter(d: Duration, random: u32) -> Duration {
    d.mul_f64(0.5 + f64::from(random % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_from_first_to_the_cap() {
        let mut b = Backoff::new(MS(200), Duration::from_secs(10));
        // random 500 → factor 1.0: the bare schedule.
        let delays: Vec<_> = (0..9).map(|_| b.failed(500).delay).collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000].map(MS)
        );
        assert_eq!(b.failures(), 9);
        // Very long runs neither overflow nor pass the cap.
        for _ in 0..100 {
            assert_eq!(b.failed(500).delay, MS(10_000));
        }
    }

    #[test]
    fn jitter_spans_half_to_one_and_a_half() {
        let mut b = Backoff::new(MS(1000), MS(1000));
        assert_eq!(b.failed(0).delay, MS(500));
        assert_eq!(b.failed(999).delay, MS(1499));
        assert_eq!(b.failed(1250).delay, MS(750));
        assert_eq!(jitter(MS(200), 7_000_500), MS(200));
    }

    #[test]
    fn logs_the_first_and_every_twentieth_failure() {
        let mut b = Backoff::new(MS(1), MS(1));
        let logged: Vec<u32> = (0..60)
            .map(|_| b.failed(0))
            .filter(|r| r.log)
            .map(|r| r.failures)
            .collect();
        assert_eq!(logged, [1, 20, 40, 60]);
    }

    #[test]
    fn a_connect_or_a_lost_link_starts_a_new_run() {
        let mut b = Backoff::new(MS(200), Duration::from_secs(10));
        b.failed(500);
        b.failed(500);
        b.connected();
        assert_eq!(
            b.failed(500),
            Retry {
                delay: MS(200),
                failures: 1,
                log: true
            }
        );
        b.failed(500);
        assert_eq!(b.lost(500), MS(200));
        assert_eq!(b.lost(0), MS(100));
        assert_eq!(b.failed(500).delay, MS(200));
    }
}
