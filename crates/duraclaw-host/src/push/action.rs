//! Action tokens: what a notification's Approve and Deny buttons carry,
//! an HMAC-signed claim bound to a user, a question and a decision.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::auth::token::hmac_sha256;

/// The decision a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionDecision {
    /// Allow the tool call.
    Approve,
    /// Deny it.
    Deny,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionClaim {
    /// The user it was minted for.
    pub user: String,
    /// The session.
    pub session_id: String,
    /// The question.
    pub question_id: String,
    /// The decision.
    pub decision: ActionDecision,
    /// The subscription's device name.
    pub device: String,
    /// When it stops being accepted, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// Not a token this server signed.
    Invalid,
    /// Past its expiry.
    Expired,
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActionError::Invalid => "not a valid action token",
            ActionError::Expired => "the action token expired",
        })
    }
}

impl std::error::Error for ActionError {}

/// `claim` signed with `key`.
pub fn mint(key: &[u8], claim: &ActionClaim) -> String {
    let body = B64.encode(serde_json::to_vec(claim).unwrap_or_default());
    let mac = B64.encode(hmac_sha256(key, body.as_bytes()));
    format!("{body}.{mac}")
}

/// The claim of `token` if `key` signed it and it has not expired.
pub fn verify(key: &[u8], token: &str, now_ms: u64) -> Result<ActionClaim, ActionError> {
    let (body, mac) = token.split_once('.').ok_or(ActionError::Invalid)?;
    let want = B64.encode(hmac_sha256(key, body.as_bytes()));
    if !same(want.as_bytes(), mac.as_bytes()) {
        return Err(ActionError::Invalid);
    }
    let bytes = B64.decode(body).map_err(|_| ActionError::Invalid)?;
    let claim: ActionClaim = serde_json::from_slice(&bytes).map_err(|_| ActionError::Invalid)?;
    if now_ms >= claim.expires_at_ms {
        return Err(ActionError::Expired);
    }
    Ok(claim)
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
