//! Users, login sessions and the session index in D1, for the Worker.
//!
//! The login rules of `duraclaw_host::auth` (`docs/api.md`) over D1: users
//! with password hashes (PBKDF2-SHA256 through WebCrypto), login sessions
//! stored by a digest of their random token (only the browser's
//! `duraclaw_session` cookie holds the token), the cookie and Origin rules,
//! login rate limits, and the index of which user owns which session
//! (another user's session answers 404). The D1 schema goes through
//! versioned migrations (`duraclaw_host::auth::schema::D1_MIGRATIONS`).
//!
//! Bindings: the D1 database `DB`; the secrets `DURACLAW_COOKIE_SECRET`
//! (optional: the key of the token digests) and, to manage users,
//! `DURACLAW_ADMIN_TOKEN`; the optional variable `DURACLAW_PUBLIC_ORIGIN`.
//!
//! The submodules [`password`] and [`routes`] are the Worker's own
//! target-independent parts, tested natively, and [`origin`] is core's
//! Origin rule; the D1 and WebCrypto side exists on wasm32 only.

pub mod password;
pub mod routes;

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
pub use service::{AuthUser, CfAuth, Denied, http_error, json_error};

/// The shortest admin token accepted; a shorter one disables the admin
/// routes as if unset.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// The shortest cookie secret accepted.
pub const MIN_COOKIE_SECRET_BYTES: usize = 16;
