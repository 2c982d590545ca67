//! The frames of the gateway link (WS2) and the browser link (WS1).

use serde::{Deserialize, Serialize};

use super::{Command, Event, Gseq, Hello, Seq, UserQuestion, WireError};
use crate::state::SessionState;

// ---------------------------------------------------------------------------
// Frames of the gateway link (WS2)
// ---------------------------------------------------------------------------

/// A command for one session, with the id the receiver applies once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    /// Unique per command; a repeated id is acknowledged but not re-applied.
    pub id: String,
    /// The session it is for.
    pub session_id: String,
    /// The command.
    pub command: Command,
}

/// Orchestrator → gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToGateway {
    /// Opens the link.
    Hello(Hello),
    /// A command for a session.
    Command(CommandEnvelope),
    /// Every event of `session_id` up to `gseq` is persisted; the gateway
    /// may drop them from its outbox.
    Ack {
        /// The session.
        session_id: String,
        /// Highest persisted gseq.
        gseq: Gseq,
    },
    /// Send me `session_id`'s events after `after_gseq`, then live ones.
    Attach {
        /// The session.
        session_id: String,
        /// Highest gseq the orchestrator has persisted.
        after_gseq: Gseq,
    },
    /// The approval rules now in force for `session_id` (user, worktree
    /// and session scopes), replacing those it had; sent on every change
    /// and again each time the link opens.
    Rules {
        /// The session.
        session_id: String,
        /// Every rule in force; empty: none, every call asks.
        rules: Vec<super::RuleEntry>,
    },
    /// Ask for the discovered worktrees.
    ListWorktrees {
        /// Request id, echoed in the reply.
        id: String,
    },
    /// Keep-alive; answered with `pong`.
    Ping {
        /// Echoed in the pong.
        #[serde(default)]
        nonce: u64,
    },
}

/// Gateway → orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FromGateway {
    /// Opens the link.
    Hello(Hello),
    /// An event of a session, numbered by the gateway.
    Event {
        /// The session.
        session_id: String,
        /// The gateway's sequence number for it.
        gseq: Gseq,
        /// The event.
        event: Event,
    },
    /// The outcome of a command.
    CommandResult(CommandResult),
    /// The discovered worktrees.
    Worktrees {
        /// The request id.
        id: String,
        /// The worktrees.
        worktrees: Vec<Worktree>,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's nonce.
        #[serde(default)]
        nonce: u64,
    },
    /// A link-level error (bad frame, unsupported version).
    Error(WireError),
}

/// The outcome of a command, on either link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub id: String,
    /// Whether it was accepted.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// A git worktree the gateway may run sessions in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worktree {
    /// Absolute path.
    pub path: String,
    /// The repository's main path.
    pub repo: String,
    /// Checked-out branch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// HEAD commit id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Uncommitted changes present.
    #[serde(default)]
    pub dirty: bool,
    /// The session running in it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_session: Option<String>,
}

// ---------------------------------------------------------------------------
// Frames of the browser link (WS1)
// ---------------------------------------------------------------------------

/// Browser → orchestrator. The browser subscribes with `after=<seq>` in the
/// WebSocket URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FromBrowser {
    /// Opens the link (optional for browsers; the URL says the version).
    Hello(Hello),
    /// A command (`message`, `answer`, `abort`) with its id.
    Command {
        /// Unique per command.
        id: String,
        /// The command.
        command: Command,
    },
    /// Keep-alive.
    Ping {
        /// Echoed.
        #[serde(default)]
        nonce: u64,
    },
}

/// What a browser sees first after subscribing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The session.
    pub session_id: String,
    /// Its state.
    #[serde(flatten)]
    pub state: SessionState,
    /// Highest seq in the log when the snapshot was taken.
    pub last_seq: Seq,
    /// Questions awaiting a decision.
    pub pending: Vec<UserQuestion>,
}

/// Orchestrator → browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToBrowser {
    /// Opens the link.
    Hello(Hello),
    /// The session's state and pending questions.
    Snapshot(Snapshot),
    /// A logged event with its seq.
    Event {
        /// Dense per-session sequence number.
        seq: Seq,
        /// The event.
        event: Event,
    },
    /// The outcome of a browser command.
    CommandResult(CommandResult),
    /// Answer to a ping.
    Pong {
        /// The ping's nonce.
        #[serde(default)]
        nonce: u64,
    },
    /// A link-level error.
    Error(WireError),
}
