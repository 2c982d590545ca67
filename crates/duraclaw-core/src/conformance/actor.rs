//! The actor cases: ingest, state, answers and the order of the log, over
//! each backend's store.

use serde_json::json;

use super::{
    CaseError, CaseResult, StoreHarness, T0, contiguous, delta, drain_to, fresh_store, permission,
};
use crate::backend::actor::{Person, SessionActor};
use crate::clock::ManualClock;
use crate::error::Result;
use crate::protocol::{
    Assistant, AssistantPhase, Command, DecidedBy, Decision, Event, SessionInit, TurnResult,
    UserTurn,
};
use crate::state::{PauseReason, SessionState};
use crate::store::SessionMeta;

pub(super) async fn actor_ingest_acks_and_refuses_gaps(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "ingest").await?;
    let clock = ManualClock::new(T0);
    let actor = SessionActor::open(store.clone(), clock.shared()).await?;
    let out = actor.ingest(vec![(1, delta(1)), (2, delta(2))]).await?;
    check_eq!((out.ack, out.duplicates, out.gap_at), (2, 0, None));
    let out = actor.ingest(vec![(2, delta(2)), (3, delta(3))]).await?;
    check_eq!((out.ack, out.duplicates, out.stored), (3, 1, 1));
    let out = actor.ingest(vec![(4, delta(4)), (6, delta(6))]).await?;
    check_eq!((out.ack, out.gap_at), (4, Some(5)));
    let out = actor.ingest(vec![(1, delta(1))]).await?;
    check_eq!((out.ack, out.stored, out.duplicates), (4, 0, 1));
    check_eq!(store.head().await?.highest_gseq, 4);
    // A reopened actor keeps deduping.
    let again = SessionActor::open(store.clone(), clock.shared()).await?;
    let out = again.ingest(vec![(4, delta(4)), (5, delta(5))]).await?;
    check_eq!((out.ack, out.stored, out.duplicates), (5, 1, 1));
    let frames = again.on_gateway_connected().await?;
    check!(
        matches!(
            frames.last(),
            Some(crate::protocol::ToGateway::Attach { after_gseq: 5, .. })
        ),
        "attach after the ack: {frames:?}"
    );
    Ok(())
}

/// Each epoch is kept with where the log ended when it began, in the
/// metadata the store keeps (its last `MAX_EPOCHS`); the snapshot names
/// the latest; other metadata writes keep them.
pub(super) async fn actor_epochs_keep_where_the_log_ended(h: &dyn StoreHarness) -> CaseResult {
    use crate::protocol::Epoch;
    use crate::store::{LogEpoch, MAX_EPOCHS};
    let (_dir, store, _) = fresh_store(h, "epochs").await?;
    let clock = ManualClock::new(T0);
    let actor = SessionActor::open(store.clone(), clock.shared()).await?;
    check_eq!(actor.snapshot().await?.epoch, None);
    actor.begin_epoch(Epoch(1)).await?;
    actor.ingest(vec![(1, delta(1)), (2, delta(2))]).await?;
    // A metadata write of the actor's (the activity time) keeps them.
    clock.set(T0 + 5_000);
    actor.ingest(vec![(3, delta(3))]).await?;
    let again = SessionActor::open(store.clone(), clock.shared()).await?;
    again.begin_epoch(Epoch(2)).await?;
    check_eq!(again.snapshot().await?.epoch, Some(Epoch(2)));
    let want = vec![
        LogEpoch {
            epoch: Epoch(1),
            head: 0,
        },
        LogEpoch {
            epoch: Epoch(2),
            head: 3,
        },
    ];
    check_eq!(store.meta().await?.epochs, want);
    check_eq!(again.epochs().await, want);
    for n in 3..=(MAX_EPOCHS as u64 + 5) {
        again.begin_epoch(Epoch(n)).await?;
    }
    let kept = store.meta().await?.epochs;
    check_eq!(kept.len(), MAX_EPOCHS);
    check_eq!(kept.first().map(|e| e.epoch), Some(Epoch(6)));
    check_eq!(
        kept.last().map(|e| (e.epoch, e.head)),
        Some((Epoch(MAX_EPOCHS as u64 + 5), 3))
    );
    Ok(())
}

