//! The gateway server: sessions, their durable outboxes, and the commands
//! that drive them.
//!
//! Every session has an outbox: its events appended to the gateway's own
//! SQLite store before they are sent, numbered by the store's seq, which
//! is the session's `gseq`. An orchestrator attaches with the highest gseq
//! it has persisted and gets everything after it, then live events, so a
//! dropped link or a gateway restart loses nothing and duplicates nothing.
//! Sessions keep running with no orchestrator connected.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duraclaw_core::Result;
use duraclaw_core::actor::SessionLog;
use duraclaw_core::approval::ApprovalGate;
use duraclaw_core::error::Error;
use duraclaw_core::executor::{DynExecutor, EventSink, ExecutorSession, StartSpec};
use duraclaw_core::guard::ToolGuard;
use duraclaw_core::protocol::{
    Command, CommandEnvelope, CommandResult, DecidedBy, Decision, ErrorEvent, Event, Notice,
    QuestionResolved, WireError, Worktree, encode_frame,
};
use duraclaw_core::state::SessionState;
use duraclaw_core::store::{
    AppendBatch, DynSessionDirectory, DynSessionStore, NewEvent, RecordedCommand, SessionMeta,
};
use tokio::sync::Mutex;

use crate::outbox::{OutboxSink, Unstarted, shows_work};
use crate::worktree::WorktreeIndex;
use duraclaw_approval::{AuditAction, AuditEntry, AuditLog, MemoryGate, TracingAudit, now_ms};

/// The owner recorded for sessions in the gateway's own store.
const GATEWAY_OWNER: &str = "gateway";

/// The most events a session's outbox may hold that the orchestrator has
/// not acknowledged before the gateway refuses to start new turns in it
/// (`outbox_full`). Running turns go on and every event is kept: the bound
/// stops new work piling up behind an orchestrator that cannot keep up.
pub const DEFAULT_MAX_UNACKED: u64 = 100_000;

/// How the gateway runs sessions.
#[derive(Clone)]
pub struct GatewayOptions {
    /// Where sessions' outboxes live.
    pub directory: DynSessionDirectory,
    /// What runs the agent.
    pub executor: DynExecutor,
    /// Which worktrees sessions may run in.
    pub worktrees: WorktreeIndex,
    /// Resolve approvals nobody answered within this as `expired`.
    pub approval_timeout: Option<Duration>,
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOptions")
            .field("executor", &self.executor)
            .field("approval_timeout", &self.approval_timeout)
            .finish_non_exhaustive()
    }
}

/// One session on the gateway.
#[derive(Debug)]
pub struct GatewaySession {
    id: String,
    /// The worktree it runs in, as its metadata records it: fixed when the
    /// session is created, read once when it is loaded, so that telling
    /// which worktrees are busy reads no store.
    worktree: PathBuf,
    log: SessionLog,
    gate: Arc<MemoryGate>,
    exec: Mutex<Option<Box<dyn ExecutorSession>>>,
    /// Turn-starting commands recorded whose turn has not logged an event
    /// yet (also durable: see [`TURN_PENDING`]).
    unstarted: Unstarted,
    /// The highest gseq the orchestrator has acknowledged (or attached
    /// after) since this process started; `None` before it said anything.
    acked: std::sync::Mutex<Option<u64>>,
    /// Checks that every tool that ran was allowed (see `GuardedSink`).
    guard: std::sync::Mutex<ToolGuard>,
    /// A tool ran unapproved: the session is stopped for good.
    unapproved: std::sync::atomic::AtomicBool,
}

/// The mark earlier versions recorded as a turn-starting command's
/// `forward`: the turn has not begun, and nothing says what it was. A
/// restart that finds it ends that turn with `gateway_restarted`.
///
/// This version records the command's envelope itself (its JSON) as the
/// mark, so that a restart can run the command instead; see
/// [`Gateway::new`]. Either way the turn's first event clears the mark
/// ([`SessionStore::mark_forwarded`](duraclaw_core::store::SessionStore::mark_forwarded)).
pub const TURN_PENDING: &str = r#"{"turn":"pending"}"#;

