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
//! - *demo*: `duraclaw up --demo --script` (the scripted executor);
//! - *split*: `duraclaw gateway` and `duraclaw orchestrator` as separate
//!   processes, which the suite kills and restarts through the control
//!   endpoint.
//! - *old CLI*: `duraclaw up` whose `claude` reports a version below the
//!   minimum (the new-session form must refuse to start sessions).
//!
//! Missing node, Chromium, playwright-core or the CLI fail the test (it
//! never skips): `scripts/install-tools.sh chromium playwright claude`.
//! Screenshots, the suite's output and every process's log go to
//! `ci-output/browser-e2e/`. `DURACLAW_E2E_FILES="replay.test.js …"` runs
//! only those files of the suite.

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
use tokio::process::{Child, Command};

use duraclaw_testkit::local as support;
use support::{
    PASSWORD, env_path, free_port, init_repo, on_path, run_node_suite, spawn_until, user_add,
};

/// The bound on the whole browser suite.
const SUITE_DEADLINE: Duration = Duration::from_secs(300);
const SECRET: &str = "browser-e2e-gateway-secret-0123456789";
const INSTALL_HINT: &str = "run `scripts/install-tools.sh chromium playwright` (CI installs them)";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn e2e_dir() -> PathBuf {
    manifest_dir().join("e2e")
}

