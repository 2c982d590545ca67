//! The Claude Code CLI as an [`Executor`].
//!
//! One CLI process per session, in the session's worktree, speaking
//! stream-json with the control protocol on stdin/stdout (see [`crate::cli`]).
//! Every tool call goes through the approval gate; the executor logs the
//! question and its resolution in stream order. A process that exits, is
//! killed, hangs or writes garbage becomes an `error` event with its exit
//! status and the tail of its stderr — never a hang. The CLI runs in its own
//! process group so that stopping a session stops the commands it started.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::approval::{ApprovalRequest, DynApprovalGate};
use duraclaw_core::error::Error;
use duraclaw_core::executor::{DynEventSink, Executor, ExecutorSession, StartSpec};
use duraclaw_core::protocol::{ErrorEvent, Event, QuestionKind, UserQuestion};
use duraclaw_core::protocol::{MAX_EVENT_BYTES, MAX_FRAME_BYTES};
use duraclaw_core::store::Resolution;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::cli::launch::filtered_env;
use crate::cli::{CliAction, CliEventMapper, CliInput, LaunchSpec};
use duraclaw_approval::{now_ms, resolution_event};

/// Bytes of stderr kept for error reports.
const STDERR_TAIL: usize = 4096;
/// Why questions are withdrawn when the session is stopped.
const STOPPED: &str = "the session was stopped";
/// Events held back before `initialize` is answered (more are dropped).
const MAX_EARLY_EVENTS: usize = 64;
/// Consecutive non-JSON stdout lines after which the process is killed.
const MAX_GARBAGE_LINES: u32 = 50;

/// How to run the CLI.
#[derive(Clone)]
pub struct ClaudeConfig {
    /// The `claude` binary.
    pub bin: PathBuf,
    /// Model when a session names none.
    pub model: String,
    /// Permission mode when a session names none (`default`).
    pub permission_mode: Option<String>,
    /// `CLAUDE_CONFIG_DIR` for the CLI (its transcripts live there, which
    /// resume needs); the user's own when `None`.
    pub config_dir: Option<PathBuf>,
    /// Extra environment for the CLI (e.g. `ANTHROPIC_BASE_URL`). Values
    /// are passed through the environment, never as arguments.
    pub env: Vec<(OsString, OsString)>,
    /// Drop inherited `CLAUDE_CODE_*` and `ANTHROPIC_*` too (tests).
    pub isolated: bool,
    /// A private directory for the CLI's temporary files and sockets.
    pub private_tmp: Option<PathBuf>,
    /// How long the CLI may take to answer `initialize`.
    pub init_timeout: Duration,
    /// How long an interrupt may take to be acknowledged.
    pub interrupt_timeout: Duration,
    /// How long a turn may go without a line from the CLI while nothing
    /// waits for a human.
    pub idle_timeout: Duration,
    /// How long a stopping CLI gets after stdin closes, and after SIGTERM.
    pub stop_grace: Duration,
}

impl std::fmt::Debug for ClaudeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `env` may carry an API key: names only.
        let names: Vec<_> = self.env.iter().map(|(k, _)| k.clone()).collect();
        f.debug_struct("ClaudeConfig")
            .field("bin", &self.bin)
            .field("model", &self.model)
            .field("permission_mode", &self.permission_mode)
            .field("config_dir", &self.config_dir)
            .field("env_names", &names)
            .field("isolated", &self.isolated)
            .finish_non_exhaustive()
    }
}

impl ClaudeConfig {
    /// Defaults for `bin`: model `sonnet`, generous timeouts.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        ClaudeConfig {
            bin: bin.into(),
            model: "sonnet".into(),
            permission_mode: None,
            config_dir: None,
            env: Vec::new(),
            isolated: false,
            private_tmp: None,
            init_timeout: Duration::from_secs(60),
            interrupt_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15 * 60),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// How long `claude --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// What `--version` said about one state of the binary file.
#[derive(Debug, Clone)]
struct VersionProbe {
    /// The file's modification time and length when it was probed.
    stamp: (Option<std::time::SystemTime>, u64),
    /// The version, or why it is not supported.
    verdict: std::result::Result<String, String>,
}

/// Starts Claude Code sessions.
#[derive(Debug, Clone)]
pub struct ClaudeExecutor {
    config: Arc<ClaudeConfig>,
    /// The last version probe; probed again when the file changes.
    version: Arc<tokio::sync::Mutex<Option<VersionProbe>>>,
}

