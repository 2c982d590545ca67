//! The web rules both hosts enforce the same way, as pure functions over
//! strings: the [`origin`] rule, the user [`credentials`] rules, what a
//! [`NewSession`] request starts, the [`UI_HEADERS`] every file of the UI
//! is served with, and [`hex`]. Each host keeps only a thin adapter from
//! its own request and header types.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::protocol::{
    Command, CommandEnvelope, Event, Execute, MAX_SESSION_ID_BYTES, NewWorktree, ToGateway,
    UserMessage, check_agent_name, encode_frame,
};
use crate::store::{NewEvent, SessionMeta};

pub mod credentials;
pub mod deflate;
pub mod origin;
pub mod replay;
pub mod socket;

/// The largest request body the HTTP API reads, in bytes; a larger one is
/// refused with `413` and nothing is done.
pub const MAX_BODY_BYTES: usize = crate::protocol::MAX_FRAME_BYTES;

/// The answer to starting a session in a worktree another session holds:
/// names the holder and what to do about it.
pub fn worktree_busy(worktree: &str, holder: &str) -> String {
    format!(
        "worktree busy: {worktree} is in use by session {holder}; \
         end session {holder} or pick another worktree"
    )
}

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
    /// Run in a new worktree made from `worktree`'s repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_worktree: Option<NewWorktree>,
    /// The agent that runs it (one `GET /api/agents` lists); the built-in
    /// Claude Code executor when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

