//! The HTTP server: routing, script bookkeeping, recording, shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use duraclaw_fake_server::{
    FakeServer, event_stream, header, headers_of, json_response, received, status_of,
};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::answer::{Message, Step, error_body};
use crate::schema::minimal_value;
use crate::script::{Block, Turn, Usage};

/// Settings of a [`FakeAnthropic`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Models it does not know: a request naming one gets 404
    /// `not_found_error`, as the real API answers an unknown model.
    pub unknown_models: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body_bytes: 8 * 1024 * 1024,
            unknown_models: Vec::new(),
        }
    }
}

/// How the fake classified a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// Answered from scripted turn `turn` (0-based); `attempt` counts
    /// identical retries from 1.
    Scripted {
        /// The turn's index in the script.
        turn: usize,
        /// 1 for the first request, 2 for its first retry, ...
        attempt: u32,
    },
    /// A side request (no tools, or a JSON-schema output format), answered
    /// with minimal JSON; it consumes no turn.
    Side,
    /// A new request after the script ran out; answered with a short text.
    Exhausted,
    /// Not a valid Messages request (bad JSON, too large, wrong route).
    Rejected {
        /// The status sent.
        status: u16,
    },
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v1/messages`.
    pub path: String,
    /// Query string, e.g. `beta=true`.
    pub query: Option<String>,
    /// Headers with lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
    /// How it was answered.
    pub kind: RequestKind,
}

impl RecordedRequest {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The last message of the request's `messages`.
    pub fn last_message(&self) -> Option<&Value> {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.last())
    }

    /// Every `tool_result` block in the request's messages.
    pub fn tool_results(&self) -> Vec<&Value> {
        let Some(messages) = self.body.get("messages").and_then(Value::as_array) else {
            return Vec::new();
        };
        messages
            .iter()
            .filter_map(|m| m.get("content").and_then(Value::as_array))
            .flatten()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .collect()
    }

    /// Whether this request got a scripted (or exhausted) answer.
    pub fn is_model_turn(&self) -> bool {
        matches!(
            self.kind,
            RequestKind::Scripted { .. } | RequestKind::Exhausted
        )
    }
}

struct Shared {
    state: Mutex<ScriptState>,
    recorded: watch::Sender<usize>,
    shutdown: watch::Receiver<bool>,
    options: Options,
}

struct ScriptState {
    turns: Vec<Turn>,
    next: usize,
    last_key: Option<String>,
    last_turn: Option<usize>,
    attempts: u32,
    serial: u64,
    requests: Vec<RecordedRequest>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ScriptState> {
        // A panic while holding the lock leaves consistent data behind (every
        // update is a plain assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, request: RecordedRequest) {
        let n = {
            let mut st = self.lock();
            st.requests.push(request);
            st.requests.len()
        };
        self.recorded.send_replace(n);
    }
}

/// A running fake Anthropic Messages API on 127.0.0.1.
///
/// Dropping it starts a graceful shutdown: streams in progress end, the
/// listener closes.
#[derive(Debug)]
pub struct FakeAnthropic {
    server: FakeServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl FakeAnthropic {
    /// Starts a fake answering with `script`, turn by turn, on an ephemeral
    /// port of 127.0.0.1.
    pub async fn start(script: impl IntoIterator<Item = Turn>) -> std::io::Result<Self> {
        FakeAnthropic::start_with(script, Options::default()).await
    }

    /// Like [`FakeAnthropic::start`], with settings.
    pub async fn start_with(
        script: impl IntoIterator<Item = Turn>,
        options: Options,
    ) -> std::io::Result<Self> {
        let shutdown = watch::Sender::new(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(ScriptState {
                turns: script.into_iter().collect(),
                next: 0,
                last_key: None,
                last_turn: None,
                attempts: 0,
                serial: 0,
                requests: Vec::new(),
            }),
            recorded: watch::Sender::new(0),
            shutdown: shutdown.subscribe(),
            options,
        });
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .fallback(not_found)
            .with_state(Arc::clone(&shared));
        let server = FakeServer::start_with_stop("anthropic", app, shutdown).await?;
        Ok(FakeAnthropic { server, shared })
    }

    /// `http://127.0.0.1:<port>`, for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests answered from the script (or after it ran out), in order.
    pub fn model_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_model_turn())
            .cloned()
            .collect()
    }

    /// How many scripted turns have been started.
    pub fn turns_served(&self) -> usize {
        let st = self.shared.lock();
        st.next.min(st.turns.len())
    }

    /// Waits until at least `n` requests have been recorded. Wrap it in a
    /// timeout.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut rx = self.shared.recorded.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Shuts down and waits for the server task to end.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    shared.record(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers_of(&headers),
        body: Value::Null,
        kind: RequestKind::Rejected { status: 404 },
    });
    json_response(
        StatusCode::NOT_FOUND,
        &error_body(404, &format!("no route for {method} {}", uri.path())),
    )
}

