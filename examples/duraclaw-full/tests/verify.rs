#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! `duraclaw verify` as a process against `duraclaw up --demo` on
//! 127.0.0.1: every step passes against a working deployment (questions
//! answered along the way), and a wrong password, a failing executor, a
//! busy worktree, an https URL and a stopped server each fail at the
//! right step with a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Child;

use duraclaw_testkit::local as support;
use support::{PASSWORD, add_user, duraclaw, init_repo, up_demo};

/// The bound on one `duraclaw verify` run.
const DEADLINE: Duration = Duration::from_secs(60);
const STEPS: [&str; 7] = [
    "preflight",
    "login",
    "gateway",
    "worktrees",
    "session",
    "turn",
    "replay",
];

/// Text, a gated shell command, a question, more text: every kind of
/// question the check must answer.
fn script(dir: &Path, turn: serde_json::Value) -> PathBuf {
    let path = dir.join(format!("script-{}.json", turn.to_string().len()));
    std::fs::write(&path, json!({ "turns": [turn] }).to_string()).unwrap();
    path
}

fn good_turn() -> serde_json::Value {
    json!([
        {"step": "text", "text": "Let me look.", "chunks": 3},
        {"step": "tool", "name": "Bash", "input": {"command": "ls"}, "result": "README.md"},
        {"step": "ask", "questions": [{"question": "Which word?", "options": [{"label": "pong"}, {"label": "ping"}]}]},
        {"step": "text", "text": "pong", "chunks": 2}
    ])
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
    ms: u128,
}

impl Outcome {
    fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
            .collect()
    }

    /// The PASS lines of `passed`, then the FAIL line of `failed` (if any),
    /// and nothing else.
    fn assert_steps(&self, passed: &[&str], failed: Option<&str>) {
        let lines = self.lines();
        let ctx = format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_eq!(
            lines.len(),
            passed.len() + usize::from(failed.is_some()),
            "{ctx}"
        );
        for (line, step) in lines.iter().zip(passed) {
            let prefix = format!("PASS {step} (");
            assert!(
                line.starts_with(&prefix),
                "{line:?} is not {prefix}…\n{ctx}"
            );
            let ms = line[prefix.len()..].split(" ms)").next().unwrap();
            ms.parse::<u64>()
                .unwrap_or_else(|_| panic!("no milliseconds in {line:?}"));
        }
        if let Some(step) = failed {
            let last = lines.last().unwrap();
            assert!(last.starts_with(&format!("FAIL {step}: ")), "{ctx}");
        }
        assert_eq!(self.ok, failed.is_none(), "exit status; {ctx}");
    }

    fn fail_line(&self) -> &str {
        self.lines().last().copied().unwrap_or_default()
    }
}

/// Runs `duraclaw verify` with `args`, the password on stdin unless
/// `password` is `None`.
async fn verify(
    base: &str,
    args: &[&str],
    password: Option<&str>,
    env: &[(&str, &str)],
) -> Outcome {
    let mut cmd = duraclaw("warn");
    cmd.args(["verify", "--url", base, "--timeout-secs", "30"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if password.is_some() {
        cmd.arg("--password-stdin");
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(p) = password {
        stdin.write_all(format!("{p}\n").as_bytes()).await.unwrap();
    }
    drop(stdin);
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("duraclaw verify did not finish in time")
        .unwrap();
    let outcome = Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        ms: start.elapsed().as_millis(),
    };
    println!("verify {args:?}: {} ms\n{}", outcome.ms, outcome.stdout);
    outcome
}

struct Deployment {
    _tmp: tempfile::TempDir,
    child: Child,
    base: String,
    projects: PathBuf,
}

async fn deployment(turn: serde_json::Value, repos: &[&str]) -> Deployment {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let data = root.join("data");
    add_user(&data, "alice").await;
    let projects = root.join("projects");
    for r in repos {
        init_repo(&projects.join(r), &[("README.md", "hello\n")]);
    }
    let script = script(&root, turn);
    let patterns = format!("{}/*", projects.display());
    let (child, base, _) = up_demo(
        &data,
        &script,
        &["--gateway-bind", "127.0.0.1:0", "--worktrees", &patterns],
    )
    .await;
    Deployment {
        _tmp: tmp,
        child,
        base,
        projects,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_passes_against_a_working_deployment() {
    let d = deployment(good_turn(), &["app1", "app2"]).await;
    let run = verify(&d.base, &["--user", "alice"], Some(PASSWORD), &[]).await;
    run.assert_steps(&STEPS, None);
    assert!(
        run.stdout.contains("2 question(s) answered"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("reply \"pong\""), "{}", run.stdout);

    // Again, with the password from the environment, in the worktree the
    // first run did not use; then in a worktree that is now busy.
    let app1 = format!("using {}", d.projects.join("app1").display());
    let (used, free) = if run.stdout.contains(&app1) {
        ("app1", "app2")
    } else {
        ("app2", "app1")
    };
    let free = d.projects.join(free).display().to_string();
    let run = verify(
        &d.base,
        &[
            "--user",
            "alice",
            "--worktree",
            &free,
            "--prompt",
            "say pong",
        ],
        None,
        &[("DURACLAW_VERIFY_PASSWORD", PASSWORD)],
    )
    .await;
    run.assert_steps(&STEPS, None);
    assert!(
        run.stdout.contains(&format!("using {free}")),
        "{}",
        run.stdout
    );

    let used = d.projects.join(used).display().to_string();
    let run = verify(
        &d.base,
        &["--user", "alice", "--worktree", &used],
        Some(PASSWORD),
        &[],
    )
    .await;
    run.assert_steps(&STEPS[..3], Some("worktrees"));
    assert!(
        run.fail_line().contains("busy with session"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_stop_at_their_step_with_a_non_zero_exit() {
    let d = deployment(
        json!([{"step": "fail", "message": "the model is on fire"}]),
        &["app"],
    )
    .await;

    let run = verify(&d.base, &["--user", "alice"], Some("not the password"), &[]).await;
    run.assert_steps(&STEPS[..1], Some("login"));
    assert!(run.fail_line().contains("wrong user name or password"));

    let run = verify(&d.base, &["--user", "alice"], Some(PASSWORD), &[]).await;
    run.assert_steps(&STEPS[..5], Some("turn"));
    assert!(
        run.fail_line().contains("the model is on fire"),
        "{}",
        run.stdout
    );

    let https = d.base.replace("http://", "https://");
    let run = verify(&https, &["--user", "alice"], Some(PASSWORD), &[]).await;
    run.assert_steps(&[], Some("preflight"));
    assert!(run.fail_line().contains("without TLS"), "{}", run.stdout);

    // The server stops: nothing listens on its port any more.
    let mut d = d;
    d.child.start_kill().unwrap();
    d.child.wait().await.unwrap();
    let run = verify(&d.base, &["--user", "alice"], Some(PASSWORD), &[]).await;
    run.assert_steps(&[], Some("preflight"));
    assert!(run.fail_line().contains("cannot reach"), "{}", run.stdout);
}
