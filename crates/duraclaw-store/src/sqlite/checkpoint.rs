//! WAL checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside whichever COMMIT makes the WAL
//! pass 1,000 pages, and a checkpoint `fsync`s the WAL and the database
//! file: 1–30 ms on a loaded disk, paid by the event that happened to
//! commit then. The writer connection therefore runs with
//! `wal_autocheckpoint=0`, and a checkpointer thread with its own connection
//! runs `PRAGMA wal_checkpoint(PASSIVE)` each time the writer says the WAL
//! has grown by [`CHECKPOINT_PAGES`] (while it grows fast, no more often
//! than every [`MIN_NUDGE_INTERVAL`]).
//!
//! A PASSIVE checkpoint blocks neither the writer nor the readers. One that
//! runs while the writer keeps committing cannot copy the frames added
//! meanwhile, and SQLite only starts the WAL over once every frame is
//! copied: under a sustained burst the WAL would grow without end. So the
//! writer checkpoints itself, between two transactions, once the WAL holds
//! [`HARD_LIMIT_PAGES`]: nothing is written meanwhile, so that one copies
//! everything and the WAL starts over. It is a long step (a copy and two
//! `fsync`s) on the writer's thread, so it is taken only when the WAL
//! really is that large, as SQLite's WAL hook reports after every commit:
//! when commits leave the checkpointer moments with every frame copied,
//! the WAL starts over by itself and the writer never stops for a
//! checkpoint; under a sustained stream that never does (the relay
//! bench's closed loop, ~10,000 commits a second, measured so) or a burst,
//! it is the automatic checkpoint again, sixteen times less often than
//! SQLite's own would run.
//!
//! Each of those stops (the copy's two `fsync`s, and the `fsync` of the new
//! WAL header SQLite does in the commit that starts the WAL over) is a few
//! milliseconds for whichever event commits then, so how often they come
//! sets the tail of every event's latency: at three pages per event, a
//! limit of 4,000 pages stopped each tier once every ~1,300 events of a
//! sustained stream, 16,000 pages once every ~5,300, below one event in a
//! thousand for the two tiers together (`docs/PERFORMANCE.md`, "Round 9");
//! at two pages per event (schema version 2), once every ~8,000.
//! The price is a WAL file of up to 64 MB after such a stream (SQLite
//! reuses it from the start; it does not shrink).
//!
//! The writer's own checkpoint never runs on a caller's thread (an async
//! worker): a commit run there that makes it due leaves it to the writer
//! thread.

//! Durability is unchanged: in WAL mode with `synchronous=NORMAL` a COMMIT
//! never `fsync`ed; the checkpoint is where the data reaches the database
//! file either way.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use duraclaw_core::Result;
use rusqlite::Connection;

use super::conn::{open_checkpointer, sql_error};

/// WAL pages after which the writer asks the checkpointer for a
/// checkpoint (and again after as many more): a quarter of SQLite's own
/// `wal_autocheckpoint` default. Smaller checkpoints, more often, keep
/// each one's `fsync`s short, and with them the time a commit beside them
/// waits on the disk: the relay's p99.9 was lower with 250 than with
/// 1,000 in six of six alternating passes, 4,000 was worse still
/// (`docs/PERFORMANCE.md`, "Round 9").
pub(crate) const CHECKPOINT_PAGES: u64 = 250;

/// The least time between two nudges while the WAL has grown by less
/// than [`MAX_NUDGE_PAGES`] since the last. Each checkpoint ends in two
/// `fsync`s; under a burst (a WAL growing by tens of thousands of pages a
/// second) a nudge every [`CHECKPOINT_PAGES`] kept the checkpointer
/// running back to back, and with nudges no closer than this the
/// two-tier burst ran 3–17% faster (fewer checkpoints of more pages each:
/// `docs/PERFORMANCE.md`, "Round 13"). A stream of small commits (the
/// relay's closed loop, ~10,000 pages a second) reaches
/// [`CHECKPOINT_PAGES`] only every 20–30 ms, so this never holds it back.
/// A nudge held back is given by the next commit due: a database that
/// falls idle may keep up to [`MAX_NUDGE_PAGES`] pages in its WAL (250
/// before), which costs space only (the WAL is as durable as ever).
const MIN_NUDGE_INTERVAL: Duration = Duration::from_millis(10);

