//! The UI rendering a 10,000-event session replay in headless Chromium:
//! the time from the page's navigation start to the last event painted.
//!
//! Sets up the real `duraclaw orchestrator` (this package's binary) over a
//! data directory holding a user and one session of 10,000 events (turns of
//! streamed assistant text, its final message, a tool call and its result;
//! the last event the turn's result), and, as the baseline, a raw page
//! server: a minimal page whose script appends one `<div>` per event frame
//! received on a raw WebSocket, fed the same frames, batched. Then runs
//! `benches/ui_replay.mjs` under Node with Debian's Chromium and
//! playwright-core (the browser suite's tools), which alternates rounds of
//! the two and prints their times; this prints the JSON summary.
//!
//! `QUICK=1` (or `cargo test --bench ui`) runs 500 events, one round. Node,
//! Chromium and playwright-core missing fail the run with a hint, as the
//! browser suite does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use duraclaw_core::protocol::{
    Assistant, AssistantPhase, Event, ToolResult, ToolUse, TurnResult, browser_event_frame,
};
use duraclaw_core::store::{AppendBatch, NewEvent, SessionDirectory, SessionMeta};
use duraclaw_store::SqliteDirectory;
use futures::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
const SESSION: &str = "ui-replay-session";
const START_DEADLINE: Duration = Duration::from_secs(30);
const RUN_DEADLINE: Duration = Duration::from_secs(900);
const HINT: &str =
    "run `scripts/install-tools.sh chromium playwright` and `source scripts/tool-env.sh`";

fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    std::env::var_os("QUICK").is_some_and(|v| !v.is_empty() && v != "0")
        || !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--test")
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Node, Chromium and playwright-core, as the browser suite finds them.
fn tools() -> (PathBuf, PathBuf, PathBuf) {
    let node = env_path("NODE22_BIN")
        .or_else(|| on_path("node"))
        .unwrap_or_else(|| panic!("node is not installed: {HINT}"));
    let chromium = env_path("CHROMIUM_BIN")
        .or_else(|| on_path("chromium"))
        .unwrap_or_else(|| panic!("Debian's chromium is not installed: {HINT}"));
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let package: Value =
        serde_json::from_str(&std::fs::read_to_string(manifest.join("e2e/package.json")).unwrap())
            .unwrap();
    let pinned = package["devDependencies"]["playwright-core"]
        .as_str()
        .expect("e2e/package.json pins playwright-core")
        .to_owned();
    let playwright = env_path("PLAYWRIGHT_CORE").unwrap_or_else(|| {
        let cache = env_path("XDG_CACHE_HOME")
            .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| panic!("neither PLAYWRIGHT_CORE nor HOME is set: {HINT}"));
        cache.join(format!(
            "duraclaw/playwright-core-{pinned}/node_modules/playwright-core"
        ))
    });
    assert!(
        playwright.join("package.json").is_file(),
        "playwright-core is not at {}: {HINT}",
        playwright.display()
    );
    (node, chromium, playwright)
}

/// `duraclaw` with none of the settings of the calling shell.
fn duraclaw() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_duraclaw"));
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("CC_GATEWAY")
            || n.starts_with("DURACLAW_")
            || n.starts_with("CLAUDE")
            || n.starts_with("ANTHROPIC_")
            || n == "WORKTREE_PATTERNS"
        {
            c.env_remove(&name);
        }
    }
    c.env("RUST_LOG", "warn").kill_on_drop(true);
    c
}

