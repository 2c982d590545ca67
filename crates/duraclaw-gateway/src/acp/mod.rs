//! Agents that speak the Agent Client Protocol (ACP) as an [`Executor`].
//!
//! One agent process per session, in the session's worktree, in its own
//! process group, with a confined environment; JSON-RPC over its stdio
//! (protocol v1). Its `session/update`s become our events, its
//! `session/request_permission`s questions through the approval gate, and
//! it may read and write text files inside the worktree and run terminals
//! there. A tool call the agent says runs with no decision allowing it
//! ends the session (`unapproved_tool`). A process that exits, hangs or
//! writes garbage becomes an `error` event.
//!
//! The `agent-client-protocol` crate's types stay inside this module.

mod approvals;
mod client;
mod io;
mod map;
mod rpc;
mod setup;
mod turns;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_client_protocol::v1::schema::{
    CreateElicitationRequest, ElicitationMode, ElicitationPropertySchema, MultiSelectItems,
    PermissionOption, PermissionOptionKind, RequestPermissionRequest, SessionNotification,
};
use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::approval::{ApprovalRequest, DynApprovalGate};
use duraclaw_core::backend::guard::UnapprovedTool;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::error::Error;
use duraclaw_core::executor::{
    DynEventSink, Executor, ExecutorSession, StartSpec, ask, ask_unless,
};
use duraclaw_core::protocol::{
    AskOption, AskQuestion, Decision, ErrorEvent, Event, Notice, QuestionKind, SessionInit,
    UserQuestion,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{Notify, mpsc, watch};

use crate::claude::cli::launch::filtered_env;
use crate::claude::process::{MAX_LINE_BYTES, fit_to_frame, next_line_bounded};
use map::{Call, Mapper, Out, Seen};
use rpc::{Incoming, METHOD_NOT_FOUND, Peer, RpcError};
use setup::{set_mode, set_model, setup};
use turns::{interrupt_turn, play_turns};

/// The notice code of a resume that could not resume: the agent cannot
/// load its earlier session, so a fresh one started.
pub const NOTICE_AGENT_RESUMED_FRESH: &str = "agent_resumed_fresh";

/// An agent the gateway can run: its command, and what of the gateway's
/// environment reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpAgent {
    /// Its name (`codex`, `gemini`, …).
    pub name: String,
    /// The program: a path, or a name looked up on `PATH`.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Names of the gateway's variables passed through (an API key, say),
    /// beyond the few every process needs (`PATH`, `HOME`, locale, …).
    #[serde(default)]
    pub env_pass: Vec<String>,
    /// Variables set for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The bounds an [`AcpExecutor`] keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpLimits {
    /// How long a request of ours (initialize, new or load session, set
    /// mode) may wait for its answer.
    pub request_timeout: Duration,
    /// How long the agent may say nothing while a turn runs and no
    /// question waits for a person; then it counts as hung and is killed.
    pub idle_timeout: Duration,
    /// How long a stopped agent gets to exit before it is signalled.
    pub stop_grace: Duration,
    /// How long a permission request for a call the agent has not yet
    /// announced waits for the announcement (claude-agent-acp may ask
    /// first), so the text before the call is shown before the question.
    pub announce_wait: Duration,
}

impl Default for AcpLimits {
    fn default() -> Self {
        AcpLimits {
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(15 * 60),
            stop_grace: Duration::from_secs(3),
            announce_wait: Duration::from_millis(500),
        }
    }
}

/// Starts sessions of one ACP agent.
#[derive(Debug, Clone)]
pub struct AcpExecutor {
    agent: Arc<AcpAgent>,
    limits: AcpLimits,
}

impl AcpExecutor {
    /// An executor running `agent`.
    pub fn new(agent: AcpAgent) -> AcpExecutor {
        AcpExecutor {
            agent: Arc::new(agent),
            limits: AcpLimits::default(),
        }
    }

    /// The same executor with other bounds.
    #[must_use]
    pub fn with_limits(mut self, limits: AcpLimits) -> AcpExecutor {
        self.limits = limits;
        self
    }

    /// The agent it runs.
    pub fn agent(&self) -> &AcpAgent {
        &self.agent
    }
}

/// Variables every process needs; the rest only when the agent names them.
const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
];

/// The agent's environment: the base list (`BASE_ENV`) and its `env_pass` names from
/// `vars`, then its `env`; never the gateway's secret or `CLAUDECODE*`
/// (the Claude executor's filter), even when named.
pub fn agent_env(
    agent: &AcpAgent,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let passed: Vec<(OsString, OsString)> = vars
        .into_iter()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| BASE_ENV.contains(&k) || agent.env_pass.iter().any(|p| p == k))
        })
        .collect();
    let set = agent
        .env
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    filtered_env(passed.into_iter().chain(set), false)
}

