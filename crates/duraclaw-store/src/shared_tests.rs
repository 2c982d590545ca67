//! Semantics both backends must share, beyond core's conformance suite:
//! each backend's test module calls these with its own directory.

use std::sync::Arc;

use duraclaw_core::Error;
use duraclaw_core::protocol::{
    Assistant, AssistantPhase, DecidedBy, Decision, Event, MAX_EVENT_BYTES, QuestionKind,
    QuestionResolved, UserQuestion,
};
use duraclaw_core::store::{
    AppendBatch, DynSessionStore, NewEvent, RecordedCommand, Resolution, ResolveOutcome,
    SessionDirectory, SessionMeta,
};

use duraclaw_core::backend::limits::MAX_SEQ;

pub(crate) const T0: i64 = 1_700_000_000_000;

pub(crate) fn delta(i: u64) -> Event {
    Event::Assistant(Assistant {
        message_id: "m".into(),
        phase: AssistantPhase::Delta,
        text: format!("t{i}"),
        aborted: false,
    })
}

pub(crate) fn ev(i: u64, gseq: Option<u64>) -> NewEvent {
    NewEvent::new(&delta(i), gseq, T0).unwrap()
}

fn ask(id: &str) -> NewEvent {
    let q = Event::UserQuestion(UserQuestion {
        question_id: id.into(),
        tool_use_id: None,
        kind: QuestionKind::Permission {
            tool_name: "Bash".into(),
            input: serde_json::json!({"command": "ls"}),
            description: None,
        },
    });
    NewEvent::new(&q, None, T0).unwrap()
}

