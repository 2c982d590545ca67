#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The browser end-to-end suite: headless Chromium (Debian's), driven by
//! playwright-core from `e2e/` under `node --test`, against the real
//! `duraclaw` binaries on 127.0.0.1.
//!
//! This test starts four deployments and a control endpoint, then runs the
//! suite with their addresses in `DURACLAW_E2E_*` variables:
//!
//! - *claude*: `duraclaw up` with the pinned Claude Code CLI, which talks to
//!   the fake Anthropic API served from this process (its first stream
//!   stalls on a latch until the suite releases it);
//! - *demo*: `duraclaw up --demo --script` (the scripted executor), which
//!   trusts the CA of the push-service stand-in (`--push-ca`) the suite
//!   subscribes at through the control endpoint;
//! - *split*: `duraclaw gateway` and `duraclaw orchestrator` as separate
//!   processes, which the suite kills and restarts through the control
//!   endpoint.
//! - *old CLI*: `duraclaw up` whose `claude` reports a version below the
//!   minimum (the new-session form must refuse to start sessions).
//!
//! The harness is the one the Cloudflare run uses too
//! (`duraclaw_testkit::browser_suite`). Missing node, Chromium,
//! playwright-core or the CLI fail the test (it never skips): `scripts/install-tools.sh chromium playwright claude`.
//! Screenshots, the suite's output and every process's log go to
//! `ci-output/browser-e2e/`. `DURACLAW_E2E_FILES="replay.test.js …"` runs
//! only those files of the suite.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duraclaw_fake_anthropic::{FakeAnthropic, Latch};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::process::{Child, Command};

use duraclaw_testkit::browser_suite::{
    self, Control, Deployments, Tools, artifacts_dir, claude_setup, fake_model, script,
};
use duraclaw_testkit::local as support;
use duraclaw_testkit::push_service::PushService;
use support::{free_port, init_repo, spawn_until, user_add};

/// The bound on the whole browser suite.
const SUITE_DEADLINE: Duration = Duration::from_secs(660);
const SECRET: &str = "browser-e2e-gateway-secret-0123456789";

/// `duraclaw` with none of the caller's Duraclaw, Claude or Anthropic
/// settings, logging to `log`.
fn duraclaw(log: &Path) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut c = support::duraclaw("info");
    c.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    c
}

async fn add_users(data: &Path, log: &Path) {
    // One first, so that the two do not race to create the database.
    for name in ["alice", "bob"] {
        let out = user_add(duraclaw(log), data, name).await;
        assert!(
            out.status.success(),
            "user add {name}: see {}",
            log.display()
        );
    }
}

/// Git repositories `root/<name>` for each name; returns the glob for them.
fn worktrees(root: &Path, names: &[&str]) -> String {
    for name in names {
        init_repo(
            &root.join(name),
            &[(
                "README.md",
                &format!("# {name}\n\nA project for the browser suite.\n"),
            )],
        );
    }
    format!("{}/*", root.display())
}

// ---------------------------------------------------------------------------
// The deployments
// ---------------------------------------------------------------------------

/// `duraclaw up` running the real CLI against `fake`.
async fn up_claude(
    root: &Path,
    tools: &Tools,
    fake: &FakeAnthropic,
    logs: &Path,
) -> (Child, String) {
    let data = root.join("data");
    let cli_env = claude_setup(root, fake);
    let projects = root.join("projects");
    let log = logs.join("claude-up.log");
    add_users(&data, &log).await;
    let mut c = duraclaw(&log);
    c.args([
        "up",
        "--bind",
        "127.0.0.1:0",
        "--gateway-bind",
        "127.0.0.1:0",
        "--model",
        "claude-sonnet-4-5",
    ])
    .arg("--data-dir")
    .arg(&data)
    .arg("--worktrees")
    .arg(format!("{}/*", projects.display()))
    .arg("--claude-bin")
    .arg(&tools.claude)
    // Inherited by the CLI.
    .envs(cli_env);
    let (child, found) = spawn_until(c, &["duraclaw listening on "])
        .await
        .unwrap_or_else(|e| panic!("duraclaw up (claude): {e}; see {}", log.display()));
    (child, found[0].clone())
}

