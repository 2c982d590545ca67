//! A session's worktree and diff over HTTP, the same on both hosts:
//! reading `POST /api/sessions/{id}/close`'s choice, the `request` frames
//! the host sends the gateway, and the answers from the gateway's replies.
//!
//! Closing with `{"worktree":"remove"}`: the host (after checking the
//! session is the user's) sends [`remove_request`]; the gateway stops the
//! session and removes the worktree it made, or refuses (409). Only then
//! does the host close the session as for `keep`.

use duraclaw_core::protocol::{
    ERROR_WORKTREE_DIRTY, ERROR_WORKTREE_NOT_CREATED, GatewayRequest, SessionDiff, WireError,
};

use crate::http::HttpError;

/// What `POST /api/sessions/{id}/close` asks for the session's worktree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseChoice {
    /// Remove the worktree (only one the gateway made for the session).
    pub remove: bool,
    /// Remove it even with uncommitted changes.
    pub force: bool,
}

/// Reads the close body: absent or empty is `keep`; otherwise
/// `{"worktree":"keep"|"remove","force"?:bool}`.
pub fn read_close(body: &[u8]) -> Result<CloseChoice, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CloseChoice::default());
    }
    let bad = || {
        HttpError::new(
            400,
            r#"expected a JSON object {"worktree": "keep" | "remove", "force"?: true | false}"#,
        )
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let serde_json::Value::Object(fields) = value else {
        return Err(bad());
    };
    let remove = match fields.get("worktree") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) if s == "keep" => false,
        Some(serde_json::Value::String(s)) if s == "remove" => true,
        Some(_) => return Err(bad()),
    };
    let force = match fields.get("force") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(bad()),
    };
    Ok(CloseChoice { remove, force })
}

/// The request that removes session `session_id`'s worktree.
pub fn remove_request(session_id: &str, choice: CloseChoice) -> GatewayRequest {
    GatewayRequest::RemoveWorktree {
        session_id: session_id.to_owned(),
        force: choice.force,
    }
}

/// The request for session `session_id`'s diff.
pub fn diff_request(session_id: &str) -> GatewayRequest {
    GatewayRequest::Diff {
        session_id: session_id.to_owned(),
    }
}

/// The HTTP answer to a request the gateway refused.
pub fn refused(e: &WireError) -> HttpError {
    let status = match e.code.as_str() {
        ERROR_WORKTREE_DIRTY | ERROR_WORKTREE_NOT_CREATED => 409,
        "invalid" => 400,
        "not_found" => 404,
        _ => 502,
    };
    HttpError::new(status, e.message.clone())
}

/// How `GET /api/sessions/{id}/diff` answers: `?format=patch` downloads
/// the patch, anything else is JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffFormat {
    /// The [`SessionDiff`] as JSON.
    Json,
    /// The patch as `text/x-diff`, an attachment.
    Patch,
}

impl DiffFormat {
    /// From the request's query string (without `?`).
    pub fn from_query(query: Option<&str>) -> Self {
        let patch = query.is_some_and(|q| q.split('&').any(|kv| kv == "format=patch"));
        if patch {
            DiffFormat::Patch
        } else {
            DiffFormat::Json
        }
    }
}

/// The body of the diff answer in `format`, from the gateway's reply:
/// JSON text, or the patch (refused with 413 when a file was left out, as
/// the patch would be incomplete).
pub fn diff_body(value: serde_json::Value, format: DiffFormat) -> Result<String, HttpError> {
    let diff: SessionDiff = serde_json::from_value(value).map_err(|e| {
        tracing::warn!(error = %e, "the gateway's diff does not decode");
        HttpError::new(502, "the gateway's diff does not decode")
    })?;
    match format {
        DiffFormat::Json => serde_json::to_string(&diff)
            .map_err(|_| HttpError::new(500, crate::http::INTERNAL_MESSAGE)),
        DiffFormat::Patch if diff.truncated => Err(HttpError::new(
            413,
            "the diff is over the size limits (some files show only their stats); \
             a patch of it would be incomplete: use git in the worktree",
        )),
        DiffFormat::Patch => Ok(diff.patch()),
    }
}

/// The download name of session `session_id`'s patch.
pub fn patch_file_name(session_id: &str) -> String {
    let safe: String = session_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    format!("session-{safe}.patch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_close_choice_is_read_strictly() {
        assert_eq!(read_close(b""), Ok(CloseChoice::default()));
        assert_eq!(
            read_close(br#"{"worktree":"keep"}"#),
            Ok(CloseChoice::default())
        );
        assert_eq!(
            read_close(br#"{"worktree":"remove","force":true}"#),
            Ok(CloseChoice {
                remove: true,
                force: true
            })
        );
        for bad in [
            &b"[]"[..],
            br#"{"worktree":"delete"}"#,
            br#"{"force":"yes"}"#,
            b"{",
        ] {
            assert_eq!(read_close(bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn refusals_answer_their_status() {
        assert_eq!(
            refused(&WireError::new(ERROR_WORKTREE_DIRTY, "dirty")).status,
            409
        );
        assert_eq!(
            refused(&WireError::new(ERROR_WORKTREE_NOT_CREATED, "no")).status,
            409
        );
        assert_eq!(refused(&WireError::new("invalid", "no")).status, 400);
        assert_eq!(refused(&WireError::new("internal", "x")).status, 502);
    }

    #[test]
    fn a_truncated_diff_is_no_patch() {
        let diff = serde_json::json!({"worktree": "/w", "files": [
            {"path": "a", "status": "modified", "additions": 1, "deletions": 0, "patch": "diff --git a/a b/a\n"}
        ]});
        assert_eq!(
            DiffFormat::from_query(Some("x=1&format=patch")),
            DiffFormat::Patch
        );
        assert_eq!(DiffFormat::from_query(None), DiffFormat::Json);
        assert_eq!(
            diff_body(diff.clone(), DiffFormat::Patch).unwrap(),
            "diff --git a/a b/a\n"
        );
        let mut cut = diff;
        cut["truncated"] = true.into();
        assert_eq!(diff_body(cut, DiffFormat::Patch).unwrap_err().status, 413);
        assert_eq!(patch_file_name("01A/../b"), "session-01Ab.patch");
    }
}
