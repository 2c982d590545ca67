//! Web Push, the part both hosts share, sans-IO (see `docs/notifications.md`).
//!
//! - [`Settings`]: what a user is told about (`/api/push/settings`);
//! - [`read_subscription`]: a browser's `PushSubscription` checked;
//! - [`notice`]: which persisted session event is worth a push, and its
//!   title and body ([`text`] keeps hostile strings out of them);
//! - [`Payload`]: the JSON a service worker gets, per device (with the
//!   action tokens of a permission question, [`action`]);
//! - [`request`]: the encrypted (RFC 8291, aes128gcm) and signed (RFC 8292,
//!   [`vapid`]) HTTP request to the push service;
//! - [`classify`] and [`after_attempt`]: what the push service's answer
//!   means and what the delivery record becomes (retry with backoff within
//!   the TTL, remove a gone subscription, give up);
//! - [`sql`]: the statements both hosts run on the tables of migration 3.

pub mod action;
pub mod sql;
pub mod text;
pub mod vapid;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use duraclaw_core::protocol::{Decision, Event, QuestionKind};
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::http::HttpError;
pub use vapid::VapidKey;

/// The `sub` claim of the VAPID JWT when the operator gave no contact.
pub const DEFAULT_CONTACT: &str = "mailto:push@duraclaw.invalid";

/// How long the push service keeps a question's push (and its `resolved`)
/// for an offline device, and how long its action tokens live: 12 hours.
pub const QUESTION_TTL_SECS: u32 = 12 * 60 * 60;

/// How long it keeps a finished turn's or an error's push: 1 hour.
pub const STATUS_TTL_SECS: u32 = 60 * 60;

/// The most attempts of one delivery.
pub const MAX_ATTEMPTS: u32 = 6;

/// The first retry's delay (before jitter; doubled each time).
pub const FIRST_RETRY_MS: u64 = 1_000;

/// The longest wait between attempts (before jitter).
pub const MAX_RETRY_MS: u64 = 5 * 60 * 1000;

/// The most subscriptions one user may have.
pub const MAX_SUBSCRIPTIONS_PER_USER: usize = 20;

/// The longest endpoint URL taken.
pub const MAX_ENDPOINT_BYTES: usize = 2048;

/// Delivery records kept per user (older ones are deleted).
pub const KEEP_DELIVERIES: u32 = 500;

/// The `limit` of `GET /api/push/deliveries` when none is given, and the
/// most it takes.
pub const DEFAULT_DELIVERIES: u32 = 50;
/// See [`DEFAULT_DELIVERIES`].
pub const MAX_DELIVERIES: u32 = 200;

/// The answer of every push route of a host that turned push off.
pub const OFF: &str = "push notifications are turned off on this server";

/// The message of a push route on a host with no VAPID key.
pub const NO_KEY: &str = "push notifications are not set up on this server: it has no VAPID key \
                          (on Cloudflare, set the secret DURACLAW_VAPID_PRIVATE_KEY)";

/// How much of a tool's input a notification shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preview {
    /// The tool's name only.
    Tool,
    /// The tool's name and a short, cleaned preview of its input.
    Short,
}

/// What a user is told about: `GET`/`PUT /api/push/settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// An approval or question waits.
    pub on_question: bool,
    /// A turn finished.
    pub on_turn_finished: bool,
    /// A session failed.
    pub on_error: bool,
    /// How much of a tool's input is shown.
    pub preview: Preview,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            on_question: true,
            on_turn_finished: false,
            on_error: true,
            preview: Preview::Tool,
        }
    }
}

/// A `PUT /api/push/settings` body: every field, nothing else.
pub fn read_settings(body: serde_json::Value) -> Result<Settings, HttpError> {
    serde_json::from_value(body).map_err(|e| {
        HttpError::new(
            400,
            format!(
                "push settings must be {{\"on_question\":bool,\"on_turn_finished\":bool,\
                 \"on_error\":bool,\"preview\":\"tool\"|\"short\"}}: {e}"
            ),
        )
    })
}

/// Stored settings (JSON text), or the defaults for none or an unreadable
/// row.
pub fn stored_settings(text: Option<&str>) -> Settings {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// A checked `POST /api/push/subscriptions` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// The push service's URL for this browser (https).
    pub endpoint: String,
    /// The browser's P-256 public key, base64url (65-byte point).
    pub p256dh: String,
    /// The browser's authentication secret, base64url (16 bytes).
    pub auth: String,
    /// The device's name as the user gave it, cleaned.
    pub device: String,
}

