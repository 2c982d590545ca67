//! The shared test suites every backend and executor runs (feature
//! `conformance`).
//!
//! Like `object_store`'s integration tests: each backend defines a harness
//! and calls [`store_conformance_tests!`](crate::store_conformance_tests)
//! (for [`SessionStore`](crate::store::SessionStore) backends) and
//! [`sql_conformance_tests!`](crate::sql_conformance_tests) (for
//! [`SqlConn`] backends); each [`Executor`](crate::executor::Executor)
//! defines an [`ExecutorHarness`] and calls
//! [`executor_conformance_tests!`](crate::executor_conformance_tests). Cases return a [`CaseResult`] instead of
//! panicking, so hosts where a panic aborts the instance (Durable Objects)
//! can run them with [`run_store_case`] / [`run_sql_case`] and report each.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use serde_json::json;

use crate::backend::migrate::SqlConn;
use crate::error::{Error, Result};
use crate::protocol::{Assistant, AssistantPhase, Event, QuestionKind, UserQuestion};
use crate::store::{DynSessionDirectory, DynSessionStore, NewEvent, SessionMeta};
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

mod actor;
mod executor;
mod sql;
mod store;
mod store_batches;

use actor::*;
use executor::*;
use sql::*;
use store::*;
use store_batches::*;

pub use executor::{
    ASK_OPTIONS, ASK_QUESTION, EXECUTOR_CASE_WAIT_MS, ExecutorHarness, ExecutorUnderTest, Play,
};

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
pub const STORE_CASES: &[&str] = crate::store_conformance_tests!(@each [@names]);

/// The migration suite's cases, by name.
pub const SQL_CASES: &[&str] = crate::sql_conformance_tests!(@each [@names]);

/// The executor suite's cases, by name.
pub const EXECUTOR_CASES: &[&str] = crate::executor_conformance_tests!(@each [@names]);

/// Runs one executor case by name.
pub async fn run_executor_case(name: &str, h: &dyn ExecutorHarness) -> CaseResult {
    crate::executor_conformance_tests!(@each [@run name, h;])
}

/// Runs one store case by name.
pub async fn run_store_case(name: &str, h: &dyn StoreHarness) -> CaseResult {
    crate::store_conformance_tests!(@each [@run name, h;])
}

/// Runs one migration case by name.
pub fn run_sql_case(name: &str, h: &dyn SqlHarness) -> CaseResult {
    crate::sql_conformance_tests!(@each [@run name, h;])
}

