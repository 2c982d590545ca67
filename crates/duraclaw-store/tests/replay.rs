//! Tail, backward pages and compacted ranges (`duraclaw_core::backend::web::
//! replay`) over random logs, with live events appended while the client
//! pages back: the client that assembles the tail, the live stream and its
//! pages ends with exactly the log, in order, each seq once — an event as
//! stored, or a delta covered by a `compacted` range because its message's
//! final comes later in the log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duraclaw_core::backend::actor::SessionLog;
use duraclaw_core::backend::web::replay::{self, Compactor, ReplayItem};
use duraclaw_core::protocol::{
    Assistant, AssistantPhase, Event, Page, Seq, ToBrowser, UserMessage, decode_frame,
};
use duraclaw_core::store::{AppendBatch, NewEvent, SessionDirectory, SessionMeta, StoredEvent};
use duraclaw_store::MemoryDirectory;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

const STEP_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Ev {
    Delta(u8),
    Final(u8),
    Turn,
    Other,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        6 => (0u8..4).prop_map(Ev::Delta),
        2 => (0u8..4).prop_map(Ev::Final),
        1 => Just(Ev::Turn),
        1 => Just(Ev::Other),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// Ask for a page back of this many events.
    Page(u64),
    /// Append these events (they reach the client live).
    Live(Vec<Ev>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..40).prop_map(Step::Page),
        1 => prop::collection::vec(ev(), 1..8).prop_map(Step::Live),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    log: Vec<Ev>,
    /// `None`: `after=0`; `Some(n)`: `tail=n`.
    tail: Option<u64>,
    compact: bool,
    steps: Vec<Step>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(ev(), 0..120),
        prop::option::weighted(0.8, 1u64..40),
        prop::bool::weighted(0.8),
        prop::collection::vec(step(), 0..30),
    )
        .prop_map(|(log, tail, compact, steps)| Case {
            log,
            tail,
            compact,
            steps,
        })
}

fn new_event(e: Ev, n: usize) -> NewEvent {
    let event = match e {
        Ev::Delta(m) | Ev::Final(m) => Event::Assistant(Assistant {
            message_id: format!("m{m}"),
            phase: if matches!(e, Ev::Delta(_)) {
                AssistantPhase::Delta
            } else {
                AssistantPhase::Final
            },
            text: format!("text {n}"),
            aborted: false,
        }),
        Ev::Turn => Event::UserMessage(UserMessage {
            text: format!("turn {n}"),
            by: None,
            queued: false,
        }),
        Ev::Other => Event::Unknown(serde_json::json!({"type": "x.other", "n": n})),
    };
    NewEvent::new(&event, None, 0).unwrap()
}

/// What the client holds for one seq: the event's JSON, or `None` for a
/// delta a `compacted` range covers.
#[derive(Default)]
struct Client {
    have: BTreeMap<Seq, Option<Value>>,
    /// The next seq the stream must bring.
    next: Seq,
    /// The lowest seq held (pages extend below it).
    low: Seq,
}

impl Client {
    fn put(&mut self, seq: Seq, v: Option<Value>) -> Result<(), TestCaseError> {
        prop_assert!(self.have.insert(seq, v).is_none(), "seq {} twice", seq);
        Ok(())
    }

    /// One stream or page item covering `from..`; returns the seq after it.
    fn item(&mut self, frame: &ToBrowser, from: Seq) -> Result<Seq, TestCaseError> {
        match frame {
            ToBrowser::Event { seq, event } => {
                prop_assert_eq!(*seq, from, "gap or repeat before seq {}", seq);
                self.put(*seq, Some(serde_json::to_value(event).unwrap()))?;
                Ok(seq + 1)
            }
            ToBrowser::Compacted { first, last, event } => {
                prop_assert_eq!(*first, from, "a compacted range starts at {}", first);
                prop_assert!(first <= last);
                for s in *first..*last {
                    self.put(s, None)?;
                }
                let at_last = event.as_ref().map(|e| serde_json::to_value(e).unwrap());
                self.put(*last, at_last)?;
                Ok(last + 1)
            }
            other => Err(TestCaseError::fail(format!("unexpected frame {other:?}"))),
        }
    }

    fn stream(&mut self, frame: &str) -> Result<(), TestCaseError> {
        let f: ToBrowser = decode_frame(frame, "frame").unwrap();
        self.next = self.item(&f, self.next)?;
        Ok(())
    }

    fn page(&mut self, frame: &str, before: Seq) -> Result<(), TestCaseError> {
        let f: ToBrowser = decode_frame(frame, "page").unwrap();
        let ToBrowser::Page(Page {
            first: Some(first),
            last: Some(last),
            items,
            error: None,
            ..
        }) = f
        else {
            return Err(TestCaseError::fail(format!("not a page: {frame}")));
        };
        prop_assert_eq!(last, before - 1);
        let mut at = first;
        for i in &items {
            at = self.item(i, at)?;
        }
        prop_assert_eq!(at, before, "the page covers {}..={}", first, last);
        self.low = first;
        Ok(())
    }
}

static SESSIONS: AtomicU64 = AtomicU64::new(0);

