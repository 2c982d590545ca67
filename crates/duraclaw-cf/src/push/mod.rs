//! Web Push on Cloudflare: the `/api/push/…` routes (D1), and `PushHost`,
//! the body of the per-user Durable Object `PushObject` (binding `PUSH`)
//! that a session object tells about the events of each ingested batch
//! worth a push. It records the deliveries in D1, sends them with `fetch`
//! and retries by its alarm. What is sent, when, and how an answer is read
//! is `duraclaw_host::push`'s, the same as on the local host.
//!
//! The VAPID private key is the secret `DURACLAW_VAPID_PRIVATE_KEY`
//! (base64url); without it every push route answers 503
//! ([`duraclaw_host::push::NO_KEY`]) and nothing is sent.

use std::time::Duration;

use duraclaw_core::protocol::{Event, Gseq};
use duraclaw_core::store::SessionMeta;
use duraclaw_host::push::{
    self as host, Attempt, DeliveryView, Headers, Kind, SessionInfo, Status, SubscriptionView,
    Target, VapidKey, sql,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;
use worker::js_sys::{Math, Uint8Array};
use worker::{D1Database, Env, Fetch, Method, Request, RequestInit, Response, State};

use crate::auth::{AuthUser, http_error, json_error};
use crate::clock::now_ms;

/// The Durable Object namespace binding of the push objects.
pub const PUSH_BINDING: &str = "PUSH";

/// The secret holding the VAPID private key.
pub const KEY_SECRET: &str = "DURACLAW_VAPID_PRIVATE_KEY";

/// The variable holding the VAPID contact (`mailto:` or `https:`).
pub const CONTACT_VAR: &str = "DURACLAW_PUSH_CONTACT";

/// Deliveries sent per wake-up.
const BATCH: i64 = 16;

const MAX_SAFE: i64 = (1 << 53) - 1;

fn int(n: i64) -> JsValue {
    JsValue::from_f64(n.clamp(-MAX_SAFE, MAX_SAFE) as f64)
}

fn text(s: &str) -> JsValue {
    JsValue::from_str(s)
}

fn opt_text(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, text)
}

fn opt_int(n: Option<i64>) -> JsValue {
    n.map_or(JsValue::NULL, int)
}

fn to_i64(x: f64) -> i64 {
    if x.is_finite() {
        x.clamp(-(MAX_SAFE as f64), MAX_SAFE as f64) as i64
    } else {
        0
    }
}

async fn run(db: &D1Database, what: &str, q: &str, params: &[JsValue]) -> Result<usize, String> {
    let r = db
        .prepare(q)
        .bind(params)
        .map_err(|e| format!("D1: cannot bind ({what}): {e}"))?
        .run()
        .await
        .map_err(|e| format!("D1: cannot {what}: {e}"))?;
    Ok(r.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0))
}

async fn all<T: for<'a> Deserialize<'a>>(
    db: &D1Database,
    what: &str,
    q: &str,
    params: &[JsValue],
) -> Result<Vec<T>, String> {
    db.prepare(q)
        .bind(params)
        .map_err(|e| format!("D1: cannot bind ({what}): {e}"))?
        .all()
        .await
        .map_err(|e| format!("D1: cannot {what}: {e}"))?
        .results::<T>()
        .map_err(|e| format!("D1: cannot read ({what}): {e}"))
}

/// The VAPID key from the secret; `None` when it is not set, `Err` when
/// it is set but unusable.
pub(crate) fn vapid_key(env: &Env) -> Result<Option<VapidKey>, String> {
    match env.secret(KEY_SECRET) {
        Err(_) => Ok(None),
        Ok(s) => VapidKey::from_base64url(&s.to_string())
            .map(Some)
            .map_err(|e| format!("{KEY_SECRET}: {e}")),
    }
}

fn random_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom02::getrandom(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(host::new_id(bytes))
}

fn random_u32() -> u32 {
    (Math::random() * f64::from(u32::MAX)) as u32
}

