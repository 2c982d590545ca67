//! # duraclaw-store
//!
//! Backends of [`SessionStore`](duraclaw_core::store::SessionStore) and
//! [`SessionDirectory`](duraclaw_core::store::SessionDirectory):
//!
//! - [`memory`]: [`MemoryDirectory`], everything in process memory; for tests
//!   and for embedding where nothing must survive a restart.
//! - [`sqlite`]: [`SqliteDirectory`], one SQLite file (bundled SQLite, WAL)
//!   holding every session. A dedicated writer thread group-commits
//!   concurrent appends into one transaction; reads run on a small pool of
//!   read-only connections through `spawn_blocking`. Nothing blocking ever
//!   runs on the async executor. Behind the default feature `sqlite`.
//! - [`sql_store`]: [`SqlConnDirectory`], every session in one database
//!   reached through any synchronous, in-process
//!   [`SqlConn`](duraclaw_core::backend::migrate::SqlConn): what a Cloudflare Durable
//!   Object's SQL storage is. Builds for wasm32 (without `sqlite`).
//! - [`schema`]: the SQL schema of the event log every SQL store uses, as
//!   versioned migrations.
//!
//! Every backend applies the same step logic (dense seqs, gseq dedupe,
//! questions first-answer-wins, command ids applied once), so they behave
//! identically.
//!
//! ```
//! use duraclaw_core::store::{AppendBatch, NewEvent, SessionDirectory, SessionMeta};
//! use duraclaw_core::protocol::{Event, UserMessage};
//! use duraclaw_store::MemoryDirectory;
//!
//! # futures::executor::block_on(async {
//! let dir = MemoryDirectory::new();
//! let store = dir.create(SessionMeta::new("s1", "alice", 0)).await?;
//! let hello = Event::UserMessage(UserMessage { text: "hello".into(), by: None, queued: false });
//! let out = store.append(AppendBatch::events(vec![NewEvent::new(&hello, None, 0)?])).await?;
//! assert_eq!(out.stored[0].seq, 1);
//! # Ok::<(), duraclaw_core::Error>(())
//! # }).unwrap();
//! ```

pub mod memory;
pub mod schema;
pub mod sql_store;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(test)]
mod test_events;

pub use memory::{MemoryDirectory, MemoryStore};
pub use sql_store::{SqlConnDirectory, SqlConnStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConn, SqliteDirectory, SqliteOptions, SqliteStats, SqliteStore};
