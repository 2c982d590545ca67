//! The API's answers to malformed and out-of-contract input, written once
//! and run against each host by the API suite ([`crate::api`]). Every HTTP
//! error is `{"error": "…"}` as JSON; a refused
//! session start leaves nothing behind; the session WebSocket answers a
//! frame or a resume point it cannot serve with an `error` frame and then a
//! close whose code says why; a retried command gets its first result.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// The bound on any one answer.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// `duraclaw_core::protocol::MAX_FRAME_BYTES`, the documented frame limit.
const MAX_FRAME_BYTES: usize = duraclaw_core::protocol::MAX_FRAME_BYTES;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A user logged in on the host under test, and a worktree its gateway
/// offers.
pub struct User {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The user's `duraclaw_session=…` cookie.
    pub cookie: String,
    /// A worktree path the gateway offers, free.
    pub worktree: String,
}

impl User {
    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(DEADLINE)
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request as the UI sends it: the cookie and the page's Origin.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http()
            .request(method, self.url(path))
            .header("cookie", &self.cookie)
            .header("origin", &self.base)
    }

    async fn sessions(&self) -> Value {
        let r = self
            .request(reqwest::Method::GET, "/api/sessions")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The ids of the user's sessions, sorted.
    async fn session_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .sessions()
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// `POST /api/sessions` with `body` as JSON; the status and the body.
    pub async fn create(&self, body: Value) -> (u16, Value) {
        let r = self
            .request(reqwest::Method::POST, "/api/sessions")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Opens session `id`'s WebSocket after `after` (any query text).
    pub async fn ws(&self, id: &str, query: &str) -> Result<Ws, (u16, String, Vec<u8>)> {
        self.ws_at(&format!("/api/sessions/{id}/ws?{query}")).await
    }

    /// Opens the WebSocket at `path` (with its query), as the UI does.
    pub async fn ws_at(&self, path: &str) -> Result<Ws, (u16, String, Vec<u8>)> {
        let id = path;
        let url = format!("{}{path}", self.base.replace("http://", "ws://"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("cookie", self.cookie.parse().unwrap());
        req.headers_mut()
            .insert("origin", self.base.parse().unwrap());
        match tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req)).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
                let ct = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                Err((
                    r.status().as_u16(),
                    ct,
                    r.body().clone().unwrap_or_default(),
                ))
            }
            Ok(Err(e)) => panic!("WebSocket to {id}: {e}"),
            Err(_) => panic!("WebSocket to {id}: no answer in time"),
        }
    }
}

/// Checks an error answer: `status`, JSON content, and a body that is
/// exactly `{"error": "<some text>"}`; returns the text.
pub(crate) fn check_error(
    what: &str,
    status: u16,
    want: u16,
    content_type: &str,
    body: &[u8],
) -> String {
    let text = String::from_utf8_lossy(body);
    assert_eq!(status, want, "{what}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content-type {content_type:?}: {text}"
    );
    let v: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    let obj = v.as_object().unwrap_or_else(|| panic!("{what}: {v}"));
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        vec!["error"],
        "{what}: only `error`: {v}"
    );
    let message = obj["error"].as_str().unwrap_or_default().to_owned();
    assert!(!message.trim().is_empty(), "{what}: an empty message: {v}");
    message
}

/// Sends `req` and checks its error answer; returns the message.
async fn expect_error(what: &str, req: reqwest::RequestBuilder, want: u16) -> String {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r.bytes().await.unwrap();
    check_error(what, status, want, &ct, &body)
}

