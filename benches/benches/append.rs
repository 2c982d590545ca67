//! Append: events into the SQLite store through the real paths.
//!
//! - `single/*`: one event per append, each awaited (its own commit):
//!   `SessionLog::append`, `SessionActor::ingest` of one gateway event
//!   (what a trickle of tokens costs), against a raw autocommit INSERT.
//! - `burst_10k/*`: 10,000 token deltas into a fresh session:
//!   `SessionActor::ingest` in batches of 1,024 (the most the orchestrator's
//!   link takes at once), 64 and 1, against one raw transaction inserting
//!   the same rows. Prints transactions per 1,000 deltas from
//!   `SqliteDirectory::stats()`.
//! - `concurrent_10x1000/log`: ten sessions each appending 1,000 deltas
//!   one at a time, at once: group commit across sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use duraclaw_benches::{interleaved, mix, quick, raw, repeat, runtime};
use duraclaw_core::backend::actor::{SessionActor, SessionLog};
use duraclaw_core::clock::ManualClock;
use duraclaw_core::store::{AppendBatch, NewEvent, SessionDirectory, SessionMeta};
use duraclaw_store::{SqliteDirectory, SqliteStats};
use tokio::runtime::Runtime;

const AT_MS: i64 = 1_700_000_000_000;

struct Fixture {
    rt: Runtime,
    _tmp: tempfile::TempDir,
    dir: SqliteDirectory,
    raw: rusqlite::Connection,
    next_id: Cell<u64>,
}

impl Fixture {
    fn new() -> Self {
        let rt = runtime();
        let tmp = tempfile::tempdir().unwrap();
        let ours = tmp.path().join("ours.db");
        let theirs = tmp.path().join("raw.db");
        let dir = rt.block_on(async {
            // The raw database gets the same schema, made by the store.
            drop(SqliteDirectory::open(&theirs).await.unwrap());
            SqliteDirectory::open(&ours).await.unwrap()
        });
        Fixture {
            rt,
            _tmp: tmp,
            dir,
            raw: raw::writer(&theirs),
            next_id: Cell::new(0),
        }
    }

    fn session_id(&self) -> String {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        format!("session-{n:06}")
    }

    /// A new session in the store, and its actor.
    fn actor(&self) -> SessionActor {
        let id = self.session_id();
        self.rt.block_on(async {
            let store = self
                .dir
                .create(SessionMeta::new(&id, "bench", AT_MS))
                .await
                .unwrap();
            SessionActor::open(store, ManualClock::new(AT_MS).shared())
                .await
                .unwrap()
        })
    }

    /// A new session row in the raw database.
    fn raw_session(&self) -> String {
        let id = self.session_id();
        self.raw
            .execute(
                "INSERT INTO sessions (session_id, owner, created_at_ms, updated_at_ms, meta_json) \
                 VALUES (?1, 'bench', 0, 0, '{}')",
                [&id],
            )
            .unwrap();
        id
    }
}

