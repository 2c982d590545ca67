#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The `duraclaw-gateway` binary: refusals at start, and a SIGKILL of the
//! gateway mid-approval that loses nothing.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use duraclaw_core::protocol::{
    Command, CommandEnvelope, Decision, Event, Execute, FromGateway, ToGateway, UserTurn,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command as Process};

mod support;
use support::{events_until, init_repo, open, recv, send};

const SECRET: &str = "binary-test-secret-0123456789";
const DEADLINE: Duration = Duration::from_secs(30);

fn bin() -> Process {
    let mut p = Process::new(env!("CARGO_BIN_EXE_duraclaw-gateway"));
    p.env_remove("CC_GATEWAY_SECRET")
        .env_remove("WORKTREE_PATTERNS")
        .env_remove("CC_GATEWAY_BIND")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    p
}

#[tokio::test]
async fn it_refuses_to_start_without_a_secret_or_on_a_public_address() {
    let out = bin().output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CC_GATEWAY_SECRET"), "{err}");

    let out = bin()
        .env("CC_GATEWAY_SECRET", "short")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));

    let out = bin()
        .env("CC_GATEWAY_SECRET", SECRET)
        .args(["--bind", "0.0.0.0:0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    // The secret is never echoed.
    assert!(!err.contains(SECRET));
}

/// Starts the gateway and reads the address it prints.
async fn start(root: &Path, script: &Path) -> (Child, std::net::SocketAddr) {
    let mut child = bin()
        .env("CC_GATEWAY_SECRET", SECRET)
        .args(["--bind", "127.0.0.1:0", "--executor", "scripted"])
        .arg("--script")
        .arg(script)
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--worktrees")
        .arg(format!("{}/projects/*", root.display()))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the gateway did not start in time")
        .unwrap()
        .expect("the gateway exited before listening");
    let addr = line.rsplit("ws://").next().unwrap().trim().parse().unwrap();
    (child, addr)
}

#[tokio::test]
async fn a_killed_gateway_restarts_with_nothing_lost_and_the_question_withdrawn() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    init_repo(&root.join("projects/app"));
    let script = root.join("script.json");
    std::fs::write(
        &script,
        r#"{"turns":[[{"step":"text","text":"checking","chunks":3},
            {"step":"tool","name":"Bash","input":{"command":"make"},"result":"ok"}]]}"#,
    )
    .unwrap();

    let (mut gw, addr) = start(&root, &script).await;
    let mut ws = open(addr, SECRET, DEADLINE).await;
    send(
        &mut ws,
        &ToGateway::Command(CommandEnvelope {
            id: "c1".into(),
            session_id: "s1".into(),
            command: Command::Execute(Execute {
                worktree: root.join("projects/app").display().to_string(),
                prompt: "build it".into(),
                model: None,
                permission_mode: None,
                system_prompt: None,
                rules: None,
                new_worktree: None,
                fork: None,
                agent: None,
            }),
        }),
    )
    .await;
    assert!(matches!(recv(&mut ws, DEADLINE).await, FromGateway::CommandResult(r) if r.ok));
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq: 0,
        },
    )
    .await;
    let before = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::UserQuestion(_))).await;
    let last = before.last().unwrap().0;

    // The request is in the audit file before anyone decided.
    let audit = std::fs::read_to_string(root.join("data/audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"requested\"") && audit.contains("make"),
        "{audit}"
    );

    // kill -9: no chance to clean up.
    gw.start_kill().unwrap();
    gw.wait().await.unwrap();

    let (_gw, addr) = start(&root, &script).await;
    let mut ws = open(addr, SECRET, DEADLINE).await;
    // Attach from 0: the whole log again, identical, then the withdrawal.
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq: 0,
        },
    )
    .await;
    let again = events_until(&mut ws, DEADLINE, |e| {
        matches!(e, Event::QuestionResolved(_))
    })
    .await;
    assert_eq!(
        &again[..before.len()],
        &before[..],
        "the log survived the kill"
    );
    let (gseq, withdrawn) = &again[before.len()];
    assert_eq!(*gseq, last + 1);
    match withdrawn {
        Event::QuestionResolved(r) => {
            assert!(matches!(r.decision, Decision::Cancelled { .. }));
            assert_eq!(r.by.who, "gateway");
        }
        other => panic!("{other:?}"),
    }
    // The turn the kill cut is ended, so nobody waits on a dead agent.
    let cut = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Error(_))).await;
    match &cut[..] {
        [(g, Event::Error(e))] => {
            assert_eq!(*g, last + 2);
            assert_eq!(e.code.as_deref(), Some("gateway_restarted"));
        }
        other => panic!("{other:?}"),
    }
    // A message resumes the session; numbering continues.
    send(
        &mut ws,
        &ToGateway::Command(CommandEnvelope {
            id: "m1".into(),
            session_id: "s1".into(),
            command: Command::Message(UserTurn {
                text: "go on".into(),
            }),
        }),
    )
    .await;
    let resumed = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert_eq!(resumed[0].0, last + 3);
}
