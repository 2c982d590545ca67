//! Users, login sessions and the session index in D1, for the Worker.
//!
//! The same rules as the local orchestrator (`docs/api.md`): users with
//! password hashes (PBKDF2-SHA256 through WebCrypto), login sessions stored
//! by a hash of their random token (only the browser's `duraclaw_session`
//! cookie holds the token), the cookie and Origin rules, login rate limits,
//! and the index of which user owns which session (another user's session
//! answers 404). The D1 schema goes through versioned migrations.
//!
//! Bindings: the D1 database `DB`; the secrets `DURACLAW_COOKIE_SECRET`
//! and, to create users, `DURACLAW_ADMIN_TOKEN`; the optional variable
//! `DURACLAW_PUBLIC_ORIGIN`.
//!
//! This module is the interface the Worker and `SessionDO` code against; the
//! bodies are being written.

use duraclaw_core::store::SessionMeta;
use worker::{Env, Request, Response};

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// The user's name as stored (case preserved).
    pub name: String,
}

/// The D1-backed auth service of one request (cheap to build).
pub struct CfAuth {
    _env: Env,
}

impl std::fmt::Debug for CfAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CfAuth")
    }
}

/// A JSON error answer `{"error": message}` with `status`.
pub fn json_error(status: u16, message: &str) -> worker::Result<Response> {
    Ok(Response::from_json(&serde_json::json!({ "error": message }))?.with_status(status))
}

/// Why a request was refused before it reached a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no cookie, or one that is unknown, expired or revoked.
    Unauthorized(String),
    /// 403: a cross-origin state-changing request or WebSocket upgrade.
    Forbidden(String),
}

impl Denied {
    /// The JSON answer (401 or 403).
    pub fn into_response(self) -> worker::Result<Response> {
        match self {
            Denied::Unauthorized(m) => json_error(401, &m),
            Denied::Forbidden(m) => json_error(403, &m),
        }
    }
}

impl CfAuth {
    /// Reads the bindings from `env`; an error names the missing one.
    pub fn from_env(env: &Env) -> worker::Result<CfAuth> {
        Ok(CfAuth { _env: env.clone() })
    }

    /// Brings the D1 schema up to date (cheap when it already is). An
    /// error carries the reason; the caller answers 500 with it.
    pub async fn migrate(&self) -> worker::Result<()> {
        Err(worker::Error::RustError("auth: not yet written".into()))
    }

    /// Answers the auth routes — `POST /api/login`, `POST /api/logout`,
    /// `GET /api/me` and the admin routes under `/api/admin/` — and `None`
    /// for every other path.
    pub async fn handle(&self, _req: &mut Request) -> Option<worker::Result<Response>> {
        None
    }

    /// The user behind the request's cookie, after the Origin check for
    /// state-changing methods and WebSocket upgrades; `Err` says the
    /// reason (401 or 403).
    pub async fn require_user(&self, _req: &Request) -> Result<AuthUser, Denied> {
        Err(Denied::Unauthorized("not logged in".into()))
    }

    /// Records or updates a session in the index (owner and metadata).
    pub async fn index_session(&self, _meta: &SessionMeta) -> worker::Result<()> {
        Err(worker::Error::RustError("auth: not yet written".into()))
    }

    /// The sessions `owner` owns, most recently active first.
    pub async fn list_sessions(&self, _owner: &str) -> worker::Result<Vec<SessionMeta>> {
        Ok(Vec::new())
    }

    /// Who owns session `id`, if it exists.
    pub async fn session_owner(&self, _id: &str) -> worker::Result<Option<String>> {
        Ok(None)
    }
}
