//! The client side the agent calls: text files confined to the worktree,
//! and terminals running in the worktree, in the agent's process group
//! (killed with it).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agent_client_protocol::v1::schema::{
    CreateTerminalRequest, KillTerminalRequest, ReadTextFileRequest, ReleaseTerminalRequest,
    TerminalOutputRequest, WaitForTerminalExitRequest, WriteTextFileRequest,
};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::watch;

use super::rpc::{INTERNAL_ERROR, INVALID_PARAMS, RpcError};
use crate::worktree::MAX_PATH_BYTES;

/// Output a terminal keeps when the agent names no limit.
const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

fn invalid(message: impl Into<String>) -> RpcError {
    RpcError {
        code: INVALID_PARAMS,
        message: message.into(),
    }
}

fn params<T: serde::de::DeserializeOwned>(p: Value) -> Result<T, RpcError> {
    serde_json::from_value(p).map_err(|e| invalid(format!("invalid params: {e}")))
}

/// `requested` as a path inside `worktree` (canonical), by the rules of
/// worktree paths: no NUL, bounded, no `..`, and no symlink leading out.
/// A relative path is taken from the worktree. A path that does not exist
/// yet (a write) must have its parent inside.
pub(super) fn confine(worktree: &Path, requested: &Path) -> Result<PathBuf, String> {
    let text = requested.to_string_lossy();
    if text.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    if text.len() > MAX_PATH_BYTES {
        return Err(format!(
            "the path is {} bytes, longer than the {MAX_PATH_BYTES} a path may be",
            text.len()
        ));
    }
    if requested.components().any(|c| c == Component::ParentDir) {
        return Err(format!("the path {text:?} contains `..`"));
    }
    let path = worktree.join(requested);
    let outside = || format!("the path {text:?} is outside the session's worktree");
    match std::fs::canonicalize(&path) {
        Ok(real) if real.starts_with(worktree) => Ok(real),
        Ok(_) => Err(outside()),
        Err(_) if std::fs::symlink_metadata(&path).is_ok() => {
            Err(format!("the path {text:?} is a link to nowhere"))
        }
        Err(_) => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(outside());
            };
            match std::fs::canonicalize(parent) {
                Ok(real) if real.starts_with(worktree) => Ok(real.join(name)),
                Ok(_) => Err(outside()),
                Err(e) => Err(format!("the path {text:?} has no directory to go in: {e}")),
            }
        }
    }
}

/// `fs/read_text_file`.
pub(super) async fn read_text_file(worktree: &Path, p: Value) -> Result<Value, RpcError> {
    let req: ReadTextFileRequest = params(p)?;
    let path = confine(worktree, &req.path).map_err(invalid)?;
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| invalid(format!("cannot read {}: {e}", req.path.display())))?;
    let content = match (req.line, req.limit) {
        (None, None) => text,
        (line, limit) => {
            let skip = line.map_or(0, |l| l.saturating_sub(1) as usize);
            let take = limit.map_or(usize::MAX, |l| l as usize);
            text.split_inclusive('\n')
                .skip(skip)
                .take(take)
                .collect::<String>()
        }
    };
    Ok(json!({ "content": content }))
}

/// The path `fs/write_text_file` would write, checked; then [`write_text_file`].
pub(super) fn write_target(worktree: &Path, p: &Value) -> Result<(PathBuf, String), RpcError> {
    let req: WriteTextFileRequest = params(p.clone())?;
    let path = confine(worktree, &req.path).map_err(invalid)?;
    Ok((path, req.content))
}

/// `fs/write_text_file`, to a path [`write_target`] checked.
pub(super) async fn write_text_file(path: &Path, content: &str) -> Result<Value, RpcError> {
    tokio::fs::write(path, content)
        .await
        .map_err(|e| RpcError {
            code: INTERNAL_ERROR,
            message: format!("cannot write {}: {e}", path.display()),
        })?;
    Ok(json!({}))
}

/// One terminal.
#[derive(Debug)]
struct Terminal {
    pid: Option<i32>,
    output: Arc<Mutex<Output>>,
    exit: watch::Receiver<Option<Value>>,
}

#[derive(Debug, Default)]
struct Output {
    bytes: Vec<u8>,
    truncated: bool,
    limit: usize,
}

impl Output {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > self.limit {
            let mut cut = self.bytes.len() - self.limit;
            // Cut at a character boundary.
            while cut < self.bytes.len() && (self.bytes[cut] & 0xC0) == 0x80 {
                cut += 1;
            }
            self.bytes.drain(..cut);
            self.truncated = true;
        }
    }
}

/// The session's terminals.
#[derive(Debug)]
pub(super) struct Terminals {
    worktree: PathBuf,
    env: Vec<(OsString, OsString)>,
    pgid: Option<i32>,
    next: AtomicU64,
    open: Mutex<HashMap<String, Terminal>>,
}

impl Terminals {
    pub(super) fn new(
        worktree: PathBuf,
        env: Vec<(OsString, OsString)>,
        pgid: Option<i32>,
    ) -> Self {
        Terminals {
            worktree,
            env,
            pgid,
            next: AtomicU64::new(1),
            open: Mutex::default(),
        }
    }

