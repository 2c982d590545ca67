//! The one error type of Duraclaw's core and its backends.

use crate::state::{SessionInput, SessionState};

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core and the backends built on it.
///
/// Each variant carries what failed and with which value, so an error read
/// in a log or shown to a user says enough to act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input could not be decoded (bad JSON, a missing field, a wrong type).
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded, e.g. "gateway frame".
        what: &'static str,
        /// The decoder's explanation, with line and column where known.
        reason: String,
    },
    /// A frame or payload is larger than the limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The peer speaks a protocol version this code does not.
    #[error("peer speaks protocol version {got}, this side speaks version {supported}")]
    UnsupportedVersion {
        /// The version the peer announced.
        got: u32,
        /// The version this code speaks.
        supported: u32,
    },
    /// The database was written by a newer version of Duraclaw.
    #[error(
        "database schema is at version {found}, newer than the {known} this build knows; \
         upgrade Duraclaw or restore a backup made by this version"
    )]
    SchemaTooNew {
        /// Version recorded in the database.
        found: u32,
        /// Newest version this code knows.
        known: u32,
    },
    /// A migration that was already applied has been edited since.
    #[error(
        "migration {version} ({name}) was applied with checksum {applied} but the code now has \
         {current}; an applied migration must never change, add a new one instead"
    )]
    MigrationEdited {
        /// The migration's version.
        version: u32,
        /// The migration's name.
        name: String,
        /// Checksum recorded when it was applied.
        applied: String,
        /// Checksum of the code's migration now.
        current: String,
    },
    /// A migration step failed; it was rolled back with its version bump.
    #[error("migration {version} ({name}) failed and was rolled back: {reason}")]
    MigrationFailed {
        /// The migration's version.
        version: u32,
        /// The migration's name.
        name: String,
        /// Why it failed.
        reason: String,
    },
    /// The session state machine refused a transition.
    #[error("illegal session transition: {input:?} in state {from:?}")]
    IllegalTransition {
        /// The state the session was in.
        from: SessionState,
        /// The input that does not apply to it.
        input: SessionInput,
    },
    /// Something looked up by id does not exist.
    #[error("{what} {id:?} not found")]
    NotFound {
        /// The kind of thing, e.g. "session".
        what: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// Something created by id already exists.
    #[error("{what} {id:?} already exists")]
    AlreadyExists {
        /// The kind of thing.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// A request was well-formed but not acceptable (bad worktree path, busy
    /// worktree, empty prompt, ...).
    #[error("{0}")]
    Invalid(String),
    /// Authentication or authorisation failed. Never carries the secret.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The storage backend failed (I/O, a file that is not a database, a
    /// full disk, a corrupt row).
    #[error("{backend} storage error: {reason}")]
    Storage {
        /// Which backend, e.g. "sqlite".
        backend: &'static str,
        /// What went wrong, with the underlying error's text.
        reason: String,
    },
    /// The executor (e.g. the Claude Code CLI) failed.
    #[error("executor error: {0}")]
    Executor(String),
    /// The executor cannot run sessions safely here (e.g. the Claude Code
    /// CLI is older than the minimum supported version); the message names
    /// what was found and what is needed.
    #[error("{0}")]
    ExecutorUnsupported(String),
    /// The other end of a relay or channel is gone.
    #[error("{0} closed")]
    Closed(&'static str),
    /// An operation did not complete within its deadline.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The deadline in milliseconds.
        ms: u64,
    },
}

impl Error {
    /// A [`Error::Decode`] from a serde_json error.
    pub fn decode(what: &'static str, err: &serde_json::Error) -> Self {
        Error::Decode {
            what,
            reason: err.to_string(),
        }
    }

    /// A [`Error::Storage`] from any displayable error.
    pub fn storage(backend: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Storage {
            backend,
            reason: err.to_string(),
        }
    }
}
