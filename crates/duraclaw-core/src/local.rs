//! [`LocalSession`]: a session run in this process, with no gateway and no
//! WebSocket, for an application that is one binary.
//!
//! The executor's events go through the same [`SessionActor`] a host uses:
//! they are numbered, stored (persist before forward), drive the state
//! machine and reach subscribers; commands are applied once and logged as
//! a host logs them; answers are recorded first-answer-wins and handed to
//! the executor's waiting tool call; a tool that ran without an allowing
//! decision ends the session ([`ToolGuard`]). An answer's
//! `question.resolved` is logged once: the executor's confirmation of the
//! same decision is not logged again (there is no gateway delivery to
//! confirm, unlike a host's log).
//!
//! ```
//! # use std::sync::Arc;
//! # use duraclaw_core::executor::DynExecutor;
//! # use duraclaw_core::store::DynSessionStore;
//! # async fn demo(executor: DynExecutor, store: DynSessionStore) -> duraclaw_core::Result<()> {
//! use duraclaw_core::local::LocalSession;
//! use duraclaw_core::protocol::{Decision, Event, Execute};
//!
//! let session = LocalSession::start(executor, store, "alice", Execute::new("/srv/app", "Fix it")).await?;
//! let mut events = session.subscribe(0);
//! while let Some(e) = events.next().await {
//!     if let Event::UserQuestion(q) = e?.event()? {
//!         let allow = Decision::Allow { updated_input: None, remember: false };
//!         session.answer(&q.question_id, allow).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::channel::oneshot;
use futures::lock::Mutex as AsyncMutex;

use crate::approval::{ApprovalGate, ApprovalRequest, DecideOutcome};
use crate::backend::actor::{Person, SessionActor, Subscription};
use crate::backend::guard::ToolGuard;
use crate::clock::SharedClock;
#[cfg(not(target_arch = "wasm32"))]
use crate::clock::SystemClock;
use crate::error::{Error, Result};
use crate::executor::{DynExecutor, EventSink, ExecutorSession, StartSpec};
use crate::protocol::{
    Abort, Close, Command, DecidedBy, Decision, ErrorEvent, Event, Execute, QuestionResolved, Seq,
    Snapshot, UserTurn, WireError,
};
use crate::state::SessionInput;
use crate::store::{DynSessionStore, Resolution};

/// A session whose executor runs in this process.
pub struct LocalSession {
    actor: SessionActor,
    executor: DynExecutor,
    gate: Arc<WaitGate>,
    sink: Arc<ActorSink>,
    session: AsyncMutex<Box<dyn ExecutorSession>>,
    user: Person,
    clock: SharedClock,
    commands: AtomicU64,
}

impl std::fmt::Debug for LocalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSession")
            .field("session_id", &self.actor.session_id())
            .finish_non_exhaustive()
    }
}

