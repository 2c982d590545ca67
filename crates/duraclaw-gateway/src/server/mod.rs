//! The gateway server: sessions, their durable outboxes, and the commands
//! that drive them.
//!
//! Every session has an outbox: its events appended to the gateway's own
//! SQLite store as they are sent (the link forwards a batch while it is
//! committed: see [`crate::outbox`]), numbered by the store's seq, which
//! is the session's `gseq` (but after a machine crash took back events the
//! orchestrator had: see [`crate::gseq`]). An orchestrator attaches with the highest gseq
//! it has persisted and gets everything after it, then live events, so a
//! dropped link or a gateway restart loses nothing and duplicates nothing.
//! Sessions keep running with no orchestrator connected.

mod commands;
mod guard;
mod worktrees;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duraclaw_core::Result;
use duraclaw_core::backend::actor::SessionLog;
use duraclaw_core::backend::guard::ToolGuard;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::error::Error;
use duraclaw_core::executor::{DynExecutor, ExecutorSession};
use duraclaw_core::protocol::{
    Command, CommandEnvelope, DecidedBy, Decision, ErrorEvent, Event, Gseq, Notice,
    QuestionResolved, Seq, Worktree,
};
use duraclaw_core::state::SessionState;
use duraclaw_core::store::{AppendBatch, DynSessionDirectory, DynSessionStore, NewEvent};
use tokio::sync::Mutex;

use crate::gseq::Gseqs;
use crate::outbox::{Unstarted, shows_work};
use crate::worktree::WorktreeIndex;
use duraclaw_approval::rules::RuleSet;
use duraclaw_approval::{AuditLog, MemoryGate, PolicyGate, TracingAudit};
use duraclaw_core::protocol::RuleEntry;

/// The owner recorded for sessions in the gateway's own store.
const GATEWAY_OWNER: &str = "gateway";

/// The most events a session's outbox may hold that the orchestrator has
/// not acknowledged before the gateway refuses to start new turns in it
/// (`outbox_full`). Running turns go on and every event is kept: the bound
/// stops new work piling up behind an orchestrator that cannot keep up.
pub const DEFAULT_MAX_UNACKED: u64 = 100_000;

/// How long a session with nothing live (see [`Gateway::evict_idle`])
/// stays in memory after its last use by default.
pub const DEFAULT_EVICT_IDLE: Duration = Duration::from_secs(60);

/// How long an executor may sit with no turn running, no question open and
/// no turn waiting before the gateway stops it by default (its session is
/// then put away like any idle one, and the next message resumes it).
pub const DEFAULT_EXECUTOR_IDLE: Duration = Duration::from_secs(30 * 60);

/// The `tracing` target of the per-session lines about putting sessions
/// away and loading them again (at debug; a summary goes at info).
pub const EVICT_TARGET: &str = "duraclaw_gateway::evict";

/// Milliseconds since this process first asked: when a session was last
/// used.
fn uptime_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        EPOCH
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

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
    /// The user's approval rules over `gate`: the executor asks this one.
    policy: Arc<PolicyGate>,
    exec: Mutex<Option<Box<dyn ExecutorSession>>>,
    /// Turn-starting commands recorded whose turn has not logged an event
    /// yet (also durable: see [`TURN_PENDING`]).
    unstarted: Unstarted,
    /// The last seq the orchestrator has (it acknowledged or attached
    /// after its gseq) since this process started; `None` before it said
    /// anything.
    acked: std::sync::Mutex<Option<u64>>,
    /// The gseqs its link sends ([`crate::gseq`]).
    gseqs: std::sync::Mutex<Arc<Gseqs>>,
    /// Its log's last seq when this process loaded it, until the first
    /// forwarder of it starts: what an orchestrator ahead of it lost.
    loaded_head: std::sync::Mutex<Option<Seq>>,
    /// Checks that every tool that ran was allowed (see `GuardedSink`).
    guard: std::sync::Mutex<ToolGuard>,
    /// A tool ran unapproved: the session is stopped for good.
    unapproved: std::sync::atomic::AtomicBool,
    /// The permission mode and model in force: the ones it started with,
    /// or last reported changed (`mode_changed`, `model_changed`, also
    /// recorded in its metadata); a relaunched CLI starts with them.
    in_force: std::sync::Mutex<InForce>,
    /// Held while its metadata is read and written back.
    meta_lock: Mutex<()>,
    /// The approval rules the host sent (kept when it is put away).
    rules: std::sync::Mutex<Vec<RuleEntry>>,
    /// When it was last used ([`uptime_ms`]), and how many times: an
    /// eviction that finds the count changed leaves it.
    last_used: std::sync::atomic::AtomicU64,
    uses: std::sync::atomic::AtomicU64,
    /// Its executor logged work since the last turn's end (`result` or
    /// `error`), as the outbox counts turns
    /// ([`TurnStep`](crate::outbox::TurnStep)): a turn is running.
    turn_open: std::sync::atomic::AtomicBool,
}