impl ClaudeExecutor {
    /// An executor with `config`.
    pub fn new(config: ClaudeConfig) -> Self {
        ClaudeExecutor {
            config: Arc::new(config),
            version: Arc::default(),
        }
    }

    /// The CLI's version when it is [`launch::MIN_CLI_VERSION`] or later;
    /// otherwise [`Error::ExecutorUnsupported`] naming the version found
    /// and the one needed. Runs `claude --version` once per state of the
    /// binary file (an upgrade in place is seen).
    ///
    /// [`launch::MIN_CLI_VERSION`]: crate::cli::launch::MIN_CLI_VERSION
    pub async fn check_version(&self) -> Result<String> {
        self.check()?;
        let cfg = &self.config;
        let meta = std::fs::metadata(&cfg.bin)
            .map_err(|e| Error::Executor(format!("cannot read {}: {e}", cfg.bin.display())))?;
        let stamp = (meta.modified().ok(), meta.len());
        let mut cached = self.version.lock().await;
        if let Some(probe) = cached.as_ref().filter(|p| p.stamp == stamp) {
            return probe.verdict.clone().map_err(Error::ExecutorUnsupported);
        }
        let mut cmd = Command::new(&cfg.bin);
        cmd.arg("--version")
            .env_clear()
            .envs(filtered_env(std::env::vars_os(), cfg.isolated))
            .envs(cfg.env.iter().cloned())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(VERSION_TIMEOUT, cmd.output())
            .await
            .map_err(|_| Error::Timeout {
                what: "`claude --version`",
                ms: u64::try_from(VERSION_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
            })?
            .map_err(|e| {
                Error::Executor(format!("cannot run {} --version: {e}", cfg.bin.display()))
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let verdict = crate::cli::launch::check_version(&text);
        match &verdict {
            Ok(v) => tracing::info!(bin = %cfg.bin.display(), version = %v, "Claude Code CLI"),
            Err(e) => {
                tracing::warn!(bin = %cfg.bin.display(), error = %e, "Claude Code CLI not supported")
            }
        }
        *cached = Some(VersionProbe {
            stamp,
            verdict: verdict.clone(),
        });
        verdict.map_err(Error::ExecutorUnsupported)
    }

    /// Whether the configured binary exists, with a message that says what
    /// to do when it does not.
    pub fn check(&self) -> Result<()> {
        if self.config.bin.is_file() {
            Ok(())
        } else {
            Err(Error::Executor(format!(
                "the Claude Code CLI was not found at {}: install it (npm install -g \
                 @anthropic-ai/claude-code) or set CLAUDE_BIN",
                self.config.bin.display()
            )))
        }
    }
}

struct Shared {
    session_id: String,
    sink: DynEventSink,
    gate: DynApprovalGate,
    stdin: Mutex<Option<mpsc::UnboundedSender<CliInput>>>,
    mapper: Mutex<CliEventMapper>,
    control: Mutex<HashMap<String, oneshot::Sender<std::result::Result<Value, String>>>>,
    stderr: Mutex<VecDeque<u8>>,
    running: AtomicBool,
    /// `initialize` was answered: from now on an exit is an event (before,
    /// the failed start reports it).
    initialized: AtomicBool,
    /// Events the CLI produced before it answered `initialize`, held back
    /// until it did: a failed start (e.g. `--resume` of an unknown session
    /// prints an error `result` and exits) must not leave a turn's events
    /// in the log. `None` once initialized.
    early: Mutex<Option<Vec<Event>>>,
    stopping: AtomicBool,
    turn_running: AtomicBool,
    awaiting: AtomicU64,
    /// Woken when a turn starts or a question is decided: the idle timer
    /// of a read already waiting starts (again) from then.
    wake: Notify,
    next_request: AtomicU64,
    pgid: Option<i32>,
    config: Arc<ClaudeConfig>,
}

impl Shared {
    fn send(&self, input: CliInput) -> Result<()> {
        let stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        stdin
            .as_ref()
            .and_then(|tx| tx.send(input).ok())
            .ok_or_else(|| Error::Executor("the Claude Code process is not running".into()))
    }

    /// Closes the CLI's stdin once what is queued is written: it finishes.
    fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn request_id(&self, what: &str) -> String {
        format!(
            "duraclaw-{what}-{}",
            self.next_request.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends a control request and waits for its response.
    async fn control(&self, input: CliInput, id: String, timeout: Duration) -> Result<Value> {
        let (tx, rx) = oneshot::channel();
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx);
        self.send(input)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(Error::Executor(format!("the CLI refused {id}: {e}"))),
            Ok(Err(_)) => Err(Error::Executor("the Claude Code process exited".into())),
            Err(_) => Err(Error::Timeout {
                what: "the Claude Code CLI to answer a control request",
                ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    fn stderr_tail(&self) -> String {
        let buf = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = buf.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }

    async fn emit(&self, event: Event) {
        {
            let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(held) = early.as_mut() {
                if held.len() < MAX_EARLY_EVENTS {
                    held.push(event);
                }
                return;
            }
        }
        if let Err(e) = self.sink.emit(event).await {
            tracing::error!(session = %self.session_id, error = %e, "event not recorded");
        }
    }

    async fn emit_error(&self, message: String, code: &str, exit_status: Option<i32>) {
        let tail = self.stderr_tail();
        self.emit(Event::Error(ErrorEvent {
            message,
            code: Some(code.to_owned()),
            exit_status,
            stderr_tail: (!tail.is_empty()).then_some(tail),
        }))
        .await;
    }

    /// A turn runs and no question waits for a human: the CLI should be
    /// writing.
    fn idle_matters(&self) -> bool {
        self.turn_running.load(Ordering::Acquire) && self.awaiting.load(Ordering::Acquire) == 0
    }

    /// SIGTERM, then SIGKILL, to the CLI's whole process group.
    fn signal_group(&self, signal: nix::sys::signal::Signal) {
        if let Some(pgid) = self.pgid {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
        }
    }
}

/// A running CLI session.
pub struct ClaudeSession {
    shared: Arc<Shared>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for ClaudeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeSession")
            .field("session_id", &self.shared.session_id)
            .field("running", &self.shared.running.load(Ordering::Acquire))
            .finish()
    }
}

/// What the CLI writes on stderr when `--resume` names a session it has no
/// transcript of (e.g. it was killed before it saved its first turn).
const NO_CONVERSATION: &str = "No conversation found";

/// Why a launch failed.
enum LaunchError {
    /// `--resume` named a session the CLI has no transcript of.
    NoConversation(Error),
    /// Anything else.
    Other(Error),
}

impl From<LaunchError> for Error {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::NoConversation(e) | LaunchError::Other(e) => e,
        }
    }
}

impl ClaudeExecutor {
    /// Spawns the CLI (resuming `resume`, if any) and waits for its answer to
    /// `initialize`.
    async fn launch(
        &self,
        spec: &StartSpec,
        resume: Option<String>,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> std::result::Result<ClaudeSession, LaunchError> {
        let cfg = self.config.clone();
        let launch = LaunchSpec {
            model: spec.model.clone().unwrap_or_else(|| cfg.model.clone()),
            permission_mode: spec
                .permission_mode
                .clone()
                .or_else(|| cfg.permission_mode.clone()),
            system_prompt: spec.system_prompt.clone(),
            resume,
        };
        let mut cmd = Command::new(&cfg.bin);
        cmd.args(launch.args())
            .current_dir(&spec.worktree)
            .env_clear()
            .envs(filtered_env(std::env::vars_os(), cfg.isolated))
            .envs(cfg.env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(dir) = &cfg.config_dir {
            cmd.env("CLAUDE_CONFIG_DIR", dir);
        }
        if let Some(tmp) = &cfg.private_tmp {
            cmd.env("TMPDIR", tmp)
                .env("CLAUDE_CODE_TMPDIR", tmp)
                .env("XDG_RUNTIME_DIR", tmp);
        }
        let child = cmd.spawn().map_err(|e| {
            LaunchError::Other(Error::Executor(format!(
                "cannot start {}: {e}",
                cfg.bin.display()
            )))
        })?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        tracing::info!(session = %spec.session_id, pid = ?pgid, resume = launch.resume.is_some(), "started Claude Code");
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            session_id: spec.session_id.clone(),
            sink,
            gate,
            stdin: Mutex::new(Some(stdin_tx)),
            mapper: Mutex::new(CliEventMapper::new()),
            control: Mutex::new(HashMap::new()),
            stderr: Mutex::new(VecDeque::with_capacity(STDERR_TAIL)),
            running: AtomicBool::new(true),
            initialized: AtomicBool::new(false),
            early: Mutex::new(Some(Vec::new())),
            stopping: AtomicBool::new(false),
            turn_running: AtomicBool::new(false),
            awaiting: AtomicU64::new(0),
            wake: Notify::new(),
            next_request: AtomicU64::new(1),
            pgid,
            config: cfg.clone(),
        });
        let (done_tx, done) = watch::channel(false);
        spawn_io(child, shared.clone(), stdin_rx, done_tx).map_err(LaunchError::Other)?;

        let init_id = shared.request_id("init");
        if let Err(e) = shared
            .control(
                CliInput::Initialize {
                    request_id: init_id.clone(),
                },
                init_id,
                cfg.init_timeout,
            )
            .await
        {
            shared.stopping.store(true, Ordering::Release);
            shared.signal_group(nix::sys::signal::Signal::SIGKILL);
            // Wait for the end, so that the stderr tail is complete.
            let mut done = done.clone();
            let _ = tokio::time::timeout(cfg.stop_grace, done.wait_for(|d| *d)).await;
            let stderr = shared.stderr_tail();
            let early = shared
                .early
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default();
            if !early.is_empty() {
                tracing::debug!(session = %spec.session_id, events = ?early, "dropped the output of a failed start");
            }
            let why = match e {
                Error::Executor(m) => m,
                other => other.to_string(),
            };
            let error = Error::Executor(format!(
                "the Claude Code CLI did not initialize: {why}; stderr: {stderr}"
            ));
            return Err(
                if launch.resume.is_some() && stderr.contains(NO_CONVERSATION) {
                    LaunchError::NoConversation(error)
                } else {
                    LaunchError::Other(error)
                },
            );
        }
        shared.initialized.store(true, Ordering::Release);
        let early = shared
            .early
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        for event in early {
            shared.emit(event).await;
        }
        Ok(ClaudeSession { shared, done })
    }
}

#[async_trait]
impl Executor for ClaudeExecutor {
    async fn check(&self) -> Result<()> {
        self.check_version().await.map(|_| ())
    }

    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        self.check_version().await?;
        let session = match self
            .launch(&spec, spec.resume.clone(), gate.clone(), sink.clone())
            .await
        {
            Ok(s) => s,
            // The CLI never saved the session (it was killed early in its
            // first turn): refusing would refuse every later message too.
            // Start afresh, and say that the earlier context is gone.
            Err(LaunchError::NoConversation(e)) => {
                tracing::warn!(session = %spec.session_id, error = %e, "resume impossible; starting a new CLI session");
                let notice = serde_json::json!({
                    "type": "cli.resume_failed",
                    "executor_session_id": spec.resume,
                    "message": "The Claude Code CLI has no saved transcript of this session \
                                (it stopped before saving it), so a new CLI session was \
                                started: the model does not see the earlier conversation.",
                });
                if let Err(e) = sink.emit(Event::Unknown(notice)).await {
                    tracing::error!(session = %spec.session_id, error = %e, "event not recorded");
                }
                self.launch(&spec, None, gate, sink).await?
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(prompt) = &spec.prompt {
            session.send_message(prompt).await?;
        }
        Ok(Box::new(session))
    }
}

fn spawn_io(
    mut child: Child,
    shared: Arc<Shared>,
    mut stdin_rx: mpsc::UnboundedReceiver<CliInput>,
    done_tx: watch::Sender<bool>,
) -> Result<()> {
    let missing = || Error::Executor("the CLI's pipes are missing".into());
    let mut stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let mut stderr = child.stderr.take().ok_or_else(missing)?;
    let watchdog = spawn_watchdog(&stdin, &shared);

    tokio::spawn(async move {
        while let Some(input) = stdin_rx.recv().await {
            // `to_line` ends with the newline.
            let line = input.to_line();
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        // The watchdog holds the CLI's stdin too: it goes first (killed,
        // it kills nothing), so that dropping stdin tells the CLI to finish.
        if let Some(mut w) = watchdog {
            let _ = w.kill().await;
        }
        drop(stdin);
    });

    let err_shared = shared.clone();
    let err_reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut tail = err_shared.stderr.lock().unwrap_or_else(|p| p.into_inner());
            tail.extend(&buf[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
    });

    let reader = tokio::spawn(read_stdout(shared.clone(), stdout));

    // The waiter owns the child, and with it the process's lifetime.
    tokio::spawn(async move {
        let status = child.wait().await;
        // Nothing more can be written to it: a message sent from now on
        // fails instead of vanishing into the pipe.
        shared.close_stdin();
        // Let the readers drain what the process wrote before it died: the
        // error below carries the end of its stderr.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = reader.await;
            let _ = err_reader.await;
        })
        .await;
        shared.running.store(false, Ordering::Release);
        shared.turn_running.store(false, Ordering::Release);
        // Nobody will answer control requests now.
        shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        withdraw_all(&shared, "the Claude Code process ended").await;
        // A process we stopped (whatever its status: closing stdin after a
        // failed turn exits 1, SIGTERM exits 143) is no news, nor is one
        // whose failed start `launch` reports itself.
        let news =
            shared.initialized.load(Ordering::Acquire) && !shared.stopping.load(Ordering::Acquire);
        let (outcome, code) = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(c), _) => (
                        format!("the Claude Code process exited with status {c}"),
                        Some(c),
                    ),
                    (None, Some(sig)) => (
                        format!("the Claude Code process was killed by signal {sig}"),
                        Some(128 + sig),
                    ),
                    _ => ("the Claude Code process ended".to_owned(), None),
                }
            }
            Err(e) => (
                format!("cannot wait for the Claude Code process: {e}"),
                None,
            ),
        };
        if news {
            shared
                .emit_error(outcome.clone(), "executor_exited", code)
                .await;
        }
        tracing::info!(session = %shared.session_id, outcome, "Claude Code process ended");
        let _ = done_tx.send(true);
    });
    Ok(())
}

