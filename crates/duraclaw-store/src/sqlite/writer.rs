//! The writer thread: it owns the one read-write connection and commits
//! every write request queued at the moment in ONE transaction (group
//! commit), each request inside its own savepoint so a failing request rolls
//! back alone. Callers wait on a oneshot that is answered after COMMIT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use duraclaw_core::error::BoxError;
use duraclaw_core::protocol::{Gseq, Seq, UserQuestion};
use duraclaw_core::store::{
    AppendBatch, AppendOutcome, LogHead, RecordedCommand, Resolution, ResolveOutcome, SessionMeta,
    StoredEvent,
};
use duraclaw_core::{Error, Result};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{Nudge, Thread};
use super::conn::{BACKEND, sql_error, to_i64};
use super::reader::decode_resolution;
use duraclaw_core::backend::limits;
use duraclaw_core::backend::step::{self, LogStep, QuestionStatus};

/// The most write requests one group transaction takes.
const MAX_GROUP_REQUESTS: usize = 1024;

type Reply<T> = oneshot::Sender<Result<T>>;

/// A write, queued for the writer thread.
pub(crate) enum Request {
    Create {
        meta: SessionMeta,
        reply: Reply<()>,
    },
    Append {
        session_id: Arc<str>,
        batch: AppendBatch,
        /// The session's new metadata, written in the same savepoint.
        meta: Option<Box<SessionMeta>>,
        reply: Reply<AppendOutcome>,
    },
    Resolve {
        session_id: Arc<str>,
        question_id: String,
        resolution: Resolution,
        command: Option<RecordedCommand>,
        reply: Reply<ResolveOutcome>,
    },
    PutMeta {
        session_id: Arc<str>,
        meta: SessionMeta,
        reply: Reply<()>,
    },
    MarkForwarded {
        session_id: Arc<str>,
        command_id: String,
        /// The seq of the event the command's turn began with, if any.
        turn_seq: Option<Seq>,
        reply: Reply<()>,
    },
    Remove {
        session_id: Arc<str>,
        reply: Reply<()>,
    },
    /// No write: the writer thread looks at the WAL (a checkpoint of its
    /// own is due).
    Maintain,
}

impl Request {
    /// How much of a group's event budget the request uses.
    fn weight(&self) -> usize {
        match self {
            Request::Append { batch, .. } => batch.events.len().max(1),
            _ => 1,
        }
    }

    /// Runs the request on `conn`, inside the group's transaction.
    fn run(self, conn: &Connection) -> Done {
        match self {
            Request::Create { meta, reply } => Done::Unit(reply, create(conn, &meta)),
            Request::Append {
                session_id,
                batch,
                meta,
                reply,
            } => {
                let mut log = SqlLog::new(conn, &session_id);
                let out = step::append(&mut log, batch).and_then(|out| match meta {
                    Some(meta) => put_meta(conn, &session_id, &meta).map(|()| out),
                    None => Ok(out),
                });
                Done::Append(reply, out)
            }
            Request::Resolve {
                session_id,
                question_id,
                resolution,
                command,
                reply,
            } => {
                let mut log = SqlLog::new(conn, &session_id);
                Done::Resolve(
                    reply,
                    step::resolve(&mut log, &question_id, resolution, command),
                )
            }
            Request::PutMeta {
                session_id,
                meta,
                reply,
            } => Done::Unit(reply, put_meta(conn, &session_id, &meta)),
            Request::MarkForwarded {
                session_id,
                command_id,
                turn_seq,
                reply,
            } => Done::Unit(
                reply,
                mark_forwarded(conn, &session_id, &command_id, turn_seq),
            ),
            Request::Remove { session_id, reply } => Done::Unit(reply, remove(conn, &session_id)),
            Request::Maintain => Done::Nothing,
        }
    }

    /// The request answered with `err` without running.
    fn refuse(self, err: Error) -> Done {
        match self {
            Request::Create { reply, .. }
            | Request::PutMeta { reply, .. }
            | Request::MarkForwarded { reply, .. }
            | Request::Remove { reply, .. } => Done::Unit(reply, Err(err)),
            Request::Append { reply, .. } => Done::Append(reply, Err(err)),
            Request::Resolve { reply, .. } => Done::Resolve(reply, Err(err)),
            Request::Maintain => Done::Nothing,
        }
    }
}

