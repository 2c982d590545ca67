//! [`SqliteConn`]: the [`SqlConn`] of rusqlite, used to run migrations, and
//! the helpers every SQLite connection of this crate shares.

use std::path::Path;
use std::time::Duration;

use duraclaw_core::backend::migrate::{SqlConn, SqlValue};
use duraclaw_core::error::BoxError;
use duraclaw_core::{Error, Result};
use rusqlite::config::DbConfig;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OpenFlags};

/// The backend name in [`Error::Storage`].
pub(crate) const BACKEND: &str = "sqlite";

/// A [`Error::Storage`] saying what failed, with rusqlite's explanation.
pub(crate) fn sql_error(what: impl std::fmt::Display, err: impl Into<BoxError>) -> Error {
    Error::storage_from(BACKEND, what, err)
}

/// Opens the read-write connection of a database file and sets it up: WAL,
/// `synchronous=NORMAL`, a busy timeout and foreign keys.
pub(crate) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| sql_error(format_args!("cannot open {}", path.display()), e))?;
    configure(&conn, busy_timeout)
        .map_err(|e| sql_error(format_args!("cannot set up {}", path.display()), e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| {
            sql_error(
                format_args!("cannot use {} as a database", path.display()),
                e,
            )
        })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(sql_error(
            format_args!("cannot switch {} to WAL", path.display()),
            format!("SQLite kept journal mode {mode:?}"),
        ));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| sql_error(format_args!("cannot set up {}", path.display()), e))?;
    Ok(conn)
}

/// Opens the connection the checkpointer thread runs WAL checkpoints on.
pub(crate) fn open_checkpointer(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| sql_error(format_args!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(busy_timeout)
        .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
        .and_then(|()| conn.pragma_update(None, "wal_autocheckpoint", 0))
        .map_err(|e| sql_error(format_args!("cannot set up {}", path.display()), e))?;
    Ok(conn)
}

/// Opens a read-only connection to a database the writer already set up.
pub(crate) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        sql_error(
            format_args!("cannot open {} for reading", path.display()),
            e,
        )
    })?;
    configure(&conn, busy_timeout)
        .map_err(|e| sql_error(format_args!("cannot set up {}", path.display()), e))?;
    Ok(conn)
}

/// Bounds `conn`'s page cache to `kib` KiB (SQLite's default when `None`).
pub(crate) fn set_page_cache(conn: &Connection, kib: Option<u32>) -> rusqlite::Result<()> {
    match kib {
        Some(kib) => conn.pragma_update(None, "cache_size", -i64::from(kib)),
        None => Ok(()),
    }
}

fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    // The query planner's stability guarantee: a plan does not depend on
    // the values bound to it. Without it, the bundled SQLite (built with
    // STAT4) marks every statement that compares an index's column with a
    // parameter (`WHERE session_id = ?1` on a two-column key: most of this
    // crate's) to be compiled again each time a value is bound, so every
    // cached statement was parsed and planned anew on every run.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// A rusqlite connection seen through [`SqlConn`], so that
/// [`Migrations`](duraclaw_core::backend::migrate::Migrations) and the shared SQL
/// conformance tests run on it.
///
/// [`SqlConn::transaction`] is `BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK`),
/// and a savepoint when called inside a transaction. Columns must be NULL,
/// INTEGER or TEXT, the values [`SqlValue`] holds.
#[derive(Debug)]
pub struct SqliteConn {
    conn: Connection,
    savepoints: u32,
}

impl SqliteConn {
    /// Wraps an open connection.
    pub fn new(conn: Connection) -> Self {
        SqliteConn {
            conn,
            savepoints: 0,
        }
    }

    /// Opens (creating if needed) a database file set up the way
    /// [`SqliteDirectory`](super::SqliteDirectory) sets up its own: WAL,
    /// `synchronous=NORMAL`, a 5 s busy timeout and foreign keys.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        open_writer(path.as_ref(), super::DEFAULT_BUSY_TIMEOUT).map(Self::new)
    }

    /// Opens a private in-memory database.
    pub fn open_in_memory() -> Result<Self> {
        let conn =
            Connection::open_in_memory().map_err(|e| sql_error("cannot open :memory:", e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| sql_error("cannot set up :memory:", e))?;
        Ok(Self::new(conn))
    }

    /// The connection underneath.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Gives the connection back.
    pub fn into_inner(self) -> Connection {
        self.conn
    }
}

