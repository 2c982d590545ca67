#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The fault-injection runs on the local host. The first is the fault run
//! both hosts share (`duraclaw_testkit::fault_run`): scripted sessions in a
//! split deployment (`duraclaw gateway` + `duraclaw orchestrator`), with a
//! seeded cutting proxy on both links, SIGKILLed gateways, orchestrator
//! SIGKILLs (one with a session parked on an approval), stale and slow
//! clients and 50 clients on one session; every client's (seq, event) list
//! is compared with the full log: nothing lost, nothing twice, nothing out
//! of order, no turn left open, and the slow reader caught up by replay at
//! least once.
//!
//! The other two are faults of the executor under the gateway, the same
//! gateway on both hosts, so they run here only. A second test SIGKILLs the
//! executor's CLI process mid-turn (a stand-in CLI run by the real Claude
//! executor). A third runs the pinned Claude Code CLI itself against the
//! fake Messages API in three sessions, through the same proxies, with a
//! CLI SIGKILL mid-turn, a gateway SIGKILL and an orchestrator SIGKILL
//! each while an approval waits.
//!
//! `DURACLAW_FAULT_SEED=N` picks the seed (printed on every run);
//! `DURACLAW_SOAK_SECS=N` makes the chaos phase last N seconds and reports
//! the orchestrator's memory growth (see `docs/RELIABILITY.md`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use duraclaw_testkit::fault_run;
use duraclaw_testkit::faults as fault_support;
use duraclaw_testkit::host::LocalHost;
use fault_support::*;

const SECRET: &str = "fault-run-gateway-secret-0123456789";
/// The orchestrator's live queue per client, in events.
const LIVE_QUEUE: usize = 16;

use duraclaw_testkit::local as support;
use support::{DEADLINE, PASSWORD, add_user, free_port, login_with, next_event, spawn_reading};

// ---------------------------------------------------------------- processes

/// `duraclaw` with the run's gateway secret, logging errors only.
fn duraclaw() -> Command {
    let mut c = support::duraclaw("error");
    c.env("CC_GATEWAY_SECRET", SECRET);
    c
}

async fn orchestrator(data: &Path, gateway: SocketAddr) -> (Child, String) {
    let mut c = duraclaw();
    c.args([
        "orchestrator",
        "--bind",
        "127.0.0.1:0",
        "--gateway-url",
        &format!("ws://{gateway}"),
        // A short live queue, so that the slow reader overflows it and is
        // caught up by replay many times in a run.
        "--live-queue",
        &LIVE_QUEUE.to_string(),
        "--client-send-buffer",
        "4096",
    ])
    .arg("--data-dir")
    .arg(data);
    spawn_reading(c, "duraclaw listening on ").await
}

/// Closes session `id` and reads its whole log from a fresh client: the
/// session ended (terminated) with nothing pending.
async fn close_and_read(http: &reqwest::Client, base: &str, cookie: &str, id: &str) -> Vec<Value> {
    let r = http
        .post(format!("{base}/api/sessions/{id}/close"))
        .header("origin", base)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (snapshot, log) = full_log(base, cookie, id).await;
    assert_eq!(snapshot["state"], "terminated", "{snapshot}");
    assert_eq!(snapshot["pending"], json!([]), "{snapshot}");
    log
}

// ---------------------------------------------------------------- the run

/// The fault run written once for both hosts (`duraclaw_testkit::fault_run`,
/// also run on Cloudflare by `cloudflare_faults.rs`), on the split local
/// deployment with a short live queue, so that the slow reader overflows it
/// and is caught up by replay many times in a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_under_faults() {
    let plan = fault_run::Plan {
        default_seed: 0x5eed_d0c5,
        sessions: 6,
        crowd: 50,
        chaos: Duration::from_secs(14),
        slow_reader: true,
        settle: Duration::from_secs(15),
        orchestrator_args: vec![
            "--live-queue".into(),
            LIVE_QUEUE.to_string(),
            "--client-send-buffer".into(),
            "4096".into(),
        ],
        acp_session: true,
    };
    fault_run::run(plan, LocalHost::start_with).await;
}

