//! A deployment under test, whichever host runs it: the local gateway and
//! orchestrator ([`LocalHost`]) or the full example's Worker under `wrangler dev` with
//! its own gateway ([`CloudflareHost`]). Suites written once against
//! [`Host`] run on both (see [`crate::api`]).
//!
//! Every host plays [`SCRIPT`] with the scripted executor and offers the git
//! repositories `projects/<name>` for each name in [`WORKTREES`], so each
//! case can start sessions in a worktree of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Child;

use crate::wrangler::{Tools, Wrangler, build_full_example, start_wrangler_env};
use crate::{free_port, log_tail};

/// The bound on a host's start and on any one answer.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The scripted executor's one turn on every host: text, a `Bash` call that
/// needs an approval, text.
pub const SCRIPT: &str = r#"{"turns":[[{"step":"text","text":"checking","chunks":2},
    {"step":"tool","name":"Bash","input":{"command":"make"},"result":"built"},
    {"step":"text","text":"done","chunks":1}]]}"#;

/// The worktrees (`projects/<name>`) every host offers.
pub const WORKTREES: &[&str] = &[
    "retry",
    "frames",
    "malformed",
    "race",
    "login",
    "flow",
    "unnoticed",
    "restart",
    "gateway",
    "machinecrash",
    "hostcrash",
    "oldcli",
    "notify",
    "rulesapi",
    "rulesdeny",
    "rulewt",
    "rulescli",
    "inbox",
    "inboxother",
    "inboxlogin",
    "fresh",
    "modescli",
    "rulenew",
    "modesrestart",
    "evicted",
    "allowkept",
    "forkcli",
    "agents",
    "tail",
    "deflate",
    "acpcodex",
    "acpclaude",
    "acpgemini",
    "samecli",
    "sameacp",
];

/// How a host is started beyond its defaults (the fault run's: its own
/// script and worktrees, fixed ports, both links through proxies).
#[derive(Clone, Default)]
pub struct Options {
    /// The scripted executor's script (JSON); [`SCRIPT`] when `None`.
    pub script: Option<String>,
    /// The gateway's agents file (JSON, e.g. of
    /// [`crate::real_agents`] entries); [`crate::agents::AGENTS`] when
    /// `None`.
    pub agents: Option<String>,
    /// More worktrees (`projects/<name>`) besides [`WORKTREES`].
    pub worktrees: Vec<String>,
    /// The host's port; a free one when `None`.
    pub port: Option<u16>,
    /// The gateway's port; a free one when `None`.
    pub gateway_port: Option<u16>,
    /// Where the host dials the gateway (e.g. a proxy in front of
    /// `gateway_port`); the gateway itself when `None`.
    pub gateway_via: Option<SocketAddr>,
    /// The origin browsers use (e.g. a proxy in front of the host): the
    /// Worker's `DURACLAW_PUBLIC_ORIGIN`. The local orchestrator accepts
    /// only its own address, which a transparent proxy keeps.
    pub public_origin: Option<String>,
    /// More `duraclaw orchestrator` arguments (local only).
    pub orchestrator_args: Vec<String>,
    /// The processes' `RUST_LOG`; `info` when `None`.
    pub log: Option<String>,
    /// A PEM file of a CA the host trusts for Web Push services (the
    /// [`PushService`](crate::push_service::PushService) stand-in's):
    /// local, `--push-ca`; Cloudflare, `NODE_EXTRA_CA_CERTS` for
    /// `wrangler dev`, whose Miniflare hands it to workerd as trusted
    /// certificates of its outbound network.
    pub push_ca: Option<PathBuf>,
}

