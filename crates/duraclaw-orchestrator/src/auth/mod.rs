//! Users, login sessions and the checks in front of the HTTP API.
//!
//! [`Auth`] owns its own SQLite file: users with argon2id password hashes,
//! and login sessions stored by the SHA-256 of their random token, which
//! only the browser's `duraclaw_session` cookie holds (`HttpOnly`,
//! `SameSite=Strict`). Sessions last 30 days from their last use. Failed
//! logins are counted in memory per user name and per client address (see
//! [`LoginLimits`]). State-changing requests and WebSocket upgrades must
//! come from the server's own origin ([`check_origin`], [`origin_guard`]).
//! A login that ends (logout, password change, removal — the last two also
//! from `duraclaw user` in another process) ends the WebSockets opened with
//! it ([`Auth::watch_login`], [`Auth::watch_other_processes`]).
//! There is no default user and no default password: users are added with
//! [`add_user_command`]. Passwords, tokens and hashes are never logged.

mod cli;
mod http;
mod password;
mod store;
mod token;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use duraclaw_host::auth::LoginAttempt;
use duraclaw_host::auth::limits::{self, LoginLimiter};
use duraclaw_host::http::HttpError;

use axum::http::HeaderMap;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::{Error, Result};
use rusqlite::Connection;
use tokio::sync::{Semaphore, watch};

pub use crate::authn::{AuthUser, LoginId};
pub use crate::error::ApiError;
pub use cli::{PasswordSource, add_user_command, passwd_command, remove_command};
pub use duraclaw_host::auth::LoginLimits;
pub use http::{origin_guard, routes};
pub use token::random_token;
pub use {cli::db_path, http::check_origin, password::HashCost, token::COOKIE_NAME};

use password::{PasswordHashing, validate_name, validate_password};
use token::SessionToken;

/// How long a login session lives after its last use.
pub const SESSION_TTL: Duration =
    Duration::from_millis(duraclaw_host::auth::SESSION_TTL_MS.unsigned_abs());

/// A session's last use is written at most this often.
const TOUCH_EVERY: Duration =
    Duration::from_millis(duraclaw_host::auth::TOUCH_EVERY_MS.unsigned_abs());

/// How [`Auth`] behaves; [`AuthOptions::default`] is right for a server on
/// 127.0.0.1 reached over plain HTTP.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// Mark the cookie `Secure`. It is also marked so when
    /// [`AuthOptions::public_origin`] is `https`, or the request came in
    /// over HTTPS as a trusted `X-Forwarded-Proto` says.
    pub secure_cookies: bool,
    /// The origin browsers use, e.g. `https://claw.example.com`, when the
    /// server sits behind a proxy. When set, requests must carry exactly
    /// this `Origin`; when not, it must be [`AuthOptions::bound_addr`]'s
    /// or `localhost`'s with its port (never what the `Host` header says).
    pub public_origin: Option<String>,
    /// The address the server listens on; with neither it nor a public
    /// origin, every state-changing request is refused.
    pub bound_addr: Option<SocketAddr>,
    /// Believe `X-Forwarded-Proto: https` from a proxy in front. Leave off
    /// unless a proxy you run sets (and overwrites) that header.
    pub trust_forwarded_proto: bool,
    /// Take the client address for login rate limiting from the last entry
    /// of `X-Forwarded-For` (the address your proxy saw). Leave off unless a
    /// proxy you run appends to that header.
    pub trust_forwarded_for: bool,
    /// How long a login session lives after its last use.
    pub session_ttl: Duration,
    /// Login rate limits.
    pub login_limits: LoginLimits,
    /// The cost of new password hashes.
    pub hash_cost: HashCost,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            secure_cookies: false,
            public_origin: None,
            bound_addr: None,
            trust_forwarded_proto: false,
            trust_forwarded_for: false,
            session_ttl: SESSION_TTL,
            login_limits: LoginLimits::default(),
            hash_cost: HashCost::default(),
        }
    }
}

