//! The executor suite: the contract written on
//! [`Executor`](crate::executor::Executor), checked case by case.
//!
//! A case tells the harness what each turn should do ([`Play`]), starts
//! the harness's executor with a gate and a sink of the suite's own, drives
//! it through [`ExecutorSession`] and checks the events it logged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};

use super::{CaseError, CaseResult};
use crate::approval::{
    ApprovalGate, ApprovalRequest, DecideOutcome, DynApprovalGate, RuleDecided, StandingAllow,
};
use crate::error::Result;
use crate::executor::{DynExecutor, EventSink, ExecutorSession, StartSpec};
use crate::protocol::{AssistantPhase, DecidedBy, Decision, Event, QuestionKind};
use crate::store::Resolution;
use crate::{SendOutsideWasm, SyncOutsideWasm};

/// How long a case waits for one thing (an event, a call) before it fails.
pub const EXECUTOR_CASE_WAIT_MS: u64 = 60_000;

/// What one turn of a case does. A harness makes its executor play it for
/// the turn's prompt; the suite checks the events, not the words, except
/// where a variant says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Play {
    /// Answers with exactly this text (its `final` message says it).
    Reply(String),
    /// Calls one tool that needs approval (a harmless command such as
    /// `echo conformance`), then answers with any text.
    Tool,
    /// Asks the user [`ASK_QUESTION`] with the options [`ASK_OPTIONS`]
    /// (AskUserQuestion), then answers with any text.
    Ask,
    /// Streams some text, then waits until interrupted.
    Stall,
    /// Fails the way the agent fails (an API error, a crashing step).
    Fail,
}

/// The question [`Play::Ask`] asks.
pub const ASK_QUESTION: &str = "Go on with the change?";
/// The options of [`ASK_QUESTION`].
pub const ASK_OPTIONS: [&str; 2] = ["Yes", "No"];

/// An executor ready for a case and what it needs kept alive.
pub struct ExecutorUnderTest {
    /// The executor. A case may start it twice (the second time resuming).
    pub executor: DynExecutor,
    /// The worktree its sessions run in.
    pub worktree: String,
    /// Whatever must live as long as the case (servers, directories).
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

/// Gives an executor to the executor suite.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait ExecutorHarness: SendOutsideWasm + SyncOutsideWasm {
    /// An executor whose session plays `turns`, one per prompt in order
    /// (the first prompt plays `turns[0]`), also across a resume.
    async fn executor(&self, turns: &[Play]) -> Result<ExecutorUnderTest>;

    /// Waits `ms` milliseconds (the suite has no timer of its own).
    async fn sleep(&self, ms: u64);
}

// ---------------------------------------------------------------------------
// The suite's gate and sink
// ---------------------------------------------------------------------------

/// The suite's gate: the in-process one.
type SuiteGate = crate::local::WaitGate;

fn suite_clock() -> crate::clock::SharedClock {
    crate::clock::ManualClock::new(super::T0).shared()
}

/// Records events, checks that every question is held before it shows,
/// and answers questions the moment they show when told to.
#[derive(Debug)]
struct SuiteSink {
    gate: Arc<SuiteGate>,
    tx: mpsc::UnboundedSender<Event>,
    on_sight: Mutex<Option<Decision>>,
    faults: Mutex<Vec<String>>,
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl EventSink for SuiteSink {
    async fn emit(&self, event: Event) -> Result<()> {
        if let Event::UserQuestion(q) = &event {
            if !self.gate.holds(&q.question_id) {
                self.fault(format!(
                    "question {} was logged before the gate held it",
                    q.question_id
                ));
            }
            let answer = self
                .on_sight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(decision) = answer {
                // Answered the moment it shows: the request must be there.
                if let Err(e) = self
                    .gate
                    .decide(&q.question_id, decision, DecidedBy::new("suite"))
                    .await
                {
                    self.fault(format!("answering {} on sight: {e}", q.question_id));
                }
            }
        }
        let _ = self.tx.unbounded_send(event);
        Ok(())
    }
}

impl SuiteSink {
    fn fault(&self, what: String) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }
}

/// The suite's gate with its first rule look-up held: it tells `entered`,
/// waits for `go`, and any `cancel` meanwhile tells `cancelled`. The moment
/// between an executor's last look at its turn and the gate holding the
/// question.
#[derive(Debug)]
struct HeldRules {
    inner: Arc<SuiteGate>,
    entered: Mutex<Option<oneshot::Sender<()>>>,
    go: Mutex<Option<oneshot::Receiver<()>>>,
    cancelled: Mutex<Option<oneshot::Sender<()>>>,
}