/// The code of the `notice` event a restarted gateway logs before it runs a
/// command it had taken and never started.
pub const RERUN_NOTICE: &str = duraclaw_core::protocol::NOTICE_RERUN_AFTER_RESTART;

/// A command taken before a restart, read back from its mark.
enum Taken {
    /// The envelope, to run again.
    Command(CommandEnvelope),
    /// A mark that says only that a turn was pending (an earlier version's,
    /// or one this build cannot read).
    Unknown,
}

fn taken(forward: Option<&str>) -> Taken {
    forward
        .and_then(|json| serde_json::from_str::<CommandEnvelope>(json).ok())
        .filter(|env| {
            matches!(
                &env.command,
                Command::Execute(_) | Command::Message(_) | Command::Resume(_)
            )
        })
        .map_or(Taken::Unknown, Taken::Command)
}

/// The `notice` event that says a command taken before a restart is run now.
fn notice(message: &str, command_id: &str) -> Event {
    Event::Notice(Notice::new(RERUN_NOTICE, message).about_command(command_id))
}

impl GatewaySession {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session's outbox log (seq = gseq).
    pub fn log(&self) -> &SessionLog {
        &self.log
    }

    /// The session's approval gate.
    pub fn gate(&self) -> &Arc<MemoryGate> {
        &self.gate
    }

    /// Whether its executor is running.
    pub async fn is_running(&self) -> bool {
        self.exec
            .lock()
            .await
            .as_ref()
            .is_some_and(|e| e.is_running())
    }
}

/// Whether the log's last turn started and never ended: events after the
/// last `result`/`error` other than bookkeeping mean an agent was working.
async fn turn_was_cut(store: &DynSessionStore) -> Result<bool> {
    let head = store.head().await?;
    // Look back over the tail of the log only; a turn's end is near it.
    let from = head.last_seq.saturating_sub(64);
    let tail = store.read_after(from, 64).await?;
    for e in tail.iter().rev() {
        match e.event() {
            Ok(Event::Result(_) | Event::Error(_)) => return Ok(false),
            Ok(event) if shows_work(&event) => return Ok(true),
            Ok(_) | Err(_) => continue,
        }
    }
    Ok(false)
}

/// The gateway: sessions by id, and what they run.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: GatewayOptions,
    sessions: Mutex<HashMap<String, Arc<GatewaySession>>>,
    audit: Arc<dyn AuditLog>,
    max_unacked: std::sync::atomic::AtomicU64,
}

impl Gateway {
    /// A gateway over `options`. Questions left pending by an earlier run
    /// (its executors are gone) are withdrawn, so nobody answers a question
    /// no process waits for; a turn that run cut short is ended; and the
    /// turn-starting commands it took and never started are run now, in
    /// the order taken, before any new command (see `recover`).
    pub async fn new(options: GatewayOptions) -> Result<Self> {
        Self::with_audit(options, Arc::new(TracingAudit)).await
    }

    /// Like [`Gateway::new`], writing every approval request and decision
    /// to `audit`.
    pub async fn with_audit(options: GatewayOptions, audit: Arc<dyn AuditLog>) -> Result<Self> {
        let gw = Gateway {
            inner: Arc::new(Inner {
                options,
                sessions: Mutex::new(HashMap::new()),
                audit,
                max_unacked: std::sync::atomic::AtomicU64::new(DEFAULT_MAX_UNACKED),
            }),
        };
        if let Some(why) = gw.executor_error().await {
            // Not fatal: sessions are refused with this, and the status
            // shows it.
            tracing::warn!(error = %why, "the executor cannot run sessions");
        }
        for meta in gw.inner.options.directory.list(GATEWAY_OWNER).await? {
            let session = gw.session(&meta.session_id).await?;
            for q in session.log.store().questions(true).await? {
                let event = Event::QuestionResolved(QuestionResolved {
                    question_id: q.question.question_id.clone(),
                    decision: Decision::Cancelled {
                        reason: Some(
                            "the gateway restarted and the tool call was not run; send a message to continue"
                                .into(),
                        ),
                    },
                    by: DecidedBy::new("gateway"),
                    at_ms: now_ms(),
                });
                let e = NewEvent::new(&event, None, now_ms())?;
                session.log.append(AppendBatch::events(vec![e])).await?;
            }
            gw.recover(&session).await?;
        }
        Ok(gw)
    }