/// A process that SIGKILLs the CLI's process group if the gateway dies
/// without stopping it (SIGKILL, crash): a shell reading a pipe only the
/// gateway writes to, which kills the group when the pipe closes. It also
/// holds the CLI's stdin, so the CLI does not see it close first: a CLI
/// whose stdin closes finishes its turn on its own, denied every tool
/// call, calling the model again and writing to the transcript that the
/// next gateway resumes. Killed itself before the gateway closes stdin.
/// Without `/bin/sh` (or a process group) there is none, and a warning.
fn spawn_watchdog(stdin: &tokio::process::ChildStdin, shared: &Shared) -> Option<Child> {
    use std::os::fd::AsFd;
    let pgid = shared.pgid?;
    let spawned = stdin.as_fd().try_clone_to_owned().and_then(|held| {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"read -r _ || kill -s KILL -- "-$1""#)
            .arg("duraclaw-cli-watchdog")
            .arg(pgid.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::from(held))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
    });
    match spawned {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!(session = %shared.session_id, error = %e, "no watchdog for the Claude Code process: it would outlive a crashed gateway");
            None
        }
    }
}

async fn withdraw_all(shared: &Arc<Shared>, why: &str) {
    let pending: Vec<String> = {
        let mapper = shared.mapper.lock().unwrap_or_else(|p| p.into_inner());
        mapper.pending().keys().cloned().collect()
    };
    for request_id in pending {
        let _ = shared.gate.cancel(&request_id, why).await;
    }
}