/// `duraclaw up --demo --script`, trusting the push-service stand-in's CA.
async fn up_demo(root: &Path, logs: &Path, push_ca: &Path, agents: &Path) -> (Child, String) {
    let data = root.join("data");
    let log = logs.join("demo-up.log");
    add_users(&data, &log).await;
    let script_path = script();
    let inbox = duraclaw_testkit::browser_suite::inbox_worktrees();
    let names: Vec<&str> = [
        "replay",
        "two-devices",
        "questions",
        "isolation",
        "cards",
        "answer-retry",
        "login-ended",
        "unapproved",
        "ahead-of-log",
        "queued-and-auto",
        "notifications",
        "push-chain",
        "rules",
        "worktree-choice",
        "agents",
        "long-session",
        "acp",
    ]
    .into_iter()
    .chain(inbox.iter().map(String::as_str))
    .collect();
    let patterns = worktrees(&root.join("projects"), &names);
    let mut c = duraclaw(&log);
    c.args([
        "up",
        "--demo",
        "--bind",
        "127.0.0.1:0",
        "--gateway-bind",
        "127.0.0.1:0",
    ])
    .arg("--script")
    .arg(&script_path)
    .arg("--push-ca")
    .arg(push_ca)
    .arg("--data-dir")
    .arg(&data)
    .arg("--worktrees")
    .arg(patterns)
    .arg("--agents")
    .arg(agents);
    let (child, found) = spawn_until(c, &["duraclaw listening on "])
        .await
        .unwrap_or_else(|e| panic!("duraclaw up --demo: {e}; see {}", log.display()));
    (child, found[0].clone())
}

/// The version the stand-in for an old CLI reports (below the minimum).
const OLD_CLI_VERSION: &str = "2.1.84";

/// `duraclaw up` whose `claude` is a stand-in for an old CLI: it only says
/// its version (and leaves a file behind if anything ever starts it for a
/// session). Returns the process, its address and that file.
async fn up_old_cli(root: &Path, logs: &Path) -> (Child, String, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let data = root.join("data");
    let log = logs.join("old-cli-up.log");
    add_users(&data, &log).await;
    let patterns = worktrees(&root.join("projects"), &["old-cli"]);
    let ran = root.join("old-cli-ran");
    let bin = root.join("claude");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo '{OLD_CLI_VERSION} (Claude Code)'; exit 0; }}\ntouch '{}'\n",
            ran.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = duraclaw(&log);
    c.args([
        "up",
        "--bind",
        "127.0.0.1:0",
        "--gateway-bind",
        "127.0.0.1:0",
    ])
    .arg("--claude-bin")
    .arg(&bin)
    .arg("--data-dir")
    .arg(&data)
    .arg("--worktrees")
    .arg(patterns);
    let (child, found) = spawn_until(c, &["duraclaw listening on "])
        .await
        .unwrap_or_else(|e| panic!("duraclaw up (old CLI): {e}; see {}", log.display()));
    (child, found[0].clone(), ran)
}

/// The split deployment: what it takes to (re)start either half on the same
/// port with the same data.
struct Split {
    gateway_port: u16,
    orchestrator_port: u16,
    script: PathBuf,
    patterns: String,
    gateway_data: PathBuf,
    data: PathBuf,
    logs: PathBuf,
    starts: std::sync::atomic::AtomicU32,
}

