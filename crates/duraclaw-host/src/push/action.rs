//! Approve / Deny from a notification: the action tokens a push payload
//! carries and what `POST /api/push/act` does with one, the same on both
//! hosts.
//!
//! A token is `<payload>.<mac>`, both base64url without padding: the
//! payload is the JSON [`ActionClaim`] (user, session, question, decision,
//! device, expiry), the mac its HMAC-SHA256 under the action key
//! ([`action_key`]). Nothing in it is secret (the push payload is
//! end-to-end encrypted anyway); it cannot be forged or altered without
//! the key, and it is checked in constant time. A token is single use
//! because a question takes one decision: the first decision wins and
//! every later one, a replayed token included, is refused with who decided
//! and changes nothing ([`answer`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duraclaw_core::approval::{DecideOutcome, utc_string};
use duraclaw_core::backend::actor::{CommandOutcome, Person};
use duraclaw_core::protocol::{Answer, Command, Decision};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::auth::token::hmac_sha256;
use crate::http::HttpError;

/// The label the action key is derived under.
pub const KEY_LABEL: &[u8] = b"duraclaw push action v1";

/// The longest token read; anything longer is refused unread.
pub const MAX_TOKEN_CHARS: usize = 2048;

/// How long an action stays usable when the question gives no sooner end:
/// a question that waits longer is answered in the page.
pub const ACTION_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// The most characters of a device name shown as the deciding client.
const MAX_DEVICE_CHARS: usize = 64;

/// The action key derived from the host's push secret (the VAPID private
/// key's bytes): `HMAC-SHA256(secret, "duraclaw push action v1")`.
pub fn action_key(secret: &[u8]) -> [u8; 32] {
    hmac_sha256(secret, KEY_LABEL)
}

/// What an action decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionDecision {
    /// Run the tool.
    Approve,
    /// Do not run the tool.
    Deny,
}

impl ActionDecision {
    /// `approve` or `deny`, as in the payload's `actions` and the answer.
    pub fn name(self) -> &'static str {
        match self {
            ActionDecision::Approve => "approve",
            ActionDecision::Deny => "deny",
        }
    }
}

/// What a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionClaim {
    /// The user it was made for; only their login may use it.
    pub user: String,
    /// The session the question is in.
    pub session_id: String,
    /// The question it decides.
    pub question_id: String,
    /// What it decides.
    pub decision: ActionDecision,
    /// The device (push subscription) it was sent to, recorded as the
    /// deciding client.
    pub device: String,
    /// After this (ms since the epoch) it is refused as expired.
    pub expires_at_ms: u64,
}

impl ActionClaim {
    /// Who decides through this token: the user, from client
    /// `notification <device>`.
    pub fn person(&self) -> Person {
        let device: String = self
            .device
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_DEVICE_CHARS)
            .collect();
        let device = device.trim();
        let client = if device.is_empty() {
            "notification".to_owned()
        } else {
            format!("notification {device}")
        };
        Person {
            user: self.user.clone(),
            client: Some(client),
        }
    }

    /// The decision as the session records it.
    pub fn to_decision(&self) -> Decision {
        match self.decision {
            ActionDecision::Approve => Decision::Allow {
                updated_input: None,
                remember: false,
            },
            ActionDecision::Deny => Decision::Deny {
                reason: "denied from a notification".to_owned(),
                interrupt: false,
            },
        }
    }

    /// The `answer` command a browser would send for this decision.
    pub fn command(&self) -> Command {
        Command::Answer(Answer {
            question_id: self.question_id.clone(),
            decision: self.to_decision(),
            by: None,
            allow_worktree_rule: None,
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    /// Not a token at all (shape, length, encoding).
    Malformed,
    /// Its mac does not match: forged, altered, or made under another key.
    Forged,
    /// Genuine but past its expiry.
    Expired {
        /// When it expired (ms since the epoch).
        at_ms: u64,
    },
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionError::Malformed => f.write_str("the action token is malformed"),
            ActionError::Forged => f.write_str("the action token is not valid"),
            ActionError::Expired { at_ms } => write!(
                f,
                "this notification's action expired at {}; open the session to decide",
                utc_string(i64::try_from(*at_ms).unwrap_or(i64::MAX))
            ),
        }
    }
}