/// Where `command` is: itself when it names a path, else the first
/// executable of that name on `path`.
fn find_command(command: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return runnable(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(command))
        .find(|p| runnable(p))
}

/// Why a stop withdraws questions.
const STOPPED: &str = "the session was stopped";
/// Why an interrupt withdraws questions.
const INTERRUPTED: &str = "the turn was interrupted";
/// Bytes of stderr kept for error reports.
const STDERR_TAIL: usize = 4096;
/// Consecutive lines that are no JSON-RPC after which the agent is killed.
const MAX_GARBAGE_LINES: u32 = 20;

struct Shared {
    session_id: String,
    agent: Arc<AcpAgent>,
    limits: AcpLimits,
    worktree: PathBuf,
    sink: DynEventSink,
    gate: DynApprovalGate,
    rpc: Peer,
    acp_session: Mutex<String>,
    map: Mutex<Mapper>,
    nonce: String,
    next_question: AtomicU64,
    terminals: client::Terminals,
    stderr: Mutex<VecDeque<u8>>,
    pgid: Option<i32>,
    running: AtomicBool,
    /// The session is set up: from now on an exit is news.
    initialized: AtomicBool,
    stopping: AtomicBool,
    /// A tool ran unapproved: the session is over for good.
    ended: AtomicBool,
    /// `session/load` replays history: not ours to log again nor to judge.
    /// Set from the load until the agent is quiet before the first prompt
    /// (some agents replay after the load's answer).
    replaying: AtomicBool,
    turn_running: AtomicBool,
    interrupted: AtomicBool,
    /// The last turn an interrupt withdrew (0: none): a permission request
    /// of that turn not yet asked is answered `cancelled` unasked.
    withdrawn_turn: AtomicU64,
    /// Questions and requests waiting on someone other than the agent.
    awaiting: AtomicU64,
    last_activity: Mutex<Instant>,
    /// Open questions by id.
    open_questions: Mutex<HashSet<String>>,
    /// Modes the agent offers.
    modes: Mutex<Vec<String>>,
    /// The agent's model choice: its config option id and values.
    model_option: Mutex<Option<(String, Vec<String>)>>,
    /// Woken when `awaiting` drops.
    settled: Notify,
    /// Woken when the agent's updates were mapped (a call may be announced).
    announced: Notify,
    /// Turns started so far.
    turns_played: AtomicU64,
    /// Woken when a turn ends.
    turn_over: Notify,
    /// Kills the agent's group if the gateway dies without stopping it.
    guard: Mutex<Option<tokio::process::Child>>,
}

impl Shared {
    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn acp_session(&self) -> String {
        self.acp_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn emit(&self, event: Event) {
        if let Err(e) = self.sink.emit(fit_to_frame(event)).await {
            tracing::error!(session = %self.session_id, error = %e, "event not recorded");
        }
    }

    fn stderr_tail(&self) -> String {
        let buf = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = buf.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_owned()
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

    fn signal_group(&self, signal: nix::sys::signal::Signal) {
        if let Some(pgid) = self.pgid {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), signal);
        }
    }

    /// Stops the agent at once; its end is no news.
    fn kill_now(&self) {
        self.stopping.store(true, Ordering::Release);
        self.signal_group(nix::sys::signal::Signal::SIGKILL);
        self.terminals.kill_all();
    }

