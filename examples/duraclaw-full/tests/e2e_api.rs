#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The local deployment's own end-to-end cases: the gateway and the
//! orchestrator as separate processes (a killed gateway, a restarted
//! orchestrator), the real Claude CLI missing or too old, and the public
//! address rule. A session's flow over the API, shared with Cloudflare, is
//! the API suite (`api.rs`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::process::Child;

use duraclaw_testkit::local as support;
use support::{
    add_user, duraclaw, events_n, events_until, free_port, get_json, login, next, scripted_gateway,
    send_cmd, spawn_reading, wait_gateway, write_script, ws,
};

struct Up {
    child: Child,
    base: String,
    #[allow(dead_code)]
    gateway: String,
}

fn script(dir: &Path) -> PathBuf {
    write_script(
        dir,
        json!([[
            {"step": "text", "text": "Looking at the project.", "chunks": 5},
            {"step": "tool", "name": "Bash", "input": {"command": "ls"}, "result": "README.md\nsrc"},
            {"step": "text", "text": "All done.", "chunks": 2}
        ]]),
    )
}

const SECRET: &str = "split-deployment-secret-0123456789";

async fn gateway(tmp: &Path, port: u16, script: &Path, worktrees: &str) -> Child {
    let mut c = duraclaw("warn");
    c.env("CC_GATEWAY_SECRET", SECRET);
    scripted_gateway(c, tmp, port, script, worktrees).await
}

