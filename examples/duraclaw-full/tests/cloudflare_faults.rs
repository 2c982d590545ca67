//! The fault run on the Cloudflare path: the deploy worker
//! (`examples/duraclaw-full/cloudflare`, built with worker-build) under
//! `wrangler dev`, each session a Durable Object, against the real gateway
//! (`duraclaw gateway`, scripted executor), on 127.0.0.1 only:
//!
//! ```text
//! browsers ──► cutting proxy ──► wrangler dev (Worker + session objects) ──► cutting proxy ──► gateway
//! ```
//!
//! The proxy, the clients and the checks are the local fault run's
//! (`support/faults.rs`): seeded cuts, stalls and half-closes on both links,
//! a driver per session answering every approval and question and sending
//! the next message, observers, a client reconnecting with a stale `after`,
//! 50 browsers on one session. Process faults: `wrangler dev` stopped and
//! started again on the same `--persist-to` with a session parked on an
//! approval (still pending after it, then answered), the gateway SIGKILLed
//! and restarted (twice), and wrangler's process group (workerd included)
//! SIGKILLed and started again. Then every session settles, is closed, and every
//! client's stream is checked against the log: lost, duplicated, reordered
//! and mismatched all 0, every question resolved, every turn ended, every
//! session `terminated` with nothing pending.
//!
//! A second phase on the same deployment is endpoint abuse against the
//! Worker and the session object: malformed and oversized frames
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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use duraclaw_testkit::gateway as cf_gateway;
use duraclaw_testkit::wrangler as support;
use support::{
    Tools, Wrangler, admin_user_login, build_full_example, free_port, start_wrangler_logged,
};

use duraclaw_testkit::faults::{
    Ctx, Proxy, Rng, Ws, answer_for, check_log, drain_and_check, full_log_via, proxy_figures,
    spawn_clients,
};

const GATEWAY_SECRET: &str = "cf-faults-gateway-secret-0123456789";
const COOKIE_SECRET: &str = "cf-faults-cookie-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "cf-faults-admin-token-0123456789abcdef";
const SECRETS: [&str; 3] = [GATEWAY_SECRET, COOKIE_SECRET, ADMIN_TOKEN];
const PASSWORD: &str = "correct horse battery staple 42";
const SESSIONS: usize = 4;
const CROWD: usize = 50;
/// How long the faults run at least.
const CHAOS: Duration = Duration::from_secs(20);
/// How long any one expected thing may take.
const DEADLINE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------ processes

fn init_repo(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    git2::Repository::init(path).unwrap();
}

/// Turns that stream many small deltas, ask for a tool approval and ask a
/// question; prompts past the script get short echo turns.
fn script(root: &Path) -> PathBuf {
    let path = root.join("script.json");
    let turn = |n: usize| {
        json!([
            {"step": "text", "text": format!("Turn {n}: looking at the project, piece by piece, so that the stream has many small deltas."), "chunks": 16, "delay_ms": 10},
            {"step": "tool", "name": "Bash", "input": {"command": format!("ls {n}")}, "result": "README.md\nsrc"},
            {"step": "ask", "questions": [{"question": "Which change?", "header": "Change", "options": [{"label": "Add a test"}, {"label": "Fix a typo"}], "multiSelect": false}]},
            {"step": "text", "text": format!("Turn {n} done."), "chunks": 4, "delay_ms": 10}
        ])
    };
    std::fs::write(
        &path,
        json!({"turns": (0..30).map(turn).collect::<Vec<_>>()}).to_string(),
    )
    .unwrap();
    path
}

/// The gateway on a fixed port, its log in `gateway-<n>.log`.
struct Gateway {
    child: Child,
}

async fn start_gateway(root: &Path, port: u16, n: u64) -> Gateway {
    // The port may still be held for a moment after a SIGKILL.
    let until = Instant::now() + DEADLINE;
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "the gateway's port stayed busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = root.join(format!("gateway-{n}.log"));
    let child = cf_gateway::start(root, port, GATEWAY_SECRET, &log, DEADLINE).await;
    Gateway { child }
}