    fn question_id(&self) -> String {
        format!(
            "{}-q{}",
            self.nonce,
            self.next_question.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn waiting(&self) {
        self.awaiting.fetch_add(1, Ordering::AcqRel);
    }

    fn waited(&self) {
        self.awaiting.fetch_sub(1, Ordering::AcqRel);
        self.touch();
        self.settled.notify_waiters();
    }

    /// Withdraws every open question; whoever waits on each logs it.
    async fn withdraw_all(&self, why: &str) {
        let open: Vec<String> = self
            .open_questions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for id in open {
            let _ = self.gate.cancel(&id, why).await;
        }
    }

    /// Waits (bounded) until no question waits.
    async fn settle(&self, bound: Duration) {
        let wait = async {
            loop {
                let notified = self.settled.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.awaiting.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(bound, wait).await;
    }
}

/// A running session of an ACP agent.
pub struct AcpSession {
    shared: Arc<Shared>,
    turns: Mutex<Option<mpsc::UnboundedSender<String>>>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for AcpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpSession")
            .field("session_id", &self.shared.session_id)
            .field("agent", &self.shared.agent.name)
            .field("running", &self.shared.running.load(Ordering::Acquire))
            .finish()
    }
}

fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "acp{:x}{:x}{}",
        nanos,
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[async_trait]
impl Executor for AcpExecutor {
    async fn check(&self) -> Result<()> {
        let path = std::env::var_os("PATH");
        match find_command(&self.agent.command, path.as_deref()) {
            Some(_) => Ok(()),
            None => Err(Error::ExecutorUnsupported(format!(
                "agent `{}`: its command `{}` is not found or not executable",
                self.agent.name, self.agent.command
            ))),
        }
    }

    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        self.check().await?;
        let worktree = std::fs::canonicalize(&spec.worktree)
            .map_err(|e| Error::executor_from(format_args!("the worktree {}", spec.worktree), e))?;
        let env = agent_env(&self.agent, std::env::vars_os());
        let mut cmd = Command::new(&self.agent.command);
        cmd.args(&self.agent.args)
            .current_dir(&worktree)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            Error::executor_from(
                format_args!(
                    "cannot start agent `{}` ({})",
                    self.agent.name, self.agent.command
                ),
                e,
            )
        })?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        tracing::info!(session = %spec.session_id, agent = %self.agent.name, pid = ?pgid, resume = spec.resume.is_some(), "started an ACP agent");
        let missing = || Error::executor("the agent's stdio was not captured");
        let mut stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let mut stderr = child.stderr.take().ok_or_else(missing)?;
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let nonce = nonce();
        let shared = Arc::new(Shared {
            session_id: spec.session_id.clone(),
            agent: self.agent.clone(),
            limits: self.limits.clone(),
            worktree: worktree.clone(),
            sink,
            gate,
            rpc: Peer::new(out_tx),
            acp_session: Mutex::new(String::new()),
            map: Mutex::new(Mapper::new(nonce.clone())),
            nonce,
            next_question: AtomicU64::new(1),
            terminals: client::Terminals::new(worktree.clone(), env, pgid),
            stderr: Mutex::new(VecDeque::with_capacity(STDERR_TAIL)),
            pgid,
            running: AtomicBool::new(true),
            initialized: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            replaying: AtomicBool::new(false),
            turn_running: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            withdrawn_turn: AtomicU64::new(0),
            awaiting: AtomicU64::new(0),
            last_activity: Mutex::new(Instant::now()),
            open_questions: Mutex::default(),
            modes: Mutex::default(),
            model_option: Mutex::default(),
            settled: Notify::new(),
            announced: Notify::new(),
            turns_played: AtomicU64::new(0),
            turn_over: Notify::new(),
            guard: Mutex::new(pgid.and_then(|g| spawn_group_guard(g, &spec.session_id))),
        });

        tokio::spawn(async move {
            while let Some(line) = out_rx.recv().await {
                let line = line + "\n";
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
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
        let reader = tokio::spawn(io::read_stdout(shared.clone(), stdout));
        let (done_tx, done) = watch::channel(false);
        let waiter_shared = shared.clone();
        tokio::spawn(async move {
            let shared = waiter_shared;
            let status = child.wait().await;
            shared.rpc.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = reader.await;
                let _ = err_reader.await;
            })
            .await;
            shared.running.store(false, Ordering::Release);
            // A request still waiting for its call's announcement gives up.
            shared.announced.notify_waiters();
            // Killed before its pipe closes, so that it kills nothing.
            let guard = shared
                .guard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(mut g) = guard {
                let _ = g.kill().await;
            }
            shared.terminals.kill_all();
            shared.withdraw_all("the agent's process ended").await;
            let news = shared.initialized.load(Ordering::Acquire)
                && !shared.stopping.load(Ordering::Acquire);
            let (outcome, code) = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (s.code(), s.signal()) {
                        (Some(c), _) => (
                            format!("the agent's process exited with status {c}"),
                            Some(c),
                        ),
                        (None, Some(sig)) => (
                            format!("the agent's process was killed by signal {sig}"),
                            Some(128 + sig),
                        ),
                        _ => ("the agent's process ended".to_owned(), None),
                    }
                }
                Err(e) => (format!("cannot wait for the agent's process: {e}"), None),
            };
            if news {
                shared
                    .emit_error(outcome.clone(), "executor_exited", code)
                    .await;
            }
            shared.turn_running.store(false, Ordering::Release);
            shared.turn_over.notify_waiters();
            tracing::info!(session = %shared.session_id, agent = %shared.agent.name, outcome, "ACP agent ended");
            let _ = done_tx.send(true);
        });
        tokio::spawn(io::watchdog(shared.clone()));

