//! The store cases: the log, subscriptions, questions, commands and the
//! session directory.

use serde_json::json;

use super::{
    CaseError, CaseResult, StoreHarness, T0, contiguous, delta, deltas, drain_to, fresh_store,
    new_event, permission, unique, yield_now,
};
use crate::backend::actor::SessionLog;
use crate::error::Error;
use crate::protocol::{DecidedBy, Decision, Event, MAX_EVENT_BYTES, MAX_FRAME_BYTES, ToolResult};
use crate::state::{PauseReason, SessionState};
use crate::store::{
    AppendBatch, MAX_PAGE, NewEvent, RecordedCommand, Resolution, ResolveOutcome, SessionMeta,
};

pub(super) async fn append_assigns_dense_seqs(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "dense").await?;
    check_eq!(store.head().await?.last_seq, 0);
    let a = store.append(AppendBatch::events(deltas(0, 3)?)).await?;
    let b = store.append(AppendBatch::events(deltas(3, 1)?)).await?;
    let c = store.append(AppendBatch::events(vec![])).await?;
    let seqs: Vec<u64> = a.stored.iter().chain(&b.stored).map(|e| e.seq).collect();
    check_eq!(seqs, vec![1, 2, 3, 4]);
    check!(c.stored.is_empty(), "an empty batch stores nothing");
    check_eq!(store.head().await?.last_seq, 4);
    let all = store.read_after(0, 100).await?;
    check_eq!(all.len(), 4);
    check_eq!(all[3].json, b.stored[0].json);
    check_eq!(all[0].json, a.stored[0].json);
    check_eq!(all[0].event()?, delta(0));
    check_eq!(all[0].at_ms, T0);
    Ok(())
}

pub(super) async fn read_after_pages(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "pages").await?;
    store.append(AppendBatch::events(deltas(0, 25)?)).await?;
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = store.read_after(after, 10).await?;
        if page.is_empty() {
            break;
        }
        check!(page.len() <= 10, "page of {} over the limit 10", page.len());
        after = page.last().map(|e| e.seq).unwrap_or(after);
        pages.push(page.iter().map(|e| e.seq).collect::<Vec<_>>());
    }
    check_eq!(pages.len(), 3);
    check_eq!(pages[2], vec![21, 22, 23, 24, 25]);
    check_eq!(store.read_after(7, 1).await?.len(), 1);
    check_eq!(store.read_after(7, 0).await?.len(), 1); // clamped up to 1
    check_eq!(store.read_after(0, MAX_PAGE * 10).await?.len(), 25);
    check!(
        store.read_after(25, 10).await?.is_empty(),
        "nothing after the end"
    );
    check!(
        store.read_after(1000, 10).await?.is_empty(),
        "nothing far past the end"
    );
    Ok(())
}

pub(super) async fn replay_after_n_then_live(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "replay").await?;
    store.append(AppendBatch::events(deltas(0, 10)?)).await?;
    let log = SessionLog::open_with(store, 64, 3).await?;
    for after in [0, 4, 9, 10] {
        let mut sub = log.subscribe(after);
        let seqs = drain_to(&mut sub, 10).await?;
        check!(contiguous(&seqs, after, 10), "after {after}: {seqs:?}");
    }
    let mut sub = log.subscribe(5);
    log.append(AppendBatch::events(deltas(10, 5)?)).await?;
    let seqs = drain_to(&mut sub, 15).await?;
    check!(contiguous(&seqs, 5, 15), "replay then live: {seqs:?}");
    Ok(())
}

