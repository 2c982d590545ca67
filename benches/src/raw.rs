//! Raw rusqlite connections for the baselines, set up as the SQLite store
//! sets up its own (WAL, `synchronous=NORMAL`, a busy timeout), so that a
//! ratio measures Duraclaw's code and not a different configuration. They
//! keep SQLite's automatic checkpoint: taking checkpoints off the commit
//! path is part of what the store's side is measured on.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// A read-write connection: WAL, `synchronous=NORMAL`.
pub fn writer(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open the database");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .expect("WAL");
    assert!(mode.eq_ignore_ascii_case("wal"), "journal mode {mode}");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous=NORMAL");
    conn
}

/// A read-only connection, as the store's read pool opens them.
pub fn reader(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the database for reading");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn
}
