//! The shared conformance suite of `duraclaw-core`, run against the memory
//! and SQLite backends, and its migration suite against [`SqliteConn`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::backend::migrate::SqlConn;
use duraclaw_core::conformance::{SqlHarness, StoreHarness};
use duraclaw_core::store::DynSessionDirectory;
use duraclaw_store::{MemoryDirectory, SqliteConn, SqliteDirectory};

/// Memory directories by name; the same name gives a clone sharing the data.
#[derive(Default)]
struct MemoryHarness {
    dirs: Mutex<HashMap<String, MemoryDirectory>>,
}

#[async_trait]
impl StoreHarness for MemoryHarness {
    async fn directory(&self, name: &str) -> Result<DynSessionDirectory> {
        let mut dirs = self.dirs.lock().unwrap();
        Ok(Arc::new(dirs.entry(name.to_owned()).or_default().clone()))
    }
}

/// One database file per name in a temporary directory removed at the end.
struct SqliteHarness {
    root: tempfile::TempDir,
}

impl SqliteHarness {
    fn new() -> Self {
        SqliteHarness {
            root: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.db"))
    }
}

#[async_trait]
impl StoreHarness for SqliteHarness {
    async fn directory(&self, name: &str) -> Result<DynSessionDirectory> {
        Ok(Arc::new(SqliteDirectory::open(self.path(name)).await?))
    }
}

impl SqlHarness for SqliteHarness {
    fn connect(&self, name: &str) -> Result<Box<dyn SqlConn>> {
        Ok(Box::new(SqliteConn::open(self.path(name))?))
    }
}

mod memory {
    duraclaw_core::store_conformance_tests!(super::MemoryHarness::default());
}

mod sqlite {
    duraclaw_core::store_conformance_tests!(super::SqliteHarness::new());
}

mod sqlite_migrations {
    duraclaw_core::sql_conformance_tests!(super::SqliteHarness::new());
}