    /// After a restart: ends a turn the crash cut short, and runs again,
    /// in the order they were taken, the turn-starting commands that were
    /// taken and never began (their mark is still set). Each re-run is
    /// announced by a `notice` event ([`RERUN_NOTICE`]); its mark stays
    /// until the re-run turn's first event, so a re-run that is itself cut
    /// before it starts is run again by the next restart, and a command
    /// runs at most one turn. A command that cannot run (the session was
    /// closed, an earlier version's mark that does not say what it was, or
    /// the executor refuses to start) ends its turn with an `error`
    /// (`gateway_restarted`), so nobody waits for a turn that will never
    /// come.
    async fn recover(&self, session: &Arc<GatewaySession>) -> Result<()> {
        let store = session.log.store();
        let unstarted = store.unforwarded().await?;
        if turn_was_cut(store).await? {
            tracing::warn!(session = %session.id, "ending a turn the gateway's restart cut");
            self.log_error(
                session,
                "the gateway restarted while a turn was running; the turn was cut. \
                 Send a message to continue the session.",
            )
            .await?;
        }
        let closed = store.meta().await?.state == SessionState::Terminated;
        for c in unstarted {
            let why = match taken(c.forward.as_deref()) {
                Taken::Command(_) if closed => Some(
                    "the session was closed before the agent began this turn; \
                     the message was not run."
                        .to_owned(),
                ),
                Taken::Unknown => Some(
                    "the gateway restarted before the agent began this turn; the message \
                     was not run. Send it again to continue the session."
                        .to_owned(),
                ),
                Taken::Command(env) => {
                    tracing::warn!(
                        session = %session.id,
                        command = %c.id,
                        "running a command the gateway took before its restart and never started"
                    );
                    self.log_event(
                        session,
                        &notice(
                            "the gateway restarted before the agent began this turn; \
                             it is run now",
                            &c.id,
                        ),
                    )
                    .await?;
                    session
                        .unstarted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(c.id.clone());
                    let ran = self.run_turn(session, env).await;
                    match self.settle(session, &c.id, ran).await {
                        Ok(()) => None,
                        Err(e) => Some(format!(
                            "the gateway restarted before the agent began this turn and could \
                             not run it again ({e}). Send it again to continue the session."
                        )),
                    }
                }
            };
            if let Some(message) = why {
                tracing::warn!(session = %session.id, command = %c.id, "ending a turn that never began");
                self.log_error(session, &message).await?;
                store.mark_forwarded(&c.id).await?;
            }
        }
        Ok(())
    }

    /// Appends one event the gateway itself observed to a session's outbox.
    async fn log_event(&self, session: &GatewaySession, event: &Event) -> Result<()> {
        let e = NewEvent::new(event, None, now_ms())?;
        session.log.append(AppendBatch::events(vec![e])).await?;
        Ok(())
    }

    /// Ends a session's turn with a `gateway_restarted` error.
    async fn log_error(&self, session: &GatewaySession, message: &str) -> Result<()> {
        let event = Event::Error(ErrorEvent {
            message: message.into(),
            code: Some("gateway_restarted".into()),
            ..ErrorEvent::default()
        });
        self.log_event(session, &event).await
    }

    /// Why the executor cannot run sessions here (e.g. the Claude Code CLI
    /// is missing or older than the minimum), or `None` when it can. The
    /// link's hello carries it to the orchestrator (`/api/status`).
    pub async fn executor_error(&self) -> Option<String> {
        self.inner
            .options
            .executor
            .check()
            .await
            .err()
            .map(|e| e.to_string())
    }