#[derive(Deserialize)]
struct SubscriptionBody {
    endpoint: String,
    keys: SubscriptionKeys,
    #[serde(default)]
    device: Option<String>,
}

#[derive(Deserialize)]
struct SubscriptionKeys {
    p256dh: String,
    auth: String,
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(400, message)
}

/// Checks a browser's subscription: `{"endpoint","keys":{"p256dh","auth"},"device"}`
/// (other fields of `PushSubscription.toJSON()` are ignored).
pub fn read_subscription(body: serde_json::Value) -> Result<NewSubscription, HttpError> {
    let body: SubscriptionBody = serde_json::from_value(body).map_err(|e| {
        bad(format!(
            "a subscription is {{\"endpoint\",\"keys\":{{\"p256dh\",\"auth\"}},\"device\"}}: {e}"
        ))
    })?;
    let endpoint = body.endpoint;
    if endpoint.len() > MAX_ENDPOINT_BYTES
        || endpoint
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        || vapid::origin(&endpoint).is_none()
    {
        return Err(bad(format!(
            "the endpoint must be an https URL of at most {MAX_ENDPOINT_BYTES} bytes"
        )));
    }
    let p256dh = decode_key(&body.keys.p256dh)
        .filter(|b| p256::PublicKey::from_sec1_bytes(b).is_ok() && b.len() == 65)
        .ok_or_else(|| bad("keys.p256dh must be a P-256 public key (65 bytes, base64url)"))?;
    let auth = decode_key(&body.keys.auth)
        .filter(|b| b.len() == 16)
        .ok_or_else(|| bad("keys.auth must be 16 bytes, base64url"))?;
    let device = text::clean(body.device.as_deref().unwrap_or(""), 64);
    Ok(NewSubscription {
        endpoint,
        p256dh: B64.encode(p256dh),
        auth: B64.encode(auth),
        device: if device.is_empty() {
            "browser".into()
        } else {
            device
        },
    })
}

fn decode_key(text: &str) -> Option<Vec<u8>> {
    if text.len() > 200 {
        return None;
    }
    B64.decode(text.trim_end_matches('=')).ok()
}

/// The `limit` of `GET /api/push/deliveries`.
pub fn deliveries_limit(limit: Option<&str>) -> Result<u32, HttpError> {
    match limit {
        None => Ok(DEFAULT_DELIVERIES),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n.min(MAX_DELIVERIES)),
            _ => Err(bad(format!(
                "limit must be a whole number from 1 to {MAX_DELIVERIES}"
            ))),
        },
    }
}

/// What a push is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An approval or a question waits.
    Question,
    /// That question was decided: replaces its notification.
    Resolved,
    /// A turn finished.
    TurnFinished,
    /// The session failed.
    Error,
}

impl Kind {
    /// The kind of a wire name.
    pub fn parse(name: &str) -> Option<Kind> {
        [
            Kind::Question,
            Kind::Resolved,
            Kind::TurnFinished,
            Kind::Error,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }

    /// RFC 8030 `Urgency`: a waiting agent or a failure wakes the device.
    pub fn urgency(self) -> &'static str {
        match self {
            Kind::Question | Kind::Error => "high",
            Kind::Resolved | Kind::TurnFinished => "normal",
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Question => "question",
            Kind::Resolved => "resolved",
            Kind::TurnFinished => "turn_finished",
            Kind::Error => "error",
        }
    }
}

/// The session an event belongs to, as a notification names it.
#[derive(Debug, Clone, Copy)]
pub struct SessionInfo<'a> {
    /// Its id.
    pub session_id: &'a str,
    /// Its owner, who is told.
    pub owner: &'a str,
    /// Its title (may be empty).
    pub title: &'a str,
    /// Its worktree.
    pub worktree: &'a str,
}

impl SessionInfo<'_> {
    fn label(&self) -> String {
        let name = if self.title.trim().is_empty() {
            self.worktree
        } else {
            self.title
        };
        text::clean(name, 60)
    }
}

/// One event worth a push, for every device of the session's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it is about.
    pub kind: Kind,
    /// The session.
    pub session_id: String,
    /// The question, for `question` and `resolved`.
    pub question_id: Option<String>,
    /// The event it comes from, unique in the session (its log position):
    /// a delivery is made once per device and key.
    pub event_key: String,
    /// Cleaned and bounded.
    pub title: String,
    /// Cleaned and bounded.
    pub body: String,
    /// A permission question: the push carries Approve and Deny.
    pub permission: bool,
}

