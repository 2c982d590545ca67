#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The browser end-to-end suite (`e2e/`, headless Chromium through
//! playwright-core under `node --test`) against Duraclaw on Cloudflare: the
//! worker crate (`examples/duraclaw-full/cloudflare`) under `wrangler dev`,
//! serving the unchanged UI, in front of real gateways.
//!
//! Two deployments, each a `wrangler dev` and its own gateway
//! (`duraclaw gateway`):
//!
//! - *claude*: the gateway runs the pinned Claude Code CLI against the fake
//!   Anthropic API served from this process (its first stream stalls on a
//!   latch until the suite releases it);
//! - *demo*: the gateway runs the scripted executor. The suite's *split*
//!   scenarios run here too: the control endpoint kills and restarts this
//!   gateway (SIGKILL) and restarts this `wrangler dev` on the same state
//!   (the "orchestrator restart"). Its Worker sends Web Push to the
//!   push-service stand-in, whose CA it trusts (`NODE_EXTRA_CA_CERTS`).
//!
//! Users are created through the Worker's admin route. The harness is the
//! local run's (`duraclaw_testkit::browser_suite`). Missing tools fail
//! the test (it never skips). The suite's output, screenshots and every
//! process's log go to `ci-output/cloudflare-browser-e2e/`.
//! `DURACLAW_E2E_FILES="replay.test.js …"` runs only those files.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duraclaw_fake_anthropic::Latch;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use duraclaw_testkit::browser_suite::{
    self, Control, Deployments, PASSWORD, Tools, artifacts_dir, claude_setup, fake_model, script,
};
use duraclaw_testkit::local::init_repo;
use duraclaw_testkit::push_service::PushService;
use duraclaw_testkit::wrangler as support;
use support::{Wrangler, build_worker_crate, free_port, start_wrangler_env, wait_until_ready};

const START_DEADLINE: Duration = Duration::from_secs(30);
const SUITE_DEADLINE: Duration = Duration::from_secs(840);
const GATEWAY_SECRET: &str = "cf-browser-gateway-secret-0123456789";
const COOKIE_SECRET: &str = "cf-browser-cookie-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "cf-browser-admin-token-0123456789abcdef";
/// The deployment's VAPID private key (base64url); it signs notification
/// actions too.
const VAPID_PRIVATE_KEY: &str = "Bx3NnUCtRrgYJ1qFqAXB0P2c9WvF1mS1k4CkTzvZ6xQ";

/// The suite's files that run on Cloudflare: all but `old-cli.test.js`,
/// which needs a host that runs a CLI of its own (`duraclaw up`); behind
/// the Worker the version check is the gateway's, the same code.
const FILES: &[&str] = &[
    "login.test.js",
    "claude.test.js",
    "replay.test.js",
    "two-devices.test.js",
    "questions.test.js",
    "isolation.test.js",
    "faults.test.js",
    "cards.test.js",
    "answer-retry.test.js",
    "login-ended.test.js",
    "ahead-of-log.test.js",
    "queued-and-auto.test.js",
    "notifications.test.js",
    "rules.test.js",
    "long-session.test.js",
    "inbox.test.js",
    "worktree-choice.test.js",
];

/// How to start one gateway, again and again on the same port and data.
#[derive(Clone)]
struct GatewaySpec {
    port: u16,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    logs: PathBuf,
    name: &'static str,
}

