//! From a logged event to the state machine's inputs, and what the log
//! says about the turn and the state.

use crate::error::Result;
use crate::protocol::{ERROR_UNAPPROVED_TOOL, Event, QuestionKind, Seq};
use crate::state::{PauseReason, SessionInput, SessionState};
use crate::store::{DynSessionStore, SessionMeta};

/// Whether an event is the agent at work: a turn is running when it is
/// logged.
pub(super) fn shows_work(event: &Event) -> bool {
    shows_work_type(event.type_name())
}

/// [`shows_work`] by the event's `type`.
pub(super) fn shows_work_type(kind: &str) -> bool {
    matches!(
        kind,
        "assistant" | "tool_use" | "tool_result" | "user_question"
    )
}

/// [`shows_work_type`], or a turn's start (`session.init`).
pub(super) fn starts_or_shows_work(kind: &str) -> bool {
    kind == "session.init" || shows_work_type(kind)
}

/// Whether an event of type `kind` is logged when it comes after the
/// session ended: a question's resolution (the stop withdrew it), an
/// error, a notice. The executor's work is not.
pub(super) fn after_the_end(kind: &str) -> bool {
    matches!(kind, "question.resolved" | "error" | "notice")
}

/// Whether a turn is running in `state`: a message sent now waits for it.
pub(super) fn turn_running(state: SessionState) -> bool {
    matches!(
        state,
        SessionState::Initializing
            | SessionState::Active
            | SessionState::Paused {
                reason: PauseReason::AwaitingApproval | PauseReason::AwaitingAnswer
            }
    )
}

/// How far back [`last_turn_open`] looks.
pub(super) const TURN_LOOKBACK: Seq = 64;

/// Whether the log's last turn is open: scanning back from its end, a
/// `user.message`, `session.init` or the agent's work comes before any
/// `result` or `error`. `None` when the tail holds neither (only state
/// changes, resolutions and unknown events).
pub(super) async fn last_turn_open(store: &DynSessionStore) -> Result<Option<bool>> {
    let head = store.head().await?;
    let from = head.last_seq.saturating_sub(TURN_LOOKBACK);
    let limit = usize::try_from(TURN_LOOKBACK).unwrap_or(64);
    let tail = store.read_after(from, limit).await?;
    for e in tail.iter().rev() {
        match e.event() {
            Ok(Event::Result(_) | Event::Error(_)) => return Ok(Some(false)),
            Ok(Event::UserMessage(_) | Event::SessionInit(_)) => return Ok(Some(true)),
            Ok(event) if shows_work(&event) => return Ok(Some(true)),
            Ok(_) | Err(_) => continue,
        }
    }
    Ok(None)
}

/// The state the log last recorded (its last `session.state` event),
/// looking back a bounded number of events.
pub(super) async fn last_logged_state(store: &DynSessionStore) -> Result<Option<SessionState>> {
    const PAGE: Seq = 512;
    const PAGES: Seq = 8;
    let head = store.head().await?.last_seq;
    let mut to = head;
    for _ in 0..PAGES {
        if to == 0 {
            break;
        }
        let from = to.saturating_sub(PAGE);
        let page = store
            .read_after(from, usize::try_from(to - from).unwrap_or(MAX_READ))
            .await?;
        for e in page.iter().rev() {
            if let Ok(Event::SessionState(s)) = e.event() {
                return Ok(Some(s.state));
            }
        }
        to = from;
    }
    Ok(None)
}

/// The most events [`last_logged_state`] asks for at once.
pub(super) const MAX_READ: usize = 512;

/// The questions still open, by id (`true` for an AskUserQuestion), so a
/// resolution of a question already decided (the executor confirming a
/// human's answer) changes no state.
#[derive(Debug, Default, Clone)]
pub(super) struct Pending {
    ids: std::collections::BTreeMap<String, bool>,
}

impl Pending {
    pub(super) fn answers(&self) -> usize {
        self.ids.values().filter(|a| **a).count()
    }

    pub(super) fn approvals(&self) -> usize {
        self.ids.len() - self.answers()
    }

    pub(super) fn total(&self) -> u32 {
        u32::try_from(self.ids.len()).unwrap_or(u32::MAX)
    }

    pub(super) fn still_pending(&self) -> Option<PauseReason> {
        if self.approvals() > 0 {
            Some(PauseReason::AwaitingApproval)
        } else if self.answers() > 0 {
            Some(PauseReason::AwaitingAnswer)
        } else {
            None
        }
    }
}

pub(super) async fn pending_counts(store: &DynSessionStore) -> Result<Pending> {
    let mut p = Pending::default();
    for q in store.questions(true).await? {
        let is_answer = matches!(q.question.kind, QuestionKind::AskUser { .. });
        p.ids.insert(q.question.question_id, is_answer);
    }
    Ok(p)
}