impl Notice {
    /// The notification's tag: one per question, else one per session.
    pub fn tag(&self) -> String {
        match &self.question_id {
            Some(q) => format!("q:{q}"),
            None => format!("s:{}", self.session_id),
        }
    }

    /// How long the push service keeps it for an offline device.
    pub fn ttl_secs(&self) -> u32 {
        match self.kind {
            Kind::Question | Kind::Resolved => QUESTION_TTL_SECS,
            Kind::TurnFinished | Kind::Error => STATUS_TTL_SECS,
        }
    }

    /// RFC 8030 `Urgency` ([`Kind::urgency`]).
    pub fn urgency(&self) -> &'static str {
        self.kind.urgency()
    }

    /// RFC 8030 `Topic` ([`topic`]).
    pub fn topic(&self) -> Option<String> {
        topic(self.question_id.as_deref())
    }
}

/// RFC 8030 `Topic` of a push about `question_id`: its `resolved` push
/// replaces the question's push still queued at the push service; none
/// for pushes about no question.
pub fn topic(question_id: Option<&str>) -> Option<String> {
    let q = question_id?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(q.as_bytes());
    Some(B64.encode(&digest[..24]))
}

/// The push an event of `session` calls for under `settings`, if any.
/// `key` is the event's position in the session's log.
pub fn notice(
    session: &SessionInfo<'_>,
    key: u64,
    event: &Event,
    settings: &Settings,
) -> Option<Notice> {
    let label = session.label();
    let at = |body: String| {
        if label.is_empty() {
            body
        } else {
            format!("{label}: {body}")
        }
    };
    let (kind, question_id, title, body, permission) = match event {
        Event::UserQuestion(q) if settings.on_question => match &q.kind {
            QuestionKind::Permission {
                tool_name, input, ..
            } => {
                let tool = text::clean(tool_name, 40);
                let body = match settings.preview {
                    Preview::Tool => at(format!("{tool} waits for your approval")),
                    Preview::Short => at(format!("{tool}: {}", text::input_preview(input))),
                };
                (
                    Kind::Question,
                    Some(q.question_id.clone()),
                    format!("Approve {tool}?"),
                    body,
                    true,
                )
            }
            other => {
                let first = match other {
                    QuestionKind::AskUser { questions } => questions.first(),
                    _ => None,
                };
                let body = match (settings.preview, first) {
                    (Preview::Short, Some(first)) => {
                        at(text::clean(&first.question, text::MAX_PREVIEW_CHARS))
                    }
                    _ => at("the agent asks you a question".into()),
                };
                (
                    Kind::Question,
                    Some(q.question_id.clone()),
                    "The agent asks you".into(),
                    body,
                    false,
                )
            }
        },
        Event::QuestionResolved(r) if settings.on_question => {
            let verb = match r.decision {
                Decision::Allow { .. } => "Approved",
                Decision::Deny { .. } => "Denied",
                _ => "Answered",
            };
            let who = text::clean(&r.by.who, 40);
            (
                Kind::Resolved,
                Some(r.question_id.clone()),
                format!("{verb} by {who}"),
                at("decided".into()),
                false,
            )
        }
        Event::Result(r) if settings.on_turn_finished => {
            let how = if r.is_error {
                "the turn ended with an error"
            } else {
                "the turn finished"
            };
            (
                Kind::TurnFinished,
                None,
                "Turn finished".into(),
                at(how.into()),
                false,
            )
        }
        Event::Error(e) if settings.on_error => {
            let what = match (settings.preview, e.code.as_deref()) {
                (Preview::Short, _) => text::clean(&e.message, text::MAX_PREVIEW_CHARS),
                (Preview::Tool, Some(code)) => text::clean(code, 40),
                (Preview::Tool, None) => "the session failed".into(),
            };
            (Kind::Error, None, "Session error".into(), at(what), false)
        }
        _ => return None,
    };
    Some(Notice {
        kind,
        session_id: session.session_id.to_owned(),
        question_id,
        event_key: format!("{}:{key}", session.session_id),
        title: text::clean(&title, text::MAX_TITLE_CHARS),
        body: text::clean(&body, text::MAX_BODY_CHARS),
        permission,
    })
}

