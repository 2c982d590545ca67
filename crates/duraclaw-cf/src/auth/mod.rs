//! Users, login sessions and the session index in D1, for the Worker.
//!
//! The same rules as the local orchestrator (`docs/api.md`): users with
//! password hashes (PBKDF2-SHA256 through WebCrypto), login sessions stored
//! by a digest of their random token (only the browser's `duraclaw_session`
//! cookie holds the token), the cookie and Origin rules, login rate limits,
//! and the index of which user owns which session (another user's session
//! answers 404). The D1 schema goes through versioned migrations.
//!
//! Bindings: the D1 database `DB`; the secrets `DURACLAW_COOKIE_SECRET`
//! (optional: the key of the token digests) and, to manage users,
//! `DURACLAW_ADMIN_TOKEN`; the optional variable `DURACLAW_PUBLIC_ORIGIN`.
//!
//! The submodules [`cookie`], [`password`], [`limits`], [`routes`] and
//! [`schema`] are the target-independent rules, tested natively, and
//! [`origin`] is core's Origin rule, the one the local orchestrator uses
//! too; the D1 and WebCrypto side exists on wasm32 only.

pub mod cookie;
pub mod limits;
pub mod password;
pub mod routes;
pub mod schema;

pub use duraclaw_core::backend::web::origin;

#[cfg(target_arch = "wasm32")]
mod crypto;
#[cfg(target_arch = "wasm32")]
mod service;
#[cfg(target_arch = "wasm32")]
mod store;

#[cfg(target_arch = "wasm32")]
pub use crypto::pbkdf2_sha256;
#[cfg(target_arch = "wasm32")]
pub use service::{AuthUser, CfAuth, Denied, json_error};

/// How long a login session lives after its last use: 30 days.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// A session's last use is written at most this often.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// The shortest admin token accepted; a shorter one disables the admin
/// routes as if unset.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// The shortest cookie secret accepted.
pub const MIN_COOKIE_SECRET_BYTES: usize = 16;