pub(super) async fn seam_under_concurrent_appends(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "seam").await?;
    store.append(AppendBatch::events(deltas(0, 20)?)).await?;
    let log = SessionLog::open_with(store, 16, 7).await?;
    const BATCHES: u64 = 60;
    const PER: u64 = 5;
    let last = 20 + BATCHES * PER;
    let appender = {
        let log = log.clone();
        async move {
            for b in 0..BATCHES {
                log.append(AppendBatch::events(deltas(20 + b * PER, PER)?))
                    .await?;
                yield_now().await;
            }
            Ok::<(), CaseError>(())
        }
    };
    let subscriber = |start_after_batches: u64, after: u64| {
        let log = log.clone();
        async move {
            for _ in 0..start_after_batches * 2 {
                yield_now().await;
            }
            let mut sub = log.subscribe(after);
            let seqs = drain_to(&mut sub, last).await?;
            if !contiguous(&seqs, after, last) {
                return Err(CaseError(format!(
                    "subscriber after {after} saw {} events, not {} contiguous: first {:?}",
                    seqs.len(),
                    last - after,
                    &seqs[..seqs.len().min(8)]
                )));
            }
            Ok::<(), CaseError>(())
        }
    };
    let (a, s1, s2, s3, s4) = futures::join!(
        appender,
        subscriber(0, 0),
        subscriber(5, 3),
        subscriber(20, 20),
        subscriber(40, 100),
    );
    a?;
    s1?;
    s2?;
    s3?;
    s4?;
    Ok(())
}

pub(super) async fn slow_subscriber_catches_up_by_replay(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "slow").await?;
    let log = SessionLog::open_with(store, 2, 4).await?;
    let mut slow = log.subscribe(0);
    let mut fast = log.subscribe(0);
    for i in 0..50 {
        log.append(AppendBatch::events(deltas(i, 1)?)).await?;
        if let Some(Err(e)) = fast.next().await {
            return Err(e.into());
        }
    }
    check_eq!(fast.delivered(), 50);
    // The slow reader's queue overflowed long ago; appends did not wait.
    let seqs = drain_to(&mut slow, 50).await?;
    check!(contiguous(&seqs, 0, 50), "slow reader saw {seqs:?}");
    check!(
        slow.catch_ups() >= 1,
        "the slow reader should have caught up by replay"
    );
    // It is live again afterwards.
    log.append(AppendBatch::events(deltas(50, 1)?)).await?;
    let seqs = drain_to(&mut slow, 51).await?;
    check_eq!(seqs, vec![51]);
    Ok(())
}

pub(super) async fn gseq_dedupe(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "gseq").await?;
    let batch = |gseqs: &[u64]| -> std::result::Result<AppendBatch, CaseError> {
        Ok(AppendBatch::events(
            gseqs
                .iter()
                .map(|g| new_event(&delta(*g), Some(*g)))
                .collect::<std::result::Result<_, _>>()?,
        ))
    };
    let a = store.append(batch(&[1, 2, 3])?).await?;
    check_eq!((a.stored.len(), a.duplicates, a.highest_gseq), (3, 0, 3));
    let b = store.append(batch(&[2, 3, 4])?).await?;
    check_eq!((b.stored.len(), b.duplicates, b.highest_gseq), (1, 2, 4));
    check_eq!(b.stored[0].gseq, Some(4));
    check_eq!(b.stored[0].seq, 4);
    let c = store.append(batch(&[1, 2, 3, 4])?).await?;
    check_eq!((c.stored.len(), c.duplicates, c.highest_gseq), (0, 4, 4));
    // Orchestrator events (no gseq) always append.
    let d = store.append(AppendBatch::events(deltas(9, 2)?)).await?;
    check_eq!((d.stored.len(), d.highest_gseq), (2, 4));
    let head = store.head().await?;
    check_eq!((head.last_seq, head.highest_gseq), (6, 4));
    Ok(())
}