/// A stream of events that changes nothing but the activity time writes
/// the events alone, and the activity time once per `ACTIVITY_WRITE_MS`;
/// anything else in the metadata is written with the events that caused it.
pub(super) async fn actor_writes_activity_once_a_second(h: &dyn StoreHarness) -> CaseResult {
    use crate::backend::actor::ACTIVITY_WRITE_MS;
    let (_dir, store, _) = fresh_store(h, "activity").await?;
    let clock = ManualClock::new(T0);
    let actor = SessionActor::open(store.clone(), clock.shared()).await?;
    let stored = |m: SessionMeta| (m.updated_at_ms, m.state);
    clock.set(T0 + 10);
    actor.ingest(vec![(1, delta(1))]).await?;
    check_eq!(actor.meta().await.updated_at_ms, T0 + 10);
    check_eq!(
        stored(store.meta().await?),
        (T0, SessionState::Initializing)
    );
    check_eq!(store.head().await?.highest_gseq, 1);
    // A second after the last write, the activity time is written.
    clock.set(T0 + ACTIVITY_WRITE_MS);
    actor.ingest(vec![(2, delta(2))]).await?;
    check_eq!(store.meta().await?.updated_at_ms, T0 + ACTIVITY_WRITE_MS);
    // A state change is written at once, with its events.
    let init = Event::SessionInit(SessionInit {
        executor_session_id: Some("cli-1".into()),
        ..SessionInit::default()
    });
    clock.set(T0 + ACTIVITY_WRITE_MS + 1);
    actor.ingest(vec![(3, init)]).await?;
    let meta = store.meta().await?;
    check_eq!(meta.updated_at_ms, T0 + ACTIVITY_WRITE_MS + 1);
    check_eq!(meta.state, actor.meta().await.state);
    check_eq!(meta.executor_session_id.as_deref(), Some("cli-1"));
    clock.set(T0 + ACTIVITY_WRITE_MS + 2);
    actor.ingest(vec![(4, delta(4))]).await?;
    check_eq!(
        store.meta().await?.updated_at_ms,
        T0 + ACTIVITY_WRITE_MS + 1
    );
    // Reopened, the actor is at most that much behind the log, and dedupes.
    let again = SessionActor::open(store.clone(), clock.shared()).await?;
    let behind = T0 + ACTIVITY_WRITE_MS + 2 - again.meta().await.updated_at_ms;
    check!(
        (0..ACTIVITY_WRITE_MS).contains(&behind),
        "activity {behind} ms behind"
    );
    clock.set(T0 + 3000);
    let out = again.ingest(vec![(4, delta(4))]).await?;
    check_eq!((out.stored, out.duplicates), (0, 1));
    Ok(())
}

