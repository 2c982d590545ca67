//! Replay: a browser reconnects and gets the events it missed.
//!
//! Ours is the orchestrator's path: `SessionLog::subscribe(after)` pages
//! from the store, a forwarder frames each event with
//! `browser_event_frame` into the connection's bounded queue (256), and a
//! writer feeds every queued frame into the socket and flushes once, on a
//! loopback WebSocket to a client that reads them all. The baseline is one raw rusqlite range scan of the same rows
//! framed and sent on a loopback WebSocket by the same task. Both end when
//! the client has every frame; the client checks the byte count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use duraclaw_benches::ws::{Counter, ServerWs, pair, spawn_send_writer, spawn_writer};
use duraclaw_benches::{interleaved, mix, quick, raw, repeat, runtime};
use duraclaw_core::backend::actor::SessionLog;
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

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// One run of ours through a WebSocket: the log's replay, the queue, the
/// writer, the client; checks the client got every frame and byte.
fn ours<'a>(fx: &'a Fixture, log: &'a SessionLog, after: Seq) -> impl FnMut() -> Duration + 'a {
    ours_with(fx, log, after, spawn_writer)
}

/// [`ours`] with a given writer for the browser's socket.
fn ours_with<'a>(
    fx: &'a Fixture,
    log: &'a SessionLog,
    after: Seq,
    writer: fn(ServerWs, usize) -> mpsc::Sender<String>,
) -> impl FnMut() -> Duration + 'a {
    let last = fx.last();
    let frames = (last - after) as usize;
    let bytes = fx.expected_bytes(after);
    let (queue, counter) = fx.rt.block_on(async {
        let (server, client) = pair(false).await;
        (writer(server, BROWSER_QUEUE), Counter::spawn(client))
    });
    move || {
        fx.rt.block_on(async {
            let start = Instant::now();
            let done = counter.expect(frames);
            forward(log, after, last, &queue).await;
            let got = done.await.unwrap();
            let t = start.elapsed();
            assert_eq!((got.frames, got.bytes), (frames, bytes));
            t
        })
    }
}

/// One run of the raw baseline: a range scan sent on a WebSocket.
fn raw_sqlite(fx: &Fixture, after: Seq) -> impl FnMut() -> Duration + '_ {
    let frames = (fx.last() - after) as usize;
    let bytes = fx.expected_bytes(after);
    let conn = raw::reader(&fx.db);
    let (mut server, counter) = fx.rt.block_on(async {
        let (server, client) = pair(false).await;
        (server, Counter::spawn(client))
    });
    move || {
        fx.rt.block_on(async {
            let start = Instant::now();
            let done = counter.expect(frames);
            scan_and_send(&conn, after, &mut server).await;
            let got = done.await.unwrap();
            let t = start.elapsed();
            assert_eq!((got.frames, got.bytes), (frames, bytes));
            t
        })
    }
}

/// One run of the raw baseline with batched writes: the same scan, frames
/// fed into the socket's write buffer (tungstenite writes it out when it
/// fills) and flushed once at the end. Fewer syscalls than a send per
/// frame: the closest to the physical limit.
fn raw_sqlite_batched(fx: &Fixture, after: Seq) -> impl FnMut() -> Duration + '_ {
    let frames = (fx.last() - after) as usize;
    let bytes = fx.expected_bytes(after);
    let conn = raw::reader(&fx.db);
    let (mut server, counter) = fx.rt.block_on(async {
        let (server, client) = pair(false).await;
        (server, Counter::spawn(client))
    });
    move || {
        fx.rt.block_on(async {
            let start = Instant::now();
            let done = counter.expect(frames);
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
                server
                    .feed(Message::text(browser_event_frame(seq as Seq, json)))
                    .await
                    .unwrap();
            }
            server.flush().await.unwrap();
            let got = done.await.unwrap();
            let t = start.elapsed();
            assert_eq!((got.frames, got.bytes), (frames, bytes));
            t
        })
    }
}