    /// Sets the outbox bound (see [`DEFAULT_MAX_UNACKED`]).
    pub fn set_max_unacked(&self, events: u64) {
        self.inner
            .max_unacked
            .store(events.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The orchestrator has persisted `session_id`'s events up to `gseq`
    /// (an ack, or an attach after it).
    pub async fn acked(&self, session_id: &str, gseq: u64) {
        let session = self.inner.sessions.lock().await.get(session_id).cloned();
        if let Some(s) = session {
            let mut acked = s.acked.lock().unwrap_or_else(|p| p.into_inner());
            *acked = Some(acked.map_or(gseq, |a| a.max(gseq)));
        }
    }

    /// Refuses a new turn while the session's outbox holds more events than
    /// the bound that the orchestrator has not acknowledged.
    async fn check_outbox(&self, session: &GatewaySession) -> Result<()> {
        let acked = *session.acked.lock().unwrap_or_else(|p| p.into_inner());
        let Some(acked) = acked else {
            // Nobody has said what they hold since this process started.
            return Ok(());
        };
        let head = session.log.store().head().await?.last_seq;
        let unacked = head.saturating_sub(acked);
        let max = self
            .inner
            .max_unacked
            .load(std::sync::atomic::Ordering::Relaxed);
        if unacked > max {
            tracing::warn!(
                session = %session.id,
                unacked,
                max,
                "outbox full: refusing a new turn until the orchestrator catches up"
            );
            return Err(Error::Invalid(format!(
                "outbox full: {unacked} events of this session are not acknowledged by the \
                 orchestrator (the bound is {max}); no new turn starts until it catches up"
            )));
        }
        Ok(())
    }

    /// The discovered worktrees, each marked with the session running in it.
    pub async fn worktrees(&self) -> Result<Vec<Worktree>> {
        let mut list = self.inner.options.worktrees.discover()?;
        let busy = self.busy_worktrees().await;
        for wt in &mut list {
            wt.busy_session = busy.get(&PathBuf::from(&wt.path)).cloned();
        }
        Ok(list)
    }

    /// Each worktree a running session holds, with that session. Reads no
    /// store: each session knows its worktree.
    async fn busy_worktrees(&self) -> HashMap<PathBuf, String> {
        let sessions: Vec<Arc<GatewaySession>> =
            self.inner.sessions.lock().await.values().cloned().collect();
        let mut busy = HashMap::new();
        for s in sessions {
            if s.is_running().await {
                busy.insert(s.worktree.clone(), s.id.clone());
            }
        }
        busy
    }

    /// A session by id, loaded from the store if this process has not seen
    /// it yet (e.g. after a restart).
    pub async fn session(&self, session_id: &str) -> Result<Arc<GatewaySession>> {
        let mut sessions = self.inner.sessions.lock().await;
        if let Some(s) = sessions.get(session_id) {
            return Ok(s.clone());
        }
        let store = self.inner.options.directory.open(session_id).await?;
        let worktree = PathBuf::from(store.meta().await?.worktree);
        let s = self.wrap(store, worktree).await?;
        sessions.insert(session_id.to_owned(), s.clone());
        Ok(s)
    }

    /// A session over `store`, which runs in `worktree` (its metadata's).
    async fn wrap(&self, store: DynSessionStore, worktree: PathBuf) -> Result<Arc<GatewaySession>> {
        let log = SessionLog::open(store).await?;
        // Executors log each question and its resolution themselves, in
        // order with the rest of the stream; the gate only decides.
        let mut gate = MemoryGate::new().with_audit(self.inner.audit.clone());
        if let Some(t) = self.inner.options.approval_timeout {
            gate = gate.with_timeout(t);
        }
        Ok(Arc::new(GatewaySession {
            id: log.store().session_id().to_owned(),
            worktree,
            log,
            gate: Arc::new(gate),
            exec: Mutex::new(None),
            unstarted: Arc::default(),
            acked: std::sync::Mutex::new(None),
            guard: std::sync::Mutex::new(ToolGuard::new()),
            unapproved: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Applies a command once per id and says how it went.
    pub async fn apply(&self, env: CommandEnvelope) -> CommandResult {
        let id = env.id.clone();
        match self.apply_inner(env).await {
            Ok(()) => CommandResult {
                id,
                ok: true,
                error: None,
            },
            Err(e) => {
                tracing::info!(command = %id, error = %e, "command refused");
                let mut wire = WireError::from(&e);
                if let Error::Invalid(msg) = &e {
                    if msg.starts_with("worktree busy") {
                        wire.code = "worktree_busy".into();
                    } else if msg.starts_with("session closed") {
                        wire.code = "session_closed".into();
                    } else if msg.starts_with("outbox full") {
                        wire.code = "outbox_full".into();
                    }
                }
                CommandResult {
                    id,
                    ok: false,
                    error: Some(wire),
                }
            }
        }
    }

    /// Records command `id`; whether it was recorded before. A command
    /// that starts a turn is recorded with its envelope (`pending`) as the
    /// mark that its turn has not begun, which its turn's first event
    /// clears.
    async fn already_applied(
        &self,
        store: &DynSessionStore,
        id: &str,
        pending: Option<&Arc<str>>,
    ) -> Result<bool> {
        let out = store
            .append(AppendBatch {
                events: vec![],
                command: Some(RecordedCommand {
                    id: id.to_owned(),
                    forward: pending.cloned(),
                    at_ms: now_ms(),
                }),
            })
            .await?;
        Ok(out.duplicate_command)
    }

    /// Records a turn-starting command and, unless it is a duplicate,
    /// notes it as waiting for its turn's first event.
    async fn take_turn(
        &self,
        session: &GatewaySession,
        id: &str,
        pending: Option<&Arc<str>>,
    ) -> Result<bool> {
        let dup = self
            .already_applied(session.log.store(), id, pending)
            .await?;
        if !dup {
            session
                .unstarted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id.to_owned());
        }
        Ok(dup)
    }

    /// A turn-starting command failed after it was recorded: it starts no
    /// turn, so its mark goes (the orchestrator has the refusal).
    async fn settle(&self, session: &GatewaySession, id: &str, result: Result<()>) -> Result<()> {
        if result.is_err() {
            session
                .unstarted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|x| x != id);
            if let Err(e) = session.log.store().mark_forwarded(id).await {
                tracing::warn!(session = %session.id, command = %id, error = %e, "cannot clear a turn mark");
            }
        }
        result
    }

    /// Refuses a new turn in a session that was closed.
    async fn check_open(&self, session: &GatewaySession) -> Result<()> {
        if session.log.store().meta().await?.state == SessionState::Terminated {
            return Err(Error::Invalid(format!(
                "session closed: {} was closed on this gateway; start a new session",
                session.id
            )));
        }
        Ok(())
    }

    async fn apply_inner(&self, env: CommandEnvelope) -> Result<()> {
        // What a turn-starting command leaves as its mark: itself, so that
        // a restart before its turn begins can run it (see `recover`).
        let pending: Option<Arc<str>> = match &env.command {
            Command::Execute(_) | Command::Message(_) => Some(encode_frame(&env)?.into()),
            Command::Resume(r) if r.prompt.is_some() => Some(encode_frame(&env)?.into()),
            _ => None,
        };
        let pending = pending.as_ref();
        let CommandEnvelope {
            id,
            session_id,
            command,
        } = env;
        match command {
            Command::Execute(x) => {
                let session = match self.inner.options.directory.open(&session_id).await {
                    Ok(store) => {
                        // The session exists: a resent execute is applied once.
                        if self.already_applied(&store, &id, pending).await? {
                            return Ok(());
                        }
                        if store.head().await?.last_seq > 0 {
                            store.mark_forwarded(&id).await?;
                            return Err(Error::AlreadyExists {
                                what: "session",
                                id: session_id,
                            });
                        }
                        // Created, then the gateway stopped before it took
                        // the command: this is that execute; start it now.
                        self.session(&session_id).await?
                    }
                    Err(Error::NotFound { .. }) => {
                        let worktree = self.inner.options.worktrees.resolve(&x.worktree)?;
                        self.check_not_busy(&worktree, &session_id).await?;
                        let mut meta = SessionMeta::new(&session_id, GATEWAY_OWNER, now_ms());
                        meta.worktree = worktree.display().to_string();
                        meta.model.clone_from(&x.model);
                        meta.title = x
                            .prompt
                            .lines()
                            .next()
                            .unwrap_or("")
                            .chars()
                            .take(80)
                            .collect();
                        let store = self.inner.options.directory.create(meta).await?;
                        self.already_applied(&store, &id, pending).await?;
                        let session = self.wrap(store, worktree).await?;
                        self.inner
                            .sessions
                            .lock()
                            .await
                            .insert(session_id.clone(), session.clone());
                        session
                    }
                    Err(e) => return Err(e),
                };
                session
                    .unstarted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(id.clone());
                let started = self.execute(&session, session_id, x).await;
                self.settle(&session, &id, started).await
            }
            Command::Resume(r) => {
                let session = self.session(&session_id).await?;
                self.check_outbox(&session).await?;
                let dup = if pending.is_some() {
                    self.take_turn(&session, &id, pending).await?
                } else {
                    self.already_applied(session.log.store(), &id, None).await?
                };
                if dup {
                    return Ok(());
                }
                let started = match self.check_open(&session).await {
                    Ok(()) => self.resume(&session, session_id, r).await,
                    Err(e) => Err(e),
                };
                self.settle(&session, &id, started).await
            }
            Command::Message(turn) => {
                let session = self.session(&session_id).await?;
                self.check_outbox(&session).await?;
                if self.take_turn(&session, &id, pending).await? {
                    return Ok(());
                }
                let sent = match self.check_open(&session).await {
                    Ok(()) => self.message(&session, session_id, turn.text).await,
                    Err(e) => Err(e),
                };
                self.settle(&session, &id, sent).await
            }
            Command::Abort(_) => {
                let session = self.session(&session_id).await?;
                if self.already_applied(session.log.store(), &id, None).await? {
                    return Ok(());
                }
                let exec = session.exec.lock().await;
                match exec.as_ref().filter(|e| e.is_running()) {
                    Some(e) => e.interrupt().await,
                    // Nothing runs: nothing to interrupt, and that is fine.
                    None => Ok(()),
                }
            }
            Command::Close(_) => {
                let session = self.session(&session_id).await?;
                // Closed on disk before the close is recorded: a restart in
                // between must not run the session's pending turns (and the
                // resent close, not yet recorded, is applied again).
                mark_closed(&session).await?;
                if self.already_applied(session.log.store(), &id, None).await? {
                    return Ok(());
                }
                // Stopping withdraws its questions; the worktree is free.
                let exec = session.exec.lock().await.take();
                if let Some(e) = exec {
                    e.shutdown().await?;
                }
                Ok(())
            }
            Command::Answer(a) => {
                let session = self.session(&session_id).await?;
                let by = a.by.unwrap_or_else(|| DecidedBy::new("orchestrator"));
                match session.gate.decide(&a.question_id, a.decision, by).await {
                    Ok(_) => Ok(()),
                    // The request is gone with an earlier process; the
                    // orchestrator has the decision on record.
                    Err(Error::NotFound { .. }) => Err(Error::NotFound {
                        what: "pending approval on the gateway",
                        id: a.question_id,
                    }),
                    Err(e) => Err(e),
                }
            }
            other => Err(Error::Invalid(format!(
                "the gateway does not handle `{}`",
                other.name()
            ))),
        }
    }

    /// Runs a turn-starting command taken before a restart, as its first
    /// application would have (its id is recorded already).
    async fn run_turn(&self, session: &Arc<GatewaySession>, env: CommandEnvelope) -> Result<()> {
        // The session it was recorded in, whatever the envelope says.
        let session_id = session.id.clone();
        match env.command {
            Command::Execute(x) => self.execute(session, session_id, x).await,
            Command::Message(turn) => self.message(session, session_id, turn.text).await,
            Command::Resume(r) => self.resume(session, session_id, r).await,
            other => Err(Error::Invalid(format!(
                "`{}` does not start a turn",
                other.name()
            ))),
        }
    }

    /// Starts a session's executor on its first prompt.
    async fn execute(
        &self,
        session: &Arc<GatewaySession>,
        session_id: String,
        x: duraclaw_core::protocol::Execute,
    ) -> Result<()> {
        let worktree = self.inner.options.worktrees.resolve(&x.worktree)?;
        let spec = StartSpec {
            session_id,
            worktree: worktree.display().to_string(),
            prompt: Some(x.prompt),
            model: x.model,
            permission_mode: x.permission_mode,
            system_prompt: x.system_prompt,
            resume: None,
        };
        self.start(session, spec).await
    }

    /// Resumes an executor session, with a prompt or without.
    async fn resume(
        &self,
        session: &Arc<GatewaySession>,
        session_id: String,
        r: duraclaw_core::protocol::Resume,
    ) -> Result<()> {
        let worktree = self.inner.options.worktrees.resolve(&r.worktree)?;
        self.check_not_busy(&worktree, &session_id).await?;
        let spec = StartSpec {
            session_id,
            worktree: worktree.display().to_string(),
            prompt: r.prompt,
            model: r.model,
            permission_mode: None,
            system_prompt: None,
            resume: Some(r.executor_session_id),
        };
        self.start(session, spec).await
    }

    /// Hands a user turn to the running executor, or resumes the executor
    /// with it if it is gone (exited, killed, or the gateway restarted).
    async fn message(
        &self,
        session: &Arc<GatewaySession>,
        session_id: String,
        text: String,
    ) -> Result<()> {
        let mut exec = session.exec.lock().await;
        if let Some(e) = exec.as_ref().filter(|e| e.is_running()) {
            return e.send_message(&text).await;
        }
        drop(exec.take());
        drop(exec);
        let meta = session.log.store().meta().await?;
        let worktree = PathBuf::from(&meta.worktree);
        self.check_not_busy(&worktree, &session_id).await?;
        let spec = StartSpec {
            session_id,
            worktree: meta.worktree.clone(),
            prompt: Some(text),
            model: meta.model.clone(),
            permission_mode: None,
            system_prompt: None,
            resume: meta.executor_session_id.clone(),
        };
        self.start(session, spec).await
    }

    /// Refuses `worktree` while a session other than `session_id` runs in
    /// it. Reads no store and builds no map: it compares each session's
    /// worktree in memory and asks only those in `worktree` whether they
    /// run, stopping at the first that does.
    async fn check_not_busy(&self, worktree: &std::path::Path, session_id: &str) -> Result<()> {
        let others: Vec<Arc<GatewaySession>> = self
            .inner
            .sessions
            .lock()
            .await
            .values()
            .filter(|s| s.worktree == worktree && s.id != session_id)
            .cloned()
            .collect();
        for holder in others {
            if holder.is_running().await {
                return Err(Error::Invalid(duraclaw_core::web::worktree_busy(
                    &worktree.display().to_string(),
                    &holder.id,
                )));
            }
        }
        Ok(())
    }

    async fn start(&self, session: &Arc<GatewaySession>, spec: StartSpec) -> Result<()> {
        let sink = Arc::new(GuardedSink {
            outbox: OutboxSink::with_turn_marks(session.log.clone(), session.unstarted.clone()),
            session: Arc::downgrade(session),
            audit: self.inner.audit.clone(),
        });
        let exec = self
            .inner
            .options
            .executor
            .start(spec, session.gate.clone(), sink)
            .await?;
        let old = session.exec.lock().await.replace(exec);
        if let Some(old) = old {
            old.shutdown().await?;
        }
        if session
            .unapproved
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // It ran a tool unapproved before it was stored: stop it too.
            stop_unapproved(session).await;
        }
        Ok(())
    }

    /// Stops every executor (the gateway is shutting down).
    pub async fn shutdown(&self) {
        let sessions: Vec<Arc<GatewaySession>> =
            self.inner.sessions.lock().await.values().cloned().collect();
        for s in sessions {
            let exec = s.exec.lock().await.take();
            if let Some(e) = exec
                && let Err(err) = e.shutdown().await
            {
                tracing::warn!(session = %s.id, error = %err, "executor did not shut down cleanly");
            }
        }
    }
}

/// An executor's sink that checks every event with the session's
/// [`ToolGuard`] before it goes to the outbox: whatever the executor (or
/// its version), a tool that ran with no decision allowing it ends the
/// session. Its result is logged (a person must see what ran), then an
/// `error` (`unapproved_tool`), and the executor is stopped; the session is
/// closed on the gateway, and the orchestrator terminates it on that error.
/// After that only question resolutions (the stop withdrawing questions)
/// reach the log.
#[derive(Debug)]
struct GuardedSink {
    outbox: OutboxSink,
    session: std::sync::Weak<GatewaySession>,
    audit: Arc<dyn AuditLog>,
}

#[async_trait::async_trait]
impl EventSink for GuardedSink {
    async fn emit(&self, event: Event) -> Result<()> {
        let Some(session) = self.session.upgrade() else {
            return self.outbox.emit(event).await;
        };
        if session
            .unapproved
            .load(std::sync::atomic::Ordering::Acquire)
        {
            if matches!(event, Event::QuestionResolved(_)) {
                return self.outbox.emit(event).await;
            }
            tracing::debug!(session = %session.id, event = event.type_name(), "dropped: the session was stopped");
            return Ok(());
        }
        let unapproved = session
            .guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(&event);
        self.outbox.emit(event).await?;
        let Some(bad) = unapproved else {
            return Ok(());
        };
        session
            .unapproved
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::error!(
            session = %session.id,
            tool = %bad.tool_name,
            tool_use_id = %bad.tool_use_id,
            "a tool ran without approval; stopping the session"
        );
        self.audit.record(&AuditEntry {
            at_ms: now_ms(),
            action: AuditAction::Unapproved,
            session_id: session.id.clone(),
            question_id: bad.tool_use_id.clone(),
            tool_name: Some(bad.tool_name.clone()),
            input: None,
            decision: None,
            who: Some("executor".into()),
            client: None,
        });
        self.outbox.emit(bad.error_event()).await?;
        // Not from here: stopping waits for the executor's reader, which
        // may be the caller.
        tokio::spawn(async move { stop_unapproved(&session).await });
        Ok(())
    }
}

/// Marks a session closed for good in the gateway's own store: a restart
/// then runs none of its pending turns, and new turns are refused.
async fn mark_closed(session: &GatewaySession) -> Result<()> {
    let store = session.log.store();
    let mut meta = store.meta().await?;
    if meta.state != SessionState::Terminated {
        meta.state = SessionState::Terminated;
        meta.updated_at_ms = now_ms();
        store.put_meta(&meta).await?;
    }
    Ok(())
}

/// Closes a session in which a tool ran unapproved and kills its executor
/// (given time, an old CLI would run the next unasked tool).
async fn stop_unapproved(session: &GatewaySession) {
    if let Err(e) = mark_closed(session).await {
        tracing::error!(session = %session.id, error = %e, "cannot mark the session closed");
    }
    let exec = session.exec.lock().await.take();
    if let Some(e) = exec
        && let Err(err) = e.kill().await
    {
        tracing::warn!(session = %session.id, error = %err, "executor did not stop cleanly");
    }
}