fn raw_insert(conn: &rusqlite::Connection, session: &str, seq: u64, e: &NewEvent) {
    conn.prepare_cached(
        "INSERT INTO events (session_id, seq, gseq, highest_gseq, at_ms, json) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .unwrap()
    .execute(rusqlite::params![
        session,
        seq as i64,
        e.gseq.map(|g| g as i64),
        e.gseq.unwrap_or(0) as i64,
        e.at_ms,
        &*e.json
    ])
    .unwrap();
}

fn delta_events(from: u64, to: u64) -> Vec<NewEvent> {
    (from..to)
        .map(|i| NewEvent::new(&mix::delta(i), Some(i + 1), AT_MS).unwrap())
        .collect()
}

/// Transactions and events written over a run, printed when dropped.
struct TxCount {
    name: &'static str,
    before: SqliteStats,
    tx: u64,
    events: u64,
    elapsed: Duration,
}

impl TxCount {
    fn new(name: &'static str) -> Self {
        TxCount {
            name,
            before: SqliteStats::default(),
            tx: 0,
            events: 0,
            elapsed: Duration::ZERO,
        }
    }
    fn start(&mut self, dir: &SqliteDirectory) {
        self.before = dir.stats();
    }
    fn stop(&mut self, dir: &SqliteDirectory, elapsed: Duration) {
        let after = dir.stats();
        assert_eq!(after.failed_transactions, self.before.failed_transactions);
        self.tx += after.transactions - self.before.transactions;
        self.events += after.events_written - self.before.events_written;
        self.elapsed += elapsed;
    }
}

impl Drop for TxCount {
    fn drop(&mut self) {
        if self.events > 0 {
            println!(
                "append/{}: {:.2} transactions per 1,000 events ({} transactions, {} events), {:.0} events/s",
                self.name,
                self.tx as f64 * 1000.0 / self.events as f64,
                self.tx,
                self.events,
                self.events as f64 / self.elapsed.as_secs_f64().max(1e-9),
            );
        }
    }
}

/// `n` single raw inserts, each its own (autocommit) transaction.
fn single_raw(fx: &Fixture) -> impl FnMut(u64) -> Duration + '_ {
    let session = fx.raw_session();
    let mut seq = 0u64;
    move |n| {
        let events = delta_events(seq, seq + n);
        let start = Instant::now();
        for e in &events {
            seq += 1;
            raw_insert(&fx.raw, &session, seq, e);
        }
        start.elapsed()
    }
}

/// `n` single-event `SessionLog::append`s, each awaited.
fn single_log<'a>(
    fx: &'a Fixture,
    count: &'a RefCell<TxCount>,
) -> impl FnMut(u64) -> Duration + 'a {
    let log: SessionLog = fx.actor().log().clone();
    let mut next = 0u64;
    move |n| {
        let events = delta_events(next, next + n);
        next += n;
        count.borrow_mut().start(&fx.dir);
        let elapsed = fx.rt.block_on(async {
            let start = Instant::now();
            for e in events {
                log.append(AppendBatch::events(vec![e])).await.unwrap();
            }
            start.elapsed()
        });
        count.borrow_mut().stop(&fx.dir, elapsed);
        elapsed
    }
}

/// `n` single-event `SessionActor::ingest`s, each awaited.
fn single_ingest<'a>(
    fx: &'a Fixture,
    count: &'a RefCell<TxCount>,
) -> impl FnMut(u64) -> Duration + 'a {
    let actor = fx.actor();
    let mut next = 0u64;
    move |n| {
        let deltas = mix::deltas(next, next + n);
        next += n;
        count.borrow_mut().start(&fx.dir);
        let elapsed = fx.rt.block_on(async {
            let start = Instant::now();
            for d in deltas {
                let out = actor.ingest(vec![d]).await.unwrap();
                assert_eq!(out.stored, 1);
            }
            start.elapsed()
        });
        count.borrow_mut().stop(&fx.dir, elapsed);
        elapsed
    }
}

fn single(g: &mut BenchmarkGroup<'_, WallTime>, fx: &Fixture, rounds: usize) {
    g.throughput(Throughput::Elements(1));
    let log_count = RefCell::new(TxCount::new("single/log"));
    let ingest_count = RefCell::new(TxCount::new("single/ingest"));
    let mut raw = single_raw(fx);
    let mut log = single_log(fx, &log_count);
    let mut ingest = single_ingest(fx, &ingest_count);
    g.bench_function("single/raw", |b| b.iter_custom(&mut raw));
    g.bench_function("single/log", |b| b.iter_custom(&mut log));
    g.bench_function("single/ingest", |b| b.iter_custom(&mut ingest));
    interleaved("append/single/log", rounds, &mut || log(200), &mut || {
        raw(200)
    });
    interleaved(
        "append/single/ingest",
        rounds,
        &mut || ingest(200),
        &mut || raw(200),
    );
}

