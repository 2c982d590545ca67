//! A deployment under test, whichever host runs it: the local `duraclaw up`
//! ([`LocalHost`]) or the full example's Worker under `wrangler dev` with
//! its own gateway ([`CloudflareHost`]). Suites written once against
//! [`Host`] run on both (see [`crate::api`]).
//!
//! Every host plays [`SCRIPT`] with the scripted executor and offers the git
//! repositories `projects/<name>` for each name in [`WORKTREES`], so each
//! case can start sessions in a worktree of its own.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use crate::wrangler::{Tools, Wrangler, build_full_example, start_wrangler_logged};
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
];

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
    /// The ends of the host's logs, for a failure's message.
    fn log_tails(&self) -> String;
}

/// The path of worktree `name` (one of [`WORKTREES`]) on host `h`.
pub fn worktree(h: &dyn Host, name: &str) -> String {
    assert!(WORKTREES.contains(&name), "no worktree {name:?}");
    h.root().join("projects").join(name).display().to_string()
}

/// Writes [`SCRIPT`] to `root/script.json` and a git repository for each of
/// [`WORKTREES`] under `root/projects`.
fn prepare(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("script.json"), SCRIPT).unwrap();
    for name in WORKTREES {
        crate::local::init_repo(
            &root.join("projects").join(name),
            &[("README.md", "# app\n")],
        );
    }
}

/// Logs `name` in with `password` from the host's own origin: the
/// `duraclaw_session=…` cookie.
pub async fn login(h: &dyn Host, name: &str, password: &str) -> String {
    crate::wrangler::login(&http(), h.base(), h.base(), name, password).await
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
        .header("origin", h.base())
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

/// `duraclaw up --demo` on 127.0.0.1 playing [`SCRIPT`], its data in a
/// temporary directory, killed when dropped.
pub struct LocalHost {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    base: String,
    log: PathBuf,
    _child: Child,
}

impl LocalHost {
    /// Starts it and waits until its gateway link is up.
    pub async fn start() -> LocalHost {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        prepare(&root);
        let log = root.join("duraclaw.log");
        let mut c = crate::local::duraclaw("info");
        c.args(["up", "--demo", "--bind", "127.0.0.1:0"])
            .args(["--gateway-bind", "127.0.0.1:0"])
            .arg("--script")
            .arg(root.join("script.json"))
            .arg("--worktrees")
            .arg(format!("{}/projects/*", root.display()))
            .arg("--data-dir")
            .arg(root.join("data"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = c.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = tokio::time::timeout(DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(base) = line.strip_prefix("duraclaw listening on ") {
                    return Some(base.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("duraclaw up did not start:\n{}", log_tail(&log)));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let host = LocalHost {
            _tmp: tmp,
            root,
            base,
            log,
            _child: child,
        };
        // `/api/status` needs a login: a user of the host's own.
        host.add_user("status", "status password 0123").await;
        let cookie = login(&host, "status", "status password 0123").await;
        wait_gateway_connected(&host, &cookie).await;
        host
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
    fn log_tails(&self) -> String {
        format!("duraclaw up's log:\n{}", log_tail(&self.log))
    }
}

/// Waits until `/api/status` (as the login `cookie`) says the gateway link
/// is up (bounded).
async fn wait_gateway_connected(h: &dyn Host, cookie: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = http()
            .get(format!("{}/api/status", h.base()))
            .header("cookie", cookie)
            .send()
            .await
            .ok();
        let connected = match status {
            Some(r) => r
                .json::<Value>()
                .await
                .is_ok_and(|s| s["gateway"]["connected"] == json!(true)),
            None => false,
        };
        if connected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {} host's gateway link did not come up:\n{}",
            h.name(),
            h.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- Cloudflare

const GATEWAY_SECRET: &str = "cf-host-gateway-secret-0123456789";
const COOKIE_SECRET: &str = "cf-host-cookie-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "cf-host-admin-token-0123456789abcdef";

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
    _gateway: Child,
    wrangler: Wrangler,
}

impl CloudflareHost {
    /// Builds the Worker, starts the gateway and `wrangler dev`, and waits
    /// until the Worker answers `/api/health`.
    pub async fn start(name: &str) -> CloudflareHost {
        let tools = Tools::find();
        let root = crate::target_tmpdir().join(name);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        eprintln!("logs and state in {}", root.display());
        prepare(&root);
        let dir = root.join("cf");
        build_full_example(&tools, &dir);

        let gateway_port = free_port();
        let gateway = crate::gateway::start(
            &root,
            gateway_port,
            GATEWAY_SECRET,
            &root.join("gateway.log"),
            DEADLINE,
        )
        .await;
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let gateway_url = format!("http://127.0.0.1:{gateway_port}");
        let vars = [
            ("CC_GATEWAY_URL", gateway_url.as_str()),
            ("CC_GATEWAY_SECRET", GATEWAY_SECRET),
            ("DURACLAW_COOKIE_SECRET", COOKIE_SECRET),
            ("DURACLAW_ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let mut wrangler =
            start_wrangler_logged(&tools, &dir, port, &vars, &root.join("wrangler.log"));
        crate::wrangler::wait_until_ready(
            &mut wrangler,
            &http(),
            &format!("{base}/api/health"),
            |t| t.contains("\"ok\":true"),
        )
        .await;
        CloudflareHost {
            tools,
            root,
            dir,
            base,
            _gateway: gateway,
            wrangler,
        }
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
    fn log_tails(&self) -> String {
        format!(
            "wrangler's log:\n{}\n\nthe gateway's log:\n{}",
            self.wrangler.log_tail(),
            log_tail(&self.root.join("gateway.log"))
        )
    }
}
