#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! `duraclaw user add|passwd|remove` against a running orchestrator on
//! 127.0.0.1: a password change ends the user's logins at once and only
//! the new password works; a removal ends them and the login; passwords
//! come from stdin or a named environment variable, never argv.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Child;

use duraclaw_testkit::local as support;
use support::{DEADLINE, duraclaw, login_with, spawn_reading};

const OLD: &str = "correct horse battery staple";
const NEW: &str = "a brand new passphrase";

/// Runs `duraclaw user ARGS --data-dir DATA` with `stdin` and `env`;
/// whether it succeeded, and its stdout and stderr.
async fn user(
    data: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = duraclaw("warn");
    cmd.arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn orchestrator(data: &Path) -> (Child, String) {
    let mut c = duraclaw("warn");
    c.args([
        "orchestrator",
        "--bind",
        "127.0.0.1:0",
        // Nothing listens there: logins do not need a gateway.
        "--gateway-url",
        "ws://127.0.0.1:9",
    ])
    .arg("--data-dir")
    .arg(data)
    .env("CC_GATEWAY_SECRET", "users-test-gateway-secret-0123");
    spawn_reading(c, "duraclaw listening on ").await
}

/// Logs in; the session cookie, or the status when refused.
async fn login(base: &str, name: &str, password: &str) -> Result<String, u16> {
    login_with(&reqwest::Client::new(), base, name, password).await
}

/// The status of an authenticated request with `cookie`.
async fn me(base: &str, cookie: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/api/status"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn passwd_and_remove_end_the_users_logins() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    // Nothing to change before there is a database or a user.
    let (ok, _, err) = user(&data, &["passwd", "alice", "--password-stdin"], "x\n", &[]).await;
    assert!(!ok && err.contains("not found"), "{err}");

    let (ok, _, err) = user(
        &data,
        &["add", "alice", "--password-stdin"],
        &format!("{OLD}\n"),
        &[],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = user(
        &data,
        &["add", "bob", "--password-env", "BOB_PW"],
        "",
        &[("BOB_PW", OLD)],
    )
    .await;
    assert!(ok, "{err}");

    let (_orch, base) = orchestrator(&data).await;
    let alice_1 = login(&base, "alice", OLD).await.unwrap();
    let alice_2 = login(&base, "alice", OLD).await.unwrap();
    let bob = login(&base, "bob", OLD).await.unwrap();
    assert_eq!(me(&base, &alice_1).await, 200);

    // Refused inputs change nothing.
    let (ok, _, err) = user(
        &data,
        &["passwd", "alice", "--password-env", "UNSET_PW_VAR"],
        "",
        &[],
    )
    .await;
    assert!(!ok && err.contains("UNSET_PW_VAR"), "{err}");
    let (ok, _, err) = user(
        &data,
        &["passwd", "alice", "--password-stdin"],
        "short\n",
        &[],
    )
    .await;
    assert!(!ok, "a short password is refused: {err}");
    let (ok, _, err) = user(
        &data,
        &["passwd", "nobody", "--password-stdin"],
        &format!("{NEW}\n"),
        &[],
    )
    .await;
    assert!(!ok && err.contains("not found"), "{err}");
    assert_eq!(me(&base, &alice_1).await, 200);

    // The change ends both of alice's logins at once, and only hers.
    let (ok, out, err) = user(
        &data,
        &["passwd", "alice", "--password-env", "NEW_PW"],
        "",
        &[("NEW_PW", NEW)],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("ended 2 login session(s)"), "{out}");
    assert!(
        !out.contains(NEW) && !err.contains(NEW),
        "the password is never echoed"
    );
    assert_eq!(me(&base, &alice_1).await, 401);
    assert_eq!(me(&base, &alice_2).await, 401);
    assert_eq!(me(&base, &bob).await, 200);
    assert_eq!(login(&base, "alice", OLD).await, Err(401));
    let alice_3 = login(&base, "alice", NEW).await.unwrap();
    assert_eq!(me(&base, &alice_3).await, 200);

    // Removal ends her login and her account; bob is untouched.
    let (ok, out, err) = user(&data, &["remove", "alice"], "", &[]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("removed user alice; ended 1 login session(s)"),
        "{out}"
    );
    assert_eq!(me(&base, &alice_3).await, 401);
    assert_eq!(login(&base, "alice", NEW).await, Err(401));
    assert_eq!(me(&base, &bob).await, 200);
    let (ok, _, err) = user(&data, &["remove", "alice"], "", &[]).await;
    assert!(!ok && err.contains("not found"), "{err}");
}
