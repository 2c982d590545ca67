//! The store over a synchronous SQL connection, natively over SQLite through
//! the [`SqlConn`](duraclaw_core::backend::migrate::SqlConn) interface a Durable
//! Object's SQL storage implements too: core's conformance suite plus what is
//! particular to DO SQL. The Durable Object itself runs the suite in
//! `duraclaw-cf`'s `do_conformance.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use duraclaw_core::Error;
use duraclaw_core::conformance::StoreHarness;
use duraclaw_core::protocol::{Event, UserMessage};
use duraclaw_core::store::{
    AppendBatch, DynSessionDirectory, NewEvent, SessionDirectory, SessionMeta,
};
use duraclaw_store::{SqlConnDirectory, SqliteConn};

/// One SQLite file per name, in a temporary directory removed at the end.
struct SqliteFiles {
    root: tempfile::TempDir,
}

impl SqliteFiles {
    fn new() -> Self {
        SqliteFiles {
            root: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.db"))
    }
}

#[async_trait]
impl StoreHarness for SqliteFiles {
    async fn directory(&self, name: &str) -> duraclaw_core::Result<DynSessionDirectory> {
        let conn = SqliteConn::open(self.path(name))?;
        Ok(Arc::new(SqlConnDirectory::open(conn)?))
    }
}

mod conformance {
    duraclaw_core::store_conformance_tests!(super::SqliteFiles::new());
}

fn hello(at_ms: i64) -> NewEvent {
    let e = Event::UserMessage(UserMessage {
        text: "hello".into(),
        by: None,
        queued: false,
    });
    NewEvent::new(&e, None, at_ms).unwrap()
}

/// DO SQL hands integers to JavaScript as doubles: one it cannot hold
/// exactly is refused, and the step leaves nothing behind.
#[tokio::test]
async fn integers_beyond_2_pow_53_are_refused_whole() {
    let dir = SqlConnDirectory::open(SqliteConn::open_in_memory().unwrap()).unwrap();
    let store = dir.create(SessionMeta::new("s", "alice", 0)).await.unwrap();
    let err = store
        .append(AppendBatch::events(vec![hello(1), hello(1 << 53)]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("2^53") || err.to_string().contains("9007199254740991"),
        "{err}"
    );
    assert_eq!(store.head().await.unwrap().last_seq, 0);
    assert!(store.read_after(0, 10).await.unwrap().is_empty());
    let ok = store
        .append(AppendBatch::events(vec![hello((1 << 53) - 1)]))
        .await
        .unwrap();
    assert_eq!(ok.stored[0].seq, 1);
    assert!(store.read_after(u64::MAX, 10).await.unwrap().is_empty());
    let mut meta = store.meta().await.unwrap();
    meta.updated_at_ms = i64::MIN;
    assert!(store.put_meta(&meta).await.is_err());
}

/// Opening twice applies the schema once, and reports what it did.
#[tokio::test]
async fn reopening_migrates_once() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.db");
    let first = SqlConnDirectory::open(SqliteConn::open(&path).unwrap()).unwrap();
    assert_eq!(first.migration_report().applied, vec![1, 2, 3]);
    let again = SqlConnDirectory::open(SqliteConn::open(&path).unwrap()).unwrap();
    assert!(again.migration_report().applied.is_empty());
    assert_eq!(
        again.migration_report().to,
        SqlConnDirectory::<SqliteConn>::schema_version()
    );
}
