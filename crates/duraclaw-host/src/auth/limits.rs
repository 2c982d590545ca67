//! Login rate limiting: failures counted per user name and per client
//! address (IPv6 by its /64); 5 failures within 15 minutes lock the key for
//! a minute, each further lockout doubles up to an hour; a key without
//! failures for a day starts over.
//!
//! [`after_failure`] is the arithmetic on one key's [`FailureRecord`], with
//! times in ms. The local host keeps the records in memory
//! ([`LoginLimiter`], bounded by [`LoginLimits::max_entries`]); on Workers
//! they live in D1 (isolates share no memory), written back only if nobody
//! changed the row meanwhile, so concurrent failures all count.

use std::collections::HashMap;
use std::net::IpAddr;

/// The longest lockout any configuration gets: a year.
pub const LONGEST_LOCKOUT_MS: i64 = 366 * 24 * 60 * 60 * 1000;

/// How many failed logins are allowed, and how long a lockout lasts (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures within [`LoginLimits::window_ms`] that lock a key.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub window_ms: i64,
    /// The first lockout; each further one of the same key doubles it.
    pub base_lockout_ms: i64,
    /// The longest lockout.
    pub max_lockout_ms: i64,
    /// A key with no failure for this long starts again from scratch.
    pub forget_after_ms: i64,
    /// The most keys a [`LoginLimiter`] keeps in memory; the oldest
    /// unlocked ones are dropped first.
    pub max_entries: usize,
}

impl Default for LoginLimits {
    /// 5 failures in 15 minutes lock for 1 minute, then 2, 4, … up to an
    /// hour; forgotten after a day without failures; 10 000 keys in memory.
    fn default() -> Self {
        LoginLimits {
            max_failures: 5,
            window_ms: 15 * 60_000,
            base_lockout_ms: 60_000,
            max_lockout_ms: 60 * 60_000,
            forget_after_ms: 24 * 60 * 60_000,
            max_entries: 10_000,
        }
    }
}

/// One key's failure record, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureRecord {
    /// Start of the current counting window.
    pub window_start_ms: i64,
    /// Failures in the current window.
    pub failures: u32,
    /// Lockouts so far (each doubles the next).
    pub lockouts: u32,
    /// Locked until then (0: not locked).
    pub locked_until_ms: i64,
    /// The last failure.
    pub last_failure_ms: i64,
}

impl FailureRecord {
    /// How long (ms) the key is still locked at `now_ms`, if it is.
    pub fn locked_for_ms(&self, now_ms: i64) -> Option<i64> {
        let left = self.locked_until_ms.saturating_sub(now_ms);
        (left > 0).then_some(left)
    }

    /// Whether the record can be dropped at `now_ms`: not locked, and no
    /// failure for [`LoginLimits::forget_after_ms`].
    pub fn forgettable(&self, now_ms: i64, limits: &LoginLimits) -> bool {
        self.locked_for_ms(now_ms).is_none()
            && now_ms.saturating_sub(self.last_failure_ms) >= limits.forget_after_ms
    }
}

/// The record after one more failure at `now_ms`, and the lockout (ms) it
/// started, if it did. `None` is a key without a record.
pub fn after_failure(
    record: Option<FailureRecord>,
    now_ms: i64,
    limits: &LoginLimits,
) -> (FailureRecord, Option<i64>) {
    let mut r = record.unwrap_or(FailureRecord {
        window_start_ms: now_ms,
        last_failure_ms: now_ms,
        ..FailureRecord::default()
    });
    if now_ms.saturating_sub(r.last_failure_ms) >= limits.forget_after_ms {
        r.lockouts = 0;
    }
    if now_ms.saturating_sub(r.window_start_ms) >= limits.window_ms {
        r.window_start_ms = now_ms;
        r.failures = 0;
    }
    r.failures = r.failures.saturating_add(1);
    r.last_failure_ms = now_ms;
    let mut started = None;
    if r.failures >= limits.max_failures {
        let lockout = lockout_ms(r.lockouts, limits);
        r.lockouts = r.lockouts.saturating_add(1);
        r.locked_until_ms = now_ms.saturating_add(lockout);
        r.failures = 0;
        r.window_start_ms = now_ms;
        started = Some(lockout);
    }
    (r, started)
}

/// The length of the lockout after `previous` earlier ones: doubling from
/// the base, at most [`LoginLimits::max_lockout_ms`] and a year.
pub fn lockout_ms(previous: u32, limits: &LoginLimits) -> i64 {
    let doublings = previous.min(40);
    limits
        .base_lockout_ms
        .max(0)
        .saturating_mul(1i64 << doublings)
        .min(limits.max_lockout_ms)
        .clamp(0, LONGEST_LOCKOUT_MS)
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait_ms: i64) -> u64 {
    let wait = u64::try_from(wait_ms).unwrap_or(0);
    wait.div_ceil(1000).max(1)
}