/// A retried `answer` (the same command id, as a client resends after a
/// reconnect) gets the result its first try got, across a reopen, and
/// forwards nothing; only a different command is told `already_decided`.
pub(super) async fn actor_retried_answer_gets_its_first_result(h: &dyn StoreHarness) -> CaseResult {
    let (dir, store, name) = fresh_store(h, "retried-answer").await?;
    let clock = ManualClock::new(T0);
    let actor = SessionActor::open(store.clone(), clock.shared()).await?;
    actor
        .ingest(vec![(1, permission("q1")), (2, permission("q2"))])
        .await?;
    let alice = |client: &str| Person {
        user: "alice".into(),
        client: Some(client.into()),
    };
    let answer = |question: &str| {
        Command::Answer(crate::protocol::Answer {
            question_id: question.into(),
            decision: Decision::Allow {
                updated_input: None,
                remember: false,
            },
            by: None,
            allow_worktree_rule: None,
        })
    };
    let first = actor.command("a-1", answer("q1"), &alice("web 1")).await?;
    check!(
        first.result.ok && first.forward.len() == 1,
        "first try: {first:?}"
    );
    let head = store.head().await?.last_seq;
    // The same frame again, from the socket that replaced the first.
    let retry = actor.command("a-1", answer("q1"), &alice("web 2")).await?;
    check!(
        retry.result.ok && retry.result.error.is_none() && retry.forward.is_empty(),
        "a retry gets the first try's result: {retry:?}"
    );
    check_eq!(store.head().await?.last_seq, head);
    // A different command on the decided question is told who decided.
    let other = actor.command("a-2", answer("q1"), &alice("web 2")).await?;
    check_eq!(
        other.result.error.as_ref().map(|e| e.code.as_str()),
        Some("already_decided")
    );
    // A retry of a command that lost gets the same loss again.
    let again = actor.command("a-2", answer("q1"), &alice("web 2")).await?;
    check_eq!(again.result, other.result);
    // Across a reopen (a restarted host): still the first try's result.
    drop(actor);
    drop(store);
    let dir2 = h.directory(&name).await?;
    let store = dir2.open("s1").await?;
    let actor = SessionActor::open(store.clone(), clock.shared()).await?;
    let late = actor.command("a-1", answer("q1"), &alice("web 3")).await?;
    check!(
        late.result.ok && late.forward.is_empty(),
        "a retry after a reopen: {late:?}"
    );
    // The other question is still open and takes a new answer.
    let q2 = actor.command("a-3", answer("q2"), &alice("web 3")).await?;
    check!(q2.result.ok && q2.forward.len() == 1, "q2: {q2:?}");
    let resolved = store
        .read_after(0, 100)
        .await?
        .iter()
        .filter(|e| e.json.contains("question.resolved"))
        .count();
    check_eq!(resolved, 2);
    drop(dir);
    Ok(())
}