/// A deployment under test. Users and logins go through the host's own
/// administration (the `duraclaw user` commands, the Worker's admin route);
/// everything else a case does goes over HTTP and WebSocket to [`base`].
///
/// [`base`]: Host::base
pub trait Host: Send + Sync {
    /// `local` or `cloudflare`, for messages.
    fn name(&self) -> &'static str;
    /// `http://127.0.0.1:PORT`.
    fn base(&self) -> &str;
    /// The directory holding `projects/`.
    fn root(&self) -> &Path;
    /// Adds user `name` with `password`.
    fn add_user<'a>(&'a self, name: &'a str, password: &'a str) -> BoxFuture<'a, ()>;
    /// Sets `name`'s password, as an administrator.
    fn set_password<'a>(&'a self, name: &'a str, password: &'a str) -> BoxFuture<'a, ()>;
    /// Removes user `name`.
    fn remove_user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()>;
    /// SIGKILLs the gateway.
    fn kill_gateway(&self) -> BoxFuture<'_, ()>;
    /// Starts the gateway again on its port and data.
    fn start_gateway(&self) -> BoxFuture<'_, ()>;
    /// Starts the gateway on its port and data with the Claude executor
    /// running `cli` instead of the scripted executor.
    fn start_gateway_with_cli<'a>(&'a self, cli: &'a Path) -> BoxFuture<'a, ()>;
    /// Starts the gateway running the Claude Code CLI `cli` with `env`
    /// (the fake Anthropic API's address and the CLI's private
    /// directories: `browser_suite::claude_setup`).
    fn start_gateway_with_claude<'a>(
        &'a self,
        cli: &'a Path,
        env: &'a [(String, String)],
    ) -> BoxFuture<'a, ()>;
    /// Starts the gateway (the scripted executor) on its port and data
    /// with `env` set for it (e.g. `DURACLAW_EVICT_IDLE_MS`).
    fn start_gateway_with_env<'a>(&'a self, env: &'a [(String, String)]) -> BoxFuture<'a, ()>;
    /// What the gateway has logged (its stderr) since it last started, at
    /// least.
    fn gateway_log_text(&self) -> String;
    /// The gateway's database (`gateway.db` in its data directory).
    fn gateway_db(&self) -> PathBuf;
    /// Stops the host (the orchestrator SIGKILLed; `wrangler dev` stopped)
    /// and starts it again on the same data and address.
    fn restart_host(&self) -> BoxFuture<'_, ()>;
    /// Crashes the host (SIGKILL of every process of it, nothing gets to
    /// clean up) and starts it again on the same data and address.
    fn crash_host(&self) -> BoxFuture<'_, ()>;
    /// The host's session database, where a machine crash can take back
    /// its last commits (the local orchestrator's SQLite `sessions.db`,
    /// which commits without waiting for the disk); `None` where the store
    /// commits durably before it answers (a Durable Object).
    fn sessions_db(&self) -> Option<PathBuf>;
    /// SIGKILLs the host and leaves it stopped, its files as the kill left
    /// them ([`Host::start_host`] starts it again).
    fn kill_host(&self) -> BoxFuture<'_, ()>;
    /// Starts the host killed by [`Host::kill_host`] on its data and address.
    fn start_host(&self) -> BoxFuture<'_, ()>;
    /// The `Origin` browsers send: the host's own unless it was started
    /// with a public origin.
    fn origin(&self) -> &str {
        self.base()
    }
    /// The resident memory of the host's process, where it has one.
    fn rss_kib(&self) -> Option<u64> {
        None
    }
    /// The ends of the host's logs, for a failure's message.
    fn log_tails(&self) -> String;
    /// The secret the host signs notification actions under (the action
    /// key is derived from it), to mint tokens as the host would.
    fn push_action_secret(&self) -> Vec<u8>;
}

/// The path of worktree `name` (one of [`WORKTREES`]) on host `h`.
pub fn worktree(h: &dyn Host, name: &str) -> String {
    assert!(WORKTREES.contains(&name), "no worktree {name:?}");
    h.root().join("projects").join(name).display().to_string()
}

/// Writes the script (`opts.script` or [`SCRIPT`]) to `root/script.json`,
/// the agents file (`opts.agents` or [`crate::agents::AGENTS`]) to
/// `root/agents.json` and a git repository for each of [`WORKTREES`] and `opts.worktrees`
/// under `root/projects`.
fn prepare(root: &Path, opts: &Options) {
    std::fs::create_dir_all(root).unwrap();
    let script = opts.script.as_deref().unwrap_or(SCRIPT);
    std::fs::write(root.join("script.json"), script).unwrap();
    let agents = opts.agents.as_deref().unwrap_or(crate::agents::AGENTS);
    std::fs::write(root.join("agents.json"), agents).unwrap();
    let extra = opts.worktrees.iter().map(String::as_str);
    for name in WORKTREES.iter().copied().chain(extra) {
        crate::local::init_repo(
            &root.join("projects").join(name),
            &[("README.md", "# app\n")],
        );
    }
}

