//! The web rules both hosts enforce the same way, as pure functions over
//! strings: the [`origin`] rule, the user [`credentials`] rules, what a
//! [`NewSession`] request starts, the [`UI_HEADERS`] every file of the UI
//! is served with, and [`hex`]. Each host keeps only a thin adapter from
//! its own request and header types.

use serde::{Deserialize, Serialize};

use crate::protocol::Execute;
use crate::store::SessionMeta;

pub mod credentials;
pub mod origin;

/// The policy the UI is served under: only this origin, no inline scripts
/// or styles, nothing remote (`'self'` covers the same-origin WebSocket in
/// `connect-src`), and no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The security headers of every file of the browser UI, on both hosts:
/// the local server adds them to each embedded file, the Cloudflare Worker
/// to each static asset it serves.
pub const UI_HEADERS: &[(&str, &str)] = &[
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
];

/// The WebSocket close code of a session socket whose login ended (logout,
/// password change, user removed), on both hosts: the UI goes to the login
/// page and does not reconnect.
pub const LOGIN_ENDED_CLOSE: u16 = 4401;
/// The close reason that goes with [`LOGIN_ENDED_CLOSE`].
pub const LOGIN_ENDED_REASON: &str = "login ended";

/// The message of the `unauthorized` refusal of a command sent on a socket
/// whose login ended.
pub const LOGIN_ENDED_MESSAGE: &str = "your login ended: log in again";

/// Lower-case hex of `bytes`: token digests, ETags.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The body of `POST /api/sessions`: start a session in `worktree` with a
/// first `prompt`, and a `model` when the user chose one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSession {
    /// The worktree path, one the gateway lists.
    pub worktree: String,
    /// The first prompt.
    pub prompt: String,
    /// The model; the executor's default when absent or blank.
    #[serde(default)]
    pub model: Option<String>,
}

impl NewSession {
    /// Refuses a blank first prompt, with the message to answer `400` with.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.prompt.trim().is_empty() {
            Err("a session needs a first prompt")
        } else {
            Ok(())
        }
    }

    /// The new session's metadata: titled by its prompt, in its worktree.
    pub fn meta(&self, session_id: &str, owner: &str, now_ms: i64) -> SessionMeta {
        SessionMeta::new(session_id, owner, now_ms).starting(
            &self.worktree,
            &self.prompt,
            self.model.as_deref(),
        )
    }

    /// The `execute` command that starts the session on the gateway.
    pub fn into_execute(self) -> Execute {
        Execute {
            worktree: self.worktree,
            prompt: self.prompt,
            model: self.model,
            permission_mode: None,
            system_prompt: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_headers_forbid_framing_sniffing_referrers_and_anything_remote() {
        let get = |name: &str| {
            UI_HEADERS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let csp = get("content-security-policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-") && !csp.contains('*') && !csp.contains("http"));
        assert_eq!(get("x-frame-options"), Some("DENY"));
        assert_eq!(get("x-content-type-options"), Some("nosniff"));
        assert_eq!(get("referrer-policy"), Some("no-referrer"));
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn a_new_session_needs_a_prompt_and_starts_with_it() {
        let body: NewSession =
            serde_json::from_str(r#"{"worktree":"/wt","prompt":" \n"}"#).unwrap();
        assert_eq!(body.check(), Err("a session needs a first prompt"));
        let body: NewSession =
            serde_json::from_str(r#"{"worktree":"/wt","prompt":"fix it\nnow","model":"opus"}"#)
                .unwrap();
        assert_eq!(body.check(), Ok(()));
        let meta = body.meta("s1", "alice", 7);
        assert_eq!(
            (meta.title.as_str(), meta.owner.as_str()),
            ("fix it", "alice")
        );
        let execute = body.into_execute();
        assert_eq!(
            (
                execute.worktree.as_str(),
                execute.prompt.as_str(),
                execute.model.as_deref()
            ),
            ("/wt", "fix it\nnow", Some("opus"))
        );
        assert_eq!(
            (execute.permission_mode, execute.system_prompt),
            (None, None)
        );
    }
}