// ------------------------------------------------------- SIGKILL of the CLI

/// A stand-in for the `claude` CLI, run by the real Claude executor of the
/// gateway: it speaks the stream-json protocol (answers `initialize`, and
/// streams each turn as 30 assistant messages 50 ms apart, then a result)
/// and records its pid, so that the test can SIGKILL it mid-turn.
fn fake_cli(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let bin = dir.join("claude");
    let script = format!(
        r#"#!/bin/sh
[ "$1" = --version ] && {{ echo '2.1.332 (Claude Code)'; exit 0; }}
echo $$ >> '{pids}'
N=0
while IFS= read -r line; do
  case "$line" in
    *'"subtype":"initialize"'*)
      id=$(printf '%s\n' "$line" | sed -n 's/.*"request_id":"\([^"]*\)".*/\1/p')
      printf '{{"type":"control_response","response":{{"subtype":"success","request_id":"%s","response":{{}}}}}}\n' "$id"
      ;;
    *'"type":"user"'*)
      N=$((N + 1))
      printf '%s\n' '{{"type":"system","subtype":"init","session_id":"fake-cli-1","model":"fake","tools":[]}}'
      K=0
      while [ $K -lt 30 ]; do
        K=$((K + 1))
        printf '{{"type":"assistant","message":{{"content":[{{"text":"part %s of turn %s","type":"text"}}],"id":"msg_%s_%s_%s","role":"assistant","type":"message"}},"parent_tool_use_id":null,"session_id":"fake-cli-1"}}\n' "$K" "$N" "$$" "$N" "$K"
        sleep 0.05
      done
      printf '%s\n' '{{"type":"result","subtype":"success","is_error":false,"session_id":"fake-cli-1","total_cost_usd":0.001}}'
      ;;
  esac