/// The longest stdout line read whole; longer ones are skipped and reported.
const MAX_LINE_BYTES: usize = 8 * MAX_FRAME_BYTES;

/// One line of at most `max` bytes: `Ok(Some(Ok(line)))`, or
/// `Ok(Some(Err(len)))` for a longer line (consumed and dropped), or
/// `Ok(None)` at the end. Memory stays bounded whatever the CLI writes.
async fn next_line_bounded<R>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Option<std::result::Result<String, usize>>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut buf = Vec::new();
    let mut len = 0usize;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match len {
                0 => None,
                n if n > max => Some(Err(n)),
                _ => Some(Ok(String::from_utf8_lossy(&buf).into_owned())),
            });
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        len += take;
        if len <= max {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf = Vec::new();
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(if len > max {
                Err(len)
            } else {
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }));
        }
    }
}

/// Makes an event fit in one frame: a huge tool result is cut with a note,
/// anything else too large becomes an error event saying so.
fn fit_to_frame(event: Event) -> Event {
    let size = match event.to_json() {
        Ok(j) => j.len(),
        Err(_) => return event,
    };
    if size <= MAX_EVENT_BYTES {
        return event;
    }
    match event {
        Event::ToolResult(mut r) => {
            let text = match &r.content {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let keep = MAX_EVENT_BYTES / 2;
            let mut cut = keep.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            r.content = Value::String(format!(
                "{}\n… [{} more bytes not shown: the result was larger than one frame]",
                &text[..cut],
                text.len() - cut
            ));
            Event::ToolResult(r)
        }
        other => Event::Error(ErrorEvent {
            message: format!(
                "a `{}` event of {size} bytes was larger than the {MAX_EVENT_BYTES}-byte limit and was not recorded",
                other.type_name()
            ),
            code: Some("event_too_large".into()),
            ..ErrorEvent::default()
        }),
    }
}

/// The next stdout line, or `None` when the CLI stayed silent for
/// `idle_timeout` while [`Shared::idle_matters`].
///
/// Whether the silence matters is looked at again whenever it may change
/// (a turn starts, a question is decided) while the read waits: a read
/// that began between turns, or while a human was deciding, must still time
/// out if the CLI then says nothing. The read itself is never cancelled
/// (a cancelled read would lose a partial line), except to give up.
async fn next_line_watched<R>(
    shared: &Shared,
    reader: &mut R,
) -> Option<std::io::Result<Option<std::result::Result<String, usize>>>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let read = next_line_bounded(reader, MAX_LINE_BYTES);
    tokio::pin!(read);
    let mut since = tokio::time::Instant::now();
    loop {
        let idle = shared.idle_matters();
        tokio::select! {
            r = &mut read => return Some(r),
            () = shared.wake.notified() => since = tokio::time::Instant::now(),
            () = tokio::time::sleep_until(since + shared.config.idle_timeout), if idle => return None,
        }
    }
}