/// A notification's button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadAction {
    /// `approve` or `deny`.
    pub action: String,
    /// Its label.
    pub title: String,
    /// The action token `POST /api/push/act` takes.
    pub token: String,
}

/// What the service worker gets (the push's plaintext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The payload's version: 1.
    pub v: u8,
    /// What it is about.
    pub kind: Kind,
    /// The notification's tag (`q:<question_id>` or `s:<session_id>`).
    pub tag: String,
    /// The title.
    pub title: String,
    /// The body.
    pub body: String,
    /// The session.
    pub session_id: String,
    /// The question, if it is about one.
    pub question_id: Option<String>,
    /// Where a tap opens the UI.
    pub url: String,
    /// Approve and Deny, for a permission question.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<PayloadAction>,
}

/// The payload of `notice` for `user`'s `device`; a permission question's
/// carries an action token per decision, signed with `action_key`, valid
/// for [`QUESTION_TTL_SECS`].
pub fn payload(
    notice: &Notice,
    user: &str,
    device: &str,
    action_key: &[u8],
    now_ms: i64,
) -> Payload {
    let url = match &notice.question_id {
        Some(q) => format!("/#/s/{}?q={q}", notice.session_id),
        None => format!("/#/s/{}", notice.session_id),
    };
    let mut actions = Vec::new();
    if let (true, Kind::Question, Some(q)) = (notice.permission, notice.kind, &notice.question_id) {
        let expires_at_ms =
            u64::try_from(now_ms).unwrap_or(0) + u64::from(QUESTION_TTL_SECS) * 1000;
        for (decision, action, title) in [
            (action::ActionDecision::Approve, "approve", "Approve"),
            (action::ActionDecision::Deny, "deny", "Deny"),
        ] {
            let claim = action::ActionClaim {
                user: user.to_owned(),
                session_id: notice.session_id.clone(),
                question_id: q.clone(),
                decision,
                device: device.to_owned(),
                expires_at_ms,
            };
            actions.push(PayloadAction {
                action: action.into(),
                title: title.into(),
                token: action::mint(action_key, &claim),
            });
        }
    }
    Payload {
        v: 1,
        kind: notice.kind,
        tag: notice.tag(),
        title: notice.title.clone(),
        body: notice.body.clone(),
        session_id: notice.session_id.clone(),
        question_id: notice.question_id.clone(),
        url,
        actions,
    }
}

/// A subscription as a sender needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The push service's URL.
    pub endpoint: String,
    /// The browser's public key, base64url.
    pub p256dh: String,
    /// The browser's auth secret, base64url.
    pub auth: String,
}

/// One push as an HTTP request: `POST endpoint` with these headers and
/// the encrypted body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The URL.
    pub endpoint: String,
    /// Header names and values (`Authorization` holds the VAPID JWT).
    pub headers: Vec<(&'static str, String)>,
    /// The aes128gcm body.
    pub body: Vec<u8>,
}

/// Why a push cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError(pub String);

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RequestError {}

/// Delivery metadata of one push: how long the push service keeps it, how
/// urgent it is, and its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// `TTL`, seconds.
    pub ttl_secs: u32,
    /// `Urgency`.
    pub urgency: &'static str,
    /// `Topic`.
    pub topic: Option<String>,
}

impl From<&Notice> for Headers {
    fn from(n: &Notice) -> Self {
        Headers {
            ttl_secs: n.ttl_secs(),
            urgency: n.urgency(),
            topic: n.topic(),
        }
    }
}

impl Headers {
    /// The headers of a stored delivery's next attempt at `now_ms`: the
    /// TTL is what is left of it (at least 1 s).
    pub fn for_delivery(
        kind: Kind,
        question_id: Option<&str>,
        ttl_secs: u32,
        created_at_ms: i64,
        now_ms: i64,
    ) -> Headers {
        let spent =
            u32::try_from(now_ms.saturating_sub(created_at_ms).max(0) / 1000).unwrap_or(u32::MAX);
        Headers {
            ttl_secs: ttl_secs.saturating_sub(spent).max(1),
            urgency: kind.urgency(),
            topic: topic(question_id),
        }
    }
}

/// The events of a gateway batch a push may be about (questions, their
/// resolutions, turn ends, errors), with their gseq: what a host keeps
/// of a batch before it is ingested, to hand to its push sender after.
pub fn worth_pushing<'a>(
    batch: impl IntoIterator<Item = (u64, Option<&'a Event>)>,
) -> Vec<(u64, Event)> {
    batch
        .into_iter()
        .filter_map(|(gseq, e)| match e {
            Some(
                e @ (Event::UserQuestion(_)
                | Event::QuestionResolved(_)
                | Event::Result(_)
                | Event::Error(_)),
            ) => Some((gseq, e.clone())),
            _ => None,
        })
        .collect()
}

