//! The store cases about one step's contents: duplicates and refusals inside
//! a batch, questions and their resolutions in batches, the command outbox,
//! metadata rules, and sessions of one directory kept apart.

use std::sync::Arc;

use serde_json::json;

use super::{CaseError, CaseResult, StoreHarness, T0, delta, new_event, unique};
use crate::backend::limits::MAX_SEQ;
use crate::error::Error;
use crate::protocol::{
    DecidedBy, Decision, Event, MAX_EVENT_BYTES, QuestionKind, QuestionResolved, UserQuestion,
};
use crate::store::{
    AppendBatch, DynSessionDirectory, DynSessionStore, NewEvent, RecordedCommand, Resolution,
    ResolveOutcome, SessionMeta,
};

type Made<T> = std::result::Result<T, CaseError>;

fn ev(i: u64, gseq: Option<u64>) -> Made<NewEvent> {
    new_event(&delta(i), gseq)
}

/// A permission question without a tool_use_id.
fn ask(id: &str) -> Made<NewEvent> {
    new_event(
        &Event::UserQuestion(UserQuestion {
            question_id: id.into(),
            tool_use_id: None,
            kind: QuestionKind::Permission {
                tool_name: "Bash".into(),
                input: json!({"command": "ls"}),
                description: None,
            },
        }),
        None,
    )
}

/// The executor withdrawing question `id`.
fn withdraw(id: &str) -> Made<NewEvent> {
    new_event(
        &Event::QuestionResolved(QuestionResolved {
            question_id: id.into(),
            decision: Decision::Cancelled { reason: None },
            by: DecidedBy::new("executor"),
            at_ms: T0,
        }),
        None,
    )
}

fn allow(by: &str) -> Resolution {
    Resolution {
        decision: Decision::Allow {
            updated_input: None,
            remember: false,
        },
        by: DecidedBy::new(by),
        at_ms: T0,
    }
}

fn cmd(id: &str, forward: Option<&str>) -> RecordedCommand {
    RecordedCommand {
        id: id.into(),
        forward: forward.map(Into::into),
        at_ms: T0,
    }
}

async fn directory(h: &dyn StoreHarness, case: &str) -> Made<DynSessionDirectory> {
    Ok(h.directory(&unique(case)).await?)
}

async fn session(dir: &DynSessionDirectory, id: &str) -> Made<DynSessionStore> {
    Ok(dir.create(SessionMeta::new(id, "alice", T0)).await?)
}

/// The ids of the store's unforwarded commands, oldest first.
async fn unforwarded_ids(store: &DynSessionStore) -> Made<Vec<String>> {
    Ok(store
        .unforwarded()
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect())
}

async fn seqs(store: &DynSessionStore) -> Made<Vec<u64>> {
    Ok(store
        .read_after(0, 1000)
        .await?
        .iter()
        .map(|e| e.seq)
        .collect())
}

/// Duplicates inside one batch are dropped too; gseq-less events in between
/// always append and seqs stay dense.
pub(super) async fn gseq_dedupe_inside_a_batch(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "gseq-batch").await?;
    let store = session(&dir, "s1").await?;
    let out = store
        .append(AppendBatch::events(vec![
            ev(0, Some(3))?,
            ev(1, Some(2))?,
            ev(2, None)?,
            ev(3, Some(3))?,
            ev(4, Some(7))?,
        ]))
        .await?;
    let got: Vec<_> = out.stored.iter().map(|e| (e.seq, e.gseq)).collect();
    check_eq!(got, vec![(1, Some(3)), (2, None), (3, Some(7))]);
    check_eq!((out.duplicates, out.highest_gseq), (2, 7));
    let head = store.head().await?;
    check_eq!((head.last_seq, head.highest_gseq), (3, 7));
    Ok(())
}

/// A refused batch leaves nothing behind: not its good events, not its
/// question, not its command id.
pub(super) async fn refused_batch_is_atomic(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "atomic").await?;
    let store = session(&dir, "s1").await?;
    let mut big = ev(1, None)?;
    big.json = Arc::from(format!("\"{}\"", "x".repeat(MAX_EVENT_BYTES)));
    let err = store
        .append(AppendBatch {
            events: vec![ev(0, Some(1))?, big],
            command: Some(cmd("c1", Some("{}"))),
        })
        .await;
    check!(
        matches!(err, Err(Error::TooLarge { .. })),
        "an oversized event gave {err:?}"
    );
    let mut huge_gseq = ev(2, Some(MAX_SEQ + 1))?;
    huge_gseq.asks = ask("q9")?.asks;
    let err = store
        .append(AppendBatch::events(vec![ev(0, None)?, huge_gseq]))
        .await;
    match &err {
        Err(e @ Error::Invalid(_)) => check!(
            e.to_string().contains(&(MAX_SEQ + 1).to_string()),
            "the refusal names the gseq: {e}"
        ),
        other => check!(false, "a gseq above MAX_SEQ gave {other:?}"),
    }
    check_eq!(store.head().await?.last_seq, 0);
    check!(
        store.questions(false).await?.is_empty(),
        "the refused question was kept"
    );
    check!(
        store.unforwarded().await?.is_empty(),
        "the refused command was outboxed"
    );
    // The command id was not burnt by the refused step.
    let out = store
        .append(AppendBatch {
            events: vec![ev(0, Some(1))?],
            command: Some(cmd("c1", Some("{}"))),
        })
        .await?;
    check!(!out.duplicate_command, "c1 was burnt by a refused step");
    check_eq!(seqs(&store).await?, vec![1]);
    Ok(())
}