fn withdraw(id: &str) -> NewEvent {
    let e = Event::QuestionResolved(QuestionResolved {
        question_id: id.into(),
        decision: Decision::Cancelled { reason: None },
        by: DecidedBy::new("executor"),
        at_ms: T0,
    });
    NewEvent::new(&e, None, T0).unwrap()
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

async fn session(dir: &dyn SessionDirectory, id: &str) -> DynSessionStore {
    dir.create(SessionMeta::new(id, "alice", T0)).await.unwrap()
}

async fn seqs(store: &DynSessionStore) -> Vec<u64> {
    store
        .read_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// Duplicates inside one batch are dropped too; gseq-less events in between
/// always append and seqs stay dense.
pub(crate) async fn gseq_dedupe_inside_a_batch(dir: &dyn SessionDirectory) {
    let store = session(dir, "gseq-batch").await;
    let out = store
        .append(AppendBatch::events(vec![
            ev(0, Some(3)),
            ev(1, Some(2)),
            ev(2, None),
            ev(3, Some(3)),
            ev(4, Some(7)),
        ]))
        .await
        .unwrap();
    let got: Vec<_> = out.stored.iter().map(|e| (e.seq, e.gseq)).collect();
    assert_eq!(got, vec![(1, Some(3)), (2, None), (3, Some(7))]);
    assert_eq!((out.duplicates, out.highest_gseq), (2, 7));
    let head = store.head().await.unwrap();
    assert_eq!((head.last_seq, head.highest_gseq), (3, 7));
}

/// A refused batch leaves nothing behind: not its good events, not its
/// command id.
pub(crate) async fn refused_batch_is_atomic(dir: &dyn SessionDirectory) {
    let store = session(dir, "atomic").await;
    let mut big = ev(1, None);
    big.json = Arc::from(format!("\"{}\"", "x".repeat(MAX_EVENT_BYTES)));
    let err = store
        .append(AppendBatch {
            events: vec![ev(0, Some(1)), big],
            command: Some(cmd("c1", Some("{}"))),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let mut huge_gseq = ev(2, Some(MAX_SEQ + 1));
    huge_gseq.asks = ask("q9").asks;
    let err = store
        .append(AppendBatch::events(vec![ev(0, None), huge_gseq]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains(&(MAX_SEQ + 1).to_string()),
        "{err}"
    );
    assert_eq!(store.head().await.unwrap().last_seq, 0);
    assert!(store.questions(false).await.unwrap().is_empty());
    assert!(store.unforwarded().await.unwrap().is_empty());
    // The command id was not burnt by the refused step.
    let out = store
        .append(AppendBatch {
            events: vec![ev(0, Some(1))],
            command: Some(cmd("c1", Some("{}"))),
        })
        .await
        .unwrap();
    assert!(!out.duplicate_command);
    assert_eq!(seqs(&store).await, vec![1]);
}

/// A question asked twice keeps its first seq; a withdrawal in a batch
/// resolves it only while pending, and a resolution of an unknown question
/// inside a batch is logged without failing.
pub(crate) async fn questions_in_batches(dir: &dyn SessionDirectory) {
    let store = session(dir, "questions").await;
    store
        .append(AppendBatch::events(vec![
            ask("q1"),
            ask("q2"),
            ask("q1"),
            withdraw("nobody-asked"),
        ]))
        .await
        .unwrap();
    let all = store.questions(false).await.unwrap();
    let got: Vec<_> = all
        .iter()
        .map(|q| (q.question.question_id.as_str(), q.asked_seq))
        .collect();
    assert_eq!(got, vec![("q1", 1), ("q2", 2)]);
    let ResolveOutcome::Decided(e) = store.resolve("q1", allow("alice"), None).await.unwrap()
    else {
        panic!("q1 was pending");
    };
    assert_eq!(e.seq, 5);
    assert_eq!(e.gseq, None);
    // A withdrawal after the human decided does not overwrite the decision.
    store
        .append(AppendBatch::events(vec![withdraw("q1"), withdraw("q2")]))
        .await
        .unwrap();
    let all = store.questions(false).await.unwrap();
    assert_eq!(all[0].resolution, Some(allow("alice")));
    assert_eq!(
        all[1].resolution.as_ref().map(|r| r.by.who.as_str()),
        Some("executor")
    );
    assert!(store.questions(true).await.unwrap().is_empty());
    assert_eq!(seqs(&store).await, (1..=7).collect::<Vec<_>>());
}

/// `resolve` records its command in the same step; a command id that was
/// applied before refuses the step whole.
pub(crate) async fn resolve_records_its_command(dir: &dyn SessionDirectory) {
    let store = session(dir, "resolve-cmd").await;
    store
        .append(AppendBatch {
            events: vec![ask("q1"), ask("q2")],
            command: Some(cmd("used", None)),
        })
        .await
        .unwrap();
    let err = store
        .resolve("q1", allow("alice"), Some(cmd("used", Some("{}"))))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AlreadyExists {
                what: "command",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.questions(true).await.unwrap().len(), 2);
    assert_eq!(store.head().await.unwrap().last_seq, 2);

    let out = store
        .resolve("q1", allow("alice"), Some(cmd("a1", Some("{\"n\":1}"))))
        .await
        .unwrap();
    assert!(matches!(out, ResolveOutcome::Decided(_)));
    let later = store
        .resolve("q1", allow("bob"), Some(cmd("a2", Some("{\"n\":2}"))))
        .await
        .unwrap();
    assert_eq!(later, ResolveOutcome::AlreadyDecided(allow("alice")));
    let outbox: Vec<_> = store
        .unforwarded()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.forward.as_deref().map(str::to_owned)))
        .collect();
    assert_eq!(
        outbox,
        vec![("a1".to_owned(), Some("{\"n\":1}".to_owned()))]
    );
    // The losing answer's command id was not recorded: it may be used again.
    let out = store
        .append(AppendBatch {
            events: vec![],
            command: Some(cmd("a2", None)),
        })
        .await
        .unwrap();
    assert!(!out.duplicate_command);
}

/// `mark_forwarded` is idempotent and ignores ids it never saw; the outbox
/// keeps recording order.
pub(crate) async fn outbox_order_and_marking(dir: &dyn SessionDirectory) {
    let store = session(dir, "outbox").await;
    for id in ["c3", "c1", "c2"] {
        store
            .append(AppendBatch {
                events: vec![],
                command: Some(cmd(id, Some("{}"))),
            })
            .await
            .unwrap();
    }
    store.mark_forwarded("c1").await.unwrap();
    store.mark_forwarded("c1").await.unwrap();
    store.mark_forwarded("never-seen").await.unwrap();
    let ids: Vec<_> = store
        .unforwarded()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec!["c3", "c2"]);
    // Another session's outbox is its own.
    let other = session(dir, "outbox-2").await;
    assert!(other.unforwarded().await.unwrap().is_empty());
    other.mark_forwarded("c3").await.unwrap();
    assert_eq!(store.unforwarded().await.unwrap().len(), 2);
}

/// Metadata: the id and owner cannot change, a cost that JSON cannot hold
/// is refused, everything else round-trips.
pub(crate) async fn meta_rules(dir: &dyn SessionDirectory) {
    let store = session(dir, "meta").await;
    let mut m = store.meta().await.unwrap();
    m.session_id = "other".into();
    let err = store.put_meta(&m).await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let mut m = store.meta().await.unwrap();
    m.cost_usd = f64::NAN;
    assert!(matches!(store.put_meta(&m).await, Err(Error::Invalid(_))));
    let mut m = store.meta().await.unwrap();
    m.model = Some("claude".into());
    m.executor_session_id = Some("cli-1".into());
    m.pending_questions = 3;
    m.cost_usd = 1.5;
    store.put_meta(&m).await.unwrap();
    assert_eq!(store.meta().await.unwrap(), m);
    let mut bad = SessionMeta::new("nan", "alice", T0);
    bad.cost_usd = f64::INFINITY;
    assert!(matches!(dir.create(bad).await, Err(Error::Invalid(_))));
    assert!(matches!(dir.open("nan").await, Err(Error::NotFound { .. })));
}

/// `append_with_meta` writes the events and the metadata together, and a
/// refused metadata update refuses the events with it.
pub(crate) async fn append_with_meta_is_one_step(dir: &dyn SessionDirectory) {
    let store = session(dir, "awm").await;
    let mut m = store.meta().await.unwrap();
    m.pending_questions = 1;
    m.updated_at_ms = T0 + 5;
    let out = store
        .append_with_meta(AppendBatch::events(vec![ev(0, Some(1)), ask("q")]), &m)
        .await
        .unwrap();
    assert_eq!(out.stored.len(), 2);
    assert_eq!(store.meta().await.unwrap(), m);
    assert_eq!(store.questions(true).await.unwrap().len(), 1);
    let mut bad = m.clone();
    bad.owner = "mallory".into();
    let err = store
        .append_with_meta(AppendBatch::events(vec![ev(1, Some(2))]), &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert_eq!(seqs(&store).await, vec![1, 2]);
    assert_eq!(store.head().await.unwrap().highest_gseq, 1);
    assert_eq!(store.meta().await.unwrap(), m);
}

/// Sessions are independent: seqs, gseqs and question ids per session.
pub(crate) async fn sessions_are_independent(dir: &dyn SessionDirectory) {
    let a = session(dir, "ind-a").await;
    let b = session(dir, "ind-b").await;
    a.append(AppendBatch::events(vec![ev(0, Some(5)), ask("q")]))
        .await
        .unwrap();
    let out = b
        .append(AppendBatch::events(vec![ev(0, Some(1))]))
        .await
        .unwrap();
    assert_eq!((out.stored[0].seq, out.duplicates), (1, 0));
    assert!(b.questions(false).await.unwrap().is_empty());
    assert!(matches!(
        b.resolve("q", allow("x"), None).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(a.head().await.unwrap().highest_gseq, 5);
    assert_eq!(b.head().await.unwrap().highest_gseq, 1);
    // Two handles on one session see the same log.
    let a2 = dir.open("ind-a").await.unwrap();
    a2.append(AppendBatch::events(vec![ev(1, None)]))
        .await
        .unwrap();
    assert_eq!(seqs(&a).await, vec![1, 2, 3]);
}

/// `list` orders by last activity, ties by id.
pub(crate) async fn list_order_ties(dir: &dyn SessionDirectory) {
    for id in ["tie-b", "tie-a", "tie-c"] {
        let mut m = SessionMeta::new(id, "tia", T0);
        m.updated_at_ms = if id == "tie-c" { T0 + 1 } else { T0 };
        dir.create(m).await.unwrap();
    }
    let ids: Vec<_> = dir
        .list("tia")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.session_id)
        .collect();
    assert_eq!(ids, vec!["tie-c", "tie-a", "tie-b"]);
}

/// One `#[tokio::test]` per shared check; `$make` (awaited inside the test)
/// gives `(directory, guard)`, the guard kept alive for the test.
macro_rules! shared_semantics_tests {
    ($make:expr) => {
        $crate::shared_tests::shared_semantics_tests!(@cases $make;
            gseq_dedupe_inside_a_batch, refused_batch_is_atomic, questions_in_batches,
            resolve_records_its_command, outbox_order_and_marking, meta_rules,
            sessions_are_independent, list_order_ties, append_with_meta_is_one_step);
    };
    (@cases $make:expr; $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (dir, _guard) = $make;
                $crate::shared_tests::$case(&dir).await;
            }
        )+
    };
}
pub(crate) use shared_semantics_tests;