        let fresh_notice = match setup(&shared, &spec).await {
            Ok(n) => n,
            Err(e) => {
                shared.kill_now();
                let mut d = done.clone();
                let _ = tokio::time::timeout(
                    self.limits.stop_grace + Duration::from_secs(5),
                    d.wait_for(|d| *d),
                )
                .await;
                let stderr = shared.stderr_tail();
                let why = match e {
                    Error::Executor { message, .. } => message,
                    other => other.to_string(),
                };
                if spec.resume.is_some() {
                    // Started again for a session with a log: the log says
                    // why it stopped, not only the refused command.
                    shared
                        .emit_error(
                            format!(
                                "agent `{}` could not take up the session again: {why}",
                                self.agent.name
                            ),
                            "executor_exited",
                            None,
                        )
                        .await;
                }
                return Err(Error::executor(format!(
                    "agent `{}` did not start a session: {why}; stderr: {stderr}",
                    self.agent.name
                )));
            }
        };
        shared.initialized.store(true, Ordering::Release);
        let mode = shared.map.lock().unwrap_or_else(|p| p.into_inner()).mode();
        shared
            .emit(Event::SessionInit(SessionInit {
                executor_session_id: Some(shared.acp_session()),
                model: None,
                tools: Vec::new(),
                cwd: Some(worktree.display().to_string()),
                permission_mode: mode,
                executor_version: fresh_notice.1.clone(),
            }))
            .await;
        if let Some(notice) = fresh_notice.0 {
            shared.emit(Event::Notice(notice)).await;
        }
        let (turn_tx, turn_rx) = mpsc::unbounded_channel();
        tokio::spawn(play_turns(shared.clone(), turn_rx));
        let session = AcpSession {
            shared,
            turns: Mutex::new(Some(turn_tx)),
            done,
        };
        if let Some(prompt) = &spec.prompt {
            session.send_message(prompt).await?;
        }
        Ok(Box::new(session))
    }
}

/// A shell that SIGKILLs process group `pgid` when the pipe only the
/// gateway holds closes: the gateway died (SIGKILL, crash) without stopping
/// the agent, whose terminals would run on. Without `/bin/sh`, none, and a
/// warning.
fn spawn_group_guard(pgid: i32, session: &str) -> Option<tokio::process::Child> {
    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"read -r _ || kill -s KILL -- "-$1""#)
        .arg("duraclaw-acp-guard")
        .arg(pgid.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    match spawned {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!(session, error = %e, "no guard for the agent's process group: it would outlive a crashed gateway");
            None
        }
    }
}

impl AcpSession {
    async fn wait_done(&self, bound: Duration) -> bool {
        let mut done = self.done.clone();
        tokio::time::timeout(bound, done.wait_for(|d| *d))
            .await
            .is_ok()
    }