/// WAL pages after which the checkpointer is nudged however recent the
/// last nudge was.
const MAX_NUDGE_PAGES: u64 = 4 * CHECKPOINT_PAGES;

/// WAL pages after which the writer checkpoints itself (64 MB of 4 KiB
/// pages).
pub(crate) const HARD_LIMIT_PAGES: u64 = 16_000;

/// The page size the estimate of a commit's pages assumes (SQLite's
/// default).
const PAGE_BYTES: u64 = 4096;

/// The writer's side: it reads the WAL's size after each commit, nudges
/// the checkpointer thread every [`CHECKPOINT_PAGES`], and checkpoints
/// itself past [`HARD_LIMIT_PAGES`].
#[derive(Debug)]
pub(crate) struct Nudge {
    tx: SyncSender<()>,
    /// Pages in the WAL after the last commit, set by the WAL hook.
    wal_pages: Arc<AtomicU64>,
    /// The WAL size at which to nudge the checkpointer next.
    next_nudge: u64,
    /// The WAL size at which the writer checkpoints itself.
    own_at: u64,
    /// When the checkpointer was last nudged, and the WAL's size then.
    last_nudge: (Instant, u64),
    /// The names of the threads the writer's own checkpoints ran on.
    #[cfg(test)]
    pub(crate) own_checkpoint_threads: Vec<String>,
}

impl Nudge {
    /// Makes `conn` (the writer's connection) report its WAL's size after
    /// every commit. This replaces SQLite's automatic checkpoint, which is
    /// a WAL hook too.
    pub(crate) fn watch(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let pages = self.wal_pages.clone();
        conn.wal_hook(Some(
            move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
                pages.store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
                Ok(())
            },
        ))
    }

    /// Whether a commit of about `bytes` of events would make the writer
    /// checkpoint the WAL itself (a long step, kept off a caller's thread).
    pub(crate) fn own_checkpoint_due(&self, bytes: u64) -> bool {
        self.wal_pages.load(Ordering::Relaxed) + 3 + 2 * bytes / PAGE_BYTES >= self.own_at
    }

    /// Called after each transaction on the writer's connection `conn`,
    /// between two transactions, and by the writer thread when asked to
    /// look. `on` says whose thread this is: on a caller's, the writer's
    /// own checkpoint is not run; `true` is returned when it is due, for
    /// the writer thread to run it.
    pub(crate) fn committed(&mut self, conn: &Connection, on: Thread) -> bool {
        let pages = self.wal_pages.load(Ordering::Relaxed);
        if pages < self.next_nudge.saturating_sub(CHECKPOINT_PAGES) {
            // The WAL started over.
            self.started_over();
        }
        if pages >= self.own_at {
            if on == Thread::Caller {
                return true;
            }
            #[cfg(test)]
            self.own_checkpoint_threads
                .push(std::thread::current().name().unwrap_or("").to_owned());
            match checkpoint(conn) {
                Ok((0, log, done)) if log == done => {
                    // The next transaction starts the WAL over.
                    self.started_over();
                    self.wal_pages.store(0, Ordering::Relaxed);
                }
                Ok((busy, log, done)) => {
                    // A reader holds old frames: again a little later.
                    tracing::debug!(
                        busy,
                        wal_frames = log,
                        checkpointed = done,
                        "wal not fully checkpointed"
                    );
                    self.own_at = pages + HARD_LIMIT_PAGES / 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "wal checkpoint failed");
                    self.own_at = pages + HARD_LIMIT_PAGES / 2;
                }
            }
            return false;
        }
        if self.nudge_due(pages, Instant::now()) {
            match self.tx.try_send(()) {
                // Full: a checkpoint is already asked for; it covers these pages.
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
        false
    }

    /// The WAL starts over: nudges and the writer's own checkpoint count
    /// from its start again.
    fn started_over(&mut self) {
        self.next_nudge = CHECKPOINT_PAGES;
        self.own_at = HARD_LIMIT_PAGES;
        self.last_nudge.1 = 0;
    }

    /// Whether to nudge the checkpointer now, at `now`, with `pages` in the
    /// WAL: every [`CHECKPOINT_PAGES`], but no sooner than
    /// [`MIN_NUDGE_INTERVAL`] after the last nudge unless the WAL has grown
    /// by [`MAX_NUDGE_PAGES`] since. A nudge held back is given by a later
    /// commit.
    fn nudge_due(&mut self, pages: u64, now: Instant) -> bool {
        if pages < self.next_nudge {
            return false;
        }
        let (at, then) = self.last_nudge;
        if now.saturating_duration_since(at) < MIN_NUDGE_INTERVAL
            && pages < then.saturating_add(MAX_NUDGE_PAGES)
        {
            return false;
        }
        self.last_nudge = (now, pages);
        self.next_nudge = pages + CHECKPOINT_PAGES;
        true
    }
}