/// Every route, driven with malformed input: each answer is the documented
/// JSON error with the documented status, and no session was created.
/// `existing` is a session of the user (for its WebSocket route).
pub async fn malformed_requests_get_json_errors(h: &User, existing: &str) {
    use reqwest::Method;
    let before = h.session_ids().await;
    let post = || h.request(Method::POST, "/api/sessions");
    let wt = h.worktree.as_str();
    let json_body = |body: String| post().header("content-type", "application/json").body(body);

    // POST /api/sessions: bodies that are not the request.
    expect_error("invalid JSON", json_body("{not json".into()), 400).await;
    expect_error("an empty object", json_body("{}".into()), 400).await;
    expect_error("an array", json_body("[]".into()), 400).await;
    let m = expect_error(
        "a prompt that is a number",
        json_body(json!({"worktree": wt, "prompt": 42}).to_string()),
        400,
    )
    .await;
    assert!(m.contains("prompt"), "{m}");
    expect_error(
        "a model that is a number",
        json_body(json!({"worktree": wt, "prompt": "go", "model": 5}).to_string()),
        400,
    )
    .await;
    expect_error(
        "JSON sent as text/plain",
        post()
            .header("content-type", "text/plain")
            .body(json!({"worktree": wt, "prompt": "go"}).to_string()),
        400,
    )
    .await;
    expect_error(
        "a blank prompt",
        json_body(json!({"worktree": wt, "prompt": " \n "}).to_string()),
        400,
    )
    .await;
    expect_error(
        "a worktree the gateway does not offer",
        json_body(json!({"worktree": "/no/such/worktree", "prompt": "go"}).to_string()),
        400,
    )
    .await;
    // Too large: a body over the limit, and a prompt the body limit takes
    // but a logged message cannot hold (every quote is escaped in JSON).
    let m = expect_error(
        "a 2 MiB prompt",
        json_body(json!({"worktree": wt, "prompt": "x".repeat(2 << 20)}).to_string()),
        413,
    )
    .await;
    assert!(m.contains("limit"), "{m}");
    let quotes = "\"".repeat(MAX_FRAME_BYTES / 2 - 1024);
    let body = json!({"worktree": wt, "prompt": quotes}).to_string();
    assert!(body.len() < MAX_FRAME_BYTES, "under the body limit");
    let m = expect_error("a prompt over the event limit", json_body(body), 413).await;
    assert!(m.contains("first prompt"), "{m}");

    // Other routes.
    let missing = "01NOSUCHSESSION00000000000";
    for (what, method, path, want) in [
        (
            "an unknown session",
            Method::GET,
            format!("/api/sessions/{missing}"),
            404,
        ),
        (
            "an id over the limit",
            Method::GET,
            format!("/api/sessions/{}", "A".repeat(300)),
            404,
        ),
        (
            "closing an unknown session",
            Method::POST,
            format!("/api/sessions/{missing}/close"),
            404,
        ),
        (
            "an unknown API route",
            Method::GET,
            "/api/no/such/route".into(),
            404,
        ),
        (
            "a method the route does not take",
            Method::DELETE,
            "/api/sessions".into(),
            405,
        ),
        ("PUT on the status", Method::PUT, "/api/status".into(), 405),
        (
            "a WebSocket route without the upgrade",
            Method::GET,
            format!("/api/sessions/{existing}/ws"),
            400,
        ),
    ] {
        expect_error(what, h.request(method, &path), want).await;
    }
    expect_error("no cookie", h.http().get(h.url("/api/sessions")), 401).await;
    expect_error(
        "a login that is not JSON",
        h.http()
            .post(h.url("/api/login"))
            .header("origin", &h.base)
            .header("content-type", "application/json")
            .body("{nope"),
        400,
    )
    .await;

    // The session WebSocket with a resume point that is not a seq.
    for query in ["after=abc", "after=-1", "after=1.5"] {
        match h.ws(existing, query).await {
            Ok(_) => panic!("?{query} was accepted"),
            Err((status, ct, body)) => {
                let m = check_error(&format!("?{query}"), status, 400, &ct, &body);
                assert!(m.contains("after"), "{m}");
            }
        }
    }

    assert_eq!(h.session_ids().await, before, "no session was created");
}

/// Reads frames until the server closes; returns the frames and the close.
pub(crate) async fn until_closed(ws: &mut Ws) -> (Vec<Value>, Option<CloseFrame>) {
    let mut frames = Vec::new();
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("the server closed the socket in time");
        match msg {
            Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(c))) => return (frames, c),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the socket failed instead of closing: {e}; got {frames:?}"),
            None => panic!("the socket ended with no close frame; got {frames:?}"),
        }
    }
}

/// Checks that the frames end with an `error` of `code`, closed with
/// `close`.
pub(crate) fn check_refused(
    what: &str,
    frames: &[Value],
    close: Option<CloseFrame>,
    code: &str,
    want: u16,
) {
    let error = frames
        .iter()
        .rev()
        .find(|f| f["type"] == "error")
        .unwrap_or_else(|| panic!("{what}: no error frame before the close: {frames:?}"));
    assert_eq!(error["code"], code, "{what}: {error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {error}"
    );
    let close = close.unwrap_or_else(|| panic!("{what}: closed without a code"));
    assert_eq!(u16::from(close.code), want, "{what}: {close:?}");
}

