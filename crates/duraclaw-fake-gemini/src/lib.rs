//! A scripted fake of the Gemini API (`generativelanguage`), for tests that
//! run the real Gemini CLI with no network.
//!
//! The fake listens on an ephemeral port of 127.0.0.1 and answers
//! `POST /v1beta/models/{model}:streamGenerateContent` from a script of
//! [`Turn`]s, as server-sent events of `GenerateContentResponse` chunks.
//! Everything else is a side request the script does not cover:
//! `:generateContent` (the CLI's model router and next-speaker checks),
//! answered `400` so that the CLI falls back to its defaults, and
//! `:countTokens`, answered with a count. Every request is recorded
//! ([`FakeGemini::requests`]).
//!
//! The Gemini CLI reaches it with `GOOGLE_GEMINI_BASE_URL` =
//! [`FakeGemini::base_url`] and any `GEMINI_API_KEY`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use duraclaw_fake_server::{
    Script, ScriptedServer, event_stream, header, headers_of, json_response, pieces,
};
use serde_json::{Value, json};

/// What a stream request after the end of the script is answered.
pub const EXHAUSTED_TEXT: &str = "(the fake Gemini API has no more scripted turns)";

/// One model turn: what one stream request is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// Text, streamed as `chunks` chunks.
    Text {
        /// The whole text.
        text: String,
        /// How many chunks (at least 1).
        chunks: usize,
    },
    /// A call of function `name` with `args`.
    FunctionCall {
        /// The function (tool), e.g. `run_shell_command`.
        name: String,
        /// Its arguments.
        args: Value,
    },
}

impl Turn {
    /// A text turn in three chunks.
    pub fn text(text: impl Into<String>) -> Turn {
        Turn::Text {
            text: text.into(),
            chunks: 3,
        }
    }

    /// A call of `name` with `args`.
    pub fn function_call(name: impl Into<String>, args: Value) -> Turn {
        Turn::FunctionCall {
            name: name.into(),
            args,
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, e.g. `/v1beta/models/gemini-2.5-pro:streamGenerateContent`.
    pub path: String,
    /// Headers with lower-case names.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when it was not JSON).
    pub body: Value,
    /// The script's turn it was answered from.
    pub turn: Option<usize>,
}

impl RecordedRequest {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether it is a model turn (`:streamGenerateContent`).
    pub fn is_stream(&self) -> bool {
        self.method == "POST" && self.path.ends_with(":streamGenerateContent")
    }

    /// The `functionResponse` parts it carries back: (name, response).
    pub fn function_responses(&self) -> Vec<(String, Value)> {
        self.body["contents"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| {
                let r = p.get("functionResponse")?;
                Some((
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["response"].clone(),
                ))
            })
            .collect()
    }

    /// The names of the functions it declares.
    pub fn tool_names(&self) -> Vec<String> {
        self.body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|t| {
                t["functionDeclarations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|f| f["name"].as_str().map(str::to_owned))
            .collect()
    }
}

type Shared = Script<Turn, RecordedRequest>;

/// The running fake; stops when dropped.
#[derive(Debug)]
pub struct FakeGemini(ScriptedServer<Turn, RecordedRequest>);

impl FakeGemini {
    /// Starts the fake on 127.0.0.1 with `script`.
    pub async fn start(script: impl IntoIterator<Item = Turn>) -> std::io::Result<Self> {
        let app = Router::new().fallback(handle);
        ScriptedServer::start("gemini", script, app)
            .await
            .map(FakeGemini)
    }

    /// `http://127.0.0.1:PORT`, for `GOOGLE_GEMINI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.0.requests()
    }

    /// The model turns (`:streamGenerateContent`), in order.
    pub fn stream_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_stream)
            .collect()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message,
        "status": "INVALID_ARGUMENT"}});
    json_response(status, &body)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let recorded = RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        headers: headers_of(&headers),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        turn: None,
    };
    if method == Method::POST && path.ends_with(":countTokens") {
        shared.record(recorded);
        return json_response(StatusCode::OK, &json!({"totalTokens": 10}));
    }
    if !recorded.is_stream() {
        shared.record(recorded);
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!("the fake Gemini API scripts no {method} {path}"),
        );
    }
    let turn = shared.take(|turn| RecordedRequest { turn, ..recorded });
    stream(turn.map_or_else(|| Turn::text(EXHAUSTED_TEXT), |(_, t)| t))
}

/// One chunk of a streamed `GenerateContentResponse`.
fn chunk(parts: Value, last: bool) -> Bytes {
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    let mut body = json!({"modelVersion": "fake"});
    if last {
        candidate["finishReason"] = json!("STOP");
        body["usageMetadata"] =
            json!({"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15});
    }
    body["candidates"] = json!([candidate]);
    Bytes::from(format!("data: {body}\r\n\r\n"))
}

fn stream(turn: Turn) -> Response {
    let chunks: Vec<Bytes> = match turn {
        Turn::Text { text, chunks } => {
            let pieces = pieces(&text, chunks);
            let n = pieces.len();
            pieces
                .into_iter()
                .enumerate()
                .map(|(i, p)| chunk(json!([{"text": p}]), i + 1 == n))
                .collect()
        }
        Turn::FunctionCall { name, args } => {
            vec![chunk(
                json!([{"functionCall": {"name": name, "args": args}}]),
                true,
            )]
        }
    };
    event_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::io::Error>),
    ))
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
    async fn a_stream_request_streams_its_turn_and_is_recorded() {
        let fake = FakeGemini::start([Turn::text("Hello there")])
            .await
            .unwrap();
        let stream = "/v1beta/models/m:streamGenerateContent";
        let first = post(fake.addr(), stream, r#"{"contents":[]}"#).await;
        assert!(first.contains("text/event-stream"), "{first}");
        assert!(first.contains("\"finishReason\":\"STOP\""), "{first}");
        let count = post(fake.addr(), "/v1beta/models/m:countTokens", "{}").await;
        assert!(count.contains("totalTokens"), "{count}");
        let side = post(fake.addr(), "/v1beta/models/m:generateContent", "{}").await;
        assert!(side.starts_with("HTTP/1.1 400"), "{side}");
        let after = post(fake.addr(), stream, "{}").await;
        assert!(after.contains("(the fake Gemini"), "{after}");
        let turns: Vec<_> = fake.requests().iter().map(|r| r.turn).collect();
        assert_eq!(turns, [Some(0), None, None, None]);
        assert_eq!(fake.stream_requests().len(), 2);
        fake.shutdown().await;
    }
}
