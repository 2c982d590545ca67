//! Migrations: the check every wake runs, and a fresh database's setup.
//!
//! - `wake_check/*`: `Migrations::apply` on an up-to-date database (nothing
//!   to do: it reads the one version row and compares digests), with the
//!   list built once (`ours`) or built on every wake as the SQLite store
//!   does (`ours_with_new`), against a raw read of the same row with a
//!   cached statement and against `PRAGMA user_version`.
//! - `fresh_10/*`: ten migrations applied to a new database file, against
//!   raw rusqlite running the same SQL, one transaction per migration with
//!   a `user_version` bump.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use duraclaw_benches::{interleaved, raw};
use duraclaw_core::backend::migrate::{Migration, Migrations};
use duraclaw_store::SqliteConn;

/// Ten migrations of the kind a session database grows through.
const TEN: [Migration; 10] = [
    Migration {
        version: 1,
        name: "sessions and events",
        sql: "CREATE TABLE sessions (session_id TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, \
              created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, \
              last_seq INTEGER NOT NULL DEFAULT 0, meta_json TEXT NOT NULL); \
              CREATE INDEX sessions_by_owner ON sessions (owner, updated_at_ms DESC); \
              CREATE TABLE events (session_id TEXT NOT NULL REFERENCES sessions (session_id), \
              seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, json TEXT NOT NULL, \
              PRIMARY KEY (session_id, seq))",
    },
    Migration {
        version: 2,
        name: "gseq",
        sql: "ALTER TABLE events ADD COLUMN gseq INTEGER; \
              ALTER TABLE sessions ADD COLUMN highest_gseq INTEGER NOT NULL DEFAULT 0",
    },
    Migration {
        version: 3,
        name: "questions",
        sql: "CREATE TABLE questions (session_id TEXT NOT NULL, question_id TEXT NOT NULL, \
              asked_seq INTEGER NOT NULL, question_json TEXT NOT NULL, resolution_json TEXT, \
              PRIMARY KEY (session_id, question_id))",
    },
    Migration {
        version: 4,
        name: "questions in order",
        sql: "CREATE INDEX questions_in_order ON questions (session_id, asked_seq)",
    },
    Migration {
        version: 5,
        name: "commands",
        sql: "CREATE TABLE commands (session_id TEXT NOT NULL, command_id TEXT NOT NULL, \
              forward TEXT, at_ms INTEGER NOT NULL, forwarded INTEGER NOT NULL DEFAULT 0, \
              PRIMARY KEY (session_id, command_id))",
    },
    Migration {
        version: 6,
        name: "outbox index",
        sql: "CREATE INDEX commands_outbox ON commands (session_id) \
              WHERE forward IS NOT NULL AND forwarded = 0",
    },
    Migration {
        version: 7,
        name: "users",
        sql: "CREATE TABLE users (name TEXT NOT NULL PRIMARY KEY, hash TEXT NOT NULL, \
              created_at_ms INTEGER NOT NULL)",
    },
    Migration {
        version: 8,
        name: "login tokens",
        sql: "CREATE TABLE tokens (hash TEXT NOT NULL PRIMARY KEY, user TEXT NOT NULL \
              REFERENCES users (name), expires_at_ms INTEGER NOT NULL); \
              CREATE INDEX tokens_by_user ON tokens (user)",
    },
    Migration {
        version: 9,
        name: "audit",
        sql: "CREATE TABLE audit (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, \
              who TEXT NOT NULL, what TEXT NOT NULL, at_ms INTEGER NOT NULL); \
              CREATE INDEX audit_by_session ON audit (session_id, at_ms)",
    },
    Migration {
        version: 10,
        name: "event kinds",
        sql: "ALTER TABLE events ADD COLUMN kind TEXT; \
              CREATE INDEX events_by_kind ON events (session_id, kind) WHERE kind IS NOT NULL",
    },
];

