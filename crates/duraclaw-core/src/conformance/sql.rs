//! The migration cases, over each backend's SQL connection.

use super::{CaseError, CaseResult, SqlHarness, unique};
use crate::backend::migrate::{Migration, Migrations, SqlConn, SqlValue};
use crate::error::Error;

pub(super) const M1: Migration = Migration {
    version: 1,
    name: "notes",
    sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
};
pub(super) const M2: Migration = Migration {
    version: 2,
    name: "notes_index",
    sql: "ALTER TABLE notes ADD COLUMN tag TEXT; CREATE INDEX notes_tag ON notes (tag)",
};

pub(super) fn count(conn: &mut dyn SqlConn, sql: &str) -> std::result::Result<i64, CaseError> {
    let rows = conn.query(sql, &[])?;
    rows.first()
        .and_then(|r| r.first())
        .and_then(SqlValue::as_i64)
        .ok_or_else(|| CaseError(format!("{sql} returned no integer")))
}

pub(super) fn migrations_run_twice_equals_once(h: &dyn SqlHarness) -> CaseResult {
    let mut conn = h.connect(&unique("twice"))?;
    let m = Migrations::new(&[M1, M2])?;
    let first = m.apply(conn.as_mut())?;
    check_eq!(
        (first.from, first.to, first.applied.clone()),
        (0, 2, vec![1, 2])
    );
    conn.execute(
        "INSERT INTO notes (body, tag) VALUES (?1, ?2)",
        &[SqlValue::Text("kept".into()), SqlValue::Text("t".into())],
    )?;
    let second = m.apply(conn.as_mut())?;
    check_eq!((second.from, second.to, second.applied.len()), (2, 2, 0));
    check_eq!(count(conn.as_mut(), "SELECT count(*) FROM notes")?, 1);
    check_eq!(
        count(conn.as_mut(), "SELECT count(*) FROM duraclaw_migrations")?,
        2
    );
    // Growing the list applies only the new step.
    const M3: Migration = Migration {
        version: 3,
        name: "more",
        sql: "CREATE TABLE more (x)",
    };
    let third = Migrations::new(&[M1, M2, M3])?.apply(conn.as_mut())?;
    check_eq!(third.applied, vec![3]);
    Ok(())
}

pub(super) fn newer_database_is_refused(h: &dyn SqlHarness) -> CaseResult {
    let name = unique("newer");
    let mut conn = h.connect(&name)?;
    Migrations::new(&[M1, M2])?.apply(conn.as_mut())?;
    match Migrations::new(&[M1])?.apply(conn.as_mut()) {
        Err(Error::SchemaTooNew { found: 2, known: 1 }) => {}
        other => {
            return Err(CaseError(format!(
                "older code on a newer database gave {other:?}"
            )));
        }
    }
    conn.execute(
        "UPDATE duraclaw_meta SET int_value = 99 WHERE key = 'schema'",
        &[],
    )?;
    match Migrations::new(&[M1, M2])?.apply(conn.as_mut()) {
        Err(
            e @ Error::SchemaTooNew {
                found: 99,
                known: 2,
            },
        ) => {
            check!(e.to_string().contains("newer"), "the message says why: {e}");
        }
        other => return Err(CaseError(format!("version 99 gave {other:?}"))),
    }
    Ok(())
}

pub(super) fn edited_migration_is_detected(h: &dyn SqlHarness) -> CaseResult {
    let mut conn = h.connect(&unique("edited"))?;
    Migrations::new(&[M1, M2])?.apply(conn.as_mut())?;
    let edited = Migration {
        sql: "ALTER TABLE notes ADD COLUMN tag TEXT",
        ..M2
    };
    match Migrations::new(&[M1, edited])?.apply(conn.as_mut()) {
        Err(Error::MigrationEdited { version: 2, .. }) => {}
        other => return Err(CaseError(format!("an edited migration gave {other:?}"))),
    }
    Ok(())
}

pub(super) fn failed_migration_rolls_back_with_its_version(h: &dyn SqlHarness) -> CaseResult {
    let mut conn = h.connect(&unique("failed"))?;
    let broken = Migration {
        version: 2,
        name: "broken",
        sql: "CREATE TABLE half (x); THIS IS NOT SQL",
    };
    match Migrations::new(&[M1, broken])?.apply(conn.as_mut()) {
        Err(Error::MigrationFailed { version: 2, .. }) => {}
        other => return Err(CaseError(format!("a broken migration gave {other:?}"))),
    }
    check_eq!(
        count(
            conn.as_mut(),
            "SELECT int_value FROM duraclaw_meta WHERE key = 'schema'"
        )?,
        1
    );
    check_eq!(
        count(
            conn.as_mut(),
            "SELECT count(*) FROM sqlite_master WHERE name = 'half'"
        )?,
        0
    );
    // Fixing it applies cleanly.
    let report = Migrations::new(&[M1, M2])?.apply(conn.as_mut())?;
    check_eq!(report.applied, vec![2]);
    Ok(())
}

pub(super) fn reopened_database_keeps_its_version(h: &dyn SqlHarness) -> CaseResult {
    let name = unique("reopen");
    let m = Migrations::new(&[M1, M2])?;
    {
        let mut conn = h.connect(&name)?;
        m.apply(conn.as_mut())?;
    }
    let mut conn = h.connect(&name)?;
    let report = m.apply(conn.as_mut())?;
    check_eq!((report.from, report.applied.len()), (2, 0));
    Ok(())
}