async fn run(case: Case) -> Result<(), TestCaseError> {
    let dir = MemoryDirectory::new();
    let id = format!("s{}", SESSIONS.fetch_add(1, Ordering::Relaxed));
    let store = dir.create(SessionMeta::new(id, "alice", 0)).await.unwrap();
    let log = SessionLog::open_with(store, 4, 5).await.unwrap();
    let mut n = 0;
    let mut append = |evs: &[Ev]| {
        let batch: Vec<NewEvent> = evs
            .iter()
            .map(|e| {
                n += 1;
                new_event(*e, n)
            })
            .collect();
        AppendBatch::events(batch)
    };
    if !case.log.is_empty() {
        log.append(append(&case.log)).await.unwrap();
    }

    // Open: subscribe, then the snapshot's last seq, then where the replay
    // starts (what each host does).
    let mut sub = log.subscribe(0);
    let last_seq = log.store().head().await.unwrap().last_seq;
    let mut client = Client::default();
    let first_seq = match case.tail {
        Some(n) => {
            let t = replay::tail(log.store().as_ref(), last_seq, n)
                .await
                .unwrap();
            prop_assert!(t.first_seq <= last_seq.saturating_sub(n) + 1 || last_seq == 0);
            sub.resume_after(t.first_seq - 1);
            t.first_seq
        }
        None => 1,
    };
    client.next = first_seq;
    client.low = first_seq;
    let mut compactor =
        (case.compact && sub.delivered() < last_seq).then(|| Compactor::new(last_seq));
    let mut live_end = last_seq;

    // Drains what the subscription has up to the log's end, as the host's
    // forwarder does.
    async fn drain(
        sub: &mut duraclaw_core::backend::actor::Subscription,
        compactor: &mut Option<Compactor>,
        client: &mut Client,
        upto: Seq,
    ) -> Result<(), TestCaseError> {
        while sub.delivered() < upto {
            let e: StoredEvent = tokio::time::timeout(STEP_DEADLINE, sub.next())
                .await
                .map_err(|_| TestCaseError::fail("no event in time"))?
                .unwrap()
                .unwrap();
            for i in replay::feed(compactor, e) {
                client.stream(&i.frame())?;
            }
        }
        Ok(())
    }

    drain(&mut sub, &mut compactor, &mut client, last_seq).await?;
    let mut steps = case.steps.into_iter();
    loop {
        let step = steps.next();
        match step {
            Some(Step::Live(evs)) => {
                let out = log.append(append(&evs)).await.unwrap();
                live_end = out.stored.last().map_or(live_end, |e| e.seq);
                drain(&mut sub, &mut compactor, &mut client, live_end).await?;
            }
            Some(Step::Page(limit)) => {
                if client.low <= 1 {
                    continue;
                }
                let before = client.low;
                let head = log.store().head().await.unwrap().last_seq;
                let frame =
                    replay::page(log.store().as_ref(), "p", before, limit, head, case.compact)
                        .await;
                client.page(&frame, before)?;
            }
            None => {
                // Page back to the start.
                if client.low <= 1 {
                    break;
                }
                let before = client.low;
                let head = log.store().head().await.unwrap().last_seq;
                let frame =
                    replay::page(log.store().as_ref(), "p", before, 37, head, case.compact).await;
                client.page(&frame, before)?;
            }
        }
    }

    // Exactly the log, each seq once.
    let all = replay::read_range(log.store().as_ref(), 1, live_end)
        .await
        .unwrap();
    prop_assert_eq!(client.have.len(), all.len());
    for (i, e) in all.iter().enumerate() {
        prop_assert_eq!(e.seq, i as u64 + 1);
        let held = client.have.get(&e.seq).unwrap();
        let stored: Value = serde_json::from_str(&e.json).unwrap();
        match held {
            Some(v) => prop_assert_eq!(v, &stored, "seq {}", e.seq),
            None => {
                // A delta whose message's final comes later in the log.
                prop_assert!(case.compact, "compacted with compact=0");
                prop_assert_eq!(&stored["phase"], "delta", "seq {} compacted", e.seq);
                let id = &stored["message_id"];
                prop_assert!(
                    all[i + 1..].iter().any(|later| {
                        let v: Value = serde_json::from_str(&later.json).unwrap();
                        v["message_id"] == *id && v["phase"] == "final"
                    }),
                    "seq {} compacted without a later final",
                    e.seq
                );
            }
        }
    }
    Ok(())
}

#[test]
fn tail_pages_and_compacted_ranges_assemble_the_log_exactly_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    config.cases = config.cases.max(512);
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    runner.run(&case(), |c| rt.block_on(run(c))).unwrap();
}

/// A closed message is sent as one range with its final: the replay of a
/// session made of closed messages carries each final once.
#[test]
fn a_replay_of_closed_messages_is_one_frame_per_message() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = MemoryDirectory::new();
        let store = dir.create(SessionMeta::new("c", "alice", 0)).await.unwrap();
        let mut evs = Vec::new();
        for m in 0..3u8 {
            evs.push(Ev::Turn);
            evs.extend(std::iter::repeat_n(Ev::Delta(m), 50));
            evs.push(Ev::Final(m));
        }
        let batch = evs
            .iter()
            .enumerate()
            .map(|(i, e)| new_event(*e, i))
            .collect();
        store.append(AppendBatch::events(batch)).await.unwrap();
        let all = replay::read_range(store.as_ref(), 1, 156).await.unwrap();
        let items = replay::compact_all(all, 156);
        assert_eq!(items.len(), 6, "{items:?}");
        assert!(matches!(
            items[1],
            ReplayItem::Compacted {
                first: 2,
                last: 52,
                event: Some(_)
            }
        ));
        // A page from the middle of a message finds its final past the page.
        let page = replay::page(store.as_ref(), "p", 30, 10, 156, true).await;
        assert_eq!(
            page,
            replay::page_frame("p", 20, 29, &[replay::compacted_frame(20, 29, None)])
        );
    });
}