/// The key failures of a user name count against: `name:` and the name as
/// typed, lower-cased (names match without case), at most 128 characters.
pub fn name_key(name: &str) -> String {
    let bounded: String = name.chars().take(128).collect();
    format!("name:{}", bounded.to_lowercase())
}

/// The key failures from a client address count against: `ip:` and the
/// address, an IPv6 one cut to its /64 (one client usually holds it whole),
/// an IPv4-mapped one as IPv4. `None` for a header that is not an address.
pub fn client_key(connecting_ip: &str) -> Option<String> {
    connecting_ip.trim().parse().ok().map(client_addr_key)
}

/// [`client_key`] of an address already parsed.
pub fn client_addr_key(addr: IpAddr) -> String {
    let addr = match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    };
    format!("ip:{addr}")
}

/// The failure records of every key in memory, at most
/// [`LoginLimits::max_entries`] of them: what a host with one process
/// keeps. Times are ms on any clock that does not go back.
#[derive(Debug)]
pub struct LoginLimiter {
    limits: LoginLimits,
    records: HashMap<String, FailureRecord>,
}

impl LoginLimiter {
    /// An empty table.
    pub fn new(limits: LoginLimits) -> Self {
        LoginLimiter {
            limits,
            records: HashMap::new(),
        }
    }

    /// How long (ms) the longest lockout among `keys` still lasts, if any
    /// is locked.
    pub fn locked_for_ms(&self, keys: &[String], now_ms: i64) -> Option<i64> {
        keys.iter()
            .filter_map(|k| self.records.get(k)?.locked_for_ms(now_ms))
            .max()
    }

    /// Counts a failed login against every key; the lockout (ms) it
    /// started, if one did.
    pub fn record_failure(&mut self, keys: &[String], now_ms: i64) -> Option<i64> {
        let mut started = None;
        for key in keys {
            if !self.records.contains_key(key) {
                self.make_room(now_ms);
            }
            let (record, lockout) =
                after_failure(self.records.get(key).copied(), now_ms, &self.limits);
            self.records.insert(key.clone(), record);
            started = started.max(lockout);
        }
        started
    }

