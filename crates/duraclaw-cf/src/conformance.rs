//! Durable Object harnesses for core's conformance suite (feature
//! `conformance`, wasm32 only), used by the conformance test worker.
//!
//! A Durable Object has exactly one database, its own, and core's SQL
//! cases use fixed table names, so a harness gives the object's database to
//! the first name it is asked for and refuses any other name. Every case of
//! the suite uses one name, so the test worker runs each case in a fresh
//! object: one name, one Durable Object. Sessions within a directory are
//! rows keyed by `session_id`, as in the SQLite backend.

use std::cell::RefCell;
use std::sync::Arc;

use async_trait::async_trait;
use duraclaw_core::conformance::{SqlHarness, StoreHarness};
use duraclaw_core::migrate::SqlConn;
use duraclaw_core::store::DynSessionDirectory;
use duraclaw_core::{Error, Result};
use worker::Storage;

use crate::{DoSqlConn, SqlConnDirectory};

/// The one database of a Durable Object, given to the first name asked for.
#[derive(Debug)]
struct OneDatabase {
    conn: DoSqlConn,
    name: RefCell<Option<String>>,
}

impl OneDatabase {
    fn new(storage: &Storage) -> Self {
        OneDatabase {
            conn: DoSqlConn::new(storage),
            name: RefCell::new(None),
        }
    }

    /// The connection, if `name` is the database's name or it has none yet.
    fn connect(&self, name: &str) -> Result<DoSqlConn> {
        let mut bound = self.name.borrow_mut();
        match bound.as_deref() {
            None => *bound = Some(name.to_owned()),
            Some(held) if held == name => {}
            Some(held) => {
                return Err(Error::Invalid(format!(
                    "this Durable Object's database is {held:?}; {name:?} needs a Durable Object of its own"
                )));
            }
        }
        Ok(self.conn.clone())
    }
}

/// [`StoreHarness`] over one Durable Object's SQL storage.
#[derive(Debug)]
pub struct DoStoreHarness {
    db: OneDatabase,
}

impl DoStoreHarness {
    /// The harness of the object owning `storage`.
    pub fn new(storage: &Storage) -> Self {
        DoStoreHarness {
            db: OneDatabase::new(storage),
        }
    }
}

#[async_trait(?Send)]
impl StoreHarness for DoStoreHarness {
    async fn directory(&self, name: &str) -> Result<DynSessionDirectory> {
        Ok(Arc::new(SqlConnDirectory::open(self.db.connect(name)?)?))
    }
}

/// [`SqlHarness`] over one Durable Object's SQL storage.
#[derive(Debug)]
pub struct DoSqlHarness {
    db: OneDatabase,
}

impl DoSqlHarness {
    /// The harness of the object owning `storage`.
    pub fn new(storage: &Storage) -> Self {
        DoSqlHarness {
            db: OneDatabase::new(storage),
        }
    }
}

impl SqlHarness for DoSqlHarness {
    fn connect(&self, name: &str) -> Result<Box<dyn SqlConn>> {
        Ok(Box::new(self.db.connect(name)?))
    }
}