/// The test's ends of [`HeldRules`].
struct RulesHeld {
    entered: oneshot::Receiver<()>,
    cancelled: oneshot::Receiver<()>,
    go: oneshot::Sender<()>,
}

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl ApprovalGate for HeldRules {
    async fn request(&self, request: ApprovalRequest) -> Result<Resolution> {
        self.inner.request(request).await
    }
    async fn decide(
        &self,
        question_id: &str,
        decision: Decision,
        by: DecidedBy,
    ) -> Result<DecideOutcome> {
        self.inner.decide(question_id, decision, by).await
    }
    async fn pending(&self) -> Result<Vec<ApprovalRequest>> {
        self.inner.pending().await
    }
    async fn cancel(&self, question_id: &str, reason: &str) -> Result<DecideOutcome> {
        if let Some(tx) = take(&self.cancelled) {
            let _ = tx.send(());
        }
        self.inner.cancel(question_id, reason).await
    }
    async fn standing_allow(&self, request: &ApprovalRequest) -> Result<Option<StandingAllow>> {
        self.inner.standing_allow(request).await
    }
    async fn by_rule(&self, request: &ApprovalRequest) -> Result<Option<RuleDecided>> {
        if let Some(tx) = take(&self.entered) {
            let _ = tx.send(());
            if let Some(go) = take(&self.go) {
                let _ = go.await;
            }
        }
        self.inner.by_rule(request).await
    }
}

/// One case's view of an executor: start it, collect its events, wait.
struct Rig<'a> {
    h: &'a dyn ExecutorHarness,
    under: ExecutorUnderTest,
    gate: Arc<SuiteGate>,
    /// What the executor is given: the gate, or [`HeldRules`] around it.
    exec_gate: DynApprovalGate,
    sink: Arc<SuiteSink>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Every event so far, in order.
    events: Vec<Event>,
}

impl<'a> Rig<'a> {
    async fn new(
        h: &'a dyn ExecutorHarness,
        turns: &[Play],
    ) -> std::result::Result<Self, CaseError> {
        let under = h.executor(turns).await?;
        let gate = Arc::new(SuiteGate::new(suite_clock()));
        let (tx, rx) = mpsc::unbounded();
        let sink = Arc::new(SuiteSink {
            gate: gate.clone(),
            tx,
            on_sight: Mutex::new(None),
            faults: Mutex::new(Vec::new()),
        });
        Ok(Rig {
            h,
            under,
            exec_gate: gate.clone(),
            gate,
            sink,
            rx,
            events: Vec::new(),
        })
    }

    fn spec(&self, session: &str) -> StartSpec {
        StartSpec::new(session, self.under.worktree.clone())
    }

    async fn start(
        &self,
        spec: StartSpec,
    ) -> std::result::Result<Box<dyn ExecutorSession>, CaseError> {
        let start = self
            .under
            .executor
            .start(spec, self.exec_gate.clone(), self.sink.clone());
        Ok(within(self.h, "the session to start", start).await??)
    }

    /// Gives the executor [`HeldRules`] around the suite's gate.
    fn hold_rules(&mut self) -> RulesHeld {
        let (entered_tx, entered) = oneshot::channel();
        let (go, go_rx) = oneshot::channel();
        let (cancelled_tx, cancelled) = oneshot::channel();
        self.exec_gate = Arc::new(HeldRules {
            inner: self.gate.clone(),
            entered: Mutex::new(Some(entered_tx)),
            go: Mutex::new(Some(go_rx)),
            cancelled: Mutex::new(Some(cancelled_tx)),
        });
        RulesHeld {
            entered,
            cancelled,
            go,
        }
    }

    fn answer_on_sight(&self, decision: Decision) {
        *self.sink.on_sight.lock().unwrap_or_else(|p| p.into_inner()) = Some(decision);
    }