/// Generates one `#[tokio::test]` per store case for `$harness`, each bounded
/// by a 120 s deadline.
///
/// The case list is written once, in the `@each` arm;
/// [`STORE_CASES`](crate::conformance::STORE_CASES) and
/// [`run_store_case`](crate::conformance::run_store_case) are built from it too.
#[macro_export]
macro_rules! store_conformance_tests {
    ($harness:expr) => {
        $crate::store_conformance_tests!(@each [@cases $harness;]);
    };
    (@each [$($then:tt)*]) => {
        $crate::store_conformance_tests! { $($then)*
            append_assigns_dense_seqs, read_after_pages, replay_after_n_then_live,
            seam_under_concurrent_appends, slow_subscriber_catches_up_by_replay, gseq_dedupe,
            append_with_meta_is_one_step, approvals_first_answer_wins, withdrawn_question_leaves_pending,
            commands_applied_once_and_outboxed, payloads_up_to_the_frame_limit,
            reopened_store_sees_everything, directory_create_open_list,
            actor_ingest_acks_and_refuses_gaps, actor_drives_the_state_machine,
            actor_writes_activity_once_a_second, actor_epochs_keep_where_the_log_ended,
            actor_retried_answer_gets_its_first_result,
            directory_remove_leaves_nothing, actor_logs_the_session_in_order,
            gseq_dedupe_inside_a_batch, refused_batch_is_atomic, questions_in_batches,
            resolve_records_its_command, outbox_order_and_marking, turn_beginnings_are_recorded,
            meta_rules,
            sessions_are_independent, list_order_ties }
    };
    (@names $($case:ident),+ $(,)?) => {
        &[$(stringify!($case)),+]
    };
    (@run $name:ident, $h:ident; $($case:ident),+ $(,)?) => {
        match $name {
            $(n if n == stringify!($case) => $case($h).await,)+
            other => Err($crate::conformance::CaseError(format!("no store case named {other:?}"))),
        }
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
///
/// The case list is written once, in the `@each` arm;
/// [`SQL_CASES`](crate::conformance::SQL_CASES) and
/// [`run_sql_case`](crate::conformance::run_sql_case) are built from it too.
#[macro_export]
macro_rules! sql_conformance_tests {
    ($harness:expr) => {
        $crate::sql_conformance_tests!(@each [@cases $harness;]);
    };
    (@each [$($then:tt)*]) => {
        $crate::sql_conformance_tests! { $($then)*
            migrations_run_twice_equals_once, newer_database_is_refused,
            edited_migration_is_detected, failed_migration_rolls_back_with_its_version,
            reopened_database_keeps_its_version }
    };
    (@names $($case:ident),+ $(,)?) => {
        &[$(stringify!($case)),+]
    };
    (@run $name:ident, $h:ident; $($case:ident),+ $(,)?) => {
        match $name {
            $(n if n == stringify!($case) => $case($h),)+
            other => Err($crate::conformance::CaseError(format!("no sql case named {other:?}"))),
        }
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

/// Generates one `#[tokio::test]` per executor case for `$harness` (an
/// [`ExecutorHarness`](crate::conformance::ExecutorHarness)), each bounded
/// by a 600 s deadline; every wait inside a case is bounded by
/// [`EXECUTOR_CASE_WAIT_MS`](crate::conformance::EXECUTOR_CASE_WAIT_MS).
///
/// The case list is written once, in the `@each` arm;
/// [`EXECUTOR_CASES`](crate::conformance::EXECUTOR_CASES) and
/// [`run_executor_case`](crate::conformance::run_executor_case) are built
/// from it too.
#[macro_export]
macro_rules! executor_conformance_tests {
    ($harness:expr) => {
        $crate::executor_conformance_tests!(@each [@cases $harness;]);
    };
    (@each [$($then:tt)*]) => {
        $crate::executor_conformance_tests! { $($then)*
            turns_start_with_init_and_end_with_one_result,
            a_tool_call_is_held_asked_and_resolved_once, a_denied_tool_does_not_run,
            a_question_to_the_user_gets_its_answer, interrupt_withdraws_the_open_question,
            an_interrupt_while_the_gate_looks_a_question_up_leaves_none_open,
            interrupt_mid_stream_ends_the_turn, resume_continues_the_executor_session,
            a_failing_turn_is_reported_and_the_session_goes_on,
            an_ended_session_refuses_messages }
    };
    (@names $($case:ident),+ $(,)?) => {
        &[$(stringify!($case)),+]
    };
    (@run $name:ident, $h:ident; $($case:ident),+ $(,)?) => {
        match $name {
            $(n if n == stringify!($case) => $case($h).await,)+
            other => Err($crate::conformance::CaseError(format!("no executor case named {other:?}"))),
        }
    };
    (@cases $harness:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                let run = $crate::conformance::run_executor_case(stringify!($case), &harness);
                match tokio::time::timeout(std::time::Duration::from_secs(600), run).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => panic!("{}: {}", stringify!($case), e),
                    Err(_) => panic!("{}: no result within 600 s", stringify!($case)),
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
    sub: &mut crate::backend::actor::Subscription,
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

/// Keeps `Arc` in scope for harness implementors' convenience in docs.
#[doc(hidden)]
pub type SharedHarness = Arc<dyn StoreHarness>;