/// What the fake decided to answer.
enum Plan {
    Error(u16, String),
    Message {
        message: Message,
        turn: Option<Box<Turn>>,
    },
}

/// The identity of a request for retry detection: the number of messages and
/// the last one, normalised. The CLI varies a retry's decorations: cache
/// markers move, and after an HTTP 400 it retries with other
/// `<system-reminder>` blocks (e.g. when it stops deferring tools), so both
/// are left out.
fn retry_key(body: &Value) -> String {
    let messages = body.get("messages").and_then(Value::as_array);
    let len = messages.map_or(0, Vec::len);
    let mut last = messages
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null);
    normalise(&mut last);
    format!("{len}:{last}")
}

fn normalise(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("cache_control");
            map.values_mut().for_each(normalise);
        }
        Value::Array(items) => {
            items.iter_mut().for_each(normalise);
            items.retain(|item| {
                !(item.get("type").and_then(Value::as_str) == Some("text")
                    && item.get("text").and_then(Value::as_str) == Some(""))
            });
        }
        Value::String(s) => {
            let stripped = strip_reminders(s);
            if stripped.len() != s.len() {
                *s = stripped;
            }
        }
        _ => {}
    }
}

/// `s` without its `<system-reminder>…</system-reminder>` sections, trimmed.
fn strip_reminders(s: &str) -> String {
    const OPEN: &str = "<system-reminder>";
    const CLOSE: &str = "</system-reminder>";
    if !s.contains(OPEN) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        match rest[start..].find(CLOSE) {
            Some(end) => rest = &rest[start + end + CLOSE.len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}

/// The JSON schema of a structured-output request, if any.
fn output_schema(body: &Value) -> Option<&Value> {
    let format = body
        .pointer("/output_config/format")
        .or_else(|| body.get("output_format"))?;
    if format.get("type").and_then(Value::as_str) == Some("json_schema") {
        Some(format.get("schema").unwrap_or(&Value::Null))
    } else {
        None
    }
}

fn is_side_request(body: &Value) -> bool {
    let no_tools = body
        .get("tools")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    no_tools || output_schema(body).is_some()
}

impl Shared {
    fn plan(&self, body: &Value) -> (Plan, RequestKind) {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("claude-fake")
            .to_owned();
        if self.options.unknown_models.contains(&model) {
            return (
                Plan::Error(404, format!("model: {model}")),
                RequestKind::Rejected { status: 404 },
            );
        }
        let mut st = self.lock();
        st.serial += 1;
        let serial = st.serial;
        let id = format!("msg_fake_{serial:04}");
        if is_side_request(body) {
            let text = match output_schema(body) {
                Some(schema) => minimal_value(schema).to_string(),
                None => "OK".to_owned(),
            };
            let message = Message {
                id,
                model,
                blocks: vec![Block::Text(text)],
                stop_reason: "end_turn".to_owned(),
                usage: Usage::default(),
                tool_id_prefix: format!("toolu_fake_side_{serial}"),
            };
            return (
                Plan::Message {
                    message,
                    turn: None,
                },
                RequestKind::Side,
            );
        }
        let key = retry_key(body);
        let turn_index = if st.last_key.as_deref() == Some(key.as_str()) {
            st.attempts += 1;
            st.last_turn.unwrap_or(st.next)
        } else {
            let t = st.next;
            st.next += 1;
            st.last_key = Some(key);
            st.last_turn = Some(t);
            st.attempts = 1;
            t
        };
        let attempt = st.attempts;
        let Some(turn) = st.turns.get(turn_index).cloned() else {
            let message = Message {
                id,
                model,
                blocks: vec![Block::Text(
                    "(fake-anthropic: the script has no more turns)".to_owned(),
                )],
                stop_reason: "end_turn".to_owned(),
                usage: Usage::default(),
                tool_id_prefix: format!("toolu_fake_x{serial}"),
            };
            return (
                Plan::Message {
                    message,
                    turn: None,
                },
                RequestKind::Exhausted,
            );
        };
        let kind = RequestKind::Scripted {
            turn: turn_index,
            attempt,
        };
        if let Some(err) = &turn.error {
            return (Plan::Error(err.status, err.message.clone()), kind);
        }
        if attempt <= turn.fail_first {
            return (
                Plan::Error(
                    turn.fail_status,
                    format!("scripted failure {attempt} of {}", turn.fail_first),
                ),
                kind,
            );
        }
        let message = Message {
            id,
            model,
            blocks: turn.blocks.clone(),
            stop_reason: turn.effective_stop_reason(),
            usage: turn.usage,
            tool_id_prefix: format!("toolu_fake_{turn_index}"),
        };
        (
            Plan::Message {
                message,
                turn: Some(Box::new(turn)),
            },
            kind,
        )
    }
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut record = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers_of(&headers),
        body: Value::Null,
        kind: RequestKind::Rejected { status: 400 },
    };
    let bytes: Bytes = match axum::body::to_bytes(body, shared.options.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            record.kind = RequestKind::Rejected { status: 413 };
            shared.record(record);
            let msg = format!(
                "request body larger than {} bytes",
                shared.options.max_body_bytes
            );
            return json_response(StatusCode::PAYLOAD_TOO_LARGE, &error_body(413, &msg));
        }
    };
    let parsed: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            shared.record(record);
            return json_response(
                StatusCode::BAD_REQUEST,
                &error_body(400, "the body must be a JSON object"),
            );
        }
        Err(e) => {
            shared.record(record);
            return json_response(
                StatusCode::BAD_REQUEST,
                &error_body(400, &format!("invalid JSON: {e}")),
            );
        }
    };
    let stream = parsed.get("stream").and_then(Value::as_bool) == Some(true);
    let (plan, kind) = shared.plan(&parsed);
    record.body = parsed;
    record.kind = kind;
    shared.record(record);
    match plan {
        Plan::Error(status, message) => {
            json_response(status_of(status), &error_body(status, &message))
        }
        Plan::Message { message, turn } if stream => {
            let (chunk_chars, delay, hold) = match &turn {
                Some(t) => (t.chunk_chars, t.delta_delay, t.hold.as_ref()),
                None => (8, None, None),
            };
            let steps = message.to_steps(chunk_chars, delay, hold);
            sse_response(steps, shared.shutdown.clone())
        }
        Plan::Message { message, .. } => json_response(StatusCode::OK, &message.to_json()),
    }
}