    /// Takes events until `done` holds for the one just taken; returns the
    /// index of that event.
    async fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Event) -> bool,
    ) -> std::result::Result<usize, CaseError> {
        loop {
            let next = match within(self.h, what, self.rx.next()).await {
                Ok(next) => next,
                Err(CaseError(e)) => {
                    let seen: Vec<String> = self
                        .events
                        .iter()
                        .map(|e| serde_json::to_string(e).unwrap_or_default())
                        .collect();
                    return Err(CaseError(format!("{e}; the events so far: {seen:?}")));
                }
            };
            let Some(event) = next else {
                return Err(CaseError(format!(
                    "the sink closed while waiting for {what}"
                )));
            };
            let hit = done(&event);
            self.events.push(event);
            if hit {
                return Ok(self.events.len() - 1);
            }
        }
    }

    /// Takes events up to the next `result` and returns it.
    async fn result(
        &mut self,
        what: &str,
    ) -> std::result::Result<crate::protocol::TurnResult, CaseError> {
        let at = self.until(what, |e| matches!(e, Event::Result(_))).await?;
        match &self.events[at] {
            Event::Result(r) => Ok(r.clone()),
            _ => Err(CaseError("not a result".into())),
        }
    }

    /// The session goes on after an interrupted turn: the next message
    /// plays a whole turn. Returns the index its events start at.
    async fn goes_on(
        &mut self,
        session: &dyn ExecutorSession,
    ) -> std::result::Result<usize, CaseError> {
        let mark = self.events.len();
        within(
            self.h,
            "send_message",
            session.send_message("Are you there?"),
        )
        .await??;
        let next = self.result("the next turn's result").await?;
        check!(!next.is_error, "the session did not go on: {next:?}");
        Ok(mark)
    }

    fn faults(&self) -> CaseResult {
        let faults = self.sink.faults.lock().unwrap_or_else(|p| p.into_inner());
        check!(faults.is_empty(), "contract broken: {faults:?}");
        Ok(())
    }
}

/// `fut`, or a failure naming `what` after [`EXECUTOR_CASE_WAIT_MS`] ms.
async fn within<T>(
    h: &dyn ExecutorHarness,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> std::result::Result<T, CaseError> {
    let fut = std::pin::pin!(fut);
    let timer = std::pin::pin!(h.sleep(EXECUTOR_CASE_WAIT_MS));
    match futures::future::select(fut, timer).await {
        futures::future::Either::Left((v, _)) => Ok(v),
        futures::future::Either::Right(_) => Err(CaseError(format!(
            "gave up waiting for {what} after {} s",
            EXECUTOR_CASE_WAIT_MS / 1000
        ))),
    }
}

fn name(e: &Event) -> &str {
    e.type_name()
}

/// The contract's order rules over a whole run of events.
fn check_order(events: &[Event]) -> CaseResult {
    let names: Vec<&str> = events.iter().map(name).collect();
    check!(
        matches!(events.first(), Some(Event::SessionInit(_))),
        "the first event is session_init: {names:?}"
    );
    let mut finals = HashSet::new();
    let mut tool_uses = HashMap::new();
    let mut asked = HashMap::new();
    let mut resolved: HashMap<&str, usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Delta => {
                check!(
                    !finals.contains(&a.message_id),
                    "a delta of message {} after its final: {names:?}",
                    a.message_id
                );
            }
            Event::Assistant(a) => {
                finals.insert(a.message_id.clone());
            }
            Event::ToolUse(t) => {
                check!(
                    tool_uses.insert(t.tool_use_id.clone(), i).is_none(),
                    "tool_use id {} used twice",
                    t.tool_use_id
                );
            }
            Event::UserQuestion(q) => {
                check!(
                    asked
                        .insert(q.question_id.clone(), (i, q.tool_use_id.clone()))
                        .is_none(),
                    "question id {} asked twice",
                    q.question_id
                );
                if let Some(t) = &q.tool_use_id {
                    check!(
                        tool_uses.get(t).is_some_and(|at| *at < i),
                        "question {} comes before its tool_use {t}: {names:?}",
                        q.question_id
                    );
                }
            }
            Event::QuestionResolved(r) => {
                check!(
                    asked.contains_key(&r.question_id),
                    "question {} resolved before it was asked: {names:?}",
                    r.question_id
                );
                *resolved.entry(r.question_id.as_str()).or_default() += 1;
            }
            Event::ToolResult(t) => {
                check!(
                    tool_uses.get(&t.tool_use_id).is_some_and(|at| *at < i),
                    "tool_result {} without an earlier tool_use",
                    t.tool_use_id
                );
                for (q, (_, about)) in &asked {
                    if about.as_deref() == Some(t.tool_use_id.as_str()) {
                        check!(
                            resolved.contains_key(q.as_str()),
                            "tool_result {} before its question {q} was resolved: {names:?}",
                            t.tool_use_id
                        );
                    }
                }
            }
            _ => {}
        }
    }
    for (id, n) in &resolved {
        check_eq!((*id, *n), (*id, 1usize));
    }
    Ok(())
}