done
"#,
        pids = dir.join("pids").display()
    );
    std::fs::write(&bin, script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The newest pid the fake CLI recorded, once it differs from `old`.
async fn cli_pid(dir: &Path, old: Option<u32>) -> u32 {
    let until = Instant::now() + DEADLINE;
    loop {
        let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
        if let Some(pid) = pids.lines().last().and_then(|l| l.trim().parse().ok())
            && Some(pid) != old
        {
            return pid;
        }
        assert!(Instant::now() < until, "the CLI never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_cli_ends_its_turn_and_the_session_goes_on() {
    const KILLS: u64 = 4;
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    let repo = tmp.path().canonicalize().unwrap().join("projects/app");
    std::fs::create_dir_all(&repo).unwrap();
    git2::Repository::init(&repo).unwrap();
    let fake_dir = tmp.path().join("fake");
    let bin = fake_cli(&fake_dir);

    let port = free_port();
    let mut c = duraclaw();
    c.args(["gateway", "--executor", "claude", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--worktrees")
        .arg(format!(
            "{}/projects/*",
            tmp.path().canonicalize().unwrap().display()
        ))
        .arg("--claude-bin")
        .arg(&bin)
        .arg("--data-dir")
        .arg(tmp.path().join("gw"));
    let (_gw, _) = spawn_reading(c, "gateway listening on ").await;
    let (_orch, base) = orchestrator(&data, SocketAddr::from(([127, 0, 0, 1], port))).await;

    let http = reqwest::Client::new();
    let cookie = login_with(&http, &base, "alice", PASSWORD).await.unwrap();
    let until = Instant::now() + DEADLINE;
    let session = loop {
        let r = http
            .post(format!("{base}/api/sessions"))
            .header("origin", &base)
            .header("cookie", &cookie)
            .json(&json!({"worktree": repo.display().to_string(), "prompt": "start"}))
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            break r.json::<Value>().await.unwrap()["session_id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
        // The gateway link may not be up yet.
        assert!(
            Instant::now() < until,
            "cannot create a session: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Each turn: wait until the CLI streams, SIGKILL it, wait for the turn
    // to end, send the next message (a new CLI resumes the session).
    let addr = base.trim_start_matches("http://").to_owned();
    let mut ws = connect(&addr, &base, &cookie, &session, 0, false)
        .await
        .unwrap();
    let mut received: Vec<(u64, Value)> = Vec::new();
    let mut pid = None;
    let mut kills = 0;
    let mut errors = Vec::new();
    for turn in 0..=KILLS {
        let this = cli_pid(&fake_dir, if turn == 0 { None } else { pid }).await;
        pid = Some(this);
        // Mid-turn: after the first streamed message.
        loop {
            let (seq, e) = next_event(&mut ws).await;
            received.push((seq, e.clone()));
            if e["type"] == "assistant" {
                break;
            }
        }
        if turn < KILLS {
            let status = std::process::Command::new("kill")
                .args(["-KILL", &this.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            kills += 1;
        }
        // The turn ends: an error for a killed CLI, a result otherwise.
        let end = loop {
            let (seq, e) = next_event(&mut ws).await;
            received.push((seq, e.clone()));
            if e["type"] == "error" || e["type"] == "result" {
                break e;
            }
        };
        if turn < KILLS {
            assert_eq!(end["type"], "error", "{end}");
            errors.push(end["code"].as_str().unwrap_or("").to_owned());
            let f = json!({"type": "command", "id": format!("msg-{turn}"),
                "command": {"type": "message", "text": format!("go on ({turn})")}});
            ws.send(Message::text(f.to_string())).await.unwrap();
        } else {
            assert_eq!(end["type"], "result", "{end}");
        }
    }
    let r = http
        .post(format!("{base}/api/sessions/{session}/close"))
        .header("origin", &base)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (snapshot, log) = full_log(&base, &cookie, &session).await;
    assert_eq!(snapshot["state"], "terminated", "{snapshot}");
    // The stream this client got is the log's, once each, in order.
    let n = received.len();
    let seqs: Vec<u64> = received.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>(), "dense, in order");
    for (seq, e) in &received {
        assert_eq!(&log[*seq as usize - 1], e, "event {seq} matches the log");
    }
    // Every turn started by a message ended, once.
    let LogFigures {
        turns,
        open_turn: open,
        ..
    } = check_log(&log);
    assert!(!open, "a turn was left open");
    assert_eq!(turns, KILLS + 1);
    let ends = log
        .iter()
        .filter(|e| e["type"] == "error" || e["type"] == "result")
        .count() as u64;
    assert_eq!(ends, KILLS + 1, "one end per turn");
    println!(
        "CLI SIGKILL run: 1 session, turns {}, CLI SIGKILL {kills} (turn ends: {errors:?}), events {}, received {n}, lost 0, duplicated 0, reordered 0; {:.1} s",
        KILLS + 1,
        log.len(),
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------- real CLI sessions

/// `duraclaw gateway --executor claude` on 127.0.0.1:`port` running `bin`
/// (the pinned Claude Code CLI) against `fake`, its data in `dir/gw` and
/// the CLI's home, config and temporary directories in `dir/private`, once
/// it listens (waiting first, bounded, for a SIGKILLed predecessor's port).
async fn claude_gateway(
    dir: &Path,
    port: u16,
    bin: &Path,
    fake: &duraclaw_fake_anthropic::FakeAnthropic,
    worktrees: &str,
) -> Child {
    let private = dir.join("private");
    for d in ["home", "config", "tmp"] {
        std::fs::create_dir_all(private.join(d)).unwrap();
    }
    let mut c = duraclaw();
    if let Ok(filter) = std::env::var("DURACLAW_FAULTS_GATEWAY_LOG") {
        c.env("RUST_LOG", filter);
    }
    c.args(["gateway", "--executor", "claude", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--model", "claude-sonnet-4-5", "--worktrees", worktrees])
        .arg("--claude-bin")
        .arg(bin)
        .arg("--claude-config-dir")
        .arg(private.join("config"))
        .arg("--data-dir")
        .arg(dir.join("gw"))
        // Inherited by the CLI: the fake API, no traffic elsewhere.
        .env("ANTHROPIC_BASE_URL", fake.base_url())
        .env("ANTHROPIC_API_KEY", "test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_ENTRYPOINT", "sdk-py")
        .env("HOME", private.join("home"))
        .env("TMPDIR", private.join("tmp"));
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
        && std::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    spawn_reading(c, "gateway listening on ").await.0
}

/// Live processes (not zombies) whose working directory is `cwd` or below
/// it, and whose parent is `parent` when given.
fn procs_in(cwd: &Path, parent: Option<u32>) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(dir) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        // `stat` is "pid (comm) state ppid ...": comm may hold spaces.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let mut rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace())
            .into_iter()
            .flatten();
        let state = rest.next();
        let ppid: Option<u32> = rest.next().and_then(|p| p.parse().ok());
        if dir.starts_with(cwd)
            && state.is_some_and(|s| s != "Z")
            && parent.is_none_or(|p| ppid == Some(p))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Polls session `session`'s whole log (read directly, no faults) until
/// `done` holds (bounded): the log then.
async fn wait_log(
    direct: &Mutex<String>,
    cookie: &str,
    session: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let until = Instant::now() + DEADLINE;
    loop {
        let base = format!("http://{}", direct.lock().unwrap());
        let (_, log) = full_log(&base, cookie, session).await;
        if done(&log) {
            return log;
        }
        assert!(
            Instant::now() < until,
            "{session}: never {what}; log:\n{}",
            log.iter()
                .filter(|e| e["phase"] != "delta")
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Turns ended (`result` or `error`) in a log.
fn ends(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|e| e["type"] == "result" || e["type"] == "error")
        .collect()
}

/// The questions asked and not resolved in a log.
fn open_questions(log: &[Value]) -> Vec<Value> {
    let resolved: HashSet<&Value> = log
        .iter()
        .filter(|e| e["type"] == "question.resolved")
        .map(|e| &e["question_id"])
        .collect();
    log.iter()
        .filter(|e| e["type"] == "user_question" && !resolved.contains(&e["question_id"]))
        .cloned()
        .collect()
}

/// Sends `cmd` under `id` through the browser proxy, reconnecting and
/// sending it again under the same id (applied once) until its
/// `command_result` comes (bounded); that result.
async fn command(ctx: &Ctx, session: &str, id: &str, cmd: Value) -> Value {
    let addr = ctx.browser.to_string();
    let frame = json!({"type": "command", "id": id, "command": cmd}).to_string();
    let until = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < until,
            "{session}: command {id} never confirmed"
        );
        // The proxy is transparent: the server's own origin.
        let origin = format!("http://{}", ctx.direct.lock().unwrap());
        let Some(mut ws) = connect(&addr, &origin, &ctx.cookie, session, 0, false).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if ws.send(Message::text(frame.clone())).await.is_err() {
            continue;
        }
        loop {
            let f = match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    serde_json::from_str::<Value>(t.as_str()).unwrap()
                }
                Ok(Some(Ok(_))) => continue,
                _ => break,
            };
            if f["type"] == "command_result" && f["id"] == id {
                return f;
            }
        }
    }
}

/// Whether a command took effect: `ok`, or (an answer sent again after a
/// cut hid its first result) already decided.
fn applied(result: &Value) -> bool {
    result["ok"] == true || result["error"]["code"] == "already_decided"
}

/// Two or three sessions (each its own worktree) running the pinned
/// Claude Code CLI through `duraclaw gateway --executor claude` and
/// `duraclaw orchestrator`, with the cutting proxy on both links and an
/// observer and a stale client per session, while: the CLI is SIGKILLed
/// mid-turn (session A; the next message resumes it); the gateway is
/// SIGKILLed while a tool call waits for approval (session B: the
/// restarted gateway withdraws the question and ends the turn, the next
/// message resumes the CLI, which asks again, and that is answered); the
/// orchestrator is restarted while an approval waits (session C: it
/// survives and is answered). The fake Messages API serves the turns in
/// the order the steps run, so the steps run one after another; the
/// faults on the links and the clients run all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_cli_sessions_survive_faults() {
    use duraclaw_fake_anthropic::{FakeAnthropic, Latch, Turn};
    let seed: u64 = std::env::var("DURACLAW_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d0c5);
    println!("real CLI fault run: seed {seed}");
    let mut rng = Rng::new(seed ^ 0xc11);
    let started = Instant::now();
    let bin = duraclaw_gateway::cli::launch::bin_path()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the Claude Code CLI {} is not installed: run `scripts/install-tools.sh claude`, \
                 or point CLAUDE_BIN at a claude binary",
                duraclaw_gateway::cli::launch::CLI_VERSION
            )
        });

    let mut tmp = tempfile::tempdir().unwrap();
    if std::env::var_os("DURACLAW_FAULTS_KEEP").is_some() {
        println!("data kept in {}", tmp.path().display());
        tmp.disable_cleanup(true);
    }
    let root = tmp.path().canonicalize().unwrap();
    let data = root.join("data");
    add_user(&data, "alice").await;
    let projects = root.join("projects");
    let names = ["a", "b", "c"];
    for n in names {
        support::init_repo(
            &projects.join(n),
            &[("README.md", &format!("# {n}\n\nProject {n}.\n"))],
        );
    }
    let readme = |n: &str| projects.join(n).join("README.md").display().to_string();
    let patterns = format!("{}/*", projects.display());

    // The model's turns, in the order the steps below ask for them.
    let hold = Latch::new();
    let fake = FakeAnthropic::start([
        Turn::text("A: hello, I am looking at the project."),
        Turn::text("A: a long answer that the test cuts short by killing the CLI while it streams, piece by piece.")
            .with_hold(3, &hold),
        Turn::text("A: going on after the kill."),
        Turn::tool_use("Read", json!({"file_path": readme("b")})),
        Turn::tool_use("Read", json!({"file_path": readme("b")})),
        Turn::text("B: the README names project b."),
        Turn::tool_use("Read", json!({"file_path": readme("c")})),
        Turn::text("C: the README names project c."),
    ])
    .await
    .unwrap();

    let gw_port = free_port();
    let mut gw = claude_gateway(&root, gw_port, &bin, &fake, &patterns).await;
    let gw_proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], gw_port)),
        rng.next_u64(),
        8 * 1024,
    )
    .await;
    let (mut orch, base) = orchestrator(&data, gw_proxy.addr).await;
    let direct = Arc::new(Mutex::new(base.trim_start_matches("http://").to_owned()));
    let browser_proxy = Proxy::start(
        base.trim_start_matches("http://").parse().unwrap(),
        rng.next_u64(),
        4 * 1024,
    )
    .await;
    let http = reqwest::Client::new();
    let cookie = login_with(&http, &base, "alice", PASSWORD).await.unwrap();
    let ctx = Arc::new(Ctx {
        browser: browser_proxy.addr,
        direct: direct.clone(),
        cookie: cookie.clone(),
        origin: None,
        chaos: AtomicBool::new(false),
        deadline: Instant::now() + Duration::from_secs(120),
        max_turns: 0,
    });
    browser_proxy.active.store(true, Ordering::Relaxed);
    gw_proxy.active.store(true, Ordering::Relaxed);

    // Sessions are created directly (REST is not under test here), each
    // when its step starts, with an observer and a stale client.
    let mut ids: Vec<String> = Vec::new();
    let mut done_txs = Vec::new();
    let mut tasks: Vec<(usize, Role, tokio::task::JoinHandle<ClientLog>)> = Vec::new();
    let mut create = async |name: &str, prompt: &str| -> String {
        let until = Instant::now() + DEADLINE;
        let id = loop {
            let base = format!("http://{}", direct.lock().unwrap());
            let r = http
                .post(format!("{base}/api/sessions"))
                .header("origin", &base)
                .header("cookie", &cookie)
                .json(&json!({"worktree": projects.join(name).display().to_string(), "prompt": prompt}))
                .send()
                .await
                .unwrap();
            if r.status() == 201 {
                break r.json::<Value>().await.unwrap()["session_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            }
            // The gateway link may be down (cut) for a moment.
            assert!(
                Instant::now() < until,
                "cannot create {name}: {}",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (tx, rx) = watch::channel(None::<u64>);
        for role in [Role::Observer, Role::Stale] {
            tasks.push((
                ids.len(),
                role,
                tokio::spawn(client(
                    ctx.clone(),
                    id.clone(),
                    role,
                    rng.next_u64(),
                    rx.clone(),
                    Arc::new(DriverState::default()),
                )),
            ));
        }
        done_txs.push(tx);
        ids.push(id.clone());
        id
    };
    let kill = |pid: u32| {
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    // A: a turn, then the CLI is SIGKILLed mid-stream of the next; the
    // turn ends with an error and the next message resumes the CLI.
    let a = create("a", "Say hello").await;
    wait_log(&direct, &cookie, &a, "ended its first turn", |l| {
        ends(l).len() == 1
    })
    .await;
    let msg = command(
        &ctx,
        &a,
        "a-1",
        json!({"type": "message", "text": "Tell me more"}),
    )
    .await;
    assert!(applied(&msg), "{msg}");
    tokio::time::timeout(DEADLINE, hold.reached())
        .await
        .expect("the second turn streams");
    let gw_pid = gw.id().unwrap();
    let cli = procs_in(&projects.join("a"), Some(gw_pid));
    assert_eq!(cli.len(), 1, "one CLI in a: {cli:?}");
    kill(cli[0]);
    let cli_kills = 1;
    hold.release();
    let log = wait_log(&direct, &cookie, &a, "ended the killed turn", |l| {
        ends(l).len() == 2
    })
    .await;
    let killed_end = ends(&log)[1].clone();
    assert_eq!(killed_end["type"], "error", "{killed_end}");
    let msg = command(&ctx, &a, "a-2", json!({"type": "message", "text": "Go on"})).await;
    assert!(applied(&msg), "{msg}");
    let log = wait_log(&direct, &cookie, &a, "ended the resumed turn", |l| {
        ends(l).len() == 3
    })
    .await;
    assert_eq!(ends(&log)[2]["type"], "result", "{}", ends(&log)[2]);
    assert!(
        log.iter()
            .any(|e| e["type"] == "assistant" && e["text"] == "A: going on after the kill."),
        "the resumed CLI's answer"
    );
    // It resumed the conversation: the model saw the first turn again
    // (the killed turn's prompt may be missing: the CLI died before it
    // saved it).
    let history = fake.model_requests()[2].body["messages"].to_string();
    assert!(
        history.contains("Say hello") && history.contains("A: hello, I am looking at the project."),
        "the resumed CLI's request lacks the first turn"
    );

    // B: a tool call waits for approval; the gateway is SIGKILLed and
    // restarted. The question is withdrawn and the turn ended; the next
    // message resumes the CLI, which asks again; that is answered.
    let b = create("b", "Read the README").await;
    let log = wait_log(&direct, &cookie, &b, "asked for approval", |l| {
        !open_questions(l).is_empty()
    })
    .await;
    let first_q = open_questions(&log)[0].clone();
    let requests_before = fake.model_requests().len();
    gw.start_kill().unwrap();
    gw.wait().await.unwrap();
    let gw_kills = 1;
    // Its CLIs die with it (a watchdog kills each one's process group), so
    // none finishes its turn on its own, denied, calling the model again.
    let until = Instant::now() + DEADLINE;
    while !procs_in(&projects, None).is_empty() {
        assert!(
            Instant::now() < until,
            "the SIGKILLed gateway's CLIs live on: {:?}",
            procs_in(&projects, None)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw = claude_gateway(&root, gw_port, &bin, &fake, &patterns).await;
    let log = wait_log(
        &direct,
        &cookie,
        &b,
        "withdrew the question and ended the turn",
        |l| open_questions(l).is_empty() && ends(l).len() == 1,
    )
    .await;
    let withdrawn = log
        .iter()
        .find(|e| e["type"] == "question.resolved" && e["question_id"] == first_q["question_id"])
        .unwrap()
        .clone();
    let restart_end = ends(&log)[0].clone();
    assert_eq!(restart_end["type"], "error", "{restart_end}");
    assert_eq!(
        fake.model_requests().len(),
        requests_before,
        "a model call while the gateway was down: {:#?}",
        fake.model_requests()[requests_before..]
            .iter()
            .map(|r| (r.kind.clone(), r.last_message().cloned()))
            .collect::<Vec<_>>()
    );
    // Answering the withdrawn question is refused (nothing waits for it).
    let late = command(&ctx, &b, "b-late", answer_for(&first_q)).await;
    let msg = command(
        &ctx,
        &b,
        "b-1",
        json!({"type": "message", "text": "Go on reading"}),
    )
    .await;
    assert!(applied(&msg), "{msg}");
    let log = wait_log(&direct, &cookie, &b, "asked again", |l| {
        !open_questions(l).is_empty()
    })
    .await;
    let again = open_questions(&log)[0].clone();
    assert_ne!(again["question_id"], first_q["question_id"]);
    let history = fake.model_requests()[4].body["messages"].to_string();
    assert!(
        history.contains("Read the README") && history.contains("Go on reading"),
        "the resumed CLI's request lacks the first turn"
    );
    let ans = command(&ctx, &b, "b-2", answer_for(&again)).await;
    assert!(applied(&ans), "{ans}");
    let log = wait_log(&direct, &cookie, &b, "ended the resumed turn", |l| {
        ends(l).len() == 2
    })
    .await;
    assert_eq!(ends(&log)[1]["type"], "result", "{}", ends(&log)[1]);
    assert!(
        log.iter()
            .any(|e| e["type"] == "tool_result" && e["is_error"] != true),
        "the approved Read ran"
    );

    // C: a tool call waits for approval; the orchestrator is SIGKILLed and
    // restarted; the question is still pending, and answered.
    let c = create("c", "Read the README").await;
    let log = wait_log(&direct, &cookie, &c, "asked for approval", |l| {
        !open_questions(l).is_empty()
    })
    .await;
    let q = open_questions(&log)[0].clone();
    orch.start_kill().unwrap();
    orch.wait().await.unwrap();
    let orch_restarts = 1;
    let (o, b2) = orchestrator(&data, gw_proxy.addr).await;
    orch = o;
    let addr = b2.trim_start_matches("http://").to_owned();
    browser_proxy.set_target(addr.parse().unwrap());
    *direct.lock().unwrap() = addr;
    let base = b2;
    let (snap, _) = full_log(&base, &cookie, &c).await;
    assert_eq!(
        snap["pending"].as_array().map(|p| p
            .iter()
            .map(|q| q["question_id"].clone())
            .collect::<Vec<_>>()),
        Some(vec![q["question_id"].clone()]),
        "the approval survived the restart: {snap}"
    );
    let ans = command(&ctx, &c, "c-1", answer_for(&q)).await;
    assert!(applied(&ans), "{ans}");
    wait_log(&direct, &cookie, &c, "ended its turn", |l| {
        ends(l).len() == 1
    })
    .await;

    // Faults off; every session idle with nothing pending, then closed.
    browser_proxy.active.store(false, Ordering::Relaxed);
    gw_proxy.active.store(false, Ordering::Relaxed);
    let mut logs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let until = Instant::now() + DEADLINE;
        loop {
            let m: Value = http
                .get(format!("{base}/api/sessions/{id}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if m["state"] == "paused" && m["reason"] == "idle" && m["pending_questions"] == 0 {
                break;
            }
            assert!(Instant::now() < until, "session {i} never settled: {m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = close_and_read(&http, &base, &cookie, id).await;
        done_txs[i].send(Some(log.len() as u64)).unwrap();
        logs.push(log);
    }

    // Every client's stream is the log's.
    let o = drain_and_check(tasks, &logs, Duration::from_secs(30)).await;
    assert_eq!(o.work_while_idle, 0, "agent work while the state read idle");
    let (counts, stale, short, clients) = (o.counts, o.stale, o.short, o.clients);
    let (turns, questions, open_turns, events) = (o.turns, o.questions, o.open_turns, o.events);

    // Nothing the gateway produced is missing from the orchestrator's log,
    // nor changed, nor out of order (read from both databases; the last
    // events of the closes may still be on their way: bounded wait).
    let read = |db: PathBuf, sql: &str| -> Vec<(String, i64, String)> {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let mut st = conn.prepare(sql).unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let until = Instant::now() + DEADLINE;
    let (produced, gw_missing, gw_changed, gw_reordered) = loop {
        let produced = read(
            root.join("gw/gateway.db"),
            "SELECT session_id, seq, json FROM events ORDER BY session_id, seq",
        );
        let forwarded = read(
            data.join("sessions.db"),
            "SELECT session_id, gseq, json FROM events WHERE gseq IS NOT NULL ORDER BY session_id, seq",
        );
        let mut by_gseq: HashMap<(String, i64), Value> = HashMap::new();
        let mut reordered = 0;
        let mut last: HashMap<String, i64> = HashMap::new();
        for (s, g, j) in &forwarded {
            let prev = last.insert(s.clone(), *g).unwrap_or(0);
            if *g <= prev {
                reordered += 1;
            }
            by_gseq.insert((s.clone(), *g), serde_json::from_str(j).unwrap());
        }
        let (mut missing, mut changed) = (0, 0);
        for (s, g, j) in &produced {
            match by_gseq.get(&(s.clone(), *g)) {
                None => missing += 1,
                Some(e) if *e != serde_json::from_str::<Value>(j).unwrap() => changed += 1,
                Some(_) => {}
            }
        }
        if missing == 0 || Instant::now() > until {
            break (produced, missing, changed, reordered);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    gw.start_kill().unwrap();
    gw.wait().await.unwrap();
    orch.start_kill().unwrap();
    orch.wait().await.unwrap();
    let gw_sessions: HashSet<&String> = produced.iter().map(|(s, _, _)| s).collect();
    assert_eq!(
        gw_sessions.len(),
        ids.len(),
        "the gateway's sessions: {gw_sessions:?}"
    );

    // Leftover CLIs of a killed gateway are this test's to stop.
    for pid in procs_in(&root, None) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }

    let (bc, bcut, bstall, bhalf) = proxy_figures(&browser_proxy.stats);
    let (gc, gcut, gstall, ghalf) = proxy_figures(&gw_proxy.stats);
    println!(
        "seed {seed}: sessions {}, clients {clients}, turns {turns}, questions {questions}, events {events}, delivered {}, model requests {}; {:.1} s",
        ids.len(),
        counts.delivered,
        fake.model_requests().len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "faults: browser link {bc} connections: {bcut} cuts, {bstall} stalls, {bhalf} half-closes; gateway link {gc} connections: {gcut} cuts, {gstall} stalls, {ghalf} half-closes; CLI SIGKILL {cli_kills} (turn end: {}), gateway SIGKILL {gw_kills} with an approval pending (withdrawn: {}, turn end: {}, late answer: {}), orchestrator SIGKILL {orch_restarts} with an approval pending; stale reconnects {stale} ({} events replayed and matched)",
        killed_end["code"],
        withdrawn["decision"],
        restart_end["code"],
        late["error"]["code"],
        counts.stale_replayed
    );
    println!(
        "lost {}, duplicated {}, reordered {}, mismatched {}; gateway events {} : missing {gw_missing}, changed {gw_changed}, reordered {gw_reordered}; turns that never ended {open_turns}",
        counts.lost,
        counts.duplicated,
        counts.reordered,
        counts.mismatched,
        produced.len()
    );
    assert!(
        short.is_empty(),
        "seed {seed}: clients short of the log: {short:?}"
    );
    assert_eq!(
        (
            counts.lost,
            counts.duplicated,
            counts.reordered,
            counts.mismatched
        ),
        (0, 0, 0, 0),
        "seed {seed}"
    );
    assert_eq!(
        (gw_missing, gw_changed, gw_reordered),
        (0, 0, 0),
        "seed {seed}"
    );
    assert_eq!(open_turns, 0, "seed {seed}");
    assert!(stale > 0, "seed {seed}: no stale reconnect");
}
