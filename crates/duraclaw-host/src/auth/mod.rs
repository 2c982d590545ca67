//! The login rules both hosts follow: [`token`]s and their digests, the
//! `duraclaw_session` cookie and the bearer token; the rate-limit
//! arithmetic of failed logins ([`limits`]); one [`login`] attempt's keys,
//! answers and logs; and the one [`schema`] of the login tables. Password hashing stays with each host (argon2id locally,
//! PBKDF2 through WebCrypto on Workers).

pub mod limits;
pub mod login;
pub mod schema;
pub mod token;

pub use limits::{LoginLimiter, LoginLimits};
pub use login::LoginAttempt;
pub use token::{COOKIE_NAME, SessionToken};

/// How long a login lives after its last use: 30 days.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// A login's last use is written at most this often.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// The message of a request without a live login.
pub const NOT_LOGGED_IN: &str = "not logged in, or the login session expired";

/// The message of a failed login: which of name and password was wrong is
/// not said.
pub const WRONG_CREDENTIALS: &str = "wrong user name or password";

/// The message of a login refused by the rate limits.
pub const TOO_MANY_LOGINS: &str = "too many failed logins; try again later";

/// The `{"user": {"name": …}}` body of a login and of `GET /api/me`.
pub fn user_body(name: &str) -> serde_json::Value {
    serde_json::json!({ "user": { "name": name } })
}
