//! Durable Object harnesses for core's conformance suite (feature
//! `conformance`, wasm32 only), used by the conformance test worker.
//!
//! A Durable Object has exactly one database, its own, and core's SQL
//! cases use fixed table names, so a harness gives the object's database to
//! the first name it is asked for and refuses any other name. Every case of
//! the suite uses one name, so the test worker runs each case in a fresh
//! object: one name, one Durable Object. Sessions within a directory are
//! rows keyed by `session_id`, as in the SQLite backend.
//!
//! [`DO_CASES`] are checks particular to [`DoSqlConn`]: nested transactions
//! and the integer range of DO SQL.

use std::cell::RefCell;
use std::sync::Arc;

use async_trait::async_trait;
use duraclaw_core::backend::migrate::{SqlConn, SqlValue};
use duraclaw_core::conformance::{CaseError, CaseResult, SqlHarness, StoreHarness};
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

/// The Durable Object cases, by name.
pub const DO_CASES: &[&str] = &[
    "nested_transaction_rolls_back_alone",
    "integers_round_trip_up_to_2_pow_53",
];

/// Runs one Durable Object case by name on the object owning `storage`
/// (a fresh one: the cases create fixed tables).
pub fn run_do_case(name: &str, storage: &Storage) -> CaseResult {
    let mut conn = DoSqlConn::new(storage);
    match name {
        "nested_transaction_rolls_back_alone" => nested_transaction_rolls_back_alone(&mut conn),
        "integers_round_trip_up_to_2_pow_53" => integers_round_trip_up_to_2_pow_53(&mut conn),
        other => Err(CaseError(format!("no Durable Object case named {other:?}"))),
    }
}

fn ints(conn: &mut DoSqlConn, sql: &str) -> std::result::Result<Vec<i64>, CaseError> {
    conn.query(sql, &[])?
        .iter()
        .map(|row| match row.first() {
            Some(SqlValue::Integer(i)) => Ok(*i),
            other => Err(CaseError(format!("{sql}: {other:?} is not an integer"))),
        })
        .collect()
}

fn nested_transaction_rolls_back_alone(conn: &mut DoSqlConn) -> CaseResult {
    conn.execute_batch("CREATE TABLE nested (x INTEGER)")?;
    let mut inner_failed = None;
    conn.transaction(&mut |tx| {
        tx.execute("INSERT INTO nested VALUES (1)", &[])?;
        inner_failed = Some(
            tx.transaction(&mut |tx| {
                tx.execute("INSERT INTO nested VALUES (2)", &[])?;
                Err(Error::Invalid("the inner body fails".into()))
            })
            .is_err(),
        );
        tx.execute("INSERT INTO nested VALUES (3)", &[])
    })?;
    if inner_failed != Some(true) {
        return Err(CaseError(format!(
            "the failing inner transaction reported {inner_failed:?}"
        )));
    }
    let xs = ints(conn, "SELECT x FROM nested ORDER BY x")?;
    if xs != [1, 3] {
        return Err(CaseError(format!("rows after the nested rollback: {xs:?}")));
    }
    // An outer failure rolls back everything, the committed inner part too.
    let outer = conn.transaction(&mut |tx| {
        tx.execute("INSERT INTO nested VALUES (4)", &[])?;
        tx.transaction(&mut |tx| tx.execute("INSERT INTO nested VALUES (5)", &[]))?;
        Err(Error::Invalid("the outer body fails".into()))
    });
    let xs = ints(conn, "SELECT x FROM nested ORDER BY x")?;
    if outer.is_ok() || xs != [1, 3] {
        return Err(CaseError(format!(
            "after a failed outer transaction ({outer:?}): {xs:?}"
        )));
    }
    Ok(())
}

fn integers_round_trip_up_to_2_pow_53(conn: &mut DoSqlConn) -> CaseResult {
    const MAX: i64 = (1 << 53) - 1;
    conn.execute_batch("CREATE TABLE numbers (x INTEGER)")?;
    for x in [0, 1, -1, MAX, -MAX] {
        conn.execute("INSERT INTO numbers VALUES (?1)", &[SqlValue::Integer(x)])?;
    }
    let xs = ints(conn, "SELECT x FROM numbers ORDER BY x")?;
    if xs != [-MAX, -1, 0, 1, MAX] {
        return Err(CaseError(format!("read back {xs:?}")));
    }
    match conn.execute(
        "INSERT INTO numbers VALUES (?1)",
        &[SqlValue::Integer(MAX + 1)],
    ) {
        Err(Error::Invalid(_)) => {}
        other => return Err(CaseError(format!("binding 2^53 gave {other:?}"))),
    }
    // A value SQLite computes beyond 2^53 is refused on reading, not rounded.
    match conn.query("SELECT 9007199254740993", &[]) {
        Err(Error::Storage { .. }) => Ok(()),
        other => Err(CaseError(format!("reading 2^53 + 1 gave {other:?}"))),
    }
}