fn questions(events: &[Event]) -> Vec<crate::protocol::UserQuestion> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::UserQuestion(q) => Some(q.clone()),
            _ => None,
        })
        .collect()
}

fn resolutions(events: &[Event]) -> Vec<crate::protocol::QuestionResolved> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::QuestionResolved(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn finals(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Assistant(a) if a.phase == AssistantPhase::Final => Some(a.text.clone()),
            _ => None,
        })
        .collect()
}

fn tool_results(events: &[Event]) -> Vec<crate::protocol::ToolResult> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ToolResult(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn executor_session(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::SessionInit(i) => i.executor_session_id.clone(),
        _ => None,
    })
}

fn message_ids(events: &[Event]) -> HashSet<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Assistant(a) => Some(a.message_id.clone()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

/// `session_init` first; each prompt one turn ending in one `result`;
/// deltas before their final; the final says what the turn played.
pub(crate) async fn turns_start_with_init_and_end_with_one_result(
    h: &dyn ExecutorHarness,
) -> CaseResult {
    let first = "The first answer of the suite.";
    let second = "The second answer of the suite.";
    let mut rig = Rig::new(h, &[Play::Reply(first.into()), Play::Reply(second.into())]).await?;
    let session = rig
        .start(rig.spec("order").with_prompt("Say something"))
        .await?;
    let r1 = rig.result("the first turn's result").await?;
    check!(!r1.is_error, "the first turn failed: {r1:?}");
    let after_first = rig.events.len();
    within(h, "send_message", session.send_message("And again")).await??;
    let r2 = rig.result("the second turn's result").await?;
    check!(!r2.is_error, "the second turn failed: {r2:?}");
    check_order(&rig.events)?;
    check_eq!(
        finals(&rig.events[..after_first]).last(),
        Some(&first.to_owned())
    );
    check_eq!(
        finals(&rig.events[after_first..]).last(),
        Some(&second.to_owned())
    );
    let results = rig
        .events
        .iter()
        .filter(|e| matches!(e, Event::Result(_)))
        .count();
    check_eq!(results, 2);
    let ids: HashSet<Option<String>> = rig
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SessionInit(i) => Some(i.executor_session_id.clone()),
            _ => None,
        })
        .collect();
    check_eq!(ids.len(), 1);
    within(h, "shutdown", session.shutdown()).await??;
    rig.faults()
}

/// A tool call is asked, held before it shows, answered the moment it
/// shows, resolved once, and runs after the allow.
pub(crate) async fn a_tool_call_is_held_asked_and_resolved_once(
    h: &dyn ExecutorHarness,
) -> CaseResult {
    let mut rig = Rig::new(h, &[Play::Tool]).await?;
    rig.answer_on_sight(Decision::Allow {
        updated_input: None,
        remember: false,
    });
    let session = rig.start(rig.spec("tool").with_prompt("Run it")).await?;
    let r = rig.result("the turn's result").await?;
    check!(!r.is_error, "the turn failed: {r:?}");
    check_order(&rig.events)?;
    let asked = questions(&rig.events);
    check_eq!(asked.len(), 1);
    check!(
        matches!(asked[0].kind, QuestionKind::Permission { .. }),
        "a tool call asks for permission: {:?}",
        asked[0]
    );
    let resolved = resolutions(&rig.events);
    check_eq!(resolved.len(), 1);
    check_eq!(resolved[0].by.who, "suite");
    check!(
        matches!(resolved[0].decision, Decision::Allow { .. }),
        "{resolved:?}"
    );
    let ran = tool_results(&rig.events);
    check_eq!(ran.len(), 1);
    check_eq!(Some(ran[0].tool_use_id.clone()), asked[0].tool_use_id);
    check!(!ran[0].is_error, "the allowed tool failed: {:?}", ran[0]);
    within(h, "shutdown", session.shutdown()).await??;
    rig.faults()
}