/// A question asked twice keeps its first seq; a withdrawal in a batch
/// resolves it only while pending, and a resolution of an unknown question
/// inside a batch is logged without failing.
pub(super) async fn questions_in_batches(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "questions").await?;
    let store = session(&dir, "s1").await?;
    store
        .append(AppendBatch::events(vec![
            ask("q1")?,
            ask("q2")?,
            ask("q1")?,
            withdraw("nobody-asked")?,
        ]))
        .await?;
    let all = store.questions(false).await?;
    let got: Vec<_> = all
        .iter()
        .map(|q| (q.question.question_id.as_str(), q.asked_seq))
        .collect();
    check_eq!(got, vec![("q1", 1), ("q2", 2)]);
    let decided = store.resolve("q1", allow("alice"), None).await?;
    let ResolveOutcome::Decided(e) = decided else {
        return Err(CaseError(format!("q1 was pending, got {decided:?}")));
    };
    check_eq!((e.seq, e.gseq), (5, None));
    // A withdrawal after the human decided does not overwrite the decision.
    store
        .append(AppendBatch::events(vec![withdraw("q1")?, withdraw("q2")?]))
        .await?;
    let all = store.questions(false).await?;
    check_eq!(all.len(), 2);
    check_eq!(all[0].resolution, Some(allow("alice")));
    check_eq!(
        all[1].resolution.as_ref().map(|r| r.by.who.as_str()),
        Some("executor")
    );
    check!(
        store.questions(true).await?.is_empty(),
        "no question is pending"
    );
    check_eq!(seqs(&store).await?, (1..=7).collect::<Vec<_>>());
    Ok(())
}

/// `resolve` records its command in the same step; a command id that was
/// applied before refuses the step whole.
pub(super) async fn resolve_records_its_command(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "resolve-cmd").await?;
    let store = session(&dir, "s1").await?;
    store
        .append(AppendBatch {
            events: vec![ask("q1")?, ask("q2")?],
            command: Some(cmd("used", None)),
        })
        .await?;
    let err = store
        .resolve("q1", allow("alice"), Some(cmd("used", Some("{}"))))
        .await;
    check!(
        matches!(
            err,
            Err(Error::AlreadyExists {
                what: "command",
                ..
            })
        ),
        "a used command id gave {err:?}"
    );
    check_eq!(store.questions(true).await?.len(), 2);
    check_eq!(store.head().await?.last_seq, 2);

    let out = store
        .resolve("q1", allow("alice"), Some(cmd("a1", Some("{\"n\":1}"))))
        .await?;
    check!(
        matches!(out, ResolveOutcome::Decided(_)),
        "q1 was pending, got {out:?}"
    );
    let later = store
        .resolve("q1", allow("bob"), Some(cmd("a2", Some("{\"n\":2}"))))
        .await?;
    check_eq!(later, ResolveOutcome::AlreadyDecided(allow("alice")));
    let outbox: Vec<_> = store
        .unforwarded()
        .await?
        .into_iter()
        .map(|c| (c.id, c.forward.as_deref().map(str::to_owned)))
        .collect();
    check_eq!(
        outbox,
        vec![("a1".to_owned(), Some("{\"n\":1}".to_owned()))]
    );
    // The losing answer's command id was not recorded: it may be used again.
    let out = store
        .append(AppendBatch {
            events: vec![],
            command: Some(cmd("a2", None)),
        })
        .await?;
    check!(
        !out.duplicate_command,
        "the losing answer's id was recorded"
    );
    Ok(())
}

/// `mark_forwarded` is idempotent and ignores ids it never saw; the outbox
/// keeps recording order and is per session.
pub(super) async fn outbox_order_and_marking(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "outbox").await?;
    let store = session(&dir, "s1").await?;
    for id in ["c3", "c1", "c2"] {
        store
            .append(AppendBatch {
                events: vec![],
                command: Some(cmd(id, Some("{}"))),
            })
            .await?;
    }
    store.mark_forwarded("c1").await?;
    store.mark_forwarded("c1").await?;
    store.mark_forwarded("never-seen").await?;
    let ids = unforwarded_ids(&store).await?;
    check_eq!(ids, vec!["c3", "c2"]);
    // Another session's outbox is its own.
    let other = session(&dir, "s2").await?;
    check!(
        other.unforwarded().await?.is_empty(),
        "a new session's outbox is empty"
    );
    other.mark_forwarded("c3").await?;
    check_eq!(store.unforwarded().await?.len(), 2);
    Ok(())
}

