//! The store-backed gate: requests and first decisions live in a
//! [`SessionStore`], so pending requests survive a restart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duraclaw_core::Error;
use duraclaw_core::Result;
use duraclaw_core::approval::{ApprovalGate, ApprovalRequest, DecideOutcome};
use duraclaw_core::clock::SharedClock;
use duraclaw_core::executor::DynEventSink;
use duraclaw_core::protocol::{DecidedBy, Decision, Event};
use duraclaw_core::store::{
    AppendBatch, DynSessionStore, NewEvent, QuestionRecord, Resolution, ResolveOutcome,
};
use futures::lock::Mutex as AsyncMutex;

use crate::audit::{AuditAction, AuditLog};
use crate::memory::{GateCommon, Waiters};
use crate::tool_name;

/// Approval requests kept in a [`SessionStore`](duraclaw_core::store::SessionStore).
///
/// The store's `user_question` events and question table are the record:
/// after a restart, [`ApprovalGate::pending`] lists what is still open and a
/// requester that asks again with the same question id gets the decision
/// made meanwhile. Give it a store of its own, not the session's log: the
/// executor logs each question and its resolution there itself (see the
/// contract on [`Executor`](duraclaw_core::executor::Executor)).
#[derive(Debug)]
pub struct DurableGate {
    store: DynSessionStore,
    waiters: Waiters,
    asking: AsyncMutex<()>,
    common: GateCommon,
}

impl DurableGate {
    /// A gate over `store`.
    pub fn new(store: DynSessionStore) -> Self {
        DurableGate {
            store,
            waiters: Waiters::default(),
            asking: AsyncMutex::new(()),
            common: GateCommon::default(),
        }
    }

    /// Audits to `audit`.
    pub fn with_audit(mut self, audit: Arc<dyn AuditLog>) -> Self {
        self.common.audit = audit;
        self
    }

    /// Also reports requests and decisions to `sink`, to watch them (e.g. a
    /// notifier). Not the session's sink: the executor logs questions
    /// there already, and they would be logged twice.
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

    async fn record(&self, question_id: &str) -> Result<Option<QuestionRecord>> {
        Ok(self
            .store
            .questions(false)
            .await?
            .into_iter()
            .find(|q| q.question.question_id == question_id))
    }

    async fn settle(&self, question_id: &str, resolution: Resolution) -> Result<DecideOutcome> {
        let tool = self
            .record(question_id)
            .await?
            .and_then(|q| tool_name(&q.question.kind).map(str::to_owned));
        let session = self.store.session_id().to_owned();
        match self
            .store
            .resolve(question_id, resolution.clone(), None)
            .await?
        {
            ResolveOutcome::Decided(_) => {
                self.common.audit_decision(
                    &session,
                    question_id,
                    tool.as_deref(),
                    &resolution,
                    AuditAction::Decided,
                );
                self.waiters.wake(question_id, &resolution);
                self.common.emit_resolution(question_id, &resolution).await;
                Ok(DecideOutcome::Decided)
            }
            ResolveOutcome::AlreadyDecided(first) => {
                self.common.audit_decision(
                    &session,
                    question_id,
                    tool.as_deref(),
                    &resolution,
                    AuditAction::Refused,
                );
                Ok(DecideOutcome::AlreadyDecided { first })
            }
        }
    }
}

#[async_trait]
impl ApprovalGate for DurableGate {
    async fn request(&self, request: ApprovalRequest) -> Result<Resolution> {
        let id = request.question.question_id.clone();
        let rx = {
            // One asker at a time, so a question is recorded once.
            let _one = self.asking.lock().await;
            match self.record(&id).await? {
                Some(QuestionRecord {
                    resolution: Some(r),
                    ..
                }) => return Ok(r),
                Some(_) => self.waiters.add(&id),
                None => {
                    let rx = self.waiters.add(&id);
                    let event = Event::UserQuestion(request.question.clone());
                    let new = NewEvent::new(&event, None, request.asked_at_ms)?;
                    self.store.append(AppendBatch::events(vec![new])).await?;
                    self.common.audit_request(&request);
                    self.common.emit_question(&request).await?;
                    rx
                }
            }
        };
        // Decided between our check and registering the waiter?
        if let Some(QuestionRecord {
            resolution: Some(r),
            ..
        }) = self.record(&id).await?
        {
            return Ok(r);
        }
        self.common
            .wait(rx, || async {
                let expired = self.common.expired_now();
                self.settle(&id, expired).await?;
                self.record(&id)
                    .await?
                    .and_then(|q| q.resolution)
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
        let session_id = self.store.session_id().to_owned();
        let mut pending = Vec::new();
        for q in self.store.questions(true).await? {
            let asked_at_ms = self
                .store
                .read_after(q.asked_seq.saturating_sub(1), 1)
                .await?
                .first()
                .map_or(0, |e| e.at_ms);
            pending.push(ApprovalRequest {
                session_id: session_id.clone(),
                question: q.question,
                asked_at_ms,
            });
        }
        Ok(pending)
    }

    async fn cancel(&self, question_id: &str, reason: &str) -> Result<DecideOutcome> {
        self.settle(question_id, self.common.withdrawn_now(reason))
            .await
    }
}
