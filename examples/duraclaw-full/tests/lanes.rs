#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The gateway link's per-session ingest lanes, end to end: `duraclaw up
//! --demo` with a short lane idle time and several sessions streaming at
//! once. Every session's events arrive, complete and in order; the gateway
//! is acked up to the last of them; each session's lane ends when idle and
//! a new one takes the next turn's events.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use duraclaw_testkit::local as support;
use support::{
    DEADLINE, add_user, create_session, duraclaw, events_until, init_repo, login, send_cmd,
    spawn_until, wait_gateway, write_script, ws,
};

const SESSIONS: usize = 4;
const CHUNKS: usize = 40;

fn turn_text(turn: usize) -> String {
    let words: Vec<String> = (0..CHUNKS * 2).map(|w| format!("t{turn}w{w}")).collect();
    words.join(" ")
}

/// The process's stderr lines so far, ANSI colours removed.
type Log = Arc<Mutex<Vec<String>>>;

fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `field=value` of a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// The indexes of the log lines with `message` for `session`.
fn lines_with(log: &Log, message: &str, session: &str) -> Vec<usize> {
    log.lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(message) && field(l, "session") == Some(session))
        .map(|(i, _)| i)
        .collect()
}

/// The highest gseq the gateway was acked for `session`.
fn acked(log: &Log, session: &str) -> u64 {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(" acked ") && field(l, "session") == Some(session))
        .filter_map(|l| field(l, "gseq")?.parse().ok())
        .max()
        .unwrap_or(0)
}

async fn until(what: &str, log: &Log, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "never: {what}\n{}",
            log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks one turn's events: dense seqs after `after`, the streamed text
/// whole and in order; returns how many came from the gateway.
fn check_turn(events: &[(u64, Value)], after: u64, turn: usize) -> u64 {
    let seqs: Vec<u64> = events.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (after + 1..=after + events.len() as u64).collect::<Vec<_>>()
    );
    let deltas: String = events
        .iter()
        .filter(|(_, e)| e["type"] == "assistant" && e["phase"] == "delta")
        .map(|(_, e)| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, turn_text(turn), "the deltas in order");
    // What the gateway sent (the rest is the orchestrator's own).
    let gateway = [
        "notice",
        "session.init",
        "assistant",
        "tool_use",
        "tool_result",
        "result",
    ];
    events
        .iter()
        .filter(|(_, e)| gateway.iter().any(|t| e["type"] == *t))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stream_through_lanes_that_end_when_idle_and_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    let turn = |n: usize| json!([{"step": "text", "text": turn_text(n), "chunks": CHUNKS}]);
    let script = write_script(tmp.path(), json!([turn(0), turn(1)]));
    let projects = tmp.path().canonicalize().unwrap().join("projects");
    for i in 0..SESSIONS {
        init_repo(&projects.join(format!("app{i}")), &[("README.md", "hi")]);
    }

    let mut c = duraclaw("warn,duraclaw_orchestrator::lanes=debug,duraclaw_gateway::link=debug");
    c.args(["up", "--demo", "--bind", "127.0.0.1:0"])
        .args(["--gateway-bind", "127.0.0.1:0"])
        .arg("--worktrees")
        .arg(format!("{}/*", projects.display()))
        .arg("--script")
        .arg(&script)
        .arg("--data-dir")
        .arg(&data)
        .env("DURACLAW_INGEST_LANE_IDLE_MS", "200")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, found) = spawn_until(c, &["duraclaw listening on "]).await.unwrap();
    let base = found[0].clone();
    let log: Log = Arc::default();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            sink.lock().unwrap().push(plain(&l));
        }
    });

    let (http, cookie) = login(&base, "alice").await;
    wait_gateway(&base, &http, true).await;
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        let worktree = projects.join(format!("app{i}")).display().to_string();
        ids.push(create_session(&http, &base, None, &worktree, "look around").await);
    }

    // Turn 1 in every session at once: all of it, in order, acked.
    let mut socks = Vec::new();
    let mut last = Vec::new();
    let mut from_gateway = Vec::new();
    for id in &ids {
        let mut w = ws(&base, &cookie, id, 0, &base).await.unwrap();
        let events = events_until(&mut w, |e| e["type"] == "result").await;
        from_gateway.push(check_turn(&events, 0, 0));
        last.push(events.last().unwrap().0);
        socks.push(w);
    }
    for (id, n) in ids.iter().zip(&from_gateway) {
        until("turn 1 acked", &log, || acked(&log, id) >= *n).await;
        assert_eq!(acked(&log, id), *n, "acked up to the last event");
        // Idle: the lane ends.
        until("the lane ended", &log, || {
            !lines_with(&log, "ingest lane ended", id).is_empty()
        })
        .await;
    }

    // Turn 2: a new lane per session takes its events.
    for (i, w) in socks.iter_mut().enumerate() {
        send_cmd(
            w,
            &format!("m-{i}"),
            json!({"type": "message", "text": "go on"}),
        )
        .await;
    }
    for (i, w) in socks.iter_mut().enumerate() {
        let events = events_until(w, |e| e["type"] == "result").await;
        from_gateway[i] += check_turn(&events, last[i], 1);
    }
    for (id, n) in ids.iter().zip(&from_gateway) {
        until("turn 2 acked", &log, || acked(&log, id) >= *n).await;
        assert_eq!(acked(&log, id), *n, "acked up to the last event");
        let started = lines_with(&log, "ingest lane started", id);
        let ended = lines_with(&log, "ingest lane ended", id);
        assert!(
            started.len() >= 2 && started[1] > ended[0],
            "a lane started after the first ended: started at {started:?}, ended at {ended:?}"
        );
    }
    child.kill().await.unwrap();
}
