//! [`DoSqlConn`]: a Durable Object's SQLite seen through [`SqlConn`], so
//! that core's [`Migrations`](duraclaw_core::backend::migrate::Migrations) and the
//! store steps run on it.
//!
//! DO SQLite refuses `BEGIN`, `SAVEPOINT` and `PRAGMA user_version`; a
//! transaction is `storage.transactionSync(fn)`, which the `worker` crate
//! does not wrap. It calls `fn` synchronously and rolls every SQL write
//! back when `fn` throws, so [`SqlConn::transaction`] passes the borrowed
//! body as a [`ScopedClosure`]: valid only while `transactionSync` runs,
//! which is exactly when it is called, and invalidated when dropped.

use duraclaw_core::backend::migrate::{SqlConn, SqlValue};
use duraclaw_core::{Error, Result};
use wasm_bindgen::closure::ScopedClosure;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::{Function, Reflect};
use worker::{SqlCursor, SqlStorage, SqlStorageValue, Storage};

/// The backend name in [`Error::Storage`].
const BACKEND: &str = "do-sql";

thread_local! {
    /// Statements and transactions run through every [`DoSqlConn`] of this
    /// isolate: the bench worker reports them per event.
    static COUNTS: std::cell::Cell<SqlCounts> = const { std::cell::Cell::new(SqlCounts { statements: 0, transactions: 0 }) };
}

/// How many statements and transactions the [`DoSqlConn`]s of this isolate
/// have run ([`sql_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SqlCounts {
    /// Statements run (`exec` calls).
    pub statements: u64,
    /// `transactionSync` calls.
    pub transactions: u64,
}

/// The statements and transactions run so far in this isolate.
pub fn sql_counts() -> SqlCounts {
    COUNTS.with(std::cell::Cell::get)
}

fn count(f: impl FnOnce(&mut SqlCounts)) {
    COUNTS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}

/// What `transactionSync` calls: an `Err` is thrown, which rolls back.
type TransactionBody<'a> = dyn FnMut() -> std::result::Result<JsValue, JsValue> + 'a;

/// A Durable Object's SQL storage as a [`SqlConn`]. Cheap to clone; clones
/// use the same database.
#[derive(Clone)]
pub struct DoSqlConn {
    sql: SqlStorage,
    /// The object's `DurableObjectStorage`, for `transactionSync`.
    storage: JsValue,
}

impl std::fmt::Debug for DoSqlConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoSqlConn").finish_non_exhaustive()
    }
}

impl DoSqlConn {
    /// The SQL database of the Durable Object owning `storage`.
    pub fn new(storage: &Storage) -> Self {
        DoSqlConn {
            sql: storage.sql(),
            storage: AsRef::<JsValue>::as_ref(storage.as_raw()).clone(),
        }
    }

    /// Runs one statement (or several separated by `;`) and reads every row,
    /// so the statement has finished when this returns.
    fn run(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>> {
        let bindings = params.iter().map(binding).collect::<Result<Vec<_>>>()?;
        count(|c| c.statements += 1);
        let cursor: SqlCursor = self
            .sql
            .exec(sql, bindings)
            .map_err(|e| sql_error(format_args!("cannot run {sql:?}"), e))?;
        let mut rows = Vec::new();
        for row in cursor.raw() {
            let row =
                row.map_err(|e| sql_error(format_args!("cannot read a row of {sql:?}"), e))?;
            let row = row
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    value(v).map_err(|kind| {
                        sql_error(
                            format_args!("cannot read column {i} of {sql:?}"),
                            format_args!(
                                "it holds {kind}, but only NULL, INTEGER and TEXT are read"
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            rows.push(row);
        }
        Ok(rows)
    }

    fn transaction_sync(&self) -> Result<Function> {
        Reflect::get(&self.storage, &JsValue::from_str("transactionSync"))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok())
            .ok_or_else(|| {
                Error::storage(
                    BACKEND,
                    "this Durable Object's storage has no transactionSync: \
                         is the class declared in new_sqlite_classes?",
                )
            })
    }
}

impl SqlConn for DoSqlConn {
    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<()> {
        self.run(sql, params).map(drop)
    }

    fn execute_batch(&mut self, sql: &str) -> Result<()> {
        self.run(sql, &[]).map(drop)
    }

    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>> {
        self.run(sql, params)
    }

    fn transaction(&mut self, body: &mut dyn FnMut(&mut dyn SqlConn) -> Result<()>) -> Result<()> {
        let transaction_sync = self.transaction_sync()?;
        count(|c| c.transactions += 1);
        let mut inner = self.clone();
        // The body's own error, kept to return as it is; JavaScript only
        // sees a thrown message, which makes transactionSync roll back.
        let mut failed: Option<Error> = None;
        let mut ran = false;
        let mut run = || -> std::result::Result<JsValue, JsValue> {
            ran = true;
            match body(&mut inner) {
                Ok(()) => Ok(JsValue::UNDEFINED),
                Err(e) => {
                    let thrown = JsValue::from_str(&e.to_string());
                    failed = Some(e);
                    Err(thrown)
                }
            }
        };
        let outcome = {
            // Catches a panic of the body (under panic=unwind) as a throw, so
            // the writes roll back; `failed` then stays empty.
            let callback =
                ScopedClosure::<TransactionBody<'_>>::borrow_mut_assert_unwind_safe(&mut run);
            transaction_sync.call1(&self.storage, callback.as_js_value())
        };
        match (outcome, failed) {
            (_, Some(e)) => Err(e),
            (Ok(_), None) if ran => Ok(()),
            (Ok(_), None) => Err(Error::storage(
                BACKEND,
                "transactionSync returned without running the transaction",
            )),
            (Err(thrown), None) => Err(sql_error(
                "the transaction did not commit",
                js_message(&thrown),
            )),
        }
    }
}

/// A [`Error::Storage`] saying what failed and why.
fn sql_error(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Error {
    Error::storage(BACKEND, format_args!("{what}: {err}"))
}

/// The message of a thrown JavaScript value.
fn js_message(thrown: &JsValue) -> String {
    thrown
        .as_string()
        .or_else(|| {
            Reflect::get(thrown, &JsValue::from_str("message"))
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{thrown:?}"))
}

/// A bound parameter. Integers must survive the trip through a JavaScript
/// number exactly; the store never binds a larger one.
fn binding(v: &SqlValue) -> Result<SqlStorageValue> {
    Ok(match v {
        SqlValue::Null => SqlStorageValue::Null,
        SqlValue::Integer(i) => SqlStorageValue::try_from_i64(*i).map_err(|_| {
            Error::Invalid(format!(
                "{i} is beyond ±(2^53 - 1), the largest integer DO SQL binds exactly"
            ))
        })?,
        SqlValue::Text(s) => SqlStorageValue::String(s.clone()),
    })
}

/// The [`SqlValue`] of a column, or the name of what it holds instead.
fn value(v: SqlStorageValue) -> std::result::Result<SqlValue, &'static str> {
    match v {
        SqlStorageValue::Null => Ok(SqlValue::Null),
        SqlStorageValue::Integer(i) => Ok(SqlValue::Integer(i)),
        SqlStorageValue::String(s) => Ok(SqlValue::Text(s)),
        SqlStorageValue::Boolean(b) => Ok(SqlValue::Integer(i64::from(b))),
        SqlStorageValue::Float(_) => Err("a REAL, or an integer beyond 2^53"),
        SqlStorageValue::Blob(_) => Err("a BLOB"),
    }
}
