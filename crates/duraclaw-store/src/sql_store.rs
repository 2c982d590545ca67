//! [`SqlConnDirectory`] and [`SqlConnStore`]: the session store over any
//! synchronous, in-process [`SqlConn`], which is what Durable Object SQL is.
//!
//! In a Durable Object the connection is `duraclaw_cf::DoSqlConn`; natively
//! the same code runs over SQLite ([`SqliteConn`](crate::SqliteConn)), so the
//! conformance suite checks the logic without a Workers runtime. Each method is one step, and every write step runs in one
//! [`SqlConn::transaction`] (a `transactionSync` in a Durable Object), so a
//! failing step leaves nothing behind. The append and resolve steps are
//! core's [`step`], shared with every other backend.
//!
//! Calls are synchronous: in a Durable Object SQL runs in-process and never
//! waits. Natively a call blocks its task, which suits tests and tools only.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use duraclaw_core::SendOutsideWasm;
use duraclaw_core::backend::limits::{self, MAX_SEQ};
use duraclaw_core::backend::migrate::{MigrationReport, SqlConn, SqlValue};
use duraclaw_core::backend::step::{self, LogStep, QuestionStatus};
use duraclaw_core::protocol::{Gseq, Seq, UserQuestion};
use duraclaw_core::store::{
    AppendBatch, AppendOutcome, DynSessionStore, LogHead, QuestionRecord, RecordedCommand,
    Resolution, ResolveOutcome, SessionDirectory, SessionMeta, SessionStore, StoredEvent,
    page_limit,
};
use duraclaw_core::{Error, Result};

use crate::schema;

/// The backend name in [`Error::Storage`].
const BACKEND: &str = "sql";

/// Every session in one SQL database: in a Durable Object, its own.
///
/// Opening it brings the schema up to date. Cheap to clone; clones and the
/// stores opened from it share the connection.
pub struct SqlConnDirectory<C> {
    conn: Arc<Mutex<C>>,
    migrated: MigrationReport,
}

impl<C> Clone for SqlConnDirectory<C> {
    fn clone(&self) -> Self {
        SqlConnDirectory {
            conn: self.conn.clone(),
            migrated: self.migrated.clone(),
        }
    }
}

impl<C> std::fmt::Debug for SqlConnDirectory<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConnDirectory")
            .field("migrated", &self.migrated)
            .finish_non_exhaustive()
    }
}