impl NewSession {
    /// Reads the request from its JSON body, naming the field that is
    /// missing or not text ([`Error::Invalid`], `400`).
    pub fn from_value(body: serde_json::Value) -> Result<Self, Error> {
        let serde_json::Value::Object(fields) = body else {
            return Err(Error::Invalid(
                r#"expected a JSON object {"worktree": "…", "prompt": "…", "model"?: "…"}"#.into(),
            ));
        };
        let text = |name: &str, required: bool| match fields.get(name) {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            None | Some(serde_json::Value::Null) if !required => Ok(None),
            None | Some(serde_json::Value::Null) => {
                Err(Error::Invalid(format!("`{name}` is missing")))
            }
            Some(_) => Err(Error::Invalid(format!("`{name}` must be a string"))),
        };
        let new_worktree = match fields.get("new_worktree") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(o)) => Some(NewWorktree {
                base: match o.get("base") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(b)) if !b.trim().is_empty() => {
                        Some(b.trim().to_owned())
                    }
                    Some(_) => {
                        return Err(Error::Invalid(
                            "`new_worktree.base` must be a branch name".into(),
                        ));
                    }
                },
            }),
            Some(_) => {
                return Err(Error::Invalid(
                    r#"`new_worktree` must be an object {"base"?: "<branch>"}"#.into(),
                ));
            }
        };
        let agent = match text("agent", false)? {
            Some(name) if name.is_empty() => None,
            Some(name) => {
                check_agent_name(&name).map_err(|why| Error::Invalid(format!("`agent`: {why}")))?;
                Some(name)
            }
            None => None,
        };
        Ok(NewSession {
            worktree: text("worktree", true)?.unwrap_or_default(),
            prompt: text("prompt", true)?.unwrap_or_default(),
            model: text("model", false)?,
            new_worktree,
            agent,
        })
    }

    /// Refuses what could not start for `owner`, before anything is
    /// created: a blank prompt or worktree ([`Error::Invalid`], `400`), a
    /// prompt whose first message or `execute` frame would be over the
    /// event or frame limit ([`Error::TooLarge`], `413`).
    pub fn check(&self, owner: &str) -> Result<(), Error> {
        if self.prompt.trim().is_empty() {
            return Err(Error::Invalid("a session needs a first prompt".into()));
        }
        if self.worktree.trim().is_empty() {
            return Err(Error::Invalid("a session needs a worktree".into()));
        }
        let too_large = |e: Error| match e {
            Error::TooLarge { size, limit, .. } => Error::TooLarge {
                what: "the first prompt",
                size,
                limit,
            },
            other => other,
        };
        // The first message as the session will log it.
        NewEvent::new(
            &Event::UserMessage(UserMessage {
                text: self.prompt.clone(),
                by: Some(owner.to_owned()),
                queued: false,
            }),
            None,
            0,
        )
        .map_err(too_large)?;
        // The `execute` as the gateway will get it, with the longest id.
        let id = "x".repeat(MAX_SESSION_ID_BYTES);
        encode_frame(&ToGateway::Command(CommandEnvelope {
            id: format!("{id}/execute-{id}"),
            session_id: id,
            command: Command::Execute(self.clone().into_execute()),
        }))
        .map_err(too_large)?;
        Ok(())
    }

    /// The new session's metadata: titled by its prompt, in its worktree.
    pub fn meta(&self, session_id: &str, owner: &str, created_at_ms: i64) -> SessionMeta {
        let mut meta = SessionMeta::new(session_id, owner, created_at_ms).starting(
            &self.worktree,
            &self.prompt,
            self.model.as_deref(),
        );
        meta.agent.clone_from(&self.agent);
        meta
    }

    /// The `execute` command that starts the session on the gateway.
    pub fn into_execute(self) -> Execute {
        Execute {
            worktree: self.worktree,
            prompt: self.prompt,
            model: self.model,
            permission_mode: None,
            system_prompt: None,
            rules: None,
            new_worktree: self.new_worktree,
            fork: None,
            agent: self.agent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_that_cannot_be_logged_or_sent_is_refused_before_anything_starts() {
        use crate::protocol::{MAX_EVENT_BYTES, MAX_FRAME_BYTES};
        let with = |prompt: String| NewSession {
            worktree: "/wt".into(),
            prompt,
            model: None,
            new_worktree: None,
            agent: None,
        };
        assert!(
            with("x".repeat(MAX_EVENT_BYTES - 1024))
                .check("alice")
                .is_ok()
        );
        // Over the limit as JSON, though not as text: every quote escapes.
        for prompt in [
            "x".repeat(2 * MAX_FRAME_BYTES),
            "\"".repeat(MAX_EVENT_BYTES / 2 + 1),
        ] {
            match with(prompt).check("alice") {
                Err(Error::TooLarge { what, limit, .. }) => {
                    assert_eq!(what, "the first prompt");
                    assert!(limit <= MAX_FRAME_BYTES);
                }
                other => panic!("{other:?}"),
            }
        }
        let blank = NewSession {
            worktree: " ".into(),
            prompt: "go".into(),
            model: None,
            new_worktree: None,
            agent: None,
        };
        assert!(matches!(blank.check("alice"), Err(Error::Invalid(_))));
    }

    #[test]
    fn a_request_is_read_naming_what_is_wrong() {
        use serde_json::json;
        let ok = NewSession::from_value(json!({"worktree": "/wt", "prompt": "go", "model": null}));
        assert_eq!(ok.unwrap().model, None);
        let codex =
            NewSession::from_value(json!({"worktree": "/wt", "prompt": "go", "agent": "codex"}))
                .unwrap();
        assert_eq!(codex.meta("s1", "alice", 1).agent.as_deref(), Some("codex"));
        assert_eq!(codex.into_execute().agent.as_deref(), Some("codex"));
        let blank = NewSession::from_value(json!({"worktree": "/wt", "prompt": "go", "agent": ""}));
        assert_eq!(blank.unwrap().agent, None);
        for (body, says) in [
            (json!([]), "expected a JSON object"),
            (json!({}), "`worktree` is missing"),
            (json!({"worktree": "/wt"}), "`prompt` is missing"),
            (
                json!({"worktree": "/wt", "prompt": 42}),
                "`prompt` must be a string",
            ),
            (
                json!({"worktree": "/wt", "prompt": "go", "model": 5}),
                "`model` must be a string",
            ),
            (
                json!({"worktree": "/wt", "prompt": "go", "agent": ["codex"]}),
                "`agent` must be a string",
            ),
            (
                json!({"worktree": "/wt", "prompt": "go", "agent": "x".repeat(65)}),
                "`agent`: an agent name has at most 64 characters",
            ),
            (
                json!({"worktree": "/wt", "prompt": "go", "agent": "co\ndex"}),
                "`agent`: an agent name has only ASCII letters",
            ),
        ] {
            match NewSession::from_value(body.clone()) {
                Err(Error::Invalid(m)) => assert!(m.contains(says), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_busy_worktree_says_what_to_do() {
        let m = worktree_busy("/src/app", "01ABC");
        assert!(m.starts_with("worktree busy: /src/app is in use by session 01ABC"));
        assert!(
            m.ends_with("; end session 01ABC or pick another worktree"),
            "{m}"
        );
    }

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
        assert!(
            matches!(body.check("alice"), Err(Error::Invalid(m)) if m == "a session needs a first prompt")
        );
        let body: NewSession =
            serde_json::from_str(r#"{"worktree":"/wt","prompt":"fix it\nnow","model":"opus"}"#)
                .unwrap();
        assert!(body.check("alice").is_ok());
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
