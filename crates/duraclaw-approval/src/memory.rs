//! The in-memory gate, and the waiting and timeout logic the durable gate
//! shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use duraclaw_core::Error;
use duraclaw_core::Result;
use duraclaw_core::approval::{ApprovalGate, ApprovalRequest, DecideOutcome, StandingAllow};
use duraclaw_core::clock::{SharedClock, SystemClock};
use duraclaw_core::executor::DynEventSink;
use duraclaw_core::protocol::{DecidedBy, Decision, Event, QuestionKind, QuestionResolved};
use duraclaw_core::store::Resolution;
use futures::channel::oneshot;
use serde_json::Value;

use crate::audit::{AuditAction, AuditEntry, AuditLog, TracingAudit};
use crate::tool_name;

/// Waiters for decisions, by question id.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<String, Vec<oneshot::Sender<Resolution>>>>,
}

impl Waiters {
    pub(crate) fn add(&self, question_id: &str) -> oneshot::Receiver<Resolution> {
        let (tx, rx) = oneshot::channel();
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(question_id.to_owned())
            .or_default()
            .push(tx);
        rx
    }

    pub(crate) fn wake(&self, question_id: &str, resolution: &Resolution) {
        let waiters = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(question_id)
            .unwrap_or_default();
        for w in waiters {
            // A waiter that went away does not need the answer.
            let _ = w.send(resolution.clone());
        }
    }
}

/// What a gate shares between its implementations: audit, optional sink for
/// `user_question` / `question.resolved` events, optional timeout, and the
/// clock decisions are stamped with.
#[derive(Debug, Clone)]
pub(crate) struct GateCommon {
    pub(crate) audit: Arc<dyn AuditLog>,
    pub(crate) sink: Option<DynEventSink>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) clock: SharedClock,
}

impl Default for GateCommon {
    fn default() -> Self {
        GateCommon {
            audit: Arc::new(TracingAudit),
            sink: None,
            timeout: None,
            clock: SystemClock::shared(),
        }
    }
}

impl GateCommon {
    pub(crate) fn audit_request(&self, req: &ApprovalRequest) {
        let (tool, input) = match &req.question.kind {
            duraclaw_core::protocol::QuestionKind::Permission {
                tool_name, input, ..
            } => (Some(tool_name.clone()), Some(input.clone())),
            _ => (None, None),
        };
        self.audit.record(&AuditEntry {
            at_ms: req.asked_at_ms,
            action: AuditAction::Requested,
            session_id: req.session_id.clone(),
            question_id: req.question.question_id.clone(),
            tool_name: tool,
            input,
            decision: None,
            who: None,
            client: None,
        });
    }

    pub(crate) fn audit_decision(
        &self,
        session_id: &str,
        question_id: &str,
        tool: Option<&str>,
        r: &Resolution,
        action: AuditAction,
    ) {
        self.audit.record(&AuditEntry {
            at_ms: r.at_ms,
            action,
            session_id: session_id.to_owned(),
            question_id: question_id.to_owned(),
            tool_name: tool.map(str::to_owned),
            input: None,
            decision: Some(r.decision.clone()),
            who: Some(r.by.who.clone()),
            client: r.by.client.clone(),
        });
    }

    pub(crate) async fn emit_question(&self, req: &ApprovalRequest) -> Result<()> {
        if let Some(sink) = &self.sink {
            sink.emit(Event::UserQuestion(req.question.clone())).await?;
        }
        Ok(())
    }

    pub(crate) async fn emit_resolution(&self, question_id: &str, r: &Resolution) {
        if let Some(sink) = &self.sink {
            let event = Event::QuestionResolved(QuestionResolved {
                question_id: question_id.to_owned(),
                decision: r.decision.clone(),
                by: r.by.clone(),
                at_ms: r.at_ms,
            });
            if let Err(e) = sink.emit(event).await {
                tracing::error!(question = question_id, error = %e, "resolution event not recorded");
            }
        }
    }

    /// Waits for a decision; on timeout, decides `expired` through `expire`
    /// (first answer still wins) and returns whatever won.
    pub(crate) async fn wait<F, Fut>(
        &self,
        rx: oneshot::Receiver<Resolution>,
        expire: F,
    ) -> Result<Resolution>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Resolution>>,
    {
        let closed = |_| Error::Closed("approval gate");
        match self.timeout {
            None => rx.await.map_err(closed),
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(r) => r.map_err(closed),
                Err(_) => expire().await,
            },
        }
    }
}