/// The request that pushes `plaintext` to `target`, encrypted for it
/// (RFC 8291, by web-push-native) and signed with `key` (RFC 8292).
pub fn request(
    key: &VapidKey,
    contact: &str,
    target: &Target,
    plaintext: &[u8],
    headers: &Headers,
    now_ms: i64,
) -> Result<PushRequest, RequestError> {
    let ua_public = decode_key(&target.p256dh)
        .and_then(|b| p256::PublicKey::from_sec1_bytes(&b).ok())
        .ok_or_else(|| RequestError("the subscription's p256dh key is not usable".into()))?;
    let auth = decode_key(&target.auth)
        .filter(|b| b.len() == 16)
        .ok_or_else(|| RequestError("the subscription's auth secret is not usable".into()))?;
    let auth = web_push_native::Auth::clone_from_slice(&auth);
    let body = web_push_native::encrypt(plaintext.to_vec(), &ua_public, &auth)
        .map_err(|e| RequestError(format!("cannot encrypt the push: {e}")))?;
    let authorization = key
        .authorization(&target.endpoint, contact, now_ms)
        .map_err(|e| RequestError(e.to_string()))?;
    let mut out = vec![
        ("authorization", authorization),
        ("ttl", headers.ttl_secs.to_string()),
        ("urgency", headers.urgency.to_owned()),
        ("content-encoding", "aes128gcm".to_owned()),
        ("content-type", "application/octet-stream".to_owned()),
    ];
    if let Some(topic) = &headers.topic {
        out.push(("topic", topic.clone()));
    }
    Ok(PushRequest {
        endpoint: target.endpoint.clone(),
        headers: out,
        body,
    })
}

/// A delivery record's state (`status` at `/api/push/deliveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Made, its first attempt not answered yet.
    Sending,
    /// The push service took it (201/202).
    Accepted,
    /// An attempt failed in a way worth retrying; another is due.
    Retrying,
    /// Given up: refused, out of attempts, or past its TTL.
    Failed,
    /// The push service said the subscription is gone (404/410): removed.
    Removed,
}

impl Status {
    /// The status of a wire name.
    pub fn parse(name: &str) -> Option<Status> {
        [
            Status::Sending,
            Status::Accepted,
            Status::Retrying,
            Status::Failed,
            Status::Removed,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sending => "sending",
            Status::Accepted => "accepted",
            Status::Retrying => "retrying",
            Status::Failed => "failed",
            Status::Removed => "removed",
        }
    }

    /// No more attempts follow.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Accepted | Status::Failed | Status::Removed)
    }
}

/// What one attempt ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The push service answered this status, with this `Retry-After`.
    Answered {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<String>,
    },
    /// No answer: the connection or TLS failed (the reason, no secret).
    Unreachable(String),
}

/// What an answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201/202 (and any other 2xx): taken.
    Accepted,
    /// 404/410: the subscription expired or was unsubscribed.
    Gone,
    /// 429, 5xx or no answer: try again, not before this many ms if the
    /// push service said.
    Retry(Option<u64>),
    /// Any other 4xx: the request was refused (a bad key, too large, …).
    Refused,
}

/// What `attempt` means.
pub fn classify(attempt: &Attempt) -> Outcome {
    match attempt {
        Attempt::Unreachable(_) => Outcome::Retry(None),
        Attempt::Answered {
            status,
            retry_after,
        } => match status {
            200..=299 => Outcome::Accepted,
            404 | 410 => Outcome::Gone,
            429 | 500..=599 => Outcome::Retry(
                retry_after
                    .as_deref()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|secs| secs.saturating_mul(1000)),
            ),
            _ => Outcome::Refused,
        },
    }
}

/// A delivery record after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// Its new state.
    pub status: Status,
    /// The answer's status, if there was one.
    pub http_status: Option<u16>,
    /// Why it did not go through, if it did not.
    pub error: Option<String>,
    /// When the next attempt is due (for `retrying`).
    pub retry_at_ms: Option<i64>,
    /// Remove the subscription.
    pub remove_subscription: bool,
}