/// `d` for a message: whole seconds, or milliseconds below that.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

async fn read_stdout(shared: Arc<Shared>, stdout: tokio::process::ChildStdout) {
    let mut reader = BufReader::new(stdout);
    let mut garbage = 0u32;
    loop {
        let Some(next) = next_line_watched(&shared, &mut reader).await else {
            shared
                .emit_error(
                    format!(
                        "the Claude Code CLI wrote nothing for {} during a turn; it was stopped",
                        seconds(shared.config.idle_timeout)
                    ),
                    "executor_hung",
                    None,
                )
                .await;
            shared.stopping.store(true, Ordering::Release);
            shared.signal_group(nix::sys::signal::Signal::SIGKILL);
            return;
        };
        let line = match next {
            Ok(Some(Ok(l))) => l,
            Ok(Some(Err(len))) => {
                shared
                    .emit_error(
                        format!("the Claude Code CLI wrote a line of {len} bytes, over the {MAX_LINE_BYTES}-byte limit; it was skipped"),
                        "executor_line_too_long",
                        None,
                    )
                    .await;
                continue;
            }
            Ok(None) | Err(_) => return,
        };
        if line.trim().is_empty() {
            continue;
        }
        let mapped = {
            let mut mapper = shared.mapper.lock().unwrap_or_else(|p| p.into_inner());
            mapper.feed_line(&line)
        };
        let mapped = match mapped {
            Ok(m) => {
                garbage = 0;
                m
            }
            Err(e) => {
                garbage += 1;
                shared
                    .emit_error(e.to_string(), "executor_garbage", None)
                    .await;
                if garbage >= MAX_GARBAGE_LINES {
                    shared
                        .emit_error(
                            format!("the Claude Code CLI wrote {garbage} lines that are not JSON in a row; it was stopped"),
                            "executor_garbage",
                            None,
                        )
                        .await;
                    shared.stopping.store(true, Ordering::Release);
                    shared.signal_group(nix::sys::signal::Signal::SIGKILL);
                    return;
                }
                continue;
            }
        };
        // Questions go to the gate before they are emitted; the rest of the
        // actions follow the events. A call allowed "for this session"
        // before is not asked again: a notice takes the question's place.
        let mut events = mapped.events;
        let mut actions = Vec::with_capacity(mapped.actions.len());
        for action in mapped.actions {
            actions.push(match action {
                CliAction::AskGate {
                    request_id,
                    question,
                    input,
                } => match standing_allow(&shared, &question).await {
                    Some(notice) => {
                        swap_question(&mut events, &question.question_id, notice);
                        shared
                            .mapper
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .answered(&request_id);
                        let allow = duraclaw_core::protocol::Decision::Allow {
                            updated_input: None,
                            remember: false,
                        };
                        Next::Act(CliAction::Send(CliInput::for_decision(
                            &request_id,
                            &input,
                            &allow,
                        )))
                    }
                    None => Next::Ask(register_ask(&shared, request_id, question, input).await),
                },
                other => Next::Act(other),
            });
        }
        for event in events {
            if matches!(event, Event::Result(_)) {
                shared.turn_running.store(false, Ordering::Release);
            }
            shared.emit(fit_to_frame(event)).await;
        }
        for action in actions {
            match action {
                Next::Act(action) => act(&shared, action).await,
                Next::Ask(ask) => spawn_ask(&shared, ask),
            }
        }
    }
}