impl std::error::Error for ActionError {}

/// The signed payload: short keys, so that two tokens fit a push payload
/// with room to spare.
#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    u: String,
    s: String,
    q: String,
    d: ActionDecision,
    dev: String,
    exp: u64,
}

const VERSION: u8 = 1;

fn mac(key: &[u8], payload: &str) -> [u8; 32] {
    hmac_sha256(key, payload.as_bytes())
}

/// A token for `claim` under `key` (from [`action_key`]).
pub fn mint(key: &[u8], claim: &ActionClaim) -> String {
    let payload = Payload {
        v: VERSION,
        u: claim.user.clone(),
        s: claim.session_id.clone(),
        q: claim.question_id.clone(),
        d: claim.decision,
        dev: claim.device.clone(),
        exp: claim.expires_at_ms,
    };
    // A struct of strings and integers always serializes.
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    let body = URL_SAFE_NO_PAD.encode(json);
    let tag = URL_SAFE_NO_PAD.encode(mac(key, &body));
    format!("{body}.{tag}")
}

/// The claim of `token` if it was made under `key` and has not expired at
/// `now_ms`. The mac is checked (in constant time) before anything in the
/// payload is read.
pub fn verify(key: &[u8], token: &str, now_ms: u64) -> Result<ActionClaim, ActionError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(ActionError::Malformed);
    }
    let (body, tag) = token.split_once('.').ok_or(ActionError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| ActionError::Malformed)?;
    if tag.len() != 32 {
        return Err(ActionError::Malformed);
    }
    let expected = mac(key, body);
    if !bool::from(expected.as_slice().ct_eq(tag.as_slice())) {
        return Err(ActionError::Forged);
    }
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| ActionError::Malformed)?;
    let p: Payload = serde_json::from_slice(&json).map_err(|_| ActionError::Malformed)?;
    if p.v != VERSION {
        return Err(ActionError::Malformed);
    }
    if now_ms >= p.exp {
        return Err(ActionError::Expired { at_ms: p.exp });
    }
    Ok(ActionClaim {
        user: p.u,
        session_id: p.s,
        question_id: p.q,
        decision: p.d,
        device: p.dev,
        expires_at_ms: p.exp,
    })
}

/// The body of `POST /api/push/act`.
#[derive(Debug, Clone, Deserialize)]
pub struct ActRequest {
    /// The token from the notification's action.
    pub token: String,
}

/// Checks a request's token for `user` at `now_ms`: its claim, or the
/// answer: `400` malformed or forged, `410` expired, `403` made for
/// another user.
pub fn check(
    key: &[u8],
    request: &ActRequest,
    user: &str,
    now_ms: u64,
) -> Result<ActionClaim, HttpError> {
    let claim = verify(key, &request.token, now_ms).map_err(|e| {
        let status = match e {
            ActionError::Expired { .. } => 410,
            ActionError::Malformed | ActionError::Forged => 400,
        };
        tracing::info!(user, error = %e, "notification action refused");
        HttpError::new(status, e.to_string())
    })?;
    if claim.user != user {
        tracing::warn!(
            user,
            session = %claim.session_id,
            question = %claim.question_id,
            "notification action refused: the token is another user's"
        );
        return Err(HttpError::new(
            403,
            "this notification's action was made for another user",
        ));
    }
    Ok(claim)
}

/// The id of an action's `answer` command: unique per request (`nonce`
/// from the host), so a replayed token is a second decision, refused as
/// one, never taken for a retry of the first.
pub fn command_id(nonce: &str) -> String {
    format!("notification-{nonce}")
}

