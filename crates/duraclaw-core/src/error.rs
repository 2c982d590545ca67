//! The one error type of Duraclaw's core and its backends.

use crate::state::{SessionInput, SessionState};

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error, boxed: the source an [`Error`] keeps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the core and the backends built on it.
///
/// Each variant carries what failed and with which value, so an error read
/// in a log or shown to a user says enough to act on. Where an underlying
/// error caused it, that error is kept as the [`source`] (for downcasting)
/// and its text is also part of this error's message, so one line says
/// everything.
///
/// [`source`]: std::error::Error::source
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
        /// The decoder's error, when there is one.
        #[source]
        source: Option<BoxError>,
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
        /// The error the step returned.
        #[source]
        source: Option<BoxError>,
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
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The executor (e.g. the Claude Code CLI) failed.
    #[error("executor error: {message}")]
    Executor {
        /// What failed, with the underlying error's text.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The executor cannot run sessions safely here (e.g. the Claude Code
    /// CLI is older than the minimum supported version); the message names
    /// what was found and what is needed.
    #[error("{0}")]
    ExecutorUnsupported(String),
    /// The other end of a link or channel is gone.
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
    /// An I/O operation failed.
    #[error("i/o error: {source}")]
    Io {
        /// The I/O error.
        #[from]
        source: std::io::Error,
    },
    /// Any other failure, with what was being done and the error it gave;
    /// made by [`Error::other`].
    #[error("{context}: {source}")]
    Other {
        /// What was being done.
        context: String,
        /// The error it gave.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A [`Error::Decode`] keeping the decoder's error as its source.
    pub fn decode(what: &'static str, err: impl Into<BoxError>) -> Self {
        let source = err.into();
        Error::Decode {
            what,
            reason: source.to_string(),
            source: Some(source),
        }
    }

    /// A [`Error::Decode`] with an explanation and no underlying error.
    pub fn decode_msg(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Decode {
            what,
            reason: reason.into(),
            source: None,
        }
    }

    /// A [`Error::Storage`] saying what went wrong, with no underlying error.
    pub fn storage(backend: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Storage {
            backend,
            reason: reason.to_string(),
            source: None,
        }
    }

    /// A [`Error::Storage`] for `what` failing with `err`, which it keeps as
    /// its source; the message reads `{what}: {err}`.
    pub fn storage_from(
        backend: &'static str,
        what: impl std::fmt::Display,
        err: impl Into<BoxError>,
    ) -> Self {
        let source = err.into();
        Error::Storage {
            backend,
            reason: format!("{what}: {source}"),
            source: Some(source),
        }
    }

    /// A [`Error::Executor`] with a message and no underlying error.
    pub fn executor(message: impl Into<String>) -> Self {
        Error::Executor {
            message: message.into(),
            source: None,
        }
    }

    /// A [`Error::Executor`] for `what` failing with `err`, which it keeps as
    /// its source; the message reads `{what}: {err}`.
    pub fn executor_from(what: impl std::fmt::Display, err: impl Into<BoxError>) -> Self {
        let source = err.into();
        Error::Executor {
            message: format!("{what}: {source}"),
            source: Some(source),
        }
    }

    /// An [`Error::Other`]: `context` says what was being done, `err` is
    /// the error it gave, of any type.
    pub fn other(context: impl Into<String>, err: impl Into<BoxError>) -> Self {
        Error::Other {
            context: context.into(),
            source: err.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_source_is_kept_and_named_in_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Error::storage_from("sqlite", "cannot open db.sqlite", io);
        assert_eq!(
            err.to_string(),
            "sqlite storage error: cannot open db.sqlite: no such file"
        );
        let source = err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(source.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));

        let json = serde_json::from_str::<u32>("x").unwrap_err();
        let text = json.to_string();
        let err = Error::decode("frame", json);
        assert_eq!(err.to_string(), format!("cannot decode frame: {text}"));
        assert!(err.source().is_some_and(|s| s.is::<serde_json::Error>()));

        let err: Error = std::io::Error::other("disk full").into();
        assert_eq!(err.to_string(), "i/o error: disk full");
        assert!(err.source().is_some());

        let err = Error::other("cannot call the bot", std::fmt::Error);
        assert!(err.to_string().starts_with("cannot call the bot: "));
        assert!(err.source().is_some_and(|s| s.is::<std::fmt::Error>()));

        assert!(Error::executor("gone").source().is_none());
        assert_eq!(Error::executor("gone").to_string(), "executor error: gone");
    }
}