impl Split {
    fn new(root: &Path, logs: &Path) -> Split {
        Split {
            gateway_port: free_port(),
            orchestrator_port: free_port(),
            script: script(),
            patterns: worktrees(
                &root.join("projects"),
                &["gateway-kill", "orchestrator-restart"],
            ),
            gateway_data: root.join("gateway"),
            data: root.join("data"),
            logs: logs.to_owned(),
            starts: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn log(&self, what: &str) -> PathBuf {
        let n = self
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.logs.join(format!("split-{n}-{what}.log"))
    }

    async fn gateway(&self) -> Result<Child, String> {
        let log = self.log("gateway");
        let mut c = duraclaw(&log);
        c.env("CC_GATEWAY_SECRET", SECRET)
            .args(["gateway", "--executor", "scripted", "--bind"])
            .arg(format!("127.0.0.1:{}", self.gateway_port))
            .arg("--worktrees")
            .arg(&self.patterns)
            .arg("--script")
            .arg(&self.script)
            .arg("--data-dir")
            .arg(&self.gateway_data);
        spawn_until(c, &["gateway listening on "])
            .await
            .map(|(child, _)| child)
            .map_err(|e| format!("duraclaw gateway: {e}; see {}", log.display()))
    }

    async fn orchestrator(&self) -> Result<Child, String> {
        let log = self.log("orchestrator");
        let mut c = duraclaw(&log);
        c.env("CC_GATEWAY_SECRET", SECRET)
            .args(["orchestrator", "--bind"])
            .arg(format!("127.0.0.1:{}", self.orchestrator_port))
            .arg("--gateway-url")
            .arg(format!("ws://127.0.0.1:{}", self.gateway_port))
            .arg("--data-dir")
            .arg(&self.data);
        spawn_until(c, &["duraclaw listening on "])
            .await
            .map(|(child, _)| child)
            .map_err(|e| format!("duraclaw orchestrator: {e}; see {}", log.display()))
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.orchestrator_port)
    }
}

/// The split deployment's two halves, for the control endpoint.
struct SplitProcs {
    split: Split,
    gateway: tokio::sync::Mutex<Option<Child>>,
    orchestrator: tokio::sync::Mutex<Option<Child>>,
}

async fn kill(slot: &tokio::sync::Mutex<Option<Child>>) {
    if let Some(mut child) = slot.lock().await.take() {
        // SIGKILL: nothing gets to clean up.
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

impl browser_suite::Split for SplitProcs {
    fn kill_gateway(&self) -> BoxFuture<'_, ()> {
        Box::pin(kill(&self.gateway))
    }

    fn start_gateway(&self) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            let mut slot = self.gateway.lock().await;
            if let Some(child) = slot.as_mut()
                && child.try_wait().ok().flatten().is_none()
            {
                return Ok(true);
            }
            *slot = Some(self.split.gateway().await?);
            Ok(false)
        })
    }

    fn restart_host(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            kill(&self.orchestrator).await;
            let mut slot = self.orchestrator.lock().await;
            *slot = Some(self.split.orchestrator().await?);
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_suite() {
    let t0 = Instant::now();
    let tools = Tools::find(duraclaw_gateway::cli::launch::bin_path());
    let artifacts = artifacts_dir("browser-e2e");
    let logs = artifacts.join("logs");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();

    let latch = Latch::new();
    let fake = fake_model(&root.join("claude"), &latch).await;
    let push = Arc::new(PushService::start().await);

    let split = Split::new(&root.join("split"), &logs);
    let (claude_root, demo_root, old_root) =
        (root.join("claude"), root.join("demo"), root.join("old-cli"));
    // Codex (`acp.test.js`) against a fake OpenAI API, beside the
    // suite's agents.
    let (agents, _openai) = browser_suite::agents_with_codex(&root).await;
    let split_up = async {
        add_users(&split.data, &logs.join("split-users.log")).await;
        tokio::join!(split.gateway(), split.orchestrator())
    };
    let (
        (claude_up, claude_url),
        (demo_up, demo_url),
        (old_up, old_url, old_ran),
        (gateway, orchestrator),
    ) = tokio::join!(
        up_claude(&claude_root, &tools, &fake, &logs),
        up_demo(&demo_root, &logs, push.ca_file(), &agents),
        up_old_cli(&old_root, &logs),
        split_up,
    );
    let split_url = split.base();
    let procs = Arc::new(SplitProcs {
        split,
        gateway: tokio::sync::Mutex::new(Some(gateway.unwrap())),
        orchestrator: tokio::sync::Mutex::new(Some(orchestrator.unwrap())),
    });
    let control = Arc::new(Control::new(
        latch,
        fake,
        procs.clone(),
        support::push_action_secret(&demo_root.join("data")),
        push,
    ));
    eprintln!("deployments up in {} ms", t0.elapsed().as_millis());

    let deployments = Deployments {
        claude: claude_url,
        demo: demo_url,
        split: split_url,
        // Local only: a gateway whose CLI is too old (the Worker runs no
        // CLI; its gateway's check is the same code, in the gateway).
        extra: vec![(
            "DURACLAW_E2E_OLD_CLI",
            json!({
                "url": old_url,
                "found": OLD_CLI_VERSION,
                "minimum": duraclaw_gateway::cli::launch::MIN_CLI_VERSION,
            })
            .to_string(),
        )],
    };
    let (ok, output) = browser_suite::run(
        &tools,
        deployments,
        control,
        &artifacts,
        &[],
        SUITE_DEADLINE,
    )
    .await;
    println!("{output}");
    eprintln!("with the deployments: {} ms", t0.elapsed().as_millis());

    kill(&procs.gateway).await;
    kill(&procs.orchestrator).await;
    for mut child in [claude_up, demo_up, old_up] {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    assert!(!old_ran.exists(), "the old CLI was started for a session");
    assert!(
        ok,
        "the browser suite failed (its output is above and in {}; the processes' logs are in {})",
        artifacts.join("suite-output.txt").display(),
        logs.display()
    );
}