    fn get<T>(&self, id: &str, f: impl FnOnce(&Terminal) -> T) -> Result<T, RpcError> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(id)
            .map(f)
            .ok_or_else(|| invalid(format!("no terminal `{id}`")))
    }

    /// `terminal/create`.
    pub(super) fn create(&self, p: Value) -> Result<Value, RpcError> {
        let req: CreateTerminalRequest = params(p)?;
        let cwd = match &req.cwd {
            Some(c) => confine(&self.worktree, c).map_err(invalid)?,
            None => self.worktree.clone(),
        };
        let mut cmd = Command::new(&req.command);
        cmd.args(&req.args)
            .current_dir(&cwd)
            .env_clear()
            .envs(self.env.iter().cloned())
            .envs(req.env.iter().map(|v| (v.name.clone(), v.value.clone())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // In the agent's group: stopping the session stops it too.
        if let Some(pgid) = self.pgid {
            cmd.process_group(pgid);
        }
        let mut child = cmd.spawn().map_err(|e| RpcError {
            code: INTERNAL_ERROR,
            message: format!("cannot run {}: {e}", req.command),
        })?;
        let limit = req
            .output_byte_limit
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(DEFAULT_OUTPUT_LIMIT);
        let output = Arc::new(Mutex::new(Output {
            limit,
            ..Output::default()
        }));
        let mut readers = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let output = output.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(&buf[..n]);
                }
            }));
        }
        if let Some(mut err) = child.stderr.take() {
            let output = output.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(&buf[..n]);
                }
            }));
        }
        let pid = child.id().and_then(|id| i32::try_from(id).ok());
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            for r in readers {
                let _ = r.await;
            }
            use std::os::unix::process::ExitStatusExt;
            let status = match status {
                Ok(s) => json!({
                    "exitCode": s.code(),
                    "signal": s.signal().map(signal_name),
                }),
                Err(_) => json!({ "exitCode": null, "signal": null }),
            };
            let _ = exit_tx.send(Some(status));
        });
        let id = format!("term-{}", self.next.fetch_add(1, Ordering::Relaxed));
        tracing::debug!(terminal = %id, command = %req.command, "terminal started");
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Terminal { pid, output, exit });
        Ok(json!({ "terminalId": id }))
    }

    /// `terminal/output`.
    pub(super) fn output(&self, p: Value) -> Result<Value, RpcError> {
        let req: TerminalOutputRequest = params(p)?;
        self.get(&req.terminal_id.0, |t| {
            let out = t.output.lock().unwrap_or_else(|p| p.into_inner());
            let mut answer = json!({
                "output": String::from_utf8_lossy(&out.bytes),
                "truncated": out.truncated,
            });
            if let Some(status) = t.exit.borrow().clone() {
                answer["exitStatus"] = status;
            }
            answer
        })
    }

    /// `terminal/wait_for_exit`.
    pub(super) async fn wait_for_exit(&self, p: Value) -> Result<Value, RpcError> {
        let req: WaitForTerminalExitRequest = params(p)?;
        let mut exit = self.get(&req.terminal_id.0, |t| t.exit.clone())?;
        match exit.wait_for(Option::is_some).await {
            Ok(status) => Ok(status.clone().unwrap_or(Value::Null)),
            Err(_) => Err(RpcError {
                code: INTERNAL_ERROR,
                message: "the terminal's status is lost".into(),
            }),
        }
    }

    /// `terminal/kill`.
    pub(super) fn kill(&self, p: Value) -> Result<Value, RpcError> {
        let req: KillTerminalRequest = params(p)?;
        let pid = self.get(&req.terminal_id.0, |t| (t.pid, t.exit.borrow().is_none()))?;
        if let (Some(pid), true) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        Ok(json!({}))
    }

    /// `terminal/release`: killed if still running, and forgotten.
    pub(super) fn release(&self, p: Value) -> Result<Value, RpcError> {
        let req: ReleaseTerminalRequest = params(p.clone())?;
        let _ = self.kill(p);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&*req.terminal_id.0);
        Ok(json!({}))
    }

    /// Kills every terminal still running.
    pub(super) fn kill_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(|p| p.into_inner()));
        for t in open.values() {
            if let (Some(pid), true) = (t.pid, t.exit.borrow().is_none()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| sig.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_worktree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let wt = root.join("wt");
        std::fs::create_dir_all(wt.join("src")).unwrap();
        std::fs::write(wt.join("src/a.txt"), "a").unwrap();
        std::fs::write(root.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), wt.join("link")).unwrap();
        std::os::unix::fs::symlink(&root, wt.join("dirlink")).unwrap();

        assert_eq!(
            confine(&wt, &wt.join("src/a.txt")).unwrap(),
            wt.join("src/a.txt")
        );
        assert_eq!(
            confine(&wt, Path::new("src/a.txt")).unwrap(),
            wt.join("src/a.txt")
        );
        assert_eq!(
            confine(&wt, &wt.join("src/new.txt")).unwrap(),
            wt.join("src/new.txt")
        );
        for bad in [
            root.join("secret"),
            wt.join("../secret"),
            wt.join("link"),
            wt.join("dirlink/secret"),
            wt.join("dirlink/new.txt"),
            PathBuf::from("/etc/passwd"),
            wt.join("no/such/dir/file"),
        ] {
            assert!(
                confine(&wt, &bad).is_err(),
                "{} was let through",
                bad.display()
            );
        }
    }
}