/// `append_with_meta` is one step: the events, their question and the
/// metadata are all written, or, when the metadata is refused, none is.
pub(super) async fn append_with_meta_is_one_step(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, name) = fresh_store(h, "with-meta").await?;
    let mut meta = store.meta().await?;
    meta.state = SessionState::paused(PauseReason::AwaitingApproval);
    meta.pending_questions = 1;
    meta.cost_usd = 0.5;
    meta.updated_at_ms = T0 + 5;
    let out = store
        .append_with_meta(
            AppendBatch::events(vec![
                new_event(&delta(1), Some(1))?,
                new_event(&permission("q1"), Some(2))?,
            ]),
            &meta,
        )
        .await?;
    check_eq!((out.stored.len(), out.highest_gseq), (2, 2));
    check_eq!(store.meta().await?, meta);
    check_eq!(store.questions(true).await?.len(), 1);

    // Changing the owner is refused, and the events with it.
    let mut refused = meta.clone();
    refused.owner = "mallory".into();
    refused.pending_questions = 2;
    let err = store
        .append_with_meta(
            AppendBatch::events(vec![
                new_event(&delta(3), Some(3))?,
                new_event(&permission("q2"), Some(4))?,
            ]),
            &refused,
        )
        .await;
    check!(
        matches!(err, Err(Error::Invalid(_))),
        "an owner change gave {err:?}"
    );
    let head = store.head().await?;
    check_eq!((head.last_seq, head.highest_gseq), (2, 2));
    check_eq!(store.read_after(0, 100).await?.len(), 2);
    check_eq!(store.questions(false).await?.len(), 1);
    check_eq!(store.meta().await?, meta);

    // A refused append writes no metadata either.
    let mut later = meta.clone();
    later.updated_at_ms = T0 + 9;
    let too_big = NewEvent {
        json: "x".repeat(MAX_EVENT_BYTES + 1).into(),
        ..new_event(&delta(5), Some(5))?
    };
    check!(
        store
            .append_with_meta(AppendBatch::events(vec![too_big]), &later)
            .await
            .is_err(),
        "an event over the size limit was stored"
    );
    check_eq!(store.meta().await?, meta);

    // What committed is there after a reopen.
    let dir = h.directory(&name).await?;
    let store = dir.open("s1").await?;
    check_eq!(store.meta().await?, meta);
    check_eq!(store.head().await?.highest_gseq, 2);
    Ok(())
}

pub(super) async fn approvals_first_answer_wins(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "approvals").await?;
    store
        .append(AppendBatch::events(vec![
            new_event(&permission("q1"), Some(1))?,
            new_event(&permission("q2"), Some(2))?,
        ]))
        .await?;
    // The same question re-sent (e.g. after a gateway restart) is one question.
    store
        .append(AppendBatch::events(vec![new_event(
            &permission("q1"),
            None,
        )?]))
        .await?;
    let pending = store.questions(true).await?;
    let ids: Vec<_> = pending
        .iter()
        .map(|q| q.question.question_id.as_str())
        .collect();
    check_eq!(ids, vec!["q1", "q2"]);
    check_eq!(pending[0].asked_seq, 1);
    let alice = Resolution {
        decision: Decision::Allow {
            updated_input: None,
            remember: false,
        },
        by: DecidedBy::new("alice"),
        at_ms: T0 + 1,
    };
    let bob = Resolution {
        decision: Decision::Deny {
            reason: "no".into(),
            interrupt: false,
        },
        by: DecidedBy::new("bob"),
        at_ms: T0 + 2,
    };
    let first = store.resolve("q1", alice.clone(), None).await?;
    let ResolveOutcome::Decided(event) = first else {
        return Err(CaseError(format!("first answer not decided: {first:?}")));
    };
    check_eq!(event.event()?.type_name(), "question.resolved");
    let second = store.resolve("q1", bob.clone(), None).await?;
    check_eq!(second, ResolveOutcome::AlreadyDecided(alice.clone()));
    // Concurrent answers to q2: exactly one wins.
    let (x, y) = futures::join!(
        store.resolve("q2", alice.clone(), None),
        store.resolve("q2", bob, None)
    );
    let decided = [&x, &y]
        .iter()
        .filter(|r| matches!(r, Ok(ResolveOutcome::Decided(_))))
        .count();
    check_eq!(decided, 1);
    check!(store.questions(true).await?.is_empty(), "nothing pending");
    let all = store.questions(false).await?;
    check_eq!(all[0].resolution, Some(alice));
    let resolved_events = store
        .read_after(0, 100)
        .await?
        .iter()
        .filter(|e| e.json.contains("question.resolved"))
        .count();
    check_eq!(resolved_events, 2);
    match store
        .resolve(
            "nope",
            Resolution {
                decision: Decision::Expired,
                by: DecidedBy::new("timeout"),
                at_ms: T0,
            },
            None,
        )
        .await
    {
        Err(Error::NotFound { .. }) => {}
        other => return Err(CaseError(format!("unknown question gave {other:?}"))),
    }
    Ok(())
}