/// Users and login sessions on one SQLite file, shared as `Arc<Auth>`.
///
/// Every database call and every password hash runs on tokio's blocking
/// pool; at most one hash per CPU runs at a time, so a burst of logins
/// cannot take the server's memory (each argon2 hash takes 19 MiB).
pub struct Auth {
    db: Arc<Mutex<Connection>>,
    hashing: Arc<PasswordHashing>,
    hash_slots: Arc<Semaphore>,
    limiter: Mutex<LoginLimiter>,
    /// The limiter's clock: ms since this instant, which never go back.
    started: Instant,
    options: AuthOptions,
    /// Bumped whenever a login may have ended: each open WebSocket then
    /// checks its own ([`Auth::watch_login`]).
    revocations: watch::Sender<u64>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why a login failed.
#[derive(Debug)]
enum LoginRefusal {
    /// Locked (429), or no such user or a wrong password (401).
    Refused(HttpError),
    /// The database or the hashing failed.
    Failed(Error),
}

impl Auth {
    /// Opens (creating it if needed) the auth database at `path` and
    /// migrates it; refuses a database written by a newer version, and a
    /// [`AuthOptions::public_origin`] that is not an origin.
    pub async fn open(path: &Path, options: AuthOptions) -> Result<Arc<Auth>> {
        if let Some(origin) = &options.public_origin
            && duraclaw_core::backend::web::origin::normalize_origin(origin.trim_end_matches('/'))
                .is_none()
        {
            return Err(Error::Invalid(format!(
                "public origin {origin:?} is not an origin such as https://claw.example.com \
                 (a scheme, http or https, and a host with an optional port)"
            )));
        }
        let path = path.to_owned();
        let cost = options.hash_cost;
        let (conn, hashing) = tokio::task::spawn_blocking(move || -> Result<_> {
            let conn = store::open(&path)?;
            store::purge_expired(&conn, now_ms())?;
            Ok((conn, PasswordHashing::new(cost)?))
        })
        .await
        .map_err(blocking_failed)??;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Arc::new(Auth {
            db: Arc::new(Mutex::new(conn)),
            hashing: Arc::new(hashing),
            hash_slots: Arc::new(Semaphore::new(cpus)),
            limiter: Mutex::new(LoginLimiter::new(options.login_limits.clone())),
            started: Instant::now(),
            options,
            revocations: watch::Sender::new(0),
        }))
    }

    /// The options it was opened with.
    pub fn options(&self) -> &AuthOptions {
        &self.options
    }

    /// Adds a user. The name is 1 to 64 characters of `A-Z a-z 0-9 . _ -`
    /// and must differ from every other user's in more than case; the
    /// password has at least 10 characters.
    pub async fn add_user(&self, name: &str, password: &str) -> Result<()> {
        validate_name(name)?;
        validate_password(password)?;
        let hash = self.hash(password).await?;
        let owned = name.to_owned();
        self.with_db(move |db| store::insert_user(db, &owned, &hash, now_ms()))
            .await?;
        tracing::info!(user = name, "added a user");
        Ok(())
    }

