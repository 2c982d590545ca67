//! The schema's second version: a database written by the first keeps every
//! event and its log heads, on both SQL stores (the SQLite directory and
//! the store over a synchronous SQL connection, which is what a Durable
//! Object runs); and an append of one small event writes two pages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use duraclaw_core::backend::migrate::{Migrations, SqlConn, SqlValue};
use duraclaw_core::protocol::{Event, UserMessage};
use duraclaw_core::store::{
    AppendBatch, LogHead, NewEvent, SessionDirectory, SessionMeta, SessionStore,
};
use duraclaw_store::schema::MIGRATIONS;
use duraclaw_store::{SqlConnDirectory, SqliteConn, SqliteDirectory};

const T0: i64 = 1_700_000_000_000;

/// The sessions of the version-1 database: id, each event's gseq, and the
/// head version 1 kept in the sessions row.
const SESSIONS: &[(&str, &[Option<u64>], LogHead)] = &[
    // Gateway events, then local ones after the last: the highest gseq is
    // not the last event's.
    (
        "mixed",
        &[Some(1), Some(2), None, Some(5), None, None],
        LogHead {
            last_seq: 6,
            highest_gseq: 5,
        },
    ),
    (
        "local",
        &[None, None, None],
        LogHead {
            last_seq: 3,
            highest_gseq: 0,
        },
    ),
    (
        "empty",
        &[],
        LogHead {
            last_seq: 0,
            highest_gseq: 0,
        },
    ),
];

fn json_of(session: &str, seq: usize) -> String {
    format!(r#"{{"type":"notice","level":"info","text":"{session} event {seq}"}}"#)
}

/// A database at schema version 1 holding [`SESSIONS`], written as version
/// 1 wrote them (the head in the sessions row).
fn version_1_database(path: &Path) {
    let mut conn = SqliteConn::open(path).unwrap();
    let report = Migrations::new(&MIGRATIONS[..1])
        .unwrap()
        .apply(&mut conn)
        .unwrap();
    assert_eq!(report.to, 1);
    for (id, gseqs, head) in SESSIONS {
        conn.execute(
            "INSERT INTO sessions (session_id, owner, created_at_ms, updated_at_ms, \
             last_seq, highest_gseq, meta_json) VALUES (?1, 'alice', ?2, ?2, ?3, ?4, ?5)",
            &[
                SqlValue::Text((*id).into()),
                SqlValue::Integer(T0),
                SqlValue::Integer(head.last_seq as i64),
                SqlValue::Integer(head.highest_gseq as i64),
                SqlValue::Text(serde_json::to_string(&SessionMeta::new(*id, "alice", T0)).unwrap()),
            ],
        )
        .unwrap();
        for (i, gseq) in gseqs.iter().enumerate() {
            conn.execute(
                "INSERT INTO events (session_id, seq, gseq, at_ms, json) VALUES (?1, ?2, ?3, ?4, ?5)",
                &[
                    SqlValue::Text((*id).into()),
                    SqlValue::Integer(i as i64 + 1),
                    gseq.map_or(SqlValue::Null, |g| SqlValue::Integer(g as i64)),
                    SqlValue::Integer(T0),
                    SqlValue::Text(json_of(id, i + 1)),
                ],
            )
            .unwrap();
        }
    }
}

/// Every session's head and events as version 1 had them, and the log goes
/// on from there: a gateway event at or below the head is a duplicate, the
/// next is stored after the last seq.
async fn check_upgraded(dir: &dyn SessionDirectory) {
    for (id, gseqs, head) in SESSIONS {
        let store = dir.open(id).await.unwrap();
        assert_eq!(store.head().await.unwrap(), *head, "the head of {id}");
        let events = store.read_after(0, 100).await.unwrap();
        assert_eq!(events.len(), gseqs.len(), "the events of {id}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.gseq, gseqs[i]);
            assert_eq!(&*e.json, json_of(id, i + 1));
        }
        let dup = NewEvent::new(&message("dup"), Some(head.highest_gseq.max(1)), T0).unwrap();
        let next = NewEvent::new(&message("next"), Some(head.highest_gseq + 7), T0).unwrap();
        let out = store
            .append(AppendBatch::events(vec![dup, next]))
            .await
            .unwrap();
        assert_eq!(out.duplicates, usize::from(head.highest_gseq > 0), "{id}");
        let stored: Vec<_> = out.stored.iter().map(|e| e.seq).collect();
        let expect: Vec<u64> = if head.highest_gseq > 0 {
            vec![head.last_seq + 1]
        } else {
            vec![head.last_seq + 1, head.last_seq + 2]
        };
        assert_eq!(stored, expect, "{id}");
        let after = store.head().await.unwrap();
        assert_eq!(after.highest_gseq, head.highest_gseq + 7, "{id}");
        assert_eq!(after.last_seq, *expect.last().unwrap(), "{id}");
    }
    assert!(dir.open("never-created").await.is_err());
}

fn message(text: &str) -> Event {
    Event::UserMessage(UserMessage {
        text: text.into(),
        by: None,
        queued: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_directory_upgrades_a_version_1_database() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sessions.db");
    version_1_database(&path);
    let dir = SqliteDirectory::open(&path).await.unwrap();
    // The rebuild went to the WAL; it was copied into the database and the
    // WAL truncated, not left behind the size of the log.
    assert_eq!(wal_frames(&path), 0);
    check_upgraded(&dir).await;
}

#[tokio::test]
async fn the_sql_connection_store_upgrades_a_version_1_database() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sessions.db");
    version_1_database(&path);
    let dir = SqlConnDirectory::open(SqliteConn::open(&path).unwrap()).unwrap();
    assert_eq!(dir.migration_report().applied, vec![2, 3]);
    check_upgraded(&dir).await;
}

/// The write-ahead log's size in pages of 4 KiB (and their frame headers).
fn wal_frames(db: &Path) -> u64 {
    let wal = db.with_file_name(format!("{}-wal", db.file_name().unwrap().to_string_lossy()));
    let len = std::fs::metadata(wal).map_or(0, |m| m.len());
    len.saturating_sub(32) / (4096 + 24)
}

/// What one small append adds to the write-ahead log, after a first one
/// (the session's pages exist): two pages, the event's row and its key.
/// Version 1 wrote three (and the head in the sessions row).
async fn frames_per_small_append(store: &dyn SessionStore, db: &Path) -> u64 {
    let one = |t: &str| AppendBatch::events(vec![NewEvent::new(&message(t), None, T0).unwrap()]);
    store.append(one("first")).await.unwrap();
    let before = wal_frames(db);
    store.append(one("second")).await.unwrap();
    wal_frames(db) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_small_append_writes_two_pages_in_the_sqlite_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sessions.db");
    let dir = SqliteDirectory::open(&path).await.unwrap();
    let store = dir
        .create(SessionMeta::new("s", "alice", T0))
        .await
        .unwrap();
    assert_eq!(frames_per_small_append(&*store, &path).await, 2);
}

#[tokio::test]
async fn one_small_append_writes_two_pages_over_a_sql_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sessions.db");
    let dir = SqlConnDirectory::open(SqliteConn::open(&path).unwrap()).unwrap();
    let store = dir
        .create(SessionMeta::new("s", "alice", T0))
        .await
        .unwrap();
    assert_eq!(frames_per_small_append(&*store, &path).await, 2);
}