impl LocalSession {
    /// Starts a new session in `store` (a session just created in a
    /// [`SessionDirectory`](crate::store::SessionDirectory)) for `user`:
    /// logs the first prompt and starts `executor` on it.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn start(
        executor: DynExecutor,
        store: DynSessionStore,
        user: &str,
        execute: Execute,
    ) -> Result<Self> {
        Self::start_with_clock(executor, store, user, execute, SystemClock::shared()).await
    }

    /// [`LocalSession::start`] with the time from `clock`.
    pub async fn start_with_clock(
        executor: DynExecutor,
        store: DynSessionStore,
        user: &str,
        execute: Execute,
        clock: SharedClock,
    ) -> Result<Self> {
        let mut meta = store.meta().await?;
        if meta.worktree.is_empty() {
            meta.worktree.clone_from(&execute.worktree);
            store.put_meta(&meta).await?;
        }
        let actor = SessionActor::open(store, clock.clone()).await?;
        let user = Person {
            user: user.to_owned(),
            client: Some("in-process".into()),
        };
        let sink = ActorSink::new(&actor).await?;
        let this = LocalSession::new(actor, executor, sink, user, clock);
        let id = this.command_id("execute");
        let done = this.actor.execute(&id, execute.clone(), &this.user).await?;
        this.actor.on_command_result(&done.result).await?;
        let spec = StartSpec {
            prompt: Some(execute.prompt),
            model: execute.model,
            permission_mode: execute.permission_mode,
            system_prompt: execute.system_prompt,
            ..StartSpec::new(this.actor.session_id(), execute.worktree)
        };
        this.begin(spec).await?;
        Ok(this)
    }

    /// Opens a session of an earlier run from `store` (after a restart):
    /// questions that run left open are withdrawn (no process waits for
    /// them any more); the next [`send`](LocalSession::send) resumes the
    /// executor session the log names.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn reopen(executor: DynExecutor, store: DynSessionStore, user: &str) -> Result<Self> {
        Self::reopen_with_clock(executor, store, user, SystemClock::shared()).await
    }

    /// [`LocalSession::reopen`] with the time from `clock`.
    pub async fn reopen_with_clock(
        executor: DynExecutor,
        store: DynSessionStore,
        user: &str,
        clock: SharedClock,
    ) -> Result<Self> {
        let actor = SessionActor::open(store, clock.clone()).await?;
        let user = Person {
            user: user.to_owned(),
            client: Some("in-process".into()),
        };
        let sink = ActorSink::new(&actor).await?;
        for q in actor.log().store().questions(true).await? {
            let withdrawn = Event::QuestionResolved(QuestionResolved {
                question_id: q.question.question_id,
                decision: Decision::Cancelled {
                    reason: Some("the process restarted and the tool call was not run".into()),
                },
                by: DecidedBy::new("in-process"),
                at_ms: clock.now_ms(),
            });
            sink.log(withdrawn).await?;
        }
        Ok(LocalSession::new(actor, executor, sink, user, clock))
    }

    fn new(
        actor: SessionActor,
        executor: DynExecutor,
        sink: Arc<ActorSink>,
        user: Person,
        clock: SharedClock,
    ) -> Self {
        LocalSession {
            actor,
            executor,
            gate: Arc::new(WaitGate::new(clock.clone())),
            sink,
            session: AsyncMutex::new(Box::new(NotStarted)),
            user,
            clock,
            commands: AtomicU64::new(0),
        }
    }

    /// Starts the executor for the turn just logged. One that cannot start
    /// ([`Executor::check`](crate::executor::Executor::check) or `start`
    /// fails) ends that turn with an `error` carrying the reason's code
    /// (e.g. `executor_unsupported`), and the error is returned.
    async fn begin(&self, spec: StartSpec) -> Result<()> {
        let started = match self.executor.check().await {
            Ok(()) => {
                self.executor
                    .start(spec, self.gate.clone(), self.sink.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(session) => {
                *self.session.lock().await = session;
                Ok(())
            }
            Err(e) => {
                let refused = Event::Error(ErrorEvent {
                    message: format!("the executor did not start: {e}"),
                    code: Some(WireError::from(&e).code),
                    ..ErrorEvent::default()
                });
                self.actor.record(&refused).await?;
                self.actor.apply_input(SessionInput::TurnEnded).await?;
                Err(e)
            }
        }
    }

    /// A command id no earlier run used.
    fn command_id(&self, what: &str) -> String {
        format!(
            "{what}-{}-{}",
            self.clock.now_ms(),
            self.commands.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The session's actor (its log, metadata and state).
    pub fn actor(&self) -> &SessionActor {
        &self.actor
    }

    /// Every event with seq > `after`, then live ones, in order, exactly
    /// once.
    pub fn subscribe(&self, after: Seq) -> Subscription {
        self.actor.log().subscribe(after)
    }

    /// The state and the pending questions.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        self.actor.snapshot().await
    }

    /// Sends a message (a new turn; queued while a turn runs). An agent
    /// whose process ended is resumed first.
    pub async fn send(&self, text: &str) -> Result<()> {
        self.refuse_if_stopped().await?;
        let id = self.command_id("message");
        let command = Command::Message(UserTurn {
            text: text.to_owned(),
        });
        let done = self.actor.command(&id, command, &self.user).await?;
        self.actor.on_command_result(&done.result).await?;
        let session = self.session.lock().await;
        if session.is_running() {
            return session.send_message(text).await;
        }
        drop(session);
        let meta = self.actor.meta().await;
        let mut spec = StartSpec::new(meta.session_id, meta.worktree).with_prompt(text);
        spec.resume = meta.executor_session_id;
        spec.model = meta.model;
        self.begin(spec).await
    }

    /// Answers question `question_id`, first answer wins: recorded in the
    /// log, then handed to the executor's waiting tool call.
    pub async fn answer(&self, question_id: &str, decision: Decision) -> Result<DecideOutcome> {
        self.refuse_if_stopped().await?;
        let id = self.command_id("answer");
        let by = DecidedBy {
            who: self.user.user.clone(),
            client: self.user.client.clone(),
        };
        let done = self
            .actor
            .decide(&id, question_id, decision.clone(), by.clone())
            .await?;
        self.actor.on_command_result(&done.result).await?;
        match done.decided {
            // The executor logs the `question.resolved` itself.
            Some(DecideOutcome::Decided) => self.gate.decide(question_id, decision, by).await,
            Some(other) => Ok(other),
            None => Ok(DecideOutcome::Decided),
        }
    }

    /// Interrupts the running turn.
    pub async fn interrupt(&self) -> Result<()> {
        let id = self.command_id("abort");
        let done = self
            .actor
            .command(&id, Command::Abort(Abort {}), &self.user)
            .await?;
        self.actor.on_command_result(&done.result).await?;
        self.session.lock().await.interrupt().await
    }

    /// Ends the session: the executor stops and the session is terminated.
    pub async fn close(&self) -> Result<()> {
        let id = self.command_id("close");
        let done = self
            .actor
            .command(&id, Command::Close(Close {}), &self.user)
            .await?;
        self.actor.on_command_result(&done.result).await?;
        self.session.lock().await.shutdown().await
    }

    /// Stops the executor, leaving the session as it is (to
    /// [`reopen`](LocalSession::reopen) later).
    pub async fn shutdown(&self) -> Result<()> {
        self.session.lock().await.shutdown().await
    }

    /// A tool ran without approval: the log says so, the session is
    /// terminated, and its process is killed here.
    async fn refuse_if_stopped(&self) -> Result<()> {
        if self.sink.stopped.load(Ordering::Acquire) {
            self.session.lock().await.kill().await?;
            return Err(Error::Invalid(
                "this session was stopped: a tool ran without approval".into(),
            ));
        }
        Ok(())
    }
}

/// The executor's sink: numbers events as a gateway does and hands them to
/// the actor, checking each with the [`ToolGuard`].
#[derive(Debug)]
struct ActorSink {
    actor: SessionActor,
    gseq: AsyncMutex<u64>,
    guard: Mutex<ToolGuard>,
    stopped: AtomicBool,
}

impl ActorSink {
    // Single-threaded on wasm32, like everything the actor holds there.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    async fn new(actor: &SessionActor) -> Result<Arc<Self>> {
        let head = actor.log().store().head().await?;
        Ok(Arc::new(ActorSink {
            actor: actor.clone(),
            gseq: AsyncMutex::new(head.highest_gseq),
            guard: Mutex::new(ToolGuard::new()),
            stopped: AtomicBool::new(false),
        }))
    }

    /// Whether `resolved` repeats the decision [`LocalSession::answer`]
    /// logged already (the executor confirms what it was told): logged
    /// once is enough.
    async fn already_logged(&self, resolved: &QuestionResolved) -> Result<bool> {
        let questions = self.actor.log().store().questions(false).await?;
        Ok(questions.into_iter().any(|q| {
            q.question.question_id == resolved.question_id
                && q.resolution.is_some_and(|first| {
                    first.decision == resolved.decision && first.by == resolved.by
                })
        }))
    }

    async fn log(&self, event: Event) -> Result<()> {
        let mut gseq = self.gseq.lock().await;
        let next = *gseq + 1;
        let outcome = self.actor.ingest(vec![(next, event)]).await?;
        if outcome.gap_at.is_some() {
            return Err(Error::storage(
                "log",
                format!("event {next} was not stored"),
            ));
        }
        *gseq = next;
        Ok(())
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl EventSink for ActorSink {
    async fn emit(&self, event: Event) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) && !matches!(event, Event::QuestionResolved(_)) {
            return Ok(());
        }
        let unapproved = self
            .guard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(&event);
        if let Event::QuestionResolved(r) = &event
            && self.already_logged(r).await?
        {
            return Ok(());
        }
        self.log(event).await?;
        if let Some(bad) = unapproved {
            tracing::error!(
                session = %self.actor.session_id(),
                tool = %bad.tool_name,
                tool_use_id = %bad.tool_use_id,
                "a tool ran without approval; the session is stopped"
            );
            self.stopped.store(true, Ordering::Release);
            self.log(bad.error_event()).await?;
        }
        Ok(())
    }
}

/// Before the executor started.
#[derive(Debug)]
struct NotStarted;

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl ExecutorSession for NotStarted {
    async fn send_message(&self, _text: &str) -> Result<()> {
        Err(Error::Closed("in-process session"))
    }
    async fn interrupt(&self) -> Result<()> {
        Ok(())
    }
    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }
    fn is_running(&self) -> bool {
        false
    }
}

