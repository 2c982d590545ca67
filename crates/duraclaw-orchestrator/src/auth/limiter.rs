//! Login rate limiting: failures counted per user name and per client
//! address, with a lockout that doubles each time it is hit again.
//!
//! The counts live in memory, so a restart forgets them; that costs an
//! attacker a restart of the server, which it cannot cause. The table holds
//! at most [`LoginLimits::max_entries`] keys and forgets idle ones first.
//! Sans-IO: every call takes the current [`Instant`], so tests need no clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A bound on any configured lockout, so that adding it to an [`Instant`]
/// cannot overflow.
const LONGEST_LOCKOUT: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// How many failed logins are allowed, and how long a lockout lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures within [`LoginLimits::window`] that lock a key.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// The first lockout; each further one of the same key doubles it.
    pub base_lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// A key with no failure for this long starts again from scratch.
    pub forget_after: Duration,
    /// The most keys kept; the oldest unlocked ones are dropped first.
    pub max_entries: usize,
}

impl Default for LoginLimits {
    /// 5 failures in 15 minutes lock for 1 minute, then 2, 4, … up to an
    /// hour; forgotten after a day without failures; 10 000 keys.
    fn default() -> Self {
        LoginLimits {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            base_lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(60 * 60),
            forget_after: Duration::from_secs(24 * 60 * 60),
            max_entries: 10_000,
        }
    }
}

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum LimitKey {
    /// A user name as typed, lower-cased (names are matched without case).
    Name(String),
    /// A client address; IPv6 by its /64, which one client usually holds
    /// whole.
    Client(IpAddr),
}

impl LimitKey {
    pub(super) fn name(name: &str) -> Self {
        // Bounded so that a huge name in a request cannot grow the table.
        LimitKey::Name(name.chars().take(128).collect::<String>().to_lowercase())
    }