async fn add_user(data: &Path) {
    let mut child = duraclaw()
        .args(["user", "add", USER, "--password-stdin", "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let status = tokio::time::timeout(START_DEADLINE, child.wait())
        .await
        .expect("user add did not finish")
        .unwrap();
    assert!(status.success(), "duraclaw user add failed");
}

fn text(seed: u64, len: usize) -> String {
    const WORDS: [&str; 12] = [
        "the", "session", "streams", "tokens", "while", "a", "tool", "runs", "and", "every",
        "event", "lands",
    ];
    let mut s = String::with_capacity(len + 12);
    let mut i = seed;
    while s.len() < len {
        s.push_str(WORDS[(i % 12) as usize]);
        s.push(' ');
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
    s.truncate(len);
    s
}

/// `n` events of turns: 40 deltas of one message, its final text, a tool
/// call and its result; the last event is the turn's result.
fn session_events(n: u64) -> Vec<Event> {
    let mut out = Vec::with_capacity(n as usize);
    let mut block = 0u64;
    while (out.len() as u64) < n - 1 {
        let id = format!("msg_{block:06}");
        let mut full = String::new();
        for d in 0..40 {
            let t = text(block * 64 + d, 120);
            full.push_str(&t);
            out.push(Event::Assistant(Assistant {
                message_id: id.clone(),
                phase: AssistantPhase::Delta,
                text: t,
                aborted: false,
            }));
        }
        out.push(Event::Assistant(Assistant {
            message_id: id.clone(),
            phase: AssistantPhase::Final,
            text: full,
            aborted: false,
        }));
        let tool = format!("toolu_{block:06}");
        out.push(Event::ToolUse(ToolUse {
            tool_use_id: tool.clone(),
            name: "Bash".into(),
            input: json!({"command": format!("ls src/{block}"), "description": "List files"}),
            message_id: Some(id),
        }));
        out.push(Event::ToolResult(ToolResult {
            tool_use_id: tool,
            content: Value::String(text(block, 150)),
            is_error: false,
        }));
        block += 1;
    }
    out.truncate(n as usize - 1);
    out.push(Event::Result(TurnResult {
        last_message_uuid: None,
        subtype: Some("success".into()),
        is_error: false,
        duration_ms: Some(120_000),
        cost_usd: Some(0.42),
        usage: None,
        num_turns: Some(block as u32),
        terminal_reason: Some("completed".into()),
    }));
    out
}

/// Stores the session; returns every event's browser frame.
async fn populate(data: &Path, n: u64) -> Vec<String> {
    let dir = SqliteDirectory::open(data.join("sessions.db"))
        .await
        .unwrap();
    let mut meta = SessionMeta::new(SESSION, USER, 1_700_000_000_000);
    meta.title = "A long session".into();
    let store = dir.create(meta).await.unwrap();
    let events = session_events(n);
    let mut frames = Vec::with_capacity(events.len());
    for (k, chunk) in events.chunks(1000).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let gseq = (k * 1000 + i + 1) as u64;
                NewEvent::new(e, Some(gseq), 1_700_000_000_000).unwrap()
            })
            .collect();
        let out = store.append(AppendBatch::events(batch)).await.unwrap();
        frames.extend(
            out.stored
                .iter()
                .map(|e| browser_event_frame(e.seq, &e.json)),
        );
    }
    assert_eq!(frames.len() as u64, n);
    frames
}

const RAW_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>raw</title></head>
<body><div id="log"></div><script>
const log = document.getElementById('log');
const ws = new WebSocket(`ws://${location.host}/ws`);
ws.onmessage = (m) => {
  const f = JSON.parse(m.data);
  const d = document.createElement('div');
  d.dataset.seq = f.seq;
  d.textContent = f.event.text ?? (typeof f.event.content === 'string' ? f.event.content : f.event.type);
  log.appendChild(d);
};
</script></body></html>"#;

async fn raw_ws(
    ws: WebSocketUpgrade,
    State(frames): State<std::sync::Arc<Vec<String>>>,
) -> impl IntoResponse {
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        for f in frames.iter() {
            if socket.feed(Message::Text(f.clone().into())).await.is_err() {
                return;
            }
        }
        if socket.flush().await.is_err() {
            return;
        }
        // Stay open until the page goes.
        while let Some(Ok(_)) = futures::StreamExt::next(&mut socket).await {}
    })
}

async fn raw_server(frames: Vec<String>) -> String {
    let app = Router::new()
        .route("/", get(|| async { Html(RAW_PAGE) }))
        .route("/ws", get(raw_ws))
        .with_state(std::sync::Arc::new(frames));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = quick();
    let (n, rounds) = if quick { (500u64, 1u32) } else { (10_000, 5) };
    let (node, chromium, playwright) = tools();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    add_user(&data).await;
    let frames = populate(&data, n).await;
    let raw_url = raw_server(frames).await;

    let mut orch = duraclaw()
        .args(["orchestrator", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        // No gateway runs: the session is only read.
        .args(["--gateway-url", "ws://127.0.0.1:9"])
        .env("CC_GATEWAY_SECRET", "ui-bench-gateway-secret-0123456789")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(orch.stdout.take().unwrap()).lines();
    let ours_url = tokio::time::timeout(START_DEADLINE, async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("duraclaw exited before it listened");
            if let Some(rest) = line.strip_prefix("duraclaw listening on ") {
                break rest.trim().to_owned();
            }
        }
    })
    .await
    .expect("duraclaw did not listen in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/ui_replay.mjs");
    let out = tokio::time::timeout(
        RUN_DEADLINE,
        Command::new(&node)
            .arg(&script)
            .env("UI_PLAYWRIGHT_CORE", &playwright)
            .env("UI_CHROMIUM", &chromium)
            .env("UI_OURS_URL", &ours_url)
            .env("UI_RAW_URL", &raw_url)
            .env("UI_SESSION", SESSION)
            .env("UI_EVENTS", n.to_string())
            .env("UI_ROUNDS", rounds.to_string())
            .env("UI_USER", USER)
            .env("UI_PASSWORD", PASSWORD)
            .env("TMPDIR", tmp.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run did not finish in time")
    .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let _ = orch.kill().await;
    let report = json!({
        "bench": "ui",
        "quick": quick,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "events": n,
        "rounds": rounds,
        "ours_time_to_last_painted_ms": result["ours_median_ms"],
        "raw_time_to_last_painted_ms": result["raw_median_ms"],
        "ratio_median": result["ratio_median"],
        "ours_ms": result["ours_ms"],
        "raw_ms": result["raw_ms"],
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
