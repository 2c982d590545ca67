#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Runs the in-process host (`src/bin/in_process.rs`) twice over one
//! directory: the first run's approved command really runs; the second
//! replays the durable log from SQLite and adds a turn after it.

use std::process::Output;
use std::time::Duration;

async fn run(dir: &std::path::Path) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_in_process"))
        .arg(dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("the host finished in time")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_process_is_approved_then_replayed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = String::from_utf8(run(dir.path()).await.stdout).unwrap();
    assert!(dir.path().join("app/hello.txt").is_file(), "{first}");
    // Logged once: the answer logs it, the executor's echo is not logged again.
    assert_eq!(
        first.matches(r#""type":"question.resolved""#).count(),
        1,
        "{first}"
    );
    assert!(first.contains("The command was ok."), "{first}");
    assert!(
        first.ends_with("state: Paused { reason: Idle }\n"),
        "{first}"
    );
    let logged: Vec<&str> = first.lines().filter(|l| !l.starts_with("state")).collect();

    let second = String::from_utf8(run(dir.path()).await.stdout).unwrap();
    let replay: Vec<&str> = second
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim_start)
        .collect();
    // Everything the first run printed, in order, then what came after
    // (the first run's last events, as the reopen withdrew nothing).
    assert_eq!(&replay[..logged.len()], &logged[..], "{second}");
    assert!(second.contains("Turn 1: Anything else?"), "{second}");
    let seqs: Vec<u64> = second
        .lines()
        .filter_map(|l| l.trim_start().split_once(' ')?.0.parse().ok())
        .collect();
    let dense: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, dense, "one dense log across both runs: {second}");
}
