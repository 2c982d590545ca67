//! The fault run on the Cloudflare path: the deploy worker
//! (`examples/duraclaw-full/cloudflare`, built with worker-build) under
//! `wrangler dev`, each session a Durable Object, against the real gateway
//! (`duraclaw gateway`, scripted executor), on 127.0.0.1 only:
//!
//! ```text
//! browsers ──► cutting proxy ──► wrangler dev (Worker + session objects) ──► cutting proxy ──► gateway
//! ```
//!
//! The run is the one both hosts share (`duraclaw_testkit::fault_run`, also
//! run on the local host by `faults.rs`): seeded cuts, stalls and
//! half-closes on both links, drivers, observers, stale clients and 50
//! browsers on one session, while the gateway is SIGKILLed, `wrangler dev`
//! is stopped and started again on the same `--persist-to` with a session
//! parked on an approval, and wrangler's process group (workerd included)
//! is SIGKILLed. No slow reader: the session object sends each event to
//! every socket as it is stored, with no live queue of its own to overflow.
//!
//! A second phase on the same deployment is endpoint abuse against the
//! Worker and the session object (Cloudflare only: the local host's
//! endpoints have theirs in `abuse.rs`): malformed and oversized frames
//! on the session socket, a flood of frames (every frame answered, in
//! order, while another browser's pings are answered and the pending
//! approval stays answerable), another user's session id on every route
//! (the same answer as a missing id), cross-origin WebSocket upgrades and
//! requests, and the three secrets (`CC_GATEWAY_SECRET`, the cookie secret,
//! the admin token) never in wrangler's output, the gateway's log, an error
//! body or a process's arguments.
//!
//! `DURACLAW_FAULT_SEED=N` picks the seed (printed). See
//! `docs/RELIABILITY.md` and `docs/SECURITY.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use duraclaw_testkit::fault_run::{self, finish_turn};
use duraclaw_testkit::faults::Ws;
use duraclaw_testkit::host::{CloudflareHost, Host, login};
use duraclaw_testkit::wrangler::cmdline;

const PASSWORD: &str = "correct horse battery staple 42";
/// How long any one expected thing may take.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_under_faults_on_cloudflare() {
    let plan = fault_run::Plan {
        default_seed: 0x5eed_c10d,
        sessions: 4,
        crowd: 50,
        chaos: Duration::from_secs(20),
        slow_reader: false,
        settle: Duration::from_secs(90),
        orchestrator_args: Vec::new(),
        acp_session: true,
    };
    let run = fault_run::run(plan, |opts| {
        CloudflareHost::start_with("cloudflare-faults", opts)
    })
    .await;
    abuse_phase(&run).await;
}

