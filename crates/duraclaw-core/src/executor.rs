//! [`Executor`]: runs an agent in a worktree.
//!
//! An executor starts or resumes a session and reports what happens as
//! [`Event`]s to an [`EventSink`]; it asks the [`ApprovalGate`] before every
//! tool call. The shape fits Claude Code's CLI, a scripted executor, and ACP
//! or Codex agents later: nothing here is Claude-specific. The contract an
//! executor keeps is written on [`Executor`]; the `conformance` feature's
//! `executor_conformance_tests!` checks it.
//!
//! [`ApprovalGate`]: crate::approval::ApprovalGate

use std::sync::Arc;

use async_trait::async_trait;

use crate::approval::{ApprovalRequest, DynApprovalGate};
use crate::error::Result;
use crate::protocol::{Event, QuestionKind, QuestionResolved, UserQuestion};
use crate::store::Resolution;
use crate::{SendOutsideWasm, SyncOutsideWasm};

/// How to start a session.
///
/// ```
/// use duraclaw_core::executor::StartSpec;
/// let spec = StartSpec::new("s1", "/srv/app").with_prompt("Fix the greeting");
/// assert_eq!(spec.prompt.as_deref(), Some("Fix the greeting"));
/// assert!(spec.resume.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartSpec {
    /// The Duraclaw session id.
    pub session_id: String,
    /// The worktree to run in (already validated).
    pub worktree: String,
    /// The first prompt, if any.
    pub prompt: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Permission mode.
    pub permission_mode: Option<String>,
    /// Extra system prompt.
    pub system_prompt: Option<String>,
    /// Resume this executor session instead of starting a new one.
    pub resume: Option<String>,
    /// With `resume`: fork it (a new executor session) keeping its
    /// conversation up to and including this message id.
    pub fork_at: Option<String>,
}

impl StartSpec {
    /// Starts session `session_id` in `worktree`, with no prompt yet.
    pub fn new(session_id: impl Into<String>, worktree: impl Into<String>) -> Self {
        StartSpec {
            session_id: session_id.into(),
            worktree: worktree.into(),
            ..StartSpec::default()
        }
    }

    /// With the first prompt.
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// Resuming the executor session `executor_session_id` (the id its
    /// `session_init` reported).
    pub fn with_resume(mut self, executor_session_id: impl Into<String>) -> Self {
        self.resume = Some(executor_session_id.into());
        self
    }

    /// With a model name.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// With a permission mode.
    pub fn with_permission_mode(mut self, mode: impl Into<String>) -> Self {
        self.permission_mode = Some(mode.into());
        self
    }

    /// With an extra system prompt.
    pub fn with_system_prompt(mut self, system_prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(system_prompt.into());
        self
    }
}

/// Where an executor reports its events, in order.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait EventSink: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Records one event; returns once it is durable (or queued durably).
    async fn emit(&self, event: Event) -> Result<()>;
}

/// A shared, dynamically typed sink.
pub type DynEventSink = Arc<dyn EventSink>;

/// A running session of an executor.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait ExecutorSession: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Sends a follow-up user turn. A message sent while a turn runs is
    /// played after it, as its own turn. Fails (never panics) once the
    /// session has ended.
    async fn send_message(&self, text: &str) -> Result<()>;

    /// Interrupts the running turn: its open questions are withdrawn (each
    /// resolved `cancelled`, once), one not yet shown (the gate still looks
    /// it up in its rules) is never shown ([`ask_unless`]), and the turn
    /// ends with a `result` that has `is_error` set. The session stays usable: the next message
    /// plays a new turn. Interrupting an idle session does nothing.
    async fn interrupt(&self) -> Result<()>;

    /// Ends the session and its process; returns once the session's last
    /// event was emitted. Shutting down twice is fine.
    async fn shutdown(&self) -> Result<()>;

    /// Ends the session's process at once, giving it no time to finish
    /// anything (it ran a tool nobody allowed). An executor that cannot
    /// do better shuts down.
    async fn kill(&self) -> Result<()> {
        self.shutdown().await
    }

    /// Switches the permission mode (already checked with
    /// [`check_permission_mode`](crate::protocol::check_permission_mode));
    /// the executor logs the change as a `mode_changed` notice. An
    /// executor that cannot switch says so.
    async fn set_permission_mode(&self, mode: &str) -> Result<()> {
        Err(crate::Error::Invalid(format!(
            "this executor cannot switch the permission mode (to `{mode}`) mid-session"
        )))
    }

    /// Switches the model; the executor logs a `model_changed` notice
    /// naming the model it now uses. An executor that cannot switch says so.
    async fn set_model(&self, model: &str) -> Result<()> {
        Err(crate::Error::Invalid(format!(
            "this executor cannot switch the model (to `{model}`) mid-session"
        )))
    }

    /// Whether the session's process is still running.
    fn is_running(&self) -> bool;
}