/// `mark_turn_began` clears a command's mark as `mark_forwarded` does and
/// records the event its turn began with: `turn_began_at` answers for
/// that seq alone, in that session alone, after a later `mark_forwarded`
/// and after the store is opened again; an id never seen records nothing.
pub(super) async fn turn_beginnings_are_recorded(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "turns").await?;
    let store = session(&dir, "s1").await?;
    for id in ["c1", "c2"] {
        store
            .append(AppendBatch {
                events: vec![],
                command: Some(cmd(id, Some("{}"))),
            })
            .await?;
    }
    let out = store
        .append(AppendBatch::events(vec![ev(0, None)?, ev(1, None)?]))
        .await?;
    let began = out.stored[1].seq;
    check!(
        !store.turn_began_at(began).await?,
        "no turn began anywhere yet"
    );
    store.mark_turn_began("c1", began).await?;
    let ids = unforwarded_ids(&store).await?;
    check_eq!(ids, vec!["c2"]);
    check!(
        store.turn_began_at(began).await?,
        "the turn's beginning was recorded"
    );
    check!(
        !store.turn_began_at(out.stored[0].seq).await?,
        "the event before it began no turn"
    );
    // Cleared again without a position: the position stays.
    store.mark_forwarded("c1").await?;
    check!(
        store.turn_began_at(began).await?,
        "a second clearing kept the turn's beginning"
    );
    store.mark_turn_began("never-seen", 7).await?;
    check!(
        !store.turn_began_at(7).await?,
        "an unknown command recorded a turn"
    );
    let other = session(&dir, "s2").await?;
    check!(
        !other.turn_began_at(began).await?,
        "another session's turn counted"
    );
    let store = dir.open("s1").await?;
    check!(
        store.turn_began_at(began).await?,
        "the turn's beginning is there after a reopen"
    );
    Ok(())
}

/// Metadata: the id and owner cannot change, a cost that JSON cannot hold
/// is refused, everything else round-trips.
pub(super) async fn meta_rules(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "meta").await?;
    let store = session(&dir, "s1").await?;
    let mut m = store.meta().await?;
    m.session_id = "other".into();
    let err = store.put_meta(&m).await;
    check!(
        matches!(err, Err(Error::Invalid(_))),
        "an id change gave {err:?}"
    );
    let mut m = store.meta().await?;
    m.cost_usd = f64::NAN;
    let err = store.put_meta(&m).await;
    check!(
        matches!(err, Err(Error::Invalid(_))),
        "a NaN cost gave {err:?}"
    );
    let mut m = store.meta().await?;
    m.model = Some("claude".into());
    m.executor_session_id = Some("cli-1".into());
    m.pending_questions = 3;
    m.cost_usd = 1.5;
    store.put_meta(&m).await?;
    check_eq!(store.meta().await?, m);
    let mut bad = SessionMeta::new("nan", "alice", T0);
    bad.cost_usd = f64::INFINITY;
    let err = dir.create(bad).await.map(|_| ());
    check!(
        matches!(err, Err(Error::Invalid(_))),
        "an infinite cost gave {err:?}"
    );
    let err = dir.open("nan").await.map(|_| ());
    check!(
        matches!(err, Err(Error::NotFound { .. })),
        "the refused session was created: {err:?}"
    );
    Ok(())
}

/// Sessions are independent: seqs, gseqs and question ids per session; two
/// handles on one session see the same log.
pub(super) async fn sessions_are_independent(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "independent").await?;
    let a = session(&dir, "ind-a").await?;
    let b = session(&dir, "ind-b").await?;
    a.append(AppendBatch::events(vec![ev(0, Some(5))?, ask("q")?]))
        .await?;
    let out = b.append(AppendBatch::events(vec![ev(0, Some(1))?])).await?;
    check_eq!(out.stored.len(), 1);
    check_eq!((out.stored[0].seq, out.duplicates), (1, 0));
    check!(b.questions(false).await?.is_empty(), "b sees a's question");
    let err = b.resolve("q", allow("x"), None).await;
    check!(
        matches!(err, Err(Error::NotFound { .. })),
        "resolving a's question in b gave {err:?}"
    );
    check_eq!(a.head().await?.highest_gseq, 5);
    check_eq!(b.head().await?.highest_gseq, 1);
    let a2 = dir.open("ind-a").await?;
    a2.append(AppendBatch::events(vec![ev(1, None)?])).await?;
    check_eq!(seqs(&a).await?, vec![1, 2, 3]);
    Ok(())
}

/// `list` orders by last activity, ties by id.
pub(super) async fn list_order_ties(h: &dyn StoreHarness) -> CaseResult {
    let dir = directory(h, "ties").await?;
    for id in ["tie-b", "tie-a", "tie-c"] {
        let mut m = SessionMeta::new(id, "tia", T0);
        m.updated_at_ms = if id == "tie-c" { T0 + 1 } else { T0 };
        dir.create(m).await?;
    }
    let ids: Vec<_> = dir
        .list("tia")
        .await?
        .into_iter()
        .map(|m| m.session_id)
        .collect();
    check_eq!(ids, vec!["tie-c", "tie-a", "tie-b"]);
    Ok(())
}