async fn orchestrator(data: &Path, port: u16) -> Up {
    let mut c = duraclaw("warn");
    c.env("CC_GATEWAY_SECRET", SECRET)
        .args([
            "orchestrator",
            "--bind",
            "127.0.0.1:0",
            "--gateway-url",
            &format!("ws://127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(data);
    let (child, base) = spawn_reading(c, "duraclaw listening on ").await;
    Up {
        child,
        base,
        gateway: format!("127.0.0.1:{port}"),
    }
}

async fn session_meta(base: &str, c: &reqwest::Client, id: &str) -> Value {
    get_json(c, format!("{base}/api/sessions/{id}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_and_a_restarted_orchestrator_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    let script = script(tmp.path());
    let projects = tmp.path().canonicalize().unwrap().join("projects");
    let repo = projects.join("app");
    std::fs::create_dir_all(&repo).unwrap();
    git2::Repository::init(&repo).unwrap();
    let patterns = format!("{}/*", projects.display());
    let port = free_port();
    let mut gw = gateway(tmp.path(), port, &script, &patterns).await;
    let mut orch = orchestrator(&data, port).await;
    let (alice, cookie) = login(&orch.base, "alice").await;
    wait_gateway(&orch.base, &alice, true).await;
    let r = alice
        .post(format!("{}/api/sessions", orch.base))
        .header("origin", &orch.base)
        .json(&json!({"worktree": repo.display().to_string(), "prompt": "look around"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut a = ws(&orch.base, &cookie, &id, 0, &orch.base).await.unwrap();
    let before = events_until(&mut a, |e| e["type"] == "user_question").await;
    let question = before.last().unwrap().1["question_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Restart the orchestrator with the approval pending: the history and
    // the pending approval are still there, and it can be answered.
    orch.child.start_kill().unwrap();
    orch.child.wait().await.unwrap();
    drop(a);
    let orch = orchestrator(&data, port).await;
    wait_gateway(&orch.base, &alice, true).await;
    let mut a = ws(&orch.base, &cookie, &id, 0, &orch.base).await.unwrap();
    assert_eq!(next(&mut a).await["type"], "hello");
    let snap = next(&mut a).await;
    assert_eq!(
        snap["pending"][0]["question_id"],
        question.as_str(),
        "{snap}"
    );
    let again = events_n(&mut a, before.len() as u64).await;
    assert_eq!(again, before, "the history survived the restart");
    send_cmd(
        &mut a,
        "approve-1",
        json!({"type": "answer", "question_id": question, "decision": "allow"}),
    )
    .await;
    let done = events_until(&mut a, |e| e["type"] == "result").await;
    assert!(done.iter().any(|(_, e)| e["type"] == "tool_result"));

    // Kill the gateway: the session shows it unreachable; bring it back and
    // the session goes on with nothing lost.
    gw.start_kill().unwrap();
    gw.wait().await.unwrap();
    wait_gateway(&orch.base, &alice, false).await;
    let lost = events_until(&mut a, |e| {
        e["type"] == "session.state" && e["reason"] == "gateway_unreachable"
    })
    .await;
    assert!(!lost.is_empty());
    let meta = session_meta(&orch.base, &alice, &id).await;
    assert_eq!(meta["reason"], "gateway_unreachable", "{meta}");
    let _gw = gateway(tmp.path(), port, &script, &patterns).await;
    wait_gateway(&orch.base, &alice, true).await;
    send_cmd(
        &mut a,
        "m-1",
        json!({"type": "message", "text": "continue"}),
    )
    .await;
    let after = events_until(&mut a, |e| e["type"] == "result").await;
    let mut seqs: Vec<u64> = before
        .iter()
        .chain(&done)
        .chain(&lost)
        .chain(&after)
        .map(|(s, _)| *s)
        .collect();
    seqs.dedup();
    assert_eq!(
        seqs,
        (1..=*seqs.last().unwrap()).collect::<Vec<_>>(),
        "dense, in order, once"
    );
    assert!(after.iter().any(|(_, e)| e["type"] == "assistant"
        && e["text"].as_str().is_some_and(|t| t.contains("continue"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_claude_cli_is_reported_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    let projects = tmp.path().canonicalize().unwrap().join("projects");
    let repo = projects.join("app");
    std::fs::create_dir_all(&repo).unwrap();
    git2::Repository::init(&repo).unwrap();
    let mut c = duraclaw("warn");
    c.args([
        "up",
        "--bind",
        "127.0.0.1:0",
        "--gateway-bind",
        "127.0.0.1:0",
        "--claude-bin",
        "/nonexistent/claude",
    ])
    .arg("--worktrees")
    .arg(format!("{}/*", projects.display()))
    .arg("--data-dir")
    .arg(&data);
    let (child, base) = spawn_reading(c, "duraclaw listening on ").await;
    let up = Up {
        child,
        base,
        gateway: String::new(),
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data directory is private");
    let (alice, _) = login(&up.base, "alice").await;
    wait_gateway(&up.base, &alice, true).await;
    let status = support::status(&up.base, &alice).await;
    let why = status["gateway"]["executor_error"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("Claude Code CLI was not found"), "{status}");
    let r = alice
        .post(format!("{}/api/sessions", up.base))
        .header("origin", &up.base)
        .json(&json!({"worktree": repo.display().to_string(), "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/claude"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_cli_below_the_minimum_version_is_refused_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    let root = tmp.path().canonicalize().unwrap();
    let repo = root.join("projects/app");
    std::fs::create_dir_all(&repo).unwrap();
    git2::Repository::init(&repo).unwrap();
    // A stand-in for an old CLI: it only says its version (2.1.84 ignores
    // the gateway's "ask" and runs tools without a question).
    let ran = root.join("old-cli-ran");
    let bin = root.join("claude");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo '2.1.84 (Claude Code)'; exit 0; }}\ntouch '{}'\n",
            ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = duraclaw("warn");
    c.args([
        "up",
        "--bind",
        "127.0.0.1:0",
        "--gateway-bind",
        "127.0.0.1:0",
    ])
    .arg("--claude-bin")
    .arg(&bin)
    .arg("--worktrees")
    .arg(format!("{}/projects/*", root.display()))
    .arg("--data-dir")
    .arg(&data);
    let (child, base) = spawn_reading(c, "duraclaw listening on ").await;
    let up = Up {
        child,
        base,
        gateway: String::new(),
    };
    let (alice, _) = login(&up.base, "alice").await;
    wait_gateway(&up.base, &alice, true).await;
    let status = support::status(&up.base, &alice).await;
    let why = status["gateway"]["executor_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        why.starts_with(
            "unsupported Claude Code CLI: version 2.1.84 found, 2.1.88 or later needed"
        ),
        "{status}"
    );
    let r = alice
        .post(format!("{}/api/sessions", up.base))
        .header("origin", &up.base)
        .json(&json!({"worktree": repo.display().to_string(), "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"].as_str(), Some(why.as_str()), "{body}");
    assert!(!ran.exists(), "the old CLI was started");
}

#[tokio::test]
async fn the_orchestrator_refuses_a_public_address_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let out = duraclaw("warn")
        .env("CC_GATEWAY_SECRET", SECRET)
        .args(["orchestrator", "--bind", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}