pub(super) async fn withdrawn_question_leaves_pending(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "withdrawn").await?;
    store
        .append(AppendBatch::events(vec![new_event(
            &permission("q1"),
            Some(1),
        )?]))
        .await?;
    let cancelled = Event::QuestionResolved(crate::protocol::QuestionResolved {
        question_id: "q1".into(),
        decision: Decision::Cancelled {
            reason: Some("the executor withdrew the request".into()),
        },
        by: DecidedBy::new("executor"),
        at_ms: T0,
    });
    store
        .append(AppendBatch::events(vec![new_event(&cancelled, Some(2))?]))
        .await?;
    check!(
        store.questions(true).await?.is_empty(),
        "withdrawn question still pending"
    );
    let late = store
        .resolve(
            "q1",
            Resolution {
                decision: Decision::Allow {
                    updated_input: None,
                    remember: false,
                },
                by: DecidedBy::new("alice"),
                at_ms: T0 + 5,
            },
            None,
        )
        .await?;
    check!(
        matches!(&late, ResolveOutcome::AlreadyDecided(r) if r.by.who == "executor"),
        "a late answer must be told the executor withdrew it: {late:?}"
    );
    Ok(())
}

pub(super) async fn commands_applied_once_and_outboxed(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "commands").await?;
    let cmd = |id: &str, forward: Option<&str>| RecordedCommand {
        id: id.into(),
        forward: forward.map(Into::into),
        at_ms: T0,
    };
    let a = store
        .append(AppendBatch {
            events: deltas(0, 1)?,
            command: Some(cmd("c1", Some("{\"type\":\"ping\",\"nonce\":1}"))),
        })
        .await?;
    check!(
        !a.duplicate_command && a.stored.len() == 1,
        "first apply: {a:?}"
    );
    let b = store
        .append(AppendBatch {
            events: deltas(1, 1)?,
            command: Some(cmd("c1", Some("{\"type\":\"ping\",\"nonce\":1}"))),
        })
        .await?;
    check!(
        b.duplicate_command && b.stored.is_empty(),
        "second apply: {b:?}"
    );
    check_eq!(store.head().await?.last_seq, 1);
    store
        .append(AppendBatch {
            events: vec![],
            command: Some(cmd("c2", None)),
        })
        .await?;
    store
        .append(AppendBatch {
            events: vec![],
            command: Some(cmd("c3", Some("{\"type\":\"ping\",\"nonce\":3}"))),
        })
        .await?;
    let ids: Vec<String> = store
        .unforwarded()
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    check_eq!(ids, vec!["c1".to_string(), "c3".to_string()]);
    store.mark_forwarded("c1").await?;
    let left = store.unforwarded().await?;
    check_eq!(left.len(), 1);
    check_eq!(
        left[0].forward.as_deref(),
        Some("{\"type\":\"ping\",\"nonce\":3}")
    );
    // A resolve with an already-used command id still decides only once.
    store
        .append(AppendBatch::events(vec![new_event(
            &permission("q1"),
            None,
        )?]))
        .await?;
    let r = store
        .resolve(
            "q1",
            Resolution {
                decision: Decision::Expired,
                by: DecidedBy::new("timeout"),
                at_ms: T0,
            },
            Some(cmd("c4", Some("{\"type\":\"ping\",\"nonce\":4}"))),
        )
        .await?;
    check!(matches!(r, ResolveOutcome::Decided(_)), "{r:?}");
    check_eq!(store.unforwarded().await?.len(), 2);
    Ok(())
}