/// Starts agent sessions.
///
/// # The contract
///
/// What an executor promises, checked for every executor by the
/// `conformance` feature's `executor_conformance_tests!` (an
/// [`ExecutorHarness`](https://docs.rs/duraclaw-core/latest/duraclaw_core/conformance/trait.ExecutorHarness.html)
/// gives it the executor):
///
/// - **Event order.** A session's first event is `session_init`, carrying
///   the executor session id that [`StartSpec::resume`] takes back (it may
///   come again at a turn's start, with the same id). Every
///   prompt (the first one and each [`ExecutorSession::send_message`])
///   plays one turn that ends with exactly one `result`, or, when the
///   turn fails for good (the agent's process died), with an `error`
///   instead; nothing of a turn comes after its end. A message's `assistant` deltas come before
///   its `final`. A tool call is `tool_use`, then its `user_question` (or
///   the `auto_allowed` notice of a standing allow), then the
///   `question.resolved`, then the `tool_result` with the same
///   `tool_use_id`; a tool runs only after a decision that allows it.
/// - **Questions: the executor logs them, the gate does not.** Every tool
///   call and every question to the user goes through the
///   [`ApprovalGate`](crate::approval::ApprovalGate). The executor logs the
///   `user_question` and exactly one `question.resolved` for it, both to
///   the sink; gates log nothing to the session. Use [`ask`] (or, when the
///   question goes out among other events, [`HeldQuestion`]): it does it in
///   this order and no other.
/// - **Held before visible.** The gate holds a request before its
///   `user_question` is emitted, so an answer sent the moment the question
///   is seen finds it. [`HeldQuestion::hold`] does this (it polls the
///   request once before the question is logged).
/// - **Interrupt.** [`ExecutorSession::interrupt`] withdraws the turn's
///   open questions with [`ApprovalGate::cancel`](crate::approval::ApprovalGate::cancel)
///   and ends the turn with a `result` whose `is_error` is set. Whoever
///   still waits on a question logs its resolution; an executor that
///   dropped the waiter withdraws with [`withdraw`], which logs it.
/// - **Ids.** Question ids, tool-use ids and message ids are unique within
///   the session, across resumes too (a resumed session never reuses an id
///   of its past).
/// - **Resume.** [`StartSpec::resume`] continues the executor session a
///   `session_init` named; the resumed session reports the same executor
///   session id and plays the next prompt as a new turn.
/// - **Errors.** A turn that fails ends with an `error` event or a
///   `result` with `is_error`. The session stays usable: the next message
///   plays a new turn; if the agent's process died
///   ([`ExecutorSession::is_running`] is false), the host starts the
///   session again resuming its executor session. Calls
///   on a session that has ended return an [`Error`](crate::Error), never
///   panic. [`Executor::check`] says why sessions cannot start at all.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Executor: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Whether sessions can start here; the error says why not (e.g.
    /// [`Error::ExecutorUnsupported`](crate::Error::ExecutorUnsupported)
    /// for a CLI older than the minimum). Checked when a gateway starts
    /// and before every session start.
    async fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Starts (or resumes) a session; its events go to `sink`, its tool calls
    /// through `gate`. With [`StartSpec::prompt`] set, the first turn plays
    /// at once.
    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>>;
}

/// A shared, dynamically typed executor.
pub type DynExecutor = Arc<dyn Executor>;

#[cfg(not(target_arch = "wasm32"))]
type DecisionFuture = futures::future::BoxFuture<'static, Result<Resolution>>;
#[cfg(target_arch = "wasm32")]
type DecisionFuture = futures::future::LocalBoxFuture<'static, Result<Resolution>>;

/// A question the gate holds and nobody has seen yet.
///
/// [`HeldQuestion::hold`] hands the request to the gate; log
/// [`HeldQuestion::event`], then wait for [`HeldQuestion::decision`] and
/// log [`question_resolved`] for it. [`ask`] does all of that.
pub struct HeldQuestion {
    question: UserQuestion,
    first: Option<Result<Resolution>>,
    decision: DecisionFuture,
}

impl std::fmt::Debug for HeldQuestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldQuestion")
            .field("question_id", &self.question.question_id)
            .field("decided", &self.first.is_some())
            .finish_non_exhaustive()
    }
}

