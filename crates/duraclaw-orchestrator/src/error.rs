//! [`ApiError`]: the one error answer of the HTTP API, `{"error": "…"}` with
//! the status `duraclaw_host::http` gives it, as an axum response.

use std::fmt;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use duraclaw_core::Error;
use duraclaw_host::http::HttpError;

/// An error answered to an HTTP client: a status and a human-readable
/// message, sent as `{"error": message}` (plus `retry_after_secs` and a
/// `Retry-After` header when the client should wait).
///
/// The message is shown to users: it never carries a password, a token, a
/// hash or a server file path. [`From<duraclaw_core::Error>`] keeps it so by
/// answering storage failures with a generic message and logging the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// `400 Bad Request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `401 Unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// `403 Forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// `404 Not Found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// `409 Conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// `500 Internal Server Error`; log the cause before answering this.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// `429 Too Many Requests`, telling the client to wait `retry_after`
    /// (rounded up to whole seconds, at least 1).
    pub fn too_many_requests(message: impl Into<String>, retry_after: Duration) -> Self {
        let ms = retry_after.as_nanos().div_ceil(1_000_000);
        HttpError::too_many_requests(message, i64::try_from(ms).unwrap_or(i64::MAX)).into()
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message sent as `error`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Seconds the client should wait before retrying, if it should.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = HttpError {
            status: self.status.as_u16(),
            message: self.message,
            retry_after_secs: self.retry_after_secs,
        }
        .body();
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<HttpError> for ApiError {
    fn from(err: HttpError) -> Self {
        ApiError {
            status: StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: err.message,
            retry_after_secs: err.retry_after_secs,
        }
    }
}

impl From<Error> for ApiError {
    /// The status `duraclaw_host::http` gives the error; a server-side one
    /// is logged and answered with a message that leaks nothing.
    fn from(err: Error) -> Self {
        HttpError::from(&err).into()
    }
}