async fn act(shared: &Arc<Shared>, action: CliAction) {
    match action {
        CliAction::Send(input) => {
            let _ = shared.send(input);
        }
        CliAction::Response { request_id, result } => {
            let waiter = shared
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&request_id);
            if let Some(w) = waiter {
                let _ = w.send(result);
            }
        }
        CliAction::AskGate {
            request_id,
            question,
            input,
        } => {
            let ask = register_ask(shared, request_id, question, input).await;
            spawn_ask(shared, ask);
        }
        CliAction::Withdraw { request_id, .. } => {
            // The waiting task logs the resolution when the cancel wins.
            let why = if shared.stopping.load(Ordering::Acquire) {
                STOPPED
            } else {
                "the agent withdrew the request"
            };
            let _ = shared.gate.cancel(&request_id, why).await;
        }
    }
}

/// The `auto_allowed` notice to log instead of `question`, when the gate
/// holds an "allow for this session" that answers it.
async fn standing_allow(shared: &Arc<Shared>, question: &UserQuestion) -> Option<Event> {
    let QuestionKind::Permission { tool_name, .. } = &question.kind else {
        return None;
    };
    let request = ApprovalRequest {
        session_id: shared.session_id.clone(),
        question: question.clone(),
        asked_at_ms: now_ms(),
    };
    match shared.gate.standing_allow(&request).await {
        Ok(found) => found
            .map(|allow| Event::Notice(allow.notice(tool_name, question.tool_use_id.as_deref()))),
        Err(e) => {
            // Asking a human is the safe way out.
            tracing::warn!(session = %shared.session_id, error = %e, "standing allows unreadable; asking");
            None
        }
    }
}

