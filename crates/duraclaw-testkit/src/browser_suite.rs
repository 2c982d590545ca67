//! The browser suite's harness, the same on both hosts: the tools it runs
//! with, the Claude scenario's fake model, the control endpoint the suite
//! calls for what a browser cannot do (release the fake model, kill and
//! start a gateway, restart the host, mint a notification's action token,
//! subscribe at the push-service stand-in and read what it decrypted), and
//! `node --test` over the suite in
//! `examples/duraclaw-full/e2e/` (written once, in JavaScript). Each host's
//! test file starts its deployments, implements [`Split`] for the one the
//! fault scenarios break, and calls [`run`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use duraclaw_fake_anthropic::{FakeAnthropic, Latch, Turn};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::local::{env_path, on_path, run_node_suite};
use crate::push_service::{PushService, Subscriber};

/// The password of the suite's users (`alice`, `bob`).
pub const PASSWORD: &str = "correct horse battery staple";

const INSTALL_HINT: &str =
    "run `scripts/install-tools.sh chromium playwright claude` (CI installs them)";

/// `examples/duraclaw-full/e2e`, the suite.
pub fn e2e_dir() -> PathBuf {
    crate::repo_root().join("examples/duraclaw-full/e2e")
}

/// `ci-output/<name>` at the workspace root, emptied, with `logs/` in it.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let dir = crate::repo_root().join("ci-output").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    dir.canonicalize().unwrap()
}

/// The scripted executor's turns (`e2e/script.json`): a long stream, two
/// tool calls, a question, then (second prompt) a turn that runs until
/// aborted; later prompts are echoed. A first prompt `{"turn": [steps…]}`
/// plays those steps instead, so a scenario chooses its own tool calls.
pub fn script() -> PathBuf {
    e2e_dir().join("script.json")
}

/// The agents file of the suite's demo deployments (`e2e/agents.json`):
/// an ACP agent that is not installed, beside the built-in one.
pub fn agents() -> PathBuf {
    e2e_dir().join("agents.json")
}

/// The suite's agents file with Codex added (`acp.test.js`): the entries
/// of [`agents`] and [`crate::real_agents::codex`] against a fake OpenAI
/// API (returned: keep it for the run) playing [`codex_script`], written
/// to `root/agents.json`.
pub async fn agents_with_codex(root: &Path) -> (PathBuf, duraclaw_fake_openai::FakeOpenAi) {
    let fake = duraclaw_fake_openai::FakeOpenAi::start(codex_script())
        .await
        .unwrap();
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(agents()).unwrap()).unwrap();
    let entry = crate::real_agents::codex(root, &fake);
    file["agents"].as_array_mut().unwrap().push(entry);
    let path = root.join("agents.json");
    std::fs::write(&path, file.to_string()).unwrap();
    (path, fake)
}

/// The model's turns in `acp.test.js`'s Codex session: a plan, a thought
/// and a greeting; a command (approved) and its answer; another (denied).
pub fn codex_script() -> Vec<duraclaw_fake_openai::Turn> {
    use duraclaw_fake_openai::Turn;
    use serde_json::json;
    let exec = |cmd: &str, id: &str| {
        Turn::function_call("exec_command", json!({"cmd": cmd, "tty": false}), id)
    };
    vec![
        Turn::function_call(
            "update_plan",
            json!({"plan": [
                {"step": "Say hello", "status": "completed"},
                {"step": "Write made.txt", "status": "in_progress"},
                {"step": "Report back", "status": "pending"},
            ]}),
            "call_plan",
        ),
        Turn::reasoned(
            "The user wants a greeting first.",
            "Hello from Codex, through the gate.",
        ),
        exec("echo made > made.txt", "call_made"),
        Turn::text("Made made.txt."),
        exec("echo no > denied.txt", "call_denied"),
    ]
}

/// The worktrees `inbox.test.js` starts its sessions in: one for the live
/// check and one for each of the twenty waiting at once.
pub fn inbox_worktrees() -> Vec<String> {
    std::iter::once("inbox-live".to_owned())
        .chain((0..20).map(|i| format!("inbox-{i}")))
        .collect()
}