pub(super) async fn payloads_up_to_the_frame_limit(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "payload").await?;
    let make = |len: usize| {
        Event::ToolResult(ToolResult {
            tool_use_id: "toolu_1".into(),
            content: json!("x".repeat(len)),
            is_error: false,
        })
    };
    let overhead = make(0).to_json()?.len();
    let at_limit = make(MAX_EVENT_BYTES - overhead);
    let e = new_event(&at_limit, None)?;
    check_eq!(e.json.len(), MAX_EVENT_BYTES);
    // Framed for either link, it still fits in one frame.
    let framed = crate::protocol::gateway_event_frame(
        "a-session-id-of-some-length",
        u64::MAX >> 11,
        &e.json,
    )?;
    check!(
        framed.len() <= MAX_FRAME_BYTES,
        "framed event of {} bytes",
        framed.len()
    );
    let stored = store.append(AppendBatch::events(vec![e.clone()])).await?;
    let back = store.read_after(0, 1).await?;
    check_eq!(back[0].json, e.json);
    check_eq!(back[0].event()?, at_limit);
    check_eq!(stored.stored[0].json.len(), MAX_EVENT_BYTES);
    match NewEvent::new(&make(MAX_EVENT_BYTES - overhead + 1), None, T0) {
        Err(Error::TooLarge { size, limit, .. }) => check!(size == limit + 1, "size {size}"),
        other => return Err(CaseError(format!("over the limit gave {other:?}"))),
    }
    // Unicode survives exactly.
    let odd = Event::ToolResult(ToolResult {
        tool_use_id: "toolu_2".into(),
        content: json!("naïve — 日本語 — 🦀 \u{0} \"quoted\" \\"),
        is_error: true,
    });
    store
        .append(AppendBatch::events(vec![new_event(&odd, None)?]))
        .await?;
    check_eq!(store.read_after(1, 1).await?[0].event()?, odd);
    Ok(())
}

pub(super) async fn reopened_store_sees_everything(h: &dyn StoreHarness) -> CaseResult {
    let (dir, store, name) = fresh_store(h, "reopen").await?;
    store
        .append(AppendBatch::events(vec![
            new_event(&delta(1), Some(1))?,
            new_event(&permission("q1"), Some(2))?,
        ]))
        .await?;
    store
        .append(AppendBatch {
            events: deltas(5, 3)?,
            command: Some(RecordedCommand {
                id: "c1".into(),
                forward: Some("{}".into()),
                at_ms: T0,
            }),
        })
        .await?;
    let mut meta = store.meta().await?;
    meta.title = "fix the build".into();
    meta.worktree = "/srv/app".into();
    meta.state = SessionState::paused(PauseReason::AwaitingApproval);
    meta.cost_usd = 0.25;
    meta.updated_at_ms = T0 + 9;
    store.put_meta(&meta).await?;
    let before = store.read_after(0, 100).await?;
    drop(store);
    drop(dir);

    let dir = h.directory(&name).await?;
    let store = dir.open("s1").await?;
    check_eq!(store.read_after(0, 100).await?, before);
    let head = store.head().await?;
    check_eq!((head.last_seq, head.highest_gseq), (5, 2));
    check_eq!(store.meta().await?, meta);
    check_eq!(store.questions(true).await?.len(), 1);
    check_eq!(store.unforwarded().await?.len(), 1);
    let dup = store
        .append(AppendBatch {
            events: deltas(9, 1)?,
            command: Some(RecordedCommand {
                id: "c1".into(),
                forward: None,
                at_ms: T0,
            }),
        })
        .await?;
    check!(dup.duplicate_command, "command ids survive a reopen");
    let again = store
        .append(AppendBatch::events(vec![new_event(&delta(2), Some(2))?]))
        .await?;
    check_eq!(again.duplicates, 1);
    check_eq!(dir.list("alice").await?.len(), 1);
    Ok(())
}