/// Logs `name` in with `password` from the host's origin: the
/// `duraclaw_session=…` cookie.
pub async fn login(h: &dyn Host, name: &str, password: &str) -> String {
    crate::wrangler::login(&http(), h.base(), h.origin(), name, password).await
}

/// An HTTP client bounded by [`DEADLINE`], keeping no cookies.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

/// `POST /api/sessions` with `cookie` for worktree `name` (one of
/// [`WORKTREES`]); the new session's id, after checking the 201.
pub async fn create_session(h: &dyn Host, cookie: &str, name: &str, prompt: &str) -> String {
    let r = http()
        .post(format!("{}/api/sessions", h.base()))
        .header("cookie", cookie)
        .header("origin", h.origin())
        .json(&json!({"worktree": worktree(h, name), "prompt": prompt}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{body}\n{}", h.log_tails());
    body["session_id"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------- local

const LOCAL_SECRET: &str = "local-host-gateway-secret-0123456789";

/// The local host as a split deployment on 127.0.0.1: `duraclaw gateway`
/// playing [`SCRIPT`] and `duraclaw orchestrator`, each on a port of its
/// own that a restart keeps, their data in a temporary directory; killed
/// when dropped.
pub struct LocalHost {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: String,
    gateway_port: u16,
    orchestrator_port: u16,
    opts: Options,
    gateway: tokio::sync::Mutex<Option<Child>>,
    orchestrator: tokio::sync::Mutex<Option<Child>>,
    orchestrator_pid: std::sync::Mutex<Option<u32>>,
    /// The `status` user's login, for `/api/status`.
    status: std::sync::Mutex<String>,
}

/// SIGKILLs the child in `slot`, if any (nothing gets to clean up).
async fn kill(slot: &tokio::sync::Mutex<Option<Child>>) {
    if let Some(mut child) = slot.lock().await.take() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

impl LocalHost {
    /// Starts both halves and waits until the gateway link is up.
    pub async fn start() -> LocalHost {
        LocalHost::start_with(Options::default()).await
    }

    /// [`LocalHost::start`] with `opts`.
    pub async fn start_with(opts: Options) -> LocalHost {
        let mut tmp = tempfile::tempdir().unwrap();
        if std::env::var_os("DURACLAW_FAULTS_KEEP").is_some() {
            // Keep the data and logs to inspect a failed run.
            eprintln!("data and logs kept in {}", tmp.path().display());
            tmp.disable_cleanup(true);
        }
        let root = tmp.path().canonicalize().unwrap();
        prepare(&root, &opts);
        let orchestrator_port = opts.port.unwrap_or_else(free_port);
        let host = LocalHost {
            _tmp: tmp,
            base: format!("http://127.0.0.1:{orchestrator_port}"),
            root,
            gateway_port: opts.gateway_port.unwrap_or_else(free_port),
            orchestrator_port,
            opts,
            gateway: tokio::sync::Mutex::new(None),
            orchestrator: tokio::sync::Mutex::new(None),
            orchestrator_pid: std::sync::Mutex::new(None),
            status: std::sync::Mutex::new(String::new()),
        };
        // `/api/status` needs a login: a user of the host's own.
        host.add_user("status", "status password 0123").await;
        host.start_gateway().await;
        host.start_orchestrator().await;
        let cookie = login(&host, "status", "status password 0123").await;
        *host.status.lock().unwrap() = cookie;
        wait_gateway(&host, &host.status_cookie(), true).await;
        host
    }

    fn status_cookie(&self) -> String {
        self.status.lock().unwrap().clone()
    }

    async fn start_orchestrator(&self) {
        let child = self.spawn_orchestrator().await;
        *self.orchestrator_pid.lock().unwrap() = child.id();
        *self.orchestrator.lock().await = Some(child);
    }

    /// `duraclaw` with the deployment's gateway secret, its stderr appended
    /// to `root/<name>.log`, its stdout piped.
    fn duraclaw(&self, name: &str) -> tokio::process::Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("{name}.log")))
            .unwrap();
        let mut c = crate::local::duraclaw(self.opts.log.as_deref().unwrap_or("info"));
        c.env("CC_GATEWAY_SECRET", LOCAL_SECRET)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        c
    }

    async fn spawn_gateway(&self, cli: Option<&Path>, env: &[(String, String)]) -> Child {
        // The port may still be held for a moment after a SIGKILL of the
        // previous gateway on it (bounded).
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::net::TcpListener::bind(("127.0.0.1", self.gateway_port)).is_err()
            && std::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut c = self.duraclaw("gateway");
        c.envs(env.iter().map(|(k, v)| (k, v)));
        c.arg("gateway");
        match cli {
            Some(cli) => c.args(["--executor", "claude", "--claude-bin"]).arg(cli),
            None => c
                .args(["--executor", "scripted", "--script"])
                .arg(self.root.join("script.json")),
        };
        c.arg("--agents").arg(self.root.join("agents.json"));
        c.arg("--bind")
            .arg(format!("127.0.0.1:{}", self.gateway_port))
            .arg("--worktrees")
            .arg(format!("{}/projects/*", self.root.display()))
            .arg("--data-dir")
            .arg(self.root.join("gw"));
        crate::local::spawn_until(c, &["gateway listening on "])
            .await
            .unwrap_or_else(|e| panic!("duraclaw gateway: {e}\n{}", self.log_tails()))
            .0
    }

    async fn spawn_orchestrator(&self) -> Child {
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::net::TcpListener::bind(("127.0.0.1", self.orchestrator_port)).is_err()
            && std::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let gateway = self
            .opts
            .gateway_via
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.gateway_port)));
        let mut c = self.duraclaw("orchestrator");
        c.args(["orchestrator", "--bind"])
            .arg(format!("127.0.0.1:{}", self.orchestrator_port))
            .arg("--gateway-url")
            .arg(format!("ws://{gateway}"))
            .arg("--data-dir")
            .arg(self.root.join("data"))
            .args(&self.opts.orchestrator_args);
        if let Some(ca) = &self.opts.push_ca {
            c.arg("--push-ca").arg(ca);
        }
        crate::local::spawn_until(c, &["duraclaw listening on "])
            .await
            .unwrap_or_else(|e| panic!("duraclaw orchestrator: {e}\n{}", self.log_tails()))
            .0
    }

    /// `duraclaw user ARGS --data-dir DATA` with `stdin`; panics unless it
    /// succeeds.
    async fn user(&self, args: &[&str], stdin: &str) {
        let mut child = crate::local::duraclaw("warn")
            .arg("user")
            .args(args)
            .arg("--data-dir")
            .arg(self.root.join("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .expect("duraclaw user did not finish in time")
            .unwrap();
        assert!(
            out.status.success(),
            "user {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Host for LocalHost {
    fn name(&self) -> &'static str {
        "local"
    }
    fn base(&self) -> &str {
        &self.base
    }
    fn root(&self) -> &Path {
        &self.root
    }
    fn add_user<'a>(&'a self, name: &'a str, password: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let stdin = format!("{password}\n");
            self.user(&["add", name, "--password-stdin"], &stdin).await;
        })
    }
    fn set_password<'a>(&'a self, name: &'a str, password: &'a str) -> BoxFuture<'a, ()> {
        // Another process on the same database, as an administrator would.
        Box::pin(async move {
            let stdin = format!("{password}\n");
            self.user(&["passwd", name, "--password-stdin"], &stdin)
                .await;
        })
    }
    fn remove_user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.user(&["remove", name], "").await })
    }
    fn kill_gateway(&self) -> BoxFuture<'_, ()> {
        Box::pin(kill(&self.gateway))
    }
    fn start_gateway(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let child = self.spawn_gateway(None, &[]).await;
            *self.gateway.lock().await = Some(child);
        })
    }
    fn start_gateway_with_cli<'a>(&'a self, cli: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let child = self.spawn_gateway(Some(cli), &[]).await;
            *self.gateway.lock().await = Some(child);
        })
    }
    fn start_gateway_with_env<'a>(&'a self, env: &'a [(String, String)]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let child = self.spawn_gateway(None, env).await;
            *self.gateway.lock().await = Some(child);
        })
    }
    fn gateway_log_text(&self) -> String {
        crate::read_log(&self.root.join("gateway.log"))
    }
    fn gateway_db(&self) -> PathBuf {
        self.root.join("gw").join("gateway.db")
    }
    fn start_gateway_with_claude<'a>(
        &'a self,
        cli: &'a Path,
        env: &'a [(String, String)],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let child = self.spawn_gateway(Some(cli), env).await;
            *self.gateway.lock().await = Some(child);
        })
    }
    /// SIGKILLs the orchestrator and starts it again on its port and data.
    fn restart_host(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            kill(&self.orchestrator).await;
            self.start_orchestrator().await;
        })
    }
    /// The same as [`Host::restart_host`]: the orchestrator's restart is
    /// already a SIGKILL (a graceful stop would wait for every open
    /// browser socket to close).
    fn crash_host(&self) -> BoxFuture<'_, ()> {
        self.restart_host()
    }
    fn sessions_db(&self) -> Option<PathBuf> {
        Some(self.root.join("data").join("sessions.db"))
    }
    fn kill_host(&self) -> BoxFuture<'_, ()> {
        Box::pin(kill(&self.orchestrator))
    }
    fn start_host(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.start_orchestrator())
    }
    fn rss_kib(&self) -> Option<u64> {
        let pid = (*self.orchestrator_pid.lock().unwrap())?;
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
    /// The secret `duraclaw orchestrator` generated in its data directory.
    fn push_action_secret(&self) -> Vec<u8> {
        crate::local::push_action_secret(&self.root.join("data"))
    }
    fn log_tails(&self) -> String {
        format!(
            "the orchestrator's log:\n{}\n\nthe gateway's log:\n{}",
            log_tail(&self.root.join("orchestrator.log")),
            log_tail(&self.root.join("gateway.log"))
        )
    }
}