/// What the suite runs with; each one missing is a failure with a hint.
pub struct Tools {
    pub node: PathBuf,
    pub chromium: PathBuf,
    pub playwright_core: PathBuf,
    pub claude: PathBuf,
}

impl Tools {
    /// Node 20 or newer (`NODE22_BIN`, `NODE_BIN`, else `PATH`), Debian's
    /// Chromium (`CHROMIUM_BIN`, else `PATH`), playwright-core at the
    /// version `e2e/package.json` pins, and the Claude Code CLI `claude`
    /// (the caller finds it: the gateway knows where).
    pub fn find(claude: Option<PathBuf>) -> Tools {
        let node = env_path("NODE22_BIN")
            .or_else(|| env_path("NODE_BIN"))
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
            .filter(|p| p.is_file())
            .unwrap_or_else(|| panic!("Debian's chromium is not installed: {INSTALL_HINT}"));

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
                .unwrap_or_else(|| {
                    panic!("neither PLAYWRIGHT_CORE nor HOME is set: {INSTALL_HINT}")
                });
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

        let claude = claude
            .filter(|p| p.is_file())
            .unwrap_or_else(|| panic!("the Claude Code CLI is not installed: {INSTALL_HINT}"));
        Tools {
            node,
            chromium,
            playwright_core,
            claude,
        }
    }
}

// ---------------------------------------------------------------- the Claude scenario

/// What the fake model says in the Claude scenario (the suite asserts it).
pub struct ClaudeScript {
    pub intro: &'static str,
    pub outro: &'static str,
    pub notes: &'static str,
}

pub const CLAUDE_SCRIPT: ClaudeScript = ClaudeScript {
    intro: "Let me read the notes first, so that I can tell you exactly what they say.",
    outro: "The notes say that the launch code is 0451, and nothing else.",
    notes: "The launch code is 0451.\n",
};

/// The Claude scenario's worktree under `root`.
pub const CLAUDE_WORKTREE: &str = "notes-app";

/// The fake Anthropic API of the Claude scenario: its first stream stalls
/// on `latch` until the suite releases it, then reads
/// `root/projects/notes-app/notes.txt`; the second answers.
pub async fn fake_model(root: &Path, latch: &Latch) -> Arc<FakeAnthropic> {
    let notes = root
        .join("projects")
        .join(CLAUDE_WORKTREE)
        .join("notes.txt");
    Arc::new(
        FakeAnthropic::start([
            Turn::text(CLAUDE_SCRIPT.intro)
                .with_hold(3, latch)
                .with_tool_use_id("toolu_e2e_read", "Read", json!({"file_path": notes}))
                .with_usage(1200, 340),
            Turn::text(CLAUDE_SCRIPT.outro).with_usage(1500, 120),
        ])
        .await
        .unwrap(),
    )
}