/// "already decided by alice from web 3f2a (allow) at 2026-… UTC".
fn already_decided(first: &duraclaw_core::store::Resolution) -> String {
    let from = first
        .by
        .client
        .as_deref()
        .map(|c| format!(" from {c}"))
        .unwrap_or_default();
    format!(
        "already decided by {}{from} ({}) at {}",
        first.by.who,
        first.decision.name(),
        utc_string(first.at_ms)
    )
}

/// The answer to an action once the session applied its command: `200`
/// `{"ok":true,"session_id","question_id","decision"}`, or `409` with who
/// decided first, or the command's own refusal.
pub fn answer(
    claim: &ActionClaim,
    outcome: &CommandOutcome,
) -> Result<serde_json::Value, HttpError> {
    if let Some(DecideOutcome::AlreadyDecided { first }) = &outcome.decided {
        return Err(HttpError::new(409, already_decided(first)));
    }
    if !outcome.result.ok {
        let message = outcome.result.error.as_ref().map_or_else(
            || "the decision was refused".to_owned(),
            |e| e.message.clone(),
        );
        return Err(HttpError::new(409, message));
    }
    Ok(serde_json::json!({
        "ok": true,
        "session_id": claim.session_id,
        "question_id": claim.question_id,
        "decision": claim.decision.name(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use duraclaw_core::protocol::{CommandResult, DecidedBy, WireError};
    use duraclaw_core::store::Resolution;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    fn claim() -> ActionClaim {
        ActionClaim {
            user: "alice".into(),
            session_id: "01SESSION".into(),
            question_id: "q-7".into(),
            decision: ActionDecision::Approve,
            device: "Pixel 8".into(),
            expires_at_ms: NOW + 60_000,
        }
    }

    fn key() -> [u8; 32] {
        action_key(b"the vapid private key")
    }

    #[test]
    fn the_key_is_the_contracts_derivation() {
        assert_eq!(
            action_key(b"k"),
            hmac_sha256(b"k", b"duraclaw push action v1")
        );
        assert_ne!(action_key(b"k"), action_key(b"l"));
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let token = mint(&key(), &claim());
        assert!(token.len() < 400, "{} chars", token.len());
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert_eq!(verify(&key(), &token, NOW), Ok(claim()));
        assert_eq!(verify(&key(), &token, NOW + 59_999), Ok(claim()));
        let expired = Err(ActionError::Expired {
            at_ms: NOW + 60_000,
        });
        assert_eq!(verify(&key(), &token, NOW + 60_000), expired);
        assert!(
            ActionError::Expired { at_ms: NOW }
                .to_string()
                .contains("expired at 2027-01-15")
        );
    }

    #[test]
    fn another_key_or_any_change_is_forged() {
        let token = mint(&key(), &claim());
        assert_eq!(
            verify(&action_key(b"another"), &token, NOW),
            Err(ActionError::Forged)
        );
        // Every field is bound: a token for deny is not one for approve.
        let (body, tag) = token.split_once('.').unwrap();
        let deny = mint(
            &key(),
            &ActionClaim {
                decision: ActionDecision::Deny,
                ..claim()
            },
        );
        let (deny_body, _) = deny.split_once('.').unwrap();
        assert_eq!(
            verify(&key(), &format!("{deny_body}.{tag}"), NOW),
            Err(ActionError::Forged)
        );
        // A later expiry, signed by nobody.
        let later = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap())
                .unwrap()
                .replace(&(NOW + 60_000).to_string(), &(NOW + 600_000).to_string()),
        );
        assert_eq!(
            verify(&key(), &format!("{later}.{tag}"), NOW),
            Err(ActionError::Forged)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let token = mint(&key(), &claim());
        let (body, _) = token.split_once('.').unwrap();
        for bad in [
            "",
            ".",
            "abc",
            "a.b",
            &format!("{body}."),
            &format!("{body}.!!!"),
            &format!("{body}.{}", URL_SAFE_NO_PAD.encode([0u8; 31])),
            &"a".repeat(MAX_TOKEN_CHARS + 1),
        ] {
            assert_eq!(
                verify(&key(), bad, NOW),
                Err(ActionError::Malformed),
                "{bad}"
            );
        }
        // Signed but not a payload of ours.
        let junk = URL_SAFE_NO_PAD.encode(b"{\"v\":2}");
        let tag = URL_SAFE_NO_PAD.encode(mac(&key(), &junk));
        assert_eq!(
            verify(&key(), &format!("{junk}.{tag}"), NOW),
            Err(ActionError::Malformed)
        );
    }

    #[test]
    fn check_answers_each_refusal_with_its_status() {
        let req = |t: String| ActRequest { token: t };
        let token = mint(&key(), &claim());
        assert_eq!(
            check(&key(), &req(token.clone()), "alice", NOW),
            Ok(claim())
        );
        let status = |r: Result<ActionClaim, HttpError>| r.unwrap_err().status;
        assert_eq!(status(check(&key(), &req(token.clone()), "bob", NOW)), 403);
        assert_eq!(
            status(check(&key(), &req(token.clone()), "alice", NOW + 60_000)),
            410
        );
        assert_eq!(status(check(&key(), &req("x.y".into()), "alice", NOW)), 400);
        assert_eq!(
            status(check(&action_key(b"other"), &req(token), "alice", NOW)),
            400
        );
    }

    #[test]
    fn the_decider_is_the_user_on_the_device() {
        let who = claim().person();
        assert_eq!(who.user, "alice");
        assert_eq!(who.client.as_deref(), Some("notification Pixel 8"));
        let odd = ActionClaim {
            device: "\u{1b}[31m ".into(),
            ..claim()
        };
        assert_eq!(odd.person().client.as_deref(), Some("notification [31m"));
        let none = ActionClaim {
            device: String::new(),
            ..claim()
        };
        assert_eq!(none.person().client.as_deref(), Some("notification"));
        assert!(matches!(
            claim().command(),
            Command::Answer(Answer { decision: Decision::Allow { remember: false, .. }, ref question_id, .. }) if question_id == "q-7"
        ));
        let deny = ActionClaim {
            decision: ActionDecision::Deny,
            ..claim()
        };
        assert!(matches!(
            deny.to_decision(),
            Decision::Deny {
                interrupt: false,
                ..
            }
        ));
    }

    #[test]
    fn a_second_decision_answers_409_naming_the_first() {
        let ok = CommandOutcome {
            result: CommandResult {
                id: "c".into(),
                ok: true,
                error: None,
            },
            forward: vec![],
            decided: Some(DecideOutcome::Decided),
        };
        let body = answer(&claim(), &ok).unwrap();
        assert_eq!(body["ok"], true);
        assert_eq!(body["decision"], "approve");
        assert_eq!(body["question_id"], "q-7");
        let first = Resolution {
            decision: Decision::Deny {
                reason: "no".into(),
                interrupt: false,
            },
            by: DecidedBy {
                who: "alice".into(),
                client: Some("notification Pixel 8".into()),
            },
            at_ms: 0,
        };
        let late = CommandOutcome {
            result: CommandResult {
                id: "c".into(),
                ok: false,
                error: Some(WireError::new("already_decided", "…")),
            },
            forward: vec![],
            decided: Some(DecideOutcome::AlreadyDecided { first }),
        };
        let e = answer(&claim(), &late).unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(
            e.message,
            "already decided by alice from notification Pixel 8 (deny) at 1970-01-01 00:00:00 UTC"
        );
        assert_eq!(command_id("n1"), "notification-n1");
    }

    proptest! {
        #[test]
        fn any_claim_round_trips_and_any_junk_is_refused(
            user in ".{0,40}", device in ".{0,40}", exp in 1u64..u64::MAX, junk in ".{0,300}",
        ) {
            let c = ActionClaim { user, device, expires_at_ms: exp, ..claim() };
            let token = mint(&key(), &c);
            prop_assert_eq!(verify(&key(), &token, exp - 1), Ok(c));
            prop_assert!(verify(&key(), &junk, 0).is_err());
        }
    }
}