impl HeldQuestion {
    /// Hands `request` to `gate` and polls the request once, so that the
    /// gate holds it (gates register a request before they first wait)
    /// before the question is visible.
    pub async fn hold(gate: DynApprovalGate, request: ApprovalRequest) -> HeldQuestion {
        let question = request.question.clone();
        let mut decision: DecisionFuture = Box::pin(async move { gate.request(request).await });
        let first = match futures::poll!(decision.as_mut()) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        };
        HeldQuestion {
            question,
            first,
            decision,
        }
    }

    /// The question's id.
    pub fn question_id(&self) -> &str {
        &self.question.question_id
    }

    /// The `user_question` event to log now.
    pub fn event(&self) -> Event {
        Event::UserQuestion(self.question.clone())
    }

    /// Waits for the gate's decision. Log [`question_resolved`] for it.
    pub async fn decision(self) -> Result<Resolution> {
        match self.first {
            Some(r) => r,
            None => self.decision.await,
        }
    }
}

/// The `question.resolved` event for `resolution` of `question_id`.
pub fn question_resolved(question_id: &str, resolution: &Resolution) -> Event {
    Event::QuestionResolved(QuestionResolved {
        question_id: question_id.to_owned(),
        decision: resolution.decision.clone(),
        by: resolution.by.clone(),
        at_ms: resolution.at_ms,
    })
}

/// Asks `gate` about `request` and logs it to `sink`, the one way an
/// executor logs a question: a rule that decides it logs its
/// `rule_decision` notice and decides; an "allow for this session" that answers it
/// logs its `auto_allowed` notice and allows; otherwise the gate holds the
/// request, the `user_question` is logged, and once decided, the
/// `question.resolved`. Returns the decision.
///
/// If the caller stops waiting (the turn was interrupted), the question is
/// still open: withdraw it with [`withdraw`].
pub async fn ask(
    gate: &DynApprovalGate,
    sink: &dyn EventSink,
    request: ApprovalRequest,
) -> Result<Resolution> {
    ask_unless(gate, sink, request, || false)
        .await?
        .ok_or_else(|| crate::Error::Invalid("a question nobody withdrew was withdrawn".into()))
}

/// [`ask`], for a question its caller may withdraw while it is being asked
/// (its turn interrupted, its session stopping): `withdrawn` is checked
/// first, and again once the gate holds the question, before it is logged.
/// Withdrawn, the question is cancelled at the gate, nothing is logged and
/// `None` comes back: answer the asker "cancelled".
///
/// A caller that makes `withdrawn` true *before* it withdraws the gate's
/// questions (with [`withdraw`] or the gate's `cancel`) never leaves one
/// open: either its withdrawal finds the question held, or the check after
/// holding sees it withdrawn.
pub async fn ask_unless(
    gate: &DynApprovalGate,
    sink: &dyn EventSink,
    request: ApprovalRequest,
    withdrawn: impl Fn() -> bool,
) -> Result<Option<Resolution>> {
    if withdrawn() {
        return Ok(None);
    }
    if let Some(decided) = gate.by_rule(&request).await? {
        sink.emit(Event::Notice(decided.notice)).await?;
        return Ok(Some(decided.resolution));
    }
    if let QuestionKind::Permission { tool_name, .. } = &request.question.kind
        && let Some(allow) = gate.standing_allow(&request).await?
    {
        sink.emit(Event::Notice(
            allow.notice(tool_name, request.question.tool_use_id.as_deref()),
        ))
        .await?;
        return Ok(Some(Resolution {
            decision: crate::protocol::Decision::Allow {
                updated_input: None,
                remember: false,
            },
            by: allow.by,
            at_ms: request.asked_at_ms,
        }));
    }
    let held = HeldQuestion::hold(gate.clone(), request).await;
    let id = held.question_id().to_owned();
    if withdrawn() {
        // Withdrawn while the rules were looked up: a withdrawal that ran
        // then did not find it at the gate.
        gate.cancel(&id, "withdrawn before it was asked").await?;
        return Ok(None);
    }
    sink.emit(held.event()).await?;
    let resolution = held.decision().await?;
    sink.emit(question_resolved(&id, &resolution)).await?;
    Ok(Some(resolution))
}

/// Withdraws `question_id` (the turn was interrupted and nobody waits on
/// it any more): cancels it at the gate and, when the cancel was the
/// decision, logs its `question.resolved`. A question decided first keeps
/// that decision, and its resolution is left to whoever waited on it.
pub async fn withdraw(
    gate: &DynApprovalGate,
    sink: &dyn EventSink,
    question_id: &str,
    reason: &str,
    by: crate::protocol::DecidedBy,
    now_ms: i64,
) -> Result<()> {
    if let crate::approval::DecideOutcome::Decided = gate.cancel(question_id, reason).await? {
        let resolved = Resolution {
            decision: crate::protocol::Decision::Cancelled {
                reason: Some(reason.to_owned()),
            },
            by,
            at_ms: now_ms,
        };
        sink.emit(question_resolved(question_id, &resolved)).await?;
    }
    Ok(())
}
