#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The fault-injection run: scripted sessions in a split deployment
//! (`duraclaw gateway` + `duraclaw orchestrator`), with a seeded cutting
//! proxy on both links, SIGKILLed gateways, an orchestrator restart, stale
//! and slow clients and 50 clients on one session. At the end every
//! client's (seq, event) list is compared with the full log: nothing lost,
//! nothing twice, nothing out of order, no turn left open, and the slow
//! reader caught up by replay at least once. A second test SIGKILLs the
//! executor's CLI process mid-turn (a stand-in CLI run by the real Claude
//! executor).
//!
//! `DURACLAW_FAULT_SEED=N` picks the seed (printed on every run);
//! `DURACLAW_SOAK_SECS=N` makes the chaos phase last N seconds and reports
//! the orchestrator's memory growth (see `docs/RELIABILITY.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::SinkExt;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/faults.rs"]
mod fault_support;
use fault_support::*;

const SECRET: &str = "fault-run-gateway-secret-0123456789";
const SESSIONS: usize = 6;
const CROWD: usize = 50;
/// The orchestrator's live queue per client, in events.
const LIVE_QUEUE: usize = 16;

mod support;
use support::{
    DEADLINE, PASSWORD, add_user, free_port, login_with, next_event, scripted_gateway,
    spawn_reading,
};

// ---------------------------------------------------------------- processes

/// `duraclaw` with the run's gateway secret, logging errors only.
fn duraclaw() -> Command {
    let mut c = support::duraclaw("error");
    c.env("CC_GATEWAY_SECRET", SECRET);
    c
}

