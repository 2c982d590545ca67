//! What the gateway's integration tests share: git repositories to work in
//! and an orchestrator-side WebSocket client. Each test file that needs it
//! says `mod support;`; not every file uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duraclaw_core::protocol::{
    Command, CommandEnvelope, Event, Execute, FromGateway, Hello, Role, ToGateway, decode_frame,
    encode_frame,
};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A client end of the gateway link.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A git repository at `path` with one commit (README.md).
pub fn init_repo(path: &Path) {
    duraclaw_testkit::local::init_repo(path, &[("README.md", "hello\n")]);
}

/// Serves `gateway`'s link on an ephemeral port of 127.0.0.1 with the
/// bearer `secret`: its address and the serving task.
pub async fn serve_link(
    gateway: &duraclaw_gateway::server::Gateway,
    secret: &str,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let secret = duraclaw_gateway::link::Secret::new(secret).unwrap();
    let task = tokio::spawn(duraclaw_gateway::link::serve(
        listener,
        gateway.clone(),
        secret,
    ));
    (addr, task)
}

/// Upgrades to the gateway with `auth` as the Authorization header.
pub async fn connect_with(
    addr: SocketAddr,
    auth: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Connects with the bearer `secret` and exchanges hellos.
pub async fn open(addr: SocketAddr, secret: &str, deadline: Duration) -> Ws {
    let mut ws = connect_with(addr, Some(&format!("Bearer {secret}")))
        .await
        .unwrap();
    send(&mut ws, &ToGateway::Hello(Hello::new(Role::Orchestrator))).await;
    match recv(&mut ws, deadline).await {
        FromGateway::Hello(h) => assert_eq!(h.role, Role::Gateway),
        other => panic!("expected hello, got {other:?}"),
    }
    ws
}

/// Sends one frame.
pub async fn send(ws: &mut Ws, frame: &ToGateway) {
    ws.send(Message::text(encode_frame(frame).unwrap()))
        .await
        .unwrap();
}

/// The next frame, within `deadline`.
pub async fn recv(ws: &mut Ws, deadline: Duration) -> FromGateway {
    loop {
        let msg = tokio::time::timeout(deadline, ws.next())
            .await
            .expect("no frame within the deadline")
            .expect("link closed")
            .expect("link error");
        if let Message::Text(t) = msg {
            return decode_frame(t.as_str(), "test frame").unwrap();
        }
    }
}

/// Events (gseq, event) until one satisfies `stop`, other frames skipped.
pub async fn events_until(
    ws: &mut Ws,
    deadline: Duration,
    mut stop: impl FnMut(&Event) -> bool,
) -> Vec<(u64, Event)> {
    let mut got = Vec::new();
    loop {
        if let FromGateway::Event { gseq, event, .. } = recv(ws, deadline).await {
            let done = stop(&event);
            got.push((gseq, event));
            if done {
                return got;
            }
        }
    }
}

/// A command frame.
pub fn command(id: &str, session: &str, command: Command) -> ToGateway {
    ToGateway::Command(CommandEnvelope {
        id: id.into(),
        session_id: session.into(),
        command,
    })
}

/// An `execute` in `worktree`.
pub fn execute(worktree: String, prompt: &str) -> Command {
    Command::Execute(Execute {
        worktree,
        prompt: prompt.into(),
        model: None,
        permission_mode: None,
        system_prompt: None,
        rules: None,
        new_worktree: None,
        fork: None,
        agent: None,
    })
}

/// The pinned Claude Code CLI: `$CLAUDE_BIN`, or the one
/// `scripts/install-tools.sh claude` installs. Missing, the test fails.
pub fn claude_bin() -> PathBuf {
    use duraclaw_gateway::cli::launch;
    let hint = "run `scripts/install-tools.sh claude` to install the pinned Claude Code CLI \
                (CI installs it), or point CLAUDE_BIN at a claude binary";
    let path =
        launch::bin_path().unwrap_or_else(|| panic!("neither CLAUDE_BIN nor HOME is set: {hint}"));
    assert!(
        path.is_file(),
        "the Claude Code CLI {} is not at {}: {hint}",
        launch::CLI_VERSION,
        path.display()
    );
    path
}

/// `<root>/private` (mode 0700) with the CLI's `home`, `config` and `tmp`.
pub fn private_dirs(root: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let private = root.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    for d in ["home", "config", "tmp"] {
        std::fs::create_dir(private.join(d)).unwrap();
    }
    private
}

/// The CLI `bin`, isolated in `private` (see [`private_dirs`]), talking to
/// `fake`.
pub fn claude_config(
    bin: &Path,
    fake: &duraclaw_fake_anthropic::FakeAnthropic,
    private: &Path,
) -> duraclaw_gateway::claude::ClaudeConfig {
    let base_url = fake.base_url();
    let mut cfg = duraclaw_gateway::claude::ClaudeConfig::new(bin);
    cfg.env = [
        ("ANTHROPIC_BASE_URL", base_url.as_str()),
        ("ANTHROPIC_API_KEY", "test"),
        ("CLAUDE_CODE_ENTRYPOINT", "sdk-py"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .chain([("HOME".into(), private.join("home").into_os_string())])
    .collect();
    cfg.isolated = true;
    cfg.config_dir = Some(private.join("config"));
    cfg.private_tmp = Some(private.join("tmp"));
    cfg.init_timeout = Duration::from_secs(30);
    cfg.interrupt_timeout = Duration::from_secs(10);
    cfg.idle_timeout = Duration::from_secs(60);
    cfg.stop_grace = Duration::from_secs(5);
    cfg
}

/// The pids of CLI processes this test process started in `cwd`, by their
/// name: the oldest supported CLI runs as `node cli.js` and names itself
/// `claude` (its arguments are overwritten then), the native one is
/// `claude`.
pub fn cli_pids(cwd: &Path) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let proc = entry.path();
        let is_cli = std::fs::read_to_string(proc.join("comm"))
            .is_ok_and(|comm| comm.trim_end() == "claude");
        let dir = std::fs::read_link(proc.join("cwd")).ok();
        // `stat` is "pid (comm) state ppid ..."; comm may hold spaces.
        let ppid = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                rest.split_whitespace().nth(1).map(str::to_owned)
            });
        if is_cli && dir.as_deref() == Some(cwd) && ppid.as_deref() == Some(&me) {
            pids.push(pid);
        }
    }
    pids
}

/// The oldest supported CLI: `$CLAUDE_MIN_BIN`, or the launcher
/// `scripts/install-tools.sh claude-min` installs.
pub fn claude_min_bin() -> PathBuf {
    use duraclaw_gateway::cli::launch;
    let hint = "run `scripts/install-tools.sh claude-min` to install the oldest supported \
                Claude Code CLI (CI installs it), or point CLAUDE_MIN_BIN at one";
    let path = match std::env::var_os("CLAUDE_MIN_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => launch::cached_bin_path()
            .and_then(|p| {
                // <cache>/duraclaw/claude-code-<pinned>/… → the sibling
                // claude-code-<min>/bin/claude.
                let cache = p.ancestors().find(|a| a.ends_with("duraclaw"))?.to_owned();
                Some(
                    cache
                        .join(format!("claude-code-{}", launch::MIN_CLI_VERSION))
                        .join("bin/claude"),
                )
            })
            .unwrap_or_else(|| panic!("neither CLAUDE_MIN_BIN nor HOME is set: {hint}")),
    };
    assert!(
        path.is_file(),
        "the Claude Code CLI {} is not at {}: {hint}",
        launch::MIN_CLI_VERSION,
        path.display()
    );
    path
}