    /// Changes a user's password and ends all their login sessions.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<()> {
        validate_name(name)?;
        validate_password(password)?;
        let hash = self.hash(password).await?;
        let owned = name.to_owned();
        self.with_db(move |db| store::update_password(db, &owned, &hash, now_ms()))
            .await?;
        self.logins_may_have_ended();
        tracing::info!(
            user = name,
            "changed a password and ended the user's sessions"
        );
        Ok(())
    }

    /// Removes a user and ends all their login sessions ([`Error::NotFound`]
    /// if there is no such user). Their Duraclaw sessions stay on disk.
    pub async fn remove_user(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let owned = name.to_owned();
        self.with_db(move |db| store::delete_user(db, &owned))
            .await?;
        self.logins_may_have_ended();
        tracing::info!(user = name, "removed a user and ended their sessions");
        Ok(())
    }

    /// Whether a user `name` exists (names match without case).
    pub async fn user_exists(&self, name: &str) -> Result<bool> {
        let owned = name.to_owned();
        let found = self
            .with_db(move |db| store::password_hash(db, &owned))
            .await?;
        Ok(found.is_some())
    }

    /// How many live login sessions `name` has.
    pub async fn login_sessions(&self, name: &str) -> Result<u64> {
        let owned = name.to_owned();
        self.with_db(move |db| store::count_sessions(db, &owned))
            .await
    }

    /// The user's name as stored (names match without case) if `password`
    /// is theirs. Takes as long for a user that does not exist: a hash is
    /// still verified. Not rate-limited; the login handler is.
    pub async fn verify(&self, name: &str, password: &str) -> Result<Option<String>> {
        let stored = if validate_name(name).is_ok() {
            let owned = name.to_owned();
            self.with_db(move |db| store::password_hash(db, &owned))
                .await?
        } else {
            None
        };
        let (user, hash) = stored.unzip();
        let password = password.to_owned();
        let matches = self
            .with_hashing(move |h| h.verify(&password, hash.as_deref()))
            .await?;
        Ok(user.filter(|_| matches))
    }

    /// Whether any user exists.
    pub async fn has_users(&self) -> Result<bool> {
        self.with_db(|db| store::count_users(db).map(|n| n > 0))
            .await
    }

    /// The user whose live login session a request's cookie names, if any;
    /// extends that session (see [`AuthOptions::session_ttl`]).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<AuthUser>> {
        Ok(self
            .session_of(headers)
            .await?
            .map(|(name, token)| AuthUser {
                name,
                login: LoginId(token::digest(&token)),
            }))
    }

    /// Whether the login session `login` is still live (not ended, not
    /// expired). Reads the database: what a WebSocket checks before each
    /// command, so that a command racing a revocation is refused.
    pub async fn login_alive(&self, login: &LoginId) -> Result<bool> {
        let digest = login.0.clone();
        self.with_db(move |db| store::session_alive(db, &digest, now_ms()))
            .await
    }

    /// A watch on the login `login`: [`LoginWatch::ended`] resolves once it
    /// has ended, in this process (logout, password change, removal) or in
    /// another one writing the same database (`duraclaw user`, noticed by
    /// [`Auth::watch_other_processes`]).
    pub fn watch_login(self: &Arc<Self>, login: &LoginId) -> LoginWatch {
        LoginWatch {
            auth: self.clone(),
            login: login.clone(),
            changes: self.revocations.subscribe(),
        }
    }

    /// Tells every [`LoginWatch`] to check its login.
    fn logins_may_have_ended(&self) {
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Watches the database for commits by other processes (`duraclaw
    /// user passwd|remove`): every `every`, one `PRAGMA data_version` (a
    /// read of the WAL index, no table access); when it changed, every
    /// watched login is checked once. Ends when the `Auth` is dropped.
    pub async fn watch_other_processes(
        self: &Arc<Self>,
        every: Duration,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let mut seen = self.with_db(|db| store::data_version(db)).await?;
        let weak = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(auth) = weak.upgrade() else { return };
                match auth.with_db(|db| store::data_version(db)).await {
                    Ok(version) if version != seen => {
                        seen = version;
                        if auth.revocations.receiver_count() > 0 {
                            tracing::debug!("the auth database changed in another process");
                            auth.logins_may_have_ended();
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot watch the auth database"),
                }
            }
        }))
    }

    /// Checks a request's `Origin` against [`AuthOptions::public_origin`],
    /// or else against the server's own address; see [`check_origin`].
    pub fn check_origin(&self, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
        check_origin(
            headers,
            self.options.public_origin.as_deref(),
            self.options.bound_addr,
            self.options.trust_forwarded_proto,
        )
    }

    /// The live session a request's cookie names: its user and token.
    async fn session_of(&self, headers: &HeaderMap) -> Result<Option<(String, SessionToken)>> {
        let tokens = token::session_tokens(headers);
        if tokens.is_empty() {
            return Ok(None);
        }
        let ttl_ms = duration_ms(self.options.session_ttl);
        let touch_ms = duration_ms(TOUCH_EVERY.min(self.options.session_ttl / 2));
        self.with_db(move |db| {
            let now = now_ms();
            for token in tokens {
                if let Some(user) =
                    store::session_user(db, &token::digest(&token), now, ttl_ms, touch_ms)?
                {
                    return Ok(Some((user, token)));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Checks the rate limits and the password, and starts a login session.
    async fn login(
        &self,
        name: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> std::result::Result<(String, SessionToken), LoginRefusal> {
        let attempt = LoginAttempt::new(name, client.map(limits::client_addr_key));
        if let Some(wait) = self
            .limiter()
            .locked_for_ms(attempt.keys(), self.clock_ms())
        {
            return Err(LoginRefusal::Refused(attempt.locked(wait)));
        }
        let Some(user) = self
            .verify(name, password)
            .await
            .map_err(LoginRefusal::Failed)?
        else {
            let locked = self
                .limiter()
                .record_failure(attempt.keys(), self.clock_ms());
            return Err(LoginRefusal::Refused(attempt.failed(locked)));
        };
        self.limiter().record_success(attempt.name_key());
        let token = token::generate().map_err(LoginRefusal::Failed)?;
        let digest = token::digest(&token);
        let ttl_ms = duration_ms(self.options.session_ttl);
        let owner = user.clone();
        self.with_db(move |db| {
            let now = now_ms();
            store::purge_expired(db, now)?;
            store::insert_session(db, &digest, &owner, now, now.saturating_add(ttl_ms))
        })
        .await
        .map_err(LoginRefusal::Failed)?;
        attempt.succeeded(&user);
        Ok((user, token))
    }

    /// Ends the login session a request's cookie names; the user it was, if
    /// it was live.
    async fn logout(&self, headers: &HeaderMap) -> Result<Option<String>> {
        let Some((user, token)) = self.session_of(headers).await? else {
            return Ok(None);
        };
        let digest = token::digest(&token);
        self.with_db(move |db| store::delete_session(db, &digest))
            .await?;
        self.logins_may_have_ended();
        tracing::info!(user = %user, "logged out");
        Ok(Some(user))
    }

    /// Whether the cookie should be `Secure` for this request.
    fn secure_cookie(&self, headers: &HeaderMap) -> bool {
        self.options.secure_cookies
            || duraclaw_host::auth::token::secure_cookie(
                self.options.public_origin.as_deref(),
                http::request_scheme(headers, self.options.trust_forwarded_proto) == "https",
            )
    }

    async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.with_hashing(move |h| h.hash(&password)).await?
    }

    /// Runs `f` on the database on the blocking pool.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            // A panic elsewhere cannot leave a rusqlite call half done in a
            // way the next one would see, so a poisoned lock is still usable.
            let mut conn = db.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(blocking_failed)?
    }

    /// Runs `f` on the blocking pool once a hashing slot is free; the slot
    /// is held until `f` ends, even if the caller stops waiting.
    async fn with_hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PasswordHashing) -> T + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .hash_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed("password hashing"))?;
        let hashing = self.hashing.clone();
        tokio::task::spawn_blocking(move || {
            let out = f(&hashing);
            drop(permit);
            out
        })
        .await
        .map_err(blocking_failed)
    }

    fn limiter(&self) -> MutexGuard<'_, LoginLimiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The limiter's time: ms on a clock that does not go back.
    fn clock_ms(&self) -> i64 {
        duration_ms(self.started.elapsed())
    }
}