/// A request run, its reply held until the group commits.
enum Done {
    Unit(Reply<()>, Result<()>),
    Append(Reply<AppendOutcome>, Result<AppendOutcome>),
    Resolve(Reply<ResolveOutcome>, Result<ResolveOutcome>),
    /// Nothing to answer.
    Nothing,
}

impl Done {
    fn is_ok(&self) -> bool {
        match self {
            Done::Unit(_, r) => r.is_ok(),
            Done::Append(_, r) => r.is_ok(),
            Done::Resolve(_, r) => r.is_ok(),
            Done::Nothing => true,
        }
    }

    /// Events this request stored, once committed.
    fn events_written(&self) -> u64 {
        let n = match self {
            Done::Append(_, Ok(out)) => out.stored.len(),
            Done::Resolve(_, Ok(ResolveOutcome::Decided(_))) => 1,
            _ => 0,
        };
        n as u64
    }

    /// Bytes of event JSON this request stored, once committed.
    fn bytes_written(&self) -> u64 {
        let n: usize = match self {
            Done::Append(_, Ok(out)) => out.stored.iter().map(|e| e.json.len()).sum(),
            Done::Resolve(_, Ok(ResolveOutcome::Decided(e))) => e.json.len(),
            _ => 0,
        };
        n as u64
    }

    fn into_err(self, err: Error) -> Done {
        match self {
            Done::Unit(tx, _) => Done::Unit(tx, Err(err)),
            Done::Append(tx, _) => Done::Append(tx, Err(err)),
            Done::Resolve(tx, _) => Done::Resolve(tx, Err(err)),
            Done::Nothing => Done::Nothing,
        }
    }

    /// Answers the caller. With `failure`, a request that succeeded inside
    /// the group is answered with that failure instead (the group did not
    /// commit); a request that failed keeps its own error. A caller that
    /// stopped waiting is no error.
    fn send(self, failure: Option<&str>) {
        let done = match failure {
            Some(f) if self.is_ok() => self.into_err(Error::storage(
                BACKEND,
                format!("the group transaction did not commit: {f}"),
            )),
            _ => self,
        };
        match done {
            Done::Unit(tx, r) => drop(tx.send(r)),
            Done::Append(tx, r) => drop(tx.send(r)),
            Done::Resolve(tx, r) => drop(tx.send(r)),
            Done::Nothing => {}
        }
    }
}

/// Counters of what the writer committed.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) failed_transactions: AtomicU64,
}

/// The writer's connection and its checkpoint accounting: used by the
/// writer thread for each group, and by a caller that finds the writer
/// idle ([`run_alone`]).
pub(crate) struct Core {
    pub(crate) conn: Connection,
    pub(crate) nudge: Nudge,
    /// The connection's busy timeout, restored after a [`run_alone`].
    pub(crate) busy_timeout: std::time::Duration,
    /// The session of the last request committed (the last of its group),
    /// and when.
    pub(crate) last_commit: Option<(Arc<str>, std::time::Instant)>,
}

/// How long after a commit for one session another session's request may
/// not run on its caller's thread ([`run_alone`]).
const ALONE_OTHER_SESSION_GAP: std::time::Duration = std::time::Duration::from_millis(1);

impl Request {
    /// The session the request writes to.
    fn session(&self) -> &str {
        match self {
            Request::Create { meta, .. } => &meta.session_id,
            Request::Append { session_id, .. }
            | Request::Resolve { session_id, .. }
            | Request::PutMeta { session_id, .. }
            | Request::MarkForwarded { session_id, .. }
            | Request::Remove { session_id, .. } => session_id,
            Request::Maintain => "",
        }
    }
}