pub(super) async fn actor_drives_the_state_machine(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "machine").await?;
    let clock = ManualClock::new(T0);
    let actor = SessionActor::open(store.clone(), clock.shared()).await?;
    let mut sub = actor.log().subscribe(0);
    let init = Event::SessionInit(SessionInit {
        executor_session_id: Some("cli-1".into()),
        model: Some("claude-test".into()),
        ..SessionInit::default()
    });
    actor
        .ingest(vec![(1, init), (2, delta(1)), (3, permission("q1"))])
        .await?;
    check_eq!(
        actor.meta().await.state,
        SessionState::paused(PauseReason::AwaitingApproval)
    );
    check_eq!(
        actor.meta().await.executor_session_id.as_deref(),
        Some("cli-1")
    );
    check_eq!(actor.snapshot().await?.pending.len(), 1);

    let alice = Person {
        user: "alice".into(),
        client: Some("browser 1".into()),
    };
    let bob = Person {
        user: "bob".into(),
        client: Some("phone".into()),
    };
    let answer = |decision: Decision| {
        Command::Answer(crate::protocol::Answer {
            question_id: "q1".into(),
            decision,
            by: None,
            allow_worktree_rule: None,
        })
    };
    let allow = Decision::Allow {
        updated_input: None,
        remember: false,
    };
    let first = actor.command("b-1", answer(allow.clone()), &alice).await?;
    check!(
        first.result.ok && first.forward.len() == 1,
        "first answer: {first:?}"
    );
    let second = actor
        .command(
            "b-2",
            answer(Decision::Deny {
                reason: "no".into(),
                interrupt: false,
            }),
            &bob,
        )
        .await?;
    check!(
        !second.result.ok && second.forward.is_empty(),
        "second answer: {second:?}"
    );
    let msg = second.result.error.map(|e| e.message).unwrap_or_default();
    check!(
        msg.contains("alice"),
        "the second answer is told who decided: {msg}"
    );
    check_eq!(actor.meta().await.state, SessionState::Active);
    check_eq!(actor.meta().await.pending_questions, 0);

    let done = Event::Result(TurnResult {
        last_message_uuid: None,
        cost_usd: Some(0.5),
        ..TurnResult::default()
    });
    actor.ingest(vec![(4, done)]).await?;
    check_eq!(
        actor.meta().await.state,
        SessionState::paused(PauseReason::Idle)
    );
    check_eq!(actor.meta().await.cost_usd, 0.5);

    let turn = Command::Message(UserTurn {
        text: "and now the tests".into(),
    });
    let m1 = actor.command("b-3", turn.clone(), &alice).await?;
    let m2 = actor.command("b-3", turn, &alice).await?;
    check!(
        m1.forward.len() == 1 && m2.forward.is_empty(),
        "message applied once: {m1:?} {m2:?}"
    );
    check_eq!(actor.meta().await.state, SessionState::Active);
    check_eq!(store.unforwarded().await?.len(), 2);
    let frames = actor.on_gateway_connected().await?;
    check_eq!(frames.len(), 3);
    // The unconfirmed commands first, then the attach: the gateway cannot
    // attach a session whose `execute` is still among them.
    check!(
        matches!(
            frames.as_slice(),
            [
                crate::protocol::ToGateway::Command(_),
                crate::protocol::ToGateway::Command(_),
                crate::protocol::ToGateway::Attach { .. }
            ]
        ),
        "commands, then attach: {frames:?}"
    );
    actor
        .on_command_result(&crate::protocol::CommandResult {
            id: "b-1".into(),
            ok: true,
            error: None,
        })
        .await?;
    check_eq!(store.unforwarded().await?.len(), 1);

    // What a browser sees: every event once, in order, state changes included.
    let last = store.head().await?.last_seq;
    let seqs = drain_to(&mut sub, last).await?;
    check!(contiguous(&seqs, 0, last), "{seqs:?}");
    let types: Vec<String> = store
        .read_after(0, 100)
        .await?
        .iter()
        .map(|e| e.event().map(|e| e.type_name().to_owned()))
        .collect::<Result<_>>()?;
    check_eq!(
        types,
        vec![
            "session.init",
            "session.state",
            "assistant",
            "user_question",
            "session.state",
            "question.resolved",
            "session.state",
            "result",
            "session.state",
            "user.message",
            "session.state"
        ]
    );
    // Another tool call waits (q2) when the executor confirms the decision
    // on q1 it received: logged, but q2 still holds the session.
    let gseq = store.head().await?.highest_gseq + 1;
    actor.ingest(vec![(gseq, permission("q2"))]).await?;
    check_eq!(
        actor.meta().await.state,
        SessionState::paused(PauseReason::AwaitingApproval)
    );
    let before_confirm = store.head().await?.last_seq;
    let confirm = Event::QuestionResolved(crate::protocol::QuestionResolved {
        question_id: "q1".into(),
        decision: allow.clone(),
        by: DecidedBy::new("alice"),
        at_ms: T0 + 7,
    });
    actor.ingest(vec![(gseq + 1, confirm)]).await?;
    check_eq!(store.head().await?.last_seq, before_confirm + 1);
    check_eq!(
        actor.meta().await.state,
        SessionState::paused(PauseReason::AwaitingApproval)
    );
    check_eq!(actor.meta().await.pending_questions, 1);
    let reopened = SessionActor::open(store, clock.shared()).await?;
    check_eq!(
        reopened.meta().await.state,
        SessionState::paused(PauseReason::AwaitingApproval)
    );
    Ok(())
}

