//! The session stream's tail, backward pages and compacted ranges, as a
//! case of the API suite ([`crate::api::cases`]) run on each host: a client
//! that opens with `tail=<n>` and pages back to the start, while live
//! events arrive, ends with exactly the log (each seq once: the event, or a
//! delta a `compacted` range covers because its message's final comes
//! later); `compact=0` gets every event; bad parameters get a `400` or a
//! page error, and the socket lives on.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::browser::{Browser, DEADLINE, is};
use crate::contract::{self, User};
use crate::host::{Host, create_session};

use crate::contract::Ws;

/// How many follow-up turns the session runs (each an echo turn of three
/// deltas and a final).
const TURNS: usize = 10;

/// What a client assembled: per seq, the event, or `None` for a delta a
/// `compacted` range covered.
#[derive(Default)]
pub struct Assembled {
    /// Seq → event (or `None`).
    pub have: BTreeMap<u64, Option<Value>>,
    /// The next seq the stream must bring.
    pub next: u64,
    /// The lowest seq held.
    pub low: u64,
    /// `compacted` frames seen.
    pub compacted: usize,
}

impl Assembled {
    fn put(&mut self, seq: u64, v: Option<Value>) {
        assert!(self.have.insert(seq, v).is_none(), "seq {seq} came twice");
    }

    /// Takes an `event` or `compacted` frame covering from `from`; the seq
    /// after it. Panics on a gap or a repeat.
    pub fn item(&mut self, f: &Value, from: u64) -> u64 {
        match f["type"].as_str() {
            Some("event") => {
                let seq = f["seq"].as_u64().unwrap();
                assert_eq!(seq, from, "a gap or a repeat: {f}");
                self.put(seq, Some(f["event"].clone()));
                seq + 1
            }
            Some("compacted") => {
                let (first, last) = (f["first"].as_u64().unwrap(), f["last"].as_u64().unwrap());
                assert_eq!(first, from, "a compacted range out of place: {f}");
                assert!(first <= last, "{f}");
                self.compacted += 1;
                for s in first..last {
                    self.put(s, None);
                }
                let at_last = f.get("event").cloned();
                self.put(last, at_last);
                last + 1
            }
            _ => panic!("not a replay item: {f}"),
        }
    }

    /// Checks a `page` answer to `before`; takes its items.
    pub fn page(&mut self, f: &Value, before: u64) {
        assert_eq!(f["type"], "page", "{f}");
        assert!(f.get("error").is_none(), "a page refused: {f}");
        assert_eq!(f["last"].as_u64(), Some(before - 1), "{f}");
        let first = f["first"].as_u64().unwrap();
        let mut at = first;
        for i in f["items"].as_array().unwrap() {
            at = self.item(i, at);
        }
        assert_eq!(at, before, "the page must cover {first}..{before}: {f}");
        self.low = first;
    }

    /// Checks what was assembled is exactly `log` (seq → event, dense from
    /// 1): each seq once, an event as logged, or a delta whose message's
    /// final comes later.
    pub fn check(&self, log: &[(u64, Value)]) {
        assert_eq!(
            self.have.keys().copied().collect::<Vec<_>>(),
            log.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            "every seq once"
        );
        for (i, (seq, e)) in log.iter().enumerate() {
            match &self.have[seq] {
                Some(got) => assert_eq!(got, e, "seq {seq}"),
                None => {
                    assert_eq!(
                        (&e["type"], &e["phase"]),
                        (&json!("assistant"), &json!("delta")),
                        "seq {seq} was compacted: {e}"
                    );
                    assert!(
                        log[i + 1..]
                            .iter()
                            .any(|(_, l)| l["message_id"] == e["message_id"]
                                && l["phase"] == "final"),
                        "seq {seq} compacted without a later final"
                    );
                }
            }
        }
    }
}