impl<C: SqlConn + SendOutsideWasm + 'static> SqlConnDirectory<C> {
    /// Takes the connection and migrates its schema: [`Error::SchemaTooNew`]
    /// for a database written by newer code, [`Error::MigrationEdited`] when
    /// an applied migration changed since.
    pub fn open(mut conn: C) -> Result<Self> {
        let migrated = schema::migrations()?.apply(&mut conn)?;
        Ok(SqlConnDirectory {
            conn: Arc::new(Mutex::new(conn)),
            migrated,
        })
    }

    /// What opening did to the schema.
    pub fn migration_report(&self) -> &MigrationReport {
        &self.migrated
    }

    /// The newest schema version this build knows.
    pub fn schema_version() -> u32 {
        schema::MIGRATIONS.len() as u32
    }

    fn store(&self, session_id: &str) -> SqlConnStore<C> {
        SqlConnStore {
            session_id: session_id.into(),
            conn: self.conn.clone(),
        }
    }

    /// Opens a session as the concrete store type.
    pub fn open_store(&self, session_id: &str) -> Result<SqlConnStore<C>> {
        let id = text(session_id);
        let found = with_conn(&self.conn, |c| {
            c.query("SELECT 1 FROM sessions WHERE session_id = ?1", &[id])
        })?;
        if found.is_empty() {
            return Err(not_found(session_id));
        }
        Ok(self.store(session_id))
    }

    /// Creates a session and returns the concrete store type.
    pub fn create_store(&self, meta: SessionMeta) -> Result<SqlConnStore<C>> {
        limits::check_meta(&meta)?;
        let json = encode(&meta, "metadata", &meta.session_id)?;
        with_conn(&self.conn, |c| {
            transaction(c, |tx| {
                let exists = tx.query(
                    "SELECT 1 FROM sessions WHERE session_id = ?1",
                    &[text(&meta.session_id)],
                )?;
                if !exists.is_empty() {
                    return Err(Error::AlreadyExists {
                        what: "session",
                        id: meta.session_id.clone(),
                    });
                }
                tx.execute(
                    "INSERT INTO sessions (session_id, owner, created_at_ms, updated_at_ms, meta_json) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    &[
                        text(&meta.session_id),
                        text(&meta.owner),
                        int(meta.created_at_ms, "created_at_ms")?,
                        int(meta.updated_at_ms, "updated_at_ms")?,
                        SqlValue::Text(json.clone()),
                    ],
                )
            })
        })?;
        Ok(self.store(&meta.session_id))
    }

    fn list_where(&self, owner: Option<&str>) -> Result<Vec<SessionMeta>> {
        let owner = owner.map_or(SqlValue::Null, text);
        let rows = with_conn(&self.conn, |c| {
            c.query(
                "SELECT session_id, meta_json FROM sessions WHERE ?1 IS NULL OR owner = ?1 \
                 ORDER BY updated_at_ms DESC, session_id",
                &[owner],
            )
        })?;
        rows.iter()
            .map(|row| {
                let id = get_text(row, 0, "a session id")?;
                decode(get_text(row, 1, "session metadata")?, "metadata", id)
            })
            .collect()
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<C: SqlConn + SendOutsideWasm + 'static> SessionDirectory for SqlConnDirectory<C> {
    async fn create(&self, meta: SessionMeta) -> Result<DynSessionStore> {
        Ok(Arc::new(self.create_store(meta)?))
    }

    async fn open(&self, session_id: &str) -> Result<DynSessionStore> {
        Ok(Arc::new(self.open_store(session_id)?))
    }

    async fn list(&self, owner: &str) -> Result<Vec<SessionMeta>> {
        self.list_where(Some(owner))
    }

    async fn list_all(&self) -> Result<Vec<SessionMeta>> {
        self.list_where(None)
    }

    async fn remove(&self, session_id: &str) -> Result<()> {
        with_conn(&self.conn, |c| {
            transaction(c, |tx| {
                let exists = tx.query(
                    "SELECT 1 FROM sessions WHERE session_id = ?1",
                    &[text(session_id)],
                )?;
                if exists.is_empty() {
                    return Err(not_found(session_id));
                }
                for table in ["events", "questions", "commands", "sessions"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE session_id = ?1"),
                        &[text(session_id)],
                    )?;
                }
                Ok(())
            })
        })
    }
}

/// One session in a [`SqlConnDirectory`]'s database.
pub struct SqlConnStore<C> {
    session_id: Arc<str>,
    conn: Arc<Mutex<C>>,
}

impl<C> Clone for SqlConnStore<C> {
    fn clone(&self) -> Self {
        SqlConnStore {
            session_id: self.session_id.clone(),
            conn: self.conn.clone(),
        }
    }
}

