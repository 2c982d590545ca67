//! [`CfAuth`]: the auth routes and checks of one Worker request, over D1
//! and WebCrypto.

use std::cell::{Cell, RefCell};

use duraclaw_core::store::SessionMeta;
use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use worker::{D1Database, Env, Request, Response};

use duraclaw_host::auth::token::{self as cookie, SessionToken, TOKEN_BYTES, bearer_token};
use duraclaw_host::auth::{
    LoginAttempt, LoginLimits, NOT_LOGGED_IN, SESSION_TTL_MS, TOUCH_EVERY_MS, limits, user_body,
};
use duraclaw_host::http::HttpError;

use super::origin::{self, CROSS_ORIGIN, OwnOrigin};
use super::password::{self, PasswordHash};
use super::routes::{self, MAX_BODY_BYTES, Route};
use super::{MIN_ADMIN_TOKEN_BYTES, MIN_COOKIE_SECRET_BYTES};
use super::{crypto, store};
use crate::clock::now_ms;

thread_local! {
    /// Whether this isolate has seen the schema up to date: then
    /// [`CfAuth::migrate`] costs nothing.
    static MIGRATED: Cell<bool> = const { Cell::new(false) };
}

/// A logged-in user.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// The user's name as stored (case preserved).
    pub name: String,
    /// The login session: the digest its D1 row is stored under (never the
    /// token); a session object keeps it with each socket and checks it
    /// before every command ([`CfAuth::login_alive`]).
    pub login: String,
}

impl std::fmt::Debug for AuthUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The D1-backed auth service of one request (cheap to build).
pub struct CfAuth {
    db: D1Database,
    /// The key of the token digests (HMAC-SHA256); plain SHA-256 without.
    cookie_secret: Option<Vec<u8>>,
    /// SHA-256 of the admin token, when one of at least 16 bytes is set.
    admin_token_sha256: Option<[u8; 32]>,
    public_origin: Option<String>,
    limits: LoginLimits,
    /// The owner whose logins this request ended (logout, password change,
    /// removal): the Worker then tells their sessions' objects.
    ended: RefCell<Option<String>>,
}

impl std::fmt::Debug for CfAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CfAuth")
            .field("public_origin", &self.public_origin)
            .field("keyed_digests", &self.cookie_secret.is_some())
            .field("admin_routes", &self.admin_token_sha256.is_some())
            .finish_non_exhaustive()
    }
}

/// A JSON error answer `{"error": message}` with `status`.
pub fn json_error(status: u16, message: &str) -> worker::Result<Response> {
    http_error(&HttpError::new(status, message))
}

/// Why a request was refused before it reached a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no cookie, or one that is unknown, expired or revoked.
    Unauthorized(String),
    /// 403: a cross-origin state-changing request or WebSocket upgrade.
    Forbidden(String),
    /// 500: the check itself failed (D1 unreachable, say); the reason.
    Failed(String),
}

impl Denied {
    /// The JSON answer (401, 403 or 500).
    pub fn into_response(self) -> worker::Result<Response> {
        match self {
            Denied::Unauthorized(m) => json_error(401, &m),
            Denied::Forbidden(m) => json_error(403, &m),
            Denied::Failed(m) => json_error(500, &m),
        }
    }
}

/// A variable or secret as text, if set and not empty.
fn setting(env: &Env, name: &str) -> Option<String> {
    let value = env
        .secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()?;
    Some(value).filter(|v| !v.is_empty())
}

/// An answer built by the handlers, or the error to answer 500 with.
type Answer = Result<Response, String>;

fn answer_error(status: u16, message: &str) -> Answer {
    json_error(status, message).map_err(|e| e.to_string())
}

fn json_answer(status: u16, value: &serde_json::Value) -> Answer {
    let mut response = Response::from_json(value)
        .map_err(|e| e.to_string())?
        .with_status(status);
    response
        .headers_mut()
        .set("Cache-Control", "no-store")
        .map_err(|e| e.to_string())?;
    Ok(response)
}