/// The core, shared by the writer thread and the callers.
pub(crate) type SharedCore = Arc<Mutex<Core>>;

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the writer loop until every sender is gone.
pub(crate) fn run(
    core: SharedCore,
    mut rx: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
    max_group_events: usize,
) {
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.blocking_recv() {
                Some(r) => r,
                None => break,
            },
        };
        let mut weight = 0;
        let mut group = Vec::new();
        if !matches!(first, Request::Maintain) {
            weight = first.weight();
            group.push(first);
        }
        while weight < max_group_events && group.len() < MAX_GROUP_REQUESTS {
            match rx.try_recv() {
                Ok(Request::Maintain) => {}
                Ok(r) if weight + r.weight() > max_group_events => {
                    carry = Some(r);
                    break;
                }
                Ok(r) => {
                    weight += r.weight();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let last: Arc<str> = group
            .last()
            .map(Request::session)
            .unwrap_or_default()
            .into();
        let mut core = lock(&core);
        let Core {
            conn,
            nudge,
            last_commit,
            ..
        } = &mut *core;
        if !group.is_empty() {
            run_group(conn, group, &counters);
            *last_commit = Some((last, std::time::Instant::now()));
        }
        nudge.committed(conn, Thread::Writer);
    }
    tracing::debug!("sqlite writer stopped: every store and directory is gone");
}

/// The most events, and bytes of events, of a request run on its caller's
/// thread ([`run_alone`]): a lone token delta or tool result, a metadata
/// update; anything bigger goes to the writer thread.
const ALONE_MAX_EVENTS: usize = 4;
const ALONE_MAX_BYTES: usize = 16 * 1024;

/// What [`run_alone`] did.
pub(crate) enum Alone {
    /// Committed and answered; with `maintain`, the writer thread has a
    /// checkpoint of its own to run ([`Request::Maintain`]).
    Ran { maintain: bool },
    /// Not run: the request, for the writer thread.
    Handed(Box<Request>),
}

/// Runs a small `request` as a group of its own on the calling thread if
/// nobody holds the connection (the writer thread is between groups) and
/// no checkpoint of the writer's own is due; hands it back otherwise. A
/// request run is answered before this returns; a checkpoint it makes due
/// is left to the writer thread.
///
/// Only while one session writes: a request within 1 ms of a commit for
/// another session goes to the writer thread.
///
/// A lone request then costs no thread hand-off: the caller neither wakes
/// the writer thread nor waits to be woken by it (two thread wake-ups, tens
/// of microseconds each on a busy machine). The commit itself is a `write`
/// to the WAL (no `fsync` with `synchronous=NORMAL`), tens of
/// microseconds; requests that meet in the queue still commit as one
/// group on the writer thread.
pub(crate) fn run_alone(core: &SharedCore, counters: &Counters, request: Request) -> Alone {
    let bytes = match &request {
        Request::Append { batch, .. } if batch.events.len() <= ALONE_MAX_EVENTS => {
            batch.events.iter().map(|e| e.json.len()).sum()
        }
        Request::Append { .. } | Request::Maintain => return Alone::Handed(Box::new(request)),
        _ => 0,
    };
    if bytes > ALONE_MAX_BYTES {
        return Alone::Handed(Box::new(request));
    }
    let mut core = match core.try_lock() {
        Ok(c) => c,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return Alone::Handed(Box::new(request)),
    };
    let Core {
        conn,
        nudge,
        busy_timeout,
        last_commit,
    } = &mut *core;
    if nudge.own_checkpoint_due(bytes as u64) {
        return Alone::Handed(Box::new(request));
    }
    // One session streaming commits here; several sessions writing at
    // once leave their requests to meet in the writer's queue (commits on
    // the callers' threads would take the async workers' time from
    // everything else, one transaction each).
    if let Some((session, at)) = last_commit.as_ref()
        && **session != *request.session()
        && at.elapsed() < ALONE_OTHER_SESSION_GAP
    {
        return Alone::Handed(Box::new(request));
    }
    // Never wait here for another connection's write lock: that is the
    // writer thread's job, not a caller's.
    if conn.busy_timeout(std::time::Duration::ZERO).is_err() {
        return Alone::Handed(Box::new(request));
    }
    let began = exec(conn, "BEGIN IMMEDIATE");
    if let Err(e) = conn.busy_timeout(*busy_timeout) {
        tracing::warn!(error = %e, "cannot restore the writer's busy timeout");
    }
    if began.is_err() {
        return Alone::Handed(Box::new(request));
    }
    let session: Arc<str> = match last_commit.take() {
        Some((s, _)) if *s == *request.session() => s,
        _ => request.session().into(),
    };
    commit_group(conn, vec![request], counters);
    let maintain = nudge.committed(conn, Thread::Caller);
    *last_commit = Some((session, std::time::Instant::now()));
    Alone::Ran { maintain }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs a group in one transaction; the bytes of events it committed.
fn run_group(conn: &Connection, group: Vec<Request>, counters: &Counters) -> u64 {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        counters.failed_transactions.fetch_add(1, Ordering::Relaxed);
        let reason = sql_error("cannot begin a write transaction", e).to_string();
        for r in group {
            r.refuse(Error::storage(BACKEND, reason.clone())).send(None);
        }
        return 0;
    }
    commit_group(conn, group, counters)
}

/// Runs a group inside the transaction just begun, and commits it; the
/// bytes of events it committed.
fn commit_group(conn: &Connection, mut group: Vec<Request>, counters: &Counters) -> u64 {
    let mut done = Vec::with_capacity(group.len());
    if group.len() == 1
        && let Some(r) = group.pop()
    {
        // A group of one needs no savepoint: the transaction is the
        // request's, and a failure rolls it back whole.
        let d = run_unguarded(conn, r);
        if !d.is_ok() {
            rollback(conn);
            d.send(None);
            return 0;
        }
        done.push(d);
    }
    for r in group {
        done.push(run_one(conn, r));
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            let events: u64 = done.iter().map(Done::events_written).sum();
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            counters
                .requests
                .fetch_add(done.len() as u64, Ordering::Relaxed);
            counters.events.fetch_add(events, Ordering::Relaxed);
            let bytes = done.iter().map(Done::bytes_written).sum();
            for d in done {
                d.send(None);
            }
            bytes
        }
        Err(e) => {
            counters.failed_transactions.fetch_add(1, Ordering::Relaxed);
            rollback(conn);
            let failure = e.to_string();
            tracing::error!(error = %failure, "group commit failed");
            for d in done {
                d.send(Some(&failure));
            }
            0
        }
    }
}

