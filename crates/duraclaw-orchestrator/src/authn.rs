//! Who a request comes from: the [`Authenticate`] trait the API asks, so an
//! app can bring its own login (a header token, an OIDC proxy, …). The
//! bundled users + argon2 + cookie login (`auth::Auth`, as an `Arc<Auth>`,
//! feature `auth`) is one implementation.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use duraclaw_core::backend::web::origin;

use crate::error::ApiError;

/// A boxed future that can move between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The logged-in user of a request.
///
/// As an extractor it answers `401 {"error": …}` unless the router state's
/// [`Authenticator`] names a user; it needs `Authenticator: FromRef<S>`.
/// Extracting it twice in one request authenticates once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// The user's name: sessions belong to it.
    pub name: String,
    /// The login the request came with.
    pub login: LoginId,
}

/// Which login a request came with, as its [`Authenticate`] names it (the
/// bundled auth: the digest its row is stored under, never the token).
/// `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginId(pub(crate) String);

impl LoginId {
    /// A login named `id`; keep secrets out of it (it is compared, not
    /// shown).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
}

impl fmt::Debug for LoginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginId(…)")
    }
}

/// How the API learns who a request comes from, and when a login ends.
pub trait Authenticate: Send + Sync + 'static {
    /// The user a request comes from: `Ok(None)` when it carries no valid
    /// credentials (answered `401`), `Err` when they cannot be checked.
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<AuthUser>, ApiError>>;

    /// Refuses a state-changing request or a WebSocket upgrade from another
    /// origin. Credentials a browser sends by itself (cookies) need this;
    /// the default accepts every origin, right for credentials a page has
    /// to add on purpose (a header token).
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let _ = headers;
        Ok(())
    }

    /// Resolves once `login` has ended (a session's WebSocket then closes
    /// with `4401`); the default never does.
    fn login_ended(&self, login: &LoginId) -> BoxFuture<'static, ()> {
        let _ = login;
        Box::pin(std::future::pending())
    }

    /// Whether `login` is still live, checked before each WebSocket
    /// command; the default says it always is.
    fn login_alive<'a>(&'a self, login: &'a LoginId) -> BoxFuture<'a, duraclaw_core::Result<bool>> {
        let _ = login;
        Box::pin(async { Ok(true) })
    }
}

/// A shared [`Authenticate`], as router state holds it.
#[derive(Clone)]
pub struct Authenticator(Arc<dyn Authenticate>);

impl Authenticator {
    /// Shares `auth`.
    pub fn new(auth: impl Authenticate) -> Self {
        Self(Arc::new(auth))
    }
}

impl std::ops::Deref for Authenticator {
    type Target = dyn Authenticate;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authenticator(…)")
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        let auth = Authenticator::from_ref(state);
        let user = auth.authenticate(parts).await?.ok_or_else(not_logged_in)?;
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

/// The answer to a request without a live login.
pub(crate) fn not_logged_in() -> ApiError {
    ApiError::unauthorized(duraclaw_host::auth::NOT_LOGGED_IN)
}

/// Middleware refusing, with `403 {"error":"cross-origin request refused"}`
/// (or what [`Authenticate::check_origin`] answers), any request that is not
/// `GET`, `HEAD` or `OPTIONS`, and any WebSocket upgrade, that the
/// authentication's origin check refuses. Apply it with
/// `axum::middleware::from_fn_with_state(authenticator, origin_guard)`.
pub async fn origin_guard(
    State(auth): State<Authenticator>,
    request: Request,
    next: Next,
) -> Response {
    if needs_origin_check(request.method(), request.headers())
        && let Err(refused) = auth.check_origin(request.headers())
    {
        return refused.into_response();
    }
    next.run(request).await
}

/// Whether a request must come from the server's own origin: it changes
/// state, or it upgrades to a WebSocket.
pub(crate) fn needs_origin_check(method: &Method, headers: &HeaderMap) -> bool {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    !safe
        || headers
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| origin::is_websocket_upgrade(&String::from_utf8_lossy(v.as_bytes())))
}