    async fn stop(&self, at_once: bool) -> Result<()> {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::Release);
        // A request still waiting for its call's announcement gives up.
        shared.announced.notify_waiters();
        self.turns.lock().unwrap_or_else(|p| p.into_inner()).take();
        if *self.done.borrow() {
            return Ok(());
        }
        if at_once {
            shared.kill_now();
        }
        shared.withdraw_all(STOPPED).await;
        shared.terminals.kill_all();
        shared.settle(Duration::from_secs(5)).await;
        // Closing stdin asks the agent to finish.
        shared.rpc.close();
        let grace = shared.limits.stop_grace;
        if !self.wait_done(grace).await {
            shared.signal_group(nix::sys::signal::Signal::SIGTERM);
            if !self.wait_done(grace).await {
                shared.signal_group(nix::sys::signal::Signal::SIGKILL);
                if !self.wait_done(Duration::from_secs(10)).await {
                    return Err(Error::executor("the agent's process did not end"));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ExecutorSession for AcpSession {
    async fn send_message(&self, text: &str) -> Result<()> {
        let shared = &self.shared;
        if !self.is_running() || shared.stopping.load(Ordering::Acquire) {
            return Err(Error::executor(format!(
                "agent `{}`'s session has ended",
                shared.agent.name
            )));
        }
        let turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns
            .as_ref()
            .and_then(|t| t.send(text.to_owned()).ok())
            .ok_or_else(|| Error::executor("the session has ended"))
    }

    async fn interrupt(&self) -> Result<()> {
        interrupt_turn(&self.shared).await;
        Ok(())
    }

    async fn shutdown(&self) -> Result<()> {
        self.stop(false).await
    }

    async fn kill(&self) -> Result<()> {
        self.stop(true).await
    }

    async fn set_permission_mode(&self, mode: &str) -> Result<()> {
        let offered = self
            .shared
            .modes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&mode.to_owned());
        if !offered {
            return Err(Error::Invalid(format!(
                "agent `{}` offers no mode `{mode}`",
                self.shared.agent.name
            )));
        }
        set_mode(&self.shared, mode).await?;
        let mut notice = Notice::new(
            duraclaw_core::protocol::NOTICE_MODE_CHANGED,
            format!("The permission mode is now `{mode}`."),
        );
        notice.permission_mode = Some(mode.to_owned());
        self.shared.emit(Event::Notice(notice)).await;
        Ok(())
    }

    async fn set_model(&self, model: &str) -> Result<()> {
        let option = self
            .shared
            .model_option
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((config_id, values)) = option.filter(|(_, v)| v.iter().any(|m| m == model)) else {
            return Err(Error::Invalid(format!(
                "agent `{}` offers no model `{model}` to switch to",
                self.shared.agent.name
            )));
        };
        let _ = values;
        set_model(&self.shared, &config_id, model).await?;
        let mut notice = Notice::new(
            duraclaw_core::protocol::NOTICE_MODEL_CHANGED,
            format!("The model is now `{model}`."),
        );
        notice.model = Some(model.to_owned());
        self.shared.emit(Event::Notice(notice)).await;
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire) && !self.shared.ended.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::setup::{initialize_params, set_model_params};
    use super::turns::prompt_params;
    use super::*;

    /// What we send parses as the pinned crate's own messages.
    #[test]
    fn our_messages_are_the_crates() {
        use agent_client_protocol::v1::schema::{
            InitializeRequest, LoadSessionRequest, NewSessionRequest, PromptRequest,
            SetSessionConfigOptionRequest,
        };
        let init: InitializeRequest = serde_json::from_value(initialize_params()).unwrap();
        let caps = &init.client_capabilities;
        assert!(caps.fs.read_text_file && caps.fs.write_text_file && caps.terminal);
        assert!(caps.elicitation.as_ref().is_some_and(|e| e.form.is_some()));
        let prompt: PromptRequest = serde_json::from_value(prompt_params("s", "hi")).unwrap();
        assert_eq!(prompt.session_id.0.as_ref(), "s");
        assert_eq!(prompt.prompt.len(), 1);
        let new: NewSessionRequest =
            serde_json::from_value(json!({ "cwd": "/w", "mcpServers": [] })).unwrap();
        assert_eq!(new.cwd, PathBuf::from("/w"));
        let set: SetSessionConfigOptionRequest =
            serde_json::from_value(set_model_params("s", "model", "m2")).unwrap();
        assert_eq!(set.config_id.0.as_ref(), "model");
        let load: LoadSessionRequest =
            serde_json::from_value(json!({ "sessionId": "s", "cwd": "/w", "mcpServers": [] }))
                .unwrap();
        assert_eq!(load.session_id.0.as_ref(), "s");
    }

    /// The guard kills the agent's group once the pipe only the gateway
    /// holds closes, as when the gateway dies.
    #[tokio::test]
    async fn the_guard_kills_the_group_when_the_gateway_is_gone() {
        let mut agent = Command::new("sleep")
            .arg("300")
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pgid = i32::try_from(agent.id().unwrap()).unwrap();
        let mut guard = spawn_group_guard(pgid, "s").unwrap();
        // Still alive while the pipe is open.
        let early = tokio::time::timeout(Duration::from_millis(200), agent.wait()).await;
        assert!(early.is_err(), "killed too soon");
        drop(guard.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
            .await
            .expect("the group was killed")
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
    }

    #[test]
    fn the_environment_is_confined() {
        let agent = AcpAgent {
            name: "a".into(),
            command: "a".into(),
            args: vec![],
            env_pass: vec!["OPENAI_API_KEY".into(), "CC_GATEWAY_SECRET".into()],
            env: BTreeMap::from([("EXTRA".into(), "1".into())]),
        };
        let vars = [
            ("PATH", "/bin"),
            ("OPENAI_API_KEY", "k"),
            ("CC_GATEWAY_SECRET", "s"),
            ("CLAUDECODE", "1"),
            ("UNRELATED", "x"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env: Vec<String> = agent_env(&agent, vars)
            .into_iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        assert_eq!(env, ["PATH=/bin", "OPENAI_API_KEY=k", "EXTRA=1"]);
    }
}