/// Runs a request alone in the transaction just begun, without a
/// savepoint: the caller rolls the transaction back if it failed.
fn run_unguarded(conn: &Connection, request: Request) -> Done {
    if conn.is_autocommit() {
        return request.refuse(Error::storage(
            BACKEND,
            "the transaction was rolled back by SQLite before this request",
        ));
    }
    request.run(conn)
}

/// Rolls back the open transaction, if SQLite has not already.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = exec(conn, "ROLLBACK")
    {
        tracing::error!(error = %e, "cannot roll a failed transaction back");
    }
}

/// Runs one request in its own savepoint: released if it succeeded, rolled
/// back alone if it failed.
fn run_one(conn: &Connection, request: Request) -> Done {
    // SQLite may have rolled the whole transaction back after an I/O error;
    // running on would write outside the group, so refuse instead.
    if conn.is_autocommit() {
        return request.refuse(Error::storage(
            BACKEND,
            "the group transaction was rolled back by SQLite before this request",
        ));
    }
    if let Err(e) = exec(conn, "SAVEPOINT request") {
        return request.refuse(sql_error("cannot open a savepoint", e));
    }
    let done = request.run(conn);
    if done.is_ok() {
        match exec(conn, "RELEASE request") {
            Ok(()) => return done,
            Err(e) => {
                let err = sql_error("cannot release a savepoint", e);
                rollback_to(conn);
                return done.into_err(err);
            }
        }
    }
    rollback_to(conn);
    done
}

fn rollback_to(conn: &Connection) {
    if conn.is_autocommit() {
        return;
    }
    if let Err(e) = exec(conn, "ROLLBACK TO request").and_then(|()| exec(conn, "RELEASE request")) {
        tracing::error!(error = %e, "cannot roll a failed request back to its savepoint");
    }
}

