#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The `duraclaw-gateway` binary under abuse, with debug logging on:
//! wrong bearers and floods of upgrades and frames are answered and leave it
//! usable, and its secret shows in no log, audit line, process argument,
//! error answer, nor in the environment of the CLI it starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duraclaw_core::protocol::{FromGateway, ToGateway};
use futures::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command as Process;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{command, connect_with, execute, init_repo, open, recv, send};

const SECRET: &str = "abuse-test-secret-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(30);

fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    output: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut o = output.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    })
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// A stand-in for the Claude Code CLI that writes its environment and
/// arguments to `out`, then exits (after `--version`, it says a supported
/// version).
fn fake_cli(dir: &Path, out: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-claude");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo '{} (Claude Code)'; exit 0; }}\n\
             {{ env; echo \"ARGS: $*\"; }} > '{}.tmp' && mv '{1}.tmp' '{1}'\n",
            duraclaw_gateway::cli::launch::CLI_VERSION,
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Polls for a file no event announces (bounded).
async fn wait_for_file(path: &Path) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_is_answered_and_the_secret_never_leaves_the_gateway() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let repo = root.join("projects/app");
    init_repo(&repo);
    let env_dump = root.join("cli-env.txt");
    let bin = fake_cli(&root, &env_dump);
    let data = root.join("data");
    let mut child = Process::new(env!("CARGO_BIN_EXE_duraclaw-gateway"))
        .env_remove("WORKTREE_PATTERNS")
        .env_remove("CC_GATEWAY_BIND")
        .env_remove("CLAUDE_BIN")
        .env("CC_GATEWAY_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .args(["--bind", "127.0.0.1:0", "--executor", "claude"])
        .arg("--claude-bin")
        .arg(&bin)
        .arg("--data-dir")
        .arg(&data)
        .arg("--worktrees")
        .arg(format!("{}/projects/*", root.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let err_reader = collect(child.stderr.take().unwrap(), output.clone());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the gateway did not start in time")
        .unwrap()
        .expect("the gateway exited before listening");
    output.lock().unwrap().push_str(&line);
    let out_reader = {
        let output = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                output.lock().unwrap().push_str(&line);
            }
        })
    };
    let addr: std::net::SocketAddr = line.rsplit("ws://").next().unwrap().trim().parse().unwrap();
    let mut seen = cmdline(child.id().unwrap());

    // Wrong and almost-right bearers, 100 of them as fast as they go.
    let short = &SECRET[..SECRET.len() - 1];
    let bearers = [
        format!("Bearer {SECRET}x"),
        format!("Bearer {short}"),
        format!("bearer {SECRET}"),
        SECRET.to_owned(),
        format!("Bearer  {SECRET}"),
    ];
    for n in 0..100 {
        let auth = &bearers[n % bearers.len()];
        match connect_with(addr, Some(auth)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{auth}");
                seen.push_str(&format!("{:?}", resp.headers()));
                if let Some(body) = resp.body() {
                    seen.push_str(&String::from_utf8_lossy(body));
                }
            }
            other => panic!("{auth} was not refused: {:?}", other.map(|_| ())),
        }
    }

    // 200 pings and 50 bad frames at once on a real link: all answered, in
    // order.
    let mut ws = open(addr, SECRET, DEADLINE).await;
    for n in 0..200u64 {
        ws.feed(Message::text(
            duraclaw_core::protocol::encode_frame(&ToGateway::Ping { nonce: n }).unwrap(),
        ))
        .await
        .unwrap();
        if n % 4 == 0 {
            ws.feed(Message::text("{not json")).await.unwrap();
        }
    }
    ws.flush().await.unwrap();
    let (mut pongs, mut bad) = (Vec::new(), 0);
    while pongs.len() < 200 {
        match recv(&mut ws, DEADLINE).await {
            FromGateway::Pong { nonce } => pongs.push(nonce),
            FromGateway::Error(e) => {
                assert_eq!(e.code, "bad_frame");
                seen.push_str(&e.message);
                bad += 1;
            }
            _ => {}
        }
    }
    assert_eq!(pongs, (0..200).collect::<Vec<_>>());
    assert_eq!(bad, 50);

    // A session starts the CLI: its environment and arguments hold no
    // secret.
    send(
        &mut ws,
        &command(
            "c-1",
            "s-1",
            execute(repo.display().to_string(), "print your environment"),
        ),
    )
    .await;
    wait_for_file(&env_dump).await;
    let cli_env = std::fs::read_to_string(&env_dump).unwrap();
    assert!(cli_env.contains("ARGS:"), "{cli_env}");
    seen.push_str(&cli_env);

    // Still up for a well-behaved link.
    let mut again = open(addr, SECRET, DEADLINE).await;
    send(&mut again, &ToGateway::Ping { nonce: 7 }).await;
    loop {
        if let FromGateway::Pong { nonce } = recv(&mut again, DEADLINE).await {
            assert_eq!(nonce, 7);
            break;
        }
    }
    seen.push_str(&cmdline(child.id().unwrap()));
    drop(ws);
    drop(again);
    child.start_kill().unwrap();
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    for r in [err_reader, out_reader] {
        tokio::time::timeout(DEADLINE, r).await.unwrap().unwrap();
    }
    let logs = output.lock().unwrap().clone();
    assert!(logs.contains("DEBUG"), "debug logging was on: {logs}");
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap_or_default();
    let all = format!("{seen}\n{logs}\n{audit}");
    assert!(
        !all.contains(SECRET) && !all.contains(short),
        "the secret leaked:\n{all}"
    );
}