/// Endpoint abuse on the run's deployment, then the secrets checked
/// everywhere they must not be.
async fn abuse_phase(run: &fault_run::Run<CloudflareHost>) {
    let h = &run.host;
    let (base, origin) = (h.base(), h.origin());
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let alice = run.cookie.as_str();
    h.add_user("bob", PASSWORD).await;
    let bob = login(h, "bob", PASSWORD).await;
    let t = Instant::now();
    let mut bodies: Vec<String> = Vec::new();
    abuse(
        &http,
        h,
        alice,
        &bob,
        &run.spare_worktree(),
        &run.ids,
        &mut bodies,
    )
    .await;

    // Secrets: not in any error body (the gateway down, a wrong token, a
    // tampered cookie), not in wrangler's output nor the gateway's log, not
    // in any process's arguments.
    let pids = h.process_ids().await;
    assert!(pids.len() > 1, "wrangler's processes and the gateway");
    let argv: Vec<String> = pids.iter().filter_map(|p| cmdline(*p)).collect();
    h.kill_gateway().await;
    let worktree = run.spare_worktree();
    for (method, path, cookie, body) in [
        (reqwest::Method::GET, "/api/status", alice, None),
        (reqwest::Method::GET, "/api/worktrees", alice, None),
        (
            reqwest::Method::POST,
            "/api/sessions",
            alice,
            Some(json!({"worktree": worktree, "prompt": "the gateway is down"})),
        ),
        (
            reqwest::Method::GET,
            "/api/me",
            "duraclaw_session=AAAA",
            None,
        ),
    ] {
        let (_, b) = request(
            &http,
            method,
            &format!("{base}{path}"),
            cookie,
            Some(origin),
            body,
        )
        .await;
        bodies.push(b);
    }
    let token = h.admin_token();
    let almost = format!("{}x", &token[..token.len() - 1]);
    let r = http
        .get(format!("{base}/api/admin/users"))
        .bearer_auth(&almost)
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == 401 || r.status() == 403,
        "an almost-right admin token: {}",
        r.status()
    );
    bodies.push(r.text().await.unwrap());
    let logs_text = h.all_logs();
    assert!(
        logs_text.contains("gateway link") || logs_text.contains("session object"),
        "the worker's own log lines are in wrangler's output"
    );
    for secret in h.secrets() {
        assert!(!logs_text.contains(secret), "a secret in a log");
        for b in &bodies {
            assert!(!b.contains(secret), "a secret in an error body: {b}");
        }
        for a in &argv {
            assert!(!a.contains(secret), "a secret in a process's arguments");
        }
    }
    println!(
        "abuse: {} answers, {} log bytes, {} processes' arguments checked for the {} secrets, {:.1} s",
        bodies.len(),
        logs_text.len(),
        argv.len(),
        h.secrets().len(),
        t.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------ HTTP

/// One request to the Worker (always with the public origin unless
/// `origin` says otherwise); status and body.
async fn request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    cookie: &str,
    origin: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut r = http.request(method, url);
    if !cookie.is_empty() {
        r = r.header("Cookie", cookie);
    }
    if let Some(o) = origin {
        r = r.header("Origin", o);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

async fn meta(http: &reqwest::Client, base: &str, cookie: &str, id: &str) -> Value {
    let (status, body) = request(
        http,
        reqwest::Method::GET,
        &format!("{base}/api/sessions/{id}"),
        cookie,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{id}: {body}");
    serde_json::from_str(&body).unwrap()
}

// ------------------------------------------------------------ WebSockets

/// A WebSocket upgrade to `path` on `addr`; the socket, or the refusal's
/// status and body.
async fn upgrade(
    addr: &str,
    path: &str,
    cookie: &str,
    origin: Option<&str>,
) -> Result<Ws, (u16, String)> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if !cookie.is_empty() {
        req.headers_mut().insert("Cookie", cookie.parse().unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => Err((
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Ok(Err(e)) => Err((0, e.to_string())),
        Err(_) => Err((0, "timed out".into())),
    }
}

/// The next text frame within `within`, parsed; `None` when the socket
/// ended or nothing came.
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Value> {
    let until = Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(until, ws.next())
            .await
            .ok()??
            .ok()?;
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Reads until a frame that is not an event or the snapshot/hello.
async fn reply(ws: &mut Ws) -> Value {
    loop {
        let f = next_frame(ws, DEADLINE).await.expect("a reply in time");
        if !matches!(f["type"].as_str(), Some("event" | "snapshot" | "hello")) {
            return f;
        }
    }
}

/// Endpoint abuse against the Worker and a session object; every answer's
/// body goes to `bodies` (checked for secrets by the caller).
#[allow(clippy::too_many_arguments)]
async fn abuse(
    http: &reqwest::Client,
    h: &CloudflareHost,
    alice: &str,
    bob: &str,
    repo: &str,
    ids: &[String],
    bodies: &mut Vec<String>,
) {
    let (base, origin) = (h.base(), h.origin());
    let direct = base.trim_start_matches("http://");
    // A fresh session that waits for an approval throughout.
    let (status, body) = request(
        http,
        reqwest::Method::POST,
        &format!("{base}/api/sessions"),
        alice,
        Some(origin),
        Some(json!({"worktree": repo, "prompt": "abuse"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws_path = format!("/api/sessions/{id}/ws?after=0&compact=0");
    let mut ws = upgrade(direct, &ws_path, alice, Some(origin))
        .await
        .unwrap();
    let until = Instant::now() + DEADLINE;
    while meta(http, base, alice, &id).await["pending_questions"] != 1 {
        assert!(Instant::now() < until, "the abuse session never asked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Malformed frames: each gets a typed error (or a refused command),
    // the socket lives on and answers the next ping.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let long_id = json!({"type": "command", "id": "i".repeat(64 * 1024),
        "command": {"type": "answer", "question_id": "q", "decision": "allow"}})
    .to_string();
    let bad: Vec<Message> = vec![
        Message::text(""),
        Message::text("{"),
        Message::text("null"),
        Message::text("[]"),
        Message::text("{\"type\":\"command\"}"),
        Message::text("{\"type\":\"command\",\"id\":\"x\",\"command\":{\"type\":\"nope\"}}"),
        Message::text("{\"type\":\"hello\",\"v\":999999,\"role\":\"browser\"}"),
        Message::text(deep),
        Message::text("\"\\ud800\""),
        Message::text(long_id),
    ];
    let mut codes = Vec::new();
    for (n, frame) in bad.into_iter().enumerate() {
        ws.send(frame).await.unwrap();
        ws.send(Message::text(
            json!({"type": "ping", "nonce": n}).to_string(),
        ))
        .await
        .unwrap();
        let mut code = None;
        loop {
            let f = reply(&mut ws).await;
            if f["type"] == "pong" {
                assert_eq!(f["nonce"], n, "{f}");
                break;
            }
            if f["type"] == "error" {
                code = code.or(f["code"].as_str().map(str::to_owned));
            } else if f["type"] == "command_result" && f["ok"] == false {
                code = code.or(f["error"]["code"].as_str().map(|c| format!("refused {c}")));
            }
            bodies.push(f.to_string());
        }
        codes.push(code.unwrap_or_else(|| panic!("malformed frame {n} got no typed error")));
    }
    println!("malformed frames answered: {codes:?}");
    // (A binary frame closes the socket: cloudflare_api.rs checks it.)
    assert_eq!(codes[6], "unsupported_version");
    assert!(codes[..6].iter().all(|c| c == "bad_frame"), "{codes:?}");

    // Oversized: 4 MiB. A typed error on the same socket, or the runtime
    // closes it; either way the object goes on answering.
    let big = Message::text("x".repeat(4 * 1024 * 1024));
    let sent = ws.send(big).await.is_ok();
    ws.send(Message::text(
        json!({"type": "ping", "nonce": 77}).to_string(),
    ))
    .await
    .ok();
    let (mut same_socket, mut too_large) = (false, false);
    while sent && !same_socket {
        match next_frame(&mut ws, Duration::from_secs(20)).await {
            Some(f) if f["type"] == "error" => {
                assert_eq!(f["code"], "too_large", "{f}");
                too_large = true;
            }
            Some(f) if f["type"] == "pong" => same_socket = true,
            Some(_) => continue,
            None => break,
        }
    }
    assert!(!same_socket || too_large, "a 4 MiB frame answered");
    println!(
        "a 4 MiB frame: {}",
        if same_socket {
            "answered too_large, the socket lives on"
        } else {
            "the socket was closed; a new one is answered"
        }
    );
    let mut ws = if same_socket {
        ws
    } else {
        upgrade(direct, &ws_path, alice, Some(origin))
            .await
            .unwrap()
    };

    // A flood: 10,000 frames as fast as they go (pings and malformed frames)
    // while another browser pings and another session is read. Every frame
    // of the flood is answered, in order; the other browser's pings are
    // answered meanwhile.
    const FLOOD: u64 = 10_000;
    let flooder = upgrade(direct, &ws_path, alice, Some(origin))
        .await
        .unwrap();
    let (mut tx, mut rx) = flooder.split();
    let reader = tokio::spawn(async move {
        let (mut pongs, mut errors, mut in_order) = (0u64, 0u64, true);
        let until = Instant::now() + Duration::from_secs(90);
        while pongs + errors < FLOOD {
            let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, rx.next()).await else {
                break;
            };
            let Message::Text(t) = m else { continue };
            let f: Value = serde_json::from_str(t.as_str()).unwrap();
            match f["type"].as_str() {
                Some("pong") => {
                    in_order &= f["nonce"] == pongs * 2;
                    pongs += 1;
                }
                Some("error") => errors += 1,
                _ => {}
            }
        }
        (pongs, errors, in_order)
    });
    let flood = async {
        let t = Instant::now();
        for n in 0..FLOOD {
            let frame = if n % 2 == 0 {
                json!({"type": "ping", "nonce": n}).to_string()
            } else {
                format!("{{\"type\":\"command\",\"id\":{n}}}")
            };
            tx.feed(Message::text(frame)).await.unwrap();
        }
        tx.flush().await.unwrap();
        t.elapsed()
    };
    let other = async {
        let mut worst = Duration::ZERO;
        for n in 0..10u64 {
            let t = Instant::now();
            ws.send(Message::text(
                json!({"type": "ping", "nonce": 1000 + n}).to_string(),
            ))
            .await
            .unwrap();
            let f = reply(&mut ws).await;
            assert_eq!(f, json!({"type": "pong", "nonce": 1000 + n}));
            worst = worst.max(t.elapsed());
            let m = meta(http, base, alice, &ids[1]).await;
            assert_eq!(m["state"], "terminated", "{m}");
        }
        worst
    };
    let (flood_took, worst) = tokio::join!(flood, other);
    let (pongs, errors, in_order) = reader.await.unwrap();
    println!(
        "flood: {FLOOD} frames sent in {:.2} s, {pongs} pongs and {errors} errors back (in order: {in_order}); another browser's slowest pong {:.2} s",
        flood_took.as_secs_f64(),
        worst.as_secs_f64()
    );
    assert_eq!(
        (pongs, errors),
        (FLOOD / 2, FLOOD / 2),
        "every frame answered"
    );
    assert!(in_order, "the flood's pongs in order");
    assert!(
        worst < Duration::from_secs(30),
        "the other browser waited {worst:?}"
    );

    // Another user's session id, on every route: the same answer as for a
    // session that does not exist; nothing happens to the session.
    let missing = "01NOSUCHSESSION00000000000";
    for (method, suffix) in [
        (reqwest::Method::GET, ""),
        (reqwest::Method::POST, "/close"),
        (reqwest::Method::GET, "/ws"),
        (reqwest::Method::PUT, ""),
        (reqwest::Method::DELETE, ""),
        (reqwest::Method::POST, "/ws"),
        (reqwest::Method::GET, "/close"),
        (reqwest::Method::GET, "/events"),
    ] {
        let theirs = request(
            http,
            method.clone(),
            &format!("{base}/api/sessions/{id}{suffix}"),
            bob,
            Some(origin),
            None,
        )
        .await;
        let none = request(
            http,
            method.clone(),
            &format!("{base}/api/sessions/{missing}{suffix}"),
            bob,
            Some(origin),
            None,
        )
        .await;
        assert_eq!(
            theirs, none,
            "{method} {suffix}: another user's = a missing id"
        );
        assert!(
            theirs.0 >= 400 && theirs.0 < 500,
            "{method} {suffix}: {theirs:?}"
        );
        bodies.push(theirs.1);
    }
    let theirs = upgrade(direct, &ws_path, bob, Some(origin)).await.err();
    let none = upgrade(
        direct,
        &format!("/api/sessions/{missing}/ws?after=0"),
        bob,
        Some(origin),
    )
    .await
    .err();
    // (The client reads a refusal's body only when it came with the
    // headers: compare the statuses.)
    assert_eq!(theirs.as_ref().map(|e| e.0), none.as_ref().map(|e| e.0));
    assert_eq!(theirs.as_ref().map(|e| e.0), Some(404));
    for odd in [
        "x".repeat(300),
        "..".to_owned(),
        "%2e%2e%2fadmin".to_owned(),
        "%00".to_owned(),
        "%F0%9F%92%A5".to_owned(),
    ] {
        let (status, body) = request(
            http,
            reqwest::Method::GET,
            &format!("{base}/api/sessions/{odd}"),
            alice,
            None,
            None,
        )
        .await;
        assert!(status == 404 || status == 400, "{odd}: {status} {body}");
        bodies.push(body);
    }
    let (_, list) = request(
        http,
        reqwest::Method::GET,
        &format!("{base}/api/sessions"),
        bob,
        None,
        None,
    )
    .await;
    assert_eq!(list, "[]", "bob sees no session");

    // Cross-origin: a WebSocket upgrade and a close with alice's cookie
    // but another Origin (or none, or several) are refused.
    let https = origin.replace("http://", "https://");
    let direct_origin = format!("http://{direct}");
    let both = format!("{origin}, http://evil.example");
    for o in [
        Some("http://evil.example"),
        None,
        Some("null"),
        Some(direct_origin.as_str()),
        Some(https.as_str()),
        Some(both.as_str()),
    ] {
        let e = upgrade(direct, &ws_path, alice, o).await.err();
        assert_eq!(
            e.as_ref().map(|e| e.0),
            Some(403),
            "upgrade with Origin {o:?}"
        );
        let (status, body) = request(
            http,
            reqwest::Method::POST,
            &format!("{base}/api/sessions/{id}/close"),
            alice,
            o,
            None,
        )
        .await;
        assert_eq!(status, 403, "close with Origin {o:?}: {body}");
        bodies.push(body);
    }

    // After all that, the approval that waited throughout is answerable
    // and the turn goes on to its end.
    let m = meta(http, base, alice, &id).await;
    assert_eq!(m["state"], "paused", "{m}");
    assert_eq!(m["pending_questions"], 1, "{m}");
    let n = finish_turn(h, alice, &id).await;
    assert!(n >= 2, "the approval and the question were answered");
}