/// One run of the WebSocket-only baseline: the same frames from memory.
fn raw_ws_only(fx: &Fixture) -> impl FnMut() -> Duration + '_ {
    let frames = fx.events.len();
    let bytes = fx.expected_bytes(0);
    let (mut server, counter) = fx.rt.block_on(async {
        let (server, client) = pair(false).await;
        (server, Counter::spawn(client))
    });
    move || {
        fx.rt.block_on(async {
            let start = Instant::now();
            let done = counter.expect(frames);
            for (seq, json) in &fx.events {
                server
                    .send(Message::text(browser_event_frame(*seq, json)))
                    .await
                    .unwrap();
            }
            let got = done.await.unwrap();
            let t = start.elapsed();
            assert_eq!((got.frames, got.bytes), (frames, bytes));
            t
        })
    }
}

/// The store's replay alone, no socket.
fn ours_read_only(fx: &Fixture) -> impl FnMut() -> Duration + '_ {
    let last = fx.last();
    move || {
        fx.rt.block_on(async {
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
            let t = start.elapsed();
            assert!(bytes > 0);
            t
        })
    }
}

/// A raw range scan alone, no socket.
fn raw_read_only(fx: &Fixture) -> impl FnMut() -> Duration + '_ {
    let conn = raw::reader(&fx.db);
    move || {
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
        let t = start.elapsed();
        assert!(bytes > 0);
        t
    }
}

/// Both paths under criterion, then interleaved for the ratio.
fn compare(
    g: &mut Group<'_>,
    name: &str,
    elements: u64,
    rounds: usize,
    ours: &mut dyn FnMut() -> Duration,
    raw: &mut dyn FnMut() -> Duration,
) {
    g.throughput(Throughput::Elements(elements));
    g.bench_function(format!("{name}/ours"), |b| {
        b.iter_custom(|i| repeat(i, ours))
    });
    g.bench_function(format!("{name}/raw"), |b| b.iter_custom(|i| repeat(i, raw)));
    interleaved(&format!("replay/{name}"), rounds, ours, raw);
}

fn replay(c: &mut Criterion) {
    let quick = quick();
    let n: u64 = if quick { 2_000 } else { 100_000 };
    let rounds = if quick { 1 } else { 15 };
    let fx = Fixture::new(n);
    let half = n / 2;
    let mut g = c.benchmark_group("replay");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));

    // The whole log, from SQLite.
    compare(
        &mut g,
        "sqlite",
        n,
        rounds,
        &mut ours(&fx, &fx.sqlite, 0),
        &mut raw_sqlite(&fx, 0),
    );
    // The same, against raw with batched socket writes.
    compare(
        &mut g,
        "sqlite_vs_batched",
        n,
        rounds,
        &mut ours(&fx, &fx.sqlite, 0),
        &mut raw_sqlite_batched(&fx, 0),
    );
    // The browser writer before it batched (a `send` per frame), against
    // the same baseline: the writer's share, in the same run.
    compare(
        &mut g,
        "sqlite_send_per_frame_writer_vs_batched",
        n,
        rounds,
        &mut ours_with(&fx, &fx.sqlite, 0, spawn_send_writer),
        &mut raw_sqlite_batched(&fx, 0),
    );
    // After N in the middle: the second half.
    compare(
        &mut g,
        "sqlite_after_half",
        n - half,
        rounds,
        &mut ours(&fx, &fx.sqlite, half),
        &mut raw_sqlite(&fx, half),
    );
    // The memory store, against the WebSocket alone (the same bytes from a
    // Vec, no store at all).
    compare(
        &mut g,
        "memory",
        n,
        rounds,
        &mut ours(&fx, &fx.memory, 0),
        &mut raw_ws_only(&fx),
    );
    // Where the time goes: the SQLite store's replay without a socket, and
    // the socket without a store, each against its raw part.
    compare(
        &mut g,
        "parts_sqlite_read",
        n,
        rounds,
        &mut ours_read_only(&fx),
        &mut raw_read_only(&fx),
    );
    compare(
        &mut g,
        "parts_ws_vs_sqlite_raw",
        n,
        rounds,
        &mut raw_ws_only(&fx),
        &mut raw_sqlite(&fx, 0),
    );
    g.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