impl<C> std::fmt::Debug for SqlConnStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlConnStore")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl<C: SqlConn> SqlConnStore<C> {
    fn with<T>(&self, f: impl FnOnce(&mut C) -> Result<T>) -> Result<T> {
        with_conn(&self.conn, f)
    }

    fn id(&self) -> SqlValue {
        text(&self.session_id)
    }

    /// Runs a step on this session's log inside one transaction.
    fn step<T>(&self, mut f: impl FnMut(&mut SqlLog<'_>) -> Result<T>) -> Result<T> {
        let session_id = self.session_id.clone();
        self.with(|c| {
            transaction(c, |tx| {
                f(&mut SqlLog {
                    conn: tx,
                    session_id: &session_id,
                })
            })
        })
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl<C: SqlConn + SendOutsideWasm + 'static> SessionStore for SqlConnStore<C> {
    fn session_id(&self) -> &str {
        &self.session_id
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome> {
        // The transaction body is FnMut; the batch moves into its one run.
        let mut batch = Some(batch);
        self.step(|log| {
            let batch = batch.take().ok_or_else(ran_twice)?;
            step::append(log, batch)
        })
    }

    async fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
        // Nothing is stored past MAX_SEQ; a larger `after` has nothing after it.
        if after >= MAX_SEQ {
            return Ok(Vec::new());
        }
        let rows = self.with(|c| {
            c.query(
                "SELECT seq, gseq, at_ms, json FROM events \
                 WHERE session_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                &[
                    self.id(),
                    seq_value(after, "seq")?,
                    SqlValue::Integer(page_limit(limit) as i64),
                ],
            )
        })?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    seq: get_seq(row, 0, "an event's seq")?,
                    gseq: match column(row, 1, "an event's gseq")? {
                        SqlValue::Null => None,
                        _ => Some(get_seq(row, 1, "an event's gseq")?),
                    },
                    at_ms: get_int(row, 2, "an event's at_ms")?,
                    json: get_text(row, 3, "an event's json")?.into(),
                })
            })
            .collect()
    }

    async fn head(&self) -> Result<LogHead> {
        self.with(|c| read_head(c, &self.session_id))
    }

    async fn meta(&self) -> Result<SessionMeta> {
        self.with(|c| read_meta(c, &self.session_id))
    }

    async fn put_meta(&self, meta: &SessionMeta) -> Result<()> {
        let json = encode(meta, "metadata", &self.session_id)?;
        self.with(|c| transaction(c, |tx| write_meta(tx, &self.session_id, meta, &json)))
    }

    /// The append and the metadata in one transaction (one
    /// `transactionSync` in a Durable Object), as the SQLite backend does in
    /// one savepoint: a refused metadata update refuses the events too.
    async fn append_with_meta(
        &self,
        batch: AppendBatch,
        meta: &SessionMeta,
    ) -> Result<AppendOutcome> {
        let json = encode(meta, "metadata", &self.session_id)?;
        let mut batch = Some(batch);
        self.step(|log| {
            let batch = batch.take().ok_or_else(ran_twice)?;
            let outcome = step::append(log, batch)?;
            write_meta(log.conn, log.session_id, meta, &json)?;
            Ok(outcome)
        })
    }

    async fn resolve(
        &self,
        question_id: &str,
        resolution: Resolution,
        command: Option<RecordedCommand>,
    ) -> Result<ResolveOutcome> {
        let mut input = Some((resolution, command));
        self.step(|log| {
            let (resolution, command) = input.take().ok_or_else(ran_twice)?;
            step::resolve(log, question_id, resolution, command)
        })
    }

    async fn questions(&self, pending_only: bool) -> Result<Vec<QuestionRecord>> {
        let rows = self.with(|c| {
            c.query(
                "SELECT question_id, question_json, asked_seq, resolution_json FROM questions \
                 WHERE session_id = ?1 AND (?2 = 0 OR resolution_json IS NULL) ORDER BY asked_seq",
                &[self.id(), SqlValue::Integer(i64::from(pending_only))],
            )
        })?;
        rows.iter()
            .map(|row| {
                let id = get_text(row, 0, "a question id")?;
                Ok(QuestionRecord {
                    question: decode(get_text(row, 1, "a question")?, "question", id)?,
                    asked_seq: get_seq(row, 2, "a question's asked_seq")?,
                    resolution: match row.get(3) {
                        Some(SqlValue::Text(json)) => Some(decode(json, "decision on", id)?),
                        _ => None,
                    },
                })
            })
            .collect()
    }

    async fn unforwarded(&self) -> Result<Vec<RecordedCommand>> {
        let rows = self.with(|c| {
            c.query(
                "SELECT command_id, forward, at_ms FROM commands \
                 WHERE session_id = ?1 AND forward IS NOT NULL AND forwarded = 0 ORDER BY rowid",
                &[self.id()],
            )
        })?;
        rows.iter()
            .map(|row| {
                Ok(RecordedCommand {
                    id: get_text(row, 0, "a command id")?.to_owned(),
                    forward: Some(get_text(row, 1, "a command's frame")?.into()),
                    at_ms: get_int(row, 2, "a command's at_ms")?,
                })
            })
            .collect()
    }

    async fn mark_forwarded(&self, command_id: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE commands SET forwarded = 1 WHERE session_id = ?1 AND command_id = ?2",
                &[self.id(), text(command_id)],
            )
        })
    }

    async fn mark_turn_began(&self, command_id: &str, seq: Seq) -> Result<()> {
        let seq = seq_value(seq, "seq")?;
        self.with(|c| {
            c.execute(
                "UPDATE commands SET forwarded = 1, turn_seq = ?3 \
                 WHERE session_id = ?1 AND command_id = ?2",
                &[self.id(), text(command_id), seq.clone()],
            )
        })
    }

    async fn turn_began_at(&self, seq: Seq) -> Result<bool> {
        let seq = seq_value(seq, "seq")?;
        let rows = self.with(|c| {
            c.query(
                "SELECT 1 FROM commands WHERE session_id = ?1 AND turn_seq = ?2 LIMIT 1",
                &[self.id(), seq.clone()],
            )
        })?;
        Ok(!rows.is_empty())
    }
}

