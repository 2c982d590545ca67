//! Checks that must hold on both hosts — the local `duraclaw` and the
//! Cloudflare Worker under `wrangler dev` — written once, driven as a
//! client over HTTP and WebSocket. Each host's test file runs them
//! against its own deployment.

use std::time::Duration;

use duraclaw_core::backend::web::{LOGIN_ENDED_CLOSE, LOGIN_ENDED_REASON, UI_HEADERS};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A client end of a session's WebSocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a socket may stay open after its login ended (the local server
/// notices another process's revocation within a quarter second; the rest
/// is slack for a loaded machine).
pub const LOGIN_ENDED_WITHIN: Duration = Duration::from_secs(10);

fn assert_ui_headers_of(what: &str, headers: &reqwest::header::HeaderMap) {
    for (name, value) in UI_HEADERS {
        assert_eq!(
            headers.get(*name).and_then(|v| v.to_str().ok()),
            Some(*value),
            "{what}: header {name}"
        );
    }
}

/// `GET /`, a client-side route and the script the page loads each answer
/// 200 with every one of core's UI security headers.
pub async fn assert_ui_headers(http: &reqwest::Client, base: &str) {
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200, "GET /");
    assert_ui_headers_of("GET /", page.headers());
    let html = page.text().await.unwrap();
    let script = html
        .split("src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .unwrap_or_else(|| panic!("the page loads no /assets/*.js: {html}"))
        .to_owned();
    for path in [script.as_str(), "/sessions/some-session"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        assert_ui_headers_of(&format!("GET {path}"), r.headers());
    }
}

/// Opens session `session`'s stream from `base`'s own origin with `cookie`
/// and reads its `hello` and `snapshot`; the socket and the snapshot.
pub async fn open(base: &str, cookie: &str, session: &str) -> (Ws, Value) {
    let url = format!(
        "{}/api/sessions/{session}/ws?after=0&compact=0",
        base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", base.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(
        LOGIN_ENDED_WITHIN * 3,
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("the upgrade in time")
    .unwrap_or_else(|e| panic!("upgrade of {session}: {e}"));
    let mut snapshot = None;
    while snapshot.is_none() {
        let f = text_frame(&mut ws, Instant::now() + LOGIN_ENDED_WITHIN * 3).await;
        if f["type"] == "snapshot" {
            snapshot = Some(f);
        }
    }
    (ws, snapshot.unwrap())
}

async fn text_frame(ws: &mut Ws, deadline: Instant) -> Value {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no frame in time"),
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the socket ended: {other:?}"),
        }
    }
}

/// Sends a `message` command with `text` under `id`.
pub async fn send_message(ws: &mut Ws, id: &str, text: &str) -> bool {
    let frame = json!({"type": "command", "id": id, "command": {"type": "message", "text": text}});
    ws.send(Message::text(frame.to_string())).await.is_ok()
}

/// A socket whose login was just ended, on which the client sends nothing,
/// closes with 4401 `login ended` within [`LOGIN_ENDED_WITHIN`]: the server
/// closes it by itself.
pub async fn assert_closes(ws: &mut Ws) {
    let deadline = Instant::now() + LOGIN_ENDED_WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the socket stayed open {LOGIN_ENDED_WITHIN:?} after its login ended"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                let frame = frame.expect("a close frame with a code");
                assert_eq!(
                    (u16::from(frame.code), frame.reason.as_str()),
                    (LOGIN_ENDED_CLOSE, LOGIN_ENDED_REASON)
                );
                return;
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

/// On a socket whose login was just ended: a `message` command sent now
/// (`id`, `text`) is refused with `unauthorized` or never answered, none of
/// its work reaches the socket, and the socket closes with 4401
/// `login ended` within [`LOGIN_ENDED_WITHIN`]. The command may race the
/// close: a send that fails because the server already closed is fine.
pub async fn assert_login_ended(ws: &mut Ws, id: &str, text: &str) {
    let _ = send_message(ws, id, text).await;
    let deadline = Instant::now() + LOGIN_ENDED_WITHIN;
    loop {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the socket stayed open {LOGIN_ENDED_WITHIN:?} after its login ended"),
            Ok(m) => m,
        };
        match m {
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(t.as_str()).unwrap();
                if f["type"] == "command_result" && f["id"] == id {
                    assert_eq!(f["ok"], false, "a command after the login ended: {f}");
                    assert_eq!(f["error"]["code"], "unauthorized", "{f}");
                }
                assert!(
                    !(f["type"] == "event"
                        && f["event"]["type"] == "user.message"
                        && f["event"]["text"] == text),
                    "the command after the login ended ran: {f}"
                );
            }
            Some(Ok(Message::Close(frame))) => {
                let frame = frame.expect("a close frame with a code");
                assert_eq!(
                    (u16::from(frame.code), frame.reason.as_str()),
                    (LOGIN_ENDED_CLOSE, LOGIN_ENDED_REASON)
                );
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the socket failed before its close frame: {e}"),
            None => panic!("the socket ended without a close frame"),
        }
    }
}

/// The session's whole log, through a fresh socket (with a live login's
/// `cookie`), holds no `user.message` with `text`: the refused command
/// started no turn.
pub async fn assert_never_ran(base: &str, cookie: &str, session: &str, text: &str) {
    let (mut ws, snapshot) = open(base, cookie, session).await;
    let last = snapshot["last_seq"].as_u64().unwrap();
    let deadline = Instant::now() + LOGIN_ENDED_WITHIN * 3;
    let mut seen = 0;
    while seen < last {
        let f = text_frame(&mut ws, deadline).await;
        if f["type"] != "event" {
            continue;
        }
        seen = f["seq"].as_u64().unwrap();
        assert!(
            !(f["event"]["type"] == "user.message" && f["event"]["text"] == text),
            "the refused command ran: {f}"
        );
    }
    let _ = ws.close(None).await;
}
