//! The shared test suite every backend runs (feature `conformance`).
//!
//! Like `object_store`'s integration tests: each backend defines a harness
//! and calls [`store_conformance_tests!`](crate::store_conformance_tests)
//! (for [`SessionStore`](crate::store::SessionStore) backends) and
//! [`sql_conformance_tests!`](crate::sql_conformance_tests) (for
//! [`SqlConn`] backends). Cases return a [`CaseResult`] instead of
//! panicking, so hosts where a panic aborts the instance (Durable Objects)
//! can run them with [`run_store_case`] / [`run_sql_case`] and report each.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use serde_json::json;

use crate::actor::{Actor, SessionActor, SessionLog};
use crate::error::{Error, Result};
use crate::migrate::{Migration, Migrations, SqlConn, SqlValue};
use crate::protocol::{
    Assistant, AssistantPhase, Command, DecidedBy, Decision, Event, MAX_EVENT_BYTES,
    MAX_FRAME_BYTES, QuestionKind, SessionInit, ToolResult, TurnResult, UserQuestion, UserTurn,
};
use crate::state::{PauseReason, SessionState};
use crate::store::{
    AppendBatch, DynSessionDirectory, DynSessionStore, MAX_PAGE, NewEvent, RecordedCommand,
    Resolution, ResolveOutcome, SessionMeta,
};
use crate::{SendOutsideWasm, SyncOutsideWasm};

/// Why a case failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseError(pub String);

impl std::fmt::Display for CaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for CaseError {
    fn from(e: Error) -> Self {
        CaseError(format!("unexpected error: {e}"))
    }
}

/// The outcome of one case.
pub type CaseResult = std::result::Result<(), CaseError>;

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(CaseError(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+))));
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr) => {{
        match (&$a, &$b) {
            (a, b) => {
                if a != b {
                    return Err(CaseError(format!(
                        "{}:{}: {} != {}: {:?} vs {:?}",
                        file!(),
                        line!(),
                        stringify!($a),
                        stringify!($b),
                        a,
                        b
                    )));
                }
            }
        }
    }};
}

/// Gives a backend's [`SessionDirectory`](crate::store::SessionDirectory)
/// to the store suite.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait StoreHarness: SendOutsideWasm + SyncOutsideWasm {
    /// A directory over the backing store called `name`: empty the first
    /// time, the same data when called again with the same name (as after a
    /// restart).
    async fn directory(&self, name: &str) -> Result<DynSessionDirectory>;
}

/// Gives a backend's SQL connection to the migration suite.
pub trait SqlHarness {
    /// A connection to the database called `name`: empty the first time,
    /// the same database when called again with the same name.
    fn connect(&self, name: &str) -> Result<Box<dyn SqlConn>>;
}

/// The store suite's cases, by name.
pub const STORE_CASES: &[&str] = &[
    "append_assigns_dense_seqs",
    "read_after_pages",
    "replay_after_n_then_live",
    "seam_under_concurrent_appends",
    "slow_subscriber_catches_up_by_replay",
    "gseq_dedupe",
    "append_with_meta_is_one_step",
    "approvals_first_answer_wins",
    "withdrawn_question_leaves_pending",
    "commands_applied_once_and_outboxed",
    "payloads_up_to_the_frame_limit",
    "reopened_store_sees_everything",
    "directory_create_open_list",
    "actor_ingest_acks_and_refuses_gaps",
    "actor_drives_the_state_machine",
    "actor_writes_activity_once_a_second",
    "actor_retried_answer_gets_its_first_result",
    "directory_remove_leaves_nothing",
    "actor_logs_the_session_in_order",
];

/// The migration suite's cases, by name.
pub const SQL_CASES: &[&str] = &[
    "migrations_run_twice_equals_once",
    "newer_database_is_refused",
    "edited_migration_is_detected",
    "failed_migration_rolls_back_with_its_version",
    "reopened_database_keeps_its_version",
];