pub(super) async fn directory_create_open_list(h: &dyn StoreHarness) -> CaseResult {
    let dir = h.directory(&unique("dir")).await?;
    check!(
        dir.list("alice").await?.is_empty(),
        "a new directory is empty"
    );
    let mut a = SessionMeta::new("a", "alice", T0);
    a.updated_at_ms = T0 + 1;
    let mut b = SessionMeta::new("b", "alice", T0);
    b.updated_at_ms = T0 + 3;
    let c = SessionMeta::new("c", "bob", T0);
    dir.create(a.clone()).await?;
    dir.create(b).await?;
    dir.create(c).await?;
    match dir.create(a).await {
        Err(Error::AlreadyExists { .. }) => {}
        other => return Err(CaseError(format!("duplicate create gave {other:?}"))),
    }
    match dir.open("missing").await {
        Err(Error::NotFound { .. }) => {}
        other => return Err(CaseError(format!("open of a missing id gave {other:?}"))),
    }
    let ids: Vec<String> = dir
        .list("alice")
        .await?
        .into_iter()
        .map(|m| m.session_id)
        .collect();
    check_eq!(ids, vec!["b".to_string(), "a".to_string()]);
    check_eq!(dir.list("bob").await?.len(), 1);
    check!(
        dir.list("mallory").await?.is_empty(),
        "no sessions for a stranger"
    );
    let store = dir.open("a").await?;
    check_eq!(store.session_id(), "a");
    let mut stolen = store.meta().await?;
    stolen.owner = "mallory".into();
    check!(
        store.put_meta(&stolen).await.is_err(),
        "the owner cannot change"
    );
    // Touching a session moves it to the front.
    let mut m = store.meta().await?;
    m.updated_at_ms = T0 + 10;
    store.put_meta(&m).await?;
    let ids: Vec<String> = dir
        .list("alice")
        .await?
        .into_iter()
        .map(|m| m.session_id)
        .collect();
    check_eq!(ids, vec!["a".to_string(), "b".to_string()]);
    Ok(())
}

/// Removing a session (a start undone) leaves no trace of it: not listed,
/// not openable, and a session created again under its id starts empty.
pub(super) async fn directory_remove_leaves_nothing(h: &dyn StoreHarness) -> CaseResult {
    let (dir, store, _) = fresh_store(h, "remove").await?;
    let other = dir.create(SessionMeta::new("s2", "alice", T0)).await?;
    store
        .append(AppendBatch {
            events: vec![new_event(&permission("q1"), Some(1))?],
            command: Some(RecordedCommand {
                id: "c1".into(),
                forward: Some("{}".into()),
                at_ms: T0,
            }),
        })
        .await?;
    other
        .append(AppendBatch::events(vec![new_event(&delta(1), Some(1))?]))
        .await?;
    dir.remove("s1").await?;
    match dir.open("s1").await {
        Err(Error::NotFound { .. }) => {}
        other => return Err(CaseError(format!("open after remove gave {other:?}"))),
    }
    match dir.remove("s1").await {
        Err(Error::NotFound { .. }) => {}
        other => return Err(CaseError(format!("a second remove gave {other:?}"))),
    }
    let ids: Vec<String> = dir
        .list_all()
        .await?
        .into_iter()
        .map(|m| m.session_id)
        .collect();
    check_eq!(ids, vec!["s2".to_string()]);
    check_eq!(other.head().await?.last_seq, 1);
    // The same id again: a new, empty session.
    let again = dir.create(SessionMeta::new("s1", "alice", T0 + 1)).await?;
    check_eq!(again.head().await?, crate::store::LogHead::default());
    check!(again.questions(false).await?.is_empty(), "no questions");
    check!(again.unforwarded().await?.is_empty(), "no outbox");
    let reused = again
        .append(AppendBatch {
            events: vec![],
            command: Some(RecordedCommand {
                id: "c1".into(),
                forward: None,
                at_ms: T0 + 1,
            }),
        })
        .await?;
    check!(!reused.duplicate_command, "command ids are gone too");
    Ok(())
}
