//! Reads: a small pool of read-only connections used through
//! `spawn_blocking`, and the queries (which the writer also runs inside its
//! transaction where a step needs them).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use duraclaw_core::protocol::Seq;
use duraclaw_core::store::{
    LogHead, QuestionRecord, RecordedCommand, Resolution, SessionMeta, StoredEvent,
};
use duraclaw_core::{Error, Result};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::conn::{BACKEND, open_reader, set_page_cache, sql_error, to_u64};

/// Read-only connections, opened on demand, at most `size` in use at once.
pub(crate) struct ReadPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: usize,
    /// Each connection's page cache, in KiB (SQLite's default when `None`).
    cache_kib: Option<u32>,
    /// The runtime the directory was opened in, used when a read is made
    /// from outside any tokio runtime.
    runtime: Handle,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ReadPool {
    pub(crate) fn new(
        path: PathBuf,
        busy_timeout: Duration,
        size: usize,
        cache_kib: Option<u32>,
        runtime: Handle,
    ) -> Self {
        let size = size.max(1);
        ReadPool {
            path,
            busy_timeout,
            cache_kib,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Arc::new(Semaphore::new(size)),
            size,
            runtime,
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A Vec of idle connections stays consistent whatever panicked.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a read-only connection, off the async executor.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Closed("sqlite read pool"))?;
        let pool = self.clone();
        let job = move || {
            let _permit = permit;
            let conn = match pool.idle().pop() {
                Some(conn) => conn,
                None => {
                    let conn = open_reader(&pool.path, pool.busy_timeout)?;
                    set_page_cache(&conn, pool.cache_kib).map_err(|e| {
                        sql_error(format_args!("cannot set up {}", pool.path.display()), e)
                    })?;
                    conn
                }
            };
            let out = f(&conn);
            pool.idle().push(conn);
            out
        };
        let handle = Handle::try_current().unwrap_or_else(|_| self.runtime.clone());
        handle.spawn_blocking(job).await.map_err(|e| {
            Error::storage(
                BACKEND,
                format!("a read of {} did not finish: {e}", self.path.display()),
            )
        })?
    }
}

fn not_found(session_id: &str) -> Error {
    Error::NotFound {
        what: "session",
        id: session_id.to_owned(),
    }
}

/// Whether a session exists.
pub(crate) fn exists(conn: &Connection, session_id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sessions WHERE session_id = ?1")
        .and_then(|mut s| s.exists(params![session_id]))
        .map_err(|e| sql_error(format_args!("cannot look up session {session_id:?}"), e))
}

/// A session's last event: its seq and the highest gseq of the log.
const LAST_EVENT: &str =
    "SELECT seq, highest_gseq FROM events WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1";
/// A page of a session's events.
const READ_AFTER: &str = "SELECT seq, gseq, at_ms, json FROM events \
     WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";