async fn frame(ws: &mut Ws) -> Value {
    contract::next(ws).await
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Reads frames until the `page` answer to `id`, taking the live events and
/// ranges that come meanwhile into `a`.
async fn page_answer(ws: &mut Ws, a: &mut Assembled, id: &str) -> Value {
    loop {
        let f = frame(ws).await;
        match f["type"].as_str() {
            Some("page") if f["id"] == id => return f,
            Some("event") | Some("compacted") => a.next = a.item(&f, a.next),
            _ => {}
        }
    }
}

/// A session of `turns + 1` turns, each to its result.
async fn long_session(h: &dyn Host, u: &User, name: &str, turns: usize) -> String {
    let id = create_session(h, &u.cookie, name, "build it").await;
    let mut b = Browser::connect(&u.base, &u.cookie, &id, 0).await;
    let q = b.until(is("user_question")).await;
    let r = b
        .command(
            "allow",
            json!({"type": "answer", "question_id": q["question_id"], "decision": "allow"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    b.until(is("result")).await;
    for i in 0..turns {
        let at = b.last_seq();
        let r = b
            .command(
                &format!("m{i}"),
                json!({"type": "message", "text": format!("turn {i}")}),
            )
            .await;
        assert_eq!(r["ok"], true, "{r}");
        b.until_after(at, is("result")).await;
    }
    id
}

/// The whole log up to `last`, with `compact=0`.
async fn full_log(u: &User, id: &str, last: u64) -> Vec<(u64, Value)> {
    let mut full = Browser::connect(&u.base, &u.cookie, id, 0).await;
    full.until_seq(last).await;
    full.events.truncate(usize::try_from(last).unwrap());
    full.events
}

fn is_item(f: &Value) -> bool {
    matches!(f["type"].as_str(), Some("event") | Some("compacted"))
}

/// The case: tail, pages back with live events, compacted ranges, full
/// history, refusals.
pub async fn tail_pages_and_compacted_ranges(h: &dyn Host, u: &User, name: &str) {
    let id = long_session(h, u, name, TURNS).await;

    // The tail: from the start of the last turn, at least 3 events.
    let mut ws = u
        .ws(&id, "tail=3")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(frame(&mut ws).await["type"], "hello");
    let snapshot = frame(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let last = snapshot["last_seq"].as_u64().unwrap();
    let log = full_log(u, &id, last).await;
    let deltas = log.iter().filter(|(_, e)| e["phase"] == "delta").count();
    assert!(
        deltas >= 3 * TURNS,
        "the echo turns stream deltas: {deltas}"
    );
    let turn = log
        .iter()
        .rev()
        .find(|(_, e)| e["type"] == "user.message")
        .unwrap()
        .0;
    assert_eq!(snapshot["turn_start"], turn, "{snapshot}");
    assert_eq!(snapshot["first_seq"], turn, "the tail starts at its turn");
    assert!(last - turn + 1 >= 3, "at least the last 3 events");
    let mut a = Assembled {
        next: turn,
        low: turn,
        ..Default::default()
    };
    while a.next <= last {
        let f = frame(&mut ws).await;
        a.next = a.item(&f, a.next);
    }
    assert_eq!(a.compacted, 1, "the last turn's message is one range");

    // Pages back to the start; a turn runs meanwhile and streams live.
    let mut n = 0;
    let mut live_sent = false;
    while a.low > 1 {
        let before = a.low;
        let pid = format!("p{n}");
        n += 1;
        send(
            &mut ws,
            json!({"type": "page", "id": pid, "before": before, "limit": 7}),
        )
        .await;
        if !live_sent {
            live_sent = true;
            send(
                &mut ws,
                json!({"type": "command", "id": "live", "command": {"type": "message", "text": "live"}}),
            )
            .await;
        }
        let p = page_answer(&mut ws, &mut a, &pid).await;
        a.page(&p, before);
    }
    // The live turn, to its result.
    let deadline = Instant::now() + DEADLINE;
    while !a
        .have
        .range(last + 1..)
        .any(|(_, e)| e.as_ref().is_some_and(|e| e["type"] == "result"))
    {
        assert!(Instant::now() < deadline, "the live turn never ended");
        let f = frame(&mut ws).await;
        if is_item(&f) {
            a.next = a.item(&f, a.next);
        }
    }
    let end = a.next - 1;
    a.check(&full_log(u, &id, end).await);
    assert!(
        a.have
            .range(..=last)
            .all(|(_, e)| e.as_ref().is_none_or(|e| e["phase"] != "delta")),
        "every closed message of the replay came as its final"
    );
    assert!(
        a.have
            .range(last + 1..)
            .any(|(_, e)| e.as_ref().is_some_and(|e| e["phase"] == "delta")),
        "live streaming still sends deltas"
    );
    assert!(a.compacted > TURNS, "{} compacted ranges", a.compacted);
    drop(ws);

    // compact=0: every event, on the stream and in pages.
    let mut ws = u
        .ws(&id, "tail=3&compact=0")
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    frame(&mut ws).await;
    let snapshot = frame(&mut ws).await;
    let first = snapshot["first_seq"].as_u64().unwrap();
    let mut b = Assembled {
        next: first,
        low: first,
        ..Default::default()
    };
    let end = snapshot["last_seq"].as_u64().unwrap();
    while b.next <= end {
        let f = frame(&mut ws).await;
        assert_eq!(f["type"], "event", "compact=0 sends events: {f}");
        b.next = b.item(&f, b.next);
    }
    send(
        &mut ws,
        json!({"type": "page", "id": "all", "before": first, "limit": 2000}),
    )
    .await;
    let p = page_answer(&mut ws, &mut b, "all").await;
    b.page(&p, first);
    assert_eq!((b.low, b.compacted), (1, 0), "{p}");
    b.check(&full_log(u, &id, end).await);

    // Bad pages: an error in the answer, the socket lives on.
    for (bad, why) in [
        (
            json!({"type": "page", "id": "b1", "before": 0, "limit": 5}),
            "before",
        ),
        (
            json!({"type": "page", "id": "b2", "before": end + 2, "limit": 5}),
            "before",
        ),
        (
            json!({"type": "page", "id": "b3", "before": 2, "limit": 0}),
            "limit",
        ),
        (
            json!({"type": "page", "id": "b4", "before": 2, "limit": 1_000_000}),
            "limit",
        ),
    ] {
        send(&mut ws, bad.clone()).await;
        let p = page_answer(&mut ws, &mut b, bad["id"].as_str().unwrap()).await;
        assert_eq!(p["error"]["code"], "invalid", "{bad}: {p}");
        assert!(
            p["error"]["message"].as_str().unwrap().contains(why),
            "{bad}: {p}"
        );
        assert!(p.get("items").is_none(), "{p}");
    }
    send(&mut ws, json!({"type": "page", "id": "b5", "before": "x"})).await;
    loop {
        let f = frame(&mut ws).await;
        if f["type"] == "error" {
            assert_eq!(f["code"], "bad_frame", "{f}");
            break;
        }
    }
    send(&mut ws, json!({"type": "ping", "nonce": 9})).await;
    loop {
        let f = frame(&mut ws).await;
        if f["type"] == "pong" {
            assert_eq!(f["nonce"], 9);
            break;
        }
    }
    let _ = ws.close(None).await;
    while let Ok(Some(_)) = tokio::time::timeout(DEADLINE, ws.next()).await {}

    // Bad stream parameters: 400, naming the parameter.
    for (query, word) in [
        ("tail=0", "tail"),
        ("tail=abc", "tail"),
        ("tail=5000000", "tail"),
        ("tail=5&after=3", "not both"),
        ("compact=maybe", "compact"),
        ("after=3&epoch=xyz", "epoch"),
        ("after=3&epoch=", "epoch"),
        ("after=3&epoch=00000000000000001", "epoch"),
        ("after=3&epoch=%E2%80%AEabc", "epoch"),
    ] {
        match u.ws(&id, query).await {
            Ok(_) => panic!("?{query} was accepted"),
            Err((status, ct, body)) => {
                let m = contract::check_error(&format!("?{query}"), status, 400, &ct, &body);
                assert!(m.contains(word), "?{query}: {m}");
            }
        }
    }
}

/// A frame as it came: text, or a binary frame's text frames.
#[derive(Debug)]
enum Got {
    Text(Value),
    Binary(Vec<Value>),
}

/// The next text or binary frame (a binary one inflated and split on
/// `"\n"` with the crate the hosts compress with).
async fn got(ws: &mut Ws) -> Got {
    use duraclaw_core::backend::web::deflate;
    loop {
        match contract::next_message(ws, DEADLINE).await {
            Message::Text(t) => return Got::Text(serde_json::from_str(t.as_str()).unwrap()),
            Message::Binary(b) => {
                let lines = deflate::inflate(&b, 64 * deflate::MAX_BATCH_BYTES)
                    .unwrap_or_else(|e| panic!("a binary frame: {e}"));
                return Got::Binary(
                    lines
                        .iter()
                        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                        .collect(),
                );
            }
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// What a stream opened with `query` sends up to its snapshot's last seq:
/// its frames in order, and how many binary frames carried them.
async fn replay_frames(u: &User, id: &str, query: &str) -> (Ws, Vec<Value>, usize) {
    let mut ws = u.ws(id, query).await.unwrap_or_else(|e| panic!("{e:?}"));
    let mut frames = Vec::new();
    let mut binary = 0;
    let mut last = None;
    let mut next = 0;
    while last.is_none_or(|l| next <= l) {
        let batch = match got(&mut ws).await {
            Got::Text(v) => {
                if is_item(&v) {
                    assert!(
                        !query.contains("compress"),
                        "a compressed replay sent a text item: {v}"
                    );
                }
                vec![v]
            }
            Got::Binary(vs) => {
                binary += 1;
                vs
            }
        };
        for f in batch {
            if f["type"] == "snapshot" {
                last = f["last_seq"].as_u64();
                next = f["first_seq"].as_u64().unwrap();
            } else if is_item(&f) {
                next = if f["type"] == "event" {
                    f["seq"].as_u64().unwrap() + 1
                } else {
                    f["last"].as_u64().unwrap() + 1
                };
            }
            frames.push(f);
        }
    }
    (ws, frames, binary)
}

/// The case: `compress=deflate-raw` sends the replay and page answers as
/// binary frames which decode to exactly the frames a client without it
/// gets, in order; hello, snapshot and live events stay text; any other
/// `compress` is a `400`.
pub async fn compressed_replay(h: &dyn Host, u: &User, name: &str) {
    let id = long_session(h, u, name, 2).await;
    for query in ["tail=3", "after=0", "after=0&compact=0"] {
        let (_plain, want, none) = replay_frames(u, &id, query).await;
        assert_eq!(none, 0, "?{query} without compress sends text");
        let compressed = format!("{query}&compress=deflate-raw");
        let (mut ws, have, binary) = replay_frames(u, &id, &compressed).await;
        assert_eq!(have, want, "?{compressed} decodes to what ?{query} sends");
        assert_eq!(&have[0]["type"], "hello");
        assert!(
            binary >= 1,
            "?{compressed}: the replay came in binary frames"
        );
        if query != "after=0" {
            continue;
        }
        // A page: one binary frame that decodes to the page frame.
        let last = want
            .iter()
            .find(|f| f["type"] == "snapshot")
            .and_then(|f| f["last_seq"].as_u64())
            .unwrap();
        let page = json!({"type": "page", "id": "p", "before": last, "limit": 9});
        let mut plain = u.ws(&id, query).await.unwrap_or_else(|e| panic!("{e:?}"));
        send(&mut plain, page.clone()).await;
        // Its replay comes first.
        let mut a = Assembled {
            next: 1,
            ..Default::default()
        };
        let plain_page = page_answer(&mut plain, &mut a, "p").await;
        send(&mut ws, page).await;
        match got(&mut ws).await {
            Got::Binary(vs) => assert_eq!(vs, [plain_page], "the page, compressed"),
            Got::Text(v) => panic!("a page answered as text on a compressed stream: {v}"),
        }
        // Live: a turn's events and the command's result come as text.
        send(
            &mut ws,
            json!({"type": "command", "id": "live", "command": {"type": "message", "text": "live"}}),
        )
        .await;
        let mut at = last + 1;
        let deadline = Instant::now() + DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "the live turn never ended");
            match got(&mut ws).await {
                Got::Text(f) if f["type"] == "event" => {
                    assert_eq!(f["seq"], at, "live events in order: {f}");
                    at += 1;
                    if f["event"]["type"] == "result" {
                        break;
                    }
                }
                Got::Text(_) => {}
                Got::Binary(vs) => panic!("a live frame came compressed: {vs:?}"),
            }
        }
    }
    for bad in ["bogus", "gzip", ""] {
        let query = format!("compress={bad}");
        match u.ws(&id, &query).await {
            Ok(_) => panic!("?{query} was accepted"),
            Err((status, ct, body)) => {
                let m = contract::check_error(&format!("?{query}"), status, 400, &ct, &body);
                assert!(m.contains("compress must be deflate-raw"), "?{query}: {m}");
            }
        }
    }
}
