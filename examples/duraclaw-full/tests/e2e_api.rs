#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! `duraclaw up --demo` end to end over HTTP and WebSocket on 127.0.0.1:
//! auth, ownership, the session stream with exact replay, approvals from
//! two clients, and a gateway that goes away and comes back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Child;

use duraclaw_testkit::local as support;
use support::{
    DEADLINE, add_user, client, duraclaw, events_n, events_until, free_port, get_json, login, next,
    scripted_gateway, send_cmd, spawn_reading, up_demo, wait_gateway, worktree, write_script, ws,
};

struct Up {
    child: Child,
    base: String,
    #[allow(dead_code)]
    gateway: String,
}

async fn up(data: &Path, script: &Path, gateway_bind: &str) -> Up {
    let (child, base, gateway) = up_demo(
        data,
        script,
        &["--gateway-bind", gateway_bind, "--evict-after-secs", "1"],
    )
    .await;
    Up {
        child,
        base,
        gateway,
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_over_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    add_user(&data, "alice").await;
    add_user(&data, "bob").await;
    let script = script(tmp.path());
    let up = up(&data, &script, "127.0.0.1:0").await;

    // Unauthenticated and wrong-password requests.
    let anon = client();
    assert_eq!(
        anon.get(format!("{}/api/sessions", up.base))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = anon
        .post(format!("{}/api/login", up.base))
        .header("origin", &up.base)
        .json(&json!({"username": "alice", "password": "wrong password!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        anon.get(format!("{}/api/health", up.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (alice, alice_cookie) = login(&up.base, "alice").await;
    let (bob, bob_cookie) = login(&up.base, "bob").await;
    wait_gateway(&up.base, &alice, true).await;
    let wt = worktree(&up.base, &alice).await;

    // A cross-origin POST is refused.
    let r = alice
        .post(format!("{}/api/sessions", up.base))
        .header("origin", "http://evil.example")
        .json(&json!({"worktree": wt, "prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = alice
        .post(format!("{}/api/sessions", up.base))
        .header("origin", &up.base)
        .json(&json!({"worktree": wt, "prompt": "look around"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let session: Value = get_json(&alice, format!("{}/api/sessions", up.base)).await;
    let id = session[0]["session_id"].as_str().unwrap().to_owned();

    // Bob gets 404 for Alice's session, over REST and WebSocket alike.
    assert_eq!(
        bob.get(format!("{}/api/sessions/{id}", up.base))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        bob.get(format!("{}/api/sessions/NOPE", up.base))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    match ws(&up.base, &bob_cookie, &id, 0, &up.base).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("bob's upgrade: {:?}", other.map(|_| ())),
    }
    // A cross-origin WebSocket upgrade is refused.
    match ws(&up.base, &alice_cookie, &id, 0, "http://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("cross-origin upgrade: {:?}", other.map(|_| ())),
    }

    // Alice watches: hello, snapshot, then the events up to the approval.
    let mut a1 = ws(&up.base, &alice_cookie, &id, 0, &up.base).await.unwrap();
    assert_eq!(next(&mut a1).await["type"], "hello");
    assert_eq!(next(&mut a1).await["type"], "snapshot");
    let first = events_until(&mut a1, |e| e["type"] == "user_question").await;
    let question = first.last().unwrap().1["question_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first[0].1["type"], "user.message");

    // A second client (her phone) joins mid-way with after=3 and sees the
    // same question pending in its snapshot.
    let mut a2 = ws(&up.base, &alice_cookie, &id, 3, &up.base).await.unwrap();
    assert_eq!(next(&mut a2).await["type"], "hello");
    let snap = next(&mut a2).await;
    assert_eq!(snap["pending"][0]["question_id"], question.as_str());
    let replay = events_until(&mut a2, |e| e["type"] == "user_question").await;
    let seqs: Vec<u64> = replay.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (4..=first.last().unwrap().0).collect::<Vec<_>>(),
        "exact replay after 3"
    );

    // The phone approves; the laptop sees it resolved at once; a second
    // answer from the laptop is told who decided.
    send_cmd(
        &mut a2,
        "phone-1",
        json!({"type": "answer", "question_id": question, "decision": "allow"}),
    )
    .await;
    let resolved = events_until(&mut a1, |e| e["type"] == "question.resolved").await;
    assert_eq!(resolved.last().unwrap().1["by"]["who"], "alice");
    send_cmd(
        &mut a1,
        "laptop-1",
        json!({"type": "answer", "question_id": question, "decision": "deny", "reason": "late"}),
    )
    .await;
    let reply = loop {
        let f = next(&mut a1).await;
        if f["type"] == "command_result" {
            break f;
        }
    };
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "already_decided");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alice")
    );

    // The turn finishes with its cost; the session is idle.
    let rest = events_until(&mut a2, |e| e["type"] == "result").await;
    assert!(
        rest.iter()
            .any(|(_, e)| e["type"] == "tool_result" && e["content"] == "README.md\nsrc")
    );
    assert!(rest.last().unwrap().1["cost_usd"].as_f64().unwrap() > 0.0);
    let meta: Value = get_json(&alice, format!("{}/api/sessions/{id}", up.base)).await;
    assert_eq!(
        (meta["state"].as_str(), meta["reason"].as_str()),
        (Some("paused"), Some("idle")),
        "{meta}"
    );

    // Close everything, send a follow-up from a fresh client, and reopen
    // with after=<last seq seen>: every missed event exactly once, in order.
    let last_seen = rest.last().unwrap().0;
    drop(a1);
    drop(a2);
    let mut a3 = ws(&up.base, &alice_cookie, &id, last_seen, &up.base)
        .await
        .unwrap();
    next(&mut a3).await;
    next(&mut a3).await;
    send_cmd(&mut a3, "m-1", json!({"type": "message", "text": "thanks"})).await;
    let more = events_until(&mut a3, |e| e["type"] == "result").await;
    let seqs: Vec<u64> = more.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (last_seen + 1..=*seqs.last().unwrap()).collect::<Vec<_>>()
    );
    drop(a3);
    // From scratch, the whole log: dense seqs from 1, nothing twice.
    let final_seq = *seqs.last().unwrap();
    let mut a4 = ws(&up.base, &alice_cookie, &id, 0, &up.base).await.unwrap();
    next(&mut a4).await;
    next(&mut a4).await;
    let all = events_n(&mut a4, final_seq).await;
    assert_eq!(
        all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=final_seq).collect::<Vec<_>>()
    );

    // The worktree is busy while the session lives; closing it frees it.
    let busy = alice
        .post(format!("{}/api/sessions", up.base))
        .header("origin", &up.base)
        .json(&json!({"worktree": wt, "prompt": "another"}))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409, "the worktree is still held");
    let r = alice
        .post(format!("{}/api/sessions/{id}/close", up.base))
        .header("origin", &up.base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "terminated");
    let ended = events_until(&mut a4, |e| {
        e["type"] == "session.state" && e["state"] == "terminated"
    })
    .await;
    assert!(!ended.is_empty());
    send_cmd(
        &mut a4,
        "late-1",
        json!({"type": "message", "text": "still there?"}),
    )
    .await;
    let reply = loop {
        let f = next(&mut a4).await;
        if f["type"] == "command_result" {
            break f;
        }
    };
    assert_eq!(reply["ok"], false, "a closed session takes no more turns");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = alice
            .post(format!("{}/api/sessions", up.base))
            .header("origin", &up.base)
            .json(&json!({"worktree": wt, "prompt": "a new session in the freed worktree"}))
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            break;
        }
        assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worktree was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut up = up;
    up.child.start_kill().unwrap();
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