/// One session's log inside a step's transaction.
struct SqlLog<'a> {
    conn: &'a mut dyn SqlConn,
    session_id: &'a str,
}

impl SqlLog<'_> {
    fn id(&self) -> SqlValue {
        text(self.session_id)
    }
}

impl LogStep for SqlLog<'_> {
    fn head(&mut self) -> Result<LogHead> {
        read_head(self.conn, self.session_id)
    }

    fn command_seen(&mut self, command_id: &str) -> Result<bool> {
        let rows = self.conn.query(
            "SELECT 1 FROM commands WHERE session_id = ?1 AND command_id = ?2",
            &[self.id(), text(command_id)],
        )?;
        Ok(!rows.is_empty())
    }

    fn insert_event(&mut self, event: &StoredEvent, highest_gseq: Gseq) -> Result<()> {
        let gseq = match event.gseq {
            Some(g) => seq_value(g, "gseq")?,
            None => SqlValue::Null,
        };
        self.conn.execute(
            "INSERT INTO events (session_id, seq, gseq, highest_gseq, at_ms, json) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                self.id(),
                seq_value(event.seq, "seq")?,
                gseq,
                seq_value(highest_gseq, "gseq")?,
                int(event.at_ms, "at_ms")?,
                text(&event.json),
            ],
        )
    }

    fn ask(&mut self, question: &UserQuestion, asked_seq: Seq) -> Result<()> {
        let json = encode(question, "question", &question.question_id)?;
        self.conn.execute(
            "INSERT INTO questions (session_id, question_id, asked_seq, question_json) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (session_id, question_id) DO NOTHING",
            &[
                self.id(),
                text(&question.question_id),
                seq_value(asked_seq, "seq")?,
                SqlValue::Text(json),
            ],
        )
    }

    fn question_status(&mut self, question_id: &str) -> Result<QuestionStatus> {
        let rows = self.conn.query(
            "SELECT resolution_json FROM questions WHERE session_id = ?1 AND question_id = ?2",
            &[self.id(), text(question_id)],
        )?;
        Ok(match rows.first().map(|row| row.first()) {
            None => QuestionStatus::Unknown,
            Some(Some(SqlValue::Text(json))) => {
                QuestionStatus::Decided(decode(json, "decision on", question_id)?)
            }
            Some(_) => QuestionStatus::Pending,
        })
    }

    fn resolve_pending(&mut self, question_id: &str, resolution: &Resolution) -> Result<()> {
        let json = encode(resolution, "decision on", question_id)?;
        self.conn.execute(
            "UPDATE questions SET resolution_json = ?3 \
             WHERE session_id = ?1 AND question_id = ?2 AND resolution_json IS NULL",
            &[self.id(), text(question_id), SqlValue::Text(json)],
        )
    }

    fn record_command(&mut self, command: &RecordedCommand) -> Result<()> {
        self.conn.execute(
            "INSERT INTO commands (session_id, command_id, forward, at_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (session_id, command_id) DO NOTHING",
            &[
                self.id(),
                text(&command.id),
                command.forward.as_deref().map_or(SqlValue::Null, text),
                int(command.at_ms, "at_ms")?,
            ],
        )
    }
}

fn read_head(conn: &mut dyn SqlConn, session_id: &str) -> Result<LogHead> {
    let rows = conn.query(
        "SELECT seq, highest_gseq FROM events WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1",
        &[text(session_id)],
    )?;
    let Some(row) = rows.first() else {
        // No event yet: the head of an empty log, if the session exists.
        let rows = conn.query(
            "SELECT 1 FROM sessions WHERE session_id = ?1",
            &[text(session_id)],
        )?;
        return match rows.is_empty() {
            false => Ok(LogHead::default()),
            true => Err(not_found(session_id)),
        };
    };
    Ok(LogHead {
        last_seq: get_seq(row, 0, "seq")?,
        highest_gseq: get_seq(row, 1, "highest_gseq")?,
    })
}