impl Next {
    /// Logs this outcome of attempt `attempts` of delivery `id` to
    /// `endpoint` (only its origin: the rest of an endpoint is a capability).
    pub fn log(&self, id: &str, endpoint: Option<&str>, attempts: u32) {
        let origin = endpoint.and_then(vapid::origin).unwrap_or_default();
        tracing::info!(
            delivery = %id,
            push_service = %origin,
            attempt = attempts,
            status = self.status.as_str(),
            http_status = self.http_status,
            error = self.error.as_deref(),
            "push attempt"
        );
    }
}

/// What a delivery made at `created_at_ms` with this `ttl_secs` becomes
/// after its `attempts`th attempt ended with `attempt` at `now_ms`:
/// retries back off as [`Backoff`] does from [`FIRST_RETRY_MS`] (the
/// caller's `random` jitters them), never sooner than the push service's
/// `Retry-After`, and stop after [`MAX_ATTEMPTS`] or once the next would
/// fall past the TTL.
pub fn after_attempt(
    attempts: u32,
    created_at_ms: i64,
    ttl_secs: u32,
    attempt: &Attempt,
    now_ms: i64,
    random: u32,
) -> Next {
    let http_status = match attempt {
        Attempt::Answered { status, .. } => Some(*status),
        Attempt::Unreachable(_) => None,
    };
    let answered = |what: &str| match attempt {
        Attempt::Answered { status, .. } => format!("{what}: the push service answered {status}"),
        Attempt::Unreachable(why) => format!("{what}: {why}"),
    };
    let done = |status: Status, error: Option<String>, remove: bool| Next {
        status,
        http_status,
        error,
        retry_at_ms: None,
        remove_subscription: remove,
    };
    match classify(attempt) {
        Outcome::Accepted => done(Status::Accepted, None, false),
        Outcome::Gone => done(
            Status::Removed,
            Some(answered("the subscription is gone")),
            true,
        ),
        Outcome::Refused => done(Status::Failed, Some(answered("refused")), false),
        Outcome::Retry(wait) => {
            let mut backoff = Backoff::new(
                std::time::Duration::from_millis(FIRST_RETRY_MS),
                std::time::Duration::from_millis(MAX_RETRY_MS),
            );
            let mut delay = std::time::Duration::ZERO;
            for _ in 0..attempts.max(1) {
                delay = backoff.failed(random).delay;
            }
            let delay_ms = u64::try_from(delay.as_millis())
                .unwrap_or(u64::MAX)
                .max(wait.unwrap_or(0));
            let retry_at_ms = now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX));
            let expires_at_ms = created_at_ms + i64::from(ttl_secs) * 1000;
            if attempts >= MAX_ATTEMPTS {
                let why = answered(&format!("gave up after {attempts} attempts"));
                done(Status::Failed, Some(why), false)
            } else if retry_at_ms > expires_at_ms {
                let why = answered("gave up: the next attempt would fall past the TTL");
                done(Status::Failed, Some(why), false)
            } else {
                Next {
                    status: Status::Retrying,
                    http_status,
                    error: Some(answered("will retry")),
                    retry_at_ms: Some(retry_at_ms),
                    remove_subscription: false,
                }
            }
        }
    }
}

/// A subscription as `GET /api/push/subscriptions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionView {
    /// Its id.
    pub id: String,
    /// The device name.
    pub device: String,
    /// The push service's origin (the full endpoint is a capability).
    pub endpoint_origin: String,
    /// When it was made.
    pub created_at_ms: i64,
    /// The last accepted push.
    pub last_success_ms: Option<i64>,
    /// The last failed attempt.
    pub last_failure_ms: Option<i64>,
    /// Why it failed.
    pub last_failure: Option<String>,
    /// Made by the login this request comes with.
    pub current: bool,
}

/// A delivery as `GET /api/push/deliveries` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    /// Its id.
    pub id: String,
    /// The subscription it went to (kept after that is removed).
    pub subscription_id: String,
    /// Its device name.
    pub device: String,
    /// What it is about.
    pub kind: Kind,
    /// The session.
    pub session_id: String,
    /// The question, if any.
    pub question_id: Option<String>,
    /// Its state.
    pub status: Status,
    /// The last answer's status.
    pub http_status: Option<u16>,
    /// Why it did not go through.
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// When it was made.
    pub created_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
}

/// A new random id (subscriptions, deliveries): 128 bits, base64url.
pub fn new_id(random: [u8; 16]) -> String {
    B64.encode(random)
}

#[cfg(test)]
mod tests;