impl GatewaySpec {
    async fn start(&self, n: usize) -> Result<Child, String> {
        let log = self.logs.join(format!("{}-gateway-{n}.log", self.name));
        let mut c = Command::new(env!("CARGO_BIN_EXE_duraclaw"));
        for (name, _) in std::env::vars_os() {
            let s = name.to_string_lossy();
            if s.starts_with("CC_GATEWAY")
                || s.starts_with("DURACLAW_")
                || s.starts_with("CLAUDE")
                || s.starts_with("ANTHROPIC_")
                || s == "WORKTREE_PATTERNS"
            {
                c.env_remove(&name);
            }
        }
        c.env("CC_GATEWAY_SECRET", GATEWAY_SECRET)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .arg("gateway")
            .arg("--bind")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        let mut child = c.spawn().map_err(|e| e.to_string())?;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let up = tokio::time::timeout(START_DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("gateway listening on ") {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(up, Ok(true)) {
            return Err(format!("the gateway did not start; see {}", log.display()));
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(child)
    }
}

/// One `wrangler dev` deployment of the worker.
struct Deployment {
    dir: PathBuf,
    port: u16,
    vars: Vec<(String, String)>,
    /// Environment for `wrangler dev` (the push CA to trust).
    env: Vec<(&'static str, PathBuf)>,
    logs: PathBuf,
    name: &'static str,
}

impl Deployment {
    fn new(root: &Path, build: &Path, name: &'static str, gateway_port: u16, logs: &Path) -> Self {
        let dir = root.join(format!("{name}-cf"));
        std::fs::create_dir_all(&dir).unwrap();
        let crate_dir = support::repo_root().join("examples/duraclaw-full/cloudflare");
        let dist = support::repo_root().join("examples/duraclaw-full/ui/dist");
        let toml = std::fs::read_to_string(crate_dir.join("wrangler.toml"))
            .unwrap()
            .replace(
                "main = \"build/index.js\"",
                &format!("main = {:?}", build.join("index.js").display().to_string()),
            )
            .replace(
                "directory = \"../ui/dist\"",
                &format!("directory = {:?}", dist.display().to_string()),
            );
        std::fs::write(dir.join("wrangler.toml"), toml).unwrap();
        Deployment {
            dir,
            port: free_port(),
            vars: vec![
                (
                    "CC_GATEWAY_URL".into(),
                    format!("http://127.0.0.1:{gateway_port}"),
                ),
                ("CC_GATEWAY_SECRET".into(), GATEWAY_SECRET.into()),
                ("DURACLAW_COOKIE_SECRET".into(), COOKIE_SECRET.into()),
                ("DURACLAW_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
                (
                    "DURACLAW_VAPID_PRIVATE_KEY".into(),
                    VAPID_PRIVATE_KEY.into(),
                ),
            ],
            env: vec![],
            logs: logs.to_owned(),
            name,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&self, tools: &support::Tools, n: usize) -> Wrangler {
        let vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let log = self.logs.join(format!("{}-wrangler-{n}.log", self.name));
        let env: Vec<(&str, &Path)> = self.env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let mut w = start_wrangler_env(tools, &self.dir, self.port, &vars, &env, &log);
        let http = reqwest::Client::new();
        let health = format!("{}/api/health", self.base());
        wait_until_ready(&mut w, &http, &health, |t| t.contains("\"ok\":true")).await;
        w
    }

    async fn add_users(&self) {
        let http = reqwest::Client::new();
        for name in ["alice", "bob"] {
            let r = http
                .post(format!("{}/api/admin/users", self.base()))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"username": name, "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            assert!(
                status.is_success(),
                "creating {name}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
    }
}

/// The demo deployment's gateway and `wrangler dev`, for the control
/// endpoint: the suite's fault scenarios break this one.
struct DemoSplit {
    tools: support::Tools,
    demo: Deployment,
    demo_gateway: GatewaySpec,
    gateway: tokio::sync::Mutex<Option<Child>>,
    wrangler: tokio::sync::Mutex<Option<Wrangler>>,
    starts: std::sync::atomic::AtomicUsize,
}

impl browser_suite::Split for DemoSplit {
    fn kill_gateway(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut child) = self.gateway.lock().await.take() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        })
    }

    fn start_gateway(&self) -> BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move {
            let mut slot = self.gateway.lock().await;
            if let Some(child) = slot.as_mut()
                && child.try_wait().ok().flatten().is_none()
            {
                return Ok(true);
            }
            let n = self
                .starts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *slot = Some(self.demo_gateway.start(n).await?);
            Ok(false)
        })
    }

    /// Stops `wrangler dev` and starts it again on the same state.
    fn restart_host(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut slot = self.wrangler.lock().await;
            drop(slot.take());
            let n = self
                .starts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *slot = Some(self.demo.start(&self.tools, n).await);
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_suite_on_cloudflare() {
    let t0 = Instant::now();
    let tools = Tools::find(duraclaw_gateway::cli::launch::bin_path());
    let cf = support::Tools::find();
    let artifacts = artifacts_dir("cloudflare-browser-e2e");
    let logs = artifacts.join("logs");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();

    let build = root.join("build");
    build_worker_crate(
        &cf,
        &support::repo_root().join("examples/duraclaw-full/cloudflare"),
        &build,
    );

    // The Claude deployment.
    let latch = Latch::new();
    let claude_root = root.join("claude");
    let fake = fake_model(&claude_root, &latch).await;
    let cli_env = claude_setup(&claude_root, &fake);
    let claude_gateway = GatewaySpec {
        port: free_port(),
        args: vec![
            "--executor".into(),
            "claude".into(),
            "--model".into(),
            "claude-sonnet-4-5".into(),
            "--claude-bin".into(),
            tools.claude.display().to_string(),
            "--worktrees".into(),
            format!("{}/projects/*", claude_root.display()),
            "--data-dir".into(),
            claude_root.join("gateway").display().to_string(),
        ],
        envs: cli_env,
        logs: logs.clone(),
        name: "claude",
    };
    let claude_gw = claude_gateway.start(0).await.unwrap();
    let claude = Deployment::new(&root, &build, "claude", claude_gateway.port, &logs);
    let claude_wrangler = claude.start(&cf, 0).await;
    claude.add_users().await;

    // The demo deployment (also the split scenarios').
    let demo_root = root.join("demo");
    for name in [
        "replay",
        "two-devices",
        "questions",
        "isolation",
        "gateway-kill",
        "orchestrator-restart",
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
    .map(str::to_owned)
    .chain(duraclaw_testkit::browser_suite::inbox_worktrees())
    {
        let name = name.as_str();
        init_repo(
            &demo_root.join("projects").join(name),
            &[("README.md", &format!("# {name}\n"))],
        );
    }
    // Codex (`acp.test.js`) against a fake OpenAI API, beside the
    // suite's agents.
    let (agents, _openai) = duraclaw_testkit::browser_suite::agents_with_codex(&root).await;
    let demo_gateway = GatewaySpec {
        port: free_port(),
        args: vec![
            "--executor".into(),
            "scripted".into(),
            "--script".into(),
            script().display().to_string(),
            "--worktrees".into(),
            format!("{}/projects/*", demo_root.display()),
            "--data-dir".into(),
            demo_root.join("gateway").display().to_string(),
            "--agents".into(),
            agents.display().to_string(),
        ],
        envs: vec![],
        logs: logs.clone(),
        name: "demo",
    };
    let demo_gw = demo_gateway.start(0).await.unwrap();
    // The demo Worker sends its pushes to the stand-in, trusting its CA
    // (Miniflare hands NODE_EXTRA_CA_CERTS to workerd's outbound TLS).
    let push = Arc::new(PushService::start().await);
    let mut demo = Deployment::new(&root, &build, "demo", demo_gateway.port, &logs);
    demo.env
        .push(("NODE_EXTRA_CA_CERTS", push.ca_file().to_owned()));
    let demo_wrangler = demo.start(&cf, 0).await;
    demo.add_users().await;
    let (claude_url, demo_url) = (claude.base(), demo.base());

    let split = Arc::new(DemoSplit {
        tools: cf,
        demo,
        demo_gateway,
        gateway: tokio::sync::Mutex::new(Some(demo_gw)),
        wrangler: tokio::sync::Mutex::new(Some(demo_wrangler)),
        starts: std::sync::atomic::AtomicUsize::new(1),
    });
    let control = Arc::new(Control::new(
        latch,
        fake,
        split.clone(),
        duraclaw_testkit::local::vapid_private_bytes(VAPID_PRIVATE_KEY),
        push,
    ));
    eprintln!("deployments up in {} ms", t0.elapsed().as_millis());

    let deployments = Deployments {
        claude: claude_url,
        demo: demo_url.clone(),
        split: demo_url,
        extra: vec![],
    };
    let (ok, output) = browser_suite::run(
        &tools,
        deployments,
        control,
        &artifacts,
        FILES,
        SUITE_DEADLINE,
    )
    .await;
    println!("{output}");
    eprintln!(
        "browser suite on Cloudflare with the deployments: {} ms",
        t0.elapsed().as_millis()
    );
    drop(split.wrangler.lock().await.take());
    drop(claude_wrangler);
    browser_suite::Split::kill_gateway(&*split).await;
    let mut claude_gw = claude_gw;
    let _ = claude_gw.start_kill();
    let _ = claude_gw.wait().await;
    assert!(
        ok,
        "the browser suite failed on Cloudflare (its output is above and in {}; the processes' logs are in {})",
        artifacts.join("suite-output.txt").display(),
        logs.display()
    );
}
