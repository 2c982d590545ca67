//! The guard on every session's events: a tool that ran with no decision
//! allowing it stops the session.

use std::sync::Arc;

use duraclaw_core::Result;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::executor::EventSink;
use duraclaw_core::protocol::Event;
use duraclaw_core::state::SessionState;
use duraclaw_core::store::SessionAllow;

use super::GatewaySession;
use crate::outbox::{OutboxSink, TurnStep, waiting};
use duraclaw_approval::{AuditAction, AuditEntry, AuditLog};

/// An executor's sink that checks every event with the session's
/// [`ToolGuard`] before it goes to the outbox: whatever the executor (or
/// its version), a tool that ran with no decision allowing it ends the
/// session. Its result is logged (a person must see what ran), then an
/// `error` (`unapproved_tool`), and the executor is stopped; the session is
/// closed on the gateway, and the orchestrator terminates it on that error.
/// After that only question resolutions (the stop withdrawing questions)
/// reach the log.
#[derive(Debug)]
pub(super) struct GuardedSink {
    pub(super) outbox: OutboxSink,
    pub(super) session: std::sync::Weak<GatewaySession>,
    pub(super) audit: Arc<dyn AuditLog>,
}

#[async_trait::async_trait]
impl EventSink for GuardedSink {
    async fn emit(&self, event: Event) -> Result<()> {
        let Some(session) = self.session.upgrade() else {
            return self.outbox.emit(event).await;
        };
        if session
            .unapproved
            .load(std::sync::atomic::Ordering::Acquire)
        {
            if matches!(event, Event::QuestionResolved(_)) {
                return self.outbox.emit(event).await;
            }
            tracing::debug!(session = %session.id, event = event.type_name(), "dropped: the session was stopped");
            return Ok(());
        }
        if let Event::Notice(n) = &event {
            let switched = {
                let mut in_force = session.in_force.lock().unwrap_or_else(|p| p.into_inner());
                match n.code.as_str() {
                    duraclaw_core::protocol::NOTICE_MODE_CHANGED if n.permission_mode.is_some() => {
                        in_force.mode.clone_from(&n.permission_mode);
                        true
                    }
                    duraclaw_core::protocol::NOTICE_MODEL_CHANGED if n.model.is_some() => {
                        in_force.model.clone_from(&n.model);
                        true
                    }
                    _ => false,
                }
            };
            if switched {
                // Recorded, so a relaunch after a restart starts with it.
                let in_force = session.in_force();
                let store = session.log.store();
                let _meta = session.meta_lock.lock().await;
                let mut meta = store.meta().await?;
                meta.permission_mode = in_force.mode;
                if in_force.model.is_some() {
                    meta.model = in_force.model;
                }
                store.put_meta(&meta).await?;
            }
        }
        session.active();
        // Open before the outbox clears the turn's pending mark (after the
        // commit): an idle check that finds no command waiting then finds
        // the turn open.
        match TurnStep::of(&event, waiting(&session.unstarted)) {
            TurnStep::End => session
                .turn_open
                .store(false, std::sync::atomic::Ordering::Release),
            TurnStep::Work => session
                .turn_open
                .store(true, std::sync::atomic::Ordering::Release),
            TurnStep::Other => {}
        }
        let (unapproved, allowed) = {
            let mut guard = session.guard.lock().unwrap_or_else(|p| p.into_inner());
            let before = guard.session_allows().len();
            let unapproved = guard.observe(&event);
            (unapproved, guard.session_allows().get(before).cloned())
        };
        // A new "allow for this session": kept with the session (after its
        // decision is logged), so it holds after a restart or a reload.
        let allowed = match (allowed, &event) {
            (Some((tool, input)), Event::QuestionResolved(r)) => Some(SessionAllow {
                tool,
                input,
                question_id: r.question_id.clone(),
                by: r.by.clone(),
            }),
            _ => None,
        };
        // An executor that found an unapproved tool itself (an ACP agent
        // reporting a call it runs unasked) logged the error: close the same way.
        let reported = matches!(&event, Event::Error(e)
            if e.code.as_deref() == Some(duraclaw_core::protocol::ERROR_UNAPPROVED_TOOL));
        self.outbox.emit(event).await?;
        if let Some(allow) = allowed
            && let Err(e) = keep_session_allow(&session, allow).await
        {
            // It holds in memory; once reloaded, the call is asked again.
            tracing::warn!(session = %session.id, error = %e, "cannot keep an allow for this session");
        }
        if reported {
            session
                .unapproved
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::error!(session = %session.id, "the executor ran a tool without approval; closing the session");
            tokio::spawn(async move { stop_unapproved(&session).await });
            return Ok(());
        }
        let Some(bad) = unapproved else {
            return Ok(());
        };
        session
            .unapproved
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::error!(
            session = %session.id,
            tool = %bad.tool_name,
            tool_use_id = %bad.tool_use_id,
            "a tool ran without approval; stopping the session"
        );
        self.audit.record(&AuditEntry {
            at_ms: SystemClock.now_ms(),
            action: AuditAction::Unapproved,
            session_id: session.id.clone(),
            question_id: bad.tool_use_id.clone(),
            tool_name: Some(bad.tool_name.clone()),
            input: None,
            decision: None,
            who: Some("executor".into()),
            client: None,
        });
        self.outbox.emit(bad.error_event()).await?;
        // Not from here: stopping waits for the executor's reader, which
        // may be the caller.
        tokio::spawn(async move { stop_unapproved(&session).await });
        Ok(())
    }
}

/// Records `allow` in session `session`'s metadata (its
/// `session_allows`), where loading it puts the allow back in force.
async fn keep_session_allow(session: &GatewaySession, allow: SessionAllow) -> Result<()> {
    let store = session.log.store();
    let _meta = session.meta_lock.lock().await;
    let mut meta = store.meta().await?;
    if !meta
        .session_allows
        .iter()
        .any(|a| a.tool == allow.tool && a.input == allow.input)
    {
        tracing::info!(session = %session.id, tool = %allow.tool, question = %allow.question_id, "allowed for this session: kept");
        meta.session_allows.push(allow);
        store.put_meta(&meta).await?;
    }
    Ok(())
}

/// Marks a session closed for good in the gateway's own store: a restart
/// then runs none of its pending turns, and new turns are refused.
pub(super) async fn mark_closed(session: &GatewaySession) -> Result<()> {
    let store = session.log.store();
    let _meta = session.meta_lock.lock().await;
    let mut meta = store.meta().await?;
    if meta.state != SessionState::Terminated {
        meta.state = SessionState::Terminated;
        meta.updated_at_ms = SystemClock.now_ms();
        store.put_meta(&meta).await?;
    }
    Ok(())
}

/// Closes a session in which a tool ran unapproved and kills its executor
/// (given time, an old CLI would run the next unasked tool).
pub(super) async fn stop_unapproved(session: &GatewaySession) {
    if let Err(e) = mark_closed(session).await {
        tracing::error!(session = %session.id, error = %e, "cannot mark the session closed");
    }
    let exec = session.exec.lock().await.take();
    if let Some(e) = exec
        && let Err(err) = e.kill().await
    {
        tracing::warn!(session = %session.id, error = %err, "executor did not stop cleanly");
    }
}
