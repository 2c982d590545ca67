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
use duraclaw_core::executor::{DynExecutor, ExecutorSession, StartSpec};
use duraclaw_core::protocol::{
    Command, CommandEnvelope, CommandResult, DecidedBy, Decision, ErrorEvent, Event,
    QuestionResolved, WireError, Worktree,
};
use duraclaw_core::store::{
    AppendBatch, DynSessionDirectory, DynSessionStore, NewEvent, RecordedCommand, SessionMeta,
};
use tokio::sync::Mutex;

use crate::approval::{AuditLog, MemoryGate, TracingAudit, now_ms};
use crate::outbox::OutboxSink;
use crate::worktree::WorktreeIndex;

/// The owner recorded for sessions in the gateway's own store.
const GATEWAY_OWNER: &str = "gateway";

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
    log: SessionLog,
    gate: Arc<MemoryGate>,
    exec: Mutex<Option<Box<dyn ExecutorSession>>>,
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
            Ok(Event::QuestionResolved(_)) => continue,
            Ok(Event::Unknown(_)) => continue,
            Ok(_) => return Ok(true),
            Err(_) => continue,
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
}

impl Gateway {
    /// A gateway over `options`. Questions left pending by an earlier run
    /// (its executors are gone) are withdrawn, so nobody answers a question
    /// no process waits for.
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
            }),
        };
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
            // A turn the crash cut short never got its result: end it, so
            // nobody waits for an agent that is gone.
            if turn_was_cut(session.log.store()).await? {
                let event = Event::Error(ErrorEvent {
                    message: "the gateway restarted while a turn was running; the turn was cut. \
                              Send a message to continue the session."
                        .into(),
                    code: Some("gateway_restarted".into()),
                    ..ErrorEvent::default()
                });
                let e = NewEvent::new(&event, None, now_ms())?;
                session.log.append(AppendBatch::events(vec![e])).await?;
            }
        }
        Ok(gw)
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

    async fn busy_worktrees(&self) -> HashMap<PathBuf, String> {
        let sessions: Vec<Arc<GatewaySession>> =
            self.inner.sessions.lock().await.values().cloned().collect();
        let mut busy = HashMap::new();
        for s in sessions {
            if s.is_running().await
                && let Ok(meta) = s.log.store().meta().await
            {
                busy.insert(PathBuf::from(meta.worktree), s.id.clone());
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
        let s = self.wrap(store).await?;
        sessions.insert(session_id.to_owned(), s.clone());
        Ok(s)
    }

    async fn wrap(&self, store: DynSessionStore) -> Result<Arc<GatewaySession>> {
        let log = SessionLog::open(store).await?;
        // Executors log each question and its resolution themselves, in
        // order with the rest of the stream; the gate only decides.
        let mut gate = MemoryGate::new().with_audit(self.inner.audit.clone());
        if let Some(t) = self.inner.options.approval_timeout {
            gate = gate.with_timeout(t);
        }
        Ok(Arc::new(GatewaySession {
            id: log.store().session_id().to_owned(),
            log,
            gate: Arc::new(gate),
            exec: Mutex::new(None),
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
                if let Error::Invalid(msg) = &e
                    && msg.starts_with("worktree busy")
                {
                    wire.code = "worktree_busy".into();
                }
                CommandResult {
                    id,
                    ok: false,
                    error: Some(wire),
                }
            }
        }
    }

    async fn already_applied(&self, store: &DynSessionStore, id: &str) -> Result<bool> {
        let out = store
            .append(AppendBatch {
                events: vec![],
                command: Some(RecordedCommand {
                    id: id.to_owned(),
                    forward: None,
                    at_ms: now_ms(),
                }),
            })
            .await?;
        Ok(out.duplicate_command)
    }

    async fn apply_inner(&self, env: CommandEnvelope) -> Result<()> {
        let CommandEnvelope {
            id,
            session_id,
            command,
        } = env;
        match command {
            Command::Execute(x) => {
                let worktree = self.inner.options.worktrees.resolve(&x.worktree)?;
                let store = match self.inner.options.directory.open(&session_id).await {
                    Ok(store) => {
                        // The session exists: a resent execute is applied once.
                        if self.already_applied(&store, &id).await? {
                            return Ok(());
                        }
                        return Err(Error::AlreadyExists {
                            what: "session",
                            id: session_id,
                        });
                    }
                    Err(Error::NotFound { .. }) => {
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
                        self.inner.options.directory.create(meta).await?
                    }
                    Err(e) => return Err(e),
                };
                self.already_applied(&store, &id).await?;
                let session = self.wrap(store).await?;
                self.inner
                    .sessions
                    .lock()
                    .await
                    .insert(session_id.clone(), session.clone());
                let spec = StartSpec {
                    session_id,
                    worktree: worktree.display().to_string(),
                    prompt: Some(x.prompt),
                    model: x.model,
                    permission_mode: x.permission_mode,
                    system_prompt: x.system_prompt,
                    resume: None,
                };
                self.start(&session, spec).await
            }
            Command::Resume(r) => {
                let session = self.session(&session_id).await?;
                if self.already_applied(session.log.store(), &id).await? {
                    return Ok(());
                }
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
                self.start(&session, spec).await
            }
            Command::Message(turn) => {
                let session = self.session(&session_id).await?;
                if self.already_applied(session.log.store(), &id).await? {
                    return Ok(());
                }
                let mut exec = session.exec.lock().await;
                if let Some(e) = exec.as_ref().filter(|e| e.is_running()) {
                    return e.send_message(&turn.text).await;
                }
                drop(exec.take());
                drop(exec);
                // The executor is gone (exited, killed, or the gateway
                // restarted): resume it with this message.
                let meta = session.log.store().meta().await?;
                let worktree = PathBuf::from(&meta.worktree);
                self.check_not_busy(&worktree, &session_id).await?;
                let spec = StartSpec {
                    session_id,
                    worktree: meta.worktree.clone(),
                    prompt: Some(turn.text),
                    model: meta.model.clone(),
                    permission_mode: None,
                    system_prompt: None,
                    resume: meta.executor_session_id.clone(),
                };
                self.start(&session, spec).await
            }
            Command::Abort(_) => {
                let session = self.session(&session_id).await?;
                if self.already_applied(session.log.store(), &id).await? {
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
                if self.already_applied(session.log.store(), &id).await? {
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

    async fn check_not_busy(&self, worktree: &std::path::Path, session_id: &str) -> Result<()> {
        match self.busy_worktrees().await.get(worktree) {
            Some(holder) if holder != session_id => Err(Error::Invalid(format!(
                "worktree busy: {} is in use by session {holder}",
                worktree.display()
            ))),
            _ => Ok(()),
        }
    }

    async fn start(&self, session: &Arc<GatewaySession>, spec: StartSpec) -> Result<()> {
        let sink = Arc::new(OutboxSink::new(session.log.clone()));
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
