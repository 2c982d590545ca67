//! An [`Inbox`] kept in SQL (the Cloudflare user object's own SQLite):
//! its schema ([`INBOX_MIGRATIONS`]), [`load`] and [`save`] of the changes
//! an update recorded, in one transaction.

use duraclaw_core::Result;
use duraclaw_core::backend::migrate::{Migration, SqlConn, SqlValue};
use duraclaw_core::error::Error;

use super::{Inbox, InboxChange, InboxItem};
use duraclaw_core::store::SessionMeta;

/// The inbox tables.
pub const INBOX_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "inbox",
    sql: "CREATE TABLE inbox_head (id INTEGER PRIMARY KEY CHECK (id = 1), cursor INTEGER NOT NULL, floor INTEGER NOT NULL);\
          CREATE TABLE inbox_sessions (session_id TEXT PRIMARY KEY, json TEXT NOT NULL);\
          CREATE TABLE inbox_items (session_id TEXT NOT NULL, question_id TEXT NOT NULL, json TEXT NOT NULL, PRIMARY KEY (session_id, question_id));\
          CREATE TABLE inbox_changes (cursor INTEGER PRIMARY KEY, json TEXT NOT NULL)",
}];

fn int(v: u64) -> SqlValue {
    SqlValue::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn text(v: impl Into<String>) -> SqlValue {
    SqlValue::Text(v.into())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::storage("inbox", format!("cannot encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(row: &[SqlValue], col: usize) -> Result<T> {
    let raw = row.get(col).and_then(SqlValue::as_str).unwrap_or("");
    serde_json::from_str(raw)
        .map_err(|e| Error::storage("inbox", format!("a stored row does not decode: {e}")))
}

fn as_u64(row: &[SqlValue], col: usize) -> u64 {
    row.get(col)
        .and_then(SqlValue::as_i64)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0)
}

/// The inbox the tables hold; a new one at `base` when they hold none.
pub fn load(conn: &mut dyn SqlConn, base: u64) -> Result<Inbox> {
    let head = conn.query("SELECT cursor, floor FROM inbox_head WHERE id = 1", &[])?;
    let Some(head) = head.first() else {
        return Ok(Inbox::new(base));
    };
    let (cursor, floor) = (as_u64(head, 0), as_u64(head, 1));
    let sessions = conn
        .query("SELECT json FROM inbox_sessions", &[])?
        .iter()
        .map(|r| from_json::<SessionMeta>(r, 0))
        .collect::<Result<Vec<_>>>()?;
    let items = conn
        .query("SELECT json FROM inbox_items", &[])?
        .iter()
        .map(|r| from_json::<InboxItem>(r, 0))
        .collect::<Result<Vec<_>>>()?;
    let changes = conn
        .query(
            "SELECT cursor, json FROM inbox_changes ORDER BY cursor",
            &[],
        )?
        .iter()
        .map(|r| Ok((as_u64(r, 0), from_json::<InboxChange>(r, 1)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Inbox::from_parts(cursor, floor, sessions, items, changes))
}

/// Writes what `changes` (just recorded by `inbox`) changed, and the
/// inbox's cursors, in one transaction.
pub fn save(conn: &mut dyn SqlConn, inbox: &Inbox, changes: &[(u64, InboxChange)]) -> Result<()> {
    let mut body = |tx: &mut dyn SqlConn| -> Result<()> {
        tx.execute(
            "INSERT INTO inbox_head (id, cursor, floor) VALUES (1, ?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET cursor = excluded.cursor, floor = excluded.floor",
            &[int(inbox.cursor()), int(inbox.floor())],
        )?;
        for (cursor, change) in changes {
            tx.execute(
                "INSERT OR REPLACE INTO inbox_changes (cursor, json) VALUES (?1, ?2)",
                &[int(*cursor), text(to_json(change)?)],
            )?;
            match change {
                InboxChange::Session { session } => tx.execute(
                    "INSERT OR REPLACE INTO inbox_sessions (session_id, json) VALUES (?1, ?2)",
                    &[text(&session.session_id), text(to_json(session)?)],
                )?,
                InboxChange::QuestionOpened { item } => tx.execute(
                    "INSERT OR REPLACE INTO inbox_items (session_id, question_id, json) VALUES (?1, ?2, ?3)",
                    &[
                        text(&item.session_id),
                        text(&item.question_id),
                        text(to_json(item)?),
                    ],
                )?,
                InboxChange::QuestionResolved {
                    session_id,
                    question_id,
                    ..
                } => tx.execute(
                    "DELETE FROM inbox_items WHERE session_id = ?1 AND question_id = ?2",
                    &[text(session_id), text(question_id)],
                )?,
                InboxChange::SessionRemoved { session_id } => {
                    tx.execute(
                        "DELETE FROM inbox_sessions WHERE session_id = ?1",
                        &[text(session_id)],
                    )?;
                    tx.execute(
                        "DELETE FROM inbox_items WHERE session_id = ?1",
                        &[text(session_id)],
                    )?;
                }
            }
        }
        tx.execute(
            "DELETE FROM inbox_changes WHERE cursor <= ?1",
            &[int(inbox.floor())],
        )
    };
    conn.transaction(&mut body)
}

/// Writes a session's metadata that changed nothing the list shows (its
/// activity time), so a reload has it too.
pub fn save_session(conn: &mut dyn SqlConn, meta: &SessionMeta) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO inbox_sessions (session_id, json) VALUES (?1, ?2)",
        &[text(&meta.session_id), text(to_json(meta)?)],
    )
}