/// Runs one store case by name.
pub async fn run_store_case(name: &str, h: &dyn StoreHarness) -> CaseResult {
    match name {
        "append_assigns_dense_seqs" => append_assigns_dense_seqs(h).await,
        "read_after_pages" => read_after_pages(h).await,
        "replay_after_n_then_live" => replay_after_n_then_live(h).await,
        "seam_under_concurrent_appends" => seam_under_concurrent_appends(h).await,
        "slow_subscriber_catches_up_by_replay" => slow_subscriber_catches_up_by_replay(h).await,
        "gseq_dedupe" => gseq_dedupe(h).await,
        "append_with_meta_is_one_step" => append_with_meta_is_one_step(h).await,
        "approvals_first_answer_wins" => approvals_first_answer_wins(h).await,
        "withdrawn_question_leaves_pending" => withdrawn_question_leaves_pending(h).await,
        "commands_applied_once_and_outboxed" => commands_applied_once_and_outboxed(h).await,
        "payloads_up_to_the_frame_limit" => payloads_up_to_the_frame_limit(h).await,
        "reopened_store_sees_everything" => reopened_store_sees_everything(h).await,
        "directory_create_open_list" => directory_create_open_list(h).await,
        "actor_ingest_acks_and_refuses_gaps" => actor_ingest_acks_and_refuses_gaps(h).await,
        "actor_drives_the_state_machine" => actor_drives_the_state_machine(h).await,
        "actor_writes_activity_once_a_second" => actor_writes_activity_once_a_second(h).await,
        "actor_retried_answer_gets_its_first_result" => {
            actor_retried_answer_gets_its_first_result(h).await
        }
        "directory_remove_leaves_nothing" => directory_remove_leaves_nothing(h).await,
        "actor_logs_the_session_in_order" => actor_logs_the_session_in_order(h).await,
        other => Err(CaseError(format!("no store case named {other:?}"))),
    }
}

/// Runs one migration case by name.
pub fn run_sql_case(name: &str, h: &dyn SqlHarness) -> CaseResult {
    match name {
        "migrations_run_twice_equals_once" => migrations_run_twice_equals_once(h),
        "newer_database_is_refused" => newer_database_is_refused(h),
        "edited_migration_is_detected" => edited_migration_is_detected(h),
        "failed_migration_rolls_back_with_its_version" => {
            failed_migration_rolls_back_with_its_version(h)
        }
        "reopened_database_keeps_its_version" => reopened_database_keeps_its_version(h),
        other => Err(CaseError(format!("no sql case named {other:?}"))),
    }
}

/// Generates one `#[tokio::test]` per store case for `$harness`, each bounded
/// by a 120 s deadline.
#[macro_export]
macro_rules! store_conformance_tests {
    ($harness:expr) => {
        $crate::store_conformance_tests!(@cases $harness;
            append_assigns_dense_seqs, read_after_pages, replay_after_n_then_live,
            seam_under_concurrent_appends, slow_subscriber_catches_up_by_replay, gseq_dedupe,
            append_with_meta_is_one_step, approvals_first_answer_wins, withdrawn_question_leaves_pending,
            commands_applied_once_and_outboxed, payloads_up_to_the_frame_limit,
            reopened_store_sees_everything, directory_create_open_list,
            actor_ingest_acks_and_refuses_gaps, actor_drives_the_state_machine,
            actor_writes_activity_once_a_second, actor_retried_answer_gets_its_first_result,
            directory_remove_leaves_nothing, actor_logs_the_session_in_order);
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                let run = $crate::conformance::run_store_case(stringify!($case), &harness);
                match tokio::time::timeout(std::time::Duration::from_secs(120), run).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => panic!("{}: {}", stringify!($case), e),
                    Err(_) => panic!("{}: no result within 120 s", stringify!($case)),
                }
            }
        )+
    };
}

