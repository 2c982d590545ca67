//! The SQLite backend: [`SqliteDirectory`] and [`SqliteStore`].
//!
//! One database file holds every session (each table keyed by
//! `session_id`), in WAL mode with `synchronous=NORMAL`. The schema comes
//! from [`Migrations`](duraclaw_core::backend::migrate::Migrations), run on open
//! through [`SqliteConn`].
//!
//! Nothing blocking runs on the async executor:
//!
//! - a dedicated writer thread owns the read-write connection. It takes
//!   every write request queued at that moment (up to
//!   [`SqliteOptions::max_group_events`] events) and commits them in ONE
//!   transaction, each request in its own savepoint so that a failing
//!   request rolls back alone, and answers every caller after COMMIT. A
//!   burst of token deltas from many sessions costs a handful of
//!   transactions, not one per delta ([`SqliteDirectory::stats`] counts
//!   them);
//! - reads run on a small pool of read-only connections via
//!   `spawn_blocking`. WAL lets them proceed while the writer writes;
//! - WAL checkpoints run on a thread of their own, so that no commit waits
//!   for the `fsync`s a checkpoint does (see `checkpoint`).

mod checkpoint;
mod conn;
mod reader;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use duraclaw_core::protocol::Seq;
use duraclaw_core::store::{
    AppendBatch, AppendOutcome, DynSessionStore, LogHead, QuestionRecord, RecordedCommand,
    Resolution, ResolveOutcome, SessionDirectory, SessionMeta, SessionStore, StoredEvent,
    page_limit,
};
use duraclaw_core::{Error, Result};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::schema;
pub use conn::SqliteConn;
use conn::{BACKEND, open_writer, sql_error};
use reader::ReadPool;
use writer::{Counters, Request};

/// How long a connection waits for a lock held by another connection (or
/// process) before it reports the database busy.
pub(crate) const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`SqliteDirectory`] is set up. The defaults suit a server.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    busy_timeout: Duration,
    readers: usize,
    max_group_events: usize,
    queue: usize,
    cache_kib: Option<u32>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            readers: 4,
            max_group_events: 4096,
            queue: 1024,
            cache_kib: None,
        }
    }
}

impl SqliteOptions {
    /// How long to wait for a lock another process holds (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Read-only connections used at once (default 4, at least 1).
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// The most events one group transaction commits (default 4096, at
    /// least 1). A single larger batch is still committed whole, alone.
    pub fn max_group_events(mut self, events: usize) -> Self {
        self.max_group_events = events.max(1);
        self
    }

    /// Write requests that may wait for the writer before callers wait to
    /// queue theirs (default 1024, at least 1).
    pub fn queue(mut self, requests: usize) -> Self {
        self.queue = requests.max(1);
        self
    }

    /// The page cache of the writer and of each reader, in KiB (SQLite's
    /// default, about 2 MiB each, when not set; at least 64).
    pub fn page_cache_kib(mut self, kib: u32) -> Self {
        self.cache_kib = Some(kib.max(64));
        self
    }
}

/// What the writer thread has committed since the directory was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Group transactions committed.
    pub transactions: u64,
    /// Write requests (appends, resolves, metadata updates, …) in them.
    pub requests: u64,
    /// Events stored by them.
    pub events_written: u64,
    /// Group transactions that could not begin or commit.
    pub failed_transactions: u64,
}

impl SqliteStats {
    /// Transactions per 1,000 events written: 1,000 when every event gets
    /// its own transaction, far less under group commit.
    pub fn transactions_per_1000_events(&self) -> f64 {
        if self.events_written == 0 {
            return 0.0;
        }
        self.transactions as f64 * 1000.0 / self.events_written as f64
    }
}

struct Database {
    path: PathBuf,
    writer: mpsc::Sender<Request>,
    core: writer::SharedCore,
    readers: Arc<ReadPool>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Database {
    async fn write<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let mut request = request(tx);
        // Nothing queued: a small request commits here, on the caller's
        // thread, unless the writer thread is running a group right now.
        if self.writer.capacity() == self.writer.max_capacity() {
            match writer::run_alone(&self.core, &self.counters, request) {
                writer::Alone::Ran { maintain } => {
                    if maintain {
                        // Full: the writer is busy and looks after its groups.
                        let _ = self.writer.try_send(Request::Maintain);
                    }
                    return rx.await.map_err(|_| Error::Closed("sqlite writer"))?;
                }
                writer::Alone::Handed(r) => request = *r,
            }
        }
        self.writer
            .send(request)
            .await
            .map_err(|_| Error::Closed("sqlite writer"))?;
        rx.await.map_err(|_| Error::Closed("sqlite writer"))?
    }
}

