//! Playing the turns one at a time, and interrupting the one that runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use agent_client_protocol::v1::schema::PromptResponse;
use duraclaw_core::protocol::{Event, TurnResult};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::rpc::RpcError;
use super::setup::replay_settled;
use super::{INTERRUPTED, Shared, map};

/// `session/prompt`'s params: one text block.
pub(super) fn prompt_params(session: &str, text: &str) -> Value {
    json!({
        "sessionId": session,
        "prompt": [{ "type": "text", "text": text }],
    })
}

/// Plays the turns sent, one at a time.
pub(super) async fn play_turns(shared: Arc<Shared>, mut turns: mpsc::UnboundedReceiver<String>) {
    while let Some(text) = turns.recv().await {
        if !shared.running.load(Ordering::Acquire) || shared.stopping.load(Ordering::Acquire) {
            break;
        }
        if shared.replaying.load(Ordering::Acquire) {
            replay_settled(&shared).await;
            shared.replaying.store(false, Ordering::Release);
        }
        shared.interrupted.store(false, Ordering::Release);
        shared.touch();
        shared.turns_played.fetch_add(1, Ordering::AcqRel);
        shared.turn_running.store(true, Ordering::Release);
        let started = Instant::now();
        let answer = shared
            .rpc
            .request(
                "session/prompt",
                prompt_params(&shared.acp_session(), &text),
                None,
            )
            .await;
        let interrupted = shared.interrupted.swap(false, Ordering::AcqRel);
        match answer {
            Ok(Ok(v)) => {
                let parsed: std::result::Result<PromptResponse, _> = serde_json::from_value(v);
                let (events, cost) = shared
                    .map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .end_turn(interrupted);
                for e in events {
                    shared.emit(e).await;
                }
                let (subtype, is_error, usage) = match &parsed {
                    Ok(r) => {
                        let (s, e) = map::stop(&r.stop_reason, interrupted);
                        (s, e, map::usage(r))
                    }
                    Err(e) => {
                        tracing::warn!(session = %shared.session_id, error = %e, "an answer to `session/prompt` that is not one");
                        ("unknown".to_owned(), true, None)
                    }
                };
                shared.turn_running.store(false, Ordering::Release);
                shared
                    .emit(Event::Result(TurnResult {
                        subtype: Some(subtype.clone()),
                        is_error,
                        duration_ms: u64::try_from(started.elapsed().as_millis()).ok(),
                        cost_usd: cost,
                        usage,
                        num_turns: None,
                        terminal_reason: Some(subtype),
                        last_message_uuid: None,
                    }))
                    .await;
            }
            Ok(Err(RpcError { message, code })) => {
                let (events, _) = shared
                    .map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .end_turn(true);
                for e in events {
                    shared.emit(e).await;
                }
                shared.turn_running.store(false, Ordering::Release);
                shared
                    .emit_error(
                        format!(
                            "agent `{}` failed the turn: {message} (code {code})",
                            shared.agent.name
                        ),
                        "agent_error",
                        None,
                    )
                    .await;
            }
            // The process is gone: its end is reported where it is seen.
            Err(_) => {
                shared
                    .map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .end_turn(true);
                shared.turn_running.store(false, Ordering::Release);
            }
        }
        shared.turn_over.notify_waiters();
    }
}

/// Withdraws the turn's questions and tells the agent to stop the turn.
/// An agent that does not end the turn within the request bound is hung.
pub(super) async fn interrupt_turn(shared: &Arc<Shared>) {
    if !shared.turn_running.load(Ordering::Acquire) {
        return;
    }
    let turn = shared.turns_played.load(Ordering::Acquire);
    shared.interrupted.store(true, Ordering::Release);
    shared.withdrawn_turn.store(turn, Ordering::Release);
    // A request still waiting for its call's announcement gives up.
    shared.announced.notify_waiters();
    shared.withdraw_all(INTERRUPTED).await;
    shared.touch();
    let _ = shared.rpc.notify(
        "session/cancel",
        json!({ "sessionId": shared.acp_session() }),
    );
    let shared = shared.clone();
    tokio::spawn(async move {
        let same_turn = || {
            shared.turns_played.load(Ordering::Acquire) == turn
                && shared.turn_running.load(Ordering::Acquire)
        };
        let over = async {
            loop {
                let notified = shared.turn_over.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !same_turn() {
                    return;
                }
                notified.await;
            }
        };
        let bound = shared.limits.request_timeout;
        if tokio::time::timeout(bound, over).await.is_ok()
            || !same_turn()
            || shared.stopping.load(Ordering::Acquire)
        {
            return;
        }
        shared
            .emit_error(
                format!(
                    "agent `{}` did not end the turn within {} ms of being cancelled; it was stopped",
                    shared.agent.name,
                    bound.as_millis()
                ),
                "executor_hung",
                None,
            )
            .await;
        shared.kill_now();
    });
}