/// The state inputs an event implies, updating the pending counts and the
/// metadata it carries (executor session id, model, cost). Only the
/// [stateful types](crate::protocol::STATEFUL_EVENT_TYPES) imply any:
/// [`SessionActor::ingest_raw`](super::SessionActor::ingest_raw) decodes no other.
pub(super) fn inputs_for(
    event: &Event,
    pending: &mut Pending,
    meta: &mut SessionMeta,
) -> Vec<SessionInput> {
    match event {
        Event::SessionInit(init) => {
            if init.executor_session_id.is_some() {
                meta.executor_session_id
                    .clone_from(&init.executor_session_id);
            }
            if init.model.is_some() {
                meta.model.clone_from(&init.model);
            }
            vec![SessionInput::Initialized]
        }
        Event::UserQuestion(q) => {
            let is_answer = matches!(q.kind, QuestionKind::AskUser { .. });
            pending.ids.insert(q.question_id.clone(), is_answer);
            if is_answer {
                vec![SessionInput::QuestionAsked]
            } else {
                vec![SessionInput::ApprovalRequested]
            }
        }
        // Only a question still open moves the state: the executor
        // withdrew or timed it out. A confirmation of a decision already
        // recorded changes nothing.
        Event::QuestionResolved(r) if pending.ids.remove(&r.question_id).is_some() => {
            vec![SessionInput::QuestionResolved {
                still_pending: pending.still_pending(),
            }]
        }
        Event::Result(r) => {
            if let Some(cost) = r.cost_usd {
                meta.cost_usd = cost;
            }
            vec![SessionInput::TurnEnded]
        }
        // A tool ran that no decision allowed: the gateway stopped the
        // session for good.
        Event::Error(e) if e.code.as_deref() == Some(ERROR_UNAPPROVED_TOOL) => {
            vec![SessionInput::Terminate]
        }
        Event::Error(_) => vec![SessionInput::TurnEnded],
        // The worktree the gateway runs the session in (a new one it made
        // replaces the requested repository's path).
        Event::Notice(n) if n.code == crate::protocol::NOTICE_WORKTREE => {
            if let Some(w) = &n.worktree {
                meta.worktree.clone_from(&w.path);
                // A fork in its parent's new worktree keeps the origin
                // its host gave it.
                if w.origin.is_some() {
                    meta.origin.clone_from(&w.origin);
                }
            }
            vec![]
        }
        // A mode or model switched mid-session: the session's metadata
        // shows what is in force.
        Event::Notice(n) if n.code == crate::protocol::NOTICE_MODE_CHANGED => {
            if n.permission_mode.is_some() {
                meta.permission_mode.clone_from(&n.permission_mode);
            }
            vec![]
        }
        Event::Notice(n) if n.code == crate::protocol::NOTICE_MODEL_CHANGED => {
            if n.model.is_some() {
                meta.model.clone_from(&n.model);
            }
            vec![]
        }
        // A notice tells a person something (e.g. that a restarted gateway
        // runs a message it took): the turn it announces moves the state by
        // its own events.
        Event::Notice(_) => vec![],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{NOTICE_RERUN_AFTER_RESTART, Notice};

    #[test]
    fn an_unapproved_tool_error_terminates_the_session() {
        let mut pending = Pending::default();
        let mut meta = SessionMeta::new("s", "alice", 1);
        let error = |code: &str| {
            Event::Error(crate::protocol::ErrorEvent {
                code: Some(code.into()),
                ..crate::protocol::ErrorEvent::default()
            })
        };
        assert_eq!(
            inputs_for(&error(ERROR_UNAPPROVED_TOOL), &mut pending, &mut meta),
            vec![SessionInput::Terminate]
        );
        assert_eq!(
            inputs_for(&error("executor_exited"), &mut pending, &mut meta),
            vec![SessionInput::TurnEnded]
        );
    }

    #[test]
    fn the_worktree_mode_and_model_notices_are_recorded_in_the_metadata() {
        let mut pending = Pending::default();
        let mut meta = SessionMeta::new("s", "alice", 1);
        meta.worktree = "/w/app".into();
        let worktree = Event::Notice(Notice {
            worktree: Some(Box::new(crate::protocol::SessionWorktree {
                path: "/data/worktrees/app-1".into(),
                created: true,
                origin: Some("/w/app".into()),
                ..Default::default()
            })),
            ..Notice::new(crate::protocol::NOTICE_WORKTREE, "w")
        });
        let mut mode = Notice::new(crate::protocol::NOTICE_MODE_CHANGED, "m");
        mode.permission_mode = Some("plan".into());
        let mut model = Notice::new(crate::protocol::NOTICE_MODEL_CHANGED, "m");
        model.model = Some("opus".into());
        for e in [worktree, Event::Notice(mode), Event::Notice(model)] {
            assert_eq!(inputs_for(&e, &mut pending, &mut meta), vec![]);
        }
        assert_eq!(meta.worktree, "/data/worktrees/app-1");
        assert_eq!(meta.rules_worktree(), "/w/app");
        assert_eq!(meta.permission_mode.as_deref(), Some("plan"));
        assert_eq!(meta.model.as_deref(), Some("opus"));
    }

    #[test]
    fn a_notice_changes_no_state_and_no_metadata() {
        let mut pending = Pending::default();
        pending.ids.insert("q-1".into(), false);
        let mut meta = SessionMeta::new("s", "alice", 1);
        meta.state = SessionState::paused(PauseReason::AwaitingApproval);
        let before = (pending.ids.clone(), meta.clone());
        let notice = Event::Notice(
            Notice::new(NOTICE_RERUN_AFTER_RESTART, "run again").about_command("s/c-1"),
        );
        assert_eq!(inputs_for(&notice, &mut pending, &mut meta), vec![]);
        assert_eq!((pending.ids, meta), before);
        // The same code path gives a turn's end an input, so the empty list
        // above is the notice's doing, not a stub's.
        let mut pending = Pending::default();
        let mut meta = SessionMeta::new("s", "alice", 1);
        assert_eq!(
            inputs_for(
                &Event::Error(crate::protocol::ErrorEvent::default()),
                &mut pending,
                &mut meta
            ),
            vec![SessionInput::TurnEnded]
        );
    }
}