/// Every session in one SQLite file. Cheap to clone; clones share the
/// writer thread and the read pool, which stop once the directory and
/// every store opened from it are dropped.
#[derive(Debug, Clone)]
pub struct SqliteDirectory {
    db: Arc<Database>,
}

impl SqliteDirectory {
    /// Opens (creating if needed) the database at `path` with the default
    /// [`SqliteOptions`], and brings its schema up to date.
    ///
    /// A file that is not a SQLite database gives [`Error::Storage`] naming
    /// the path; a database written by a newer version gives
    /// [`Error::SchemaTooNew`]. Must be called inside a tokio runtime.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteDirectory::open`] with options.
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let runtime = Handle::try_current().map_err(|_| {
            Error::Invalid("SqliteDirectory::open must be called inside a tokio runtime".into())
        })?;
        let path = path.as_ref().to_path_buf();
        let conn = {
            let target = path.clone();
            let busy = options.busy_timeout;
            let cache = options.cache_kib;
            runtime
                .spawn_blocking(move || open_and_migrate(&target, busy, cache))
                .await
                .map_err(|e| {
                    sql_error(format_args!("opening {} did not finish", path.display()), e)
                })??
        };
        let (tx, rx) = mpsc::channel(options.queue);
        let nudge = checkpoint::start(&path, options.busy_timeout)?;
        let mut conn = conn;
        nudge.watch(&mut conn).map_err(|e| {
            sql_error(
                format_args!("cannot watch the WAL of {}", path.display()),
                e,
            )
        })?;
        let counters = Arc::new(Counters::default());
        let core = Arc::new(std::sync::Mutex::new(writer::Core {
            conn,
            nudge,
            busy_timeout: options.busy_timeout,
            last_commit: None,
        }));
        {
            let counters = counters.clone();
            let core = core.clone();
            let max_group_events = options.max_group_events;
            std::thread::Builder::new()
                .name("duraclaw-sqlite-writer".into())
                .spawn(move || writer::run(core, rx, counters, max_group_events))
                .map_err(|e| {
                    sql_error(
                        format_args!("cannot start the writer thread of {}", path.display()),
                        e,
                    )
                })?;
        }
        let readers = Arc::new(ReadPool::new(
            path.clone(),
            options.busy_timeout,
            options.readers,
            options.cache_kib,
            runtime,
        ));
        Ok(SqliteDirectory {
            db: Arc::new(Database {
                path,
                writer: tx,
                core,
                readers,
                counters,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// What the writer thread has committed so far.
    pub fn stats(&self) -> SqliteStats {
        let c = &self.db.counters;
        SqliteStats {
            transactions: c.transactions.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            events_written: c.events.load(Ordering::Relaxed),
            failed_transactions: c.failed_transactions.load(Ordering::Relaxed),
        }
    }

    /// The newest schema version this build knows.
    pub fn schema_version() -> u32 {
        schema::MIGRATIONS.len() as u32
    }

    fn store(&self, session_id: &str) -> DynSessionStore {
        Arc::new(SqliteStore {
            session_id: session_id.into(),
            db: self.db.clone(),
        })
    }
}

/// Opens the writer connection and migrates; every error names the path.
/// Its commits never checkpoint: the checkpointer thread does.
fn open_and_migrate(
    path: &Path,
    busy_timeout: Duration,
    cache_kib: Option<u32>,
) -> Result<rusqlite::Connection> {
    let conn = open_writer(path, busy_timeout)?;
    conn::set_page_cache(&conn, cache_kib)
        .map_err(|e| sql_error(format_args!("cannot set up {}", path.display()), e))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(|e| sql_error(format_args!("cannot set up {}", path.display()), e))?;
    let mut sql = SqliteConn::new(conn);
    let report = schema::migrations()?.apply(&mut sql).map_err(|e| match e {
        Error::Storage { reason, source, .. } => Error::Storage {
            backend: BACKEND,
            reason: format!("cannot migrate {}: {reason}", path.display()),
            source,
        },
        other => other,
    })?;
    let conn = sql.into_inner();
    if !report.applied.is_empty() {
        tracing::info!(path = %path.display(), from = report.from, to = report.to, "migrated the session database");
        // A migration that rebuilds a table writes all of it to the WAL,
        // and SQLite reuses a WAL file without ever shrinking it: copy it
        // into the database now and truncate it, so that an upgrade does
        // not leave a WAL the size of the log behind for good. Nothing
        // else has the database open yet; a failure costs only the space.
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => {}
            Ok(busy) => {
                tracing::warn!(path = %path.display(), busy, "the WAL was not truncated after the migration")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the WAL was not truncated after the migration")
            }
        }
    }
    Ok(conn)
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl SessionDirectory for SqliteDirectory {
    async fn create(&self, meta: SessionMeta) -> Result<DynSessionStore> {
        let id = meta.session_id.clone();
        self.db
            .write(|reply| Request::Create { meta, reply })
            .await?;
        Ok(self.store(&id))
    }

    async fn open(&self, session_id: &str) -> Result<DynSessionStore> {
        let id = session_id.to_owned();
        if !self
            .db
            .readers
            .read(move |c| reader::exists(c, &id))
            .await?
        {
            return Err(Error::NotFound {
                what: "session",
                id: session_id.to_owned(),
            });
        }
        Ok(self.store(session_id))
    }

    async fn list(&self, owner: &str) -> Result<Vec<SessionMeta>> {
        let owner = owner.to_owned();
        self.db
            .readers
            .read(move |c| reader::list(c, Some(&owner)))
            .await
    }

    async fn list_all(&self) -> Result<Vec<SessionMeta>> {
        self.db.readers.read(move |c| reader::list(c, None)).await
    }

    async fn remove(&self, session_id: &str) -> Result<()> {
        let session_id: Arc<str> = session_id.into();
        self.db
            .write(|reply| Request::Remove { session_id, reply })
            .await
    }
}

/// One session in a [`SqliteDirectory`]'s database.
///
/// A write is queued for the writer thread as soon as its future is first
/// polled; dropping the future after that does not withdraw it, the write
/// may still commit.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    session_id: Arc<str>,
    db: Arc<Database>,
}

impl SqliteStore {
    /// Clears command `command_id`'s mark; `turn_seq`: the event its turn
    /// began with.
    async fn clear_mark(&self, command_id: &str, turn_seq: Option<Seq>) -> Result<()> {
        let session_id = self.session_id.clone();
        let command_id = command_id.to_owned();
        self.db
            .write(|reply| Request::MarkForwarded {
                session_id,
                command_id,
                turn_seq,
                reply,
            })
            .await
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl SessionStore for SqliteStore {
    fn session_id(&self) -> &str {
        &self.session_id
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome> {
        let session_id = self.session_id.clone();
        self.db
            .write(|reply| Request::Append {
                session_id,
                batch,
                meta: None,
                reply,
            })
            .await
    }

    async fn append_with_meta(
        &self,
        batch: AppendBatch,
        meta: &SessionMeta,
    ) -> Result<AppendOutcome> {
        let session_id = self.session_id.clone();
        let meta = Some(Box::new(meta.clone()));
        self.db
            .write(|reply| Request::Append {
                session_id,
                batch,
                meta,
                reply,
            })
            .await
    }

    async fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
        let id = self.session_id.clone();
        let limit = page_limit(limit);
        self.db
            .readers
            .read(move |c| reader::read_after(c, &id, after, limit))
            .await
    }

    async fn head(&self) -> Result<LogHead> {
        let id = self.session_id.clone();
        self.db.readers.read(move |c| reader::head(c, &id)).await
    }

    async fn meta(&self) -> Result<SessionMeta> {
        let id = self.session_id.clone();
        self.db.readers.read(move |c| reader::meta(c, &id)).await
    }

    async fn put_meta(&self, meta: &SessionMeta) -> Result<()> {
        let session_id = self.session_id.clone();
        let meta = meta.clone();
        self.db
            .write(|reply| Request::PutMeta {
                session_id,
                meta,
                reply,
            })
            .await
    }

    async fn resolve(
        &self,
        question_id: &str,
        resolution: Resolution,
        command: Option<RecordedCommand>,
    ) -> Result<ResolveOutcome> {
        let session_id = self.session_id.clone();
        let question_id = question_id.to_owned();
        self.db
            .write(|reply| Request::Resolve {
                session_id,
                question_id,
                resolution,
                command,
                reply,
            })
            .await
    }

    async fn questions(&self, pending_only: bool) -> Result<Vec<QuestionRecord>> {
        let id = self.session_id.clone();
        self.db
            .readers
            .read(move |c| reader::questions(c, &id, pending_only))
            .await
    }

    async fn unforwarded(&self) -> Result<Vec<RecordedCommand>> {
        let id = self.session_id.clone();
        self.db
            .readers
            .read(move |c| reader::unforwarded(c, &id))
            .await
    }

    async fn mark_forwarded(&self, command_id: &str) -> Result<()> {
        self.clear_mark(command_id, None).await
    }

    async fn mark_turn_began(&self, command_id: &str, seq: Seq) -> Result<()> {
        self.clear_mark(command_id, Some(seq)).await
    }

    async fn turn_began_at(&self, seq: Seq) -> Result<bool> {
        let id = self.session_id.clone();
        self.db
            .readers
            .read(move |c| reader::turn_began_at(c, &id, seq))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use duraclaw_core::backend::migrate::SqlConn;
    use duraclaw_core::protocol::{Assistant, AssistantPhase, Event};
    use duraclaw_core::store::NewEvent;

    use super::*;
    use crate::test_events::{T0, ev};

    async fn temp_directory() -> (SqliteDirectory, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SqliteDirectory::open(tmp.path().join("sessions.db"))
            .await
            .unwrap();
        (dir, tmp)
    }

    #[tokio::test]
    async fn the_page_cache_bound_holds_for_the_writer_and_the_readers() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = |c: &rusqlite::Connection| -> i64 {
            c.pragma_query_value(None, "cache_size", |r| r.get(0))
                .unwrap()
        };
        let dir = SqliteDirectory::open_with(
            tmp.path().join("bounded.db"),
            SqliteOptions::default().page_cache_kib(256),
        )
        .await
        .unwrap();
        let read = dir.db.readers.read(move |c| Ok(cache(c))).await.unwrap();
        let written = cache(&dir.db.core.lock().unwrap().conn);
        assert_eq!((read, written), (-256, -256));
        let (default, _tmp) = temp_directory().await;
        let read = default
            .db
            .readers
            .read(move |c| Ok(cache(c)))
            .await
            .unwrap();
        assert_ne!(read, -256);
    }

    #[tokio::test]
    async fn a_storage_error_keeps_sqlites_error_as_its_source() {
        use std::error::Error as _;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("not-a-database.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = SqliteDirectory::open(&path).await.unwrap_err();
        assert!(matches!(err, Error::Storage { .. }), "{err}");
        let source = err.source().expect("the SQLite error is kept");
        assert!(source.is::<rusqlite::Error>(), "{source:?}");
        assert!(err.to_string().contains(&source.to_string()), "{err}");
    }

    type Pending<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

    /// Polls every future once, so each has queued its request, and checks
    /// none has finished.
    async fn queue_all<T>(futs: &mut [Pending<T>]) {
        std::future::poll_fn(|cx| {
            for f in futs.iter_mut() {
                assert!(f.as_mut().poll(cx).is_pending(), "finished before COMMIT");
            }
            Poll::Ready(())
        })
        .await;
    }

    /// Holds the database's write lock from another connection, so the
    /// writer waits and requests pile up behind it.
    fn hold_write_lock(dir: &SqliteDirectory) -> rusqlite::Connection {
        let blocker = rusqlite::Connection::open(dir.path()).unwrap();
        blocker.busy_timeout(Duration::from_secs(5)).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        blocker
    }

    fn text_event(text: &str) -> NewEvent {
        let e = Event::Assistant(Assistant {
            message_id: "m".into(),
            phase: AssistantPhase::Delta,
            text: text.into(),
            aborted: false,
        });
        NewEvent::new(&e, None, T0).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_takes_every_queued_request() {
        let (dir, _tmp) = temp_directory().await;
        let mut stores = Vec::new();
        for i in 0..4 {
            stores.push(
                dir.create(SessionMeta::new(format!("s{i}"), "alice", T0))
                    .await
                    .unwrap(),
            );
        }
        let before = dir.stats();
        assert_eq!(before.transactions, 4);
        let blocker = hold_write_lock(&dir);
        let mut futs: Vec<Pending<AppendOutcome>> = (0..200u64)
            .map(|i| {
                let store = stores[(i % 4) as usize].clone();
                Box::pin(async move { store.append(AppendBatch::events(vec![ev(i, None)])).await })
                    as Pending<_>
            })
            .collect();
        queue_all(&mut futs).await;
        blocker.execute_batch("COMMIT").unwrap();
        for out in futures::future::join_all(futs).await {
            assert_eq!(out.unwrap().stored.len(), 1);
        }
        let after = dir.stats();
        // A lone first request may have taken the connection on its caller's
        // thread and the writer a first group before either met the lock;
        // everything queued behind them is one more transaction.
        assert!(
            after.transactions - before.transactions <= 3,
            "{before:?} -> {after:?}"
        );
        assert_eq!(after.events_written - before.events_written, 200);
        assert_eq!(after.requests - before.requests, 200);
        assert!(after.transactions_per_1000_events() < 40.0, "{after:?}");
        for store in &stores {
            let seqs: Vec<_> = store
                .read_after(0, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_request_rolls_back_alone() {
        let (dir, _tmp) = temp_directory().await;
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        // A write that fails half-way: the second insert of a batch.
        rusqlite::Connection::open(dir.path())
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON events WHEN NEW.json LIKE '%boom%' \
                 BEGIN SELECT RAISE(ABORT, 'boom refused'); END;",
            )
            .unwrap();
        let before = dir.stats();
        let blocker = hold_write_lock(&dir);
        let batches = [
            vec![text_event("one")],
            vec![text_event("half"), text_event("boom")],
            vec![text_event("two")],
        ];
        let mut futs: Vec<Pending<AppendOutcome>> = batches
            .into_iter()
            .map(|events| {
                let store = store.clone();
                Box::pin(async move { store.append(AppendBatch::events(events)).await })
                    as Pending<_>
            })
            .collect();
        queue_all(&mut futs).await;
        blocker.execute_batch("COMMIT").unwrap();
        let outs = futures::future::join_all(futs).await;
        assert_eq!(outs[0].as_ref().unwrap().stored[0].seq, 1);
        let err = outs[1].as_ref().unwrap_err();
        assert!(err.to_string().contains("boom refused"), "{err}");
        assert_eq!(outs[2].as_ref().unwrap().stored[0].seq, 2);
        let texts: Vec<_> = store
            .read_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.json.contains("half"))
            .collect();
        assert_eq!(texts, vec![false, false]);
        assert_eq!(store.head().await.unwrap().last_seq, 2);
        let after = dir.stats();
        assert!(after.transactions - before.transactions <= 2);
        assert_eq!(after.events_written - before.events_written, 2);
        assert_eq!(after.failed_transactions, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_with_meta_is_one_transaction() {
        let (dir, _tmp) = temp_directory().await;
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        let mut meta = store.meta().await.unwrap();
        meta.updated_at_ms = T0 + 1;
        let before = dir.stats();
        store
            .append_with_meta(AppendBatch::events(vec![text_event("one")]), &meta)
            .await
            .unwrap();
        let after = dir.stats();
        assert_eq!(after.transactions - before.transactions, 1);
        assert_eq!(after.requests - before.requests, 1);
        assert_eq!(store.meta().await.unwrap().updated_at_ms, T0 + 1);
    }

    /// A lone commit on a caller's thread (an async worker) that makes the
    /// writer's own checkpoint due leaves it to the writer thread: no copy
    /// and no `fsync` on the caller's thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_own_checkpoint_stays_off_callers_threads() {
        let (dir, _tmp) = temp_directory().await;
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        store
            .append(AppendBatch::events(vec![ev(1, None)]))
            .await
            .unwrap();
        // Another connection fills the WAL past the writer's own limit,
        // unseen by the writer's estimate (its WAL hook reports only its
        // own commits).
        let raw = rusqlite::Connection::open(dir.path()).unwrap();
        raw.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; CREATE TABLE filler (b BLOB); \
             INSERT INTO filler VALUES (zeroblob({}));",
            checkpoint::HARD_LIMIT_PAGES * 4096
        ))
        .unwrap();
        // A lone event: it commits on this task's thread.
        store
            .append(AppendBatch::events(vec![ev(2, None)]))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ran = loop {
            let names = dir
                .db
                .core
                .lock()
                .unwrap()
                .nudge
                .own_checkpoint_threads
                .clone();
            if !names.is_empty() {
                break names;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint of the writer's own"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(
            ran.iter().all(|n| n == "duraclaw-sqlite-writer"),
            "the writer's own checkpoint ran on {ran:?}"
        );
        assert_eq!(store.head().await.unwrap().last_seq, 2);
    }

    /// Commits never checkpoint; the checkpointer thread does, and the
    /// writer steps in when a sustained burst outruns it, so the WAL is
    /// reused instead of growing with everything written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_keep_the_wal_bounded() {
        let (dir, _tmp) = temp_directory().await;
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        let mut wal = dir.path().as_os_str().to_owned();
        wal.push("-wal");
        let text = "x".repeat(2000);
        // About 240 MB through the log (more than three times the writer's
        // own limit), in transactions of ~200 KB, back to back.
        for _ in 0..1200 {
            let events = (0..100).map(|_| text_event(&text)).collect();
            store.append(AppendBatch::events(events)).await.unwrap();
        }
        // The WAL file keeps the largest size it ever reached.
        let len = std::fs::metadata(&wal).unwrap().len();
        let limit = checkpoint::HARD_LIMIT_PAGES * 4096;
        assert!(
            len < limit + limit / 4,
            "the WAL grew to {len} bytes (the writer's own limit: {limit})"
        );
        assert_eq!(store.head().await.unwrap().last_seq, 120_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopened_database_continues_the_log() {
        let (dir, _tmp) = temp_directory().await;
        let path = dir.path().to_owned();
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        store
            .append(AppendBatch::events(vec![ev(0, Some(4)), ev(1, None)]))
            .await
            .unwrap();
        drop(store);
        drop(dir);
        let dir = SqliteDirectory::open(&path).await.unwrap();
        assert_eq!(dir.stats(), SqliteStats::default());
        let store = dir.open("s").await.unwrap();
        let out = store
            .append(AppendBatch::events(vec![ev(2, Some(4)), ev(3, Some(5))]))
            .await
            .unwrap();
        assert_eq!(out.duplicates, 1);
        assert_eq!(out.stored[0].seq, 3);
        assert_eq!(dir.stats().events_written, 1);
        assert_eq!(SqliteDirectory::schema_version(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_and_writes_from_many_tasks() {
        let (dir, _tmp) = temp_directory().await;
        let dir = SqliteDirectory::open_with(
            dir.path(),
            SqliteOptions::default().readers(2).max_group_events(8),
        )
        .await
        .unwrap();
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25u64 {
                    let events = (0..3).map(|k| ev(t * 1000 + i * 10 + k, None)).collect();
                    store.append(AppendBatch::events(events)).await.unwrap();
                    let head = store.head().await.unwrap();
                    assert!(head.last_seq >= 3);
                    store.read_after(head.last_seq - 3, 3).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let all = store.read_after(0, 1000).await.unwrap();
        assert_eq!(all.len(), 600);
        assert!(all.iter().zip(1..).all(|(e, s)| e.seq == s));
        // Each group stays within its event budget (8), so at least 600 / 8.
        assert!(dir.stats().transactions >= 75, "{:?}", dir.stats());
    }

    #[test]
    fn open_outside_a_runtime_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = futures::executor::block_on(SqliteDirectory::open(tmp.path().join("x.db")))
            .unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[test]
    fn sql_conn_nests_transactions_as_savepoints() {
        let mut conn = SqliteConn::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        conn.transaction(&mut |tx| {
            tx.execute("INSERT INTO t VALUES (1)", &[])?;
            let inner = tx.transaction(&mut |tx| {
                tx.execute("INSERT INTO t VALUES (2)", &[])?;
                Err(Error::Invalid("inner fails".into()))
            });
            assert!(inner.is_err());
            tx.transaction(&mut |tx| tx.execute("INSERT INTO t VALUES (3)", &[]))
        })
        .unwrap();
        let rows = conn.query("SELECT x FROM t ORDER BY x", &[]).unwrap();
        let xs: Vec<_> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
        assert_eq!(xs, vec![1, 3]);
        assert!(conn.connection().is_autocommit());
        let err = conn.query("SELECT 1.5", &[]).unwrap_err();
        assert!(err.to_string().contains("REAL"), "{err}");
    }
}
