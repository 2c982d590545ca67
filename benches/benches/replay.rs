//! Replay: a browser reconnects and gets the events it missed.
//!
//! Ours is the orchestrator's path: `SessionLog::subscribe(after)` pages
//! from the store, a forwarder frames each event with
//! `browser_event_frame` into the connection's bounded queue (256), and a
//! writer sends each frame on a loopback WebSocket to a client that reads
//! them all. The baseline is one raw rusqlite range scan of the same rows
//! framed and sent on a loopback WebSocket by the same task. Both end when
//! the client has every frame; the client checks the byte count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use duraclaw_benches::ws::{Counter, ServerWs, pair, spawn_writer};
use duraclaw_benches::{mix, quick, raw, runtime};
use duraclaw_core::actor::SessionLog;
use duraclaw_core::protocol::{Seq, browser_event_frame};
use duraclaw_core::store::{AppendBatch, SessionDirectory, SessionMeta};
use duraclaw_store::{MemoryDirectory, SqliteDirectory};
use futures::SinkExt;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// As the orchestrator queues frames for one browser.
const BROWSER_QUEUE: usize = 256;
const SESSION: &str = "replay-session";

struct Fixture {
    rt: Runtime,
    _tmp: tempfile::TempDir,
    db: PathBuf,
    sqlite: SessionLog,
    memory: SessionLog,
    /// `(seq, json)` of every event, for the WebSocket-only baseline and
    /// the expected bytes.
    events: Vec<(Seq, Arc<str>)>,
}

impl Fixture {
    fn new(n: u64) -> Self {
        let rt = runtime();
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("sessions.db");
        let (sqlite, memory, events) = rt.block_on(async {
            let sqlite_dir = SqliteDirectory::open(&db).await.unwrap();
            let memory_dir = MemoryDirectory::new();
            let s = sqlite_dir
                .create(SessionMeta::new(SESSION, "bench", 0))
                .await
                .unwrap();
            let m = memory_dir
                .create(SessionMeta::new(SESSION, "bench", 0))
                .await
                .unwrap();
            let mut events = Vec::new();
            let mut from = 0;
            while from < n {
                let to = (from + 1000).min(n);
                let batch = mix::new_events(from, to, true, 1_700_000_000_000);
                let out = s.append(AppendBatch::events(batch.clone())).await.unwrap();
                m.append(AppendBatch::events(batch)).await.unwrap();
                events.extend(out.stored.into_iter().map(|e| (e.seq, e.json)));
                from = to;
            }
            (
                SessionLog::open(s).await.unwrap(),
                SessionLog::open(m).await.unwrap(),
                events,
            )
        });
        Fixture {
            rt,
            _tmp: tmp,
            db,
            sqlite,
            memory,
            events,
        }
    }

    fn last(&self) -> Seq {
        self.events.len() as Seq
    }

    fn expected_bytes(&self, after: Seq) -> usize {
        self.events
            .iter()
            .filter(|(s, _)| *s > after)
            .map(|(s, j)| browser_event_frame(*s, j).len())
            .sum()
    }
}

/// The orchestrator's replay: subscribe, forward framed events into the
/// connection's queue, stop at `last` (a real forwarder then waits for live
/// events).
async fn forward(log: &SessionLog, after: Seq, last: Seq, queue: &mpsc::Sender<String>) {
    let mut sub = log.subscribe(after);
    let tx = queue.clone();
    tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            let e = item.expect("replay");
            let seq = e.seq;
            tx.send(browser_event_frame(e.seq, &e.json))
                .await
                .expect("the writer is gone");
            if seq == last {
                break;
            }
        }
    })
    .await
    .unwrap();
}

/// Raw: one range scan, each row framed and sent on the socket.
async fn scan_and_send(conn: &rusqlite::Connection, after: Seq, ws: &mut ServerWs) {
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, json FROM events WHERE session_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .unwrap();
    let mut rows = stmt
        .query(rusqlite::params![SESSION, after as i64])
        .unwrap();
    while let Some(row) = rows.next().unwrap() {
        let seq: i64 = row.get(0).unwrap();
        let json = row.get_ref(1).unwrap().as_str().unwrap();
        let frame = browser_event_frame(seq as Seq, json);
        ws.send(Message::text(frame)).await.unwrap();
    }
}