/// The log tells what happened in order: a message sent mid-turn is
/// logged as queued; a turn that starts while the session reads idle is
/// `active` before its `session.init`; nothing of the executor's work is
/// logged after `terminated` (what closes a question or reports an error
/// still is), and those events are acked all the same.
pub(super) async fn actor_logs_the_session_in_order(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "order").await?;
    let clock = ManualClock::new(T0);
    let actor = SessionActor::open(store.clone(), clock.shared()).await?;
    let alice = Person {
        user: "alice".into(),
        client: None,
    };
    let init = Event::SessionInit(SessionInit {
        executor_session_id: Some("cli-1".into()),
        ..SessionInit::default()
    });
    let end = |cost: f64| {
        Event::Result(TurnResult {
            last_message_uuid: None,
            cost_usd: Some(cost),
            ..TurnResult::default()
        })
    };
    let message = |text: &str| {
        Command::Message(UserTurn {
            text: text.to_owned(),
        })
    };
    let types_after = |after: u64| {
        let store = store.clone();
        async move {
            store
                .read_after(after, 100)
                .await?
                .iter()
                .map(|e| {
                    e.event().map(|ev| match ev {
                        Event::SessionState(s) => format!("state {:?}", s.state),
                        Event::UserMessage(m) if m.queued => "user.message queued".to_owned(),
                        other => other.type_name().to_owned(),
                    })
                })
                .collect::<Result<Vec<_>>>()
        }
    };

    // A turn; a message sent while it streams waits for its end.
    actor.ingest(vec![(1, init.clone()), (2, delta(1))]).await?;
    let mid = store.head().await?.last_seq;
    actor.command("m-1", message("and then?"), &alice).await?;
    actor.ingest(vec![(3, delta(2)), (4, end(0.1))]).await?;
    check_eq!(
        types_after(mid).await?,
        vec![
            "user.message queued",
            "assistant",
            "result",
            "state Paused { reason: Idle }"
        ]
    );
    // The queued message's turn starts: active first, then its init.
    let idle = store.head().await?.last_seq;
    actor.ingest(vec![(5, init.clone()), (6, delta(3))]).await?;
    check_eq!(
        types_after(idle).await?,
        vec!["state Active", "session.init", "assistant"]
    );
    actor.ingest(vec![(7, end(0.2))]).await?;

    // A message sent while idle is no queued one.
    let idle = store.head().await?.last_seq;
    actor.command("m-2", message("go on"), &alice).await?;
    check_eq!(
        types_after(idle).await?,
        vec!["user.message", "state Active"]
    );
    actor.ingest(vec![(8, init), (9, delta(4))]).await?;
    // Closed mid-stream: the aborted turn's end, its result and the CLI's
    // interruption marker come after the close.
    let close = Command::Close(crate::protocol::Close {});
    actor.command("c-1", close, &alice).await?;
    let closed = store.head().await?.last_seq;
    let aborted = Event::Assistant(Assistant {
        message_id: "msg_1".into(),
        phase: AssistantPhase::Final,
        text: "token 4 ".into(),
        aborted: true,
    });
    let marker =
        Event::Unknown(json!({"type": "cli.user", "text": "[Request interrupted by user]"}));
    let withdrawn = Event::QuestionResolved(crate::protocol::QuestionResolved {
        question_id: "q-late".into(),
        decision: Decision::Cancelled {
            reason: Some("the session was stopped".into()),
        },
        by: DecidedBy::new("executor"),
        at_ms: T0 + 8,
    });
    let out = actor
        .ingest(vec![
            (10, aborted),
            (11, marker),
            (12, withdrawn),
            (13, end(0.5)),
        ])
        .await?;
    check_eq!(out.ack, 13);
    check_eq!(types_after(closed).await?, vec!["question.resolved"]);
    check_eq!(actor.meta().await.state, SessionState::Terminated);
    check_eq!(actor.meta().await.cost_usd, 0.5);
    // Acked: sent again, nothing changes.
    let again = actor.ingest(vec![(13, end(0.5))]).await?;
    check_eq!(again.ack, 13);
    check_eq!(store.head().await?.last_seq, closed + 1);
    // The log's last state is the end.
    let types = types_after(0).await?;
    let last_state = types.iter().rev().find(|t| t.starts_with("state "));
    check_eq!(last_state.map(String::as_str), Some("state Terminated"));
    Ok(())
}
