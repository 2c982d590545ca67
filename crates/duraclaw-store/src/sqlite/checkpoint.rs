//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside whichever COMMIT makes the WAL
//! pass 1,000 pages, and a checkpoint `fsync`s the WAL and the database
//! file: 1–30 ms on a loaded disk, paid by the event that happened to
//! commit then. The writer connection therefore runs with
//! `wal_autocheckpoint=0`, and a checkpointer thread with its own connection
//! runs `PRAGMA wal_checkpoint(PASSIVE)` when the writer says the WAL has
//! grown by about as much as the automatic checkpoint would have allowed.
//!
//! A PASSIVE checkpoint blocks neither the writer nor the readers. One that
//! runs while the writer keeps committing cannot copy the frames added
//! meanwhile, and SQLite only starts the WAL over once every frame is
//! copied: under a sustained burst the WAL would grow without end. So the
//! writer also checkpoints itself, between two transactions, every
//! [`HARD_LIMIT_PAGES`] or so: nothing is written meanwhile, so that one
//! copies everything and the WAL starts over. When the checkpointer kept up
//! it finds nothing left to copy and costs no `fsync`; under a sustained
//! burst it is the automatic checkpoint again, four times less often.

//! Durability is unchanged: in WAL mode with `synchronous=NORMAL` a COMMIT
//! never `fsync`ed; the checkpoint is where the data reaches the database
//! file either way.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use duraclaw_core::Result;
use rusqlite::Connection;

use super::conn::{open_checkpointer, sql_error};

/// WAL pages written before the writer asks for a checkpoint: SQLite's
/// own `wal_autocheckpoint` default.
pub(crate) const CHECKPOINT_PAGES: u64 = 1000;

/// WAL pages written after which the writer checkpoints itself (16 MB of
/// 4 KiB pages).
pub(crate) const HARD_LIMIT_PAGES: u64 = 4 * CHECKPOINT_PAGES;

/// The page size the estimate assumes (SQLite's default).
const PAGE_BYTES: u64 = 4096;

/// The writer's side: it estimates the pages it wrote, nudges the
/// checkpointer thread once they pass [`CHECKPOINT_PAGES`], and checkpoints
/// itself past [`HARD_LIMIT_PAGES`].
#[derive(Debug)]
pub(crate) struct Nudge {
    tx: SyncSender<()>,
    since_nudge: u64,
    since_own: u64,
}

impl Nudge {
    /// Whether a commit of about `bytes` of events would make the writer
    /// checkpoint the WAL itself (a long step, kept off a caller's thread).
    pub(crate) fn own_checkpoint_due(&self, bytes: u64) -> bool {
        self.since_own + 3 + 2 * bytes / PAGE_BYTES >= HARD_LIMIT_PAGES
    }

    /// Counts a committed transaction that stored `bytes` of events, on the
    /// writer's connection `conn`, between two transactions.
    pub(crate) fn committed(&mut self, conn: &Connection, bytes: u64) {
        // A transaction writes at least the pages it touched (the events'
        // leaf, its index, the session row), and rows of events fill pages
        // about half: twice the JSON's bytes.
        let pages = 3 + 2 * bytes / PAGE_BYTES;
        self.since_nudge += pages;
        self.since_own += pages;
        if self.since_own >= HARD_LIMIT_PAGES {
            self.since_own = 0;
            match checkpoint(conn) {
                Ok((0, log, done)) if log == done => self.since_nudge = 0,
                Ok((busy, log, done)) => {
                    // The checkpointer or a reader holds old frames: soon again.
                    tracing::debug!(
                        busy,
                        wal_frames = log,
                        checkpointed = done,
                        "wal not fully checkpointed"
                    );
                    self.since_own = HARD_LIMIT_PAGES / 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "wal checkpoint failed");
                    self.since_own = HARD_LIMIT_PAGES / 2;
                }
            }
            return;
        }
        if self.since_nudge < CHECKPOINT_PAGES {
            return;
        }
        match self.tx.try_send(()) {
            // Full: a checkpoint is already asked for; it covers these pages.
            Ok(()) | Err(TrySendError::Full(())) => self.since_nudge = 0,
            Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// Starts the checkpointer thread of the database at `path`. It stops when
/// the returned [`Nudge`] is dropped (the writer stopped).
pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Result<Nudge> {
    let conn = open_checkpointer(path, busy_timeout)?;
    let (tx, rx) = sync_channel(1);
    let name = path.display().to_string();
    std::thread::Builder::new()
        .name("duraclaw-sqlite-checkpoint".into())
        .spawn(move || run(&conn, &rx, &name))
        .map_err(|e| {
            sql_error(
                format_args!("cannot start the checkpoint thread of {}", path.display()),
                e,
            )
        })?;
    Ok(Nudge {
        tx,
        since_nudge: 0,
        since_own: 0,
    })
}

fn run(conn: &Connection, rx: &Receiver<()>, path: &str) {
    while rx.recv().is_ok() {
        match checkpoint(conn) {
            Ok((busy, log, done)) => {
                tracing::trace!(
                    path,
                    busy,
                    wal_frames = log,
                    checkpointed = done,
                    "wal checkpoint"
                );
            }
            Err(e) => tracing::warn!(path, error = %e, "wal checkpoint failed"),
        }
    }
}

/// One PASSIVE checkpoint: (busy, frames in the WAL, frames checkpointed).
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}