/// `wrangler dev` of the deploy worker: its directory, port and settings.
/// The secrets go in `.dev.vars` (as `wrangler secret put` would hold
/// them), never on a command line; the gateway URL (the gateway proxy) and
/// the public origin (the browser proxy) are plain vars.
struct Deployment {
    tools: Tools,
    dir: PathBuf,
    port: u16,
    gateway_url: String,
    public_origin: String,
    starts: u64,
}

impl Deployment {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self, http: &reqwest::Client) -> Wrangler {
        self.starts += 1;
        let vars = [
            ("CC_GATEWAY_URL", self.gateway_url.as_str()),
            ("DURACLAW_PUBLIC_ORIGIN", self.public_origin.as_str()),
        ];
        let log = self.dir.join(format!("wrangler-{}.log", self.starts));
        let mut w = start_wrangler_logged(&self.tools, &self.dir, self.port, &vars, &log);
        let health = format!("{}/api/health", self.base());
        support::wait_until_ready(&mut w, http, &health, |t| t.contains("\"ok\":true")).await;
        w
    }
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

/// Creates `name` through the admin route and logs in; the cookie.
async fn user(http: &reqwest::Client, base: &str, origin: &str, name: &str) -> String {
    admin_user_login(http, base, origin, ADMIN_TOKEN, name, PASSWORD).await
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

// ------------------------------------------------------------ the run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_under_faults_on_cloudflare() {
    let seed: u64 = std::env::var("DURACLAW_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c10d);
    println!("Cloudflare fault run: seed {seed}");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let tools = Tools::find();

    // Kept after the run (the logs, for a failure), replaced by the next.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloudflare-faults");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    eprintln!("logs and state in {}", root.display());
    script(&root);
    let mut repos = Vec::new();
    // One repository per session, one for the session parked on an
    // approval across the wrangler restart, one for the abuse phase.
    for i in 0..SESSIONS + 2 {
        let repo = root.join(format!("projects/app{i}"));
        init_repo(&repo);
        repos.push(repo.display().to_string());
    }

    // The worker, with the real UI as its assets, as cloudflare.rs builds it.
    let dir = root.join("cf");
    build_full_example(&tools, &dir);
    let built = started.elapsed();
    std::fs::write(
        dir.join(".dev.vars"),
        format!(
            "CC_GATEWAY_SECRET={GATEWAY_SECRET}\nDURACLAW_COOKIE_SECRET={COOKIE_SECRET}\nDURACLAW_ADMIN_TOKEN={ADMIN_TOKEN}\n"
        ),
    )
    .unwrap();

    let gw_port = free_port();
    let mut gw_starts = 1;
    let mut gw = start_gateway(&root, gw_port, gw_starts).await;
    let gw_proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], gw_port)),
        rng.next_u64(),
        32 * 1024,
    )
    .await;
    let port = free_port();
    let browser_proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], port)),
        rng.next_u64(),
        16 * 1024,
    )
    .await;
    let origin = format!("http://{}", browser_proxy.addr);
    let mut deployment = Deployment {
        tools,
        dir: dir.clone(),
        port,
        gateway_url: format!("http://{}", gw_proxy.addr),
        public_origin: origin.clone(),
        starts: 0,
    };
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let mut wrangler = Some(deployment.start(&http).await);
    eprintln!(
        "worker-build {built:.1?}, wrangler ready {:.1?}",
        started.elapsed()
    );
    let base = deployment.base();
    let direct = base.trim_start_matches("http://").to_owned();

    let alice = user(&http, &base, &origin, "alice").await;
    let bob = user(&http, &base, &origin, "bob").await;
    let mut ids = Vec::new();
    for repo in repos.iter().take(SESSIONS) {
        let (status, body) = request(
            &http,
            reqwest::Method::POST,
            &format!("{base}/api/sessions"),
            &alice,
            Some(&origin),
            Some(json!({"worktree": repo, "prompt": "look around"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let s: Value = serde_json::from_str(&body).unwrap();
        ids.push(s["session_id"].as_str().unwrap().to_owned());
    }

    let ctx = Arc::new(Ctx {
        browser: browser_proxy.addr,
        direct: Arc::new(Mutex::new(direct.clone())),
        cookie: alice.clone(),
        origin: Some(origin.clone()),
        chaos: AtomicBool::new(true),
        deadline: Instant::now() + Duration::from_secs(240),
        max_turns: u64::MAX,
    });
    let clients = spawn_clients(&ctx, &ids, &mut rng, CROWD, false);
    let (done_txs, drivers, crowd) = (clients.done, clients.drivers, clients.crowd);

    // Chaos: both proxies cut, stall and half-close; the gateway is
    // SIGKILLed and restarted, wrangler is stopped and started again on
    // the same state, then the gateway is SIGKILLed once more.
    browser_proxy.active.store(true, Ordering::Relaxed);
    gw_proxy.active.store(true, Ordering::Relaxed);
    let chaos_start = Instant::now();
    let (mut gw_kills, mut wrangler_restarts, mut pending_at_restart) = (0u64, 0u64, 0u64);
    // The restart comes first: until the first gateway SIGKILL every turn
    // follows the script (approvals and questions); a restarted gateway
    // runs echo turns.
    // Then a SIGKILL of wrangler's whole process group (workerd, which
    // runs the objects and their SQLite, included) in the middle of the
    // traffic: a crash, not a stop.
    let plan = [
        (rng.range(2_000, 4_000), 1u8),
        (rng.range(3_000, 5_000), 0u8),
        (rng.range(2_000, 3_500), 2u8),
        (rng.range(2_500, 4_000), 0u8),
    ];
    let mut wrangler_kills = 0u64;
    let (mut parked, mut parked_retries, mut parked_answers) = (String::new(), 0u64, 0u64);
    // Progress, for a run that goes slowly: turns ended so far at each
    // fault.
    let progress = |what: &str| {
        let ended: u64 = drivers
            .iter()
            .map(|d| d.ended.load(Ordering::Relaxed))
            .sum();
        eprintln!(
            "{:>5.1} s: {what} (turns ended so far {ended})",
            chaos_start.elapsed().as_secs_f64()
        );
    };
    for (ms, what) in plan {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        progress(match what {
            0 => "gateway SIGKILL",
            1 => "wrangler stop",
            _ => "wrangler SIGKILL",
        });
        if what == 2 {
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            let mut w = wrangler.take().unwrap();
            killpg(Pid::from_raw(w.child.id() as i32), Signal::SIGKILL).unwrap();
            w.child.wait().unwrap();
            drop(w);
            wrangler_kills += 1;
            let t = Instant::now();
            wrangler = Some(deployment.start(&http).await);
            progress(&format!("wrangler ready again after {:.1?}", t.elapsed()));
        } else if what == 0 {
            gw.child.start_kill().unwrap();
            gw.child.wait().await.unwrap();
            gw_kills += 1;
            gw_starts += 1;
            gw = start_gateway(&root, gw_port, gw_starts).await;
        } else {
            // A session parked on an approval, with no browser: it must
            // come back from the restart still waiting, and be answerable.
            // (Its creation needs the gateway link, which the proxy cuts:
            // a cut answers 502 and the create is tried again.)
            let until = Instant::now() + DEADLINE;
            let body = loop {
                let (status, body) = request(
                    &http,
                    reqwest::Method::POST,
                    &format!("{base}/api/sessions"),
                    &alice,
                    Some(&origin),
                    Some(json!({"worktree": repos[SESSIONS], "prompt": "park"})),
                )
                .await;
                if status == 201 {
                    break body;
                }
                assert!(
                    status == 502 && Instant::now() < until,
                    "creating the parked session: {status} {body}"
                );
                parked_retries += 1;
            };
            parked = serde_json::from_str::<Value>(&body).unwrap()["session_id"]
                .as_str()
                .unwrap()
                .to_owned();
            let until = Instant::now() + DEADLINE;
            while meta(&http, &base, &alice, &parked).await["pending_questions"] != 1 {
                assert!(Instant::now() < until, "the parked session never asked");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Every approval and question pending right now (the parked
            // one and the drivers') must survive the restart and be
            // answered after it (checked in the logs).
            let (_, list) = request(
                &http,
                reqwest::Method::GET,
                &format!("{base}/api/sessions"),
                &alice,
                None,
                None,
            )
            .await;
            let list: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
            pending_at_restart += list
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| s["pending_questions"].as_u64().unwrap_or(0))
                .sum::<u64>();
            drop(wrangler.take());
            wrangler_restarts += 1;
            let t = Instant::now();
            wrangler = Some(deployment.start(&http).await);
            progress(&format!("wrangler ready again after {:.1?}", t.elapsed()));
            let m = meta(&http, &base, &alice, &parked).await;
            assert_eq!(
                (&m["state"], &m["reason"], &m["pending_questions"]),
                (&json!("paused"), &json!("awaiting_approval"), &json!(1)),
                "the parked approval after the restart: {m}"
            );
            // Answered now, before a gateway SIGKILL withdraws it: its
            // turn goes on to its end.
            parked_answers = finish_turn(&direct, &origin, &alice, &parked).await;
            progress("the parked approval answered, its turn ended");
            assert!(parked_answers >= 2, "the parked approval and the question");
        }
    }
    progress("last process fault done");
    tokio::time::sleep_until((chaos_start + CHAOS).max(Instant::now() + Duration::from_secs(4)))
        .await;
    progress("faults end");
    let chaos_secs = chaos_start.elapsed().as_secs_f64();
    ctx.chaos.store(false, Ordering::Relaxed);
    browser_proxy.active.store(false, Ordering::Relaxed);
    gw_proxy.active.store(false, Ordering::Relaxed);

    // Settle: every driver has seen the end of every turn it started and
    // has nothing unconfirmed; every session is idle with nothing pending.
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let mut unsettled = Vec::new();
        for (d, id) in drivers.iter().zip(&ids) {
            let m = meta(&http, &base, &alice, id).await;
            let (sent, ended, out) = (
                d.sent.load(Ordering::Relaxed),
                d.ended.load(Ordering::Relaxed),
                d.outstanding.load(Ordering::Relaxed),
            );
            if !(ended >= sent
                && out == 0
                && m["state"] == "paused"
                && m["reason"] == "idle"
                && m["pending_questions"] == 0)
            {
                unsettled.push(format!(
                    "{id}: sent {sent} ended {ended} outstanding {out} state {} {} pending {}",
                    m["state"], m["reason"], m["pending_questions"]
                ));
            }
        }
        if unsettled.is_empty() {
            break;
        }
        if Instant::now() > until {
            let mut why = unsettled;
            for id in &ids {
                let (snap, log) = full_log_via(&direct, &origin, &alice, id).await;
                let tail: Vec<String> = log
                    .iter()
                    .enumerate()
                    .skip(log.len().saturating_sub(14))
                    .filter(|(_, e)| e["phase"] != "delta")
                    .map(|(i, e)| format!("  {} {}", i + 1, e))
                    .collect();
                why.push(format!("{id} {snap}\n{}", tail.join("\n")));
            }
            panic!(
                "seed {seed}: the sessions never settled:\n{}\nwrangler:\n{}",
                why.join("\n"),
                wrangler.as_ref().unwrap().log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled_after = chaos_start.elapsed().as_secs_f64() - chaos_secs;

    // The parked session, whose turn ended, is closed and checked.
    let (status, body) = request(
        &http,
        reqwest::Method::POST,
        &format!("{base}/api/sessions/{parked}/close"),
        &alice,
        Some(&origin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (snapshot, parked_log) = full_log_via(&direct, &origin, &alice, &parked).await;
    assert_eq!(snapshot["state"], "terminated", "{snapshot}");
    let parked_figures = check_log(&parked_log);
    assert!(
        !parked_figures.open_turn && parked_figures.turns == 1,
        "the parked session's turn ended"
    );

    // Close every session (a legal end), read each whole log from a fresh
    // client and let every client drain up to it.
    let mut logs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (status, body) = request(
            &http,
            reqwest::Method::POST,
            &format!("{base}/api/sessions/{id}/close"),
            &alice,
            Some(&origin),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (snapshot, log) = full_log_via(&direct, &origin, &alice, id).await;
        assert_eq!(snapshot["state"], "terminated", "{snapshot}");
        assert_eq!(snapshot["pending"], json!([]), "{snapshot}");
        done_txs[i].send(Some(log.len() as u64)).unwrap();
        logs.push(log);
    }
    let o = drain_and_check(clients.tasks, &logs, DEADLINE).await;
    for (i, id) in ids.iter().enumerate() {
        let (_, again) = full_log_via(&direct, &origin, &alice, id).await;
        assert_eq!(
            again, logs[i],
            "the log of session {i} changed after it ended"
        );
    }
    let (bc, bcut, bstall, bhalf) = proxy_figures(&browser_proxy.stats);
    let (gc, gcut, gstall, ghalf) = proxy_figures(&gw_proxy.stats);
    println!(
        "seed {seed}: chaos {chaos_secs:.1} s, settled {settled_after:.1} s later, total {:.1} s (worker-build {:.1} s)",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    println!(
        "sessions {SESSIONS} (+1 parked on an approval across the wrangler restart, {parked_answers} questions answered after it, under faults; its create cut {parked_retries} times), clients {} ({crowd} on session 0), turns {}, questions {} (answered {}, {} after a reconnect; {pending_at_restart} pending across the wrangler restart), events {}, delivered {}",
        o.clients, o.turns, o.questions, o.answered, o.answered_late, o.events, o.counts.delivered
    );
    println!(
        "faults: browser link {bc} connections: {bcut} cuts, {bstall} stalls, {bhalf} half-closes; gateway link {gc} connections: {gcut} cuts, {gstall} stalls, {ghalf} half-closes; gateway SIGKILL {gw_kills}; wrangler restarts {wrangler_restarts}; wrangler SIGKILL {wrangler_kills}; stale reconnects {} ({} events replayed and matched)",
        o.stale, o.counts.stale_replayed
    );
    println!(
        "faults by kind: cut {}, stall {}, half-close {}, gateway SIGKILL {gw_kills}, wrangler restart {wrangler_restarts}, wrangler SIGKILL {wrangler_kills}, stale reconnect {}; total {}",
        bcut + gcut,
        bstall + gstall,
        bhalf + ghalf,
        o.stale,
        bcut + gcut
            + bstall
            + gstall
            + bhalf
            + ghalf
            + gw_kills
            + wrangler_restarts
            + wrangler_kills
            + o.stale
    );
    o.assert_nothing_lost(seed);
    println!("turns that never ended {}", o.open_turns);
    assert_eq!(o.open_turns, 0, "seed {seed}: a turn left open");
    assert!(
        gw_kills == 2
            && wrangler_restarts == 1
            && wrangler_kills == 1
            && bcut + gcut > 0
            && o.stale > 0
    );
    assert!(
        o.turns > SESSIONS as u64,
        "seed {seed}: the sessions barely ran"
    );

    // ---------------------------------------------------------- abuse
    let t = Instant::now();
    let mut bodies: Vec<String> = Vec::new();
    abuse(
        &http,
        &base,
        &origin,
        &alice,
        &bob,
        &repos[SESSIONS + 1],
        &ids,
        &mut bodies,
    )
    .await;

    // Secrets: not in any error body (the gateway down, a wrong token, a
    // tampered cookie), not in wrangler's output nor the gateway's log, not
    // in any process's arguments.
    let pids = group_pids(wrangler.as_ref().unwrap().child.id());
    assert!(!pids.is_empty(), "wrangler's processes");
    let mut argv: Vec<String> = pids.iter().filter_map(|p| cmdline(*p)).collect();
    argv.extend(gw.child.id().and_then(cmdline));
    gw.child.start_kill().unwrap();
    gw.child.wait().await.unwrap();
    for (method, path, cookie, body) in [
        (reqwest::Method::GET, "/api/status", alice.as_str(), None),
        (reqwest::Method::GET, "/api/worktrees", alice.as_str(), None),
        (
            reqwest::Method::POST,
            "/api/sessions",
            alice.as_str(),
            Some(json!({"worktree": repos[0], "prompt": "the gateway is down"})),
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
            Some(&origin),
            body,
        )
        .await;
        bodies.push(b);
    }
    let almost = format!("{}x", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
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
    let mut logs_text = String::new();
    for n in 1..=deployment.starts {
        logs_text.push_str(&support::read_log(&dir.join(format!("wrangler-{n}.log"))));
    }
    for n in 1..=gw_starts {
        logs_text.push_str(&support::read_log(&root.join(format!("gateway-{n}.log"))));
    }
    assert!(
        logs_text.contains("gateway link") || logs_text.contains("session object"),
        "the worker's own log lines are in wrangler's output"
    );
    for secret in SECRETS {
        assert!(!logs_text.contains(secret), "a secret in a log");
        for b in &bodies {
            assert!(!b.contains(secret), "a secret in an error body: {b}");
        }
        for a in &argv {
            assert!(!a.contains(secret), "a secret in a process's arguments");
        }
    }
    println!(
        "abuse: {} answers, {} log bytes, {} processes' arguments checked for the 3 secrets, {:.1} s",
        bodies.len(),
        logs_text.len(),
        argv.len(),
        t.elapsed().as_secs_f64()
    );
    drop(wrangler);
}

/// The pids of a process group, from `/proc`.
fn group_pids(group: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if rest.split_whitespace().nth(2).and_then(|g| g.parse().ok()) == Some(group) {
            pids.push(pid);
        }
    }
    pids
}

fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

/// Endpoint abuse against the Worker and a session object; every answer's
/// body goes to `bodies` (checked for secrets by the caller).
#[allow(clippy::too_many_arguments)]
async fn abuse(
    http: &reqwest::Client,
    base: &str,
    origin: &str,
    alice: &str,
    bob: &str,
    repo: &str,
    ids: &[String],
    bodies: &mut Vec<String>,
) {
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
    let ws_path = format!("/api/sessions/{id}/ws?after=0");
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
    let n = finish_turn(direct, origin, alice, &id).await;
    assert!(n >= 2, "the approval and the question were answered");
}

/// Answers every pending and new question of session `id` (allow, first
/// option) until its turn's `result`; how many questions it answered.
async fn finish_turn(direct: &str, origin: &str, cookie: &str, id: &str) -> u64 {
    let ws_path = format!("/api/sessions/{id}/ws?after=0");
    let mut ws = upgrade(direct, &ws_path, cookie, Some(origin))
        .await
        .unwrap();
    let until = Instant::now() + DEADLINE;
    let mut answered = std::collections::HashSet::new();
    loop {
        assert!(Instant::now() < until, "the turn of {id} never ended");
        let f = next_frame(&mut ws, DEADLINE).await.expect("a frame");
        let questions: Vec<Value> = match f["type"].as_str() {
            Some("snapshot") => f["pending"].as_array().cloned().unwrap_or_default(),
            Some("event") if f["event"]["type"] == "user_question" => vec![f["event"].clone()],
            Some("event") if f["event"]["type"] == "result" => break,
            _ => continue,
        };
        for q in questions {
            let qid = q["question_id"].as_str().unwrap().to_owned();
            if answered.insert(qid.clone()) {
                let cmd =
                    json!({"type": "command", "id": format!("a-{qid}"), "command": answer_for(&q)});
                ws.send(Message::text(cmd.to_string())).await.unwrap();
            }
        }
    }
    answered.len() as u64
}