/// A denied tool does not run; its result is an error; one resolution.
pub(crate) async fn a_denied_tool_does_not_run(h: &dyn ExecutorHarness) -> CaseResult {
    let mut rig = Rig::new(h, &[Play::Tool]).await?;
    let session = rig.start(rig.spec("deny").with_prompt("Run it")).await?;
    let at = rig
        .until("the question", |e| matches!(e, Event::UserQuestion(_)))
        .await?;
    let Event::UserQuestion(q) = rig.events[at].clone() else {
        return Err(CaseError("not a question".into()));
    };
    let denied = Decision::Deny {
        reason: "not in this suite".into(),
        interrupt: false,
    };
    let decided = rig
        .gate
        .decide(&q.question_id, denied, DecidedBy::new("suite"))
        .await?;
    check_eq!(decided, DecideOutcome::Decided);
    rig.result("the turn's result").await?;
    check_order(&rig.events)?;
    let resolved = resolutions(&rig.events);
    check_eq!(resolved.len(), 1);
    check!(
        matches!(resolved[0].decision, Decision::Deny { .. }),
        "{resolved:?}"
    );
    let ran = tool_results(&rig.events);
    check_eq!(ran.len(), 1);
    check!(
        ran[0].is_error,
        "a denied tool's result is an error: {:?}",
        ran[0]
    );
    within(h, "shutdown", session.shutdown()).await??;
    rig.faults()
}

/// A question to the user carries its options; the answer is resolved once.
pub(crate) async fn a_question_to_the_user_gets_its_answer(h: &dyn ExecutorHarness) -> CaseResult {
    let mut rig = Rig::new(h, &[Play::Ask]).await?;
    let session = rig.start(rig.spec("ask").with_prompt("Ask me")).await?;
    let at = rig
        .until("the question", |e| matches!(e, Event::UserQuestion(_)))
        .await?;
    let Event::UserQuestion(q) = rig.events[at].clone() else {
        return Err(CaseError("not a question".into()));
    };
    let QuestionKind::AskUser { questions } = &q.kind else {
        return Err(CaseError(format!("not a question to the user: {q:?}")));
    };
    check_eq!(questions.len(), 1);
    check_eq!(questions[0].question, ASK_QUESTION);
    let labels: Vec<&str> = questions[0]
        .options
        .iter()
        .map(|o| o.label.as_str())
        .collect();
    check_eq!(labels, ASK_OPTIONS.to_vec());
    let answers = BTreeMap::from([(ASK_QUESTION.to_owned(), ASK_OPTIONS[0].to_owned())]);
    rig.gate
        .decide(
            &q.question_id,
            Decision::Answered {
                answers: answers.clone(),
            },
            DecidedBy::new("suite"),
        )
        .await?;
    let r = rig.result("the turn's result").await?;
    check!(!r.is_error, "the turn failed: {r:?}");
    check_order(&rig.events)?;
    let resolved = resolutions(&rig.events);
    check_eq!(resolved.len(), 1);
    check_eq!(resolved[0].decision, Decision::Answered { answers });
    within(h, "shutdown", session.shutdown()).await??;
    rig.faults()
}

/// An interrupt while a question waits withdraws it (one `cancelled`
/// resolution), ends the turn as an error, and the session goes on.
pub(crate) async fn interrupt_withdraws_the_open_question(h: &dyn ExecutorHarness) -> CaseResult {
    let mut rig = Rig::new(h, &[Play::Tool, Play::Reply("Still here.".into())]).await?;
    let session = rig
        .start(rig.spec("withdraw").with_prompt("Run it"))
        .await?;
    rig.until("the question", |e| matches!(e, Event::UserQuestion(_)))
        .await?;
    within(h, "interrupt", session.interrupt()).await??;
    let r = rig.result("the interrupted turn's result").await?;
    check!(r.is_error, "an interrupted turn is no normal end: {r:?}");
    check!(
        rig.gate.pending().await?.is_empty(),
        "the interrupt left a question open at the gate"
    );
    // The cancellation may be logged just after the result.
    if resolutions(&rig.events).is_empty() {
        rig.until("the withdrawn question's resolution", |e| {
            matches!(e, Event::QuestionResolved(_))
        })
        .await?;
    }
    let resolved = resolutions(&rig.events);
    check_eq!(resolved.len(), 1);
    check!(
        matches!(resolved[0].decision, Decision::Cancelled { .. }),
        "an interrupt cancels: {resolved:?}"
    );
    check!(
        tool_results(&rig.events).iter().all(|t| t.is_error),
        "the withdrawn tool ran"
    );
    let mark = rig.goes_on(&*session).await?;
    check!(
        !finals(&rig.events[mark..]).is_empty(),
        "the next turn said nothing"
    );
    check_order(&rig.events)?;
    within(h, "shutdown", session.shutdown()).await??;
    rig.faults()
}

