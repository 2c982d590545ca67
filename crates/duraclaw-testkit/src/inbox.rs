//! The inbox over the API, written once and run on both hosts by the API
//! suite ([`crate::api`]): `GET /api/inbox` lists exactly the user's open
//! questions, the stream `GET /api/inbox/ws?after=<cursor>` resumes each
//! change exactly once and in order, refuses what it cannot serve with an
//! error and a close code, and closes with 4401 when its login ends.

use std::time::Duration;

use futures::SinkExt;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::contract::{self, User, check_refused, until_closed};
use crate::host::{Host, create_session};

/// The bound on a change reaching the stream.
pub const WITHIN: Duration = Duration::from_secs(30);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `GET /api/inbox` as `u`: its body, after checking the 200.
pub async fn list(u: &User) -> Value {
    let r = u
        .request(reqwest::Method::GET, "/api/inbox")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Polls `GET /api/inbox` until `cond` holds of its items (bounded).
pub async fn list_until(u: &User, what: &str, cond: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let body = list(u).await;
        if cond(body["items"].as_array().map_or(&[][..], Vec::as_slice)) {
            return body;
        }
        assert!(Instant::now() < deadline, "never {what}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `u`'s inbox stream with `query` (e.g. `after=12`, or empty).
pub async fn open(u: &User, query: &str) -> Ws {
    u.ws_at(&format!("/api/inbox/ws?{query}"))
        .await
        .unwrap_or_else(|e| panic!("the inbox stream: {e:?}"))
}

/// The next frame of an inbox stream (bounded).
pub async fn frame(ws: &mut Ws) -> Value {
    tokio::time::timeout(WITHIN, contract::next(ws))
        .await
        .expect("an inbox frame in time")
}

/// Reads change frames until one satisfies `cond`; every frame read, in
/// order.
pub async fn changes_until(ws: &mut Ws, cond: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let f = frame(ws).await;
        assert_eq!(f["type"], "change", "{f}");
        let done = cond(&f);
        seen.push(f);
        if done {
            return seen;
        }
    }
}

/// A change frame opening a question of `session`.
pub fn opened_in(session: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f| {
        f["change"]["type"] == "question_opened" && f["change"]["item"]["session_id"] == session
    }
}

/// A change frame resolving question `question`.
pub fn resolved(question: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f| f["change"]["type"] == "question_resolved" && f["change"]["question_id"] == question
}

/// Users `u` (name and worktree `name`) and `other` (`other_name`) on
/// `h`, each starting a session whose first turn asks for an approval: the
/// inbox lists exactly each user's own question; answering it resolves it
/// live; a client resuming from a cursor gets exactly the changes after
/// it, once each, in order.
pub async fn lists_own_questions_and_resumes_exactly_once(
    h: &dyn Host,
    (u, name): (&User, &str),
    (other, other_name): (&User, &str),
) {
    let mut live = open(u, "").await;
    let snapshot = frame(&mut live).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["reason"], "fresh", "{snapshot}");
    let start = snapshot["cursor"].as_u64().unwrap();
    let id = create_session(h, &u.cookie, name, "build it").await;
    let id = id.as_str();
    let other_id = create_session(h, &other.cookie, other_name, "build it").await;
    let other_id = other_id.as_str();

    let mine = list_until(u, "the question listed", |items| !items.is_empty()).await;
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only the user's own question: {mine}");
    let item = &items[0];
    assert_eq!(item["session_id"], id, "{item}");
    assert_eq!(item["kind"], "permission", "{item}");
    assert_eq!(item["tool"], "Bash", "{item}");
    assert_eq!(item["input"]["command"], "make", "{item}");
    assert_eq!(item["worktree"], u.worktree, "{item}");
    assert!(item["opened_at_ms"].as_i64().unwrap() > 0, "{item}");
    let question = item["question_id"].as_str().unwrap().to_owned();
    let theirs = list_until(other, "the other's question listed", |items| {
        !items.is_empty()
    })
    .await;
    assert!(
        theirs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["session_id"] == other_id),
        "another user's inbox holds only theirs: {theirs}"
    );

    // The question reached the stream; then answer it from a session socket.
    let mut seen = changes_until(&mut live, opened_in(id)).await;
    let (mut session, _) = contract::open(u, id, 0).await;
    let answer = json!({"type": "answer", "question_id": question, "decision": "allow"});
    let r = contract::command(&mut session, "inbox-a-1", &answer).await;
    assert_eq!(r["ok"], true, "{r}");
    seen.extend(changes_until(&mut live, resolved(&question)).await);
    let resolved_by = &seen.last().unwrap()["change"]["by"];
    assert_eq!(resolved_by, name, "{seen:?}");
    list_until(u, "the question gone", |items| items.is_empty()).await;
    assert!(
        seen.iter()
            .all(|f| f["change"].to_string().find(other_id).is_none()),
        "another user's changes never reach this stream: {seen:?}"
    );

    // Resuming from the start, and from the middle: exactly the changes
    // the live stream carried after that cursor, once each and in order,
    // then `resumed` at the inbox's cursor.
    let mid = seen[seen.len() / 2]["cursor"].as_u64().unwrap();
    let mut resumed = Vec::new();
    for after in [start, mid] {
        let mut ws = open(u, &format!("after={after}")).await;
        let mut got = Vec::new();
        let cursor = loop {
            let f = frame(&mut ws).await;
            if f["type"] == "resumed" {
                break f["cursor"].as_u64().unwrap();
            }
            assert_eq!(f["type"], "change", "{f}");
            got.push(f);
        };
        // The live stream up to the same cursor.
        let live_last = seen.last().unwrap()["cursor"].as_u64().unwrap();
        if live_last < cursor {
            seen.extend(changes_until(&mut live, |f| f["cursor"].as_u64() == Some(cursor)).await);
        }
        let want: Vec<&Value> = seen
            .iter()
            .filter(|f| {
                let c = f["cursor"].as_u64().unwrap();
                c > after && c <= cursor
            })
            .collect();
        assert_eq!(
            got.iter().collect::<Vec<_>>(),
            want,
            "resumed after {after}"
        );
        // Nothing else was queued: a ping's pong comes next.
        ws.send(Message::text(r#"{"type":"ping","nonce":9}"#))
            .await
            .unwrap();
        let f = frame(&mut ws).await;
        assert!(
            f["type"] == "pong" || f["type"] == "change",
            "after resumed: {f}"
        );
        resumed.push(ws);
    }
    // Every change once, in order, with no gap.
    let cursors: Vec<u64> = seen.iter().map(|f| f["cursor"].as_u64().unwrap()).collect();
    for (i, c) in cursors.iter().enumerate() {
        assert_eq!(*c, start + 1 + i as u64, "dense cursors: {cursors:?}");
    }
    // A cursor from before this inbox (0): a snapshot, typed as such.
    let mut old = open(u, "after=0").await;
    let f = frame(&mut old).await;
    assert_eq!(
        (f["type"].as_str(), f["reason"].as_str()),
        (Some("snapshot"), Some("cursor_expired")),
        "{f}"
    );
    assert!(f["items"].as_array().unwrap().is_empty(), "{f}");
    assert!(
        f["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["session_id"] == id),
        "the snapshot lists the session: {f}"
    );
}

/// The stream's refusals: another origin is a 403 and a malformed `after`
/// a JSON 400, before the upgrade; a cursor ahead of the inbox gets `ahead_of_log` and 4409; a
/// binary frame `bad_frame` and 1003; a frame over the limit `too_large`
/// and 1009.
pub async fn refusals(u: &User) {
    for bad in ["abc", "-1", "1.5", "99999999999999999999999"] {
        match u.ws_at(&format!("/api/inbox/ws?after={bad}")).await {
            Err((status, ct, body)) => {
                contract::check_error(&format!("after={bad}"), status, 400, &ct, &body);
            }
            Ok(_) => panic!("after={bad} was accepted"),
        }
    }
    // Another origin with the user's cookie: refused before the upgrade.
    let url = format!("{}/api/inbox/ws", u.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("cookie", u.cookie.parse().unwrap());
    req.headers_mut()
        .insert("origin", "http://elsewhere.example".parse().unwrap());
    match tokio::time::timeout(WITHIN, tokio_tungstenite::connect_async(req)).await {
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            assert_eq!(r.status().as_u16(), 403, "a cross-origin upgrade");
        }
        Ok(Ok(_)) => panic!("a cross-origin inbox upgrade was accepted"),
        other => panic!("a cross-origin upgrade: {other:?}"),
    }
    let cursor = list(u).await["cursor"].as_u64().unwrap();
    let mut ws = open(u, &format!("after={}", cursor + 1000)).await;
    let (frames, close) = until_closed(&mut ws).await;
    check_refused("ahead of the inbox", &frames, close, "ahead_of_log", 4409);
    assert!(frames.iter().all(|f| f["type"] == "error"), "{frames:?}");

    let mut ws = open(u, "").await;
    ws.send(Message::binary(b"{\"type\":\"ping\",\"nonce\":2}".to_vec()))
        .await
        .unwrap();
    let (frames, close) = until_closed(&mut ws).await;
    check_refused("a binary frame", &frames, close, "bad_frame", 1003);

    let mut ws = open(u, "").await;
    let max = duraclaw_core::protocol::MAX_FRAME_BYTES;
    let frame = format!(
        "{{\"type\":\"ping\",\"nonce\":1,\"pad\":\"{}\"}}",
        "x".repeat(max)
    );
    ws.send(Message::text(frame)).await.unwrap();
    let (frames, close) = until_closed(&mut ws).await;
    check_refused("an oversized frame", &frames, close, "too_large", 1009);
    assert!(frames.iter().all(|f| f["type"] != "pong"), "{frames:?}");
}

/// After a restart of host `h`, `u`'s inbox still lists what it listed
/// before (`before`, a `GET /api/inbox` answer): rebuilt from the
/// sessions' stores on the local host, kept in the user's object on
/// Cloudflare. A cursor from before the restart resumes on Cloudflare
/// (the object kept its changes) and gets a `cursor_expired` snapshot on
/// the local host (its rebuilt inbox starts above every earlier cursor);
/// neither leaves a gap.
pub async fn survives_restart(h: &dyn Host, u: &User, before: &Value) {
    let ids = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{}/{}", i["session_id"], i["question_id"]))
            .collect()
    };
    let after = list(u).await;
    assert_eq!(
        ids(&after),
        ids(before),
        "the inbox after the restart: {after}"
    );
    let cursor = before["cursor"].as_u64().unwrap();
    let mut ws = open(u, &format!("after={cursor}")).await;
    let f = frame(&mut ws).await;
    if h.name() == "cloudflare" {
        let mut f = f;
        while f["type"] == "change" {
            f = frame(&mut ws).await;
        }
        assert_eq!(f["type"], "resumed", "the object kept its changes: {f}");
    } else {
        assert_eq!(
            (f["type"].as_str(), f["reason"].as_str()),
            (Some("snapshot"), Some("cursor_expired")),
            "{f}"
        );
        assert_eq!(ids(&f), ids(before), "{f}");
    }
}

/// `u`'s inbox comes to list exactly the sessions `ids` (bounded): no
/// session whose start failed stays in it.
pub async fn sessions_become(u: &User, ids: &[String]) {
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    let deadline = Instant::now() + WITHIN;
    loop {
        let mut ws = open(u, "").await;
        let snapshot = frame(&mut ws).await;
        let mut got: Vec<&str> = snapshot["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["session_id"].as_str())
            .collect();
        got.sort_unstable();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the inbox lists {got:?}, the started sessions are {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
