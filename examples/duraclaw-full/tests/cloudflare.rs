//! Duraclaw on Cloudflare, end to end: the worker crate
//! (`examples/duraclaw-full/cloudflare`) built with worker-build and run
//! under `wrangler dev`, against the real gateway (`duraclaw gateway`, the
//! gateway server of `duraclaw-gateway`) with the scripted executor, whose
//! script asks for an approval. Users are created through the admin route
//! and log in through the real auth routes.
//!
//! One test, in steps, so the worker is built once:
//!
//! 1. create a session, stream its events to two browsers until the
//!    approval question, the user's session list showing it pending and
//!    another user's empty (the rest of a session's flow is the API suite,
//!    `cloudflare_api.rs`);
//! 2. stop `wrangler dev` with the approval pending and start it again on
//!    the same state: the Durable Object reconnects to the gateway by itself
//!    (its alarm), the history, the pending question and the state are
//!    intact, browsers resume with exact replay, and the approval completes
//!    the turn (one bound from the restart to the turn's end, not one per
//!    frame: the alarm may take long on a busy machine);
//!    then, idle, the object hibernates with the browsers' sockets open and
//!    wakes for a message on one of them, knowing its user.
//!
//! A gateway SIGKILLed while a session waits for approval is a case of the
//! API suite (`cloudflare_api.rs`), as are a restart with an approval
//! pending, retried and late answers; what stays here is Cloudflare's
//! own: the object relinking by its alarm with no request to wake it,
//! hibernation, and the Worker's UI assets. A gateway whose CLI is too old
//! is the API suite's too (`an_old_cli_is_named_in_the_status_and_refuses_a_start`).
//!
//! Every wait is bounded; nothing sleeps to synchronise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

use duraclaw_testkit::browser::{Browser, is, state_is};
use duraclaw_testkit::gateway as cf_gateway;
use duraclaw_testkit::wrangler as support;
use support::{
    Tools, Wrangler, admin_user_login, build_full_example, free_port, start_wrangler_logged,
    wait_until_ready,
};

const GATEWAY_SECRET: &str = "cf-e2e-gateway-secret-0123456789";
const COOKIE_SECRET: &str = "cf-e2e-cookie-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "cf-e2e-admin-token-0123456789abcdef";
const PASSWORD: &str = "correct horse battery staple 42";
/// How long any one expected thing may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long the object's alarm may take to reconnect by itself (a heartbeat
/// is at most 30 s away, plus wrangler's start on a busy machine).
const ALARM_DEADLINE: Duration = Duration::from_secs(120);
/// How long an idle object may take to let its link go (one heartbeat, at
/// most 30 s) and hibernate (10-25 s idle under wrangler dev).
const HIBERNATE_DEADLINE: Duration = Duration::from_secs(180);

/// A git repository at `path` with a README, in one commit.
fn init_repo(path: &Path) {
    duraclaw_testkit::local::init_repo(path, &[("README.md", "# app\n")]);
}

/// The gateway (`duraclaw gateway`, scripted) on a fixed port, its log in a
/// file; killed with SIGKILL when dropped.
struct Gateway {
    _child: Child,
    log: PathBuf,
}

async fn start_gateway(root: &Path, port: u16, n: usize) -> Gateway {
    let log = root.join(format!("gateway-{n}.log"));
    let child = cf_gateway::start(root, port, GATEWAY_SECRET, &log, DEADLINE).await;
    Gateway { _child: child, log }
}

impl Gateway {
    /// How many orchestrator links it has accepted.
    fn links(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("orchestrator connected")
            .count()
    }
}

/// The deployment under test: wrangler's directory and its settings.
struct Deployment {
    tools: Tools,
    dir: PathBuf,
    port: u16,
    gateway_port: u16,
    starts: usize,
}