/// `ci-output/browser-e2e` at the workspace root, emptied.
fn artifacts_dir() -> PathBuf {
    let dir = manifest_dir().join("../../ci-output/browser-e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    dir.canonicalize().unwrap()
}

/// What the suite runs with; each one missing is a failure with a hint.
struct Tools {
    node: PathBuf,
    chromium: PathBuf,
    playwright_core: PathBuf,
    claude: PathBuf,
}

fn find_tools() -> Tools {
    let node = env_path("NODE_BIN")
        .or_else(|| on_path("node"))
        .unwrap_or_else(|| panic!("node is not on PATH: {INSTALL_HINT}"));
    let version = std::process::Command::new(&node)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "{} says '{version}': the browser suite needs Node 20 or newer",
        node.display()
    );

    let chromium = env_path("CHROMIUM_BIN")
        .or_else(|| on_path("chromium"))
        .unwrap_or_else(|| panic!("Debian's chromium is not installed: {INSTALL_HINT}"));
    assert!(
        chromium.is_file(),
        "{} does not exist: {INSTALL_HINT}",
        chromium.display()
    );

    // The pin lives in e2e/package.json (and in scripts/install-tools.sh,
    // which installs it): the module found must be that version.
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
    let found = std::fs::read_to_string(playwright_core.join("package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            panic!(
                "playwright-core {pinned} is not at {}: {INSTALL_HINT}",
                playwright_core.display()
            )
        });
    assert_eq!(
        found,
        pinned,
        "{} is playwright-core {found}, e2e/package.json pins {pinned}: {INSTALL_HINT}",
        playwright_core.display()
    );

    let claude = duraclaw_gateway::cli::launch::bin_path()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the Claude Code CLI {} is not installed: run `scripts/install-tools.sh claude`, \
                 or point CLAUDE_BIN at a claude binary",
                duraclaw_gateway::cli::launch::CLI_VERSION
            )
        });
    Tools {
        node,
        chromium,
        playwright_core,
        claude,
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

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

/// What the fake model says in the Claude scenario (the suite asserts it).
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

/// `duraclaw up` running the real CLI against `fake`.
async fn up_claude(
    root: &Path,
    tools: &Tools,
    fake: &FakeAnthropic,
    logs: &Path,
) -> (Child, String) {
    let data = root.join("data");
    let private = root.join("private");
    for d in ["home", "config", "tmp"] {
        std::fs::create_dir_all(private.join(d)).unwrap();
    }
    let projects = root.join("projects");
    init_repo(
        &projects.join("notes-app"),
        &[
            ("README.md", "# notes-app\n"),
            ("notes.txt", CLAUDE_SCRIPT.notes),
        ],
    );
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
    // Inherited by the CLI: the fake API, no traffic elsewhere, and private
    // home, config and temporary directories.
    .env("ANTHROPIC_BASE_URL", fake.base_url())
    .env("ANTHROPIC_API_KEY", "test")
    .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
    .env("DISABLE_TELEMETRY", "1")
    .env("DISABLE_AUTOUPDATER", "1")
    .env("DISABLE_ERROR_REPORTING", "1")
    .env("CLAUDE_CODE_ENTRYPOINT", "sdk-py")
    .env("HOME", private.join("home"))
    .env("CLAUDE_CONFIG_DIR", private.join("config"))
    .env("TMPDIR", private.join("tmp"));
    let (child, found) = spawn_until(c, &["duraclaw listening on "])
        .await
        .unwrap_or_else(|e| panic!("duraclaw up (claude): {e}; see {}", log.display()));
    (child, found[0].clone())
}

/// The scripted executor's turns (`e2e/script.json`, shared with the
/// Cloudflare suite): a long stream, two tool calls, a question, then
/// (second prompt) a turn that runs until aborted; later prompts are echoed.
/// A first prompt `{"turn": [steps…]}` plays those steps instead, so a
/// scenario chooses its own tool calls.
fn script() -> PathBuf {
    e2e_dir().join("script.json")
}

/// `duraclaw up --demo --script`.
async fn up_demo(root: &Path, logs: &Path) -> (Child, String) {
    let data = root.join("data");
    let log = logs.join("demo-up.log");
    add_users(&data, &log).await;
    let script_path = script();
    let patterns = worktrees(
        &root.join("projects"),
        &[
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
        ],
    );
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
    .arg("--data-dir")
    .arg(&data)
    .arg("--worktrees")
    .arg(patterns);
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

// ---------------------------------------------------------------------------
// The control endpoint the suite calls for what a browser cannot do
// ---------------------------------------------------------------------------

struct Control {
    latch: Latch,
    fake: Arc<FakeAnthropic>,
    split: Split,
    gateway: tokio::sync::Mutex<Option<Child>>,
    orchestrator: tokio::sync::Mutex<Option<Child>>,
}

type Ctl = State<Arc<Control>>;

fn failed(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

async fn kill(slot: &tokio::sync::Mutex<Option<Child>>) {
    if let Some(mut child) = slot.lock().await.take() {
        // SIGKILL: nothing gets to clean up.
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

async fn release_fake(State(c): Ctl) -> Response {
    c.latch.release();
    axum::Json(json!({"ok": true})).into_response()
}

/// What the fake model was sent: the number of model requests and the
/// tool results they carried.
async fn fake_state(State(c): Ctl) -> Response {
    let requests = c.fake.model_requests();
    let tool_results: Vec<Value> = requests
        .iter()
        .flat_map(|r| r.tool_results().into_iter().cloned())
        .collect();
    axum::Json(json!({
        "model_requests": requests.len(),
        "tool_results": tool_results,
    }))
    .into_response()
}

async fn kill_gateway(State(c): Ctl) -> Response {
    kill(&c.gateway).await;
    axum::Json(json!({"ok": true})).into_response()
}

/// Starts the gateway unless it runs already.
async fn start_gateway(State(c): Ctl) -> Response {
    let mut slot = c.gateway.lock().await;
    if let Some(child) = slot.as_mut()
        && child.try_wait().ok().flatten().is_none()
    {
        return axum::Json(json!({"ok": true, "already": true})).into_response();
    }
    match c.split.gateway().await {
        Ok(child) => {
            *slot = Some(child);
            axum::Json(json!({"ok": true})).into_response()
        }
        Err(e) => failed(e),
    }
}

async fn restart_orchestrator(State(c): Ctl) -> Response {
    kill(&c.orchestrator).await;
    let mut slot = c.orchestrator.lock().await;
    match c.split.orchestrator().await {
        Ok(child) => {
            *slot = Some(child);
            axum::Json(json!({"ok": true})).into_response()
        }
        Err(e) => failed(e),
    }
}

/// A page on another origin, for the cross-origin WebSocket check.
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

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

/// Runs `node --test` in `e2e/` with `env`; returns its exit status and
/// output (also written to `out`, line by line, as it comes).
async fn run_suite(tools: &Tools, env: &[(&str, String)], out: &Path) -> (bool, String) {
    let mut c = Command::new(&tools.node);
    c.current_dir(e2e_dir())
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1"]);
    if let Ok(files) = std::env::var("DURACLAW_E2E_FILES") {
        c.args(files.split_whitespace());
    }
    for (k, v) in env {
        c.env(k, v);
    }
    run_node_suite(c, out, SUITE_DEADLINE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_suite() {
    let t0 = Instant::now();
    let tools = find_tools();
    let artifacts = artifacts_dir();
    let logs = artifacts.join("logs");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();

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

    let split = Split::new(&root.join("split"), &logs);
    let (claude_root, demo_root, old_root) =
        (root.join("claude"), root.join("demo"), root.join("old-cli"));
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
        up_demo(&demo_root, &logs),
        up_old_cli(&old_root, &logs),
        split_up,
    );
    let split_url = split.base();
    let control = Arc::new(Control {
        latch,
        fake: fake.clone(),
        split,
        gateway: tokio::sync::Mutex::new(Some(gateway.unwrap())),
        orchestrator: tokio::sync::Mutex::new(Some(orchestrator.unwrap())),
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
        ("DURACLAW_E2E_DEMO_URL", demo_url),
        (
            "DURACLAW_E2E_OLD_CLI",
            json!({
                "url": old_url,
                "found": OLD_CLI_VERSION,
                "minimum": duraclaw_gateway::cli::launch::MIN_CLI_VERSION,
            })
            .to_string(),
        ),
        ("DURACLAW_E2E_SPLIT_URL", split_url),
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
        // Playwright makes each browser's fresh profile (--user-data-dir)
        // under the temporary directory: ours, removed with it.
        ("TMPDIR", node_tmp.display().to_string()),
    ];
    let suite_start = Instant::now();
    let (ok, output) = run_suite(&tools, &env, &artifacts.join("suite-output.txt")).await;
    let suite_ms = suite_start.elapsed().as_millis();
    println!("{output}");
    eprintln!(
        "browser suite: {suite_ms} ms; with the deployments: {} ms",
        t0.elapsed().as_millis()
    );

    kill(&control.gateway).await;
    kill(&control.orchestrator).await;
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