/// Generates one `#[test]` per migration case for `$harness`.
#[macro_export]
macro_rules! sql_conformance_tests {
    ($harness:expr) => {
        $crate::sql_conformance_tests!(@cases $harness;
            migrations_run_twice_equals_once, newer_database_is_refused,
            edited_migration_is_detected, failed_migration_rolls_back_with_its_version,
            reopened_database_keeps_its_version);
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let harness = $harness;
                if let Err(e) = $crate::conformance::run_sql_case(stringify!($case), &harness) {
                    panic!("{}: {}", stringify!($case), e);
                }
            }
        )+
    };
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Returns `Pending` once, so joined futures interleave on any executor.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// A unique-enough name so cases never share a backing store.
fn unique(case: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{case}-{}", N.fetch_add(1, Ordering::Relaxed))
}

const T0: i64 = 1_700_000_000_000;

fn delta(i: u64) -> Event {
    Event::Assistant(Assistant {
        message_id: "msg_1".into(),
        phase: AssistantPhase::Delta,
        text: format!("token {i} "),
        aborted: false,
    })
}

fn new_event(e: &Event, gseq: Option<u64>) -> std::result::Result<NewEvent, CaseError> {
    Ok(NewEvent::new(e, gseq, T0)?)
}

fn deltas(from: u64, n: u64) -> std::result::Result<Vec<NewEvent>, CaseError> {
    (from..from + n)
        .map(|i| new_event(&delta(i), None))
        .collect()
}

fn permission(id: &str) -> Event {
    Event::UserQuestion(UserQuestion {
        question_id: id.into(),
        tool_use_id: Some(format!("toolu_{id}")),
        kind: QuestionKind::Permission {
            tool_name: "Bash".into(),
            input: json!({"command": "ls"}),
            description: None,
        },
    })
}

async fn fresh_store(
    h: &dyn StoreHarness,
    case: &str,
) -> std::result::Result<(DynSessionDirectory, DynSessionStore, String), CaseError> {
    let name = unique(case);
    let dir = h.directory(&name).await?;
    let store = dir.create(SessionMeta::new("s1", "alice", T0)).await?;
    Ok((dir, store, name))
}

async fn drain_to(
    sub: &mut crate::actor::Subscription,
    last: u64,
) -> std::result::Result<Vec<u64>, CaseError> {
    let mut seqs = Vec::new();
    while sub.delivered() < last {
        match sub.next().await {
            Some(Ok(e)) => seqs.push(e.seq),
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(CaseError(format!(
                    "subscription ended at {}",
                    sub.delivered()
                )));
            }
        }
    }
    Ok(seqs)
}

fn contiguous(seqs: &[u64], after: u64, last: u64) -> bool {
    seqs.len() as u64 == last - after && seqs.iter().zip(after + 1..).all(|(a, b)| *a == b)
}

// ---------------------------------------------------------------------------
// Store cases
// ---------------------------------------------------------------------------

