//! Errors as HTTP answers, the same on both hosts: a status, and the body
//! `{"error": "…"}` (with `retry_after_secs` when the client should wait).

use duraclaw_core::Error;
use duraclaw_core::protocol::WireError;

/// The message of every server-side failure: storage and schema errors
/// name files and SQL, so they are logged and not shown.
pub const INTERNAL_MESSAGE: &str = "internal server error; the server log has the details";

/// An error answered to an HTTP client. The message is shown to users: it
/// never carries a password, a token, a hash or a server file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status.
    pub status: u16,
    /// The message sent as `error`.
    pub message: String,
    /// Seconds the client should wait before retrying (`Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl HttpError {
    /// An error with this status and message.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// `429`, telling the client to wait `wait_ms` (in whole seconds,
    /// rounded up, at least 1).
    pub fn too_many_requests(message: impl Into<String>, wait_ms: i64) -> Self {
        HttpError {
            retry_after_secs: Some(crate::auth::limits::retry_after_secs(wait_ms)),
            ..Self::new(429, message)
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self.retry_after_secs {
            Some(secs) => serde_json::json!({ "error": self.message, "retry_after_secs": secs }),
            None => serde_json::json!({ "error": self.message }),
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for HttpError {}

impl From<&Error> for HttpError {
    /// The answer to a core error. A server-side failure is logged here and
    /// answered with [`INTERNAL_MESSAGE`].
    fn from(err: &Error) -> Self {
        let status = match err {
            Error::Decode { .. } | Error::Invalid(_) => 400,
            Error::Unauthorized(message) => return HttpError::new(401, message.clone()),
            Error::NotFound { .. } => 404,
            Error::AlreadyExists { .. } | Error::IllegalTransition { .. } => 409,
            Error::TooLarge { .. } => 413,
            Error::UnsupportedVersion { .. } | Error::Closed(_) => 502,
            Error::Executor { .. } | Error::ExecutorUnsupported(_) => 503,
            Error::Timeout { .. } => 504,
            _ => {
                tracing::error!(error = %err, "request failed on a server error");
                return HttpError::new(500, INTERNAL_MESSAGE);
            }
        };
        HttpError::new(status, err.to_string())
    }
}

impl From<Error> for HttpError {
    fn from(err: Error) -> Self {
        HttpError::from(&err)
    }
}

/// The status of a command the gateway refused, by its wire error code.
pub fn wire_status(err: &WireError) -> u16 {
    match err.code.as_str() {
        "invalid" | "not_found" | duraclaw_core::protocol::ERROR_AGENT_UNAVAILABLE => 400,
        "worktree_busy" => 409,
        "executor" | "executor_unsupported" => 503,
        _ => 502,
    }
}

impl From<&WireError> for HttpError {
    fn from(err: &WireError) -> Self {
        HttpError::new(wire_status(err), err.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_answer_their_status() {
        let cases: Vec<(Error, u16)> = vec![
            (Error::Invalid("bad".into()), 400),
            (Error::decode_msg("x", "y"), 400),
            (Error::Unauthorized("who?".into()), 401),
            (
                Error::NotFound {
                    what: "session",
                    id: "s".into(),
                },
                404,
            ),
            (
                Error::AlreadyExists {
                    what: "user",
                    id: "a".into(),
                },
                409,
            ),
            (
                Error::TooLarge {
                    what: "x",
                    size: 2,
                    limit: 1,
                },
                413,
            ),
            (Error::Closed("link"), 502),
            (Error::executor("gone"), 503),
            (Error::ExecutorUnsupported("claude 1.0 < 2.0".into()), 503),
            (Error::Timeout { what: "x", ms: 1 }, 504),
        ];
        for (err, status) in cases {
            let answer = HttpError::from(&err);
            assert_eq!(answer.status, status, "{err}");
            assert_ne!(answer.message, INTERNAL_MESSAGE);
        }
        assert_eq!(
            HttpError::from(Error::Unauthorized("who?".into())).message,
            "who?"
        );
    }

    #[test]
    fn server_failures_do_not_show_their_cause() {
        let err = Error::storage("sqlite", "/srv/data/auth.db: disk I/O error");
        let answer = HttpError::from(&err);
        assert_eq!(
            (answer.status, answer.message.as_str()),
            (500, INTERNAL_MESSAGE)
        );
        assert_eq!(
            answer.body(),
            serde_json::json!({ "error": INTERNAL_MESSAGE })
        );
    }

    #[test]
    fn gateway_refusals_answer_by_their_code() {
        for (code, status) in [
            ("worktree_busy", 409),
            ("invalid", 400),
            ("not_found", 400),
            ("executor", 503),
            ("executor_unsupported", 503),
            ("agent_unavailable", 400),
            ("anything_else", 502),
        ] {
            let answer = HttpError::from(&WireError::new(code, "why"));
            assert_eq!((answer.status, answer.message.as_str()), (status, "why"));
        }
    }

    #[test]
    fn a_rate_limit_says_how_long_to_wait() {
        let answer = HttpError::too_many_requests("slow down", 1_500);
        assert_eq!(answer.status, 429);
        assert_eq!(
            answer.body(),
            serde_json::json!({ "error": "slow down", "retry_after_secs": 2 })
        );
        assert_eq!(
            HttpError::too_many_requests("x", 0).retry_after_secs,
            Some(1)
        );
    }
}
