//! The HTTP side of the bundled auth: the login, logout and me handlers,
//! the Origin check with its middleware, and [`Authenticate`] for
//! `Arc<Auth>`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, FromRef, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use duraclaw_core::backend::web::origin::{self, CROSS_ORIGIN, OwnOrigin};
use serde::Deserialize;

use super::token::{clear_cookie, set_cookie};
use super::{Auth, LoginRefusal};
use crate::authn::{
    AuthUser, Authenticate, Authenticator, BoxFuture, LoginId, needs_origin_check, not_logged_in,
};
use crate::error::ApiError;

/// The largest login request body read.
const MAX_LOGIN_BODY: usize = 16 * 1024;

/// `POST /api/login`, `POST /api/logout` and `GET /api/me`, for any router
/// state that holds the `Arc<Auth>`.
pub fn routes<S>() -> Router<S>
where
    Arc<Auth>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

fn user_body(name: &str) -> Json<serde_json::Value> {
    Json(duraclaw_host::auth::user_body(name))
}

/// `POST /api/login` with `{"username", "password"}`: `200 {"user":{"name"}}`
/// and the session cookie; `401` with one message for an unknown user and a
/// wrong password; `429` with `retry_after_secs` and `Retry-After` while the
/// name or the client address is locked; `403` from another origin.
pub async fn login(State(auth): State<Arc<Auth>>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    auth.check_origin(&parts.headers)?;
    let client = client_addr(&parts, auth.options.trust_forwarded_for);
    let body = axum::body::to_bytes(body, MAX_LOGIN_BODY)
        .await
        .map_err(|_| ApiError::bad_request("the login request is unreadable or too large"))?;
    // serde's message could quote the password: answer a fixed one.
    let credentials: LoginRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(r#"expected a JSON body {"username": "…", "password": "…"}"#)
    })?;
    let (user, token) = auth
        .login(&credentials.username, &credentials.password, client)
        .await
        .map_err(|refusal| match refusal {
            LoginRefusal::Refused(answer) => ApiError::from(answer),
            LoginRefusal::Failed(e) => ApiError::from(e),
        })?;
    let cookie = set_cookie(
        &token,
        auth.options.session_ttl,
        auth.secure_cookie(&parts.headers),
    );
    Ok(([(header::SET_COOKIE, cookie)], user_body(&user)).into_response())
}

/// `POST /api/logout`: ends the login session; `204` and the cookie
/// cleared, or `401` (cookie cleared too) when there was no live session.
pub async fn logout(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    auth.check_origin(&headers)?;
    let clear = [(
        header::SET_COOKIE,
        clear_cookie(auth.secure_cookie(&headers)),
    )];
    match auth.logout(&headers).await? {
        Some(_) => Ok((StatusCode::NO_CONTENT, clear).into_response()),
        None => Ok((clear, not_logged_in()).into_response()),
    }
}

/// `GET /api/me`: `200 {"user":{"name"}}` with the cookie's lifetime
/// renewed, as the session's is; `401` without a live session.
pub async fn me(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (user, token) = auth.session_of(&headers).await?.ok_or_else(not_logged_in)?;
    let cookie = set_cookie(
        &token,
        auth.options.session_ttl,
        auth.secure_cookie(&headers),
    );
    Ok(([(header::SET_COOKIE, cookie)], user_body(&user)).into_response())
}

/// Middleware refusing, with `403 {"error":"cross-origin request refused"}`,
/// any request that is not `GET`, `HEAD` or `OPTIONS`, and any WebSocket
/// upgrade, whose `Origin` is missing or not the server's own
/// ([`Auth::check_origin`]). Apply it with
/// `axum::middleware::from_fn_with_state(auth.clone(), origin_guard)`.
pub async fn origin_guard(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    if needs_origin_check(request.method(), request.headers())
        && let Err(refused) = auth.check_origin(request.headers())
    {
        return refused.into_response();
    }
    next.run(request).await
}

impl Authenticate for Arc<Auth> {
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<AuthUser>, ApiError>> {
        Box::pin(async move { Ok(Auth::authenticate(self, &parts.headers).await?) })
    }

    fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        Auth::check_origin(self, headers)
    }

    fn login_ended(&self, login: &LoginId) -> BoxFuture<'static, ()> {
        let mut watch = Auth::watch_login(self, login);
        Box::pin(async move { watch.ended().await })
    }

    fn login_alive<'a>(&'a self, login: &'a LoginId) -> BoxFuture<'a, duraclaw_core::Result<bool>> {
        Box::pin(Auth::login_alive(self, login))
    }
}

impl FromRef<Arc<Auth>> for Authenticator {
    fn from_ref(auth: &Arc<Auth>) -> Self {
        Authenticator::new(auth.clone())
    }
}

/// Accepts a request whose single `Origin` header is one of the server's
/// own (core's [`origin::origin_allowed`]): `public_origin` when one is
/// given; else the bound address `bound`, or `localhost`, with its port,
/// over the scheme the request came in on (`http`, unless
/// `trust_forwarded_proto` and the request carries `X-Forwarded-Proto:
/// https`). The `Host` header plays no part: a DNS-rebinding page chooses
/// it. Anything else, a missing `Origin` included, is `403`.
pub fn check_origin(
    headers: &HeaderMap,
    public_origin: Option<&str>,
    bound: Option<SocketAddr>,
    trust_forwarded_proto: bool,
) -> Result<(), ApiError> {
    let refused = || ApiError::forbidden(CROSS_ORIGIN);
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let (Some(origin), None) = (origins.next(), origins.next()) else {
        return Err(refused());
    };
    let origin = origin.to_str().ok();
    let own = match (public_origin, bound) {
        (Some(public), _) => OwnOrigin::Public(public),
        (None, Some(bound)) => OwnOrigin::Listener {
            scheme: request_scheme(headers, trust_forwarded_proto),
            bound,
        },
        (None, None) => return Err(refused()),
    };
    if origin::origin_allowed(origin, own) {
        Ok(())
    } else {
        tracing::debug!(origin = ?origin, "refused a cross-origin request");
        Err(refused())
    }
}

/// The scheme a request came in on, as far as this server can tell.
pub(super) fn request_scheme(headers: &HeaderMap, trust_forwarded_proto: bool) -> &'static str {
    let forwarded_https = trust_forwarded_proto
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|first| first.trim().eq_ignore_ascii_case("https"));
    if forwarded_https { "https" } else { "http" }
}

/// The client address login attempts are counted against: the connection's
/// peer, or with `trust_forwarded_for` the last `X-Forwarded-For` entry.
/// `None` when neither is known (then only the user name is limited).
fn client_addr(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        // The last entry is the one the proxy added; earlier ones are the
        // client's to choose.
        let last = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|entry| entry.trim().parse::<IpAddr>().ok());
        if last.is_some() {
            return last;
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}