/// The Claude scenario's repository (`root/projects/notes-app`) and the
/// CLI's private home, config and temporary directories; the environment
/// the CLI runs with: the fake API, no traffic elsewhere, those
/// directories.
pub fn claude_setup(root: &Path, fake: &FakeAnthropic) -> Vec<(String, String)> {
    let private = root.join("private");
    for d in ["home", "config", "tmp"] {
        std::fs::create_dir_all(private.join(d)).unwrap();
    }
    // Once per root: several real-CLI cases of a suite share it.
    let repo = root.join("projects").join(CLAUDE_WORKTREE);
    if !repo.join(".git").exists() {
        crate::local::init_repo(
            &repo,
            &[
                ("README.md", "# notes-app\n"),
                ("notes.txt", CLAUDE_SCRIPT.notes),
            ],
        );
    }
    let dir = |d: &str| private.join(d).display().to_string();
    [
        ("ANTHROPIC_BASE_URL", fake.base_url()),
        ("ANTHROPIC_API_KEY", "test".into()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
        ("DISABLE_TELEMETRY", "1".into()),
        ("DISABLE_AUTOUPDATER", "1".into()),
        ("DISABLE_ERROR_REPORTING", "1".into()),
        ("CLAUDE_CODE_ENTRYPOINT", "sdk-py".into()),
        ("HOME", dir("home")),
        ("CLAUDE_CONFIG_DIR", dir("config")),
        ("TMPDIR", dir("tmp")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

// ---------------------------------------------------------------- the control endpoint

/// The deployment the suite's fault scenarios break: its gateway killed
/// and started again, the host (orchestrator or `wrangler dev`) restarted
/// on the same data.
pub trait Split: Send + Sync + 'static {
    /// SIGKILLs the gateway (nothing gets to clean up).
    fn kill_gateway(&self) -> BoxFuture<'_, ()>;
    /// Starts the gateway unless it runs already (`Ok(true)`).
    fn start_gateway(&self) -> BoxFuture<'_, Result<bool, String>>;
    /// Restarts the host on the same data.
    fn restart_host(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// What the control endpoint works on.
pub struct Control {
    pub latch: Latch,
    pub fake: Arc<FakeAnthropic>,
    pub split: Arc<dyn Split>,
    /// The demo deployment's notification action secret, to mint tokens
    /// as it would.
    pub push_action_secret: Vec<u8>,
    /// The push-service stand-in the demo deployment trusts (its CA).
    pub push: Arc<PushService>,
    /// The subscribers made at it for the suite, by endpoint.
    pub subscribers: Mutex<HashMap<String, Subscriber>>,
}

impl Control {
    /// A control over these, with no subscriber yet.
    pub fn new(
        latch: Latch,
        fake: Arc<FakeAnthropic>,
        split: Arc<dyn Split>,
        push_action_secret: Vec<u8>,
        push: Arc<PushService>,
    ) -> Control {
        Control {
            latch,
            fake,
            split,
            push_action_secret,
            push,
            subscribers: Mutex::new(HashMap::new()),
        }
    }
}

type Ctl = State<Arc<Control>>;

fn answer(r: Result<Value, String>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn release_fake(State(c): Ctl) -> Response {
    c.latch.release();
    answer(Ok(json!({"ok": true})))
}

/// What the fake model was sent: the number of model requests and the
/// tool results they carried.
async fn fake_state(State(c): Ctl) -> Response {
    let requests = c.fake.model_requests();
    let tool_results: Vec<Value> = requests
        .iter()
        .flat_map(|r| r.tool_results().into_iter().cloned())
        .collect();
    answer(Ok(
        json!({"model_requests": requests.len(), "tool_results": tool_results}),
    ))
}

/// A notification action token for the claim in the body, minted as the
/// demo deployment mints them: `{"token"}`.
async fn push_mint(
    State(c): Ctl,
    axum::Json(claim): axum::Json<duraclaw_host::push::action::ActionClaim>,
) -> Response {
    let token = crate::notify::mint_with(&c.push_action_secret, &claim);
    answer(Ok(json!({ "token": token })))
}

/// A browser's subscription at the stand-in (keys made here, as headless
/// Chromium cannot subscribe to a push service) for `{"device",
/// "public_key"}` (the host's `GET /api/push/key`, which pushes must be
/// signed with): the body of `POST /api/push/subscriptions`.
async fn push_subscriber(State(c): Ctl, axum::Json(new): axum::Json<Value>) -> Response {
    let (Some(device), Some(key)) = (new["device"].as_str(), new["public_key"].as_str()) else {
        return (StatusCode::BAD_REQUEST, "want {\"device\", \"public_key\"}").into_response();
    };
    c.push.expect_key(key);
    let sub = c.push.subscriber();
    let body = sub.body(device);
    c.subscribers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(sub.endpoint.clone(), sub);
    answer(Ok(body))
}

/// Every request the stand-in got at `{"endpoint"}`, oldest first: what
/// it answered, why it refused, and the payload's text as decrypted.
async fn push_arrivals(State(c): Ctl, axum::Json(at): axum::Json<Value>) -> Response {
    let endpoint = at["endpoint"].as_str().unwrap_or_default();
    let sub = c
        .subscribers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(endpoint)
        .cloned();
    answer(
        sub.ok_or_else(|| format!("no subscriber at {endpoint:?}"))
            .map(|sub| {
                let list: Vec<Value> = c
                    .push
                    .arrivals(&sub)
                    .into_iter()
                    .map(|a| {
                        json!({
                            "status": a.status,
                            "text": a.text,
                            "refused": a.refused,
                            "ttl": a.ttl,
                            "urgency": a.urgency,
                            "topic": a.topic,
                        })
                    })
                    .collect();
                json!(list)
            }),
    )
}

async fn kill_gateway(State(c): Ctl) -> Response {
    c.split.kill_gateway().await;
    answer(Ok(json!({"ok": true})))
}

async fn start_gateway(State(c): Ctl) -> Response {
    answer(c.split.start_gateway().await.map(|already| {
        if already {
            json!({"ok": true, "already": true})
        } else {
            json!({"ok": true})
        }
    }))
}

async fn restart_host(State(c): Ctl) -> Response {
    answer(c.split.restart_host().await.map(|()| json!({"ok": true})))
}

/// A page on another origin, for the cross-origin WebSocket check.
async fn elsewhere() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><title>elsewhere</title></head><body><p>another origin</p></body></html>",
    )
}

/// Serves the control endpoint on 127.0.0.1; its base URL.
pub async fn serve_control(control: Arc<Control>) -> String {
    let app = Router::new()
        .route("/fake/release", post(release_fake))
        .route("/fake/state", get(fake_state))
        .route("/push/mint", post(push_mint))
        .route("/push/subscriber", post(push_subscriber))
        .route("/push/arrivals", post(push_arrivals))
        .route("/split/gateway/kill", post(kill_gateway))
        .route("/split/gateway/start", post(start_gateway))
        .route("/split/orchestrator/restart", post(restart_host))
        .route("/elsewhere", get(elsewhere))
        .with_state(control);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------- the run

/// Where a host's deployments are, for the suite.
pub struct Deployments {
    /// Runs the real Claude CLI against [`fake_model`].
    pub claude: String,
    /// Runs the scripted executor ([`script`]).
    pub demo: String,
    /// The deployment [`Split`] breaks.
    pub split: String,
    /// Extra `DURACLAW_E2E_*` settings (e.g. the local host's old-CLI
    /// deployment).
    pub extra: Vec<(&'static str, String)>,
}

/// Runs the suite (`node --test` in `e2e/`; `DURACLAW_E2E_FILES`, else
/// `files`, else every file) against `deployments` with the control
/// endpoint over `control`, within `deadline`; its output and the run's
/// times go to `artifacts`. Whether it passed and its output.
pub async fn run(
    tools: &Tools,
    deployments: Deployments,
    control: Arc<Control>,
    artifacts: &Path,
    files: &[&str],
    deadline: Duration,
) -> (bool, String) {
    let control_url = serve_control(control).await;
    let node_tmp = artifacts.join("node-tmp");
    std::fs::create_dir_all(&node_tmp).unwrap();
    let mut c = Command::new(&tools.node);
    c.current_dir(e2e_dir())
        .args(["--test", "--test-reporter=spec", "--test-concurrency=1"]);
    match std::env::var("DURACLAW_E2E_FILES") {
        Ok(only) => {
            c.args(only.split_whitespace());
        }
        Err(_) => {
            c.args(files);
        }
    }
    let env = [
        (
            "DURACLAW_E2E_CHROMIUM",
            tools.chromium.display().to_string(),
        ),
        (
            "DURACLAW_E2E_PLAYWRIGHT_CORE",
            tools.playwright_core.display().to_string(),
        ),
        ("DURACLAW_E2E_CLAUDE_URL", deployments.claude),
        ("DURACLAW_E2E_DEMO_URL", deployments.demo),
        ("DURACLAW_E2E_SPLIT_URL", deployments.split),
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
                "worktree": CLAUDE_WORKTREE,
            })
            .to_string(),
        ),
        ("DURACLAW_E2E_ARTIFACTS", artifacts.display().to_string()),
        // Playwright makes each browser's fresh profile (--user-data-dir)
        // under the temporary directory: ours.
        ("TMPDIR", node_tmp.display().to_string()),
    ];
    for (k, v) in env.into_iter().chain(deployments.extra) {
        c.env(k, v);
    }
    let start = Instant::now();
    let out = run_node_suite(c, &artifacts.join("suite-output.txt"), deadline).await;
    eprintln!("browser suite: {} ms", start.elapsed().as_millis());
    let _ = std::fs::remove_dir_all(&node_tmp);
    out
}