async fn append_assigns_dense_seqs(h: &dyn StoreHarness) -> CaseResult {
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

async fn read_after_pages(h: &dyn StoreHarness) -> CaseResult {
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

async fn replay_after_n_then_live(h: &dyn StoreHarness) -> CaseResult {
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

async fn seam_under_concurrent_appends(h: &dyn StoreHarness) -> CaseResult {
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

async fn slow_subscriber_catches_up_by_replay(h: &dyn StoreHarness) -> CaseResult {
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

async fn gseq_dedupe(h: &dyn StoreHarness) -> CaseResult {
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
async fn append_with_meta_is_one_step(h: &dyn StoreHarness) -> CaseResult {
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

async fn approvals_first_answer_wins(h: &dyn StoreHarness) -> CaseResult {
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

async fn withdrawn_question_leaves_pending(h: &dyn StoreHarness) -> CaseResult {
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

async fn commands_applied_once_and_outboxed(h: &dyn StoreHarness) -> CaseResult {
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

async fn payloads_up_to_the_frame_limit(h: &dyn StoreHarness) -> CaseResult {
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

async fn reopened_store_sees_everything(h: &dyn StoreHarness) -> CaseResult {
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

async fn directory_create_open_list(h: &dyn StoreHarness) -> CaseResult {
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
async fn directory_remove_leaves_nothing(h: &dyn StoreHarness) -> CaseResult {
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

async fn actor_ingest_acks_and_refuses_gaps(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "ingest").await?;
    let actor = SessionActor::open(store.clone()).await?;
    let out = actor.ingest(vec![(1, delta(1)), (2, delta(2))], T0).await?;
    check_eq!((out.ack, out.duplicates, out.gap_at), (2, 0, None));
    let out = actor.ingest(vec![(2, delta(2)), (3, delta(3))], T0).await?;
    check_eq!((out.ack, out.duplicates, out.stored), (3, 1, 1));
    let out = actor.ingest(vec![(4, delta(4)), (6, delta(6))], T0).await?;
    check_eq!((out.ack, out.gap_at), (4, Some(5)));
    let out = actor.ingest(vec![(1, delta(1))], T0).await?;
    check_eq!((out.ack, out.stored, out.duplicates), (4, 0, 1));
    check_eq!(store.head().await?.highest_gseq, 4);
    // A reopened actor keeps deduping.
    let again = SessionActor::open(store.clone()).await?;
    let out = again.ingest(vec![(4, delta(4)), (5, delta(5))], T0).await?;
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

/// A stream of events that changes nothing but the activity time writes
/// the events alone, and the activity time once per `ACTIVITY_WRITE_MS`;
/// anything else in the metadata is written with the events that caused it.
async fn actor_writes_activity_once_a_second(h: &dyn StoreHarness) -> CaseResult {
    use crate::actor::ACTIVITY_WRITE_MS;
    let (_dir, store, _) = fresh_store(h, "activity").await?;
    let actor = SessionActor::open(store.clone()).await?;
    let stored = |m: SessionMeta| (m.updated_at_ms, m.state);
    actor.ingest(vec![(1, delta(1))], T0 + 10).await?;
    check_eq!(actor.meta().await.updated_at_ms, T0 + 10);
    check_eq!(
        stored(store.meta().await?),
        (T0, SessionState::Initializing)
    );
    check_eq!(store.head().await?.highest_gseq, 1);
    // A second after the last write, the activity time is written.
    actor
        .ingest(vec![(2, delta(2))], T0 + ACTIVITY_WRITE_MS)
        .await?;
    check_eq!(store.meta().await?.updated_at_ms, T0 + ACTIVITY_WRITE_MS);
    // A state change is written at once, with its events.
    let init = Event::SessionInit(SessionInit {
        executor_session_id: Some("cli-1".into()),
        ..SessionInit::default()
    });
    actor
        .ingest(vec![(3, init)], T0 + ACTIVITY_WRITE_MS + 1)
        .await?;
    let meta = store.meta().await?;
    check_eq!(meta.updated_at_ms, T0 + ACTIVITY_WRITE_MS + 1);
    check_eq!(meta.state, actor.meta().await.state);
    check_eq!(meta.executor_session_id.as_deref(), Some("cli-1"));
    actor
        .ingest(vec![(4, delta(4))], T0 + ACTIVITY_WRITE_MS + 2)
        .await?;
    check_eq!(
        store.meta().await?.updated_at_ms,
        T0 + ACTIVITY_WRITE_MS + 1
    );
    // Reopened, the actor is at most that much behind the log, and dedupes.
    let again = SessionActor::open(store.clone()).await?;
    let behind = T0 + ACTIVITY_WRITE_MS + 2 - again.meta().await.updated_at_ms;
    check!(
        (0..ACTIVITY_WRITE_MS).contains(&behind),
        "activity {behind} ms behind"
    );
    let out = again.ingest(vec![(4, delta(4))], T0 + 3000).await?;
    check_eq!((out.stored, out.duplicates), (0, 1));
    Ok(())
}

/// A retried `answer` (the same command id, as a client resends after a
/// reconnect) gets the result its first try got, across a reopen, and
/// forwards nothing; only a different command is told `already_decided`.
async fn actor_retried_answer_gets_its_first_result(h: &dyn StoreHarness) -> CaseResult {
    let (dir, store, name) = fresh_store(h, "retried-answer").await?;
    let actor = SessionActor::open(store.clone()).await?;
    actor
        .ingest(vec![(1, permission("q1")), (2, permission("q2"))], T0)
        .await?;
    let alice = |client: &str| Actor {
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
        })
    };
    let first = actor
        .command("a-1", answer("q1"), &alice("web 1"), T0 + 1)
        .await?;
    check!(
        first.result.ok && first.forward.len() == 1,
        "first try: {first:?}"
    );
    let head = store.head().await?.last_seq;
    // The same frame again, from the socket that replaced the first.
    let retry = actor
        .command("a-1", answer("q1"), &alice("web 2"), T0 + 2)
        .await?;
    check!(
        retry.result.ok && retry.result.error.is_none() && retry.forward.is_empty(),
        "a retry gets the first try's result: {retry:?}"
    );
    check_eq!(store.head().await?.last_seq, head);
    // A different command on the decided question is told who decided.
    let other = actor
        .command("a-2", answer("q1"), &alice("web 2"), T0 + 3)
        .await?;
    check_eq!(
        other.result.error.as_ref().map(|e| e.code.as_str()),
        Some("already_decided")
    );
    // A retry of a command that lost gets the same loss again.
    let again = actor
        .command("a-2", answer("q1"), &alice("web 2"), T0 + 4)
        .await?;
    check_eq!(again.result, other.result);
    // Across a reopen (a restarted host): still the first try's result.
    drop(actor);
    drop(store);
    let dir2 = h.directory(&name).await?;
    let store = dir2.open("s1").await?;
    let actor = SessionActor::open(store.clone()).await?;
    let late = actor
        .command("a-1", answer("q1"), &alice("web 3"), T0 + 5)
        .await?;
    check!(
        late.result.ok && late.forward.is_empty(),
        "a retry after a reopen: {late:?}"
    );
    // The other question is still open and takes a new answer.
    let q2 = actor
        .command("a-3", answer("q2"), &alice("web 3"), T0 + 6)
        .await?;
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

async fn actor_drives_the_state_machine(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "machine").await?;
    let actor = SessionActor::open(store.clone()).await?;
    let mut sub = actor.log().subscribe(0);
    let init = Event::SessionInit(SessionInit {
        executor_session_id: Some("cli-1".into()),
        model: Some("claude-test".into()),
        ..SessionInit::default()
    });
    actor
        .ingest(vec![(1, init), (2, delta(1)), (3, permission("q1"))], T0)
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

    let alice = Actor {
        user: "alice".into(),
        client: Some("browser 1".into()),
    };
    let bob = Actor {
        user: "bob".into(),
        client: Some("phone".into()),
    };
    let answer = |decision: Decision| {
        Command::Answer(crate::protocol::Answer {
            question_id: "q1".into(),
            decision,
            by: None,
        })
    };
    let allow = Decision::Allow {
        updated_input: None,
        remember: false,
    };
    let first = actor
        .command("b-1", answer(allow.clone()), &alice, T0 + 1)
        .await?;
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
            T0 + 2,
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
        cost_usd: Some(0.5),
        ..TurnResult::default()
    });
    actor.ingest(vec![(4, done)], T0 + 3).await?;
    check_eq!(
        actor.meta().await.state,
        SessionState::paused(PauseReason::Idle)
    );
    check_eq!(actor.meta().await.cost_usd, 0.5);

    let turn = Command::Message(UserTurn {
        text: "and now the tests".into(),
    });
    let m1 = actor.command("b-3", turn.clone(), &alice, T0 + 4).await?;
    let m2 = actor.command("b-3", turn, &alice, T0 + 5).await?;
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
    actor.ingest(vec![(gseq, permission("q2"))], T0 + 6).await?;
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
    actor.ingest(vec![(gseq + 1, confirm)], T0 + 7).await?;
    check_eq!(store.head().await?.last_seq, before_confirm + 1);
    check_eq!(
        actor.meta().await.state,
        SessionState::paused(PauseReason::AwaitingApproval)
    );
    check_eq!(actor.meta().await.pending_questions, 1);
    let reopened = SessionActor::open(store).await?;
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
async fn actor_logs_the_session_in_order(h: &dyn StoreHarness) -> CaseResult {
    let (_dir, store, _) = fresh_store(h, "order").await?;
    let actor = SessionActor::open(store.clone()).await?;
    let alice = Actor {
        user: "alice".into(),
        client: None,
    };
    let init = Event::SessionInit(SessionInit {
        executor_session_id: Some("cli-1".into()),
        ..SessionInit::default()
    });
    let end = |cost: f64| {
        Event::Result(TurnResult {
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
    actor
        .ingest(vec![(1, init.clone()), (2, delta(1))], T0)
        .await?;
    let mid = store.head().await?.last_seq;
    actor
        .command("m-1", message("and then?"), &alice, T0 + 1)
        .await?;
    actor
        .ingest(vec![(3, delta(2)), (4, end(0.1))], T0 + 2)
        .await?;
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
    actor
        .ingest(vec![(5, init.clone()), (6, delta(3))], T0 + 3)
        .await?;
    check_eq!(
        types_after(idle).await?,
        vec!["state Active", "session.init", "assistant"]
    );
    actor.ingest(vec![(7, end(0.2))], T0 + 4).await?;

    // A message sent while idle is no queued one.
    let idle = store.head().await?.last_seq;
    actor
        .command("m-2", message("go on"), &alice, T0 + 5)
        .await?;
    check_eq!(
        types_after(idle).await?,
        vec!["user.message", "state Active"]
    );
    actor.ingest(vec![(8, init), (9, delta(4))], T0 + 6).await?;
    // Closed mid-stream: the aborted turn's end, its result and the CLI's
    // interruption marker come after the close.
    let close = Command::Close(crate::protocol::Close {});
    actor.command("c-1", close, &alice, T0 + 7).await?;
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
        .ingest(
            vec![(10, aborted), (11, marker), (12, withdrawn), (13, end(0.5))],
            T0 + 8,
        )
        .await?;
    check_eq!(out.ack, 13);
    check_eq!(types_after(closed).await?, vec!["question.resolved"]);
    check_eq!(actor.meta().await.state, SessionState::Terminated);
    check_eq!(actor.meta().await.cost_usd, 0.5);
    // Acked: sent again, nothing changes.
    let again = actor.ingest(vec![(13, end(0.5))], T0 + 9).await?;
    check_eq!(again.ack, 13);
    check_eq!(store.head().await?.last_seq, closed + 1);
    // The log's last state is the end.
    let types = types_after(0).await?;
    let last_state = types.iter().rev().find(|t| t.starts_with("state "));
    check_eq!(last_state.map(String::as_str), Some("state Terminated"));
    Ok(())
}

// ---------------------------------------------------------------------------
// Migration cases
// ---------------------------------------------------------------------------

const M1: Migration = Migration {
    version: 1,
    name: "notes",
    sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
};
const M2: Migration = Migration {
    version: 2,
    name: "notes_index",
    sql: "ALTER TABLE notes ADD COLUMN tag TEXT; CREATE INDEX notes_tag ON notes (tag)",
};

fn count(conn: &mut dyn SqlConn, sql: &str) -> std::result::Result<i64, CaseError> {
    let rows = conn.query(sql, &[])?;
    rows.first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64)
        .ok_or_else(|| CaseError(format!("{sql} returned no integer")))
}

fn migrations_run_twice_equals_once(h: &dyn SqlHarness) -> CaseResult {
    let mut conn = h.connect(&unique("twice"))?;
    let m = Migrations::new(&[M1, M2])?;
    let first = m.apply(conn.as_mut())?;
    check_eq!(
        (first.from, first.to, first.applied.clone()),
        (0, 2, vec![1, 2])
    );
    conn.execute(
        "INSERT INTO notes (body, tag) VALUES (?1, ?2)",
        &[SqlValue::Text("kept".into()), SqlValue::Text("t".into())],
    )?;
    let second = m.apply(conn.as_mut())?;
    check_eq!((second.from, second.to, second.applied.len()), (2, 2, 0));
    check_eq!(count(conn.as_mut(), "SELECT count(*) FROM notes")?, 1);
    check_eq!(
        count(conn.as_mut(), "SELECT count(*) FROM duraclaw_migrations")?,
        2
    );
    // Growing the list applies only the new step.
    const M3: Migration = Migration {
        version: 3,
        name: "more",
        sql: "CREATE TABLE more (x)",
    };
    let third = Migrations::new(&[M1, M2, M3])?.apply(conn.as_mut())?;
    check_eq!(third.applied, vec![3]);
    Ok(())
}

fn newer_database_is_refused(h: &dyn SqlHarness) -> CaseResult {
    let name = unique("newer");
    let mut conn = h.connect(&name)?;
    Migrations::new(&[M1, M2])?.apply(conn.as_mut())?;
    match Migrations::new(&[M1])?.apply(conn.as_mut()) {
        Err(Error::SchemaTooNew { found: 2, known: 1 }) => {}
        other => {
            return Err(CaseError(format!(
                "older code on a newer database gave {other:?}"
            )));
        }
    }
    conn.execute(
        "UPDATE duraclaw_meta SET int_value = 99 WHERE key = 'schema'",
        &[],
    )?;
    match Migrations::new(&[M1, M2])?.apply(conn.as_mut()) {
        Err(
            e @ Error::SchemaTooNew {
                found: 99,
                known: 2,
            },
        ) => {
            check!(e.to_string().contains("newer"), "the message says why: {e}");
        }
        other => return Err(CaseError(format!("version 99 gave {other:?}"))),
    }
    Ok(())
}

fn edited_migration_is_detected(h: &dyn SqlHarness) -> CaseResult {
    let mut conn = h.connect(&unique("edited"))?;
    Migrations::new(&[M1, M2])?.apply(conn.as_mut())?;
    let edited = Migration {
        sql: "ALTER TABLE notes ADD COLUMN tag TEXT",
        ..M2
    };
    match Migrations::new(&[M1, edited])?.apply(conn.as_mut()) {
        Err(Error::MigrationEdited { version: 2, .. }) => {}
        other => return Err(CaseError(format!("an edited migration gave {other:?}"))),
    }
    Ok(())
}

fn failed_migration_rolls_back_with_its_version(h: &dyn SqlHarness) -> CaseResult {
    let mut conn = h.connect(&unique("failed"))?;
    let broken = Migration {
        version: 2,
        name: "broken",
        sql: "CREATE TABLE half (x); THIS IS NOT SQL",
    };
    match Migrations::new(&[M1, broken])?.apply(conn.as_mut()) {
        Err(Error::MigrationFailed { version: 2, .. }) => {}
        other => return Err(CaseError(format!("a broken migration gave {other:?}"))),
    }
    check_eq!(
        count(
            conn.as_mut(),
            "SELECT int_value FROM duraclaw_meta WHERE key = 'schema'"
        )?,
        1
    );
    check_eq!(
        count(
            conn.as_mut(),
            "SELECT count(*) FROM sqlite_master WHERE name = 'half'"
        )?,
        0
    );
    // Fixing it applies cleanly.
    let report = Migrations::new(&[M1, M2])?.apply(conn.as_mut())?;
    check_eq!(report.applied, vec![2]);
    Ok(())
}

fn reopened_database_keeps_its_version(h: &dyn SqlHarness) -> CaseResult {
    let name = unique("reopen");
    let m = Migrations::new(&[M1, M2])?;
    {
        let mut conn = h.connect(&name)?;
        m.apply(conn.as_mut())?;
    }
    let mut conn = h.connect(&name)?;
    let report = m.apply(conn.as_mut())?;
    check_eq!((report.from, report.applied.len()), (2, 0));
    Ok(())
}

/// Keeps `Arc` in scope for harness implementors' convenience in docs.
#[doc(hidden)]
pub type SharedHarness = Arc<dyn StoreHarness>;