/// Replaces the `user_question` `question_id` in `events` with `with`.
fn swap_question(events: &mut [Event], question_id: &str, with: Event) {
    if let Some(slot) = events
        .iter_mut()
        .find(|e| matches!(e, Event::UserQuestion(q) if q.question_id == question_id))
    {
        *slot = with;
    }
}

/// What to do after a line's events are emitted.
enum Next {
    Act(CliAction),
    Ask(Ask),
}

/// A `can_use_tool` question the gate already knows about, waiting for its
/// decision.
struct Ask {
    request_id: String,
    question_id: String,
    input: Value,
    /// The gate's answer if it decided at once (e.g. a policy rule).
    first: Option<Result<Resolution>>,
    decision: BoxFuture<'static, Result<Resolution>>,
}

/// Hands `question` to the gate and polls the request once, so that the gate
/// holds it (the gates register a request before they first wait) before
/// the `user_question` event makes it visible: an answer sent as soon as
/// the question is seen must find it.
async fn register_ask(
    shared: &Arc<Shared>,
    request_id: String,
    question: UserQuestion,
    input: Value,
) -> Ask {
    shared.awaiting.fetch_add(1, Ordering::AcqRel);
    let gate = shared.gate.clone();
    let question_id = question.question_id.clone();
    let request = ApprovalRequest {
        session_id: shared.session_id.clone(),
        question,
        asked_at_ms: now_ms(),
    };
    let mut decision: BoxFuture<'static, Result<Resolution>> =
        Box::pin(async move { gate.request(request).await });
    let first = match futures::poll!(decision.as_mut()) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    };
    Ask {
        request_id,
        question_id,
        input,
        first,
        decision,
    }
}

/// Waits for the gate's decision, logs it, and answers the CLI (unless it
/// withdrew the request meanwhile). Call after the question was emitted.
fn spawn_ask(shared: &Arc<Shared>, ask: Ask) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let Ask {
            request_id,
            question_id,
            input,
            first,
            decision,
        } = ask;
        let resolution = match first {
            Some(r) => r,
            None => decision.await,
        };
        shared.awaiting.fetch_sub(1, Ordering::AcqRel);
        shared.wake.notify_one();
        let still_pending = shared
            .mapper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answered(&request_id)
            .is_some();
        match resolution {
            Ok(r) => {
                shared.emit(resolution_event(&question_id, &r)).await;
                // A withdrawn request needs no answer: the CLI ignores late
                // ones.
                if still_pending {
                    let _ = shared.send(CliInput::for_decision(&request_id, &input, &r.decision));
                }
            }
            Err(e) => {
                tracing::warn!(session = %shared.session_id, error = %e, "approval failed");
                if still_pending {
                    let _ = shared.send(CliInput::Deny {
                        request_id,
                        message: format!("The approval could not be obtained: {e}"),
                        interrupt: false,
                    });
                }
            }
        }
    });
}

