//! The gateway a `wrangler dev` deployment of the full example links to.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `duraclaw gateway --executor scripted` on 127.0.0.1:`port` with
/// `secret` (in its environment, never its arguments), the worktrees
/// `root/projects/*`, the script `root/script.json` and its data in
/// `root/gateway`, its log (stderr) in `log`, killed when dropped. Returns
/// once it listens, within `deadline`, or panics with the log's tail. None
/// of the caller's gateway, Duraclaw or Claude settings reach it.
pub async fn start(root: &Path, port: u16, secret: &str, log: &Path, deadline: Duration) -> Child {
    let script = root.join("script.json");
    let executor = [
        "--executor".as_ref(),
        "scripted".as_ref(),
        "--script".as_ref(),
        script.as_os_str(),
    ];
    start_with(root, port, secret, log, deadline, &executor).await
}

/// [`start`] with other executor arguments (e.g. `--executor claude
/// --claude-bin <path>`) instead of the scripted executor's.
pub async fn start_with(
    root: &Path,
    port: u16,
    secret: &str,
    log: &Path,
    deadline: Duration,
    executor: &[&std::ffi::OsStr],
) -> Child {
    start_with_env(root, port, secret, log, deadline, executor, &[]).await
}

/// [`start_with`], with `env` set for the gateway (and the CLI it runs),
/// e.g. the fake Anthropic API's address.
pub async fn start_with_env(
    root: &Path,
    port: u16,
    secret: &str,
    log: &Path,
    deadline: Duration,
    executor: &[&std::ffi::OsStr],
    env: &[(String, String)],
) -> Child {
    let mut c = Command::new(crate::duraclaw_bin());
    for (name, _) in std::env::vars_os() {
        let s = name.to_string_lossy();
        if s.starts_with("CC_GATEWAY")
            || s.starts_with("DURACLAW_")
            || s.starts_with("CLAUDE")
            || s == "WORKTREE_PATTERNS"
        {
            c.env_remove(&name);
        }
    }
    // `env` may set its own RUST_LOG.
    c.env("RUST_LOG", "info");
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c.env("CC_GATEWAY_SECRET", secret)
        .env("NO_COLOR", "1")
        .arg("gateway")
        .args(executor)
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--worktrees")
        .arg(format!("{}/projects/*", root.display()))
        .arg("--data-dir")
        .arg(root.join("gateway"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true);
    // The agents the suites expect (`crate::agents::AGENTS`), where written.
    let agents = root.join("agents.json");
    if agents.is_file() {
        c.arg("--agents").arg(agents);
    }
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = tokio::time::timeout(deadline, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("gateway listening on ") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(started, Ok(true)),
        "the gateway did not start:\n{}",
        crate::log_tail(log)
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}