/// Whose thread a commit ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Thread {
    /// The writer thread: long steps (checkpoints, `fsync`s) belong here.
    Writer,
    /// A caller's (an async worker's): none of them.
    Caller,
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
        wal_pages: Arc::new(AtomicU64::new(0)),
        next_nudge: CHECKPOINT_PAGES,
        own_at: HARD_LIMIT_PAGES,
        last_nudge: (Instant::now(), 0),
        #[cfg(test)]
        own_checkpoint_threads: Vec::new(),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn nudge() -> Nudge {
        let (tx, _rx) = sync_channel(1);
        Nudge {
            tx,
            wal_pages: Arc::new(AtomicU64::new(0)),
            next_nudge: CHECKPOINT_PAGES,
            own_at: HARD_LIMIT_PAGES,
            last_nudge: (Instant::now(), 0),
            own_checkpoint_threads: Vec::new(),
        }
    }

    #[test]
    fn a_slowly_growing_wal_is_checkpointed_every_checkpoint_pages() {
        let mut n = nudge();
        let start = n.last_nudge.0;
        let step = MIN_NUDGE_INTERVAL * 2;
        let mut nudged = Vec::new();
        // Two pages per commit, the next commit a step later each time
        // 50 pages in: a relay-like stream.
        for i in 1..=1_000u64 {
            let at = start + step * u32::try_from(i / 25).unwrap();
            if n.nudge_due(i * 2, at) {
                nudged.push(i * 2);
            }
        }
        assert_eq!(nudged, vec![250, 500, 750, 1000, 1250, 1500, 1750, 2000]);
    }

    #[test]
    fn a_fast_growing_wal_is_checkpointed_at_most_once_per_interval_or_max_pages() {
        let mut n = nudge();
        let start = n.last_nudge.0;
        // 300 pages per commit, all within one interval: a burst.
        let mut nudged = Vec::new();
        for i in 1..=10u64 {
            if n.nudge_due(i * 300, start) {
                nudged.push(i * 300);
            }
        }
        assert_eq!(nudged, vec![1200, 2400]);
        // Once the interval has passed, the next commit nudges.
        assert!(n.nudge_due(3_000, start + MIN_NUDGE_INTERVAL));
        // Held back, then given by a later commit past the interval.
        assert!(!n.nudge_due(3_300, start + MIN_NUDGE_INTERVAL));
        assert!(n.nudge_due(3_301, start + MIN_NUDGE_INTERVAL * 2));
    }

    #[test]
    fn a_wal_started_over_counts_its_pages_from_zero() {
        let mut n = nudge();
        let start = n.last_nudge.0;
        assert!(n.nudge_due(5_000, start));
        n.started_over();
        // 1,000 pages into the new WAL, within the interval: due, as from
        // an empty WAL, not 1,000 past the old one's 5,000.
        assert!(n.nudge_due(MAX_NUDGE_PAGES, start));
    }
}
