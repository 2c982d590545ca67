#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Moving from `duraclaw up` to the split deployment on the same data
//! directory: `duraclaw gateway` and `duraclaw orchestrator` find the
//! secret `up` generated, and link up without `CC_GATEWAY_SECRET`; without
//! any secret each says what it needs.

use std::path::Path;
use std::process::Stdio;

use serde_json::json;

use duraclaw_testkit::local as support;
use support::{
    DEADLINE, add_user, duraclaw, login, spawn_reading, up_demo, wait_gateway, write_script,
};

/// Runs `cmd` until it exits (bounded): whether it succeeded, and its
/// stderr.
async fn exits(mut cmd: tokio::process::Command) -> (bool, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("it exits")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn orchestrator(data: &Path, gateway_url: &str) -> tokio::process::Command {
    let mut c = duraclaw("warn");
    c.args([
        "orchestrator",
        "--bind",
        "127.0.0.1:0",
        "--gateway-url",
        gateway_url,
    ])
    .arg("--data-dir")
    .arg(data);
    c
}

fn gateway(gateway_dir: &Path, worktrees: &Path, script: &Path) -> tokio::process::Command {
    let mut c = duraclaw("warn");
    c.args(["gateway", "--executor", "scripted", "--bind", "127.0.0.1:0"])
        .arg("--worktrees")
        .arg(format!("{}/*", worktrees.display()))
        .arg("--script")
        .arg(script)
        .arg("--data-dir")
        .arg(gateway_dir);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_deployment_reads_the_secret_duraclaw_up_generated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let script = write_script(
        dir.path(),
        json!([[{"step": "text", "text": "hi", "chunks": 1}]]),
    );
    let projects = dir.path().join("projects");
    support::init_repo(&projects.join("app"), &[("README.md", "# app\n")]);

    // Without a secret anywhere, each half says what it needs.
    std::fs::create_dir_all(&data).unwrap();
    let (ok, err) = exits(orchestrator(&data, "ws://127.0.0.1:9")).await;
    assert!(!ok);
    assert!(
        err.contains("no gateway secret")
            && err.contains("CC_GATEWAY_SECRET")
            && err.contains("duraclaw up")
            && err.contains("orchestrator")
            && !err.contains("the gateway refuses"),
        "{err}"
    );
    let (ok, err) = exits(gateway(&data.join("gateway"), &projects, &script)).await;
    assert!(!ok);
    assert!(
        err.contains("no gateway secret") && err.contains("duraclaw up"),
        "{err}"
    );

    // `duraclaw up` once: it generates the secret into the data directory.
    add_user(&data, "alice").await;
    let (mut up, _, _) = up_demo(&data, &script, &["--gateway-bind", "127.0.0.1:0"]).await;
    up.kill().await.unwrap();
    assert!(data.join("gateway-secret").is_file());

    // Then the two halves on their own, neither given a secret.
    let mut gw = gateway(&data.join("gateway"), &projects, &script);
    gw.kill_on_drop(true);
    let (_gw, gw_url) = spawn_reading(gw, "gateway listening on ").await;
    let (_orch, base) = spawn_reading(orchestrator(&data, &gw_url), "duraclaw listening on ").await;
    let (c, _) = login(&base, "alice").await;
    wait_gateway(&base, &c, true).await;
}