fn with_cookie(mut response: Response, cookie: &str) -> Answer {
    response
        .headers_mut()
        .set("Set-Cookie", cookie)
        .map_err(|e| e.to_string())?;
    Ok(response)
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`]: `Err` is the answer
/// (413 too large, 400 unreadable or not the expected shape). serde's
/// message could quote a password, so the 400 says `expected` instead.
async fn read_json<T: for<'a> Deserialize<'a>>(
    req: &mut Request,
    expected: &str,
) -> Result<T, Answer> {
    let too_large = || answer_error(413, "the request body is too large");
    let declared = header(req, "Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = match req.stream() {
        Ok(stream) => stream,
        // No body at all.
        Err(_) => {
            return Err(answer_error(
                400,
                &format!("expected a JSON body {expected}"),
            ));
        }
    };
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(answer_error(400, "the request body is unreadable"));
        };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|_| answer_error(400, &format!("expected a JSON body {expected}")))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct NewPassword {
    password: String,
}

const CREDENTIALS_SHAPE: &str = r#"{"username": "…", "password": "…"}"#;

impl CfAuth {
    /// Reads the bindings from `env`; an error names the missing or bad one.
    pub fn from_env(env: &Env) -> worker::Result<CfAuth> {
        let db = env.d1("DB").map_err(|e| {
            worker::Error::RustError(format!("auth: the D1 binding `DB` is missing: {e}"))
        })?;
        let cookie_secret = setting(env, "DURACLAW_COOKIE_SECRET").map(String::into_bytes);
        if cookie_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_COOKIE_SECRET_BYTES)
        {
            return Err(worker::Error::RustError(format!(
                "auth: DURACLAW_COOKIE_SECRET is shorter than {MIN_COOKIE_SECRET_BYTES} bytes"
            )));
        }
        let admin_token_sha256 = match setting(env, "DURACLAW_ADMIN_TOKEN") {
            Some(token) if token.len() >= MIN_ADMIN_TOKEN_BYTES => {
                Some(Sha256::digest(token.as_bytes()).into())
            }
            Some(_) => {
                tracing::error!(
                    min_bytes = MIN_ADMIN_TOKEN_BYTES,
                    "DURACLAW_ADMIN_TOKEN is too short; the admin routes are disabled"
                );
                None
            }
            None => None,
        };
        let public_origin = setting(env, "DURACLAW_PUBLIC_ORIGIN");
        if let Some(o) = &public_origin
            && origin::normalize_origin(o.trim_end_matches('/')).is_none()
        {
            return Err(worker::Error::RustError(format!(
                "auth: DURACLAW_PUBLIC_ORIGIN {o:?} is not an origin such as \
                 https://claw.example.com"
            )));
        }
        Ok(CfAuth {
            db,
            cookie_secret,
            admin_token_sha256,
            public_origin,
            limits: LoginLimits::default(),
            ended: RefCell::new(None),
        })
    }

    /// Brings the D1 schema up to date (cheap when it already is: once an
    /// isolate has seen it current, this returns at once). An error carries
    /// the reason; the caller answers 500 with it.
    pub async fn migrate(&self) -> worker::Result<()> {
        if MIGRATED.get() {
            return Ok(());
        }
        self.migrate_uncached().await?;
        MIGRATED.set(true);
        Ok(())
    }

    /// [`CfAuth::migrate`] without the per-isolate shortcut: reads the
    /// schema version from D1 every time. Answers the versions applied.
    pub async fn migrate_uncached(&self) -> worker::Result<Vec<u32>> {
        match store::migrate(&self.db).await {
            Ok(done) => {
                if !done.applied.is_empty() {
                    tracing::info!(from = done.from, applied = ?done.applied, "auth schema migrated");
                }
                Ok(done.applied)
            }
            Err(reason) => {
                MIGRATED.set(false);
                tracing::error!(%reason, "the auth database cannot be used");
                Err(worker::Error::RustError(format!("auth database: {reason}")))
            }
        }
    }

    /// Answers the auth routes — `POST /api/login`, `POST /api/logout`,
    /// `GET /api/me` and the admin routes under `/api/admin/` — and `None`
    /// for every other path.
    ///
    /// The admin routes need `Authorization: Bearer <DURACLAW_ADMIN_TOKEN>`
    /// and answer 404 while that secret is unset:
    /// `GET /api/admin/users` (the users), `POST /api/admin/users`
    /// `{"username","password"}` (201; 409 if the name is taken),
    /// `PUT /api/admin/users/{name}/password` `{"password"}` (200; ends the
    /// user's login sessions) and `DELETE /api/admin/users/{name}` (204).
    pub async fn handle(&self, req: &mut Request) -> Option<worker::Result<Response>> {
        let route = routes::route(req.method().as_ref(), &req.path())?;
        let answer = match route {
            Route::WrongMethod(allow) => answer_error(405, "method not allowed").and_then(|r| {
                r.headers()
                    .set("Allow", allow)
                    .map(|()| r)
                    .map_err(|e| e.to_string())
            }),
            Route::Login => self.login(req).await,
            Route::Logout => self.logout(req).await,
            Route::Me => self.me(req).await,
            admin => self.admin(req, admin).await,
        };
        Some(answer.or_else(|reason| {
            tracing::error!(%reason, "an auth request failed");
            json_error(500, &format!("internal server error: {reason}"))
        }))
    }

    /// The user behind the request's cookie, after the Origin check for
    /// state-changing methods and WebSocket upgrades; `Err` says the
    /// reason (401, 403, or 500 when the check itself failed).
    pub async fn require_user(&self, req: &Request) -> Result<AuthUser, Denied> {
        self.check_origin(req)
            .map_err(|()| Denied::Forbidden(CROSS_ORIGIN.to_owned()))?;
        match self.session_of(req).await {
            Ok(Some((name, token))) => Ok(AuthUser {
                name,
                login: self.digest(&token),
            }),
            Ok(None) => Err(Denied::Unauthorized(NOT_LOGGED_IN.to_owned())),
            Err(reason) => {
                tracing::error!(%reason, "cannot check a login session");
                Err(Denied::Failed(format!(
                    "cannot check the login session: {reason}"
                )))
            }
        }
    }

    /// Records or updates a session in the index (owner and metadata). The
    /// owner recorded first stays: metadata naming another owner is refused
    /// with an error. An update older than the stored one is ignored.
    pub async fn index_session(&self, meta: &SessionMeta) -> worker::Result<()> {
        let json = serde_json::to_string(meta)?;
        let stored = store::index_session(
            &self.db,
            &meta.session_id,
            &meta.owner,
            meta.updated_at_ms,
            &json,
        )
        .await
        .map_err(worker::Error::RustError)?;
        if stored {
            Ok(())
        } else {
            Err(worker::Error::RustError(format!(
                "session {} belongs to another user; its index entry is unchanged",
                meta.session_id
            )))
        }
    }

    /// Removes session `id` of `owner` from the index (a start undone).
    pub async fn unindex_session(&self, id: &str, owner: &str) -> worker::Result<()> {
        store::unindex_session(&self.db, id, owner)
            .await
            .map_err(worker::Error::RustError)
    }

    /// The sessions `owner` owns, most recently active first (at most
    /// 1000).
    pub async fn list_sessions(&self, owner: &str) -> worker::Result<Vec<SessionMeta>> {
        let rows = store::list_sessions(&self.db, owner)
            .await
            .map_err(worker::Error::RustError)?;
        Ok(rows
            .iter()
            .filter_map(|json| match serde_json::from_str::<SessionMeta>(json) {
                Ok(meta) => Some(meta),
                Err(e) => {
                    tracing::error!(error = %e, "an indexed session's metadata is unreadable");
                    None
                }
            })
            .collect())
    }

    /// `user`'s approval rules, oldest first.
    pub async fn rules(&self, user: &str) -> worker::Result<Vec<duraclaw_host::rules::StoredRule>> {
        store::rules(&self.db, user)
            .await
            .map_err(worker::Error::RustError)
    }

    /// Adds (or updates) `user`'s approval rules.
    pub async fn add_rules(
        &self,
        user: &str,
        rules: &[duraclaw_host::rules::StoredRule],
    ) -> worker::Result<()> {
        store::add_rules(&self.db, user, rules)
            .await
            .map_err(worker::Error::RustError)
    }

    /// Deletes `user`'s rule `id`; whether there was one.
    pub async fn delete_rule(&self, user: &str, id: &str) -> worker::Result<bool> {
        store::delete_rule(&self.db, user, id)
            .await
            .map_err(worker::Error::RustError)
    }

    /// Whether the login session stored under `login` (an
    /// [`AuthUser::login`]) is live: not ended, not expired. A read.
    pub async fn login_alive(&self, login: &str) -> worker::Result<bool> {
        store::session_alive(&self.db, login, now_ms())
            .await
            .map_err(worker::Error::RustError)
    }

    /// The user whose logins the request just handled ended, if any (once).
    pub fn take_ended(&self) -> Option<String> {
        self.ended.borrow_mut().take()
    }

    fn logins_ended(&self, user: &str) {
        *self.ended.borrow_mut() = Some(user.to_owned());
    }

    /// Who owns session `id`, if it exists.
    pub async fn session_owner(&self, id: &str) -> worker::Result<Option<String>> {
        store::session_owner(&self.db, id)
            .await
            .map_err(worker::Error::RustError)
    }

    // ---- checks -----------------------------------------------------------

    /// `Err` when the request must pass the Origin rule and does not.
    fn check_origin(&self, req: &Request) -> Result<(), ()> {
        let upgrade = header(req, "Upgrade");
        if !origin::needs_origin_check(req.method().as_ref(), upgrade.as_deref()) {
            return Ok(());
        }
        let url = req.url().map(|u| u.to_string()).unwrap_or_default();
        let origin_header = header(req, "Origin");
        // No bound address here: Cloudflare routes to the Worker only the
        // hostnames configured for it, so the request URL's host is one of
        // its own (a rebound name never arrives).
        let own = match self.public_origin.as_deref() {
            Some(public) => OwnOrigin::Public(public),
            None => OwnOrigin::RequestUrl(&url),
        };
        if origin::origin_allowed(origin_header.as_deref(), own) {
            Ok(())
        } else {
            tracing::debug!(origin = ?origin_header, "refused a cross-origin request");
            Err(())
        }
    }

    /// Whether the cookie should be `Secure` for this request.
    fn secure_cookie(&self, req: &Request) -> bool {
        cookie::secure_cookie(
            self.public_origin.as_deref(),
            req.url().is_ok_and(|u| u.scheme() == "https"),
        )
    }

    fn digest(&self, token: &SessionToken) -> String {
        token.digest(self.cookie_secret.as_deref())
    }

    /// The live login session the request's cookie names: its user and token.
    async fn session_of(&self, req: &Request) -> Result<Option<(String, SessionToken)>, String> {
        let Some(cookies) = header(req, "Cookie") else {
            return Ok(None);
        };
        let now = now_ms();
        for token in cookie::session_tokens(&cookies) {
            let digest = self.digest(&token);
            if let Some(user) =
                store::session_user(&self.db, &digest, now, SESSION_TTL_MS, TOUCH_EVERY_MS).await?
            {
                return Ok(Some((user, token)));
            }
        }
        Ok(None)
    }

    // ---- routes -----------------------------------------------------------

    async fn login(&self, req: &mut Request) -> Answer {
        if self.check_origin(req).is_err() {
            return answer_error(403, CROSS_ORIGIN);
        }
        let client = header(req, "CF-Connecting-IP").and_then(|ip| limits::client_key(&ip));
        let credentials: Credentials = match read_json(req, CREDENTIALS_SHAPE).await {
            Ok(c) => c,
            Err(answer) => return answer,
        };
        let name = credentials.username.as_str();
        let attempt = LoginAttempt::new(name, client);
        if let Some(wait) = store::locked_for_ms(&self.db, attempt.keys(), now_ms()).await? {
            return http_answer(&attempt.locked(wait));
        }
        let stored = if password::validate_name(name).is_ok() {
            store::password_hash(&self.db, name).await?
        } else {
            None
        };
        let (user, hash) = stored.unzip();
        let matches = crypto::verify_password(&credentials.password, hash.as_deref()).await?;
        let Some(user) = user.filter(|_| matches) else {
            let locked =
                store::record_failure(&self.db, attempt.keys(), now_ms(), &self.limits).await?;
            return http_answer(&attempt.failed(locked));
        };
        store::clear_failures(&self.db, attempt.name_key()).await?;
        if hash
            .as_deref()
            .and_then(PasswordHash::decode)
            .is_some_and(|h| h.needs_rehash())
        {
            // Raise an old hash to today's cost while the password is here.
            let new_hash = crypto::hash_password(&credentials.password).await?;
            store::set_password_hash(&self.db, &user, &new_hash, now_ms(), false).await?;
        }
        let token = SessionToken::from_bytes(crypto::random_bytes::<TOKEN_BYTES>()?);
        store::insert_session(
            &self.db,
            &self.digest(&token),
            &user,
            now_ms(),
            SESSION_TTL_MS,
        )
        .await?;
        attempt.succeeded(&user);
        let cookie = cookie::set_cookie(&token, max_age_secs(), self.secure_cookie(req));
        with_cookie(json_answer(200, &user_body(&user))?, &cookie)
    }

    async fn logout(&self, req: &mut Request) -> Answer {
        if self.check_origin(req).is_err() {
            return answer_error(403, CROSS_ORIGIN);
        }
        let clear = cookie::clear_cookie(self.secure_cookie(req));
        match self.session_of(req).await? {
            Some((user, token)) => {
                store::delete_session(&self.db, &self.digest(&token)).await?;
                self.logins_ended(&user);
                tracing::info!(user = %user, "logged out");
                let mut response = Response::empty()
                    .map_err(|e| e.to_string())?
                    .with_status(204);
                response
                    .headers_mut()
                    .set("Cache-Control", "no-store")
                    .map_err(|e| e.to_string())?;
                with_cookie(response, &clear)
            }
            None => with_cookie(answer_error(401, NOT_LOGGED_IN)?, &clear),
        }
    }

    async fn me(&self, req: &mut Request) -> Answer {
        match self.session_of(req).await? {
            Some((user, token)) => {
                let cookie = cookie::set_cookie(&token, max_age_secs(), self.secure_cookie(req));
                with_cookie(json_answer(200, &user_body(&user))?, &cookie)
            }
            None => answer_error(401, NOT_LOGGED_IN),
        }
    }

    /// The admin routes: 404 without an admin token configured, 401 with a
    /// wrong or missing one.
    async fn admin(&self, req: &mut Request, route: Route) -> Answer {
        let Some(expected) = &self.admin_token_sha256 else {
            return answer_error(404, "not found");
        };
        let given = header(req, "Authorization");
        let given = given.as_deref().and_then(bearer_token).unwrap_or("");
        // Compared as SHA-256 digests, in constant time: neither the
        // contents nor the length of the token leak through timing.
        let given_sha256: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        if given.is_empty() || !password::secrets_equal(&given_sha256, expected) {
            tracing::warn!("an admin request with a wrong or missing token");
            return answer_error(401, "wrong or missing admin token");
        }
        match route {
            Route::AdminListUsers => {
                let users = store::list_users(&self.db).await?;
                json_answer(200, &serde_json::json!({ "users": users }))
            }
            Route::AdminCreateUser => {
                let c: Credentials = match read_json(req, CREDENTIALS_SHAPE).await {
                    Ok(c) => c,
                    Err(answer) => return answer,
                };
                if let Err(m) = password::validate_name(&c.username)
                    .and_then(|()| password::validate_password(&c.password))
                {
                    return answer_error(400, &m);
                }
                let hash = crypto::hash_password(&c.password).await?;
                if !store::insert_user(&self.db, &c.username, &hash, now_ms()).await? {
                    return answer_error(409, &format!("user {:?} already exists", c.username));
                }
                tracing::info!(user = %c.username, "added a user");
                json_answer(201, &user_body(&c.username))
            }
            Route::AdminSetPassword(name) => {
                if let Err(m) = password::validate_name(&name) {
                    return answer_error(400, &m);
                }
                let p: NewPassword = match read_json(req, r#"{"password": "…"}"#).await {
                    Ok(p) => p,
                    Err(answer) => return answer,
                };
                if let Err(m) = password::validate_password(&p.password) {
                    return answer_error(400, &m);
                }
                let hash = crypto::hash_password(&p.password).await?;
                if !store::set_password_hash(&self.db, &name, &hash, now_ms(), true).await? {
                    return answer_error(404, &format!("no user {name:?}"));
                }
                self.logins_ended(&name);
                tracing::info!(user = %name, "changed a password and ended the user's sessions");
                json_answer(200, &user_body(&name))
            }
            Route::AdminDeleteUser(name) => {
                if let Err(m) = password::validate_name(&name) {
                    return answer_error(400, &m);
                }
                if !store::delete_user(&self.db, &name).await? {
                    return answer_error(404, &format!("no user {name:?}"));
                }
                self.logins_ended(&name);
                tracing::info!(user = %name, "removed a user and ended their sessions");
                let mut response = Response::empty()
                    .map_err(|e| e.to_string())?
                    .with_status(204);
                response
                    .headers_mut()
                    .set("Cache-Control", "no-store")
                    .map_err(|e| e.to_string())?;
                Ok(response)
            }
            _ => answer_error(404, "not found"),
        }
    }
}

fn max_age_secs() -> u64 {
    u64::try_from(SESSION_TTL_MS / 1000).unwrap_or(0)
}

/// The answer of `err`, or the error to answer 500 with.
fn http_answer(err: &HttpError) -> Answer {
    http_error(err).map_err(|e| e.to_string())
}

/// The JSON answer of `err`: its status, body and `Retry-After`.
pub fn http_error(err: &HttpError) -> worker::Result<Response> {
    let mut response = Response::from_json(&err.body())?.with_status(err.status);
    response.headers_mut().set("Cache-Control", "no-store")?;
    if let Some(secs) = err.retry_after_secs {
        response
            .headers_mut()
            .set("Retry-After", &secs.to_string())?;
    }
    Ok(response)
}