fn sse_response(steps: Vec<Step>, mut shutdown: watch::Receiver<bool>) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for step in steps {
            match step {
                Step::Send(bytes) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                }
                Step::Delay(d) => {
                    tokio::select! {
                        () = tokio::time::sleep(d) => {}
                        () = tx.closed() => return,
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
                Step::Hold(latch) => {
                    latch.mark_reached();
                    tokio::select! {
                        () = latch.released() => {}
                        () = tx.closed() => return,
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    });
    event_stream(received(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_key_ignores_reminders() {
        let a = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nA\n</system-reminder>\n"},
            {"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}}]}]});
        let b = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nA\n</system-reminder>"},
            {"type": "text", "text": "<system-reminder>\nB\n</system-reminder>\n"},
            {"type": "text", "text": "again"}]}]});
        assert_eq!(retry_key(&a), retry_key(&b));
        let c = json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "is_error": true,
             "content": "no\n\n<system-reminder>\nX\n</system-reminder>"}]}]});
        let d = json!({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "is_error": true, "content": "no"}]}]});
        assert_eq!(retry_key(&c), retry_key(&d));
        assert_eq!(strip_reminders("a<system-reminder>x"), "a");
        assert_eq!(strip_reminders("plain  "), "plain  ");
    }

    #[test]
    fn retry_key_ignores_cache_control() {
        let a = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]});
        let b = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"}]}]});
        assert_eq!(retry_key(&a), retry_key(&b));
        let c = json!({"messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "content": "y"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
        assert_ne!(retry_key(&b), retry_key(&c));
    }

    #[test]
    fn side_requests() {
        assert!(is_side_request(&json!({"messages": []})));
        assert!(is_side_request(&json!({"tools": [], "messages": []})));
        assert!(is_side_request(&json!({
            "tools": [{"name": "Read"}],
            "output_config": {"format": {"type": "json_schema", "schema": {}}}
        })));
        assert!(!is_side_request(&json!({"tools": [{"name": "Read"}]})));
    }
}
