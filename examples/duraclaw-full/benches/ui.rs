//! Opening a long session in the UI costs one screen, not its history:
//! headless Chromium at phone size (390×844, CPU throttled 4× through the
//! DevTools protocol), from the page's navigation start to the last event
//! painted with the stream connected, for a session of 100,000 events
//! against one of 1,000 (the ratio, median of alternating rounds); and the
//! bytes of a full replay (`after=0`) with closed messages compacted
//! against the same with `compact=0`, for that session and for one whose
//! messages stream the same text in token-sized deltas (1,200 of 4
//! characters), as the CLI does; and the same full replays compressed
//! (`compress=deflate-raw`), for that session and for one of the same shape
//! whose text is lines of this repository's docs and source (what a coding
//! agent writes; the twelve words of the others compress unrealistically
//! well).
//!
//! Sets up the real `duraclaw orchestrator` (this package's binary) over a
//! data directory holding a user and the two sessions (turns of streamed
//! assistant text, its final message, a tool call and its result; the last
//! event the turn's result), then runs `benches/ui_replay.mjs` under Node
//! with Debian's Chromium and playwright-core (the browser suite's tools);
//! this prints the JSON summary.
//!
//! `QUICK=1` (or `cargo test --bench ui`) runs 500 against 5,000 events, one
//! round; `UI_ROUNDS=<n>` sets the rounds; `UI_PROFILE=<file>` adds one open
//! of the big session under the CPU profiler and writes where its time went
//! to that file (and the raw profile beside it); `UI_TRACE=<file>` adds one
//! open traced by Chromium (timeline, scripts, layout, paint) into that file;
//! `UI_BYTES=0` leaves out the replay byte counts (times only). Node, Chromium and playwright-core missing fail the run with a
//! hint, as the browser suite does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use duraclaw_core::protocol::{Assistant, AssistantPhase, Event, ToolResult, ToolUse, TurnResult};
use duraclaw_core::store::{AppendBatch, NewEvent, SessionDirectory, SessionMeta};
use duraclaw_store::SqliteDirectory;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";
const SMALL: &str = "ui-replay-small";
const BIG: &str = "ui-replay-big";
const TOKENS: &str = "ui-replay-tokens";
const PROSE: &str = "ui-replay-prose";
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

/// Lines of this repository's docs and Rust source, in path order: text
/// as a coding agent writes it.
fn corpus() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md" || x == "rs") {
                out.push(p);
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    walk(&root.join("docs"), &mut files);
    walk(&root.join("crates"), &mut files);
    files.sort();
    let lines: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(lines.len() > 10_000, "the repository's docs and source");
    lines
}

/// `len` bytes of consecutive corpus lines from a place `seed` picks.
fn prose(corpus: &[String], seed: u64, len: usize) -> String {
    let mut i = (seed.wrapping_mul(6_364_136_223_846_793_005) >> 17) as usize % corpus.len();
    let mut s = String::with_capacity(len + 200);
    while s.len() < len {
        s.push_str(&corpus[i]);
        s.push('\n');
        i = (i + 1) % corpus.len();
    }
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
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

/// `n` events of turns: `deltas` deltas of one message (4,800 characters
/// in all, from `text`), its final text, a tool call and its result; the
/// last event is the turn's result.
fn session_events(n: u64, deltas: u64, text: &dyn Fn(u64, usize) -> String) -> Vec<Event> {
    let piece = usize::try_from(4_800 / deltas).unwrap();
    let mut out = Vec::with_capacity(n as usize);
    let mut block = 0u64;
    while (out.len() as u64) < n - 1 {
        let id = format!("msg_{block:06}");
        let mut full = String::new();
        for d in 0..deltas {
            let t = text(block * 64 + d, piece);
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
        let block_text = text(block, 150);
        out.push(Event::ToolUse(ToolUse {
            tool_use_id: tool.clone(),
            name: "Bash".into(),
            input: json!({"command": format!("ls src/{block}"), "description": "List files"}),
            message_id: Some(id),
        }));
        out.push(Event::ToolResult(ToolResult {
            tool_use_id: tool,
            content: Value::String(block_text),
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

/// Stores session `id` of `n` events.
async fn populate(
    dir: &SqliteDirectory,
    id: &str,
    n: u64,
    deltas: u64,
    text: &dyn Fn(u64, usize) -> String,
) {
    let mut meta = SessionMeta::new(id, USER, 1_700_000_000_000);
    meta.title = format!("A session of {n} events");
    let store = dir.create(meta).await.unwrap();
    let events = session_events(n, deltas, text);
    let mut stored = 0u64;
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
        stored += out.stored.len() as u64;
    }
    assert_eq!(stored, n);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = quick();
    let (small, big, tokens, rounds) = if quick {
        (500u64, 5_000u64, 5_000u64, 1u32)
    } else {
        (1_000, 100_000, 100_000, 5)
    };
    // UI_ROUNDS=<n>: more (or fewer) rounds, e.g. a quick run of 9.
    let rounds = std::env::var("UI_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(rounds);
    let (node, chromium, playwright) = tools();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    add_user(&data).await;
    {
        let dir = SqliteDirectory::open(data.join("sessions.db"))
            .await
            .unwrap();
        populate(&dir, SMALL, small, 40, &text).await;
        populate(&dir, BIG, big, 40, &text).await;
        // The same text streamed as the CLI does: token-sized deltas.
        populate(&dir, TOKENS, tokens, 1_200, &text).await;
        // The big session's shape with realistic text.
        let corpus = corpus();
        populate(&dir, PROSE, big, 40, &|seed, len| prose(&corpus, seed, len)).await;
    }

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
            .env("UI_URL", &ours_url)
            .env("UI_SMALL", SMALL)
            .env("UI_SMALL_EVENTS", small.to_string())
            .env("UI_BIG", BIG)
            .env("UI_BIG_EVENTS", big.to_string())
            .env("UI_TOKENS", TOKENS)
            .env("UI_TOKENS_EVENTS", tokens.to_string())
            .env("UI_PROSE", PROSE)
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
    let mut report = json!({
        "bench": "ui",
        "quick": quick,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "viewport": "390x844",
        "cpu_throttling": 4,
    });
    if let (Some(r), Some(o)) = (report.as_object_mut(), result.as_object()) {
        r.extend(o.clone());
    }
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