/// One raw transaction inserting `n` deltas into a new session.
fn burst_raw(fx: &Fixture, n: u64) -> impl FnMut() -> Duration + '_ {
    let events = delta_events(0, n);
    move || {
        let session = fx.raw_session();
        let start = Instant::now();
        fx.raw.execute_batch("BEGIN IMMEDIATE").unwrap();
        for (i, e) in events.iter().enumerate() {
            raw_insert(&fx.raw, &session, i as u64 + 1, e);
        }
        fx.raw.execute_batch("COMMIT").unwrap();
        start.elapsed()
    }
}

/// `n` deltas ingested into a new session in batches of `batch`.
fn burst_ingest<'a>(
    fx: &'a Fixture,
    n: u64,
    batch: usize,
    count: &'a RefCell<TxCount>,
) -> impl FnMut() -> Duration + 'a {
    move || {
        let actor = fx.actor();
        let deltas = mix::deltas(0, n);
        let batches: Vec<Vec<_>> = deltas.chunks(batch).map(<[_]>::to_vec).collect();
        count.borrow_mut().start(&fx.dir);
        let elapsed = fx.rt.block_on(async {
            let start = Instant::now();
            for b in batches {
                actor.ingest(b).await.unwrap();
            }
            start.elapsed()
        });
        count.borrow_mut().stop(&fx.dir, elapsed);
        elapsed
    }
}

fn burst(g: &mut BenchmarkGroup<'_, WallTime>, fx: &Fixture, n: u64, rounds: usize) {
    g.throughput(Throughput::Elements(n));
    let mut raw = burst_raw(fx, n);
    g.bench_function("burst_10k/raw_bulk", |b| {
        b.iter_custom(|i| repeat(i, &mut raw))
    });
    for (name, batch) in [
        ("burst_10k/ingest_1024", 1024usize),
        ("burst_10k/ingest_64", 64),
        ("burst_10k/ingest_1", 1),
    ] {
        let count = RefCell::new(TxCount::new(name));
        let mut ours = burst_ingest(fx, n, batch, &count);
        g.bench_function(name, |b| b.iter_custom(|i| repeat(i, &mut ours)));
        if batch > 1 {
            // Throughput ratio: raw time / our time.
            let r = interleaved(
                &format!("append/{name} (time)"),
                rounds,
                &mut ours,
                &mut raw,
            );
            println!(
                "append/{name}: {:.0}% of raw bulk-insert throughput (interleaved median)",
                100.0 / r.median
            );
        }
    }
}

fn concurrent(g: &mut BenchmarkGroup<'_, WallTime>, fx: &Fixture, per_session: u64) {
    const SESSIONS: u64 = 10;
    g.throughput(Throughput::Elements(SESSIONS * per_session));
    let mut count = TxCount::new("concurrent_10x1000/log");
    g.bench_function("concurrent_10x1000/log", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let logs: Vec<SessionLog> =
                    (0..SESSIONS).map(|_| fx.actor().log().clone()).collect();
                count.start(&fx.dir);
                let elapsed = fx.rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = logs
                        .into_iter()
                        .map(|log| {
                            let events = delta_events(0, per_session);
                            tokio::spawn(async move {
                                for e in events {
                                    log.append(AppendBatch::events(vec![e])).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    start.elapsed()
                });
                count.stop(&fx.dir, elapsed);
                total += elapsed;
            }
            total
        })
    });
}

fn append(c: &mut Criterion) {
    let quick = quick();
    let fx = Fixture::new();
    let mut g = c.benchmark_group("append");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let rounds = if quick { 1 } else { 15 };
    single(&mut g, &fx, rounds);
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    burst(&mut g, &fx, if quick { 500 } else { 10_000 }, rounds);
    concurrent(&mut g, &fx, if quick { 50 } else { 1_000 });
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
