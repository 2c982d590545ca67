//! End-to-end tests over real HTTP on 127.0.0.1, with a bare hyper client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::{FakeAnthropic, Latch, Options, RequestKind, Turn};

const LIMIT: Duration = Duration::from_secs(10);

async fn send(
    fake: &FakeAnthropic,
    method: &str,
    path: &str,
    body: String,
) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("x-api-key", "test")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    tokio::time::timeout(LIMIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap()
}

async fn body_text(resp: hyper::Response<Incoming>) -> String {
    let bytes = tokio::time::timeout(LIMIT, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn request(messages: Value, stream: bool) -> String {
    json!({
        "model": "claude-test",
        "max_tokens": 1000,
        "stream": stream,
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": messages,
    })
    .to_string()
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": [{"type": "text", "text": text}]}])
}

/// Parses SSE text into (event name, data) pairs, checking they agree.
fn parse_sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|chunk| !chunk.trim().is_empty())
        .map(|chunk| {
            let mut event = None;
            let mut data = None;
            for line in chunk.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).unwrap());
                }
            }
            let data = data.unwrap();
            assert_eq!(data["type"].as_str(), event.as_deref());
            data
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["delta"]["type"] == "text_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn streams_a_text_turn_as_sse() {
    let fake = FakeAnthropic::start([Turn::text("Hello from the fake API").with_usage(42, 7)])
        .await
        .unwrap();
    let resp = send(
        &fake,
        "POST",
        "/v1/messages?beta=true",
        request(user("hi"), true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&body_text(resp).await);
    let t = types(&events);
    assert_eq!(t.first(), Some(&"message_start"));
    assert_eq!(t[1], "content_block_start");
    assert!(t.iter().filter(|t| **t == "content_block_delta").count() >= 3);
    assert_eq!(
        &t[t.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert_eq!(text_of(&events), "Hello from the fake API");
    assert_eq!(events[0]["message"]["model"], "claude-test");
    assert_eq!(events[0]["message"]["usage"]["input_tokens"], 42);
    let delta = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 7);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/messages");
    assert_eq!(reqs[0].query.as_deref(), Some("beta=true"));
    assert_eq!(reqs[0].header("x-api-key"), Some("test"));
    assert_eq!(reqs[0].body["messages"][0]["content"][0]["text"], "hi");
    assert_eq!(
        reqs[0].kind,
        RequestKind::Scripted {
            turn: 0,
            attempt: 1
        }
    );
}

#[tokio::test]
async fn streams_tool_input_as_json_deltas() {
    let input = json!({"file_path": "/tmp/some/file.txt", "limit": 20});
    let fake = FakeAnthropic::start([Turn::text("Reading.").with_tool_use("Read", input.clone())])
        .await
        .unwrap();
    let resp = send(&fake, "POST", "/v1/messages", request(user("go"), true)).await;
    let events = parse_sse(&body_text(resp).await);
    let start = events
        .iter()
        .find(|e| e["type"] == "content_block_start" && e["index"] == 1)
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "Read");
    assert_eq!(start["content_block"]["id"], "toolu_fake_0_1");
    let parts: Vec<&str> = events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert!(parts.len() > 1);
    let joined: Value = serde_json::from_str(&parts.concat()).unwrap();
    assert_eq!(joined, input);
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn answers_plain_json_without_stream() {
    let fake = FakeAnthropic::start([Turn::text("plain").with_tool_use_id(
        "toolu_1",
        "Bash",
        json!({"command": "ls"}),
    )])
    .await
    .unwrap();
    let resp = send(&fake, "POST", "/v1/messages", request(user("go"), false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0], json!({"type": "text", "text": "plain"}));
    assert_eq!(v["content"][1]["id"], "toolu_1");
    assert_eq!(v["content"][1]["input"], json!({"command": "ls"}));
    assert_eq!(v["stop_reason"], "tool_use");
}

#[tokio::test]
async fn advances_on_new_requests_and_repeats_on_retries() {
    let fake = FakeAnthropic::start([Turn::text("one"), Turn::text("two")])
        .await
        .unwrap();
    let first = request(user("a"), true);
    let r1 = parse_sse(&body_text(send(&fake, "POST", "/v1/messages", first.clone()).await).await);
    let r1b = parse_sse(&body_text(send(&fake, "POST", "/v1/messages", first).await).await);
    assert_eq!(text_of(&r1), "one");
    assert_eq!(text_of(&r1b), "one");
    let next = json!([
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "one"}]},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
    ]);
    let r2 =
        parse_sse(&body_text(send(&fake, "POST", "/v1/messages", request(next, true)).await).await);
    assert_eq!(text_of(&r2), "two");
    let r3 = parse_sse(
        &body_text(send(&fake, "POST", "/v1/messages", request(user("zzz"), true)).await).await,
    );
    assert!(text_of(&r3).contains("no more turns"));
    let kinds: Vec<RequestKind> = fake.requests().into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        vec![
            RequestKind::Scripted {
                turn: 0,
                attempt: 1
            },
            RequestKind::Scripted {
                turn: 0,
                attempt: 2
            },
            RequestKind::Scripted {
                turn: 1,
                attempt: 1
            },
            RequestKind::Exhausted,
        ]
    );
    assert_eq!(fake.turns_served(), 2);
}

