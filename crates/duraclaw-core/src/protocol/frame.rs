//! Framing: size-checked encoding and decoding, the hello and wire errors.

use serde::{Deserialize, Serialize};

use super::{MAX_FRAME_BYTES, PROTOCOL_VERSION};
use crate::error::{Error, Result};

/// Decodes one frame, checking its size before parsing it.
pub fn decode_frame<T: serde::de::DeserializeOwned>(text: &str, what: &'static str) -> Result<T> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(Error::TooLarge {
            what,
            size: text.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    serde_json::from_str(text).map_err(|e| Error::decode(what, e))
}

/// Encodes one frame as JSON text; refuses one over [`MAX_FRAME_BYTES`].
pub fn encode_frame<T: Serialize>(frame: &T) -> Result<String> {
    let text = serde_json::to_string(frame)
        .map_err(|e| Error::Invalid(format!("frame cannot be encoded: {e}")))?;
    if text.len() > MAX_FRAME_BYTES {
        return Err(Error::TooLarge {
            what: "frame",
            size: text.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    Ok(text)
}

/// Checks a first frame's protocol version before decoding the rest, so a
/// peer of another major version is told so even when the rest of its hello
/// is shaped differently.
pub fn check_hello_version(text: &str) -> Result<()> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        ty: String,
        v: Option<u64>,
    }
    let probe: Probe = decode_frame(text, "hello")?;
    if probe.ty != "hello" {
        return Err(Error::Invalid(format!(
            "the first frame must be a hello, not `{}`",
            probe.ty
        )));
    }
    match probe.v {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => Ok(()),
        Some(v) => Err(Error::UnsupportedVersion {
            got: u32::try_from(v).unwrap_or(u32::MAX),
            supported: PROTOCOL_VERSION,
        }),
        None => Err(Error::decode_msg("hello", "missing field `v`")),
    }
}

/// Who is speaking on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A browser (or any UI client) on WS1.
    Browser,
    /// The orchestrator (local server or Durable Object).
    Orchestrator,
    /// The gateway on the VPS.
    Gateway,
}

/// The first frame on every link, in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Major protocol version; see [`PROTOCOL_VERSION`].
    pub v: u32,
    /// Who sends it.
    pub role: Role,
    /// Free-form software name and version, e.g. `duraclaw-gateway/0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A gateway's: why its executor cannot run sessions (e.g. the Claude
    /// Code CLI is missing or older than the minimum), when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_error: Option<String>,
}

impl Hello {
    /// A hello from `role` at this build's protocol version.
    pub fn new(role: Role) -> Self {
        Hello {
            v: PROTOCOL_VERSION,
            role,
            agent: Some(format!("duraclaw/{}", env!("CARGO_PKG_VERSION"))),
            executor_error: None,
        }
    }

    /// Refuses a peer that speaks another major version.
    pub fn check_version(&self) -> Result<()> {
        if self.v == PROTOCOL_VERSION {
            Ok(())
        } else {
            Err(Error::UnsupportedVersion {
                got: self.v,
                supported: PROTOCOL_VERSION,
            })
        }
    }
}

/// The [`WireError::code`] of a refused session start: the executor (e.g.
/// the Claude Code CLI's version) is not supported.
pub const ERROR_EXECUTOR_UNSUPPORTED: &str = "executor_unsupported";

/// The [`WireError::code`] of a session start or resume refused because the
/// agent it names is not configured or cannot run; the message names the
/// agent and why.
pub const ERROR_AGENT_UNAVAILABLE: &str = "agent_unavailable";

/// An error as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// A stable machine-readable code, e.g. `worktree_busy`, `not_found`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

impl WireError {
    /// A wire error with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        WireError {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        let code = match e {
            Error::Decode { .. } => "bad_frame",
            Error::TooLarge { .. } => "too_large",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Invalid(_) => "invalid",
            Error::Unauthorized(_) => "unauthorized",
            Error::IllegalTransition { .. } => "illegal_transition",
            Error::Executor { .. } => "executor",
            Error::ExecutorUnsupported(_) => ERROR_EXECUTOR_UNSUPPORTED,
            Error::Closed(_) => "closed",
            Error::Timeout { .. } => "timeout",
            _ => "internal",
        };
        WireError::new(code, e.to_string())
    }
}
