//! The HTTP server: routing, the script, recording, and the events of a
//! streaming response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use duraclaw_fake_server::{
    Script, ScriptedServer, event_stream, header, headers_of, json_response, pieces, received,
    status_of,
};
use serde_json::{Value, json};

/// What a request after the end of the script is answered.
pub const EXHAUSTED_TEXT: &str = "(the fake OpenAI API has no more scripted turns)";

/// One assistant turn: what one model request is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// Text, streamed as `chunks` deltas `delay` apart.
    Text {
        /// The whole text.
        text: String,
        /// How many deltas (at least 1).
        chunks: usize,
        /// The pause before each delta after the first.
        delay: Duration,
    },
    /// A call of function tool `name` with `arguments` (a JSON object,
    /// sent as its text, as the API does).
    FunctionCall {
        /// The tool's name, e.g. `shell`.
        name: String,
        /// Its arguments.
        arguments: Value,
        /// The call's id, which the tool's output names.
        call_id: String,
    },
    /// A reasoning summary (one delta), then text (one delta): two output
    /// items.
    Reasoned {
        /// The reasoning summary's text.
        summary: String,
        /// The message's text.
        text: String,
    },
    /// An HTTP error with an OpenAI-style JSON body.
    Error {
        /// The status, e.g. 500.
        status: u16,
        /// The error's message.
        message: String,
    },
}

impl Turn {
    /// A text turn streamed in three deltas.
    pub fn text(text: impl Into<String>) -> Turn {
        Turn::Text {
            text: text.into(),
            chunks: 3,
            delay: Duration::ZERO,
        }
    }

    /// A reasoning summary, then `text` (Codex streams the summary to ACP
    /// clients as a thought).
    pub fn reasoned(summary: impl Into<String>, text: impl Into<String>) -> Turn {
        Turn::Reasoned {
            summary: summary.into(),
            text: text.into(),
        }
    }