/// Deletes a session's rows from every table.
fn remove(conn: &Connection, session_id: &str) -> Result<()> {
    for table in ["events", "questions", "commands"] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE session_id = ?1"))
            .and_then(|mut s| s.execute(params![session_id]))
            .map_err(|e| {
                sql_error(
                    format_args!("cannot remove the {table} of session {session_id:?}"),
                    e,
                )
            })?;
    }
    let removed = conn
        .prepare_cached("DELETE FROM sessions WHERE session_id = ?1")
        .and_then(|mut s| s.execute(params![session_id]))
        .map_err(|e| sql_error(format_args!("cannot remove session {session_id:?}"), e))?;
    if removed == 0 {
        return Err(Error::NotFound {
            what: "session",
            id: session_id.to_owned(),
        });
    }
    Ok(())
}

fn create(conn: &Connection, meta: &SessionMeta) -> Result<()> {
    limits::check_meta(meta)?;
    let exists = conn
        .prepare_cached("SELECT 1 FROM sessions WHERE session_id = ?1")
        .and_then(|mut s| s.exists(params![meta.session_id]))
        .map_err(|e| {
            sql_error(
                format_args!("cannot look up session {:?}", meta.session_id),
                e,
            )
        })?;
    if exists {
        return Err(Error::AlreadyExists {
            what: "session",
            id: meta.session_id.clone(),
        });
    }
    let json = encode_meta(meta)?;
    conn.prepare_cached(
        "INSERT INTO sessions (session_id, owner, created_at_ms, updated_at_ms, meta_json) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            meta.session_id,
            meta.owner,
            meta.created_at_ms,
            meta.updated_at_ms,
            json
        ])
    })
    .map_err(|e| {
        sql_error(
            format_args!("cannot create session {:?}", meta.session_id),
            e,
        )
    })?;
    Ok(())
}

fn put_meta(conn: &Connection, session_id: &str, meta: &SessionMeta) -> Result<()> {
    // The update itself checks that the session exists and keeps its owner
    // (no read and decode of the stored metadata on every ingest); when it
    // changes nothing, the stored row says what was wrong.
    if meta.session_id == session_id && limits::check_meta(meta).is_ok() {
        let json = encode_meta(meta)?;
        let changed = conn
            .prepare_cached(
                "UPDATE sessions SET created_at_ms = ?2, updated_at_ms = ?3, meta_json = ?4 \
                 WHERE session_id = ?1 AND owner = ?5",
            )
            .and_then(|mut s| {
                s.execute(params![
                    session_id,
                    meta.created_at_ms,
                    meta.updated_at_ms,
                    json,
                    meta.owner
                ])
            })
            .map_err(|e| sql_error(format_args!("cannot update session {session_id:?}"), e))?;
        if changed == 1 {
            return Ok(());
        }
    }
    let stored = super::reader::meta(conn, session_id)?;
    limits::check_meta_update(&stored, meta)?;
    Err(Error::storage(
        BACKEND,
        format!("the metadata of session {session_id:?} was not updated"),
    ))
}

/// Clears a command's mark; `turn_seq`: the event its turn began with
/// (kept when the mark is cleared again without one).
fn mark_forwarded(
    conn: &Connection,
    session_id: &str,
    command_id: &str,
    turn_seq: Option<Seq>,
) -> Result<()> {
    let turn_seq = turn_seq.map(|s| to_i64(s, "seq")).transpose()?;
    conn.prepare_cached(
        "UPDATE commands SET forwarded = 1, turn_seq = coalesce(?3, turn_seq) \
         WHERE session_id = ?1 AND command_id = ?2",
    )
    .and_then(|mut s| s.execute(params![session_id, command_id, turn_seq]))
    .map_err(|e| {
        sql_error(
            format_args!("cannot mark command {command_id:?} of session {session_id:?} forwarded"),
            e,
        )
    })?;
    Ok(())
}

fn encode_meta(meta: &SessionMeta) -> Result<String> {
    serde_json::to_string(meta).map_err(|e| {
        Error::Invalid(format!(
            "cannot encode the metadata of session {:?}: {e}",
            meta.session_id
        ))
    })
}

