//! The local host under test: starting the `duraclaw` binary and waiting
//! until it listens, adding a user and logging in, opening a session's
//! WebSocket and reading its frames with a deadline, and running the
//! browser suite's `node --test`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The bound on a process's start, a command's run and a frame's arrival.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The password of every user the tests add.
pub const PASSWORD: &str = "correct horse battery staple";

/// A client end of a session's WebSocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---------------------------------------------------------------- processes

/// The `duraclaw` binary with none of the caller's Duraclaw, gateway,
/// Claude or Anthropic settings, logging at `log` (`RUST_LOG`), killed when
/// dropped.
pub fn duraclaw(log: &str) -> Command {
    let mut c = Command::new(crate::duraclaw_bin());
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("CC_GATEWAY")
            || n.starts_with("DURACLAW_")
            || n.starts_with("CLAUDE")
            || n.starts_with("ANTHROPIC_")
            || n == "WORKTREE_PATTERNS"
        {
            c.env_remove(&name);
        }
    }
    c.env("RUST_LOG", log).kill_on_drop(true);
    c
}

/// Runs `duraclaw user add NAME --password-stdin --data-dir DATA` as `cmd`
/// (its stdout and stderr as the caller set them) with [`PASSWORD`] on
/// stdin; its output once it exits.
pub async fn user_add(mut cmd: Command, data: &Path, name: &str) -> Output {
    let mut child = cmd
        .args(["user", "add", name, "--password-stdin", "--data-dir"])
        .arg(data)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("user add did not finish in time")
        .unwrap()
}