/// Waits until `/api/status` (as the login `cookie`) says the gateway link
/// is up, or down (bounded).
async fn wait_gateway(h: &dyn Host, cookie: &str, up: bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = http()
            .get(format!("{}/api/status", h.base()))
            .header("cookie", cookie)
            .send()
            .await
            .ok();
        let reached = match status {
            Some(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|s| s["gateway"]["connected"] == json!(up)),
            None => false,
        };
        if reached {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {} host's gateway link never became {}:\n{}",
            h.name(),
            if up { "up" } else { "down" },
            h.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- Cloudflare

const GATEWAY_SECRET: &str = "cf-host-gateway-secret-0123456789";
const COOKIE_SECRET: &str = "cf-host-cookie-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "cf-host-admin-token-0123456789abcdef";
/// The deployment's VAPID private key (base64url), which also signs the
/// notification actions.
const VAPID_PRIVATE_KEY: &str = "mPaJm0MfNMWLproiThYPTSA0F-oI1Ad5c6cJKvhO2JA";

/// The full example's Worker (`examples/duraclaw-full/cloudflare`, the real
/// UI as its assets) under `wrangler dev`, linked to `duraclaw gateway`
/// playing [`SCRIPT`]. Its state and logs stay in
/// `target/tmp/<name>` after the run, replaced by the next one.
pub struct CloudflareHost {
    pub tools: Tools,
    root: PathBuf,
    /// The directory holding wrangler.toml and the state (`state/`).
    pub dir: PathBuf,
    base: String,
    port: u16,
    gateway_port: u16,
    opts: Options,
    gateway: tokio::sync::Mutex<Option<Child>>,
    wrangler: tokio::sync::Mutex<Option<Wrangler>>,
    /// Starts of the gateway and of `wrangler dev` so far, naming their logs.
    starts: std::sync::Mutex<(usize, usize)>,
}

impl CloudflareHost {
    /// Builds the Worker, starts the gateway and `wrangler dev`, and waits
    /// until the Worker answers `/api/health`.
    pub async fn start(name: &str) -> CloudflareHost {
        CloudflareHost::start_with(name, Options::default()).await
    }

    /// [`CloudflareHost::start`] with `opts` (`orchestrator_args` unused).
    pub async fn start_with(name: &str, opts: Options) -> CloudflareHost {
        let tools = Tools::find();
        let root = crate::target_tmpdir().join(name);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        eprintln!("logs and state in {}", root.display());
        prepare(&root, &opts);
        let dir = root.join("cf");
        build_full_example(&tools, &dir);
        // The secrets where `wrangler secret put` would hold them, never on
        // a command line.
        std::fs::write(
            dir.join(".dev.vars"),
            format!(
                "CC_GATEWAY_SECRET={GATEWAY_SECRET}\nDURACLAW_COOKIE_SECRET={COOKIE_SECRET}\nDURACLAW_ADMIN_TOKEN={ADMIN_TOKEN}\nDURACLAW_VAPID_PRIVATE_KEY={VAPID_PRIVATE_KEY}\n"
            ),
        )
        .unwrap();
        let port = opts.port.unwrap_or_else(free_port);
        let host = CloudflareHost {
            tools,
            root,
            dir,
            base: format!("http://127.0.0.1:{port}"),
            port,
            gateway_port: opts.gateway_port.unwrap_or_else(free_port),
            opts,
            gateway: tokio::sync::Mutex::new(None),
            wrangler: tokio::sync::Mutex::new(None),
            starts: std::sync::Mutex::new((0, 0)),
        };
        host.start_gateway().await;
        host.start_wrangler().await;
        host
    }

    fn gateway_log(&self) -> PathBuf {
        let n = self.starts.lock().unwrap().0;
        self.root.join(format!("gateway-{n}.log"))
    }

    fn wrangler_log(&self) -> PathBuf {
        let n = self.starts.lock().unwrap().1;
        self.root.join(format!("wrangler-{n}.log"))
    }

    /// Starts `wrangler dev` on the host's port and state and waits until
    /// the Worker answers `/api/health`.
    async fn start_wrangler(&self) {
        self.starts.lock().unwrap().1 += 1;
        let gateway = self
            .opts
            .gateway_via
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.gateway_port)));
        let gateway_url = format!("http://{gateway}");
        let mut vars = vec![("CC_GATEWAY_URL", gateway_url.as_str())];
        if let Some(origin) = &self.opts.public_origin {
            vars.push(("DURACLAW_PUBLIC_ORIGIN", origin.as_str()));
        }
        let env: Vec<(&str, &Path)> = self
            .opts
            .push_ca
            .iter()
            .map(|ca| ("NODE_EXTRA_CA_CERTS", ca.as_path()))
            .collect();
        let mut wrangler = start_wrangler_env(
            &self.tools,
            &self.dir,
            self.port,
            &vars,
            &env,
            &self.wrangler_log(),
        );
        crate::wrangler::wait_until_ready(
            &mut wrangler,
            &http(),
            &format!("{}/api/health", self.base),
            |t| t.contains("\"ok\":true"),
        )
        .await;
        *self.wrangler.lock().await = Some(wrangler);
    }

    /// Starts the gateway on its port: the scripted executor, or the Claude
    /// executor running `cli`.
    async fn spawn_gateway(&self, cli: Option<&Path>, env: &[(String, String)]) {
        self.starts.lock().unwrap().0 += 1;
        // The port may still be held for a moment after a SIGKILL of the
        // previous gateway on it (bounded).
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::net::TcpListener::bind(("127.0.0.1", self.gateway_port)).is_err()
            && std::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = self.gateway_log();
        let child = match cli {
            None => {
                let script = self.root.join("script.json");
                let executor = [
                    "--executor".as_ref(),
                    "scripted".as_ref(),
                    "--script".as_ref(),
                    script.as_os_str(),
                ];
                crate::gateway::start_with_env(
                    &self.root,
                    self.gateway_port,
                    GATEWAY_SECRET,
                    &log,
                    DEADLINE,
                    &executor,
                    env,
                )
                .await
            }
            Some(cli) => {
                let executor = [
                    "--executor".as_ref(),
                    "claude".as_ref(),
                    "--claude-bin".as_ref(),
                    cli.as_os_str(),
                ];
                crate::gateway::start_with_env(
                    &self.root,
                    self.gateway_port,
                    GATEWAY_SECRET,
                    &log,
                    DEADLINE,
                    &executor,
                    env,
                )
                .await
            }
        };
        *self.gateway.lock().await = Some(child);
    }

    /// The pids of `wrangler dev`'s process group (workerd included) and of
    /// the gateway.
    pub async fn process_ids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Some(w) = self.wrangler.lock().await.as_ref() {
            pids.extend(crate::wrangler::group_pids(w.child.id()));
        }
        if let Some(g) = self.gateway.lock().await.as_ref() {
            pids.extend(g.id());
        }
        pids
    }

    /// The secrets the deployment holds, to look for where they must not be.
    pub fn secrets(&self) -> [&'static str; 4] {
        [
            GATEWAY_SECRET,
            COOKIE_SECRET,
            ADMIN_TOKEN,
            VAPID_PRIVATE_KEY,
        ]
    }

    /// The admin token (for the checks of a wrong one).
    pub fn admin_token(&self) -> &'static str {
        ADMIN_TOKEN
    }

    /// Every log of `wrangler dev` and of the gateway so far, concatenated.
    pub fn all_logs(&self) -> String {
        let (gateways, wranglers) = *self.starts.lock().unwrap();
        let mut text = String::new();
        for n in 1..=wranglers {
            text.push_str(&crate::read_log(
                &self.root.join(format!("wrangler-{n}.log")),
            ));
        }
        for n in 1..=gateways {
            text.push_str(&crate::read_log(
                &self.root.join(format!("gateway-{n}.log")),
            ));
        }
        text
    }

    /// A request to the Worker's admin route `path` with the admin token;
    /// its status.
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let mut req = http()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// `wrangler d1 execute` of `sql` on the Worker's local D1, behind the
    /// Worker's back.
    pub fn d1_execute(&self, sql: &str) {
        let out = std::process::Command::new(&self.tools.wrangler)
            .args(["d1", "execute", "duraclaw", "--local", "--persist-to"])
            .arg(self.dir.join("state"))
            .args(["--command", sql])
            .current_dir(&self.dir)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_HIDE_BANNER", "true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wrangler d1 execute: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Host for CloudflareHost {
    fn name(&self) -> &'static str {
        "cloudflare"
    }
    fn base(&self) -> &str {
        &self.base
    }
    fn root(&self) -> &Path {
        &self.root
    }
    fn add_user<'a>(&'a self, name: &'a str, password: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let body = json!({"username": name, "password": password});
            let status = self
                .admin(reqwest::Method::POST, "/api/admin/users", Some(body))
                .await;
            assert!((200..300).contains(&status), "adding {name}: {status}");
        })
    }
    fn set_password<'a>(&'a self, name: &'a str, password: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let path = format!("/api/admin/users/{name}/password");
            let body = json!({"password": password});
            let status = self.admin(reqwest::Method::PUT, &path, Some(body)).await;
            assert_eq!(status, 200, "setting {name}'s password");
        })
    }
    fn remove_user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let path = format!("/api/admin/users/{name}");
            let status = self.admin(reqwest::Method::DELETE, &path, None).await;
            assert_eq!(status, 204, "removing {name}");
        })
    }
    fn kill_gateway(&self) -> BoxFuture<'_, ()> {
        Box::pin(kill(&self.gateway))
    }
    fn start_gateway(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.spawn_gateway(None, &[]))
    }
    fn start_gateway_with_cli<'a>(&'a self, cli: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(self.spawn_gateway(Some(cli), &[]))
    }
    fn start_gateway_with_env<'a>(&'a self, env: &'a [(String, String)]) -> BoxFuture<'a, ()> {
        Box::pin(self.spawn_gateway(None, env))
    }
    fn gateway_log_text(&self) -> String {
        crate::read_log(&self.gateway_log())
    }
    fn gateway_db(&self) -> PathBuf {
        self.root.join("gateway").join("gateway.db")
    }
    fn start_gateway_with_claude<'a>(
        &'a self,
        cli: &'a Path,
        env: &'a [(String, String)],
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.spawn_gateway(Some(cli), env))
    }
    /// Stops `wrangler dev` (SIGINT) and starts it again on the same state.
    fn restart_host(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            drop(self.wrangler.lock().await.take());
            self.start_wrangler().await;
        })
    }
    /// SIGKILLs `wrangler dev`'s whole process group (workerd, which runs
    /// the objects and their SQLite, included) and starts it again.
    fn crash_host(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.kill_host().await;
            self.start_wrangler().await;
        })
    }
    /// The object's storage commits durably before the object answers.
    fn sessions_db(&self) -> Option<PathBuf> {
        None
    }
    fn kill_host(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(mut w) = self.wrangler.lock().await.take() {
                use nix::sys::signal::{Signal, killpg};
                use nix::unistd::Pid;
                let _ = killpg(Pid::from_raw(w.child.id() as i32), Signal::SIGKILL);
                let _ = w.child.wait();
            }
        })
    }
    fn start_host(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.start_wrangler())
    }
    fn origin(&self) -> &str {
        self.opts.public_origin.as_deref().unwrap_or(&self.base)
    }
    fn push_action_secret(&self) -> Vec<u8> {
        crate::local::vapid_private_bytes(VAPID_PRIVATE_KEY)
    }
    fn log_tails(&self) -> String {
        format!(
            "wrangler's log:\n{}\n\nthe gateway's log:\n{}",
            log_tail(&self.wrangler_log()),
            log_tail(&self.gateway_log())
        )
    }
}