/// Ours through a WebSocket: the log's replay, the queue, the writer.
fn bench_ours(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    fx: &Fixture,
    name: &str,
    log: &SessionLog,
    after: Seq,
) {
    let last = fx.last();
    let frames = (last - after) as usize;
    let bytes = fx.expected_bytes(after);
    let (queue, counter) = fx.rt.block_on(async {
        let (server, client) = pair(false).await;
        (spawn_writer(server, BROWSER_QUEUE), Counter::spawn(client))
    });
    c.throughput(Throughput::Elements(frames as u64));
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            fx.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let done = counter.expect(frames);
                    forward(log, after, last, &queue).await;
                    let got = done.await.unwrap();
                    total += start.elapsed();
                    assert_eq!((got.frames, got.bytes), (frames, bytes));
                }
                total
            })
        })
    });
}

fn bench_raw_sqlite(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    fx: &Fixture,
    name: &str,
    after: Seq,
) {
    let frames = (fx.last() - after) as usize;
    let bytes = fx.expected_bytes(after);
    let conn = raw::reader(&fx.db);
    let (mut server, counter) = fx.rt.block_on(async {
        let (server, client) = pair(false).await;
        (server, Counter::spawn(client))
    });
    c.throughput(Throughput::Elements(frames as u64));
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            fx.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let done = counter.expect(frames);
                    scan_and_send(&conn, after, &mut server).await;
                    let got = done.await.unwrap();
                    total += start.elapsed();
                    assert_eq!((got.frames, got.bytes), (frames, bytes));
                }
                total
            })
        })
    });
}

fn replay(c: &mut Criterion) {
    let n: u64 = if quick() { 2_000 } else { 100_000 };
    let fx = Fixture::new(n);
    let half = n / 2;
    let mut g = c.benchmark_group("replay");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));

    // The whole log, from SQLite.
    bench_ours(&mut g, &fx, "sqlite/ours", &fx.sqlite, 0);
    bench_raw_sqlite(&mut g, &fx, "sqlite/raw", 0);

    // After N in the middle: the second half.
    bench_ours(&mut g, &fx, "sqlite_after_half/ours", &fx.sqlite, half);
    bench_raw_sqlite(&mut g, &fx, "sqlite_after_half/raw", half);

    // The memory store, against a WebSocket-only baseline (the same bytes
    // from a Vec, no store at all).
    bench_ours(&mut g, &fx, "memory/ours", &fx.memory, 0);
    {
        let frames = fx.events.len();
        let bytes = fx.expected_bytes(0);
        let (mut server, counter) = fx.rt.block_on(async {
            let (server, client) = pair(false).await;
            (server, Counter::spawn(client))
        });
        g.throughput(Throughput::Elements(frames as u64));
        g.bench_function("memory/raw_ws_only", |b| {
            b.iter_custom(|iters| {
                fx.rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let done = counter.expect(frames);
                        for (seq, json) in &fx.events {
                            server
                                .send(Message::text(browser_event_frame(*seq, json)))
                                .await
                                .unwrap();
                        }
                        let got = done.await.unwrap();
                        total += start.elapsed();
                        assert_eq!((got.frames, got.bytes), (frames, bytes));
                    }
                    total
                })
            })
        });
    }

    // The read side alone, no socket: where the time goes.
    {
        let last = fx.last();
        g.throughput(Throughput::Elements(last));
        g.bench_function("parts/sqlite_read/ours", |b| {
            b.iter_custom(|iters| {
                fx.rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let mut sub = fx.sqlite.subscribe(0);
                        let mut bytes = 0;
                        while let Some(e) = sub.next().await {
                            let e = e.unwrap();
                            bytes += e.json.len();
                            if e.seq == last {
                                break;
                            }
                        }
                        total += start.elapsed();
                        assert!(bytes > 0);
                    }
                    total
                })
            })
        });
        let conn = raw::reader(&fx.db);
        g.bench_function("parts/sqlite_read/raw", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut stmt = conn
                        .prepare_cached(
                            "SELECT seq, json FROM events WHERE session_id = ?1 AND seq > 0 ORDER BY seq",
                        )
                        .unwrap();
                    let mut rows = stmt.query([SESSION]).unwrap();
                    let mut bytes = 0;
                    while let Some(row) = rows.next().unwrap() {
                        bytes += row.get_ref(1).unwrap().as_str().unwrap().len();
                    }
                    total += start.elapsed();
                    assert!(bytes > 0);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
