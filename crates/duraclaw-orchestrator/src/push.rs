//! Web Push on the local host (feature `push`): the VAPID key in the data
//! directory, subscriptions, settings and delivery records in the auth
//! database (`duraclaw_host::auth::schema`, migration 3), the
//! `/api/push/…` routes, and a background sender that pushes over HTTPS
//! (rustls) with bounded retries. What is sent, when, and how an answer is
//! read is `duraclaw_host::push`'s, the same on the Cloudflare host.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRef, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use duraclaw_core::protocol::Event;
use duraclaw_core::store::SessionMeta;
use duraclaw_core::{Error, Result};
use duraclaw_host::push::{
    self as host, Attempt, DeliveryView, Headers, Kind, NewSubscription, SessionInfo, Settings,
    Status, SubscriptionView, Target, VapidKey, sql,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;

use crate::authn::{AuthUser, Authenticator};
use crate::error::ApiError;

/// The VAPID private key's file in the data directory (base64url, mode
/// 0600), made on first run.
pub const KEY_FILE: &str = "vapid.key";

/// The answer of every push route of a server without push.
pub const OFF: &str = duraclaw_host::push::OFF;

/// One attempt's bound: connect, TLS, request and answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest the sender sleeps with nothing due.
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// Deliveries sent at once.
const BATCH: i64 = 16;

/// How the push sender is set up.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// The data directory ([`KEY_FILE`] lives there).
    pub data_dir: PathBuf,
    /// PEM certificates to trust besides the platform's roots (a push
    /// service behind a private CA; the tests' stand-in).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The VAPID `sub` contact (`mailto:` or `https:`); a placeholder when
    /// `None`.
    pub contact: Option<String>,
}

/// The push sender and its store. Shared as `Arc<PushService>`.
pub struct PushService {
    db: Arc<Mutex<Connection>>,
    key: VapidKey,
    action_key: [u8; 32],
    contact: String,
    client: HttpsClient,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for PushService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushService")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn sql_error(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::storage_from("sqlite", format_args!("push: cannot {what}"), e)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn random_u32() -> u32 {
    getrandom::u32().unwrap_or(0)
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::storage("random", format!("no randomness for an id: {e}")))?;
    Ok(host::new_id(bytes))
}

/// Reads the VAPID key from `data_dir`, or makes one there (mode 0600) on
/// first run.
pub fn load_or_create_key(data_dir: &Path) -> Result<VapidKey> {
    let path = data_dir.join(KEY_FILE);
    let io = |what: &'static str| {
        let path = path.clone();
        move |e: std::io::Error| {
            Error::storage_from("push", format_args!("cannot {what} {}", path.display()), e)
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            restrict_to_owner(&path).map_err(io("make private"))?;
            VapidKey::from_base64url(&text)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = VapidKey::generate();
            write_private(&path, format!("{}\n", key.private_base64url()).as_bytes())
                .map_err(io("write"))?;
            tracing::info!(path = %path.display(), "made a VAPID key for web push");
            Ok(key)
        }
        Err(e) => Err(io("read")(e)),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<hyper::body::Bytes>,
>;

/// The HTTPS client of the sender: rustls with ring, the platform's roots
/// and `extra_ca_pem`'s certificates; https only, no redirects.
fn client(extra_ca_pem: Option<&[u8]>) -> Result<HttpsClient> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let extra: Vec<CertificateDer<'static>> = match extra_ca_pem {
        None => Vec::new(),
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Invalid(format!("the push CA file is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Invalid(
                    "the push CA file holds no PEM certificate".into(),
                ));
            }
            certs
        }
    };
    // ring rather than aws-lc-rs (no cmake build); it lacks post-quantum
    // key exchange, hence the deprecation.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: rustls::Error| Error::Invalid(format!("cannot set up TLS for push: {e}"));
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(tls_error)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