fn migrations(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("current.db");
    let list = Migrations::new(&TEN).unwrap();
    let mut conn = SqliteConn::open(&path).unwrap();
    assert_eq!(list.apply(&mut conn).unwrap().applied.len(), 10);
    let mut conn_b = SqliteConn::open(&path).unwrap();
    let rawc = raw::writer(&path);
    rawc.pragma_update(None, "user_version", 10).unwrap();

    let mut g = c.benchmark_group("migrations");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("wake_check/ours", |b| {
        b.iter(|| {
            let report = list.apply(&mut conn).unwrap();
            assert!(report.applied.is_empty());
            report.to
        })
    });
    g.bench_function("wake_check/ours_with_new", |b| {
        b.iter(|| {
            let report = Migrations::new(&TEN).unwrap().apply(&mut conn).unwrap();
            assert!(report.applied.is_empty());
            report.to
        })
    });
    g.bench_function("wake_check/raw_one_row", |b| {
        b.iter(|| {
            let (version, digest): (i64, String) = rawc
                .prepare_cached(
                    "SELECT int_value, text_value FROM duraclaw_meta WHERE key = 'schema'",
                )
                .unwrap()
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            assert_eq!(version, 10);
            (version, digest)
        })
    });
    g.bench_function("wake_check/raw_user_version", |b| {
        b.iter(|| {
            let version: i64 = rawc
                .prepare_cached("PRAGMA user_version")
                .unwrap()
                .query_row([], |r| r.get(0))
                .unwrap();
            assert_eq!(version, 10);
            version
        })
    });

    g.sample_size(20).measurement_time(Duration::from_secs(6));
    g.bench_function("fresh_10/ours", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let conn = SqliteConn::open(dir.path().join("fresh.db")).unwrap();
                (dir, conn)
            },
            |(dir, mut conn)| {
                assert_eq!(list.apply(&mut conn).unwrap().applied.len(), 10);
                (dir, conn)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("fresh_10/raw", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let conn = raw::writer(&dir.path().join("fresh.db"));
                (dir, conn)
            },
            |(dir, conn)| {
                raw_ten(&conn);
                (dir, conn)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // Interleaved ratios: 1,000 wake checks per run; one fresh database per run.
    let rounds = if duraclaw_benches::quick() { 1 } else { 31 };
    let check = |n: usize, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed()
    };
    let mut ours = || {
        assert!(list.apply(&mut conn).unwrap().applied.is_empty());
    };
    let mut ours_with_new = || {
        let m = Migrations::new(&TEN).unwrap();
        assert!(m.apply(&mut conn_b).unwrap().applied.is_empty());
    };
    let mut one_row = || {
        let (v, _d): (i64, String) = rawc
            .prepare_cached("SELECT int_value, text_value FROM duraclaw_meta WHERE key = 'schema'")
            .unwrap()
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(v, 10);
    };
    let mut user_version = || {
        let v: i64 = rawc
            .prepare_cached("PRAGMA user_version")
            .unwrap()
            .query_row([], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 10);
    };
    let n = 1000;
    interleaved(
        "migrations/wake_check vs one-row read",
        rounds,
        &mut || check(n, &mut ours),
        &mut || check(n, &mut one_row),
    );
    interleaved(
        "migrations/wake_check (list built each wake) vs one-row read",
        rounds,
        &mut || check(n, &mut ours_with_new),
        &mut || check(n, &mut one_row),
    );
    interleaved(
        "migrations/wake_check vs PRAGMA user_version",
        rounds,
        &mut || check(n, &mut ours),
        &mut || check(n, &mut user_version),
    );
    interleaved(
        "migrations/fresh_10",
        rounds.min(15),
        &mut || {
            let dir = tempfile::tempdir().unwrap();
            let mut conn = SqliteConn::open(dir.path().join("fresh.db")).unwrap();
            let start = Instant::now();
            assert_eq!(list.apply(&mut conn).unwrap().applied.len(), 10);
            start.elapsed()
        },
        &mut || {
            let dir = tempfile::tempdir().unwrap();
            let conn = raw::writer(&dir.path().join("fresh.db"));
            let start = Instant::now();
            raw_ten(&conn);
            start.elapsed()
        },
    );
}

/// The ten migrations, raw: one transaction each with a `user_version` bump.
fn raw_ten(conn: &rusqlite::Connection) {
    for m in &TEN {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {}; PRAGMA user_version = {}; COMMIT",
            m.sql, m.version
        ))
        .unwrap();
    }
}

criterion_group!(benches, migrations);
criterion_main!(benches);