/// Opens session `id` after `after` and reads its hello and snapshot.
pub(crate) async fn open(h: &User, id: &str, after: u64) -> (Ws, Value) {
    let mut ws = h
        .ws(id, &format!("after={after}&compact=0"))
        .await
        .unwrap_or_else(|e| panic!("WebSocket: {e:?}"));
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    let snapshot = next(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (ws, snapshot)
}

/// The socket's next message, within `within`; a socket that ends or
/// fails first fails the test.
pub(crate) async fn next_message(ws: &mut Ws, within: Duration) -> Message {
    tokio::time::timeout(within, ws.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("readable")
}

pub(crate) async fn next(ws: &mut Ws) -> Value {
    loop {
        match next_message(ws, DEADLINE).await {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// The session WebSocket's refusals: a text frame over the limit, a binary
/// frame, and a resume point ahead of the log each get an `error` frame and
/// a close with the documented code; a resume at the log's end does not.
pub async fn websocket_refusals(h: &User, id: &str) {
    for (what, size) in [
        ("1 MiB + 100 B", MAX_FRAME_BYTES + 100),
        ("2 MiB", 2 * MAX_FRAME_BYTES),
    ] {
        let (mut ws, _) = open(h, id, 0).await;
        let pad = "x".repeat(size - 40);
        let frame = format!("{{\"type\":\"ping\",\"nonce\":1,\"pad\":\"{pad}\"}}");
        assert!(frame.len() > MAX_FRAME_BYTES);
        ws.send(Message::text(frame)).await.unwrap();
        let (frames, close) = until_closed(&mut ws).await;
        check_refused(what, &frames, close, "too_large", 1009);
        assert!(
            frames.iter().all(|f| f["type"] != "pong"),
            "{what}: the oversized ping was not answered: {frames:?}"
        );
    }

    let (mut ws, _) = open(h, id, 0).await;
    ws.send(Message::binary(b"{\"type\":\"ping\",\"nonce\":2}".to_vec()))
        .await
        .unwrap();
    let (frames, close) = until_closed(&mut ws).await;
    check_refused("a binary frame", &frames, close, "bad_frame", 1003);

    // A frame at the limit is still read (and answered as a ping).
    let (mut ws, snapshot) = open(h, id, 0).await;
    let last = snapshot["last_seq"].as_u64().unwrap();
    let head = "{\"type\":\"ping\",\"nonce\":3,\"pad\":\"";
    let frame = format!("{head}{}\"}}", "x".repeat(MAX_FRAME_BYTES - head.len() - 2));
    assert_eq!(frame.len(), MAX_FRAME_BYTES);
    ws.send(Message::text(frame)).await.unwrap();
    loop {
        let f = next(&mut ws).await;
        assert_ne!(f["type"], "error", "a frame at the limit: {f}");
        if f["type"] == "pong" {
            assert_eq!(f["nonce"], 3);
            break;
        }
    }
    drop(ws);

    // Ahead of the log: told so, and closed 4409; at its end: served.
    let mut ws = h
        .ws(id, &format!("after={}", last + 1000))
        .await
        .unwrap_or_else(|e| panic!("WebSocket: {e:?}"));
    let (frames, close) = until_closed(&mut ws).await;
    check_refused("ahead of the log", &frames, close, "ahead_of_log", 4409);
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "snapshot" && f["type"] != "event"),
        "a client ahead of the log gets no snapshot and no events: {frames:?}"
    );
    let (_ws, snapshot) = open(h, id, last).await;
    assert!(snapshot["last_seq"].as_u64().unwrap() >= last, "{snapshot}");
}

/// Sends `command` under `id` and returns its `command_result`.
pub(crate) async fn command(ws: &mut Ws, id: &str, command: &Value) -> Value {
    ws.send(Message::text(
        json!({"type": "command", "id": id, "command": command}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let f = next(ws).await;
        if f["type"] == "command_result" && f["id"] == id {
            return f;
        }
    }
}

/// Waits on session `id` for a pending question and answers it with
/// command id `a-1`; the identical frame again (as a client resends an
/// unconfirmed command after a reconnect), on the same socket and on a new
/// one, gets the same `ok: true`; only a different command id is told
/// `already_decided`, and the log holds one decision, the first socket's.
pub async fn retried_answer_gets_its_first_result(h: &User, id: &str) {
    let (mut ws, _) = open(h, id, 0).await;
    let question = loop {
        let f = next(&mut ws).await;
        if f["type"] == "event" && f["event"]["type"] == "user_question" {
            break f["event"].clone();
        }
    };
    let answer = json!({
        "type": "answer",
        "question_id": question["question_id"],
        "decision": "allow"
    });
    let first = command(&mut ws, "a-1", &answer).await;
    assert_eq!(first["ok"], true, "{first}");
    let again = command(&mut ws, "a-1", &answer).await;
    assert_eq!(again, first, "a retry on the same socket");
    drop(ws);
    let (mut ws, _) = open(h, id, 0).await;
    let after_reconnect = command(&mut ws, "a-1", &answer).await;
    assert_eq!(after_reconnect, first, "a retry after a reconnect");
    let other = command(&mut ws, "a-2", &answer).await;
    assert_eq!(other["ok"], false, "{other}");
    assert_eq!(other["error"]["code"], "already_decided", "{other}");
    // The log holds the one decision.
    let (mut all, snapshot) = open(h, id, 0).await;
    let last = snapshot["last_seq"].as_u64().unwrap();
    let mut resolved = Vec::new();
    let mut seq = 0;
    while seq < last {
        let f = next(&mut all).await;
        if f["type"] == "event" {
            seq = f["seq"].as_u64().unwrap();
            if f["event"]["type"] == "question.resolved"
                && f["event"]["question_id"] == question["question_id"]
            {
                resolved.push(f["event"].clone());
            }
        }
    }
    // One decision, from the first socket (the gateway may confirm it with
    // a copy); a retry applied again would show the second socket.
    let mut deciders: Vec<&Value> = resolved.iter().map(|e| &e["by"]).collect();
    deciders.dedup();
    assert_eq!(deciders.len(), 1, "one decision in the log: {resolved:#?}");
    assert!(
        resolved.iter().all(|e| e["decision"] == "allow"),
        "{resolved:#?}"
    );
}

/// Starting a second session in a worktree session `holder` holds: `409`,
/// naming the holder and what to do; nothing created.
pub async fn busy_worktree_says_what_to_do(h: &User, holder: &str) {
    let before = h.session_ids().await;
    let (status, body) = h
        .create(json!({"worktree": h.worktree, "prompt": "another"}))
        .await;
    assert_eq!(status, 409, "{body}");
    let m = body["error"].as_str().unwrap_or_default();
    assert!(
        m.starts_with("worktree busy: ")
            && m.contains(&format!("end session {holder} or pick another worktree")),
        "{m}"
    );
    assert_eq!(h.session_ids().await, before, "no session was created");
}

/// Starts racing for the free `worktree`: every answer but `201` leaves no
/// session behind, whether the host refused it before starting or the
/// gateway refused it after (a start the gateway refuses is removed again).
/// Returns the ids started.
pub async fn racing_starts_leave_only_started_sessions(h: &User, worktree: &str) -> Vec<String> {
    const RACERS: usize = 8;
    let before = h.session_ids().await.len();
    let answers = futures::future::join_all(
        (0..RACERS).map(|i| h.create(json!({"worktree": worktree, "prompt": format!("race {i}")}))),
    )
    .await;
    let mut started = Vec::new();
    for (status, body) in &answers {
        if *status == 201 {
            started.push(body["session_id"].as_str().unwrap().to_owned());
            continue;
        }
        assert_eq!(*status, 409, "{body}");
        let m = body["error"].as_str().unwrap_or_default();
        // The host's own refusal and the gateway's both say what to do.
        assert!(
            m.starts_with("worktree busy: ") && m.contains("; end session "),
            "{m}"
        );
    }
    eprintln!("{RACERS} racing starts: {} started", started.len());
    assert!(!started.is_empty(), "{answers:?}");
    let ids = h.session_ids().await;
    assert_eq!(
        ids.len(),
        before + started.len(),
        "only the started sessions exist: {ids:?}"
    );
    assert!(started.iter().all(|id| ids.contains(id)), "{ids:?}");
    started
}
