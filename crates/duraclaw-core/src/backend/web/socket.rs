//! What both hosts answer on a browser's session WebSocket when they cannot
//! serve it: an `error` frame with a [`WireError`], then a close whose code
//! says why (`docs/protocol.md`, "Refusals on the browser socket").

use crate::protocol::{Epoch, MAX_FRAME_BYTES, Seq, WireError};
use crate::store::LogEpoch;

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

/// Refuses to resume after `after` when the log ends at `last_seq` below it
/// (the client holds events this log never had), or when the client names
/// the log's `epoch` it saw those events in and the log has lost events at
/// or below `after` since ([`LogEpoch::resumable`] over the session's
/// `epochs`; a host that keeps none never refuses on an epoch).
pub fn check_resume(
    after: Seq,
    last_seq: Seq,
    epoch: Option<Epoch>,
    epochs: &[LogEpoch],
) -> Result<(), Refusal> {
    if after > last_seq {
        return Err(ahead(
            format!(
                "after={after} is ahead of this session's log, which ends at seq {last_seq}: \
                 your copy is from another history; drop it and reconnect with after=0"
            ),
            "ahead of the log: reconnect with after=0",
        ));
    }
    match epoch {
        Some(epoch)
            if after > 0 && !epochs.is_empty() && !LogEpoch::resumable(epochs, epoch, after) =>
        {
            Err(ahead(
                format!(
                    "this session's log lost events at or below seq {after} since epoch {epoch} \
                     (the server stopped before they reached its disk), or that epoch is too old \
                     to tell: drop your copy and reconnect with after=0"
                ),
                "log taken back: reconnect with after=0",
            ))
        }
        _ => Ok(()),
    }
}

fn ahead(message: String, close_reason: &'static str) -> Refusal {
    Refusal {
        error: WireError::new("ahead_of_log", message),
        close_code: CLOSE_AHEAD_OF_LOG,
        close_reason,
    }
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
        assert_eq!(check_resume(0, 0, None, &[]), Ok(()));
        assert_eq!(check_resume(7, 7, None, &[]), Ok(()));
        let r = check_resume(8, 7, None, &[]).unwrap_err();
        assert_eq!(
            (r.error.code.as_str(), r.close_code),
            ("ahead_of_log", 4409)
        );
        assert!(r.error.message.contains("after=8"), "{}", r.error.message);
        let epochs = [
            LogEpoch {
                epoch: Epoch(1),
                head: 0,
            },
            LogEpoch {
                epoch: Epoch(2),
                head: 10,
            },
            // Loaded after a crash took back seqs 7 to 10.
            LogEpoch {
                epoch: Epoch(3),
                head: 6,
            },
        ];
        // The current epoch, or one no later load found shorter.
        assert_eq!(check_resume(9, 12, Some(Epoch(3)), &epochs), Ok(()));
        assert_eq!(check_resume(6, 12, Some(Epoch(1)), &epochs), Ok(()));
        assert_eq!(check_resume(6, 12, Some(Epoch(2)), &epochs), Ok(()));
        // Saw seq 7 or later before the crash took it back.
        let taken = check_resume(7, 12, Some(Epoch(2)), &epochs).unwrap_err();
        assert_eq!(
            (taken.error.code.as_str(), taken.close_code),
            ("ahead_of_log", 4409)
        );
        assert!(
            taken.error.message.contains("0000000000000002"),
            "{}",
            taken.error.message
        );
        assert!(check_resume(9, 12, Some(Epoch(1)), &epochs).is_err());
        // An epoch the session does not keep (too old, or another log's).
        assert!(check_resume(1, 12, Some(Epoch(4)), &epochs).is_err());
        // Nothing held, no epoch named, or a host without epochs.
        assert_eq!(check_resume(0, 12, Some(Epoch(4)), &epochs), Ok(()));
        assert_eq!(check_resume(9, 12, None, &epochs), Ok(()));
        assert_eq!(check_resume(9, 12, Some(Epoch(4)), &[]), Ok(()));
        for r in [
            r,
            taken,
            refuse_binary(),
            check_text(usize::MAX).unwrap_err(),
        ] {
            assert!(r.close_reason.len() <= 123, "{}", r.close_reason);
        }
    }
}
