//! Random interleavings of appends, subscribes, partial reads and
//! disconnects on a `SessionLog` with a tiny live queue (so subscribers fall
//! behind and catch up by replay), against both backends. Every subscriber
//! still connected at the end, once drained, must have seen each event with
//! seq > its `after` exactly once, in order, with the stored text. Also for
//! a log that publishes before it commits, its appends running beside the
//! readers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duraclaw_core::backend::actor::{SessionLog, Subscription};
use duraclaw_core::protocol::{Assistant, AssistantPhase, Event};
use duraclaw_core::store::{
    AppendBatch, DynSessionDirectory, NewEvent, SessionDirectory, SessionMeta,
};
use duraclaw_store::{MemoryDirectory, SqliteDirectory};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Live queue bound: small, so the lag-and-catch-up path runs often.
const LIVE_QUEUE: usize = 4;
/// Replay page: small, so replays take several pages.
const REPLAY_PAGE: usize = 5;
/// How long one subscriber step may take before the case fails.
const STEP_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of this many events.
    Append(usize),
    /// Subscribe after a seq: this fraction (of 255) of `last_seq + 3`.
    Subscribe(u8),
    /// Take up to this many events from a subscriber, as a browser would.
    Pull(Index, usize),
    /// Disconnect a subscriber.
    Drop(Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1usize..=20).prop_map(Op::Append),
        2 => any::<u8>().prop_map(Op::Subscribe),
        2 => (any::<Index>(), 1usize..=30).prop_map(|(i, n)| Op::Pull(i, n)),
        1 => any::<Index>().prop_map(Op::Drop),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..60)
}

fn config() -> Config {
    let mut config = Config::default();
    config.cases = config.cases.max(256);
    config.failure_persistence = None;
    config
}

struct Reader {
    sub: Subscription,
    after: u64,
    seen: Vec<u64>,
}

static SESSIONS: AtomicU64 = AtomicU64::new(0);
static CATCH_UPS: AtomicU64 = AtomicU64::new(0);

fn event(n: u64) -> NewEvent {
    let e = Event::Assistant(Assistant {
        message_id: "m".into(),
        phase: AssistantPhase::Delta,
        text: format!("token {n}"),
        aborted: false,
    });
    NewEvent::new(&e, None, 0).unwrap()
}

/// Takes one event, checking it is the next one with the stored text.
async fn take_one(
    reader: &mut Reader,
    texts: &[Arc<str>],
) -> std::result::Result<(), TestCaseError> {
    let next = tokio::time::timeout(STEP_DEADLINE, reader.sub.next())
        .await
        .map_err(|_| TestCaseError::fail(format!("no event within {STEP_DEADLINE:?}")))?;
    let e = match next {
        Some(Ok(e)) => e,
        Some(Err(err)) => return Err(TestCaseError::fail(format!("subscription failed: {err}"))),
        None => return Err(TestCaseError::fail("subscription ended early")),
    };
    let index = usize::try_from(e.seq).unwrap() - 1;
    prop_assert_eq!(Some(&e.json), texts.get(index), "text of seq {}", e.seq);
    reader.seen.push(e.seq);
    Ok(())
}

/// Whether a log's appends run beside the readers (a log that publishes
/// before it commits: readers meet its events while they are committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Appends {
    Awaited,
    Beside,
}

