//! Tool calls and questions: each goes through the approval gate, is held
//! until the gate knows it, and is logged with its resolution in stream order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use duraclaw_core::approval::ApprovalRequest;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::executor::{HeldQuestion, question_resolved};
use duraclaw_core::protocol::{Decision, Event, QuestionKind, UserQuestion};
use serde_json::Value;

use super::{STOPPED, Shared};
use crate::cli::{CliAction, CliInput};

pub(super) async fn withdraw_all(shared: &Arc<Shared>, why: &str) {
    let pending: Vec<String> = {
        let mapper = shared.mapper.lock().unwrap_or_else(|p| p.into_inner());
        mapper.pending().keys().cloned().collect()
    };
    for request_id in pending {
        let _ = shared.gate.cancel(&request_id, why).await;
    }
}

/// Withdraws the open questions of an interrupted turn and waits (up to
/// `deadline`) until their resolutions are logged, so that what the CLI
/// reports of the interrupted calls comes after them. The CLI is not
/// answered: the interrupt that follows ends its requests.
pub(super) async fn withdraw_for_interrupt(shared: &Arc<Shared>, deadline: std::time::Duration) {
    let open: Vec<String> = {
        let mut mapper = shared.mapper.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<String> = mapper.pending().keys().cloned().collect();
        for id in &ids {
            mapper.answered(id);
        }
        ids
    };
    if open.is_empty() {
        return;
    }
    for request_id in &open {
        let _ = shared.gate.cancel(request_id, INTERRUPTED).await;
    }
    let settled = async {
        loop {
            let notified = shared.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.awaiting.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(deadline, settled).await.is_err() {
        tracing::warn!(session = %shared.session_id, "withdrawn questions not logged before the interrupt");
    }
}

/// Why an interrupt withdraws a question.
const INTERRUPTED: &str = "the turn was interrupted";

pub(super) async fn act(shared: &Arc<Shared>, action: CliAction) {
    match action {
        CliAction::Send(input) => {
            let _ = shared.send(input);
        }
        CliAction::Response { request_id, result } => {
            let waiter = shared
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&request_id);
            if let Some(w) = waiter {
                let _ = w.send(result);
            }
        }
        CliAction::AskGate {
            request_id,
            question,
            input,
        } => {
            let ask = register_ask(shared, request_id, question, input).await;
            spawn_ask(shared, ask);
        }
        CliAction::Withdraw { request_id, .. } => {
            // The waiting task logs the resolution when the cancel wins.
            let why = if shared.stopping.load(Ordering::Acquire) {
                STOPPED
            } else {
                "the agent withdrew the request"
            };
            let _ = shared.gate.cancel(&request_id, why).await;
        }
    }
}

/// What decides `question` without asking: a rule's decision (its
/// `rule_decision` notice and decision), or an "allow for this session"
/// the gate holds (its `auto_allowed` notice, allow). The notice is logged
/// instead of the question.
pub(super) async fn standing_allow(
    shared: &Arc<Shared>,
    question: &UserQuestion,
) -> Option<(Event, Decision)> {
    let QuestionKind::Permission { tool_name, .. } = &question.kind else {
        return None;
    };
    let request = ApprovalRequest {
        session_id: shared.session_id.clone(),
        question: question.clone(),
        asked_at_ms: SystemClock.now_ms(),
    };
    match shared.gate.by_rule(&request).await {
        Ok(Some(decided)) => {
            return Some((Event::Notice(decided.notice), decided.resolution.decision));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(session = %shared.session_id, error = %e, "approval rules unreadable; asking");
            return None;
        }
    }
    let allow = Decision::Allow {
        updated_input: None,
        remember: false,
    };
    match shared.gate.standing_allow(&request).await {
        Ok(found) => found.map(|a| {
            (
                Event::Notice(a.notice(tool_name, question.tool_use_id.as_deref())),
                allow,
            )
        }),
        Err(e) => {
            // Asking a human is the safe way out.
            tracing::warn!(session = %shared.session_id, error = %e, "standing allows unreadable; asking");
            None
        }
    }
}

/// Replaces the `user_question` `question_id` in `events` with `with`.
pub(super) fn swap_question(events: &mut [Event], question_id: &str, with: Event) {
    if let Some(slot) = events
        .iter_mut()
        .find(|e| matches!(e, Event::UserQuestion(q) if q.question_id == question_id))
    {
        *slot = with;
    }
}

/// What to do after a line's events are emitted.
pub(super) enum Next {
    Act(CliAction),
    Ask(Ask),
}

/// A `can_use_tool` question the gate already holds, waiting for its
/// decision.
pub(super) struct Ask {
    request_id: String,
    input: Value,
    held: HeldQuestion,
}

/// Hands `question` to the gate so that it holds the request before the
/// `user_question` event makes it visible (see [`HeldQuestion::hold`]).
pub(super) async fn register_ask(
    shared: &Arc<Shared>,
    request_id: String,
    question: UserQuestion,
    input: Value,
) -> Ask {
    shared.awaiting.fetch_add(1, Ordering::AcqRel);
    let request = ApprovalRequest::new(shared.session_id.clone(), question, SystemClock.now_ms());
    Ask {
        request_id,
        input,
        held: HeldQuestion::hold(shared.gate.clone(), request).await,
    }
}

impl Ask {
    /// The CLI's request id (also the question's id).
    pub(super) fn request_id(&self) -> String {
        self.request_id.clone()
    }
}

/// Whether request `request_id` was withdrawn (an interrupt took it) while the
/// gate looked it up, before the gate held it, so the withdrawal did not
/// find it at the gate. If so, it is cancelled there now and counts as
/// settled: the caller logs nothing of it, and the CLI is not answered
/// (the interrupt ends its request). An interrupt marks the request
/// answered before it cancels at the gate, so one of the two always sees
/// the other.
pub(super) async fn withdrawn_meanwhile(shared: &Arc<Shared>, request_id: &str) -> bool {
    let pending = shared
        .mapper
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pending()
        .contains_key(request_id);
    if pending {
        return false;
    }
    let _ = shared.gate.cancel(request_id, INTERRUPTED).await;
    shared.awaiting.fetch_sub(1, Ordering::AcqRel);
    shared.wake.notify_one();
    shared.settled.notify_waiters();
    true
}

/// Waits for the gate's decision, logs it, and answers the CLI (unless it
/// withdrew the request meanwhile). Call after the question was emitted.
pub(super) fn spawn_ask(shared: &Arc<Shared>, ask: Ask) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let Ask {
            request_id,
            input,
            held,
        } = ask;
        let question_id = held.question_id().to_owned();
        let resolution = held.decision().await;
        shared.awaiting.fetch_sub(1, Ordering::AcqRel);
        shared.wake.notify_one();
        shared.settled.notify_waiters();
        let still_pending = shared
            .mapper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answered(&request_id)
            .is_some();
        match resolution {
            Ok(r) => {
                shared.emit(question_resolved(&question_id, &r)).await;
                // A withdrawn request needs no answer: the CLI ignores late
                // ones.
                if still_pending {
                    let _ = shared.send(CliInput::for_decision(&request_id, &input, &r.decision));
                }
            }
            Err(e) => {
                tracing::warn!(session = %shared.session_id, error = %e, "approval failed");
                if still_pending {
                    let _ = shared.send(CliInput::Deny {
                        request_id,
                        message: format!("The approval could not be obtained: {e}"),
                        interrupt: false,
                    });
                }
            }
        }
    });
}