impl PushService {
    /// Opens the push store in the auth database at `auth_db` (already
    /// migrated by `Auth::open`) and reads or makes the VAPID key.
    pub async fn open(auth_db: &Path, options: PushOptions) -> Result<Arc<PushService>> {
        let path = auth_db.to_owned();
        let data_dir = options.data_dir.clone();
        let (conn, key) = tokio::task::spawn_blocking(move || -> Result<_> {
            let conn = duraclaw_store::SqliteConn::open(&path)?.into_inner();
            Ok((conn, load_or_create_key(&data_dir)?))
        })
        .await
        .map_err(|e| Error::storage("push", format!("a blocking task failed: {e}")))??;
        Ok(Arc::new(PushService {
            db: Arc::new(Mutex::new(conn)),
            action_key: key.action_key(),
            key,
            contact: options
                .contact
                .unwrap_or_else(|| host::DEFAULT_CONTACT.to_owned()),
            client: client(options.extra_ca_pem.as_deref())?,
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// The public key browsers subscribe with.
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::storage("push", format!("a blocking task failed: {e}")))?
    }

    /// Events of `meta`'s session just persisted (with their gseq): the
    /// pushes they call for under its owner's settings are recorded, once
    /// per device and event, and the sender woken.
    pub async fn on_events(&self, meta: &SessionMeta, events: Vec<(u64, Event)>) {
        if events.is_empty() {
            return;
        }
        let owner = meta.owner.clone();
        let (session_id, title, worktree) = (
            meta.session_id.clone(),
            meta.title.clone(),
            meta.worktree.clone(),
        );
        let action_key = self.action_key;
        let made = self
            .with_db(move |conn| {
                let settings: Option<String> = conn
                    .query_row(sql::GET_SETTINGS, params![owner], |r| r.get(0))
                    .optional()
                    .map_err(sql_error("read push settings"))?;
                let settings = host::stored_settings(settings.as_deref());
                let info = SessionInfo {
                    session_id: &session_id,
                    owner: &owner,
                    title: &title,
                    worktree: &worktree,
                };
                let notices: Vec<_> = events
                    .iter()
                    .filter_map(|(gseq, e)| host::notice(&info, *gseq, e, &settings))
                    .collect();
                if notices.is_empty() {
                    return Ok(0);
                }
                enqueue(conn, &owner, &notices, &action_key, now_ms())
            })
            .await;
        match made {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(session = %meta.session_id, deliveries = n, "pushes queued");
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::error!(session = %meta.session_id, error = %e, "cannot queue pushes")
            }
        }
    }

    /// Runs the sender until the service is dropped: sends what is due,
    /// then sleeps until the next is due or new pushes are queued.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { break };
                let wait = match this.send_due().await {
                    Ok(Some(at)) => Duration::from_millis(
                        u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0),
                    )
                    .min(IDLE_WAKE),
                    Ok(None) => IDLE_WAKE,
                    Err(e) => {
                        tracing::error!(error = %e, "push sender failed; trying again later");
                        Duration::from_secs(5)
                    }
                };
                if wait.is_zero() {
                    continue;
                }
                tokio::select! {
                    () = this.wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    /// Sends every delivery due now; the time the next one is due.
    async fn send_due(&self) -> Result<Option<i64>> {
        let now = now_ms();
        let due = self
            .with_db(move |conn| {
                let mut stmt = conn
                    .prepare_cached(sql::DUE_DELIVERIES)
                    .map_err(sql_error("read due pushes"))?;
                let rows = stmt
                    .query_map(params![now, BATCH], |r| {
                        Ok(Due {
                            id: r.get(0)?,
                            subscription_id: r.get(1)?,
                            payload: r.get(2)?,
                            kind: r.get(3)?,
                            question_id: r.get(4)?,
                            attempts: r.get(5)?,
                            ttl_secs: r.get(6)?,
                            created_at_ms: r.get(7)?,
                        })
                    })
                    .map_err(sql_error("read due pushes"))?;
                let mut out = Vec::new();
                for row in rows {
                    let due: Due = row.map_err(sql_error("read due pushes"))?;
                    let target = conn
                        .query_row(sql::TARGET, params![due.subscription_id], |r| {
                            Ok(Target {
                                endpoint: r.get(0)?,
                                p256dh: r.get(1)?,
                                auth: r.get(2)?,
                            })
                        })
                        .optional()
                        .map_err(sql_error("read a subscription"))?;
                    out.push((due, target));
                }
                Ok(out)
            })
            .await?;
        let attempts = due
            .into_iter()
            .map(|(due, target)| self.attempt(due, target));
        for result in futures::future::join_all(attempts).await {
            result?;
        }
        self.with_db(|conn| {
            conn.query_row(
                "SELECT MIN(next_attempt_ms) FROM push_deliveries WHERE next_attempt_ms IS NOT NULL",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(sql_error("read the next due push"))
        })
        .await
    }

    /// One attempt of `due` to `target`, and its record.
    async fn attempt(&self, due: Due, target: Option<Target>) -> Result<()> {
        let now = now_ms();
        let attempts = due.attempts.saturating_add(1);
        let kind = Kind::parse(&due.kind).unwrap_or(Kind::Error);
        let outcome = match &target {
            None => Err("the subscription was removed".to_owned()),
            Some(target) => {
                let headers = Headers::for_delivery(
                    kind,
                    due.question_id.as_deref(),
                    due.ttl_secs,
                    due.created_at_ms,
                    now,
                );
                match host::request(
                    &self.key,
                    &self.contact,
                    target,
                    due.payload.as_bytes(),
                    &headers,
                    now,
                ) {
                    Ok(req) => Ok(self.post(req).await),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let next = match outcome {
            Ok(attempt) => host::after_attempt(
                attempts,
                due.created_at_ms,
                due.ttl_secs,
                &attempt,
                now_ms(),
                random_u32(),
            ),
            Err(why) => host::Next {
                status: Status::Failed,
                http_status: None,
                error: Some(why),
                retry_at_ms: None,
                remove_subscription: false,
            },
        };
        next.log(
            &due.id,
            target.as_ref().map(|t| t.endpoint.as_str()),
            attempts,
        );
        let now = now_ms();
        self.with_db(move |conn| {
            let tx = conn.transaction().map_err(sql_error("record a push"))?;
            tx.execute(
                sql::RECORD_ATTEMPT,
                params![
                    due.id,
                    next.status.as_str(),
                    next.http_status,
                    next.error,
                    attempts,
                    next.retry_at_ms,
                    now
                ],
            )
            .map_err(sql_error("record a push"))?;
            if next.status == Status::Accepted {
                tx.execute(sql::SUBSCRIPTION_SUCCESS, params![due.subscription_id, now])
                    .map_err(sql_error("record a push"))?;
            } else {
                tx.execute(
                    sql::SUBSCRIPTION_FAILURE,
                    params![due.subscription_id, now, next.error],
                )
                .map_err(sql_error("record a push"))?;
            }
            if next.remove_subscription {
                tx.execute(sql::REMOVE_GONE, params![due.subscription_id])
                    .map_err(sql_error("remove a gone subscription"))?;
                tx.execute(sql::ABANDON_DELIVERIES, params![due.subscription_id, now])
                    .map_err(sql_error("remove a gone subscription"))?;
            }
            tx.commit().map_err(sql_error("record a push"))
        })
        .await
    }

    async fn post(&self, req: host::PushRequest) -> Attempt {
        let mut builder = hyper::Request::post(&req.endpoint);
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        let request = match builder.body(http_body_util::Full::new(req.body.into())) {
            Ok(r) => r,
            Err(e) => return Attempt::Unreachable(format!("the request is not valid: {e}")),
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request)).await {
            Err(_) => Attempt::Unreachable(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
            Ok(Err(e)) => Attempt::Unreachable(unreachable_reason(&e)),
            Ok(Ok(answer)) => Attempt::Answered {
                status: answer.status().as_u16(),
                retry_after: answer
                    .headers()
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            },
        }
    }
}

/// Why a push got no answer (the deepest cause: a refused connection, a
/// certificate not trusted, …), without the endpoint (a capability).
fn unreachable_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        deepest = s.to_string();
        source = s.source();
    }
    format!("cannot reach the push service: {deepest}")
}

struct Due {
    id: String,
    subscription_id: String,
    payload: String,
    kind: String,
    question_id: Option<String>,
    attempts: u32,
    ttl_secs: u32,
    created_at_ms: i64,
}

/// Records a delivery of each notice to each of `owner`'s subscriptions.
fn enqueue(
    conn: &mut Connection,
    owner: &str,
    notices: &[host::Notice],
    action_key: &[u8],
    now: i64,
) -> Result<usize> {
    let tx = conn.transaction().map_err(sql_error("queue pushes"))?;
    let targets: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare_cached(sql::TARGETS)
            .map_err(sql_error("read subscriptions"))?;
        stmt.query_map(params![owner], |r| Ok((r.get(0)?, r.get(4)?)))
            .map_err(sql_error("read subscriptions"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql_error("read subscriptions"))?
    };
    let mut made = 0;
    for notice in notices {
        for (subscription, device) in &targets {
            let payload = host::payload(notice, owner, device, action_key, now);
            let payload = serde_json::to_string(&payload)
                .map_err(|e| Error::storage("push", format!("a payload does not encode: {e}")))?;
            made += tx
                .execute(
                    sql::INSERT_DELIVERY,
                    params![
                        random_id()?,
                        owner,
                        subscription,
                        device,
                        notice.kind.as_str(),
                        notice.session_id,
                        notice.question_id,
                        notice.event_key,
                        payload,
                        notice.ttl_secs(),
                        now
                    ],
                )
                .map_err(sql_error("queue a push"))?;
        }
    }
    tx.execute(sql::PRUNE_DELIVERIES, params![owner, host::KEEP_DELIVERIES])
        .map_err(sql_error("prune push records"))?;
    tx.commit().map_err(sql_error("queue pushes"))?;
    Ok(made)
}

fn subscription_row(r: &rusqlite::Row<'_>, login: &str) -> rusqlite::Result<SubscriptionView> {
    let endpoint: String = r.get(2)?;
    let made_by: String = r.get(7)?;
    Ok(SubscriptionView {
        id: r.get(0)?,
        device: r.get(1)?,
        endpoint_origin: duraclaw_host::push::vapid::origin(&endpoint).unwrap_or_default(),
        created_at_ms: r.get(3)?,
        last_success_ms: r.get(4)?,
        last_failure_ms: r.get(5)?,
        last_failure: r.get(6)?,
        current: made_by == login,
    })
}

/// The push routes' state.
#[derive(Clone)]
pub struct PushState {
    /// Who requests come from (the bundled auth: push subscriptions are
    /// bound to its logins).
    pub auth: Authenticator,
    /// The sender; `None` answers every route 503.
    pub push: Option<Arc<PushService>>,
}

impl FromRef<PushState> for Authenticator {
    fn from_ref(s: &PushState) -> Self {
        s.auth.clone()
    }
}

/// `/api/push/key`, `/api/push/subscriptions[/{id}]`, `/api/push/settings`
/// and `/api/push/deliveries` (see `docs/api.md`).
pub fn routes() -> Router<PushState> {
    Router::new()
        .route("/api/push/key", get(key))
        .route(
            "/api/push/subscriptions",
            get(list_subscriptions).post(subscribe),
        )
        .route("/api/push/subscriptions/{id}", delete(unsubscribe))
        .route("/api/push/settings", get(get_settings).put(put_settings))
        .route("/api/push/deliveries", get(deliveries))
}

fn service(state: &PushState) -> std::result::Result<Arc<PushService>, ApiError> {
    state
        .push
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, OFF))
}

async fn key(
    State(state): State<PushState>,
    _user: AuthUser,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    let push = service(&state)?;
    Ok(Json(serde_json::json!({ "public_key": push.public_key() })))
}

async fn list_subscriptions(
    State(state): State<PushState>,
    user: AuthUser,
) -> std::result::Result<Json<Vec<SubscriptionView>>, ApiError> {
    let push = service(&state)?;
    let (name, login) = (user.name, user.login.0);
    let list = push
        .with_db(move |conn| {
            let mut stmt = conn
                .prepare_cached(sql::LIST_SUBSCRIPTIONS)
                .map_err(sql_error("list subscriptions"))?;
            stmt.query_map(params![name], |r| subscription_row(r, &login))
                .map_err(sql_error("list subscriptions"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_error("list subscriptions"))
        })
        .await?;
    Ok(Json(list))
}

async fn subscribe(
    State(state): State<PushState>,
    user: AuthUser,
    Json(body): Json<serde_json::Value>,
) -> std::result::Result<Response, ApiError> {
    let push = service(&state)?;
    let sub: NewSubscription = host::read_subscription(body)?;
    let (name, login) = (user.name, user.login.0);
    let id = random_id()?;
    let view = push
        .with_db(move |conn| {
            let tx = conn.transaction().map_err(sql_error("subscribe"))?;
            let existing: Option<String> = tx
                .query_row(sql::SUBSCRIPTION_BY_ENDPOINT, params![sub.endpoint], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sql_error("subscribe"))?;
            let id = match existing {
                // The same browser again (new keys, login or name).
                Some(id) => {
                    tx.execute(
                        sql::UPDATE_SUBSCRIPTION,
                        params![id, name, login, sub.p256dh, sub.auth, sub.device],
                    )
                    .map_err(sql_error("subscribe"))?;
                    id
                }
                None => {
                    let count: i64 = tx
                        .query_row(sql::COUNT_SUBSCRIPTIONS, params![name], |r| r.get(0))
                        .map_err(sql_error("subscribe"))?;
                    if usize::try_from(count).unwrap_or(usize::MAX)
                        >= host::MAX_SUBSCRIPTIONS_PER_USER
                    {
                        return Ok(Err(ApiError::conflict(format!(
                            "a user may have at most {} push subscriptions; remove one first",
                            host::MAX_SUBSCRIPTIONS_PER_USER
                        ))));
                    }
                    tx.execute(
                        sql::INSERT_SUBSCRIPTION,
                        params![
                            id,
                            name,
                            login,
                            sub.endpoint,
                            sub.p256dh,
                            sub.auth,
                            sub.device,
                            now_ms()
                        ],
                    )
                    .map_err(sql_error("subscribe"))?;
                    id
                }
            };
            let view = tx
                .query_row(sql::GET_SUBSCRIPTION, params![name, id], |r| {
                    subscription_row(r, &login)
                })
                .map_err(sql_error("subscribe"))?;
            tx.commit().map_err(sql_error("subscribe"))?;
            Ok(Ok(view))
        })
        .await??;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn unsubscribe(
    State(state): State<PushState>,
    user: AuthUser,
    UrlPath(id): UrlPath<String>,
) -> std::result::Result<StatusCode, ApiError> {
    let push = service(&state)?;
    let name = user.name;
    let gone = push
        .with_db(move |conn| {
            let now = now_ms();
            let tx = conn.transaction().map_err(sql_error("unsubscribe"))?;
            let n = tx
                .execute(sql::DELETE_SUBSCRIPTION, params![name, id])
                .map_err(sql_error("unsubscribe"))?;
            if n > 0 {
                tx.execute(sql::ABANDON_DELIVERIES, params![id, now])
                    .map_err(sql_error("unsubscribe"))?;
            }
            tx.commit().map_err(sql_error("unsubscribe"))?;
            Ok(n)
        })
        .await?;
    if gone == 0 {
        return Err(ApiError::not_found("no such push subscription"));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn get_settings(
    State(state): State<PushState>,
    user: AuthUser,
) -> std::result::Result<Json<Settings>, ApiError> {
    let push = service(&state)?;
    let name = user.name;
    let text = push
        .with_db(move |conn| {
            conn.query_row(sql::GET_SETTINGS, params![name], |r| r.get::<_, String>(0))
                .optional()
                .map_err(sql_error("read push settings"))
        })
        .await?;
    Ok(Json(host::stored_settings(text.as_deref())))
}

async fn put_settings(
    State(state): State<PushState>,
    user: AuthUser,
    Json(body): Json<serde_json::Value>,
) -> std::result::Result<Json<Settings>, ApiError> {
    let push = service(&state)?;
    let settings = host::read_settings(body)?;
    let text = serde_json::to_string(&settings)
        .map_err(|e| Error::storage("push", format!("settings do not encode: {e}")))?;
    let name = user.name;
    push.with_db(move |conn| {
        conn.execute(sql::PUT_SETTINGS, params![name, text, now_ms()])
            .map_err(sql_error("write push settings"))
    })
    .await?;
    Ok(Json(settings))
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    limit: Option<String>,
}

async fn deliveries(
    State(state): State<PushState>,
    user: AuthUser,
    Query(q): Query<DeliveriesQuery>,
) -> std::result::Result<Json<Vec<DeliveryView>>, ApiError> {
    let push = service(&state)?;
    let limit = host::deliveries_limit(q.limit.as_deref())?;
    let name = user.name;
    let list = push
        .with_db(move |conn| {
            let mut stmt = conn
                .prepare_cached(sql::LIST_DELIVERIES)
                .map_err(sql_error("list pushes"))?;
            stmt.query_map(params![name, limit], |r| {
                let kind: String = r.get(3)?;
                let status: String = r.get(6)?;
                Ok(DeliveryView {
                    id: r.get(0)?,
                    subscription_id: r.get(1)?,
                    device: r.get(2)?,
                    kind: Kind::parse(&kind).unwrap_or(Kind::Error),
                    session_id: r.get(4)?,
                    question_id: r.get(5)?,
                    status: Status::parse(&status).unwrap_or(Status::Failed),
                    http_status: r.get(7)?,
                    error: r.get(8)?,
                    attempts: r.get(9)?,
                    created_at_ms: r.get(10)?,
                    updated_at_ms: r.get(11)?,
                })
            })
            .map_err(sql_error("list pushes"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql_error("list pushes"))
        })
        .await?;
    Ok(Json(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_key_is_made_once_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let again = load_or_create_key(dir.path()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        // A file someone made readable is made private again.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create_key(dir.path()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_or_create_key(dir.path()).is_err());
    }
}
