//! What both hosts answer on a browser's session WebSocket when they cannot
//! serve it: an `error` frame with a [`WireError`], then a close whose code
//! says why (`docs/protocol.md`, "Refusals on the browser socket").

use crate::protocol::{MAX_FRAME_BYTES, Seq, WireError};

/// Close code after a binary frame: the link speaks JSON text only.
pub const CLOSE_BAD_FRAME: u16 = 1003;
/// Close code after a text frame over [`MAX_FRAME_BYTES`].
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// Close code for a client that resumes after a seq the log does not have
/// (its copy is from another history): it should drop its copy and
/// reconnect from 0.
pub const CLOSE_AHEAD_OF_LOG: u16 = 4409;

/// The most a host's transport reads of one message: above
/// [`MAX_FRAME_BYTES`], so that a frame over the limit is read and answered
/// with `too_large` rather than cut off unanswered; a message larger still
/// ends the connection without an answer.
pub const TRANSPORT_MAX_MESSAGE_BYTES: usize = 4 * MAX_FRAME_BYTES;

/// A refusal: the `error` frame to send, then the close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `error` frame's body.
    pub error: WireError,
    /// The close code.
    pub close_code: u16,
    /// The close reason (under the 123 bytes a close frame holds).
    pub close_reason: &'static str,
}

/// Refuses a text frame of `len` bytes over [`MAX_FRAME_BYTES`].
pub fn check_text(len: usize) -> Result<(), Refusal> {
    if len <= MAX_FRAME_BYTES {
        return Ok(());
    }
    Err(Refusal {
        error: WireError::new(
            "too_large",
            format!("a frame is {len} bytes, over the limit of {MAX_FRAME_BYTES} bytes"),
        ),
        close_code: CLOSE_TOO_LARGE,
        close_reason: "frame too large",
    })
}

/// Refuses a binary frame: the link carries JSON text frames only.
pub fn refuse_binary() -> Refusal {
    Refusal {
        error: WireError::new(
            "bad_frame",
            "binary frames are not supported; send JSON text frames",
        ),
        close_code: CLOSE_BAD_FRAME,
        close_reason: "binary frame",
    }
}

/// Refuses to resume after `after` when the log ends at `last_seq` below it:
/// the client holds events this log never had.
pub fn check_resume(after: Seq, last_seq: Seq) -> Result<(), Refusal> {
    if after <= last_seq {
        return Ok(());
    }
    Err(Refusal {
        error: WireError::new(
            "ahead_of_log",
            format!(
                "after={after} is ahead of this session's log, which ends at seq {last_seq}: \
                 your copy is from another history; drop it and reconnect with after=0"
            ),
        ),
        close_code: CLOSE_AHEAD_OF_LOG,
        close_reason: "ahead of the log: reconnect with after=0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_up_to_the_limit_pass_and_larger_ones_are_refused() {
        assert_eq!(check_text(MAX_FRAME_BYTES), Ok(()));
        let r = check_text(MAX_FRAME_BYTES + 1).unwrap_err();
        assert_eq!((r.error.code.as_str(), r.close_code), ("too_large", 1009));
        assert!(r.error.message.contains(&MAX_FRAME_BYTES.to_string()));
        let b = refuse_binary();
        assert_eq!((b.error.code.as_str(), b.close_code), ("bad_frame", 1003));
        const { assert!(TRANSPORT_MAX_MESSAGE_BYTES > 2 * MAX_FRAME_BYTES) };
    }

    #[test]
    fn a_client_ahead_of_the_log_is_refused() {
        assert_eq!(check_resume(0, 0), Ok(()));
        assert_eq!(check_resume(7, 7), Ok(()));
        let r = check_resume(8, 7).unwrap_err();
        assert_eq!(
            (r.error.code.as_str(), r.close_code),
            ("ahead_of_log", 4409)
        );
        assert!(r.error.message.contains("after=8"), "{}", r.error.message);
        for r in [r, refuse_binary(), check_text(usize::MAX).unwrap_err()] {
            assert!(r.close_reason.len() <= 123, "{}", r.close_reason);
        }
    }
}