/// The ends of a session's log: its last event's seq and highest gseq.
pub(crate) fn head(conn: &Connection, session_id: &str) -> Result<LogHead> {
    let err = |e| {
        sql_error(
            format_args!("cannot read the log head of session {session_id:?}"),
            e,
        )
    };
    let last: Option<(i64, i64)> = conn
        .prepare_cached(LAST_EVENT)
        .and_then(|mut s| {
            s.query_row(params![session_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(err)?;
    let Some((last, gseq)) = last else {
        // No event yet: the head of an empty log, if the session exists.
        let exists = conn
            .prepare_cached("SELECT 1 FROM sessions WHERE session_id = ?1")
            .and_then(|mut s| s.exists(params![session_id]))
            .map_err(err)?;
        return match exists {
            true => Ok(LogHead::default()),
            false => Err(not_found(session_id)),
        };
    };
    // Every append reads the head: the error's text is made only for an
    // error.
    let negative = |what: &str, v: i64| to_u64(v, &format!("{what} of session {session_id:?}"));
    Ok(LogHead {
        last_seq: u64::try_from(last).or_else(|_| negative("the last seq", last))?,
        highest_gseq: u64::try_from(gseq).or_else(|_| negative("the highest gseq", gseq))?,
    })
}

/// A session's metadata.
pub(crate) fn meta(conn: &Connection, session_id: &str) -> Result<SessionMeta> {
    let json: Option<String> = conn
        .prepare_cached("SELECT meta_json FROM sessions WHERE session_id = ?1")
        .and_then(|mut s| s.query_row(params![session_id], |r| r.get(0)).optional())
        .map_err(|e| {
            sql_error(
                format_args!("cannot read the metadata of session {session_id:?}"),
                e,
            )
        })?;
    let json = json.ok_or_else(|| not_found(session_id))?;
    decode_meta(&json, session_id)
}

fn decode_meta(json: &str, session_id: &str) -> Result<SessionMeta> {
    serde_json::from_str(json).map_err(|e| {
        Error::storage_from(
            BACKEND,
            format_args!("the stored metadata of session {session_id:?} does not decode"),
            e,
        )
    })
}

/// Up to `limit` events after `after`.
pub(crate) fn read_after(
    conn: &Connection,
    session_id: &str,
    after: Seq,
    limit: usize,
) -> Result<Vec<StoredEvent>> {
    // A seq past what any store writes has nothing after it.
    let Ok(after_i) = i64::try_from(after) else {
        return Ok(Vec::new());
    };
    let limit_i = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(READ_AFTER)
        .map_err(|e| sql_error("cannot prepare the event read", e))?;
    let read_err = |e: rusqlite::Error| {
        sql_error(
            format_args!("cannot read events after {after} of session {session_id:?}"),
            e,
        )
    };
    let mut rows = stmt
        .query(params![session_id, after_i, limit_i])
        .map_err(read_err)?;
    let mut out = Vec::with_capacity(limit.min(1024));
    // Each row's JSON is copied once, straight from SQLite's buffer into the
    // event's `Arc<str>`; the messages of errors are built only on error.
    while let Some(r) = rows.next().map_err(read_err)? {
        let seq: i64 = r.get(0).map_err(read_err)?;
        let gseq: Option<i64> = r.get(1).map_err(read_err)?;
        let at_ms: i64 = r.get(2).map_err(read_err)?;
        let json: Arc<str> = r
            .get_ref(3)
            .map_err(read_err)?
            .as_str()
            .map_err(|e| {
                sql_error(
                    format_args!("event {seq} of session {session_id:?} is not text"),
                    e,
                )
            })?
            .into();
        let seq_u = u64::try_from(seq)
            .or_else(|_| to_u64(seq, &format!("an event seq of session {session_id:?}")))?;
        let gseq = match gseq {
            Some(g) => Some(u64::try_from(g).or_else(|_| {
                to_u64(
                    g,
                    &format!("the gseq of event {seq} of session {session_id:?}"),
                )
            })?),
            None => None,
        };
        out.push(StoredEvent {
            seq: seq_u,
            gseq,
            at_ms,
            json,
        });
    }
    Ok(out)
}

/// A stored decision.
pub(crate) fn decode_resolution(
    json: &str,
    session_id: &str,
    question_id: &str,
) -> Result<Resolution> {
    serde_json::from_str(json).map_err(|e| Error::storage_from(BACKEND, format_args!("the stored decision on question {question_id:?} of session {session_id:?} does not decode"), e))
}

/// Questions, in the order asked.
pub(crate) fn questions(
    conn: &Connection,
    session_id: &str,
    pending_only: bool,
) -> Result<Vec<QuestionRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT question_id, question_json, asked_seq, resolution_json FROM questions \
             WHERE session_id = ?1 AND (?2 = 0 OR resolution_json IS NULL) ORDER BY asked_seq",
        )
        .map_err(|e| sql_error("cannot prepare the question read", e))?;
    let read = |r: &Row<'_>| -> rusqlite::Result<(String, String, i64, Option<String>)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    };
    let rows = stmt
        .query_map(params![session_id, pending_only], read)
        .map_err(|e| {
            sql_error(
                format_args!("cannot read the questions of session {session_id:?}"),
                e,
            )
        })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, question, asked_seq, resolution) = row.map_err(|e| {
            sql_error(
                format_args!("cannot read a question of session {session_id:?}"),
                e,
            )
        })?;
        let question = serde_json::from_str(&question).map_err(|e| {
            Error::storage_from(
                BACKEND,
                format_args!(
                    "the stored question {id:?} of session {session_id:?} does not decode"
                ),
                e,
            )
        })?;
        out.push(QuestionRecord {
            question,
            asked_seq: to_u64(asked_seq, &format!("asked_seq of question {id:?}"))?,
            resolution: resolution
                .map(|json| decode_resolution(&json, session_id, &id))
                .transpose()?,
        });
    }
    Ok(out)
}