#[tokio::test]
async fn side_requests_get_schema_json_and_take_no_turn() {
    let fake = FakeAnthropic::start([Turn::text("scripted")])
        .await
        .unwrap();
    let title = json!({
        "model": "claude-haiku",
        "stream": false,
        "messages": user("name this session"),
        "output_config": {"format": {"type": "json_schema", "schema": {
            "type": "object",
            "properties": {"title": {"type": "string"}},
            "required": ["title"],
            "additionalProperties": false
        }}}
    });
    let v: Value = serde_json::from_str(
        &body_text(send(&fake, "POST", "/v1/messages", title.to_string()).await).await,
    )
    .unwrap();
    let text = v["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        json!({"title": "Fake"})
    );

    // A streamed side request without tools.
    let plain = json!({"model": "m", "stream": true, "messages": user("x")});
    let events =
        parse_sse(&body_text(send(&fake, "POST", "/v1/messages", plain.to_string()).await).await);
    assert_eq!(text_of(&events), "OK");

    let r = parse_sse(
        &body_text(send(&fake, "POST", "/v1/messages", request(user("q"), true)).await).await,
    );
    assert_eq!(text_of(&r), "scripted");
    let kinds: Vec<RequestKind> = fake.requests().into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds[..2], [RequestKind::Side, RequestKind::Side]);
    assert_eq!(fake.model_requests().len(), 1);
}

#[tokio::test]
async fn a_held_stream_waits_for_release() {
    let latch = Latch::new();
    let fake = FakeAnthropic::start([Turn::text("abcdefghijkl")
        .with_chunk_chars(4)
        .with_hold(1, &latch)])
    .await
    .unwrap();
    let resp = send(&fake, "POST", "/v1/messages", request(user("go"), true)).await;
    let mut body = resp.into_body();
    tokio::time::timeout(LIMIT, latch.reached()).await.unwrap();
    // Read until the first delta arrived: everything before the hold.
    let mut seen = String::new();
    while !seen.contains("text_delta") {
        let frame = tokio::time::timeout(LIMIT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    // Nothing more comes while held.
    let stalled = tokio::time::timeout(Duration::from_millis(100), body.frame()).await;
    assert!(stalled.is_err(), "the stream went on before release");
    assert!(!latch.is_released());
    latch.release();
    let rest = tokio::time::timeout(LIMIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    seen.push_str(std::str::from_utf8(&rest).unwrap());
    let events = parse_sse(&seen);
    assert_eq!(text_of(&events), "abcdefghijkl");
    assert_eq!(types(&events).last(), Some(&"message_stop"));
}

#[tokio::test]
async fn paced_deltas_arrive_in_order() {
    let fake = FakeAnthropic::start([Turn::text("0123456789")
        .with_chunk_chars(2)
        .with_delta_delay(Duration::from_millis(5))])
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let resp = send(&fake, "POST", "/v1/messages", request(user("go"), true)).await;
    let events = parse_sse(&body_text(resp).await);
    assert_eq!(text_of(&events), "0123456789");
    assert!(started.elapsed() >= Duration::from_millis(20));
}

#[tokio::test]
async fn scripted_http_errors() {
    let fake = FakeAnthropic::start([
        Turn::http_error(401, "bad key"),
        Turn::text("finally").failing_first(2, 529),
    ])
    .await
    .unwrap();
    let resp = send(&fake, "POST", "/v1/messages", request(user("a"), true)).await;
    assert_eq!(resp.status(), 401);
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(v["error"]["message"], "bad key");

    let b = request(user("b"), true);
    for _ in 0..2 {
        let resp = send(&fake, "POST", "/v1/messages", b.clone()).await;
        assert_eq!(resp.status(), 529);
        let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
    }
    let resp = send(&fake, "POST", "/v1/messages", b).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(text_of(&parse_sse(&body_text(resp).await)), "finally");
}

#[tokio::test]
async fn rejects_bad_input_with_json_errors() {
    let fake = FakeAnthropic::start_with(
        [],
        Options {
            max_body_bytes: 1024,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let resp = send(&fake, "GET", "/v1/models", String::new()).await;
    assert_eq!(resp.status(), 404);
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");

    let resp = send(&fake, "POST", "/v1/messages", "{not json".into()).await;
    assert_eq!(resp.status(), 400);
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let resp = send(&fake, "POST", "/v1/messages", "[1]".into()).await;
    assert_eq!(resp.status(), 400);

    let big = request(user(&"x".repeat(4096)), true);
    let resp = send(&fake, "POST", "/v1/messages", big).await;
    assert_eq!(resp.status(), 413);
    let v: Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["error"]["type"], "request_too_large");

    let kinds: Vec<RequestKind> = fake.requests().into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        vec![
            RequestKind::Rejected { status: 404 },
            RequestKind::Rejected { status: 400 },
            RequestKind::Rejected { status: 400 },
            RequestKind::Rejected { status: 413 },
        ]
    );
}

#[tokio::test]
async fn wait_for_requests_and_shutdown() {
    let fake = FakeAnthropic::start([Turn::text("x")]).await.unwrap();
    let addr = fake.addr();
    let waiter = fake.wait_for_requests(1);
    let sender = send(&fake, "POST", "/v1/messages", request(user("a"), true));
    let (_, resp) = tokio::join!(
        async { tokio::time::timeout(LIMIT, waiter).await.unwrap() },
        sender
    );
    drop(body_text(resp).await);
    fake.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_ends_a_held_stream() {
    let latch = Latch::new();
    let fake = FakeAnthropic::start([Turn::text("abcdefgh").with_hold(0, &latch)])
        .await
        .unwrap();
    let resp = send(&fake, "POST", "/v1/messages", request(user("a"), true)).await;
    tokio::time::timeout(LIMIT, latch.reached()).await.unwrap();
    tokio::time::timeout(LIMIT, fake.shutdown()).await.unwrap();
    let text = body_text(resp).await;
    assert!(!text.contains("message_stop"));
}
