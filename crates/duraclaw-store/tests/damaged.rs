//! Damaged and hostile input: files that are not databases, databases from
//! a newer version, corrupt rows, oversized events. Every case must give a
//! typed error that says what failed, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;

use duraclaw_core::Error;
use duraclaw_core::protocol::{Event, MAX_EVENT_BYTES, ToolResult};
use duraclaw_core::store::{AppendBatch, NewEvent, SessionDirectory, SessionMeta};
use duraclaw_store::{MemoryDirectory, SqliteDirectory};
use serde_json::json;

const T0: i64 = 1_700_000_000_000;

fn expect_storage_error_naming(result: duraclaw_core::Result<SqliteDirectory>, path: &Path) {
    match result {
        Err(e @ Error::Storage { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "the error names the file: {msg}"
            );
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    for (name, bytes) in [
        ("garbage.db", garbage.as_slice()),
        (
            "text.db",
            b"this is not a database, it is a grocery list\n".as_slice(),
        ),
        (
            "almost.db",
            b"SQLite format 3\0 but then nothing sensible".as_slice(),
        ),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        expect_storage_error_naming(SqliteDirectory::open(&path).await, &path);
        // The file is left as it was.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}

#[tokio::test]
async fn a_directory_or_a_missing_parent_instead_of_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    expect_storage_error_naming(SqliteDirectory::open(tmp.path()).await, tmp.path());
    let missing = tmp.path().join("no/such/dir/sessions.db");
    expect_storage_error_naming(SqliteDirectory::open(&missing).await, &missing);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sessions.db");
    drop(SqliteDirectory::open(&path).await.unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE duraclaw_meta SET int_value = 99 WHERE key = 'schema'",
        [],
    )
    .unwrap();
    drop(raw);
    match SqliteDirectory::open(&path).await {
        Err(e @ Error::SchemaTooNew { found: 99, known }) => {
            assert_eq!(known, SqliteDirectory::schema_version());
            assert!(e.to_string().contains("newer"), "{e}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn a_damaged_schema_row_is_a_storage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sessions.db");
    drop(SqliteDirectory::open(&path).await.unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE duraclaw_meta SET int_value = -3 WHERE key = 'schema'",
        [],
    )
    .unwrap();
    drop(raw);
    expect_storage_error_naming(SqliteDirectory::open(&path).await, &path);
}

#[tokio::test]
async fn corrupt_rows_give_errors_that_name_them() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sessions.db");
    let dir = SqliteDirectory::open(&path).await.unwrap();
    let store = dir
        .create(SessionMeta::new("s1", "alice", T0))
        .await
        .unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "UPDATE sessions SET meta_json = '{not json' WHERE session_id = 's1';
         INSERT INTO events (session_id, seq, gseq, highest_gseq, at_ms, json)
             VALUES ('s1', 1, NULL, 0, 0, 'not json');
         INSERT INTO events (session_id, seq, gseq, highest_gseq, at_ms, json)
             VALUES ('s1', 2, -7, -7, 0, '{}');
         INSERT INTO questions (session_id, question_id, asked_seq, question_json)
             VALUES ('s1', 'q-bad', 1, '[1, 2');",
    )
    .unwrap();

    let err = store.meta().await.unwrap_err();
    assert!(
        matches!(err, Error::Storage { .. }) && err.to_string().contains("\"s1\""),
        "{err}"
    );
    let err = dir.list("alice").await.unwrap_err();
    assert!(err.to_string().contains("\"s1\""), "{err}");
    // The event text is returned as stored; decoding it is the caller's step.
    let first = store.read_after(0, 1).await.unwrap();
    assert!(matches!(first[0].event(), Err(Error::Decode { .. })));
    let err = store.read_after(1, 1).await.unwrap_err();
    assert!(err.to_string().contains("-7"), "{err}");
    let err = store.questions(false).await.unwrap_err();
    assert!(err.to_string().contains("q-bad"), "{err}");
}

/// A tool result whose JSON text is exactly `len` bytes.
fn tool_result_of_len(len: usize) -> Event {
    let make = |n: usize| {
        Event::ToolResult(ToolResult {
            tool_use_id: "toolu_1".into(),
            content: json!("a".repeat(n)),
            is_error: false,
        })
    };
    let overhead = make(0).to_json().unwrap().len();
    make(len - overhead)
}

#[tokio::test]
async fn oversized_events_are_refused_and_near_limit_ones_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let sqlite = SqliteDirectory::open(tmp.path().join("sessions.db"))
        .await
        .unwrap();
    let memory = MemoryDirectory::new();
    let dirs: [&dyn SessionDirectory; 2] = [&sqlite, &memory];

    // The core refuses to encode an event over the limit.
    match NewEvent::new(&tool_result_of_len(MAX_EVENT_BYTES + 1), None, T0) {
        Err(Error::TooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }

    for dir in dirs {
        let store = dir
            .create(SessionMeta::new("big", "alice", T0))
            .await
            .unwrap();
        let near = tool_result_of_len(MAX_EVENT_BYTES - 1);
        let e = NewEvent::new(&near, Some(1), T0).unwrap();
        assert_eq!(e.json.len(), MAX_EVENT_BYTES - 1);
        store
            .append(AppendBatch::events(vec![e.clone()]))
            .await
            .unwrap();
        let back = store.read_after(0, 1).await.unwrap();
        assert_eq!(back[0].json, e.json);
        assert_eq!(back[0].event().unwrap(), near);

        // A hand-built event over the limit is refused by the store too,
        // with the rest of its batch.
        let mut over = NewEvent::new(&tool_result_of_len(200), Some(3), T0).unwrap();
        over.json = Arc::from("x".repeat(MAX_EVENT_BYTES + 1));
        let small = NewEvent::new(&tool_result_of_len(200), Some(2), T0).unwrap();
        match store.append(AppendBatch::events(vec![small, over])).await {
            Err(Error::TooLarge { size, .. }) => assert_eq!(size, MAX_EVENT_BYTES + 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let head = store.head().await.unwrap();
        assert_eq!((head.last_seq, head.highest_gseq), (1, 1));
    }
}