    /// A call of `name` with `arguments`, its call id `call_id`.
    pub fn function_call(
        name: impl Into<String>,
        arguments: Value,
        call_id: impl Into<String>,
    ) -> Turn {
        Turn::FunctionCall {
            name: name.into(),
            arguments,
            call_id: call_id.into(),
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v1/responses`.
    pub path: String,
    /// Headers with lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
    /// The script's turn it was answered from (`None`: not a model
    /// request, or after the script).
    pub turn: Option<usize>,
}

impl RecordedRequest {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether it is a model request (`POST /v1/responses`).
    pub fn is_model_request(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/responses")
    }

    /// The outputs of function calls this request carries back, by call
    /// id: the `function_call_output` items of its `input`.
    pub fn function_outputs(&self) -> Vec<(String, String)> {
        self.body["input"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item["type"] == "function_call_output")
            .map(|item| {
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (
                    item["call_id"].as_str().unwrap_or_default().to_owned(),
                    output,
                )
            })
            .collect()
    }

    /// The text of the user messages of its `input`, in order.
    pub fn user_texts(&self) -> Vec<String> {
        self.body["input"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item["role"] == "user")
            .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
            .filter_map(|part| part["text"].as_str().map(str::to_owned))
            .collect()
    }

    /// The names of the tools it offers.
    pub fn tool_names(&self) -> Vec<String> {
        self.body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect()
    }
}

type Shared = Script<Turn, RecordedRequest>;

/// The running fake; stops when dropped.
#[derive(Debug)]
pub struct FakeOpenAi(ScriptedServer<Turn, RecordedRequest>);

impl FakeOpenAi {
    /// Starts the fake on 127.0.0.1 with `script`.
    pub async fn start(script: impl IntoIterator<Item = Turn>) -> std::io::Result<Self> {
        let app = Router::new().fallback(handle);
        ScriptedServer::start("openai", script, app)
            .await
            .map(FakeOpenAi)
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL clients append
    /// `/responses` to.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.0.requests()
    }

    /// The model requests (`POST /v1/responses`), in order.
    pub fn model_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_model_request)
            .collect()
    }

    /// A Codex `config.toml` whose model provider `fake` is this fake
    /// (Responses API, the key from environment variable `env_key`), model
    /// `model`.
    pub fn codex_config(&self, model: &str, env_key: &str) -> String {
        format!(
            "model = {model:?}\nmodel_provider = \"fake\"\n\n\
             [model_providers.fake]\nname = \"fake\"\nbase_url = {base:?}\n\
             env_key = {env_key:?}\nwire_api = \"responses\"\n\
             request_max_retries = 0\nstream_max_retries = 0\n",
            base = self.base_url(),
        )
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error", "code": null}}),
    )
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recorded = RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        headers: headers_of(&headers),
        body,
        turn: None,
    };
    if method == Method::GET && path.ends_with("/models") {
        shared.record(recorded);
        return json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [], "models": []}),
        );
    }
    if !recorded.is_model_request() {
        shared.record(recorded);
        return json_error(StatusCode::NOT_FOUND, &format!("no route {method} {path}"));
    }
    if !recorded.body.is_object() {
        shared.record(recorded);
        return json_error(StatusCode::BAD_REQUEST, "the body is not a JSON object");
    }
    let model = recorded.body["model"].as_str().unwrap_or("fake").to_owned();
    let turn = shared.take(|turn| RecordedRequest { turn, ..recorded });
    let (index, turn) = turn.unwrap_or((usize::MAX, Turn::text(EXHAUSTED_TEXT)));
    if let Turn::Error { status, message } = &turn {
        return json_error(status_of(*status), message);
    }
    stream(index, &model, turn)
}

/// One server-sent event.
fn event(data: &Value) -> Bytes {
    let kind = data["type"].as_str().unwrap_or("message");
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// The events of a streaming response answering with `turn`.
fn stream(index: usize, model: &str, turn: Turn) -> Response {
    let id = format!("resp_fake_{index}");
    let created = json!({
        "type": "response.created",
        "response": {"id": id, "object": "response", "status": "in_progress",
            "model": model, "output": []},
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(b)).await.is_ok() }
        };
        if !send(event(&created)).await {
            return;
        }
        let item = match turn {
            Turn::Text {
                text,
                chunks,
                delay,
            } => {
                let item_id = format!("msg_fake_{index}");
                let added = json!({"type": "response.output_item.added", "output_index": 0,
                    "item": {"type": "message", "id": item_id, "role": "assistant",
                        "status": "in_progress", "content": []}});
                let part = json!({"type": "response.content_part.added", "item_id": item_id,
                    "output_index": 0, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}});
                if !send(event(&added)).await || !send(event(&part)).await {
                    return;
                }
                for (n, piece) in pieces(&text, chunks).into_iter().enumerate() {
                    if n > 0 && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let delta = json!({"type": "response.output_text.delta", "item_id": item_id,
                        "output_index": 0, "content_index": 0, "delta": piece});
                    if !send(event(&delta)).await {
                        return;
                    }
                }
                let done = json!({"type": "response.output_text.done", "item_id": item_id,
                    "output_index": 0, "content_index": 0, "text": text});
                if !send(event(&done)).await {
                    return;
                }
                json!({"type": "message", "id": item_id, "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]})
            }
            Turn::FunctionCall {
                name,
                arguments,
                call_id,
            } => {
                let item_id = format!("fc_fake_{index}");
                let args = arguments.to_string();
                let added = json!({"type": "response.output_item.added", "output_index": 0,
                    "item": {"type": "function_call", "id": item_id, "call_id": call_id,
                        "name": name, "arguments": "", "status": "in_progress"}});
                let delta = json!({"type": "response.function_call_arguments.delta",
                    "item_id": item_id, "output_index": 0, "delta": args});
                let done = json!({"type": "response.function_call_arguments.done",
                    "item_id": item_id, "output_index": 0, "arguments": args});
                for e in [added, delta, done] {
                    if !send(event(&e)).await {
                        return;
                    }
                }
                json!({"type": "function_call", "id": item_id, "call_id": call_id,
                    "name": name, "arguments": args, "status": "completed"})
            }
            Turn::Reasoned { summary, text } => {
                let rs_id = format!("rs_fake_{index}");
                let msg_id = format!("msg_fake_{index}");
                let reasoning = json!({"type": "reasoning", "id": rs_id,
                    "summary": [{"type": "summary_text", "text": summary}]});
                let message = json!({"type": "message", "id": msg_id, "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]});
                let events = [
                    json!({"type": "response.output_item.added", "output_index": 0,
                        "item": {"type": "reasoning", "id": rs_id, "summary": []}}),
                    json!({"type": "response.reasoning_summary_part.added", "item_id": rs_id,
                        "output_index": 0, "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""}}),
                    json!({"type": "response.reasoning_summary_text.delta", "item_id": rs_id,
                        "output_index": 0, "summary_index": 0, "delta": summary}),
                    json!({"type": "response.reasoning_summary_text.done", "item_id": rs_id,
                        "output_index": 0, "summary_index": 0, "text": summary}),
                    json!({"type": "response.output_item.done", "output_index": 0,
                        "item": reasoning}),
                    json!({"type": "response.output_item.added", "output_index": 1,
                        "item": {"type": "message", "id": msg_id, "role": "assistant",
                            "status": "in_progress", "content": []}}),
                    json!({"type": "response.content_part.added", "item_id": msg_id,
                        "output_index": 1, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}),
                    json!({"type": "response.output_text.delta", "item_id": msg_id,
                        "output_index": 1, "content_index": 0, "delta": text}),
                    json!({"type": "response.output_text.done", "item_id": msg_id,
                        "output_index": 1, "content_index": 0, "text": text}),
                    json!({"type": "response.output_item.done", "output_index": 1,
                        "item": message}),
                    json!({"type": "response.completed", "response": {
                        "id": id, "object": "response", "status": "completed",
                        "output": [reasoning, message],
                        "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                            "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 3},
                            "total_tokens": 15}}}),
                ];
                for e in events {
                    if !send(event(&e)).await {
                        return;
                    }
                }
                return;
            }
            Turn::Error { .. } => return,
        };
        let item_done = json!({"type": "response.output_item.done", "output_index": 0,
            "item": item});
        let completed = json!({"type": "response.completed", "response": {
            "id": id, "object": "response", "status": "completed", "output": [item],
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 15}}});
        let _ = send(event(&item_done)).await && send(event(&completed)).await;
    });
    event_stream(received(rx))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `POST path` with `body` over a plain HTTP/1.1 connection: the whole
    /// response as text.
    async fn post(addr: SocketAddr, path: &str, body: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_model_request_streams_its_turn_and_is_recorded() {
        let fake = FakeOpenAi::start([Turn::text("Hello there")])
            .await
            .unwrap();
        let first = post(fake.addr(), "/v1/responses", r#"{"model":"m","input":[]}"#).await;
        assert!(first.contains("text/event-stream"), "{first}");
        assert!(first.contains("event: response.completed"), "{first}");
        assert!(first.contains("Hello there"), "{first}");
        let after = post(fake.addr(), "/v1/responses", r#"{"model":"m"}"#).await;
        assert!(after.contains("no more scripted turns"), "{after}");
        let missing = post(fake.addr(), "/v1/other", "{}").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let turns: Vec<_> = fake.requests().iter().map(|r| r.turn).collect();
        assert_eq!(turns, [Some(0), None, None]);
        assert_eq!(fake.model_requests().len(), 2);
        assert_eq!(fake.requests()[0].header("host"), Some("fake"));
        fake.shutdown().await;
    }
}
