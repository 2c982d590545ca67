//! Login rate limiting, the same rule as the local orchestrator's: failures
//! counted per user name and per client address (IPv6 by its /64); 5
//! failures within 15 minutes lock the key for a minute, each further
//! lockout doubles up to an hour; a key without failures for a day starts
//! over.
//!
//! On Workers the counts live in D1 (isolates share no memory); this module
//! is the arithmetic on one key's row, sans-IO, with times in ms since the
//! epoch. The D1 side writes a row back only if nobody changed it meanwhile
//! (its `rev`), so concurrent failures all count.

use std::net::IpAddr;

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
}

impl Default for LoginLimits {
    /// 5 failures in 15 minutes lock for 1 minute, then 2, 4, … up to an
    /// hour; forgotten after a day without failures.
    fn default() -> Self {
        LoginLimits {
            max_failures: 5,
            window_ms: 15 * 60_000,
            base_lockout_ms: 60_000,
            max_lockout_ms: 60 * 60_000,
            forget_after_ms: 24 * 60 * 60_000,
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

/// The length of the lockout after `previous` earlier ones.
pub fn lockout_ms(previous: u32, limits: &LoginLimits) -> i64 {
    let doublings = previous.min(40);
    limits
        .base_lockout_ms
        .max(0)
        .saturating_mul(1i64 << doublings)
        .min(limits.max_lockout_ms)
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
    let addr: IpAddr = connecting_ip.trim().parse().ok()?;
    let addr = match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    };
    Some(format!("ip:{addr}"))
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