impl GateCommon {
    /// A resolution made now.
    pub(crate) fn resolution_now(&self, decision: Decision, by: DecidedBy) -> Resolution {
        Resolution {
            decision,
            by,
            at_ms: self.clock.now_ms(),
        }
    }

    /// A timeout's resolution: expired, never a denial.
    pub(crate) fn expired_now(&self) -> Resolution {
        self.resolution_now(Decision::Expired, DecidedBy::new("timeout"))
    }

    /// The executor withdrew the request.
    pub(crate) fn withdrawn_now(&self, reason: &str) -> Resolution {
        self.resolution_now(
            Decision::Cancelled {
                reason: Some(reason.to_owned()),
            },
            DecidedBy::new("executor"),
        )
    }
}

#[derive(Debug)]
struct Entry {
    request: ApprovalRequest,
    resolution: Option<Resolution>,
    order: u64,
}

/// One "allow for this session": session, tool, input, and the decision.
#[derive(Debug, Clone)]
struct Remembered {
    session_id: String,
    tool: String,
    input: Value,
    allow: StandingAllow,
}

/// What an allow with `remember` leaves standing for `request`, if any: a
/// permission, allowed without edits (an edited input is not what the
/// model will send again). A denial is never remembered.
fn remembered(request: &ApprovalRequest, r: &Resolution) -> Option<Remembered> {
    let QuestionKind::Permission {
        tool_name, input, ..
    } = &request.question.kind
    else {
        return None;
    };
    match &r.decision {
        Decision::Allow {
            remember: true,
            updated_input,
        } if updated_input.as_ref().is_none_or(|u| u == input) => Some(Remembered {
            session_id: request.session_id.clone(),
            tool: tool_name.clone(),
            input: input.clone(),
            allow: StandingAllow {
                question_id: request.question.question_id.clone(),
                by: r.by.clone(),
            },
        }),
        _ => None,
    }
}

/// Approval requests held in memory. An allow with `remember` answers
/// later requests of the same session for the same tool with the same
/// input ([`ApprovalGate::standing_allow`]).
#[derive(Debug, Default)]
pub struct MemoryGate {
    entries: Mutex<HashMap<String, Entry>>,
    standing: Mutex<Vec<Remembered>>,
    next_order: std::sync::atomic::AtomicU64,
    waiters: Waiters,
    common: GateCommon,
}

impl MemoryGate {
    /// A gate that audits through `tracing`, with no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Audits to `audit` instead.
    pub fn with_audit(mut self, audit: Arc<dyn AuditLog>) -> Self {
        self.common.audit = audit;
        self
    }

    /// Reports each request as a `user_question` event and each decision as
    /// `question.resolved` to `sink`, to watch them (e.g. a notifier). Not
    /// the session's sink: the executor logs questions there already (see
    /// the contract on [`Executor`](duraclaw_core::executor::Executor)),
    /// and they would be logged twice.
    pub fn with_sink(mut self, sink: DynEventSink) -> Self {
        self.common.sink = Some(sink);
        self
    }