/// Adds user `name` with [`PASSWORD`] to the data directory `data`.
pub async fn add_user(data: &Path, name: &str) {
    let mut cmd = duraclaw("warn");
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let out = user_add(cmd, data, name).await;
    assert!(
        out.status.success(),
        "user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Spawns `cmd` (its stdout piped by the caller) and reads its stdout until
/// a line starts with each of `prefixes`; returns the rest of those lines.
/// Stdout keeps draining, so the child never blocks on it.
pub async fn spawn_until(
    mut cmd: Command,
    prefixes: &[&str],
) -> Result<(Child, Vec<String>), String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found: Vec<Option<String>> = vec![None; prefixes.len()];
    while found.iter().any(Option::is_none) {
        let line = match tokio::time::timeout(DEADLINE, lines.next_line()).await {
            Err(_) => return Err(format!("no {prefixes:?} within {DEADLINE:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(None)) => return Err(format!("exited before printing {prefixes:?}")),
            Ok(Ok(Some(line))) => line,
        };
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(rest) = line.strip_prefix(p) {
                found[i] = Some(rest.trim().to_owned());
            }
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, found.into_iter().map(Option::unwrap).collect()))
}

/// Spawns `cmd` with no stdin and its stderr inherited, and waits until its
/// stdout prints a line starting with `prefix`; the rest of that line.
pub async fn spawn_reading(mut cmd: Command, prefix: &str) -> (Child, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let (child, mut found) = spawn_until(cmd, &[prefix])
        .await
        .unwrap_or_else(|e| panic!("{prefix:?}: {e}"));
    (child, found.remove(0))
}

/// `duraclaw up --demo` on 127.0.0.1 with `args` added, playing `script`
/// over `data`: the child, its base URL and its gateway's address.
pub async fn up_demo(data: &Path, script: &Path, args: &[&str]) -> (Child, String, String) {
    let mut c = duraclaw("warn");
    c.args(["up", "--demo", "--bind", "127.0.0.1:0"])
        .args(args)
        .arg("--script")
        .arg(script)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let (child, mut found) = spawn_until(c, &["duraclaw listening on ", "gateway listening on "])
        .await
        .unwrap_or_else(|e| panic!("duraclaw up: {e}"));
    let gateway = found.remove(1).trim_start_matches("ws://").to_owned();
    (child, found.remove(0), gateway)
}

/// `duraclaw gateway --executor scripted` as `cmd` (secret and log level
/// set by the caller) on 127.0.0.1:`port`, its data in `dir/gw`, once it
/// listens. The port may still be held for a moment after a SIGKILL of
/// the previous gateway on it: this waits for it first (bounded).
pub async fn scripted_gateway(
    mut cmd: Command,
    dir: &Path,
    port: u16,
    script: &Path,
    worktrees: &str,
) -> Child {
    cmd.args([
        "gateway",
        "--executor",
        "scripted",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--worktrees",
        worktrees,
    ])
    .arg("--script")
    .arg(script)
    .arg("--data-dir")
    .arg(dir.join("gw"));
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
        && std::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    spawn_reading(cmd, "gateway listening on ").await.0
}

/// Writes a scripted executor's script with `turns` to `dir/script.json`.
pub fn write_script(dir: &Path, turns: Value) -> PathBuf {
    let path = dir.join("script.json");
    std::fs::write(&path, json!({ "turns": turns }).to_string()).unwrap();
    path
}

pub use crate::free_port;

/// A git repository at `path` with `files` in one commit.
pub fn init_repo(path: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(path).unwrap();
    let repo = git2::Repository::init(path).unwrap();
    let mut index = repo.index().unwrap();
    for (name, text) in files {
        std::fs::write(path.join(name), text).unwrap();
        index.add_path(Path::new(name)).unwrap();
    }
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .unwrap();
}

// ---------------------------------------------------------------- HTTP

/// An HTTP client that keeps cookies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Logs in as `name` with `password`: the `duraclaw_session=…` cookie, or
/// the status when refused.
pub async fn login_with(
    c: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
) -> Result<String, u16> {
    let r = c
        .post(format!("{base}/api/login"))
        .header("origin", base)
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("duraclaw_session="))
        .expect("a session cookie");
    Ok(cookie.split(';').next().unwrap().to_owned())
}

/// Logs in as `name` with [`PASSWORD`]: a client holding the cookie, and
/// the cookie.
pub async fn login(base: &str, name: &str) -> (reqwest::Client, String) {
    let c = client();
    let cookie = login_with(&c, base, name, PASSWORD)
        .await
        .unwrap_or_else(|status| panic!("login as {name}: {status}"));
    (c, cookie)
}

/// `POST /api/sessions` for `worktree` with `prompt` (with `cookie` when
/// `c` keeps none); the new session's id, after checking the 201.
pub async fn create_session(
    c: &reqwest::Client,
    base: &str,
    cookie: Option<&str>,
    worktree: &str,
    prompt: &str,
) -> String {
    let mut req = c
        .post(format!("{base}/api/sessions"))
        .header("origin", base)
        .json(&serde_json::json!({"worktree": worktree, "prompt": prompt}));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET url` with `c`, as JSON.
pub async fn get_json(c: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// `GET /api/status`.
pub async fn status(base: &str, c: &reqwest::Client) -> Value {
    get_json(c, format!("{base}/api/status")).await
}

/// Waits until the orchestrator's gateway link is up (`connected`) or down
/// (bounded).
pub async fn wait_gateway(base: &str, c: &reqwest::Client, connected: bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let s = status(base, c).await;
        if s["gateway"]["connected"] == json!(connected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway connected never became {connected}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The path of the first worktree the gateway offers.
pub async fn worktree(base: &str, c: &reqwest::Client) -> String {
    let wts = get_json(c, format!("{base}/api/worktrees")).await;
    wts[0]["path"].as_str().expect("a worktree").to_owned()
}

// ---------------------------------------------------------------- WebSocket

/// Opens session `session`'s stream after `after` with `cookie`, sending
/// `origin` as the Origin header.
pub async fn ws(
    base: &str,
    cookie: &str,
    session: &str,
    after: u64,
    origin: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = format!(
        "{}/api/sessions/{session}/ws?after={after}&compact=0",
        base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", origin.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.map(|(w, _)| w)
}

/// The next text frame, as JSON (bounded).
pub async fn next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("no frame in time")
            .expect("closed")
            .expect("ws error");
        if let Message::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The next session event (seq, event), skipping other frames (bounded).
pub async fn next_event(ws: &mut Ws) -> (u64, Value) {
    loop {
        let f = next(ws).await;
        if f["type"] == "event" {
            return (f["seq"].as_u64().unwrap(), f["event"].clone());
        }
    }
}

/// Reads events until one satisfies `stop`; returns them (seq, event).
pub async fn events_until(ws: &mut Ws, stop: impl Fn(&Value) -> bool) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    loop {
        let (seq, event) = next_event(ws).await;
        let done = stop(&event);
        got.push((seq, event));
        if done {
            return got;
        }
    }
}

/// Reads exactly `n` events.
pub async fn events_n(ws: &mut Ws, n: u64) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    while (got.len() as u64) < n {
        got.push(next_event(ws).await);
    }
    got
}

/// Sends command `command` under `id`.
pub async fn send_cmd(ws: &mut Ws, id: &str, command: Value) {
    ws.send(Message::text(
        json!({"type": "command", "id": id, "command": command}).to_string(),
    ))
    .await
    .unwrap();
}

// ---------------------------------------------------------------- the browser suite

/// `PATH`'s first file named `name`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The path in variable `var`, when it is set and not empty.
pub fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Runs `c` (the browser suite's `node --test`, its directory, files and
/// settings already given) without colours; returns whether it passed and
/// its output, also written to `out` line by line as it comes. A suite
/// still running after `deadline` is killed and fails.
pub async fn run_node_suite(mut c: Command, out: &Path, deadline: Duration) -> (bool, String) {
    use std::sync::Arc;
    c.env("NO_COLOR", "1")
        .env("FORCE_COLOR", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("cannot start node");
    let file = Arc::new(tokio::sync::Mutex::new(
        tokio::fs::File::create(out).await.unwrap(),
    ));
    let text = Arc::new(tokio::sync::Mutex::new(String::new()));
    let pump = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        let (file, text) = (file.clone(), text.clone());
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = file
                    .lock()
                    .await
                    .write_all(format!("{line}\n").as_bytes())
                    .await;
                text.lock().await.push_str(&format!("{line}\n"));
            }
        })
    };
    let a = pump(Box::new(child.stdout.take().unwrap()));
    let b = pump(Box::new(child.stderr.take().unwrap()));
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(s) => s.unwrap().success(),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            text.lock()
                .await
                .push_str(&format!("\nthe suite did not finish within {deadline:?}\n"));
            false
        }
    };
    let _ = a.await;
    let _ = b.await;
    let output = text.lock().await.clone();
    (status, output)
}

/// The secret notification actions are signed under (their key is
/// `duraclaw_host::push::action::action_key` of it): the bytes of the VAPID
/// private key `duraclaw orchestrator` made in `data_dir` (it exists once
/// the orchestrator listens).
pub fn push_action_secret(data_dir: &Path) -> Vec<u8> {
    let path = data_dir.join("vapid.key");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    vapid_private_bytes(&text)
}

/// The bytes of a base64url VAPID private key.
pub fn vapid_private_bytes(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .expect("a base64url VAPID key")
}
