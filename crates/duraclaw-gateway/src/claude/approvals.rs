//! Tool calls and questions: each goes through the approval gate, is held
//! until the gate knows it, and is logged with its resolution in stream order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use duraclaw_core::Result;
use duraclaw_core::approval::ApprovalRequest;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::protocol::{Event, QuestionKind, UserQuestion};
use duraclaw_core::store::Resolution;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{STOPPED, Shared};
use crate::cli::{CliAction, CliInput};
use duraclaw_approval::resolution_event;

pub(super) async fn withdraw_all(shared: &Arc<Shared>, why: &str) {
    let pending: Vec<String> = {
        let mapper = shared.mapper.lock().unwrap_or_else(|p| p.into_inner());
        mapper.pending().keys().cloned().collect()
    };
    for request_id in pending {
        let _ = shared.gate.cancel(&request_id, why).await;
    }
}

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

/// The `auto_allowed` notice to log instead of `question`, when the gate
/// holds an "allow for this session" that answers it.
pub(super) async fn standing_allow(shared: &Arc<Shared>, question: &UserQuestion) -> Option<Event> {
    let QuestionKind::Permission { tool_name, .. } = &question.kind else {
        return None;
    };
    let request = ApprovalRequest {
        session_id: shared.session_id.clone(),
        question: question.clone(),
        asked_at_ms: SystemClock.now_ms(),
    };
    match shared.gate.standing_allow(&request).await {
        Ok(found) => found
            .map(|allow| Event::Notice(allow.notice(tool_name, question.tool_use_id.as_deref()))),
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

/// A `can_use_tool` question the gate already knows about, waiting for its
/// decision.
pub(super) struct Ask {
    request_id: String,
    question_id: String,
    input: Value,
    /// The gate's answer if it decided at once (e.g. a policy rule).
    first: Option<Result<Resolution>>,
    decision: BoxFuture<'static, Result<Resolution>>,
}

/// Hands `question` to the gate and polls the request once, so that the gate
/// holds it (the gates register a request before they first wait) before
/// the `user_question` event makes it visible: an answer sent as soon as
/// the question is seen must find it.
pub(super) async fn register_ask(
    shared: &Arc<Shared>,
    request_id: String,
    question: UserQuestion,
    input: Value,
) -> Ask {
    shared.awaiting.fetch_add(1, Ordering::AcqRel);
    let gate = shared.gate.clone();
    let question_id = question.question_id.clone();
    let request = ApprovalRequest {
        session_id: shared.session_id.clone(),
        question,
        asked_at_ms: SystemClock.now_ms(),
    };
    let mut decision: BoxFuture<'static, Result<Resolution>> =
        Box::pin(async move { gate.request(request).await });
    let first = match futures::poll!(decision.as_mut()) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    };
    Ask {
        request_id,
        question_id,
        input,
        first,
        decision,
    }
}

/// Waits for the gate's decision, logs it, and answers the CLI (unless it
/// withdrew the request meanwhile). Call after the question was emitted.
pub(super) fn spawn_ask(shared: &Arc<Shared>, ask: Ask) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let Ask {
            request_id,
            question_id,
            input,
            first,
            decision,
        } = ask;
        let resolution = match first {
            Some(r) => r,
            None => decision.await,
        };
        shared.awaiting.fetch_sub(1, Ordering::AcqRel);
        shared.wake.notify_one();
        let still_pending = shared
            .mapper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answered(&request_id)
            .is_some();
        match resolution {
            Ok(r) => {
                shared.emit(resolution_event(&question_id, &r)).await;
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
