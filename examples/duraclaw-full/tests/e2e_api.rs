#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The local deployment's own end-to-end cases: the real Claude CLI missing
//! or too old, and the public address rule. A session's flow over the API,
//! a restarted orchestrator and a killed gateway, shared with Cloudflare,
//! are the API suite (`api.rs`).

use serde_json::{Value, json};
use tokio::process::Child;

use duraclaw_testkit::local as support;
use support::{add_user, duraclaw, login, spawn_reading, wait_gateway};

/// A running `duraclaw`, killed when dropped, and its base URL.
struct Up {
    _child: Child,
    base: String,
}

const SECRET: &str = "split-deployment-secret-0123456789";

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
        _child: child,
        base,
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
        _child: child,
        base,
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