impl From<Connection> for SqliteConn {
    fn from(conn: Connection) -> Self {
        Self::new(conn)
    }
}

impl SqlConn for SqliteConn {
    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| sql_error(format_args!("cannot prepare {sql:?}"), e))?;
        stmt.execute(rusqlite::params_from_iter(params.iter().map(to_value)))
            .map_err(|e| sql_error(format_args!("cannot run {sql:?}"), e))?;
        Ok(())
    }

    fn execute_batch(&mut self, sql: &str) -> Result<()> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| sql_error(format_args!("cannot run {sql:?}"), e))
    }

    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| sql_error(format_args!("cannot prepare {sql:?}"), e))?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(to_value)))
            .map_err(|e| sql_error(format_args!("cannot run {sql:?}"), e))?;
        let mut out = Vec::new();
        loop {
            let row = match rows.next() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => return Err(sql_error(format_args!("cannot read a row of {sql:?}"), e)),
            };
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                let value = row
                    .get_ref(i)
                    .map_err(|e| sql_error(format_args!("cannot read column {i} of {sql:?}"), e))?;
                values.push(from_value(value).map_err(|kind| {
                    sql_error(
                        format_args!("cannot read column {i} of {sql:?}"),
                        format!("it holds {kind}, but only NULL, INTEGER and TEXT are read"),
                    )
                })?);
            }
            out.push(values);
        }
        Ok(out)
    }

    fn transaction(&mut self, body: &mut dyn FnMut(&mut dyn SqlConn) -> Result<()>) -> Result<()> {
        let outermost = self.conn.is_autocommit();
        let name = format!("duraclaw_sp{}", self.savepoints);
        let (begin, commit, rollback) = if outermost {
            (
                "BEGIN IMMEDIATE".to_owned(),
                "COMMIT".to_owned(),
                "ROLLBACK".to_owned(),
            )
        } else {
            (
                format!("SAVEPOINT {name}"),
                format!("RELEASE {name}"),
                format!("ROLLBACK TO {name}; RELEASE {name}"),
            )
        };
        self.conn
            .execute_batch(&begin)
            .map_err(|e| sql_error(format_args!("cannot {begin}"), e))?;
        if !outermost {
            self.savepoints += 1;
        }
        let result = body(self);
        if !outermost {
            self.savepoints -= 1;
        }
        match result {
            Ok(()) => match self.conn.execute_batch(&commit) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let err = sql_error(format_args!("cannot {commit}"), e);
                    // A failed COMMIT can leave the transaction open.
                    if !self.conn.is_autocommit() {
                        let _ = self.conn.execute_batch(&rollback);
                    }
                    Err(err)
                }
            },
            Err(err) => {
                if let Err(e) = self.conn.execute_batch(&rollback) {
                    tracing::warn!(error = %e, "rollback after a failed transaction body failed");
                }
                Err(err)
            }
        }
    }
}

fn to_value(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Integer(*i),
        SqlValue::Text(s) => Value::Text(s.clone()),
    }
}

/// The [`SqlValue`] of a column, or the name of the SQLite type it cannot hold.
fn from_value(v: ValueRef<'_>) -> std::result::Result<SqlValue, &'static str> {
    match v {
        ValueRef::Null => Ok(SqlValue::Null),
        ValueRef::Integer(i) => Ok(SqlValue::Integer(i)),
        ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec())
            .map(SqlValue::Text)
            .map_err(|_| "TEXT that is not UTF-8"),
        ValueRef::Real(_) => Err("a REAL"),
        ValueRef::Blob(_) => Err("a BLOB"),
    }
}

/// A seq or other counter read from an INTEGER column: never negative.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| Error::storage(BACKEND, format!("{what} is {value}, which is negative")))
}

/// A seq or gseq to store; every caller checked it is at most 2^53 - 1.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| Error::Invalid(format!("{what} {value} is too large for an SQLite INTEGER")))
}