/// A watch on one login session, for a WebSocket opened with it.
pub struct LoginWatch {
    auth: Arc<Auth>,
    login: LoginId,
    changes: watch::Receiver<u64>,
}

impl std::fmt::Debug for LoginWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginWatch").finish_non_exhaustive()
    }
}

impl LoginWatch {
    /// Resolves once the login has ended; never, while it lives. Keep one
    /// future across a `select!` loop (pinned): dropping it half-way could
    /// lose the change it was checking.
    pub async fn ended(&mut self) {
        // The state now: a revocation just before the watch began counts.
        self.changes.mark_changed();
        loop {
            if self.changes.changed().await.is_err() {
                return std::future::pending().await;
            }
            match self.auth.login_alive(&self.login).await {
                Ok(false) => return,
                Ok(true) => {}
                // The next command checks again and is refused on failure.
                Err(e) => tracing::warn!(error = %e, "cannot check a login"),
            }
        }
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> Error {
    Error::storage_from("sqlite", "auth task failed", e)
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The bundled login keeps approval rules in its own database (table
/// `approval_rules`, bound to `users`: removing a user removes theirs).
impl crate::rules::RuleStore for Auth {
    fn list<'a>(
        &'a self,
        user: &'a str,
    ) -> crate::authn::BoxFuture<'a, Result<Vec<duraclaw_host::rules::StoredRule>>> {
        let owned = user.to_owned();
        Box::pin(self.with_db(move |db| store::rules(db, &owned)))
    }

    fn add<'a>(
        &'a self,
        user: &'a str,
        rules: Vec<duraclaw_host::rules::StoredRule>,
    ) -> crate::authn::BoxFuture<'a, Result<()>> {
        let owned = user.to_owned();
        Box::pin(self.with_db(move |db| store::add_rules(db, &owned, &rules)))
    }

    fn delete<'a>(
        &'a self,
        user: &'a str,
        id: &'a str,
    ) -> crate::authn::BoxFuture<'a, Result<bool>> {
        let (owned, id) = (user.to_owned(), id.to_owned());
        Box::pin(self.with_db(move |db| store::delete_rule(db, &owned, &id)))
    }
}
