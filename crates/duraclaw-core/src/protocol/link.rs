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
    /// A request about a session (or the gateway), answered with one
    /// `reply` of the same id.
    Request {
        /// Request id, echoed in the reply.
        id: String,
        /// What is asked.
        request: GatewayRequest,
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
    /// The answer to a `request`: `value` when it succeeded, else `error`.
    Reply {
        /// The request's id.
        id: String,
        /// The answer ([`GatewayRequest`] says its shape).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<WireError>,
    },
}

/// What a `request` frame asks the gateway (about a session, or itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GatewayRequest {
    /// Remove the worktree the gateway made for the session (stopping the
    /// session first). Refused (`worktree_dirty`) while it has
    /// uncommitted changes unless `force`; refused (`worktree_not_created`)
    /// for a worktree the gateway did not make. Replies [`WorktreeRemoved`].
    RemoveWorktree {
        /// The session.
        session_id: String,
        /// Remove it even with uncommitted changes.
        #[serde(default, skip_serializing_if = "super::is_false")]
        force: bool,
    },
    /// The session's changes since its base commit. Replies a [`SessionDiff`].
    Diff {
        /// The session.
        session_id: String,
    },
    /// The agents the gateway offers, each checked now (installed and
    /// runnable). Replies a list of [`AgentInfo`](super::AgentInfo), the
    /// built-in Claude first. About no session.
    Agents {},
}

/// The [`WireError::code`] of a removal refused because the worktree has
/// uncommitted changes.
pub const ERROR_WORKTREE_DIRTY: &str = "worktree_dirty";
/// The [`WireError::code`] of a removal refused because the gateway did
/// not make the session's worktree.
pub const ERROR_WORKTREE_NOT_CREATED: &str = "worktree_not_created";

/// The reply to [`GatewayRequest::RemoveWorktree`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeRemoved {
    /// The worktree's path (gone now).
    pub path: String,
    /// The session's branch.
    pub branch: String,
    /// Whether the branch was deleted too: only when it still pointed at
    /// the commit it was made at (nothing was committed on it).
    pub branch_deleted: bool,
}

/// The reply to [`GatewayRequest::Diff`]: the worktree's changes since the
/// session's base commit, committed or not, untracked files included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDiff {
    /// The base commit (`None` before the repository's first commit: every
    /// file is new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The worktree's path.
    pub worktree: String,
    /// The changed files, by path.
    pub files: Vec<FileDiff>,
    /// Some file's text was left out to stay within the size limits.
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub truncated: bool,
}

impl SessionDiff {
    /// The whole diff as one patch: the files' patches in order (what
    /// `git diff <base>` prints, untracked files as new ones).
    pub fn patch(&self) -> String {
        self.files.iter().map(|f| f.patch.as_str()).collect()
    }
}

/// One changed file of a [`SessionDiff`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDiff {
    /// The path (the new one when renamed), relative to the worktree.
    pub path: String,
    /// The old path when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// `added`, `deleted`, `modified`, `renamed`, `typechange`.
    pub status: String,
    /// Lines added.
    pub additions: u64,
    /// Lines removed.
    pub deletions: u64,
    /// Binary content: no hunks.
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub binary: bool,
    /// Over the per-file or total limit: stats only, no hunks.
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub truncated: bool,
    /// The file's part of the patch, as `git diff` prints it: the
    /// `diff --git` header and its hunks (empty when `truncated`).
    #[serde(default)]
    pub patch: String,
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
    /// The gateway makes a new worktree from this one's repository for a
    /// session that asks (`new_worktree` in `execute`).
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub new_worktree: bool,
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
    /// Asks for older history: the events before `before`, at most
    /// `limit`; answered by a [`ToBrowser::Page`] with the same id.
    Page {
        /// Echoed in the answer.
        id: String,
        /// The page ends at `before - 1`.
        before: Seq,
        /// The most events the page covers.
        limit: u64,
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
    /// The first seq the stream sends after the snapshot (`after + 1`, or
    /// where a tail starts); older events come by `page` requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<Seq>,
    /// The seq of the `user.message` that started the current turn, when
    /// the server read that far back (tail streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_start: Option<Seq>,
    /// Which load of the session's log served this stream, on a host whose
    /// store a crash can take commits back from (the local orchestrator):
    /// the client resumes with `after=<seq>&epoch=<this>`, and the host
    /// refuses the resume (`ahead_of_log`) when the log lost events at or
    /// below `after` since. Absent where the store never takes a commit
    /// back (a Durable Object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
}

/// One load of a session's log on a host whose store a crash can take
/// commits back from: 16 hexadecimal digits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Parses 1 to 16 hexadecimal digits.
    pub fn parse(s: &str) -> Option<Epoch> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Epoch)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Epoch, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Epoch::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("an epoch is 1 to 16 hexadecimal digits, not {s:?}"))
        })
    }
}

/// The answer to a [`FromBrowser::Page`] request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The request's id.
    pub id: String,
    /// The first seq the page covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<Seq>,
    /// The last seq the page covers (the request's `before - 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Seq>,
    /// `event` and `compacted` frames covering `first..=last`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ToBrowser>,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
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
    /// Replay of events `first..=last` that are deltas of messages whose
    /// final comes later in the log; `event`, when present, is the event at
    /// `last` (the final that closes them), sent in their place.
    Compacted {
        /// The first seq covered.
        first: Seq,
        /// The last seq covered.
        last: Seq,
        /// The event at `last`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<Event>,
    },
    /// Older history asked for by a `page` request.
    Page(Page),
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
