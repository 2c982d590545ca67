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
//!   (the "orchestrator restart").
//!
//! Users are created through the Worker's admin route. Missing tools fail
//! the test (it never skips). The suite's output, screenshots and every
//! process's log go to `ci-output/cloudflare-browser-e2e/`.
//! `DURACLAW_E2E_FILES="replay.test.js …"` runs only those files.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use duraclaw_fake_anthropic::{FakeAnthropic, Latch, Turn};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use duraclaw_testkit::wrangler as support;
use support::{Wrangler, build_worker_crate, free_port, start_wrangler_logged, wait_until_ready};

use duraclaw_testkit::local as full_support;
use full_support::{env_path, on_path, run_node_suite};

const START_DEADLINE: Duration = Duration::from_secs(30);
const SUITE_DEADLINE: Duration = Duration::from_secs(420);
const PASSWORD: &str = "correct horse battery staple";
const GATEWAY_SECRET: &str = "cf-browser-gateway-secret-0123456789";
const COOKIE_SECRET: &str = "cf-browser-cookie-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "cf-browser-admin-token-0123456789abcdef";
const INSTALL_HINT: &str = "run `scripts/install-tools.sh chromium playwright claude`";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn e2e_dir() -> PathBuf {
    manifest_dir().join("e2e")
}

fn artifacts_dir() -> PathBuf {
    let dir = manifest_dir().join("../../ci-output/cloudflare-browser-e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    dir.canonicalize().unwrap()
}

struct Tools {
    cf: support::Tools,
    node: PathBuf,
    chromium: PathBuf,
    playwright_core: PathBuf,
    claude: PathBuf,
}

fn find_tools() -> Tools {
    let cf = support::Tools::find();
    let node = env_path("NODE22_BIN")
        .or_else(|| env_path("NODE_BIN"))
        .or_else(|| on_path("node"))
        .unwrap_or_else(|| panic!("node is not on PATH: {INSTALL_HINT}"));
    let chromium = env_path("CHROMIUM_BIN")
        .or_else(|| on_path("chromium"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("Debian's chromium is not installed: {INSTALL_HINT}"));
    let package: Value =
        serde_json::from_str(&std::fs::read_to_string(e2e_dir().join("package.json")).unwrap())
            .unwrap();
    let pinned = package["devDependencies"]["playwright-core"]
        .as_str()
        .expect("e2e/package.json pins playwright-core")
        .to_owned();
    let playwright_core = env_path("PLAYWRIGHT_CORE").unwrap_or_else(|| {
        let cache = env_path("XDG_CACHE_HOME")
            .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| panic!("neither PLAYWRIGHT_CORE nor HOME is set: {INSTALL_HINT}"));
        cache.join(format!(
            "duraclaw/playwright-core-{pinned}/node_modules/playwright-core"
        ))
    });
    assert!(
        playwright_core.join("package.json").is_file(),
        "playwright-core {pinned} is not at {}: {INSTALL_HINT}",
        playwright_core.display()
    );
    let claude = duraclaw_gateway::cli::launch::bin_path()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("the Claude Code CLI is not installed: {INSTALL_HINT}"));
    Tools {
        cf,
        node,
        chromium,
        playwright_core,
        claude,
    }
}

fn init_repo(path: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(path).unwrap();
    let repo = git2::Repository::init(path).unwrap();
    let mut index = repo.index().unwrap();
    for (name, text) in files {
        std::fs::write(path.join(name), text).unwrap();
        index.add_path(Path::new(name)).unwrap();
    }
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("e2e", "e2e@duraclaw.invalid").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .unwrap();
}

struct ClaudeScript {
    intro: &'static str,
    outro: &'static str,
    notes: &'static str,
}

const CLAUDE_SCRIPT: ClaudeScript = ClaudeScript {
    intro: "Let me read the notes first, so that I can tell you exactly what they say.",
    outro: "The notes say that the launch code is 0451, and nothing else.",
    notes: "The launch code is 0451.\n",
};

/// The scripted executor's turns, shared with tests/browser_e2e.rs.
fn script() -> PathBuf {
    e2e_dir().join("script.json")
}

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
            ],
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
        let mut w = start_wrangler_logged(tools, &self.dir, self.port, &vars, &log);
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