fn internal(e: String) -> worker::Result<Response> {
    tracing::error!(error = %e, "push route failed");
    json_error(500, duraclaw_host::http::INTERNAL_MESSAGE)
}

#[derive(Deserialize)]
struct SubscriptionRow {
    id: String,
    device: String,
    endpoint: String,
    created_at_ms: f64,
    last_success_ms: Option<f64>,
    last_failure_ms: Option<f64>,
    last_failure: Option<String>,
    login_digest: String,
}

impl SubscriptionRow {
    fn view(self, login: &str) -> SubscriptionView {
        SubscriptionView {
            endpoint_origin: host::vapid::origin(&self.endpoint).unwrap_or_default(),
            id: self.id,
            device: self.device,
            created_at_ms: to_i64(self.created_at_ms),
            last_success_ms: self.last_success_ms.map(to_i64),
            last_failure_ms: self.last_failure_ms.map(to_i64),
            last_failure: self.last_failure,
            current: self.login_digest == login,
        }
    }
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

#[derive(Deserialize)]
struct CountRow {
    #[serde(rename = "COUNT(*)")]
    n: f64,
}

#[derive(Deserialize)]
struct SettingsRow {
    settings: String,
}

#[derive(Deserialize)]
struct DeliveryRow {
    id: String,
    subscription_id: String,
    device: String,
    kind: String,
    session_id: String,
    question_id: Option<String>,
    status: String,
    http_status: Option<f64>,
    error: Option<String>,
    attempts: f64,
    created_at_ms: f64,
    updated_at_ms: f64,
}

/// Answers `/api/push/<rest>` for `user`.
pub async fn route(
    req: &mut Request,
    env: &Env,
    user: &AuthUser,
    rest: &[&str],
) -> worker::Result<Response> {
    let key = match vapid_key(env) {
        Ok(Some(k)) => k,
        Ok(None) => return json_error(503, host::NO_KEY),
        Err(e) => {
            tracing::error!(error = %e, "the VAPID key is unusable");
            return json_error(503, host::NO_KEY);
        }
    };
    let db = env.d1("DB")?;
    let method = req.method();
    let result = match (method, rest) {
        (Method::Get, ["key"]) => {
            return Response::from_json(&serde_json::json!({"public_key": key.public_key()}));
        }
        (Method::Get, ["subscriptions"]) => {
            match all::<SubscriptionRow>(
                &db,
                "list subscriptions",
                sql::LIST_SUBSCRIPTIONS,
                &[text(&user.name)],
            )
            .await
            {
                Ok(rows) => {
                    let list: Vec<_> = rows.into_iter().map(|r| r.view(&user.login)).collect();
                    return Response::from_json(&list);
                }
                Err(e) => Err(e),
            }
        }
        (Method::Post, ["subscriptions"]) => {
            let body: serde_json::Value = match crate::router::json_body(req).await? {
                Ok(b) => b,
                Err(refused) => return Ok(refused),
            };
            let sub = match host::read_subscription(body) {
                Ok(s) => s,
                Err(e) => return http_error(&e),
            };
            subscribe(&db, user, sub).await
        }
        (Method::Delete, ["subscriptions", id]) => {
            match run(
                &db,
                "unsubscribe",
                sql::DELETE_SUBSCRIPTION,
                &[text(&user.name), text(id)],
            )
            .await
            {
                Ok(0) => return json_error(404, "no such push subscription"),
                Ok(_) => {
                    if let Err(e) = run(
                        &db,
                        "unsubscribe",
                        sql::ABANDON_DELIVERIES,
                        &[text(id), int(now_ms())],
                    )
                    .await
                    {
                        return internal(e);
                    }
                    return Ok(Response::empty()?.with_status(204));
                }
                Err(e) => Err(e),
            }
        }
        (Method::Get, ["settings"]) => {
            match all::<SettingsRow>(
                &db,
                "read push settings",
                sql::GET_SETTINGS,
                &[text(&user.name)],
            )
            .await
            {
                Ok(rows) => {
                    let s = host::stored_settings(rows.first().map(|r| r.settings.as_str()));
                    return Response::from_json(&s);
                }
                Err(e) => Err(e),
            }
        }
        (Method::Put, ["settings"]) => {
            let body: serde_json::Value = match crate::router::json_body(req).await? {
                Ok(b) => b,
                Err(refused) => return Ok(refused),
            };
            let settings = match host::read_settings(body) {
                Ok(s) => s,
                Err(e) => return http_error(&e),
            };
            let json = serde_json::to_string(&settings)?;
            match run(
                &db,
                "write push settings",
                sql::PUT_SETTINGS,
                &[text(&user.name), text(&json), int(now_ms())],
            )
            .await
            {
                Ok(_) => return Response::from_json(&settings),
                Err(e) => Err(e),
            }
        }
        (Method::Get, ["deliveries"]) => {
            let limit = req
                .url()?
                .query_pairs()
                .find(|(k, _)| k == "limit")
                .map(|(_, v)| v.into_owned());
            let limit = match host::deliveries_limit(limit.as_deref()) {
                Ok(l) => l,
                Err(e) => return http_error(&e),
            };
            match all::<DeliveryRow>(
                &db,
                "list pushes",
                sql::LIST_DELIVERIES,
                &[text(&user.name), int(i64::from(limit))],
            )
            .await
            {
                Ok(rows) => {
                    let list: Vec<DeliveryView> = rows
                        .into_iter()
                        .map(|r| DeliveryView {
                            id: r.id,
                            subscription_id: r.subscription_id,
                            device: r.device,
                            kind: Kind::parse(&r.kind).unwrap_or(Kind::Error),
                            session_id: r.session_id,
                            question_id: r.question_id,
                            status: Status::parse(&r.status).unwrap_or(Status::Failed),
                            http_status: r
                                .http_status
                                .map(|s| u16::try_from(to_i64(s)).unwrap_or(0)),
                            error: r.error,
                            attempts: u32::try_from(to_i64(r.attempts)).unwrap_or(0),
                            created_at_ms: to_i64(r.created_at_ms),
                            updated_at_ms: to_i64(r.updated_at_ms),
                        })
                        .collect();
                    return Response::from_json(&list);
                }
                Err(e) => Err(e),
            }
        }
        (_, ["key" | "settings" | "deliveries" | "subscriptions"] | ["subscriptions", _]) => {
            return json_error(405, "method not allowed");
        }
        _ => return json_error(404, "no such route"),
    };
    match result {
        Ok(r) => Ok(r),
        Err(e) => internal(e),
    }
}

async fn subscribe(
    db: &D1Database,
    user: &AuthUser,
    sub: host::NewSubscription,
) -> Result<Response, String> {
    let existing = all::<IdRow>(
        db,
        "subscribe",
        sql::SUBSCRIPTION_BY_ENDPOINT,
        &[text(&sub.endpoint)],
    )
    .await?;
    let id = match existing.into_iter().next() {
        Some(row) => {
            run(
                db,
                "subscribe",
                sql::UPDATE_SUBSCRIPTION,
                &[
                    text(&row.id),
                    text(&user.name),
                    text(&user.login),
                    text(&sub.p256dh),
                    text(&sub.auth),
                    text(&sub.device),
                ],
            )
            .await?;
            row.id
        }
        None => {
            let count = all::<CountRow>(
                db,
                "subscribe",
                sql::COUNT_SUBSCRIPTIONS,
                &[text(&user.name)],
            )
            .await?;
            let n = count.first().map_or(0, |c| to_i64(c.n));
            if usize::try_from(n).unwrap_or(usize::MAX) >= host::MAX_SUBSCRIPTIONS_PER_USER {
                return json_error(
                    409,
                    &format!(
                        "a user may have at most {} push subscriptions; remove one first",
                        host::MAX_SUBSCRIPTIONS_PER_USER
                    ),
                )
                .map_err(|e| e.to_string());
            }
            let id = random_id()?;
            run(
                db,
                "subscribe",
                sql::INSERT_SUBSCRIPTION,
                &[
                    text(&id),
                    text(&user.name),
                    text(&user.login),
                    text(&sub.endpoint),
                    text(&sub.p256dh),
                    text(&sub.auth),
                    text(&sub.device),
                    int(now_ms()),
                ],
            )
            .await?;
            id
        }
    };
    let row = all::<SubscriptionRow>(
        db,
        "subscribe",
        sql::GET_SUBSCRIPTION,
        &[text(&user.name), text(&id)],
    )
    .await?
    .into_iter()
    .next()
    .ok_or("the new subscription is gone")?;
    Response::from_json(&row.view(&user.login))
        .map(|r| r.with_status(201))
        .map_err(|e| e.to_string())
}

/// What a session object sends its owner's push object.
#[derive(Serialize, Deserialize)]
struct EventsRequest {
    owner: String,
    session_id: String,
    title: String,
    worktree: String,
    events: Vec<(Gseq, Event)>,
}

/// Tells the push object of `meta`'s owner about `events` just persisted
/// (kept from the batch by `duraclaw_host::push::worth_pushing`). A host
/// without the `PUSH` binding sends nothing; a failure is logged.
pub async fn events_persisted(env: &Env, meta: &SessionMeta, events: Vec<(Gseq, Event)>) {
    if events.is_empty() {
        return;
    }
    let Ok(namespace) = env.durable_object(PUSH_BINDING) else {
        return;
    };
    let body = EventsRequest {
        owner: meta.owner.clone(),
        session_id: meta.session_id.clone(),
        title: meta.title.clone(),
        worktree: meta.worktree.clone(),
        events,
    };
    let result = async {
        let stub = namespace
            .id_from_name(&meta.owner.to_lowercase())?
            .get_stub()?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(serde_json::to_string(&body)?.into()));
        let req = Request::new_with_init("https://push/events", &init)?;
        let r = stub.fetch_with_request(req).await?;
        Ok::<_, worker::Error>(r.status_code())
    }
    .await;
    match result {
        Ok(200..=299) => {}
        Ok(status) => {
            tracing::warn!(session = %meta.session_id, status, "the push object refused events")
        }
        Err(e) => {
            tracing::warn!(session = %meta.session_id, error = %e, "cannot tell the push object")
        }
    }
}