    pub(super) fn client(addr: IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
            v4 => v4,
        };
        LimitKey::Client(addr)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    window_start: Instant,
    failures: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

impl Entry {
    fn locked_for(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

/// The failure counts of every key.
#[derive(Debug)]
pub(super) struct LoginLimiter {
    limits: LoginLimits,
    entries: HashMap<LimitKey, Entry>,
}

impl LoginLimiter {
    pub(super) fn new(limits: LoginLimits) -> Self {
        LoginLimiter {
            limits,
            entries: HashMap::new(),
        }
    }

    /// How long the longest lockout among `keys` still lasts, if any is
    /// locked.
    pub(super) fn locked_for(&self, keys: &[LimitKey], now: Instant) -> Option<Duration> {
        keys.iter()
            .filter_map(|k| self.entries.get(k)?.locked_for(now))
            .max()
    }

    /// Counts a failed login against every key; returns the lockout it
    /// started, if one did.
    pub(super) fn record_failure(&mut self, keys: &[LimitKey], now: Instant) -> Option<Duration> {
        let mut started = None;
        for key in keys {
            if !self.entries.contains_key(key) {
                self.make_room(now);
            }
            let limits = &self.limits;
            let entry = self.entries.entry(key.clone()).or_insert(Entry {
                window_start: now,
                failures: 0,
                lockouts: 0,
                locked_until: None,
                last_failure: now,
            });
            if now.saturating_duration_since(entry.last_failure) >= limits.forget_after {
                entry.lockouts = 0;
            }
            if now.saturating_duration_since(entry.window_start) >= limits.window {
                entry.window_start = now;
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            if entry.failures >= limits.max_failures {
                let doublings = entry.lockouts.min(20);
                let lockout = limits
                    .base_lockout
                    .saturating_mul(1u32 << doublings)
                    .min(limits.max_lockout)
                    .min(LONGEST_LOCKOUT);
                entry.lockouts = entry.lockouts.saturating_add(1);
                entry.locked_until = now.checked_add(lockout).or(Some(now));
                entry.failures = 0;
                entry.window_start = now;
                started = started.max(Some(lockout));
            }
        }
        started
    }

    /// Forgets the failures of `key` after a successful login.
    pub(super) fn record_success(&mut self, key: &LimitKey) {
        self.entries.remove(key);
    }

    /// Keeps the table under its bound: drops forgettable entries, then the
    /// least recently failed unlocked one, then the least recently failed.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.limits.max_entries {
            return;
        }
        let limits = &self.limits;
        self.entries.retain(|_, e| {
            e.locked_for(now).is_some()
                || now.saturating_duration_since(e.last_failure) < limits.window
        });
        while self.entries.len() >= self.limits.max_entries.max(1) {
            let victim = self
                .entries
                .iter()
                .min_by_key(|(_, e)| (e.locked_for(now).is_some(), e.last_failure))
                .map(|(k, _)| k.clone());
            match victim {
                Some(key) => {
                    self.entries.remove(&key);
                }
                None => break,
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn keys(name: &str, ip: [u8; 4]) -> Vec<LimitKey> {
        vec![LimitKey::name(name), LimitKey::client(IpAddr::from(ip))]
    }

    #[test]
    fn five_failures_lock_with_a_doubling_lockout() {
        let mut limiter = LoginLimiter::new(LoginLimits::default());
        let t0 = Instant::now();
        let k = keys("alice", [10, 0, 0, 1]);
        for i in 0..4 {
            assert_eq!(limiter.record_failure(&k, t0 + MIN * i), None);
            assert_eq!(limiter.locked_for(&k, t0 + MIN * i), None);
        }
        let t = t0 + MIN * 4;
        assert_eq!(limiter.record_failure(&k, t), Some(MIN));
        assert_eq!(limiter.locked_for(&k, t), Some(MIN));
        assert_eq!(limiter.locked_for(&k, t + MIN / 2), Some(MIN / 2));
        assert_eq!(limiter.locked_for(&k, t + MIN), None);
        // Five more failures lock for twice as long, then four times.
        let t = t + MIN;
        for _ in 0..4 {
            assert_eq!(limiter.record_failure(&k, t), None);
        }
        assert_eq!(limiter.record_failure(&k, t), Some(2 * MIN));
        let t = t + 2 * MIN;
        for _ in 0..4 {
            limiter.record_failure(&k, t);
        }
        assert_eq!(limiter.record_failure(&k, t), Some(4 * MIN));
    }

    #[test]
    fn lockouts_are_capped_and_forgotten() {
        let limits = LoginLimits::default();
        let mut limiter = LoginLimiter::new(limits.clone());
        let k = keys("bob", [10, 0, 0, 2]);
        let mut t = Instant::now();
        let mut last = None;
        for _ in 0..12 {
            for _ in 0..5 {
                last = limiter.record_failure(&k, t).or(last);
            }
            t += limits.max_lockout;
        }
        assert_eq!(last, Some(limits.max_lockout));
        t += limits.forget_after;
        for _ in 0..5 {
            last = limiter.record_failure(&k, t);
        }
        assert_eq!(last, Some(limits.base_lockout));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let limits = LoginLimits::default();
        let mut limiter = LoginLimiter::new(limits.clone());
        let k = keys("carol", [10, 0, 0, 3]);
        let t0 = Instant::now();
        for i in 0..20 {
            // One failure every 4 minutes: never 5 within 15 minutes.
            assert_eq!(limiter.record_failure(&k, t0 + 4 * MIN * i), None);
        }
    }

    #[test]
    fn keys_are_separate_and_success_clears_the_name() {
        let mut limiter = LoginLimiter::new(LoginLimits::default());
        let t = Instant::now();
        let alice = keys("alice", [10, 0, 0, 1]);
        for _ in 0..5 {
            limiter.record_failure(&alice, t);
        }
        assert!(limiter.locked_for(&alice, t).is_some());
        assert!(
            limiter
                .locked_for(&keys("ALICE", [10, 0, 0, 9]), t)
                .is_some()
        );
        assert!(limiter.locked_for(&keys("bob", [10, 0, 0, 1]), t).is_some());
        assert!(limiter.locked_for(&keys("bob", [10, 0, 0, 9]), t).is_none());
        limiter.record_success(&LimitKey::name("alice"));
        assert!(
            limiter
                .locked_for(&keys("alice", [10, 0, 0, 9]), t)
                .is_none()
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(LimitKey::client(a), LimitKey::client(b));
        assert_ne!(LimitKey::client(a), LimitKey::client(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            LimitKey::client(mapped),
            LimitKey::client(IpAddr::from([10, 0, 0, 1]))
        );
    }

    #[test]
    fn the_table_is_bounded_and_keeps_locked_keys() {
        let limits = LoginLimits {
            max_entries: 10,
            ..LoginLimits::default()
        };
        let mut limiter = LoginLimiter::new(limits);
        let t = Instant::now();
        let locked = [LimitKey::name("victim")];
        for _ in 0..5 {
            limiter.record_failure(&locked, t);
        }
        for i in 0..1000u32 {
            limiter.record_failure(&[LimitKey::name(&format!("spray{i}"))], t);
            assert!(limiter.len() <= 10);
        }
        assert!(limiter.locked_for(&locked, t).is_some());
    }
}