/// An interrupt that lands while the gate is still looking a question up
/// in its rules (after the executor's last look at its turn, before the
/// gate holds the question, so a withdrawal of the gate's questions does
/// not find it) leaves nothing open: the question is never left waiting
/// at the gate or unresolved in the log, the tool does not run, the turn
/// ends, and the session goes on.
pub(crate) async fn an_interrupt_while_the_gate_looks_a_question_up_leaves_none_open(
    h: &dyn ExecutorHarness,
) -> CaseResult {
    let mut rig = Rig::new(h, &[Play::Tool, Play::Reply("Still here.".into())]).await?;
    let held = rig.hold_rules();
    let session = rig.start(rig.spec("held").with_prompt("Run it")).await?;
    within(h, "the gate's rule look-up", held.entered)
        .await?
        .map_err(|_| CaseError("the gate was dropped".into()))?;
    // Released once the interrupt withdrew what it could (a cancel at the
    // gate), or returned: the executor may need its reader to finish.
    let mut interrupt = Box::pin(session.interrupt());
    let first = futures::future::select(interrupt.as_mut(), held.cancelled).await;
    let _ = held.go.send(());
    match first {
        futures::future::Either::Left((done, _)) => done?,
        futures::future::Either::Right(_) => within(h, "interrupt", interrupt).await??,
    }
    let r = rig.result("the interrupted turn's result").await?;
    check!(r.is_error, "an interrupted turn is no normal end: {r:?}");
    check!(
        tool_results(&rig.events).iter().all(|t| t.is_error),
        "the withdrawn tool ran"
    );
    let mark = rig.goes_on(&*session).await?;
    check!(
        rig.gate.pending().await?.is_empty(),
        "the interrupt left a question open at the gate"
    );
    let resolved: HashSet<String> = resolutions(&rig.events)
        .iter()
        .map(|r| r.question_id.clone())
        .collect();
    let asked: Vec<&str> = rig.events[..mark]
        .iter()
        .filter_map(|e| match e {
            Event::UserQuestion(q) => Some(q.question_id.as_str()),
            _ => None,
        })
        .collect();
    check!(
        asked.iter().all(|q| resolved.contains(*q)),
        "a question of the interrupted turn was shown and never resolved: {asked:?}"
    );
    // Withdrawn before it was shown, it is not shown afterwards: a person
    // would be asked about a turn that is over.
    check!(
        asked.is_empty(),
        "a question the interrupt withdrew was shown after it: {asked:?}"
    );
    check_order(&rig.events)?;
    within(h, "shutdown", session.shutdown()).await??;
    rig.faults()
}

/// An interrupt mid-stream ends the turn as an error; the next message
/// plays the next turn.
pub(crate) async fn interrupt_mid_stream_ends_the_turn(h: &dyn ExecutorHarness) -> CaseResult {
    let mut rig = Rig::new(h, &[Play::Stall, Play::Reply("Still here.".into())]).await?;
    let session = rig
        .start(rig.spec("interrupt").with_prompt("Talk long"))
        .await?;
    rig.until(
        "the first delta",
        |e| matches!(e, Event::Assistant(a) if a.phase == AssistantPhase::Delta),
    )
    .await?;
    within(h, "interrupt", session.interrupt()).await??;
    let r = rig.result("the interrupted turn's result").await?;
    check!(r.is_error, "an interrupted turn is no normal end: {r:?}");
    let mark = rig.goes_on(&*session).await?;
    check_eq!(
        finals(&rig.events[mark..]).last(),
        Some(&"Still here.".to_owned())
    );
    check_order(&rig.events)?;
    within(h, "shutdown", session.shutdown()).await??;
    rig.faults()
}