/// Replaces a session's metadata, checked against the stored one (the id
/// and owner cannot change); `json` is `meta` encoded.
fn write_meta(
    conn: &mut dyn SqlConn,
    session_id: &str,
    meta: &SessionMeta,
    json: &str,
) -> Result<()> {
    let stored = read_meta(conn, session_id)?;
    limits::check_meta_update(&stored, meta)?;
    conn.execute(
        "UPDATE sessions SET created_at_ms = ?2, updated_at_ms = ?3, meta_json = ?4 \
         WHERE session_id = ?1",
        &[
            text(session_id),
            int(meta.created_at_ms, "created_at_ms")?,
            int(meta.updated_at_ms, "updated_at_ms")?,
            text(json),
        ],
    )
}

fn read_meta(conn: &mut dyn SqlConn, session_id: &str) -> Result<SessionMeta> {
    let rows = conn.query(
        "SELECT meta_json FROM sessions WHERE session_id = ?1",
        &[text(session_id)],
    )?;
    let row = rows.first().ok_or_else(|| not_found(session_id))?;
    decode(
        get_text(row, 0, "session metadata")?,
        "metadata",
        session_id,
    )
}

/// Runs `body` in one transaction of `conn` and returns what it returned.
fn transaction<T>(
    conn: &mut dyn SqlConn,
    mut body: impl FnMut(&mut dyn SqlConn) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    conn.transaction(&mut |tx| {
        out = Some(body(tx)?);
        Ok(())
    })?;
    out.ok_or_else(|| {
        Error::storage(
            BACKEND,
            "the transaction committed without running its body",
        )
    })
}

/// Locks the connection. A poisoned lock is still consistent: a panic inside
/// a transaction leaves it uncommitted, and SQL state lives in the database.
fn with_conn<C, T>(conn: &Mutex<C>, f: impl FnOnce(&mut C) -> Result<T>) -> Result<T> {
    let mut guard: MutexGuard<'_, C> = conn.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

fn ran_twice() -> Error {
    Error::storage(BACKEND, "a transaction ran its body twice")
}

fn not_found(session_id: &str) -> Error {
    Error::NotFound {
        what: "session",
        id: session_id.to_owned(),
    }
}

fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_owned())
}

/// An integer every SQL backend holds exactly: within ±(2^53 - 1), since DO
/// SQL hands numbers to JavaScript as doubles.
fn int(value: i64, what: &str) -> Result<SqlValue> {
    let limit = MAX_SEQ as i64;
    if (-limit..=limit).contains(&value) {
        Ok(SqlValue::Integer(value))
    } else {
        Err(Error::Invalid(format!(
            "{what} {value} is beyond ±{limit}, the largest integer DO SQL stores exactly"
        )))
    }
}

fn seq_value(value: u64, what: &str) -> Result<SqlValue> {
    match i64::try_from(value) {
        Ok(v) if value <= MAX_SEQ => Ok(SqlValue::Integer(v)),
        _ => Err(Error::Invalid(format!(
            "{what} {value} is above {MAX_SEQ}, the largest sequence number a store keeps"
        ))),
    }
}

fn column<'r>(row: &'r [SqlValue], i: usize, what: &str) -> Result<&'r SqlValue> {
    row.get(i)
        .ok_or_else(|| Error::storage(BACKEND, format!("{what}: the row has no column {i}")))
}

fn get_int(row: &[SqlValue], i: usize, what: &str) -> Result<i64> {
    match column(row, i, what)? {
        SqlValue::Integer(v) => Ok(*v),
        other => Err(Error::storage(
            BACKEND,
            format!("{what} is {other:?}, not an integer"),
        )),
    }
}

fn get_seq(row: &[SqlValue], i: usize, what: &str) -> Result<u64> {
    let v = get_int(row, i, what)?;
    u64::try_from(v)
        .map_err(|_| Error::storage(BACKEND, format!("{what} is {v}, which is negative")))
}

fn get_text<'r>(row: &'r [SqlValue], i: usize, what: &str) -> Result<&'r str> {
    match column(row, i, what)? {
        SqlValue::Text(s) => Ok(s),
        other => Err(Error::storage(
            BACKEND,
            format!("{what} is {other:?}, not text"),
        )),
    }
}

fn encode<T: serde::Serialize + ?Sized>(value: &T, what: &str, id: &str) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::Invalid(format!("cannot encode the {what} {id:?}: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(json: &str, what: &str, id: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        Error::storage_from(
            BACKEND,
            format_args!("the stored {what} {id:?} does not decode"),
            e,
        )
    })
}
