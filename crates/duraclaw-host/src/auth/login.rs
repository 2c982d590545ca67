//! One login attempt, the same on both hosts: the keys its failures count
//! against, the name it is logged under, and what each outcome answers and
//! logs. The host does the I/O in between: the lock check, the password
//! verification, recording the failure or the success, storing the login.

use duraclaw_core::backend::web::credentials::validate_name;

use super::limits;
use super::{TOO_MANY_LOGINS, WRONG_CREDENTIALS};
use crate::http::HttpError;

/// A login attempt by a user name as typed, from a client address when the
/// host knows it. Logs never hold the password; a name that is not a valid
/// user name is logged as `(not a valid name)`.
#[derive(Debug, Clone)]
pub struct LoginAttempt {
    shown: String,
    client: Option<String>,
    keys: Vec<String>,
}

impl LoginAttempt {
    /// The attempt of `name` from the client key `client`
    /// ([`limits::client_key`] or [`limits::client_addr_key`]).
    pub fn new(name: &str, client: Option<String>) -> Self {
        let shown = if validate_name(name).is_ok() {
            name.to_owned()
        } else {
            "(not a valid name)".to_owned()
        };
        let mut keys = vec![limits::name_key(name)];
        keys.extend(client.clone());
        LoginAttempt {
            shown,
            client,
            keys,
        }
    }

    /// The keys failures count against: the name's, then the client's.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The key a success clears: the name's (the client's stays, so one
    /// address guessing many names stays locked).
    pub fn name_key(&self) -> &str {
        &self.keys[0]
    }

    /// The answer while a key is locked for `wait_ms` more: 429.
    pub fn locked(&self, wait_ms: i64) -> HttpError {
        tracing::warn!(user = %self.shown, client = ?self.client, wait_ms,
            "login refused: too many failed attempts");
        HttpError::too_many_requests(TOO_MANY_LOGINS, wait_ms)
    }

    /// The answer to a wrong name or password (which one is not said), once
    /// the failure is recorded; `lockout_ms` is the lockout it started.
    pub fn failed(&self, lockout_ms: Option<i64>) -> HttpError {
        tracing::warn!(user = %self.shown, client = ?self.client,
            "login failed: wrong user name or password");
        if let Some(lockout_ms) = lockout_ms {
            tracing::warn!(user = %self.shown, client = ?self.client, lockout_ms,
                "too many failed logins: locked");
        }
        HttpError::new(401, WRONG_CREDENTIALS)
    }

    /// Logs the login of `user` (the name as stored).
    pub fn succeeded(&self, user: &str) {
        tracing::info!(user, client = ?self.client, "logged in");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_counts_against_the_name_and_the_client() {
        let a = LoginAttempt::new("Alice", limits::client_key("10.0.0.1"));
        assert_eq!(a.keys(), ["name:alice", "ip:10.0.0.1"]);
        assert_eq!(a.name_key(), "name:alice");
        assert_eq!(LoginAttempt::new("bob", None).keys(), ["name:bob"]);
        assert_eq!(
            LoginAttempt::new("bad name!", None).shown,
            "(not a valid name)"
        );
    }

    #[test]
    fn outcomes_answer_like_each_other_whatever_was_wrong() {
        let a = LoginAttempt::new("alice", None);
        let wrong = a.failed(None);
        assert_eq!(
            (wrong.status, wrong.message.as_str()),
            (401, WRONG_CREDENTIALS)
        );
        assert_eq!(a.failed(Some(60_000)), wrong);
        let locked = a.locked(1_500);
        assert_eq!((locked.status, locked.retry_after_secs), (429, Some(2)));
        assert_eq!(locked.message, TOO_MANY_LOGINS);
    }
}