/// Whether a command's turn began with the event at `seq`.
pub(crate) fn turn_began_at(conn: &Connection, session_id: &str, seq: Seq) -> Result<bool> {
    let Ok(seq) = i64::try_from(seq) else {
        return Ok(false);
    };
    conn.prepare_cached("SELECT 1 FROM commands WHERE session_id = ?1 AND turn_seq = ?2 LIMIT 1")
        .and_then(|mut s| s.exists(params![session_id, seq]))
        .map_err(|e| {
            sql_error(
                format_args!("cannot read the turns of session {session_id:?}"),
                e,
            )
        })
}

/// Commands with a frame not yet forwarded, oldest first.
pub(crate) fn unforwarded(conn: &Connection, session_id: &str) -> Result<Vec<RecordedCommand>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT command_id, forward, at_ms FROM commands \
             WHERE session_id = ?1 AND forward IS NOT NULL AND forwarded = 0 ORDER BY rowid",
        )
        .map_err(|e| sql_error("cannot prepare the outbox read", e))?;
    let rows = stmt
        .query_map(params![session_id], |r| {
            Ok(RecordedCommand {
                id: r.get(0)?,
                forward: r.get::<_, Option<String>>(1)?.map(Into::into),
                at_ms: r.get(2)?,
            })
        })
        .map_err(|e| {
            sql_error(
                format_args!("cannot read the outbox of session {session_id:?}"),
                e,
            )
        })?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| {
        sql_error(
            format_args!("cannot read the outbox of session {session_id:?}"),
            e,
        )
    })
}

/// An owner's sessions, most recently active first.
pub(crate) fn list(conn: &Connection, owner: Option<&str>) -> Result<Vec<SessionMeta>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT session_id, meta_json FROM sessions WHERE ?1 IS NULL OR owner = ?1 \
             ORDER BY updated_at_ms DESC, session_id",
        )
        .map_err(|e| sql_error("cannot prepare the session list", e))?;
    let rows = stmt
        .query_map(params![owner], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(|e| sql_error(format_args!("cannot list the sessions of {owner:?}"), e))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, json) =
            row.map_err(|e| sql_error(format_args!("cannot list the sessions of {owner:?}"), e))?;
        out.push(decode_meta(&json, &id)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;
    use crate::sqlite::SqliteConn;

    /// Cached statements run as compiled: binding a value to one does not
    /// make SQLite parse and plan it again (it did for every statement on
    /// a two-column key, before the planner's stability guarantee was set).
    #[test]
    fn cached_statements_are_not_compiled_again_on_each_run() {
        let tmp = tempfile::tempdir().unwrap();
        let mut conn = SqliteConn::open(tmp.path().join("s.db")).unwrap();
        crate::schema::migrations()
            .unwrap()
            .apply(&mut conn)
            .unwrap();
        let conn = conn.into_inner();
        conn.execute_batch(
            "INSERT INTO sessions (session_id, owner, created_at_ms, updated_at_ms, meta_json) \
             VALUES ('s', 'alice', 0, 0, '{}');
             INSERT INTO events (session_id, seq, gseq, highest_gseq, at_ms, json) \
             VALUES ('s', 1, 3, 3, 0, '{}');",
        )
        .unwrap();
        for _ in 0..3 {
            assert_eq!(head(&conn, "s").unwrap().highest_gseq, 3);
            assert_eq!(read_after(&conn, "s", 0, 10).unwrap().len(), 1);
        }
        for sql in [LAST_EVENT, READ_AFTER] {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}
