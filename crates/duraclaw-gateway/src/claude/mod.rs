//! The Claude Code CLI as an [`Executor`].
//!
//! One CLI process per session, in the session's worktree, speaking
//! stream-json with the control protocol on stdin/stdout (see [`cli`]).
//! Every tool call goes through the approval gate; the executor logs the
//! question and its resolution in stream order. A process that exits, is
//! killed, hangs or writes garbage becomes an `error` event with its exit
//! status and the tail of its stderr — never a hang. The CLI runs in its own
//! process group so that stopping a session stops the commands it started.

mod approvals;
pub mod cli;
mod config;
pub(crate) mod process;

pub use config::ClaudeConfig;

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::error::Error;
use duraclaw_core::executor::{DynEventSink, Executor, ExecutorSession, StartSpec};
use duraclaw_core::protocol::{ErrorEvent, Event};
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::cli::launch::filtered_env;
use crate::cli::{CliEventMapper, CliInput, LaunchSpec};
use approvals::{withdraw_all, withdraw_for_interrupt};
use config::VersionProbe;
use process::spawn_io;

/// Bytes of stderr kept for error reports.
const STDERR_TAIL: usize = 4096;
/// Why questions are withdrawn when the session is stopped.
const STOPPED: &str = "the session was stopped";
/// Events held back before `initialize` is answered (more are dropped).
const MAX_EARLY_EVENTS: usize = 64;
/// Consecutive non-JSON stdout lines after which the process is killed.
const MAX_GARBAGE_LINES: u32 = 50;

/// Starts executor sessions of the Claude Code CLI.
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
    /// Notified (all waiters) each time a question's resolution is logged.
    settled: Notify,
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
            .ok_or_else(|| Error::executor("the Claude Code process is not running"))
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
            Ok(Ok(Err(e))) => Err(Error::executor(format!("the CLI refused {id}: {e}"))),
            Ok(Err(_)) => Err(Error::executor("the Claude Code process exited")),
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

/// A running executor session: one Claude Code CLI process.
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
            fork_at: resume.as_ref().and(spec.fork_at.clone()),
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
            LaunchError::Other(Error::executor_from(
                format_args!("cannot start {}", cfg.bin.display()),
                e,
            ))
        })?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        tracing::info!(session = %spec.session_id, pid = ?pgid, resume = launch.resume.is_some(), "started Claude Code");
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            session_id: spec.session_id.clone(),
            sink,
            gate,
            stdin: Mutex::new(Some(stdin_tx)),
            mapper: Mutex::new(
                CliEventMapper::new()
                    .with_permission_mode(launch.permission_mode.as_deref().unwrap_or("default")),
            ),
            control: Mutex::new(HashMap::new()),
            stderr: Mutex::new(VecDeque::with_capacity(STDERR_TAIL)),
            running: AtomicBool::new(true),
            initialized: AtomicBool::new(false),
            early: Mutex::new(Some(Vec::new())),
            stopping: AtomicBool::new(false),
            turn_running: AtomicBool::new(false),
            awaiting: AtomicU64::new(0),
            wake: Notify::new(),
            settled: Notify::new(),
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
                Error::Executor { message, .. } => message,
                other => other.to_string(),
            };
            let error = Error::executor(format!(
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
        // Open questions are withdrawn, and logged, before the CLI hears of
        // the interrupt: the contract's order (a question's resolution
        // before its call's `tool_result`) holds whatever the CLI version.
        withdraw_for_interrupt(&self.shared, self.shared.config.interrupt_timeout).await;
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

    async fn set_permission_mode(&self, mode: &str) -> Result<()> {
        // The CLI reports the new mode (`system/status`); the mapper logs
        // it as a `mode_changed` notice.
        let id = self.shared.request_id("set-mode");
        let input = CliInput::SetPermissionMode {
            request_id: id.clone(),
            mode: mode.to_owned(),
        };
        self.shared
            .control(input, id, self.shared.config.interrupt_timeout)
            .await
            .map(|_| ())
    }

    async fn set_model(&self, model: &str) -> Result<()> {
        let id = self.shared.request_id("set-model");
        let input = CliInput::SetModel {
            request_id: id.clone(),
            model: model.to_owned(),
        };
        // The CLI checks the name (asking the API) and answers with the
        // model it now uses, which may be the alias resolved.
        let answer = self
            .shared
            .control(input, id, self.shared.config.interrupt_timeout)
            .await?;
        let now = answer
            .get("model")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(model)
            .to_owned();
        let mut notice = duraclaw_core::protocol::Notice::new(
            duraclaw_core::protocol::NOTICE_MODEL_CHANGED,
            format!("The model is now {now}."),
        );
        notice.model = Some(now);
        self.shared.emit(Event::Notice(notice)).await;
        Ok(())
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