#[derive(Debug, Default)]
struct GateState {
    pending: BTreeMap<String, (ApprovalRequest, Vec<oneshot::Sender<Resolution>>)>,
    decided: HashMap<String, Resolution>,
}

/// A gate in memory: a request waits until it is decided or withdrawn;
/// first answer wins. What it holds is not durable (the log is).
#[derive(Debug)]
pub(crate) struct WaitGate {
    state: Mutex<GateState>,
    clock: SharedClock,
}

impl WaitGate {
    pub(crate) fn new(clock: SharedClock) -> Self {
        WaitGate {
            state: Mutex::new(GateState::default()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `question_id` was asked (pending or decided).
    #[cfg_attr(not(feature = "conformance"), allow(dead_code))]
    pub(crate) fn holds(&self, question_id: &str) -> bool {
        let st = self.lock();
        st.pending.contains_key(question_id) || st.decided.contains_key(question_id)
    }

    fn settle(&self, question_id: &str, resolution: Resolution) -> Result<DecideOutcome> {
        let mut st = self.lock();
        if let Some(first) = st.decided.get(question_id) {
            return Ok(DecideOutcome::AlreadyDecided {
                first: first.clone(),
            });
        }
        let Some((_, waiters)) = st.pending.remove(question_id) else {
            return Err(Error::NotFound {
                what: "question",
                id: question_id.to_owned(),
            });
        };
        st.decided
            .insert(question_id.to_owned(), resolution.clone());
        for w in waiters {
            let _ = w.send(resolution.clone());
        }
        Ok(DecideOutcome::Decided)
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl ApprovalGate for WaitGate {
    async fn request(&self, request: ApprovalRequest) -> Result<Resolution> {
        let rx = {
            let mut st = self.lock();
            let id = request.question.question_id.clone();
            if let Some(r) = st.decided.get(&id) {
                return Ok(r.clone());
            }
            let (tx, rx) = oneshot::channel();
            st.pending
                .entry(id)
                .or_insert_with(|| (request, Vec::new()))
                .1
                .push(tx);
            rx
        };
        rx.await.map_err(|_| Error::Closed("approval gate"))
    }

    async fn decide(
        &self,
        question_id: &str,
        decision: Decision,
        by: DecidedBy,
    ) -> Result<DecideOutcome> {
        let at_ms = self.clock.now_ms();
        self.settle(
            question_id,
            Resolution {
                decision,
                by,
                at_ms,
            },
        )
    }

    async fn pending(&self) -> Result<Vec<ApprovalRequest>> {
        Ok(self
            .lock()
            .pending
            .values()
            .map(|(r, _)| r.clone())
            .collect())
    }

    async fn cancel(&self, question_id: &str, reason: &str) -> Result<DecideOutcome> {
        let at_ms = self.clock.now_ms();
        self.settle(
            question_id,
            Resolution {
                decision: Decision::Cancelled {
                    reason: Some(reason.to_owned()),
                },
                by: DecidedBy::new("executor"),
                at_ms,
            },
        )
    }
}
