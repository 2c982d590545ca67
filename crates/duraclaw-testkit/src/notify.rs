//! Notification actions as a host makes them: tokens minted with
//! `duraclaw_host::push::action::mint` under the host's own action key.

use duraclaw_host::push::action::{self, ActionClaim, ActionDecision};

use crate::host::Host;

/// Milliseconds since the epoch by the wall clock (the hosts' clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A claim for `user`'s `decision` on question `question` of session
/// `session`, sent to `device`, valid for ten minutes.
pub fn claim(
    user: &str,
    session: &str,
    question: &str,
    decision: ActionDecision,
    device: &str,
) -> ActionClaim {
    ActionClaim {
        user: user.into(),
        session_id: session.into(),
        question_id: question.into(),
        decision,
        device: device.into(),
        expires_at_ms: now_ms() + 600_000,
    }
}

/// The token host `h` would put in a notification for `claim`.
pub fn token(h: &dyn Host, claim: &ActionClaim) -> String {
    mint_with(&h.push_action_secret(), claim)
}

/// The token for `claim` under the action key of `secret`.
pub fn mint_with(secret: &[u8], claim: &ActionClaim) -> String {
    action::mint(&action::action_key(secret), claim)
}