/// The permission mode and model a session runs with.
#[derive(Debug, Default, Clone)]
pub(super) struct InForce {
    pub(super) mode: Option<String>,
    pub(super) model: Option<String>,
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
    Command(Box<CommandEnvelope>),
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
        .map_or(Taken::Unknown, |env| Taken::Command(Box::new(env)))
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

    /// The mode and model switched to mid-session, if any.
    pub(super) fn in_force(&self) -> InForce {
        self.in_force
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The session's outbox log (seq = gseq, unless [`Self::gseqs`] has
    /// shifts).
    pub fn log(&self) -> &SessionLog {
        &self.log
    }

    /// The gseqs its link sends for its log's seqs.
    pub fn gseqs(&self) -> Arc<Gseqs> {
        self.gseqs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The gseqs for a forwarder that starts after gseq `after`, the
    /// orchestrator's highest ([`crate::gseq`]). The first forwarder since
    /// this process loaded the session checks that gseq against the log
    /// as loaded: when the orchestrator is ahead (a machine crash took back
    /// events it has), every seq after the loaded end goes out after
    /// `after`. Any forwarder whose `after` lies in a stretch of gseqs no
    /// seq has (the orchestrator lost what it had of it) has the seqs that
    /// follow go out right after `after`. A change is recorded in the
    /// session's metadata before anything is sent.
    pub async fn gseqs_for_forwarder(&self, after: Gseq) -> Result<Arc<Gseqs>> {
        let loaded = self
            .loaded_head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let store = self.log.store();
        let _meta = self.meta_lock.lock().await;
        let mut gseqs = (*self.gseqs()).clone();
        let first = match loaded {
            Some(head) if after > gseqs.gseq_of(head) => gseqs.realign(head, after),
            _ => false,
        };
        let hole = gseqs.realign(gseqs.seq_upto(after), after);
        if !first && !hole {
            return Ok(self.gseqs());
        }
        let recorded = async {
            let mut meta = store.meta().await?;
            meta.gseq_shifts = gseqs.shifts().to_vec();
            store.put_meta(&meta).await
        }
        .await;
        if let Err(e) = recorded {
            // Checked again by the next forwarder.
            *self.loaded_head.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
            return Err(e);
        }
        if first {
            tracing::warn!(
                session = %self.id,
                orchestrator_gseq = after,
                "the orchestrator has events this gateway's log lost (a machine crash took back \
                 its last commits): the events this process logged, and the next, are numbered \
                 after the orchestrator's"
            );
        } else {
            tracing::warn!(
                session = %self.id,
                orchestrator_gseq = after,
                "the orchestrator lost events it had: the next ones are numbered right after its last"
            );
        }
        let gseqs = Arc::new(gseqs);
        *self.gseqs.lock().unwrap_or_else(|p| p.into_inner()) = gseqs.clone();
        Ok(gseqs)
    }

    /// The session's approval gate.
    pub fn gate(&self) -> &Arc<MemoryGate> {
        &self.gate
    }

    /// The session's approval rules over its gate.
    pub fn policy(&self) -> &Arc<PolicyGate> {
        &self.policy
    }

    /// Puts `rules` (the user, worktree and session scopes, as the host
    /// sent them) in force; paths resolve against the session's worktree.
    pub fn set_rules(&self, rules: &[RuleEntry]) {
        rules.clone_into(&mut self.rules.lock().unwrap_or_else(|p| p.into_inner()));
        let set = RuleSet::from_entries(self.worktree.display().to_string(), rules);
        tracing::info!(session = %self.id, rules = set.rules().len(), "approval rules set");
        self.policy.set_rules(set);
    }

    /// Marks it active now (its executor logged an event), which keeps
    /// it from being stopped or put away for the idle bounds.
    pub(super) fn active(&self) {
        self.last_used
            .store(uptime_ms(), std::sync::atomic::Ordering::Release);
    }

    /// Marks it used now.
    fn touch(&self) {
        self.uses.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.last_used
            .store(uptime_ms(), std::sync::atomic::Ordering::Release);
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
/// A `session.init` counts only if a turn began with it (a command waited
/// for it: the outbox records which event began each command's turn); an
/// agent resumed without a prompt sends one with no turn behind it.
async fn turn_was_cut(store: &DynSessionStore) -> Result<bool> {
    let head = store.head().await?;
    // Look back over the tail of the log only; a turn's end is near it.
    let from = head.last_seq.saturating_sub(64);
    let tail = store.read_after(from, 64).await?;
    for e in tail.iter().rev() {
        match e.event() {
            Ok(Event::Result(_) | Event::Error(_)) => return Ok(false),
            Ok(Event::SessionInit(_)) => {
                if store.turn_began_at(e.seq).await? {
                    return Ok(true);
                }
            }
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
    /// The sessions in memory: those with live work, and those used
    /// within the idle bound; the rest are loaded from the store on demand.
    sessions: Mutex<HashMap<String, Arc<GatewaySession>>>,
    audit: Arc<dyn AuditLog>,
    max_unacked: std::sync::atomic::AtomicU64,
    /// The agents sessions choose from; the built-in one is `options.executor`.
    agents: crate::agents::Agents,
    /// See [`Gateway::set_evict_idle`], in ms.
    evict_idle_ms: std::sync::atomic::AtomicU64,
    /// See [`Gateway::set_executor_idle`], in ms; 0: never.
    executor_idle_ms: std::sync::atomic::AtomicU64,
    /// Sessions loaded again after they were put away, since the last
    /// sweep's summary.
    reloaded: std::sync::atomic::AtomicU64,
    /// The id of each session loaded from the store (links re-attach the
    /// forwarders of sessions they had attached before it was put away).
    loads: tokio::sync::broadcast::Sender<String>,
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
        let agents = crate::agents::Agents::new(options.executor.clone());
        Self::with_agents(options, audit, agents).await
    }

    /// Like [`Gateway::with_audit`], offering `agents` (whose built-in
    /// agent runs sessions that name none) instead of `options.executor`
    /// alone.
    pub async fn with_agents(
        mut options: GatewayOptions,
        audit: Arc<dyn AuditLog>,
        agents: crate::agents::Agents,
    ) -> Result<Self> {
        options.executor = agents.builtin().clone();
        let gw = Gateway {
            inner: Arc::new(Inner {
                options,
                sessions: Mutex::new(HashMap::new()),
                audit,
                max_unacked: std::sync::atomic::AtomicU64::new(DEFAULT_MAX_UNACKED),
                agents,
                evict_idle_ms: std::sync::atomic::AtomicU64::new(
                    u64::try_from(DEFAULT_EVICT_IDLE.as_millis()).unwrap_or(u64::MAX),
                ),
                executor_idle_ms: std::sync::atomic::AtomicU64::new(
                    u64::try_from(DEFAULT_EXECUTOR_IDLE.as_millis()).unwrap_or(u64::MAX),
                ),
                reloaded: std::sync::atomic::AtomicU64::new(0),
                loads: tokio::sync::broadcast::channel(1024).0,
            }),
        };
        if let Some(why) = gw.executor_error().await {
            // Not fatal: sessions are refused with this, and the status
            // shows it.
            tracing::warn!(error = %why, "the executor cannot run sessions");
        }
        for agent in gw.agents().await {
            match &agent.error {
                Some(why) => {
                    tracing::warn!(agent = %agent.name, error = %why, "agent unavailable")
                }
                None => tracing::info!(agent = %agent.name, "agent available"),
            }
        }
        let started = std::time::Instant::now();
        let mut parked = 0usize;
        for meta in gw.inner.options.directory.list(GATEWAY_OWNER).await? {
            // Put away with nothing pending: loaded when a command needs it.
            if meta.parked.is_some() {
                parked += 1;
                continue;
            }
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
                    at_ms: SystemClock.now_ms(),
                });
                let e = NewEvent::new(&event, None, SystemClock.now_ms())?;
                session.log.append(AppendBatch::events(vec![e])).await?;
            }
            gw.recover(&session).await?;
        }
        tracing::info!(
            loaded = gw.inner.sessions.lock().await.len(),
            parked,
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "sessions recovered"
        );
        tokio::spawn(sweep(Arc::downgrade(&gw.inner)));
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
                    let ran = self.run_turn(session, *env).await;
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
        let e = NewEvent::new(event, None, SystemClock.now_ms())?;
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

    /// The agents this gateway offers, each checked now.
    pub async fn agents(&self) -> Vec<duraclaw_core::protocol::AgentInfo> {
        self.inner.agents.list().await
    }

    /// Sets the outbox bound (see [`DEFAULT_MAX_UNACKED`]).
    pub fn set_max_unacked(&self, events: u64) {
        self.inner
            .max_unacked
            .store(events.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The orchestrator has persisted `session_id`'s events up to `gseq`
    /// (an ack, or an attach after it).
    pub async fn acked(&self, session_id: &str, gseq: Gseq) {
        let session = self.inner.sessions.lock().await.get(session_id).cloned();
        if let Some(s) = session {
            let seq = s.gseqs().seq_upto(gseq);
            let mut acked = s.acked.lock().unwrap_or_else(|p| p.into_inner());
            *acked = Some(acked.map_or(seq, |a| a.max(seq)));
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
        let offers_new = self.inner.options.worktrees.new_worktree_root().is_some();
        for wt in &mut list {
            wt.busy_session = busy.get(&PathBuf::from(&wt.path)).cloned();
            wt.new_worktree = offers_new;
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
    /// (e.g. after a restart, or after it was put away).
    pub async fn session(&self, session_id: &str) -> Result<Arc<GatewaySession>> {
        let mut sessions = self.inner.sessions.lock().await;
        if let Some(s) = sessions.get(session_id) {
            if !s.log.has_failed() {
                s.touch();
                return Ok(s.clone());
            }
            // Its log stopped after a failed commit: loaded again from
            // what the store has (its next forwarder numbers past what the
            // orchestrator got of the failed commit).
            if let Some(failed) = sessions.remove(session_id) {
                Self::stop_failed(failed);
            }
        }
        let store = self.inner.options.directory.open(session_id).await?;
        let s = self.wrap(store).await?;
        sessions.insert(session_id.to_owned(), s.clone());
        drop(sessions);
        tracing::debug!(session = %session_id, "session loaded");
        // No link listening is fine.
        let _ = self.inner.loads.send(session_id.to_owned());
        Ok(s)
    }

    /// Session `session_id` if it is in memory now (loads nothing). One
    /// whose log stopped after a failed commit is not: it is dropped, and
    /// loaded again on its next use.
    pub async fn loaded(&self, session_id: &str) -> Option<Arc<GatewaySession>> {
        let mut sessions = self.inner.sessions.lock().await;
        let s = sessions.get(session_id)?;
        if !s.log.has_failed() {
            return Some(s.clone());
        }
        if let Some(failed) = sessions.remove(session_id) {
            Self::stop_failed(failed);
        }
        None
    }

    /// Stops the executor of a session dropped because its log stopped
    /// after a failed commit.
    fn stop_failed(session: Arc<GatewaySession>) {
        tracing::warn!(
            session = %session.id,
            "its outbox stopped after a failed commit: the session is loaded again from its store"
        );
        tokio::spawn(async move {
            let exec = session.exec.lock().await.take();
            if let Some(e) = exec
                && let Err(err) = e.shutdown().await
            {
                tracing::warn!(session = %session.id, error = %err, "executor did not shut down cleanly");
            }
        });
    }

    /// How many sessions are in memory.
    pub async fn loaded_count(&self) -> usize {
        self.inner.sessions.lock().await.len()
    }

    /// The ids of sessions loaded from the store from now on.
    pub fn loads(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.loads.subscribe()
    }

    /// Sets how long a session with nothing live stays in memory after its
    /// last use ([`DEFAULT_EVICT_IDLE`] by default).
    pub fn set_evict_idle(&self, idle: Duration) {
        self.inner.evict_idle_ms.store(
            u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn evict_idle_ms(&self) -> u64 {
        self.inner
            .evict_idle_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets how long an executor may sit idle (no turn running, no
    /// question open, no turn waiting to start) before it is stopped
    /// ([`DEFAULT_EXECUTOR_IDLE`] by default; zero: never). A stopped
    /// executor is no failure: nothing is logged to the session, and the
    /// next message resumes it, as after a restart.
    pub fn set_executor_idle(&self, idle: Duration) {
        self.inner.executor_idle_ms.store(
            u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn executor_idle_ms(&self) -> u64 {
        self.inner
            .executor_idle_ms
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The gseq of session `session_id`'s last event when it is put away
    /// (not in memory, its metadata parked); `None` when it is in memory
    /// or not put away. Loads nothing.
    pub async fn parked_head(&self, session_id: &str) -> Result<Option<Gseq>> {
        if self.loaded(session_id).await.is_some() {
            return Ok(None);
        }
        let store = self.inner.options.directory.open(session_id).await?;
        let meta = store.meta().await?;
        if meta.parked.is_none() {
            return Ok(None);
        }
        let head = store.head().await?.last_seq;
        Ok(Some(Gseqs::new(&meta.gseq_shifts).gseq_of(head)))
    }

    /// Puts away every session unused for the idle bound that has nothing
    /// live: its executor ended, no question is open, no turn waits to
    /// start, and the orchestrator acknowledged all its events. Its
    /// metadata records that ([`Parked`](duraclaw_core::store::Parked),
    /// with its rules), so a restart does not load it; a command for it
    /// loads it again. How many were put away.
    pub async fn evict_idle(&self) -> usize {
        let stopped = self.stop_idle_executors().await;
        let bound = self.evict_idle_ms();
        let now = uptime_ms();
        let idle: Vec<(String, u64)> = self
            .inner
            .sessions
            .lock()
            .await
            .iter()
            .filter(|(_, s)| {
                now.saturating_sub(s.last_used.load(std::sync::atomic::Ordering::Acquire)) >= bound
            })
            .map(|(id, s)| {
                (
                    id.clone(),
                    s.uses.load(std::sync::atomic::Ordering::Acquire),
                )
            })
            .collect();
        let mut evicted = 0;
        for (id, uses) in idle {
            match self.evict(&id, uses).await {
                Ok(true) => evicted += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "cannot put an idle session away")
                }
            }
        }
        let reloaded = self
            .inner
            .reloaded
            .swap(0, std::sync::atomic::Ordering::AcqRel);
        if evicted > 0 || stopped > 0 || reloaded > 0 {
            let loaded = self.loaded_count().await;
            // One line per sweep, however many: the per-session lines are
            // at debug (target EVICT_TARGET).
            tracing::info!(
                put_away = evicted,
                executors_stopped = stopped,
                loaded_again = reloaded,
                loaded,
                "idle sessions"
            );
        }
        evicted
    }

    /// Stops every executor idle for the executor bound (see
    /// [`Gateway::set_executor_idle`]); how many were stopped.
    async fn stop_idle_executors(&self) -> usize {
        let bound = self.executor_idle_ms();
        if bound == 0 {
            return 0;
        }
        let now = uptime_ms();
        let idle: Vec<(Arc<GatewaySession>, u64)> = self
            .inner
            .sessions
            .lock()
            .await
            .values()
            .filter(|s| {
                now.saturating_sub(s.last_used.load(std::sync::atomic::Ordering::Acquire)) >= bound
                    && !s.turn_open.load(std::sync::atomic::Ordering::Acquire)
            })
            .map(|s| (s.clone(), s.uses.load(std::sync::atomic::Ordering::Acquire)))
            .collect();
        let mut stopped = 0;
        for (s, uses) in idle {
            match self.stop_idle(&s, uses, bound).await {
                Ok(true) => stopped += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session = %s.id, error = %e, "cannot stop an idle executor")
                }
            }
        }
        stopped
    }

    /// Stops session `s`'s executor if it runs and sat idle for `bound` ms
    /// with nobody using the session since its use count was `uses`.
    /// Whether it was stopped.
    async fn stop_idle(&self, s: &GatewaySession, uses: u64, bound: u64) -> Result<bool> {
        use duraclaw_core::approval::ApprovalGate;
        // Held to the end: a message waits, then finds it stopped and
        // resumes it.
        let mut exec = s.exec.lock().await;
        if !exec.as_ref().is_some_and(|e| e.is_running()) {
            return Ok(false);
        }
        let idle = uptime_ms()
            .saturating_sub(s.last_used.load(std::sync::atomic::Ordering::Acquire))
            >= bound;
        // The waiting commands before the open turn: a turn's mark is
        // cleared after the turn was marked open, so finding no command
        // waiting and then the turn not open means no turn began.
        if !idle
            || s.uses.load(std::sync::atomic::Ordering::Acquire) != uses
            || crate::outbox::waiting(&s.unstarted)
            || s.turn_open.load(std::sync::atomic::Ordering::Acquire)
            || !s.gate.pending().await?.is_empty()
        {
            return Ok(false);
        }
        let Some(e) = exec.take() else {
            return Ok(false);
        };
        // A stop, not a failure: the executor logs no error for it.
        e.shutdown().await?;
        tracing::debug!(target: EVICT_TARGET, session = %s.id, idle_ms = bound, "idle executor stopped");
        Ok(true)
    }

    /// Puts session `id` away if it has nothing live and nobody used it
    /// since its use count was `uses`.
    async fn evict(&self, id: &str, uses: u64) -> Result<bool> {
        let Some(s) = self.loaded(id).await else {
            return Ok(false);
        };
        if !self.quiescent(&s, uses).await? {
            return Ok(false);
        }
        // Recorded first: a restart after this need not load it.
        self.park(&s, true).await?;
        let mut sessions = self.inner.sessions.lock().await;
        // Nobody holds it but the map and this, and nobody used it since.
        let untouched = Arc::strong_count(&s) == 2
            && s.uses.load(std::sync::atomic::Ordering::Acquire) == uses
            && sessions.get(id).is_some_and(|cur| Arc::ptr_eq(cur, &s));
        if untouched {
            sessions.remove(id);
            drop(sessions);
            // Forwarders end once they sent what they hold; a link
            // re-attaches them when the session is loaded again.
            s.log.close();
            tracing::debug!(target: EVICT_TARGET, session = %id, "session put away");
            return Ok(true);
        }
        drop(sessions);
        self.park(&s, false).await?;
        Ok(false)
    }

    /// Whether session `s` has nothing live and was not used since `uses`.
    async fn quiescent(&self, s: &GatewaySession, uses: u64) -> Result<bool> {
        use duraclaw_core::approval::ApprovalGate;
        if s.uses.load(std::sync::atomic::Ordering::Acquire) != uses {
            return Ok(false);
        }
        if s.exec.lock().await.as_ref().is_some_and(|e| e.is_running()) {
            return Ok(false);
        }
        if !s
            .unstarted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Ok(false);
        }
        let acked = *s.acked.lock().unwrap_or_else(|p| p.into_inner());
        let head = s.log.store().head().await?.last_seq;
        if acked.is_none_or(|a| a < head) {
            return Ok(false);
        }
        if !s.gate.pending().await?.is_empty() {
            return Ok(false);
        }
        Ok(s.log.store().unforwarded().await?.is_empty())
    }

    /// Records in session `s`'s metadata that it is put away (with its
    /// rules), or that it is not.
    async fn park(&self, s: &GatewaySession, parked: bool) -> Result<()> {
        let store = s.log.store();
        let _meta = s.meta_lock.lock().await;
        let mut meta = store.meta().await?;
        meta.parked = parked.then(|| {
            Box::new(duraclaw_core::store::Parked {
                at_ms: SystemClock.now_ms(),
                rules: s.rules.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            })
        });
        store.put_meta(&meta).await
    }

    /// A session over `store`, in the worktree its metadata records, with
    /// the permission mode and model last in force.
    async fn wrap(&self, store: DynSessionStore) -> Result<Arc<GatewaySession>> {
        let mut meta = store.meta().await?;
        // Put away before: in memory again, with the rules it had.
        let parked = meta.parked.take();
        if parked.is_some() {
            store.put_meta(&meta).await?;
            self.inner
                .reloaded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(target: EVICT_TARGET, session = %meta.session_id, "session loaded again");
        }
        let allows = std::mem::take(&mut meta.session_allows);
        let worktree = PathBuf::from(meta.worktree);
        let in_force = InForce {
            mode: meta.permission_mode,
            model: meta.model,
        };
        let head = store.head().await?.last_seq;
        // Put away, the orchestrator had all its events.
        let acked = parked.as_ref().map(|_| head);
        let gseqs = Arc::new(Gseqs::new(&meta.gseq_shifts));
        let log = SessionLog::open(store).await?.publishing_before_commit();
        // Executors log each question and its resolution themselves, in
        // order with the rest of the stream; the gate only decides.
        let mut gate = MemoryGate::new().with_audit(self.inner.audit.clone());
        if let Some(t) = self.inner.options.approval_timeout {
            gate = gate.with_timeout(t);
        }
        let gate = Arc::new(gate);
        let policy = Arc::new(
            PolicyGate::new(vec![], gate.clone())
                .with_audit(self.inner.audit.clone())
                .with_exact_session_allows(),
        );
        let session = Arc::new(GatewaySession {
            id: log.store().session_id().to_owned(),
            worktree,
            log,
            gate,
            policy,
            exec: Mutex::new(None),
            unstarted: Arc::default(),
            acked: std::sync::Mutex::new(acked),
            gseqs: std::sync::Mutex::new(gseqs),
            loaded_head: std::sync::Mutex::new(Some(head)),
            guard: std::sync::Mutex::new(ToolGuard::new()),
            unapproved: std::sync::atomic::AtomicBool::new(false),
            in_force: std::sync::Mutex::new(in_force),
            meta_lock: Mutex::new(()),
            rules: std::sync::Mutex::new(Vec::new()),
            last_used: std::sync::atomic::AtomicU64::new(uptime_ms()),
            uses: std::sync::atomic::AtomicU64::new(0),
            turn_open: std::sync::atomic::AtomicBool::new(false),
        });
        // "Allow for this session" holds for the session's life: the gate
        // allows the same calls again, and the guard knows they may run.
        if !allows.is_empty() {
            let mut guard = session.guard.lock().unwrap_or_else(|p| p.into_inner());
            for a in allows {
                guard.allow_for_session(&a.tool, &a.input);
                session.gate.restore_session_allow(
                    &session.id,
                    &a.tool,
                    a.input,
                    duraclaw_core::approval::StandingAllow {
                        question_id: a.question_id,
                        by: a.by,
                    },
                );
            }
        }
        if let Some(p) = parked
            && !p.rules.is_empty()
        {
            session.set_rules(&p.rules);
        }
        Ok(session)
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

/// Puts idle sessions away ([`Gateway::evict_idle`]) every so often, until
/// the gateway is dropped.
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        let pause = {
            let Some(inner) = inner.upgrade() else { return };
            let evict = inner
                .evict_idle_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            let idle = match inner
                .executor_idle_ms
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                0 => evict,
                stop => stop.min(evict),
            };
            Duration::from_millis((idle / 2).clamp(10, 5_000))
        };
        tokio::time::sleep(pause).await;
        let Some(inner) = inner.upgrade() else { return };
        Gateway { inner }.evict_idle().await;
    }
}