#[async_trait]
impl ExecutorSession for ClaudeSession {
    async fn send_message(&self, text: &str) -> Result<()> {
        self.shared.turn_running.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        self.shared.send(CliInput::UserTurn {
            text: text.to_owned(),
        })
    }

    async fn interrupt(&self) -> Result<()> {
        let id = self.shared.request_id("interrupt");
        let result = self
            .shared
            .control(
                CliInput::Interrupt {
                    request_id: id.clone(),
                },
                id,
                self.shared.config.interrupt_timeout,
            )
            .await;
        if let Err(e) = &result {
            // A CLI that cannot be interrupted is stuck: stop it; the
            // session resumes on the next message.
            tracing::warn!(session = %self.shared.session_id, error = %e, "interrupt failed; stopping the CLI");
            self.shared
                .emit_error(
                    format!("the Claude Code CLI did not take the interrupt ({e}); it was stopped"),
                    "executor_hung",
                    None,
                )
                .await;
            self.shared.stopping.store(true, Ordering::Release);
            self.shared.signal_group(nix::sys::signal::Signal::SIGKILL);
        }
        result.map(|_| ())
    }

    async fn shutdown(&self) -> Result<()> {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::Release);
        if !shared.running.load(Ordering::Acquire) {
            return Ok(());
        }
        let grace = shared.config.stop_grace;
        // A turn in progress is interrupted first: with stdin closed the CLI
        // would finish it on its own, calling the model again (and asking
        // about more tools) after a pending question was withdrawn. The
        // interrupt withdraws pending questions and ends the turn at once.
        if shared.turn_running.load(Ordering::Acquire) {
            let id = shared.request_id("interrupt");
            if let Err(e) = shared
                .control(
                    CliInput::Interrupt {
                        request_id: id.clone(),
                    },
                    id,
                    grace.min(shared.config.interrupt_timeout),
                )
                .await
            {
                tracing::info!(session = %shared.session_id, error = %e, "no interrupt before the stop");
            }
        }
        withdraw_all(shared, STOPPED).await;
        let mut done = self.done.clone();
        // Close stdin (the CLI finishes), then SIGTERM, then SIGKILL, each
        // after a grace period.
        shared.close_stdin();
        for signal in [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGKILL,
        ] {
            if tokio::time::timeout(grace, done.wait_for(|d| *d))
                .await
                .is_ok()
            {
                return Ok(());
            }
            shared.signal_group(signal);
        }
        let _ = tokio::time::timeout(grace, done.wait_for(|d| *d)).await;
        Ok(())
    }

    async fn kill(&self) -> Result<()> {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::Release);
        shared.signal_group(nix::sys::signal::Signal::SIGKILL);
        withdraw_all(shared, STOPPED).await;
        shared.close_stdin();
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(shared.config.stop_grace, done.wait_for(|d| *d)).await;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let data = format!("short\n{}\nafter\nlast", "x".repeat(100));
        let mut r = BufReader::with_capacity(7, data.as_bytes());
        assert_eq!(
            next_line_bounded(&mut r, 50).await.unwrap(),
            Some(Ok("short".into()))
        );
        assert_eq!(next_line_bounded(&mut r, 50).await.unwrap(), Some(Err(100)));
        assert_eq!(
            next_line_bounded(&mut r, 50).await.unwrap(),
            Some(Ok("after".into()))
        );
        assert_eq!(
            next_line_bounded(&mut r, 50).await.unwrap(),
            Some(Ok("last".into()))
        );
        assert_eq!(next_line_bounded(&mut r, 50).await.unwrap(), None);
    }

    #[test]
    fn huge_tool_results_are_cut_to_fit() {
        let big = Event::ToolResult(duraclaw_core::protocol::ToolResult {
            tool_use_id: "t".into(),
            content: Value::String("é".repeat(MAX_FRAME_BYTES)),
            is_error: false,
        });
        let fitted = fit_to_frame(big);
        let json = fitted.to_json().unwrap();
        assert!(json.len() <= MAX_EVENT_BYTES);
        assert!(json.contains("more bytes not shown"));
        let small = Event::Error(ErrorEvent {
            message: "x".into(),
            ..ErrorEvent::default()
        });
        assert_eq!(fit_to_frame(small.clone()), small);
    }
}
