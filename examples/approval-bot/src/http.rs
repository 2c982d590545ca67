//! Decisions over HTTP on 127.0.0.1: `GET /pending`, `POST /decide/<id>`.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::protocol::DecidedBy;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::decide::{Reply, Verdict, apply};
use crate::output::say;

/// Longest `by` name accepted, in characters.
const MAX_BY_CHARS: usize = 64;

/// Serves until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, gate: DynApprovalGate) {
    let app = Router::new()
        .route("/pending", get(pending))
        .route("/decide/{id}", post(decide))
        .with_state(gate);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        say(format!("REPLY the HTTP server stopped: {e}"));
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

async fn pending(State(gate): State<DynApprovalGate>) -> Response {
    match gate.pending().await {
        Ok(list) => {
            let items: Vec<Value> = list
                .iter()
                .map(|r| {
                    let mut item = json!({
                        "id": r.question.question_id,
                        "kind": r.question.kind.name(),
                        "asked_at_ms": r.asked_at_ms,
                    });
                    if let duraclaw_core::protocol::QuestionKind::Permission {
                        tool_name,
                        input,
                        description,
                    } = &r.question.kind
                    {
                        item["tool"] = json!(tool_name);
                        item["input"] = input.clone();
                        item["description"] = json!(description);
                    }
                    item
                })
                .collect();
            json_response(StatusCode::OK, &Value::Array(items))
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot list pending requests: {e}"),
        ),
    }
}

/// `{"decision":"allow"}` or `{"decision":"deny","reason":"…"}`, with an
/// optional `"by"` naming who decides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    decision: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

async fn decide(
    State(gate): State<DynApprovalGate>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body: DecideBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be {{\"decision\":\"allow\"}} or \
                     {{\"decision\":\"deny\",\"reason\":\"...\"}}: {e}"
                ),
            );
        }
    };
    let verdict = match body.decision.as_str() {
        "allow" => Verdict::Allow,
        "deny" => Verdict::Deny(body.reason.unwrap_or_default()),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("decision {other:?} is neither \"allow\" nor \"deny\""),
            );
        }
    };
    let who = body.by.unwrap_or_else(|| "http".to_owned());
    if who.trim().is_empty() || who.chars().count() > MAX_BY_CHARS || who.contains(char::is_control)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("\"by\" must be a name of 1 to {MAX_BY_CHARS} printable characters"),
        );
    }
    let by = DecidedBy {
        who,
        client: Some(format!("http {peer}")),
    };
    let reply = apply(&gate, &id, verdict, by).await;
    let line = reply.describe(&id);
    match reply {
        Reply::Decided => json_response(StatusCode::OK, &json!({ "outcome": "decided", "id": id })),
        Reply::AlreadyDecided(outcome) => json_response(
            StatusCode::CONFLICT,
            &serde_json::to_value(&outcome).unwrap_or_else(|_| json!({ "error": line })),
        ),
        Reply::Unknown => error(StatusCode::NOT_FOUND, line),
        Reply::Failed(_) => error(StatusCode::INTERNAL_SERVER_ERROR, line),
    }
}