async fn gateway(dir: &Path, port: u16, script: &Path, worktrees: &str) -> Child {
    let mut c = duraclaw();
    if let Ok(filter) = std::env::var("DURACLAW_FAULTS_GATEWAY_LOG") {
        c.env("RUST_LOG", filter);
    }
    scripted_gateway(c, dir, port, script, worktrees).await
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

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn script(dir: &Path) -> PathBuf {
    let path = dir.join("script.json");
    let turn = |n: usize| {
        json!([
            {"step": "text", "text": format!("Turn {n}: looking at the project, piece by piece, so that the stream has many small deltas."), "chunks": 24, "delay_ms": 8},
            {"step": "tool", "name": "Bash", "input": {"command": format!("ls {n}")}, "result": "README.md\nsrc"},
            {"step": "ask", "questions": [{"question": "Which change?", "header": "Change", "options": [{"label": "Add a test"}, {"label": "Fix a typo"}], "multiSelect": false}]},
            {"step": "text", "text": format!("Turn {n} done."), "chunks": 6, "delay_ms": 8}
        ])
    };
    std::fs::write(
        &path,
        json!({"turns": (0..4).map(turn).collect::<Vec<_>>()}).to_string(),
    )
    .unwrap();
    path
}

// ---------------------------------------------------------------- the run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_under_faults() {
    let soak: Option<u64> = std::env::var("DURACLAW_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed: u64 = std::env::var("DURACLAW_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_d0c5);
    let chaos_secs = soak.unwrap_or(15);
    println!("fault run: seed {seed}, chaos {chaos_secs} s");
    let mut rng = Rng::new(seed);
    let started = Instant::now();

    let mut tmp = tempfile::tempdir().unwrap();
    if std::env::var_os("DURACLAW_FAULTS_KEEP").is_some() {
        // Keep the data directories to inspect a failed run.
        println!("data kept in {}", tmp.path().display());
        tmp.disable_cleanup(true);
    }
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    let script = script(tmp.path());
    let projects = tmp.path().canonicalize().unwrap().join("projects");
    let mut repos = Vec::new();
    for i in 0..SESSIONS {
        let repo = projects.join(format!("app{i}"));
        std::fs::create_dir_all(&repo).unwrap();
        git2::Repository::init(&repo).unwrap();
        repos.push(repo);
    }
    let patterns = format!("{}/*", projects.display());

    let gw_port = free_port();
    let mut gw = gateway(tmp.path(), gw_port, &script, &patterns).await;
    let gw_proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], gw_port)),
        rng.next(),
        32 * 1024,
    )
    .await;
    let (mut orch, base) = orchestrator(&data, gw_proxy.addr).await;
    let direct = Arc::new(Mutex::new(base.trim_start_matches("http://").to_owned()));
    let browser_proxy = Proxy::start(
        base.trim_start_matches("http://").parse().unwrap(),
        rng.next(),
        16 * 1024,
    )
    .await;

    // Log in and create the sessions directly (REST is not under test here).
    let http = reqwest::Client::new();
    let cookie = login_with(&http, &base, "alice", PASSWORD).await.unwrap();
    let status = |base: String| {
        let (http, cookie) = (http.clone(), cookie.clone());
        async move {
            let r = http
                .get(format!("{base}/api/status"))
                .header("cookie", &cookie)
                .send()
                .await;
            match r {
                Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        }
    };
    let until = Instant::now() + DEADLINE;
    while status(base.clone()).await["gateway"]["connected"] != true {
        assert!(Instant::now() < until, "the gateway never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ids = Vec::new();
    for repo in &repos {
        let r = http
            .post(format!("{base}/api/sessions"))
            .header("origin", &base)
            .header("cookie", &cookie)
            .json(&json!({"worktree": repo.display().to_string(), "prompt": "look around"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        ids.push(
            r.json::<Value>().await.unwrap()["session_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let ctx = Arc::new(Ctx {
        browser: browser_proxy.addr,
        direct: direct.clone(),
        cookie: cookie.clone(),
        origin: format!("http://{}", browser_proxy.addr),
        chaos: AtomicBool::new(true),
        deadline: Instant::now() + Duration::from_secs(chaos_secs + 60),
        max_turns: u64::MAX,
    });
    let (done_tx, done_rx) = watch::channel(None::<u64>);
    let mut done_txs = Vec::new();
    let mut drivers = Vec::new();
    let mut tasks: Vec<(usize, Role, tokio::task::JoinHandle<ClientLog>)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (tx, rx) = watch::channel(None::<u64>);
        done_txs.push(tx);
        let state = Arc::new(DriverState {
            sent: AtomicU64::new(1),
            ..DriverState::default()
        });
        drivers.push(state.clone());
        let mut roles = vec![Role::Driver, Role::Observer, Role::Stale];
        if i == 0 {
            roles.push(Role::Slow);
            roles.extend(std::iter::repeat_n(Role::Observer, CROWD - roles.len() + 1));
        }
        for role in roles {
            let s = if role == Role::Driver {
                state.clone()
            } else {
                Arc::new(DriverState::default())
            };
            tasks.push((
                i,
                role,
                tokio::spawn(client(
                    ctx.clone(),
                    id.clone(),
                    role,
                    rng.next(),
                    rx.clone(),
                    s,
                )),
            ));
        }
    }
    drop(done_rx);
    drop(done_tx);
    let crowd = tasks.iter().filter(|(i, _, _)| *i == 0).count();

    // Chaos: proxies cut, stall and half-close; the gateway is SIGKILLed
    // and restarted twice per 15 s cycle; the orchestrator is restarted
    // once per cycle (in a soak, once at the start).
    browser_proxy.active.store(true, Ordering::Relaxed);
    gw_proxy.active.store(true, Ordering::Relaxed);
    let chaos_end = Instant::now() + Duration::from_secs(chaos_secs);
    let (mut gw_kills, mut orch_restarts) = (0u64, 0u64);
    // Times a client overflowed its live queue and was caught up by replay.
    let mut catch_ups = 0u64;
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let mut cycle = 0u64;
    while Instant::now() < chaos_end {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        let events = [
            (rng.range(2000, 4500), 0u8),
            (rng.range(5500, 7500), 1u8),
            (rng.range(9000, 12_000), 0u8),
        ];
        for (ms, what) in events {
            let when = at(ms).min(chaos_end);
            tokio::time::sleep_until(when).await;
            if Instant::now() >= chaos_end {
                break;
            }
            if what == 0 {
                gw.start_kill().unwrap();
                gw.wait().await.unwrap();
                gw_kills += 1;
                gw = gateway(tmp.path(), gw_port, &script, &patterns).await;
            } else if soak.is_none() || cycle == 0 {
                // Its counters go with it: keep them.
                let st = status(format!("http://{}", direct.lock().unwrap())).await;
                catch_ups += st["stats"]["slow_client_catch_ups"].as_u64().unwrap_or(0);
                orch.start_kill().unwrap();
                orch.wait().await.unwrap();
                orch_restarts += 1;
                let (o, b) = orchestrator(&data, gw_proxy.addr).await;
                orch = o;
                let addr = b.trim_start_matches("http://").to_owned();
                browser_proxy.set_target(addr.parse().unwrap());
                *direct.lock().unwrap() = addr;
                // Memory growth is measured from the last restart.
                rss.clear();
            }
            if let Some(kib) = orch.id().and_then(rss_kib) {
                rss.push((started.elapsed().as_secs_f64(), kib));
            }
        }
        tokio::time::sleep_until(at(15_000).min(chaos_end)).await;
        cycle += 1;
    }
    ctx.chaos.store(false, Ordering::Relaxed);
    browser_proxy.active.store(false, Ordering::Relaxed);
    gw_proxy.active.store(false, Ordering::Relaxed);

    // Settle: the gateway is back, every driver has seen the end of every
    // turn it started, has nothing unconfirmed, and every session is idle
    // with no open question.
    let base = format!("http://{}", direct.lock().unwrap());
    // A session whose turn started but never ended (state `active`,
    // nothing unconfirmed, nothing pending) after 15 s without faults is a
    // stuck turn: it is printed with its log's tail and fails the run.
    let until = Instant::now() + Duration::from_secs(15);
    let mut stuck: Vec<String> = Vec::new();
    loop {
        let connected = status(base.clone()).await["gateway"]["connected"] == true;
        let mut unsettled = Vec::new();
        let mut all_stuck = connected;
        for (d, id) in drivers.iter().zip(&ids) {
            let m: Value = http
                .get(format!("{base}/api/sessions/{id}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let (sent, ended, out) = (
                d.sent.load(Ordering::Relaxed),
                d.ended.load(Ordering::Relaxed),
                d.outstanding.load(Ordering::Relaxed),
            );
            let settled = ended >= sent
                && out == 0
                && m["state"] == "paused"
                && m["reason"] == "idle"
                && m["pending_questions"] == 0;
            if !settled {
                // Stuck: the driver's message was confirmed, nothing is
                // pending, and no turn end came (the state should read
                // active; idle is checked too, the bug it once was).
                all_stuck &= out == 0
                    && ended < sent
                    && (m["state"] == "active" || m["reason"] == "idle")
                    && m["pending_questions"] == 0;
                unsettled.push((
                    id.clone(),
                    format!(
                        "{id}: sent {sent} ended {ended} outstanding {out} state {} {} pending {}",
                        m["state"], m["reason"], m["pending_questions"]
                    ),
                ));
            }
        }
        if connected && unsettled.is_empty() {
            break;
        }
        if Instant::now() > until {
            if all_stuck {
                for (id, w) in unsettled {
                    let (_, log) = full_log(&base, &cookie, &id).await;
                    let end = log
                        .iter()
                        .rposition(|e| e["type"] == "result" || e["type"] == "error")
                        .unwrap_or(0);
                    let tail: Vec<String> = log
                        .iter()
                        .enumerate()
                        .skip(end)
                        .filter(|(_, e)| e["phase"] != "delta")
                        .map(|(i, e)| {
                            format!("    {} {} {} {}", i + 1, e["type"], e["state"], e["reason"])
                        })
                        .collect();
                    stuck.push(format!("{w}\n{}", tail.join("\n")));
                }
                break;
            }
            let mut why: Vec<String> = unsettled.into_iter().map(|(_, w)| w).collect();
            for id in &ids {
                let (snap, log) = full_log(&base, &cookie, id).await;
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
                "seed {seed}: the sessions never settled:\n{}",
                why.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every session is closed (a legal end: terminated), then its whole log
    // is read from a fresh client and every client drains up to it.
    let mut logs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let r = http
            .post(format!("{base}/api/sessions/{id}/close"))
            .header("origin", &base)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (snapshot, log) = full_log(&base, &cookie, id).await;
        assert_eq!(snapshot["state"], "terminated", "{snapshot}");
        assert_eq!(snapshot["pending"], json!([]), "{snapshot}");
        done_txs[i].send(Some(log.len() as u64)).unwrap();
        logs.push(log);
    }
    let mut counts = Counts::default();
    let (mut lagged, mut stale, mut answered, mut answered_late) = (0, 0, 0, 0);
    let mut failed = Vec::new();
    let mut short = Vec::new();
    let mut clients = 0;
    for (i, role, task) in tasks {
        let c = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("every client drains in time")
            .unwrap();
        clients += 1;
        if c.last < logs[i].len() as u64 {
            short.push(format!(
                "session {i} {role:?}: has {} of {}",
                c.last,
                logs[i].len()
            ));
        }
        check(&logs[i], &c, &mut counts);
        lagged += c.lagged;
        stale += c.stale_reconnects;
        answered += c.answered;
        answered_late += c.answered_after_reconnect;
        failed.extend(c.failed_commands);
    }
    let (mut turns, mut questions, mut open_turns) = (0, 0, 0);
    let (mut reruns, mut restart_errors, mut work_while_idle) = (0, 0, 0);
    let mut idle_contexts = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let f = check_log(&logs[i]);
        turns += f.turns;
        questions += f.questions;
        open_turns += u64::from(f.open_turn);
        reruns += f.reruns;
        restart_errors += f.restart_errors;
        work_while_idle += f.work_while_idle;
        if let Some(c) = f.idle_context {
            idle_contexts.push(format!("session {i}:\n{c}"));
        }
        // The log does not move after the end.
        let (_, again) = full_log(&base, &cookie, id).await;
        assert_eq!(
            again, logs[i],
            "the log of session {i} changed after it ended"
        );
    }
    let events: usize = logs.iter().map(Vec::len).sum();
    catch_ups += status(base.clone()).await["stats"]["slow_client_catch_ups"]
        .as_u64()
        .unwrap_or(0);
    let sum = |s: &ProxyStats| {
        (
            s.conns.load(Ordering::Relaxed),
            s.cuts.load(Ordering::Relaxed),
            s.stalls.load(Ordering::Relaxed),
            s.half_closes.load(Ordering::Relaxed),
        )
    };
    let (bc, bcut, bstall, bhalf) = sum(&browser_proxy.stats);
    let (gc, gcut, gstall, ghalf) = sum(&gw_proxy.stats);
    println!(
        "seed {seed}: chaos {chaos_secs} s, total {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "sessions {SESSIONS}, clients {clients} ({crowd} on session 0), turns {turns}, questions {questions} (answered {answered}, {answered_late} after a reconnect), events {events}, delivered {}",
        counts.delivered
    );
    println!(
        "faults: browser link {bc} connections: {bcut} cuts, {bstall} stalls, {bhalf} half-closes; gateway link {gc} connections: {gcut} cuts, {gstall} stalls, {ghalf} half-closes; gateway SIGKILL {gw_kills}; orchestrator restarts {orch_restarts}; stale reconnects {stale} ({} events replayed and matched); lagged closes {lagged}",
        counts.stale_replayed
    );
    println!(
        "faults by kind: cut {}, stall {}, half-close {}, gateway SIGKILL {gw_kills}, orchestrator SIGKILL {orch_restarts}, stale reconnect {stale}, slow-reader catch-up by replay {catch_ups}; total {}",
        bcut + gcut,
        bstall + gstall,
        bhalf + ghalf,
        bcut + gcut
            + bstall
            + gstall
            + bhalf
            + ghalf
            + gw_kills
            + orch_restarts
            + stale
            + catch_ups
    );
    println!(
        "lost {}, duplicated {}, reordered {}, mismatched {}",
        counts.lost, counts.duplicated, counts.reordered, counts.mismatched
    );
    if let Some(kib) = orch.id().and_then(rss_kib) {
        rss.push((started.elapsed().as_secs_f64(), kib));
    }
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        println!(
            "orchestrator RSS: {} KiB at {:.0} s, {} KiB at {:.0} s ({:+} KiB)",
            first.1,
            first.0,
            last.1,
            last.0,
            last.1 as i64 - first.1 as i64
        );
    }
    println!(
        "gateway restarts: {reruns} taken commands run again, {restart_errors} turns ended (gateway_restarted); agent events logged while the state read idle: {work_while_idle}"
    );
    println!(
        "turns that never ended: {open_turns}{}",
        stuck.iter().map(|w| format!("\n  {w}")).collect::<String>()
    );
    assert_eq!(
        open_turns,
        stuck.len() as u64,
        "seed {seed}: a turn left open in a session that settled"
    );
    assert!(stuck.is_empty(), "seed {seed}: stuck turns: {stuck:?}");
    assert_eq!(
        work_while_idle,
        0,
        "seed {seed}: the agent worked while the session read idle:\n{}",
        idle_contexts.join("\n")
    );
    assert!(
        short.is_empty(),
        "seed {seed}: clients short of the log: {short:?}"
    );
    assert!(
        failed.is_empty(),
        "seed {seed}: failed commands: {failed:?}"
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
    assert!(gw_kills >= 1 && orch_restarts >= 1 && bcut + gcut > 0 && stale > 0);
    // The slow reader fell behind its live queue and was caught up by
    // replay (and, as checked above, still got every event once, in order).
    assert!(
        catch_ups > 0,
        "seed {seed}: the slow reader never overflowed its live queue"
    );
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