async fn run_case(
    dir: &dyn SessionDirectory,
    ops: Vec<Op>,
    appends: Appends,
) -> std::result::Result<(), TestCaseError> {
    let id = format!("s{}", SESSIONS.fetch_add(1, Ordering::Relaxed));
    let store = dir.create(SessionMeta::new(id, "alice", 0)).await.unwrap();
    let mut log = SessionLog::open_with(store, LIVE_QUEUE, REPLAY_PAGE)
        .await
        .unwrap();
    if appends == Appends::Beside {
        log = log.publishing_before_commit();
    }
    let mut texts: Vec<Arc<str>> = Vec::new();
    let mut readers: Vec<Reader> = Vec::new();
    let mut in_flight: Option<tokio::task::JoinHandle<Vec<u64>>> = None;
    for op in ops {
        let last = texts.len() as u64;
        match op {
            Op::Append(n) => {
                let events: Vec<NewEvent> = (0..n as u64).map(|i| event(last + i)).collect();
                texts.extend(events.iter().map(|e| e.json.clone()));
                let append = {
                    let log = log.clone();
                    async move {
                        let out = log.append(AppendBatch::events(events)).await.unwrap();
                        out.stored.iter().map(|e| e.seq).collect::<Vec<u64>>()
                    }
                };
                let want: Vec<u64> = (last + 1..=last + n as u64).collect();
                if let Some(previous) = in_flight.take() {
                    let seqs = previous.await.unwrap();
                    prop_assert_eq!(seqs.first(), Some(&(last + 1 - seqs.len() as u64)));
                }
                match appends {
                    Appends::Awaited => prop_assert_eq!(append.await, want),
                    // Readers go on while it commits.
                    Appends::Beside => in_flight = Some(tokio::spawn(append)),
                }
            }
            Op::Subscribe(frac) => {
                let after = u64::from(frac) * (last + 3) / 255;
                readers.push(Reader {
                    sub: log.subscribe(after),
                    after,
                    seen: Vec::new(),
                });
            }
            Op::Pull(i, n) => {
                if readers.is_empty() {
                    continue;
                }
                let at = i.index(readers.len());
                let reader = &mut readers[at];
                for _ in 0..n {
                    if reader.sub.delivered() >= last {
                        break;
                    }
                    take_one(reader, &texts).await?;
                }
            }
            Op::Drop(i) => {
                if !readers.is_empty() {
                    readers.swap_remove(i.index(readers.len()));
                }
            }
        }
    }
    if let Some(previous) = in_flight.take() {
        let seqs = previous.await.unwrap();
        prop_assert_eq!(seqs.last(), Some(&(texts.len() as u64)));
    }
    let last = texts.len() as u64;
    for mut reader in readers {
        while reader.sub.delivered() < last {
            take_one(&mut reader, &texts).await?;
        }
        let want: Vec<u64> = (reader.after + 1..=last).collect();
        prop_assert_eq!(&reader.seen, &want, "subscriber after {}", reader.after);
        CATCH_UPS.fetch_add(reader.sub.catch_ups(), Ordering::Relaxed);
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn run_all(rt: &tokio::runtime::Runtime, dir: DynSessionDirectory, appends: Appends) {
    let before = CATCH_UPS.load(Ordering::Relaxed);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&ops(), |ops| {
        rt.block_on(run_case(dir.as_ref(), ops, appends))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The tiny live queue must have made subscribers fall behind somewhere.
    assert!(
        CATCH_UPS.load(Ordering::Relaxed) > before,
        "no subscriber ever caught up by replay"
    );
}

#[test]
fn interleavings_on_memory() {
    let rt = runtime();
    run_all(&rt, Arc::new(MemoryDirectory::new()), Appends::Awaited);
}

#[test]
fn interleavings_on_sqlite() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = rt
        .block_on(SqliteDirectory::open(tmp.path().join("sessions.db")))
        .unwrap();
    run_all(&rt, Arc::new(dir), Appends::Awaited);
}

/// A log that publishes before it commits, its appends running while
/// readers subscribe, read and leave: the same guarantee.
#[test]
fn interleavings_publishing_before_commit_on_memory() {
    let rt = runtime();
    run_all(&rt, Arc::new(MemoryDirectory::new()), Appends::Beside);
}

#[test]
fn interleavings_publishing_before_commit_on_sqlite() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = rt
        .block_on(SqliteDirectory::open(tmp.path().join("sessions.db")))
        .unwrap();
    run_all(&rt, Arc::new(dir), Appends::Beside);
}