struct Control {
    latch: Latch,
    fake: Arc<FakeAnthropic>,
    tools: support::Tools,
    demo: Deployment,
    demo_gateway: GatewaySpec,
    gateway: tokio::sync::Mutex<Option<Child>>,
    wrangler: tokio::sync::Mutex<Option<Wrangler>>,
    starts: std::sync::atomic::AtomicUsize,
}

type Ctl = State<Arc<Control>>;

fn ok() -> Response {
    axum::Json(json!({"ok": true})).into_response()
}

async fn release_fake(State(c): Ctl) -> Response {
    c.latch.release();
    ok()
}

async fn fake_state(State(c): Ctl) -> Response {
    let requests = c.fake.model_requests();
    let tool_results: Vec<Value> = requests
        .iter()
        .flat_map(|r| r.tool_results().into_iter().cloned())
        .collect();
    axum::Json(json!({"model_requests": requests.len(), "tool_results": tool_results}))
        .into_response()
}

async fn kill_gateway(State(c): Ctl) -> Response {
    if let Some(mut child) = c.gateway.lock().await.take() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    ok()
}

async fn start_gateway(State(c): Ctl) -> Response {
    let mut slot = c.gateway.lock().await;
    if let Some(child) = slot.as_mut()
        && child.try_wait().ok().flatten().is_none()
    {
        return axum::Json(json!({"ok": true, "already": true})).into_response();
    }
    let n = c.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match c.demo_gateway.start(n).await {
        Ok(child) => {
            *slot = Some(child);
            ok()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Stops `wrangler dev` and starts it again on the same state.
async fn restart_orchestrator(State(c): Ctl) -> Response {
    let mut slot = c.wrangler.lock().await;
    drop(slot.take());
    let n = c.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    *slot = Some(c.demo.start(&c.tools, n).await);
    ok()
}

async fn elsewhere() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><title>elsewhere</title></head><body><p>another origin</p></body></html>",
    )
}

async fn serve_control(control: Arc<Control>) -> String {
    let app = Router::new()
        .route("/fake/release", post(release_fake))
        .route("/fake/state", get(fake_state))
        .route("/split/gateway/kill", post(kill_gateway))
        .route("/split/gateway/start", post(start_gateway))
        .route("/split/orchestrator/restart", post(restart_orchestrator))
        .route("/elsewhere", get(elsewhere))
        .with_state(control);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn run_suite(tools: &Tools, env: &[(&str, String)], out: &Path) -> (bool, String) {
    let mut c = Command::new(&tools.node);
    c.current_dir(e2e_dir())
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1"]);
    match std::env::var("DURACLAW_E2E_FILES") {
        Ok(files) => {
            c.args(files.split_whitespace());
        }
        Err(_) => {
            c.args([
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
            ]);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    run_node_suite(c, out, SUITE_DEADLINE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_suite_on_cloudflare() {
    let t0 = Instant::now();
    let tools = find_tools();
    let artifacts = artifacts_dir();
    let logs = artifacts.join("logs");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();

    let build = root.join("build");
    build_worker_crate(
        &tools.cf,
        &support::repo_root().join("examples/duraclaw-full/cloudflare"),
        &build,
    );

    // The Claude deployment.
    let latch = Latch::new();
    let fake = Arc::new(
        FakeAnthropic::start([
            Turn::text(CLAUDE_SCRIPT.intro)
                .with_hold(3, &latch)
                .with_tool_use_id(
                    "toolu_e2e_read",
                    "Read",
                    json!({"file_path": root.join("claude/projects/notes-app/notes.txt")}),
                )
                .with_usage(1200, 340),
            Turn::text(CLAUDE_SCRIPT.outro).with_usage(1500, 120),
        ])
        .await
        .unwrap(),
    );
    let claude_root = root.join("claude");
    let private = claude_root.join("private");
    for d in ["home", "config", "tmp"] {
        std::fs::create_dir_all(private.join(d)).unwrap();
    }
    init_repo(
        &claude_root.join("projects/notes-app"),
        &[
            ("README.md", "# notes-app\n"),
            ("notes.txt", CLAUDE_SCRIPT.notes),
        ],
    );
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
        envs: vec![
            ("ANTHROPIC_BASE_URL".into(), fake.base_url()),
            ("ANTHROPIC_API_KEY".into(), "test".into()),
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ),
            ("DISABLE_TELEMETRY".into(), "1".into()),
            ("DISABLE_AUTOUPDATER".into(), "1".into()),
            ("DISABLE_ERROR_REPORTING".into(), "1".into()),
            ("CLAUDE_CODE_ENTRYPOINT".into(), "sdk-py".into()),
            ("HOME".into(), private.join("home").display().to_string()),
            (
                "CLAUDE_CONFIG_DIR".into(),
                private.join("config").display().to_string(),
            ),
            ("TMPDIR".into(), private.join("tmp").display().to_string()),
        ],
        logs: logs.clone(),
        name: "claude",
    };
    let claude_gw = claude_gateway.start(0).await.unwrap();
    let claude = Deployment::new(&root, &build, "claude", claude_gateway.port, &logs);
    let claude_wrangler = claude.start(&tools.cf, 0).await;
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
    ] {
        init_repo(
            &demo_root.join("projects").join(name),
            &[("README.md", &format!("# {name}\n"))],
        );
    }
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
        ],
        envs: vec![],
        logs: logs.clone(),
        name: "demo",
    };
    let demo_gw = demo_gateway.start(0).await.unwrap();
    let demo = Deployment::new(&root, &build, "demo", demo_gateway.port, &logs);
    let demo_wrangler = demo.start(&tools.cf, 0).await;
    demo.add_users().await;
    let (claude_url, demo_url) = (claude.base(), demo.base());

    let control = Arc::new(Control {
        latch,
        fake: fake.clone(),
        tools: support::Tools::find(),
        demo,
        demo_gateway,
        gateway: tokio::sync::Mutex::new(Some(demo_gw)),
        wrangler: tokio::sync::Mutex::new(Some(demo_wrangler)),
        starts: std::sync::atomic::AtomicUsize::new(1),
    });
    let control_url = serve_control(control.clone()).await;
    eprintln!("deployments up in {} ms", t0.elapsed().as_millis());

    let node_tmp = root.join("node-tmp");
    std::fs::create_dir_all(&node_tmp).unwrap();
    let env = [
        (
            "DURACLAW_E2E_CHROMIUM",
            tools.chromium.display().to_string(),
        ),
        (
            "DURACLAW_E2E_PLAYWRIGHT_CORE",
            tools.playwright_core.display().to_string(),
        ),
        ("DURACLAW_E2E_CLAUDE_URL", claude_url),
        ("DURACLAW_E2E_DEMO_URL", demo_url.clone()),
        ("DURACLAW_E2E_SPLIT_URL", demo_url),
        ("DURACLAW_E2E_CONTROL_URL", control_url),
        ("DURACLAW_E2E_USER", "alice".to_owned()),
        ("DURACLAW_E2E_OTHER_USER", "bob".to_owned()),
        ("DURACLAW_E2E_PASSWORD", PASSWORD.to_owned()),
        (
            "DURACLAW_E2E_CLAUDE_SCRIPT",
            json!({
                "intro": CLAUDE_SCRIPT.intro,
                "outro": CLAUDE_SCRIPT.outro,
                "notes": CLAUDE_SCRIPT.notes,
                "worktree": "notes-app",
            })
            .to_string(),
        ),
        ("DURACLAW_E2E_ARTIFACTS", artifacts.display().to_string()),
        ("TMPDIR", node_tmp.display().to_string()),
    ];
    let suite_start = Instant::now();
    let (ok, output) = run_suite(&tools, &env, &artifacts.join("suite-output.txt")).await;
    println!("{output}");
    eprintln!(
        "browser suite on Cloudflare: {} ms; with the deployments: {} ms",
        suite_start.elapsed().as_millis(),
        t0.elapsed().as_millis()
    );
    drop(control.wrangler.lock().await.take());
    drop(claude_wrangler);
    let _ = kill_gateway(State(control.clone())).await;
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