    /// Forgets the failures of `key` after a successful login.
    pub fn record_success(&mut self, key: &str) {
        self.records.remove(key);
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Keeps the table under its bound: drops records idle for a window,
    /// then the least recently failed unlocked one, then the least
    /// recently failed.
    fn make_room(&mut self, now_ms: i64) {
        if self.records.len() < self.limits.max_entries {
            return;
        }
        let window = self.limits.window_ms;
        self.records.retain(|_, r| {
            r.locked_for_ms(now_ms).is_some() || now_ms.saturating_sub(r.last_failure_ms) < window
        });
        while self.records.len() >= self.limits.max_entries.max(1) {
            let victim = self
                .records
                .iter()
                .min_by_key(|(_, r)| (r.locked_for_ms(now_ms).is_some(), r.last_failure_ms))
                .map(|(k, _)| k.clone());
            match victim {
                Some(key) => {
                    self.records.remove(&key);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;

    /// Runs failures through the arithmetic like the D1 side does.
    fn fail(record: &mut Option<FailureRecord>, now: i64, limits: &LoginLimits) -> Option<i64> {
        let (next, started) = after_failure(*record, now, limits);
        *record = Some(next);
        started
    }

    #[test]
    fn five_failures_lock_with_a_doubling_lockout() {
        let limits = LoginLimits::default();
        let mut r = None;
        let t0 = 1_700_000_000_000;
        for i in 0..4 {
            assert_eq!(fail(&mut r, t0 + MIN * i, &limits), None);
            assert_eq!(r.unwrap().locked_for_ms(t0 + MIN * i), None);
        }
        let t = t0 + MIN * 4;
        assert_eq!(fail(&mut r, t, &limits), Some(MIN));
        assert_eq!(r.unwrap().locked_for_ms(t), Some(MIN));
        assert_eq!(r.unwrap().locked_for_ms(t + MIN / 2), Some(MIN / 2));
        assert_eq!(r.unwrap().locked_for_ms(t + MIN), None);
        let t = t + MIN;
        for _ in 0..4 {
            assert_eq!(fail(&mut r, t, &limits), None);
        }
        assert_eq!(fail(&mut r, t, &limits), Some(2 * MIN));
        let t = t + 2 * MIN;
        for _ in 0..4 {
            fail(&mut r, t, &limits);
        }
        assert_eq!(fail(&mut r, t, &limits), Some(4 * MIN));
    }

    #[test]
    fn lockouts_are_capped_and_forgotten() {
        let limits = LoginLimits::default();
        let mut r = None;
        let mut t = 0;
        let mut last = None;
        for _ in 0..12 {
            for _ in 0..5 {
                last = fail(&mut r, t, &limits).or(last);
            }
            t += limits.max_lockout_ms;
        }
        assert_eq!(last, Some(limits.max_lockout_ms));
        t += limits.forget_after_ms;
        assert!(r.unwrap().forgettable(t, &limits));
        for _ in 0..5 {
            last = fail(&mut r, t, &limits);
        }
        assert_eq!(last, Some(limits.base_lockout_ms));
        assert!(!r.unwrap().forgettable(t, &limits));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let limits = LoginLimits::default();
        let mut r = None;
        for i in 0..20 {
            assert_eq!(fail(&mut r, 4 * MIN * i, &limits), None);
        }
    }

    #[test]
    fn the_limiter_locks_every_key_and_success_clears_the_name() {
        let mut limiter = LoginLimiter::new(LoginLimits::default());
        let keys = |name: &str, ip: &str| vec![name_key(name), client_key(ip).unwrap()];
        let alice = keys("alice", "10.0.0.1");
        for i in 0..4 {
            assert_eq!(limiter.record_failure(&alice, i), None);
        }
        assert_eq!(limiter.record_failure(&alice, 4), Some(MIN));
        assert_eq!(limiter.locked_for_ms(&alice, 4 + MIN / 2), Some(MIN / 2));
        assert!(
            limiter
                .locked_for_ms(&keys("ALICE", "10.0.0.9"), 5)
                .is_some()
        );
        assert!(limiter.locked_for_ms(&keys("bob", "10.0.0.1"), 5).is_some());
        assert!(limiter.locked_for_ms(&keys("bob", "10.0.0.9"), 5).is_none());
        limiter.record_success(&name_key("alice"));
        assert!(
            limiter
                .locked_for_ms(&keys("alice", "10.0.0.9"), 5)
                .is_none()
        );
    }

    #[test]
    fn the_limiter_is_bounded_and_keeps_locked_keys() {
        let limits = LoginLimits {
            max_entries: 10,
            ..LoginLimits::default()
        };
        let mut limiter = LoginLimiter::new(limits);
        let locked = [name_key("victim")];
        for _ in 0..5 {
            limiter.record_failure(&locked, 0);
        }
        for i in 0..1000u32 {
            limiter.record_failure(&[name_key(&format!("spray{i}"))], 0);
            assert!(limiter.len() <= 10);
        }
        assert!(limiter.locked_for_ms(&locked, 0).is_some());
    }

    #[test]
    fn a_huge_configured_lockout_is_capped_at_a_year() {
        let limits = LoginLimits {
            base_lockout_ms: i64::MAX / 4,
            max_lockout_ms: i64::MAX,
            ..LoginLimits::default()
        };
        assert_eq!(lockout_ms(30, &limits), LONGEST_LOCKOUT_MS);
        assert_eq!(lockout_ms(0, &LoginLimits::default()), MIN);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(-5), 1);
        assert_eq!(retry_after_secs(60_000), 60);
        assert_eq!(retry_after_secs(60_001), 61);
    }

    #[test]
    fn keys() {
        assert_eq!(name_key("Alice"), "name:alice");
        assert_eq!(name_key(&"x".repeat(1000)).len(), 5 + 128);
        assert_eq!(
            client_key("2001:db8:1:2:aaaa::1"),
            client_key("2001:db8:1:2:bbbb::2")
        );
        assert_ne!(client_key("2001:db8:1:2::1"), client_key("2001:db8:1:3::1"));
        assert_eq!(
            client_key("2001:db8:1:2:aaaa::1").as_deref(),
            Some("ip:2001:db8:1:2::")
        );
        assert_eq!(
            client_key("::ffff:10.0.0.1").as_deref(),
            Some("ip:10.0.0.1")
        );
        assert_eq!(client_key(" 10.0.0.1 ").as_deref(), Some("ip:10.0.0.1"));
        assert_eq!(client_key("10.0.0.1, 10.0.0.2"), None);
        assert_eq!(client_key(""), None);
    }

    proptest! {
        #[test]
        fn lockouts_stay_in_bounds(
            steps in proptest::collection::vec(0i64..10 * MIN, 1..60),
            start in 0i64..(1i64 << 52),
        ) {
            let limits = LoginLimits::default();
            let mut r = None;
            let mut t = start;
            for step in steps {
                t += step;
                if let Some(lockout) = fail(&mut r, t, &limits) {
                    prop_assert!(lockout >= limits.base_lockout_ms);
                    prop_assert!(lockout <= limits.max_lockout_ms);
                }
                let rec = r.unwrap();
                prop_assert!(rec.failures < limits.max_failures);
                prop_assert!(rec.locked_for_ms(t).unwrap_or(0) <= limits.max_lockout_ms);
            }
        }

        #[test]
        fn any_client_header_is_handled(text in ".{0,60}") {
            if let Some(key) = client_key(&text) {
                prop_assert!(key.starts_with("ip:"));
            }
        }
    }
}