impl Deployment {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self, http: &reqwest::Client) -> Wrangler {
        self.starts += 1;
        let url = format!("http://127.0.0.1:{}", self.gateway_port);
        let vars = [
            ("CC_GATEWAY_URL", url.as_str()),
            ("CC_GATEWAY_SECRET", GATEWAY_SECRET),
            ("DURACLAW_COOKIE_SECRET", COOKIE_SECRET),
            ("DURACLAW_ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let log = self.dir.join(format!("wrangler-{}.log", self.starts));
        let mut w = start_wrangler_logged(&self.tools, &self.dir, self.port, &vars, &log);
        let health = format!("{}/api/health", self.base());
        wait_until_ready(&mut w, http, &health, |t| t.contains("\"ok\":true")).await;
        w
    }
}

/// Creates `name` through the admin route and logs in; the cookie.
async fn user(http: &reqwest::Client, base: &str, name: &str) -> String {
    admin_user_login(http, base, base, ADMIN_TOKEN, name, PASSWORD).await
}

async fn get(http: &reqwest::Client, base: &str, cookie: &str, path: &str) -> (u16, Value) {
    let r = http
        .get(format!("{base}{path}"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let r = http
        .post(format!("{base}{path}"))
        .header("Cookie", cookie)
        .header("Origin", base)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `check` holds, polling; panics with `what` after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_restarts_of_wrangler_and_the_gateway() {
    let tools = Tools::find();
    // Kept after the run (logs of wrangler and the gateway for a failure),
    // replaced by the next one.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloudflare-e2e");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    eprintln!("logs and state in {}", root.display());
    init_repo(&root.join("projects/app"));
    std::fs::write(
        root.join("script.json"),
        r#"{"turns":[[{"step":"text","text":"checking the build","chunks":3},
            {"step":"tool","name":"Bash","input":{"command":"make"},"result":"built"},
            {"step":"text","text":"done","chunks":1}]]}"#,
    )
    .unwrap();

    // The worker, with the real UI as its assets.
    let dir = root.join("cf");
    let t = Instant::now();
    build_full_example(&tools, &dir);
    let built = t.elapsed();

    let gateway_port = free_port();
    let gateway = start_gateway(&root, gateway_port, 1).await;
    let mut deployment = Deployment {
        tools,
        dir,
        port: free_port(),
        gateway_port,
        starts: 0,
    };
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let t = Instant::now();
    let wrangler = deployment.start(&http).await;
    eprintln!(
        "worker-build {built:.1?}, wrangler ready {:.1?}",
        t.elapsed()
    );
    let base = deployment.base();

    // The UI is served, and an unknown path is the single-page app.
    let index = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let index = index.text().await.unwrap();
    assert!(index.contains("<title>Duraclaw</title>"), "{index}");
    let spa = http
        .get(format!("{base}/sessions/xyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(spa.text().await.unwrap(), index);

    let alice = user(&http, &base, "alice").await;
    let bob = user(&http, &base, "bob").await;

    // This deployment has no VAPID key: every push route, Approve / Deny
    // from a notification included, says push is not set up.
    let (status, body) = get(&http, &base, &alice, "/api/push/key").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not set up")),
        "{body}"
    );
    let (status, body) = post(&http, &base, &alice, "/api/push/act", json!({"token": "x"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not set up")),
        "{body}"
    );

    // 1. Create, stream, approve later.
    let (status, wts) = get(&http, &base, &alice, "/api/worktrees").await;
    assert_eq!(status, 200, "{wts}");
    let app = root.join("projects/app").display().to_string();
    assert!(
        wts.as_array().unwrap().iter().any(|w| w["path"] == app),
        "{wts}"
    );
    let (status, st) = get(&http, &base, &alice, "/api/status").await;
    assert_eq!(status, 200);
    assert_eq!(st["gateway"]["connected"], true, "{st}");

    let (status, s) = post(
        &http,
        &base,
        &alice,
        "/api/sessions",
        json!({"worktree": app, "prompt": "build it"}),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert_eq!(s["owner"], "alice");
    assert_eq!(s["title"], "build it");

    let mut one = Browser::connect(&base, &alice, &id, 0).await;
    let question = one.until(is("user_question")).await;
    let qid = question["question_id"].as_str().unwrap().to_owned();
    one.until(state_is("paused", Some("awaiting_approval")))
        .await;
    let n = one.last_seq();
    assert_eq!(one.events[0].1["type"], "user.message");
    assert_eq!(one.events[0].1["text"], "build it");

    // A second browser sees the same log.
    let mut two = Browser::connect(&base, &alice, &id, 0).await;
    assert_eq!(two.snapshot["last_seq"], n);
    assert_eq!(two.snapshot["reason"], "awaiting_approval");
    assert_eq!(two.snapshot["pending"][0]["question_id"], qid.as_str());
    two.until_seq(n).await;
    assert_eq!(two.events, one.events);

    // (Resuming after any seq, typed errors, pings and another user's
    // 404s are the API suite's, `cloudflare_api.rs`.)
    let (_, bobs) = get(&http, &base, &bob, "/api/sessions").await;
    assert_eq!(bobs, json!([]));
    let (_, alices) = get(&http, &base, &alice, "/api/sessions").await;
    assert_eq!(alices[0]["session_id"], id.as_str(), "{alices}");
    assert_eq!(alices[0]["pending_questions"], 1, "{alices}");

    // 2. Stop wrangler with the approval pending; start it again.
    let before = two.events.clone();
    drop(one);
    drop(two);
    drop(wrangler);
    let links = gateway.links();
    let wrangler = deployment.start(&http).await;
    // From here to the end of the turn is one wait, bounded as a whole
    // (the object reconnects by its alarm, on a busy machine slowly), not
    // a bound per frame.
    let step_end = Instant::now() + ALARM_DEADLINE + DEADLINE;
    // Nothing has touched the session yet: its alarm reconnects it.
    let t = Instant::now();
    eventually(
        ALARM_DEADLINE,
        "the session object reconnected to the gateway by itself",
        || async { gateway.links() > links },
    )
    .await;
    eprintln!(
        "after the restart the object reconnected in {:.1?}",
        t.elapsed()
    );
    let (status, s) = get(&http, &base, &alice, &format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["state"], "paused");
    assert_eq!(s["reason"], "awaiting_approval");
    assert_eq!(s["pending_questions"], 1);

    let mut one = Browser::connect_by(Some(step_end), &base, &alice, &id, n).await;
    assert_eq!(one.snapshot["last_seq"], n, "{}", one.snapshot);
    assert_eq!(one.snapshot["pending"][0]["question_id"], qid.as_str());
    let mut all = Browser::connect_by(Some(step_end), &base, &alice, &id, 0).await;
    all.until_seq(n).await;
    assert_eq!(all.events, before, "the history survived the restart");
    let mut two = Browser::connect_by(Some(step_end), &base, &alice, &id, n).await;

    let answered = one.last_seq();
    let r = one
        .command(
            "b-1",
            json!({"type": "answer", "question_id": qid, "decision": "allow"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    // (A retried answer and a late one are the API suite's.) The turn's
    // events may come before the answer's reply: look among those first.
    one.until_after(answered, is("result")).await;
    one.until_after(answered, state_is("paused", Some("idle")))
        .await;
    two.until_seq(one.last_seq()).await;
    assert_eq!(two.events, one.events, "both browsers saw the same events");
    // The idle phase has bounds of its own.
    one.deadline = None;
    two.deadline = None;
    let resolved = one
        .events
        .iter()
        .filter(|(_, e)| e["type"] == "question.resolved")
        .count();
    assert!(resolved >= 1, "the decision is logged");
    let tool_results = one
        .events
        .iter()
        .filter(|(_, e)| e["type"] == "tool_result")
        .count();
    assert_eq!(tool_results, 1, "the approved tool ran once");

    // Idle: the object lets its gateway link go at its next heartbeat and
    // then hibernates with the browsers' sockets open. Ping now and then
    // (each ping is answered, by a new instance once it hibernated) until a
    // new instance answers; then a message on the same socket still knows
    // its user, reconnects the gateway on demand, and both browsers see
    // the turn.
    let started = || {
        support::read_log(&wrangler.log)
            .matches("session object started")
            .count()
    };
    let instances = started();
    let deadline = Instant::now() + HIBERNATE_DEADLINE;
    let mut nonce = 100;
    while started() == instances {
        assert!(
            Instant::now() < deadline,
            "the idle object did not hibernate within {HIBERNATE_DEADLINE:?}"
        );
        // The poll's pace: a ping only after 12 s of quiet, so the object
        // can go idle in between.
        if let Ok(msg) = tokio::time::timeout(Duration::from_secs(12), one.ws.next()).await {
            let Some(Ok(Message::Text(t))) = msg else {
                panic!("the socket of an idle session ended: {msg:?}");
            };
            let f: Value = serde_json::from_str(t.as_str()).unwrap();
            assert!(one.take_event(&f), "an idle session sends only events: {f}");
            continue;
        }
        nonce += 1;
        one.send(json!({"type": "ping", "nonce": nonce})).await;
        assert_eq!(one.reply().await, json!({"type": "pong", "nonce": nonce}));
    }
    eprintln!("the idle object hibernated and woke");
    let r = one
        .command("b-3", json!({"type": "message", "text": "once more"}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    one.until(is("result")).await;
    one.until(state_is("paused", Some("idle"))).await;
    two.until_seq(one.last_seq()).await;
    assert_eq!(two.events, one.events, "both browsers saw the new turn");

    let (status, closed) = post(
        &http,
        &base,
        &alice,
        &format!("/api/sessions/{id}/close"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["state"], "terminated");
    one.until(state_is("terminated", None)).await;
    drop((one, two, all));

    // (A gateway SIGKILLed while a session waits for approval, and one
    // whose CLI is too old, are the API suite's, `cloudflare_api.rs`.)
    drop(gateway);
    drop(wrangler);
}