/// One session's log inside the group transaction.
struct SqlLog<'c> {
    conn: &'c Connection,
    session_id: &'c str,
}

impl<'c> SqlLog<'c> {
    fn new(conn: &'c Connection, session_id: &'c str) -> Self {
        SqlLog { conn, session_id }
    }

    fn err(&self, what: &str, e: impl Into<BoxError>) -> Error {
        sql_error(format_args!("{what} in session {:?}", self.session_id), e)
    }
}

impl LogStep for SqlLog<'_> {
    fn head(&mut self) -> Result<LogHead> {
        super::reader::head(self.conn, self.session_id)
    }

    fn command_seen(&mut self, command_id: &str) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM commands WHERE session_id = ?1 AND command_id = ?2")
            .and_then(|mut s| s.exists(params![self.session_id, command_id]))
            .map_err(|e| self.err(&format!("cannot look up command {command_id:?}"), e))
    }

    fn insert_event(&mut self, event: &StoredEvent, highest_gseq: Gseq) -> Result<()> {
        let seq = to_i64(event.seq, "seq")?;
        let gseq = event.gseq.map(|g| to_i64(g, "gseq")).transpose()?;
        let highest_gseq = to_i64(highest_gseq, "gseq")?;
        self.conn
            .prepare_cached(
                "INSERT INTO events (session_id, seq, gseq, highest_gseq, at_ms, json) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    self.session_id,
                    seq,
                    gseq,
                    highest_gseq,
                    event.at_ms,
                    &*event.json
                ])
            })
            .map_err(|e| self.err(&format!("cannot store event {}", event.seq), e))?;
        Ok(())
    }

    fn ask(&mut self, question: &UserQuestion, asked_seq: Seq) -> Result<()> {
        let json = serde_json::to_string(question).map_err(|e| {
            Error::Invalid(format!(
                "cannot encode question {:?}: {e}",
                question.question_id
            ))
        })?;
        let seq = to_i64(asked_seq, "seq")?;
        self.conn
            .prepare_cached(
                "INSERT INTO questions (session_id, question_id, asked_seq, question_json) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (session_id, question_id) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![self.session_id, question.question_id, seq, json]))
            .map_err(|e| {
                self.err(
                    &format!("cannot record question {:?}", question.question_id),
                    e,
                )
            })?;
        Ok(())
    }

    fn question_status(&mut self, question_id: &str) -> Result<QuestionStatus> {
        let row: Option<Option<String>> = self
            .conn
            .prepare_cached(
                "SELECT resolution_json FROM questions WHERE session_id = ?1 AND question_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![self.session_id, question_id], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(&format!("cannot look up question {question_id:?}"), e))?;
        Ok(match row {
            None => QuestionStatus::Unknown,
            Some(None) => QuestionStatus::Pending,
            Some(Some(json)) => {
                QuestionStatus::Decided(decode_resolution(&json, self.session_id, question_id)?)
            }
        })
    }

    fn resolve_pending(&mut self, question_id: &str, resolution: &Resolution) -> Result<()> {
        let json = serde_json::to_string(resolution).map_err(|e| {
            Error::Invalid(format!(
                "cannot encode the decision on question {question_id:?}: {e}"
            ))
        })?;
        self.conn
            .prepare_cached(
                "UPDATE questions SET resolution_json = ?3 \
                 WHERE session_id = ?1 AND question_id = ?2 AND resolution_json IS NULL",
            )
            .and_then(|mut s| s.execute(params![self.session_id, question_id, json]))
            .map_err(|e| self.err(&format!("cannot resolve question {question_id:?}"), e))?;
        Ok(())
    }

    fn record_command(&mut self, command: &RecordedCommand) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO commands (session_id, command_id, forward, at_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (session_id, command_id) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    self.session_id,
                    command.id,
                    command.forward.as_deref(),
                    command.at_ms
                ])
            })
            .map_err(|e| self.err(&format!("cannot record command {:?}", command.id), e))?;
        Ok(())
    }
}