#[derive(Deserialize)]
struct TargetRow {
    id: String,
    device: String,
}

#[derive(Deserialize)]
struct DueRow {
    id: String,
    subscription_id: String,
    payload: String,
    kind: String,
    question_id: Option<String>,
    attempts: f64,
    ttl_secs: f64,
    created_at_ms: f64,
}

#[derive(Deserialize)]
struct EndpointRow {
    endpoint: String,
    p256dh: String,
    auth: String,
}

#[derive(Deserialize)]
struct NextRow {
    #[serde(rename = "MIN(next_attempt_ms)")]
    next: Option<f64>,
}

/// A user's push object, minus the `#[durable_object]` glue.
pub struct PushHost {
    state: State,
    env: Env,
}

impl PushHost {
    /// The host of the object with `state` and `env`.
    pub fn new(state: State, env: Env) -> PushHost {
        crate::logging::init();
        PushHost { state, env }
    }

    /// `POST /events` from a session object.
    pub async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        if req.method() != Method::Post || req.path() != "/events" {
            return json_error(404, "no such route");
        }
        let body: EventsRequest = match req.json().await {
            Ok(b) => b,
            Err(e) => return json_error(400, &format!("bad events: {e}")),
        };
        self.state.storage().put("owner", &body.owner).await?;
        if let Err(e) = self.enqueue(&body).await {
            tracing::error!(error = %e, "cannot queue pushes");
            return json_error(500, duraclaw_host::http::INTERNAL_MESSAGE);
        }
        // Sent by the alarm, so the session object does not wait on the
        // push service.
        self.state
            .storage()
            .set_alarm(Duration::from_millis(1))
            .await?;
        Response::ok("queued")
    }

    /// The alarm: sends what is due.
    pub async fn alarm(&self) -> worker::Result<Response> {
        if let Ok(Some(owner)) = self.state.storage().get::<String>("owner").await {
            self.send_due(&owner).await;
        }
        Response::ok("done")
    }

    /// No socket is accepted here: nothing to answer.
    pub async fn websocket_message(
        &self,
        _ws: worker::WebSocket,
        _message: worker::WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        Ok(())
    }

    /// No socket is accepted here: nothing to close.
    pub async fn websocket_close(
        &self,
        _ws: worker::WebSocket,
        _code: usize,
    ) -> worker::Result<()> {
        Ok(())
    }

    async fn enqueue(&self, body: &EventsRequest) -> Result<(), String> {
        let db = self.env.d1("DB").map_err(|e| e.to_string())?;
        let Some(key) = vapid_key(&self.env)? else {
            return Ok(());
        };
        let settings = all::<SettingsRow>(
            &db,
            "read push settings",
            sql::GET_SETTINGS,
            &[text(&body.owner)],
        )
        .await?;
        let settings = host::stored_settings(settings.first().map(|r| r.settings.as_str()));
        let info = SessionInfo {
            session_id: &body.session_id,
            owner: &body.owner,
            title: &body.title,
            worktree: &body.worktree,
        };
        let notices: Vec<_> = body
            .events
            .iter()
            .filter_map(|(g, e)| host::notice(&info, *g, e, &settings))
            .collect();
        if notices.is_empty() {
            return Ok(());
        }
        let targets = all::<TargetRow>(
            &db,
            "read subscriptions",
            sql::TARGETS,
            &[text(&body.owner)],
        )
        .await?;
        let now = now_ms();
        let action_key = key.action_key();
        for notice in &notices {
            for t in &targets {
                let payload = host::payload(notice, &body.owner, &t.device, &action_key, now);
                let payload = serde_json::to_string(&payload).map_err(|e| e.to_string())?;
                run(
                    &db,
                    "queue a push",
                    sql::INSERT_DELIVERY,
                    &[
                        text(&random_id()?),
                        text(&body.owner),
                        text(&t.id),
                        text(&t.device),
                        text(notice.kind.as_str()),
                        text(&notice.session_id),
                        opt_text(notice.question_id.as_deref()),
                        text(&notice.event_key),
                        text(&payload),
                        int(i64::from(notice.ttl_secs())),
                        int(now),
                    ],
                )
                .await?;
            }
        }
        run(
            &db,
            "prune push records",
            sql::PRUNE_DELIVERIES,
            &[text(&body.owner), int(i64::from(host::KEEP_DELIVERIES))],
        )
        .await?;
        Ok(())
    }

    /// Sends `owner`'s due deliveries and sets the alarm for the next.
    async fn send_due(&self, owner: &str) {
        if let Err(e) = self.try_send_due(owner).await {
            tracing::error!(error = %e, "push sender failed; trying again later");
            let _ = self.state.storage().set_alarm(Duration::from_secs(5)).await;
        }
    }

    async fn try_send_due(&self, owner: &str) -> Result<(), String> {
        let db = self.env.d1("DB").map_err(|e| e.to_string())?;
        let Some(key) = vapid_key(&self.env)? else {
            return Ok(());
        };
        let contact = self
            .env
            .var(CONTACT_VAR)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| host::DEFAULT_CONTACT.to_owned());
        let due = all::<DueRow>(
            &db,
            "read due pushes",
            sql::DUE_DELIVERIES_OF,
            &[int(now_ms()), int(BATCH), text(owner)],
        )
        .await?;
        for d in due {
            self.attempt(&db, &key, &contact, d).await?;
        }
        let next =
            all::<NextRow>(&db, "read the next due push", sql::NEXT_DUE, &[text(owner)]).await?;
        if let Some(at) = next.first().and_then(|n| n.next).map(to_i64) {
            let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
            self.state
                .storage()
                .set_alarm(Duration::from_millis(wait.max(1)))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn attempt(
        &self,
        db: &D1Database,
        key: &VapidKey,
        contact: &str,
        d: DueRow,
    ) -> Result<(), String> {
        let now = now_ms();
        let attempts = u32::try_from(to_i64(d.attempts))
            .unwrap_or(0)
            .saturating_add(1);
        let ttl = u32::try_from(to_i64(d.ttl_secs)).unwrap_or(0);
        let created = to_i64(d.created_at_ms);
        let kind = Kind::parse(&d.kind).unwrap_or(Kind::Error);
        let target = all::<EndpointRow>(
            db,
            "read a subscription",
            sql::TARGET,
            &[text(&d.subscription_id)],
        )
        .await?
        .into_iter()
        .next()
        .map(|r| Target {
            endpoint: r.endpoint,
            p256dh: r.p256dh,
            auth: r.auth,
        });
        let next = match &target {
            None => failed_next("the subscription was removed".into()),
            Some(target) => {
                let headers =
                    Headers::for_delivery(kind, d.question_id.as_deref(), ttl, created, now);
                match host::request(key, contact, target, d.payload.as_bytes(), &headers, now) {
                    Err(e) => failed_next(e.to_string()),
                    Ok(req) => {
                        let attempt = post(req).await;
                        host::after_attempt(
                            attempts,
                            created,
                            ttl,
                            &attempt,
                            now_ms(),
                            random_u32(),
                        )
                    }
                }
            }
        };
        next.log(
            &d.id,
            target.as_ref().map(|t| t.endpoint.as_str()),
            attempts,
        );
        let now = now_ms();
        run(
            db,
            "record a push",
            sql::RECORD_ATTEMPT,
            &[
                text(&d.id),
                text(next.status.as_str()),
                opt_int(next.http_status.map(i64::from)),
                opt_text(next.error.as_deref()),
                int(i64::from(attempts)),
                opt_int(next.retry_at_ms),
                int(now),
            ],
        )
        .await?;
        if next.status == Status::Accepted {
            run(
                db,
                "record a push",
                sql::SUBSCRIPTION_SUCCESS,
                &[text(&d.subscription_id), int(now)],
            )
            .await?;
        } else {
            run(
                db,
                "record a push",
                sql::SUBSCRIPTION_FAILURE,
                &[
                    text(&d.subscription_id),
                    int(now),
                    opt_text(next.error.as_deref()),
                ],
            )
            .await?;
        }
        if next.remove_subscription {
            run(
                db,
                "remove a gone subscription",
                sql::REMOVE_GONE,
                &[text(&d.subscription_id)],
            )
            .await?;
            run(
                db,
                "remove a gone subscription",
                sql::ABANDON_DELIVERIES,
                &[text(&d.subscription_id), int(now)],
            )
            .await?;
        }
        Ok(())
    }
}

fn failed_next(why: String) -> host::Next {
    host::Next {
        status: Status::Failed,
        http_status: None,
        error: Some(why),
        retry_at_ms: None,
        remove_subscription: false,
    }
}

/// POSTs a push with `fetch`.
async fn post(req: host::PushRequest) -> Attempt {
    let result = async {
        let headers = worker::Headers::new();
        for (name, value) in &req.headers {
            headers.set(name, value)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(Uint8Array::from(req.body.as_slice()).into()));
        let request = Request::new_with_init(&req.endpoint, &init)?;
        let answer = Fetch::Request(request).send().await?;
        let retry_after = answer.headers().get("retry-after")?;
        Ok::<_, worker::Error>(Attempt::Answered {
            status: answer.status_code(),
            retry_after,
        })
    }
    .await;
    result.unwrap_or_else(|e| Attempt::Unreachable(format!("cannot reach the push service: {e}")))
}