/// A resumed session reports the same executor session id, plays the next
/// prompt, and reuses no message id of its past.
pub(crate) async fn resume_continues_the_executor_session(h: &dyn ExecutorHarness) -> CaseResult {
    let mut rig = Rig::new(
        h,
        &[Play::Reply("Before.".into()), Play::Reply("After.".into())],
    )
    .await?;
    let session = rig.start(rig.spec("resume").with_prompt("First")).await?;
    let r = rig.result("the first run's result").await?;
    check!(!r.is_error, "the first run failed: {r:?}");
    within(h, "shutdown", session.shutdown()).await??;
    check!(!session.is_running(), "running after shutdown");
    let before = rig.events.clone();
    let Some(id) = executor_session(&before) else {
        return Err(CaseError("session_init named no executor session".into()));
    };
    let resumed = rig
        .start(
            rig.spec("resume")
                .with_resume(id.clone())
                .with_prompt("Second"),
        )
        .await?;
    let r = rig.result("the resumed run's result").await?;
    check!(!r.is_error, "the resumed run failed: {r:?}");
    let after = rig.events[before.len()..].to_vec();
    check_order(&after)?;
    check_eq!(executor_session(&after), Some(id));
    check!(!finals(&after).is_empty(), "the resumed turn said nothing");
    let reused: Vec<_> = message_ids(&before)
        .intersection(&message_ids(&after))
        .cloned()
        .collect();
    check!(
        reused.is_empty(),
        "message ids reused after the resume: {reused:?}"
    );
    within(h, "shutdown", resumed.shutdown()).await??;
    rig.faults()
}

/// A failing turn ends with an `error` event or an error `result`; the
/// session goes on.
pub(crate) async fn a_failing_turn_is_reported_and_the_session_goes_on(
    h: &dyn ExecutorHarness,
) -> CaseResult {
    let mut rig = Rig::new(h, &[Play::Fail, Play::Reply("Recovered.".into())]).await?;
    let session = rig.start(rig.spec("fail").with_prompt("Fail")).await?;
    let at = rig
        .until("the failing turn's end", |e| {
            matches!(e, Event::Result(_) | Event::Error(_))
        })
        .await?;
    let reported = match &rig.events[at] {
        Event::Error(_) => true,
        Event::Result(r) => r.is_error,
        _ => false,
    };
    check!(
        reported,
        "a failure left no trace: {:?}",
        rig.events.iter().map(name).collect::<Vec<_>>()
    );
    let mark = rig.events.len();
    // A live session takes the next message; one whose agent died is
    // resumed, as a host does.
    let resumed = !session.is_running();
    let session = if !resumed {
        within(h, "send_message", session.send_message("Try again")).await??;
        session
    } else {
        let Some(id) = executor_session(&rig.events) else {
            return Err(CaseError("session_init named no executor session".into()));
        };
        rig.start(rig.spec("fail").with_resume(id).with_prompt("Try again"))
            .await?
    };
    let next = rig.result("the next turn's result").await?;
    check!(!next.is_error, "the session did not go on: {next:?}");
    check_eq!(
        finals(&rig.events[mark..]).last(),
        Some(&"Recovered.".to_owned())
    );
    if resumed {
        check_order(&rig.events[..mark])?;
        check_order(&rig.events[mark..])?;
    } else {
        check_order(&rig.events)?;
    }
    within(h, "shutdown", session.shutdown()).await??;
    rig.faults()
}

/// A session that ended says so: not running, messages refused with an
/// error, a second shutdown fine.
pub(crate) async fn an_ended_session_refuses_messages(h: &dyn ExecutorHarness) -> CaseResult {
    let mut rig = Rig::new(h, &[Play::Reply("Bye.".into())]).await?;
    let session = rig.start(rig.spec("ended").with_prompt("Hello")).await?;
    rig.result("the turn's result").await?;
    within(h, "shutdown", session.shutdown()).await??;
    check!(!session.is_running(), "running after shutdown");
    while let Ok(e) = rig.rx.try_recv() {
        rig.events.push(e);
    }
    let sent = within(
        h,
        "send_message after shutdown",
        session.send_message("Hello?"),
    )
    .await?;
    check!(sent.is_err(), "a message to an ended session was taken");
    within(h, "a second shutdown", session.shutdown()).await??;
    // What the stop logged came before `shutdown` returned.
    let mut late = Vec::new();
    while let Ok(e) = rig.rx.try_recv() {
        late.push(e.type_name().to_owned());
    }
    check!(late.is_empty(), "events after shutdown returned: {late:?}");
    rig.faults()
}