    /// Resolves requests nobody answered within `timeout` as `expired`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.common.timeout = Some(timeout);
        self
    }

    /// Stamps decisions with `clock`'s time instead of the system clock's.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.common.clock = clock;
        self
    }

    /// Puts back an "allow for this session" decided before this gate
    /// existed (e.g. before a restart): `tool` with exactly `input` in
    /// `session_id` is allowed again as `allow` said.
    pub fn restore_session_allow(
        &self,
        session_id: &str,
        tool: &str,
        input: Value,
        allow: StandingAllow,
    ) {
        let mut standing = self.standing.lock().unwrap_or_else(|p| p.into_inner());
        if !standing
            .iter()
            .any(|r| r.session_id == session_id && r.tool == tool && r.input == input)
        {
            standing.push(Remembered {
                session_id: session_id.to_owned(),
                tool: tool.to_owned(),
                input,
                allow,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, question_id: &str, resolution: Resolution) -> Result<DecideOutcome> {
        let (session_id, tool, outcome) = {
            let mut map = self.lock();
            let entry = map.get_mut(question_id).ok_or_else(|| Error::NotFound {
                what: "approval request",
                id: question_id.to_owned(),
            })?;
            let tool = tool_name(&entry.request.question.kind).map(str::to_owned);
            let session = entry.request.session_id.clone();
            match &entry.resolution {
                Some(first) => (
                    session,
                    tool,
                    DecideOutcome::AlreadyDecided {
                        first: first.clone(),
                    },
                ),
                None => {
                    entry.resolution = Some(resolution.clone());
                    if let Some(r) = remembered(&entry.request, &resolution) {
                        self.standing
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(r);
                    }
                    (session, tool, DecideOutcome::Decided)
                }
            }
        };
        let action = match outcome {
            DecideOutcome::Decided => AuditAction::Decided,
            DecideOutcome::AlreadyDecided { .. } => AuditAction::Refused,
        };
        self.common.audit_decision(
            &session_id,
            question_id,
            tool.as_deref(),
            &resolution,
            action,
        );
        if outcome == DecideOutcome::Decided {
            self.waiters.wake(question_id, &resolution);
        }
        Ok(outcome)
    }

    async fn settle(&self, question_id: &str, resolution: Resolution) -> Result<DecideOutcome> {
        let outcome = self.finish(question_id, resolution.clone())?;
        if outcome == DecideOutcome::Decided {
            self.common.emit_resolution(question_id, &resolution).await;
        }
        Ok(outcome)
    }

    fn resolution_of(&self, question_id: &str) -> Option<Resolution> {
        self.lock()
            .get(question_id)
            .and_then(|e| e.resolution.clone())
    }
}

#[async_trait]
impl ApprovalGate for MemoryGate {
    async fn request(&self, request: ApprovalRequest) -> Result<Resolution> {
        let id = request.question.question_id.clone();
        let (rx, is_new) = {
            let mut map = self.lock();
            if let Some(r) = map.get(&id).and_then(|e| e.resolution.clone()) {
                return Ok(r);
            }
            let is_new = !map.contains_key(&id);
            if is_new {
                let order = self
                    .next_order
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                map.insert(
                    id.clone(),
                    Entry {
                        request: request.clone(),
                        resolution: None,
                        order,
                    },
                );
            }
            (self.waiters.add(&id), is_new)
        };
        if is_new {
            self.common.audit_request(&request);
            self.common.emit_question(&request).await?;
        }
        self.common
            .wait(rx, || async {
                let expired = self.common.expired_now();
                self.settle(&id, expired.clone()).await?;
                self.resolution_of(&id)
                    .ok_or(Error::Closed("approval gate"))
            })
            .await
    }

    async fn decide(
        &self,
        question_id: &str,
        decision: Decision,
        by: DecidedBy,
    ) -> Result<DecideOutcome> {
        self.settle(question_id, self.common.resolution_now(decision, by))
            .await
    }

    async fn pending(&self) -> Result<Vec<ApprovalRequest>> {
        let map = self.lock();
        let mut pending: Vec<&Entry> = map.values().filter(|e| e.resolution.is_none()).collect();
        pending.sort_by_key(|e| e.order);
        Ok(pending.into_iter().map(|e| e.request.clone()).collect())
    }

    async fn cancel(&self, question_id: &str, reason: &str) -> Result<DecideOutcome> {
        self.settle(question_id, self.common.withdrawn_now(reason))
            .await
    }

    async fn standing_allow(&self, request: &ApprovalRequest) -> Result<Option<StandingAllow>> {
        let QuestionKind::Permission {
            tool_name, input, ..
        } = &request.question.kind
        else {
            return Ok(None);
        };
        let found = self
            .standing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| {
                r.session_id == request.session_id && r.tool == *tool_name && r.input == *input
            })
            .map(|r| r.allow.clone());
        if let Some(allow) = &found {
            self.common.audit.record(&AuditEntry {
                at_ms: self.common.clock.now_ms(),
                action: AuditAction::Decided,
                session_id: request.session_id.clone(),
                question_id: request.question.question_id.clone(),
                tool_name: Some(tool_name.clone()),
                input: Some(input.clone()),
                decision: Some(Decision::Allow {
                    updated_input: None,
                    remember: false,
                }),
                who: Some(allow.by.who.clone()),
                client: Some(format!(
                    "allowed for this session (question {})",
                    allow.question_id
                )),
            });
        }
        Ok(found)
    }
}
