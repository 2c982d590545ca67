//! The wire protocol of both links, as JSON text frames.
//!
//! ```text
//! browser ══WS1══▶ orchestrator ══WS2══▶ gateway
//!   FromBrowser ▶        ◀ ToBrowser
//!                  ToGateway ▶      ◀ FromGateway
//! ```
//!
//! Every frame is a JSON object with a `"type"`. Each link opens with a
//! [`Hello`] carrying the major protocol version [`PROTOCOL_VERSION`]; a peer
//! refuses another major version with [`Error::UnsupportedVersion`].
//! Commands carry an `id` that the receiver applies once. Gateway events carry
//! the gateway's per-session `gseq`; browser events carry the orchestrator's
//! dense per-session `seq`.
//!
//! An [`Event`] of a type this build does not know decodes into
//! [`Event::Unknown`], which keeps the raw JSON so it is stored and relayed
//! unchanged, never dropped. `docs/protocol.md` describes every frame; the
//! golden fixtures under `tests/fixtures/` pin their exact JSON.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::state::SessionState;

/// The major protocol version this code speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either link accepts, in bytes of JSON text.
///
/// Large enough for a 200 KB tool result with room to spare, small enough
/// that a hostile peer cannot make a server buffer without bound.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// The largest event, in bytes of JSON text: a frame's limit less room for
/// the envelope (`type`, `session_id`, `seq`/`gseq`), so every stored event
/// can be sent in one frame on either link.
pub const MAX_EVENT_BYTES: usize = MAX_FRAME_BYTES - 4096;

/// The longest session id, so the envelope always fits.
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// The orchestrator's dense, strictly increasing per-session sequence number.
pub type Seq = u64;
/// The gateway's per-session sequence number for the events it emits.
pub type Gseq = u64;

/// Decodes one frame, checking its size before parsing it.
pub fn decode_frame<T: serde::de::DeserializeOwned>(text: &str, what: &'static str) -> Result<T> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(Error::TooLarge {
            what,
            size: text.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    serde_json::from_str(text).map_err(|e| Error::decode(what, &e))
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
        None => Err(Error::Decode {
            what: "hello",
            reason: "missing field `v`".into(),
        }),
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
            Error::Executor(_) => "executor",
            Error::ExecutorUnsupported(_) => ERROR_EXECUTOR_UNSUPPORTED,
            Error::Closed(_) => "closed",
            Error::Timeout { .. } => "timeout",
            _ => "internal",
        };
        WireError::new(code, e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// An instruction from a human (via the browser) or the orchestrator to a
/// session. The `type` tags are the wire names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Command {
    /// Start a new agent session in a worktree.
    Execute(Execute),
    /// Resume an executor session by the executor's own session id.
    Resume(Resume),
    /// A follow-up user turn.
    Message(UserTurn),
    /// Interrupt the running turn; the session stays resumable.
    Abort(Abort),
    /// A decision on a pending approval or answers to a question.
    Answer(Answer),
    /// End the session: its executor stops and its worktree is free again.
    /// The log stays; the session is `terminated`.
    Close(Close),
}

impl Command {
    /// The wire name of this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Execute(_) => "execute",
            Command::Resume(_) => "resume",
            Command::Message(_) => "message",
            Command::Abort(_) => "abort",
            Command::Answer(_) => "answer",
            Command::Close(_) => "close",
        }
    }
}

/// `execute`: start a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execute {
    /// The worktree path, one the gateway discovered.
    pub worktree: String,
    /// The first user prompt.
    pub prompt: String,
    /// Model name; the executor's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The executor's permission mode; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// Extra system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
}

/// `resume`: continue an earlier executor session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The executor's session id, from `session.init`.
    pub executor_session_id: String,
    /// The worktree the session ran in.
    pub worktree: String,
    /// A prompt to send once resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `message`: a follow-up user turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserTurn {
    /// What the user typed.
    pub text: String,
}

/// `abort`: interrupt the running turn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {}

/// `close`: end the session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {}

/// `answer`: resolve a pending [`UserQuestion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The question's id, from `user_question`.
    pub question_id: String,
    /// What was decided.
    #[serde(flatten)]
    pub decision: Decision,
    /// Who decided, for the gateway's audit trail (set by the orchestrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<DecidedBy>,
}

/// The outcome of an approval or a question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// Run the tool, optionally with edited input; `remember` allows this tool
    /// for the rest of the session.
    Allow {
        /// Input to run the tool with instead of the model's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        updated_input: Option<Value>,
        /// Allow this tool for the rest of the session.
        #[serde(default, skip_serializing_if = "is_false")]
        remember: bool,
    },
    /// Do not run the tool; the model is told the reason.
    Deny {
        /// Why, in the human's words; the model sees it.
        reason: String,
        /// Also interrupt the turn.
        #[serde(default, skip_serializing_if = "is_false")]
        interrupt: bool,
    },
    /// Answers to an AskUserQuestion: question text → chosen label(s), or
    /// free text.
    Answered {
        /// Question text → answer.
        answers: BTreeMap<String, String>,
    },
    /// A timeout policy fired. Never reported as a denial by a human.
    Expired,
    /// The executor withdrew the request, or the session ended.
    Cancelled {
        /// Why, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Decision {
    /// The wire name of the decision, e.g. `allow`.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Answered { .. } => "answered",
            Decision::Expired => "expired",
            Decision::Cancelled { .. } => "cancelled",
        }
    }
}

/// Who decided something, and from which client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedBy {
    /// A user name, or `policy`, `timeout`, `executor`.
    pub who: String,
    /// The client it came from, e.g. `browser 3f2a…` or `cli`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl DecidedBy {
    /// A decider with no client information.
    pub fn new(who: impl Into<String>) -> Self {
        DecidedBy {
            who: who.into(),
            client: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// Something that happened in a session. Stored in the log and relayed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `session.init`: the executor is ready.
    SessionInit(SessionInit),
    /// `assistant`: streamed text (deltas) and the final message.
    Assistant(Assistant),
    /// `tool_use`: the model asked to run a tool.
    ToolUse(ToolUse),
    /// `tool_result`: what the tool returned.
    ToolResult(ToolResult),
    /// `user_question`: a human must approve a tool call or answer.
    UserQuestion(UserQuestion),
    /// `question.resolved`: a pending question was decided.
    QuestionResolved(QuestionResolved),
    /// `result`: a turn ended.
    Result(TurnResult),
    /// `error`: the executor or the link failed.
    Error(ErrorEvent),
    /// `user.message`: a user turn, as the log records it.
    UserMessage(UserMessage),
    /// `session.state`: the session state changed.
    SessionState(StateChange),
    /// `notice`: something a person reading the session should know that
    /// is neither an error nor the agent's work; it changes no state.
    Notice(Notice),
    /// An event type this build does not know: the raw JSON object, kept
    /// whole (its `type` included) so it is stored and relayed unchanged.
    Unknown(Value),
}

/// The event types this build knows, as an internally tagged enum.
#[derive(Deserialize)]
#[serde(tag = "type")]
enum KnownEvent {
    #[serde(rename = "session.init")]
    SessionInit(SessionInit),
    #[serde(rename = "assistant")]
    Assistant(Assistant),
    #[serde(rename = "tool_use")]
    ToolUse(ToolUse),
    #[serde(rename = "tool_result")]
    ToolResult(ToolResult),
    #[serde(rename = "user_question")]
    UserQuestion(UserQuestion),
    #[serde(rename = "question.resolved")]
    QuestionResolved(QuestionResolved),
    #[serde(rename = "result")]
    Result(TurnResult),
    #[serde(rename = "error")]
    Error(ErrorEvent),
    #[serde(rename = "user.message")]
    UserMessage(UserMessage),
    #[serde(rename = "session.state")]
    SessionState(StateChange),
    #[serde(rename = "notice")]
    Notice(Notice),
}

/// The wire names of the event types this build knows.
pub const KNOWN_EVENT_TYPES: &[&str] = &[
    "session.init",
    "assistant",
    "tool_use",
    "tool_result",
    "user_question",
    "question.resolved",
    "result",
    "error",
    "user.message",
    "session.state",
    "notice",
];

impl Event {
    /// The wire `type` of this event.
    pub fn type_name(&self) -> &str {
        match self {
            Event::SessionInit(_) => "session.init",
            Event::Assistant(_) => "assistant",
            Event::ToolUse(_) => "tool_use",
            Event::ToolResult(_) => "tool_result",
            Event::UserQuestion(_) => "user_question",
            Event::QuestionResolved(_) => "question.resolved",
            Event::Result(_) => "result",
            Event::Error(_) => "error",
            Event::UserMessage(_) => "user.message",
            Event::SessionState(_) => "session.state",
            Event::Notice(_) => "notice",
            Event::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or(""),
        }
    }

    /// Decodes an event from a JSON value; an unknown `type` becomes
    /// [`Event::Unknown`], a known type with a bad body is an error.
    pub fn from_value(value: Value) -> Result<Self> {
        if !value.is_object() {
            return Err(Error::Decode {
                what: "event",
                reason: "an event must be a JSON object".into(),
            });
        }
        let known = match value.get("type") {
            Some(Value::String(t)) => KNOWN_EVENT_TYPES.contains(&t.as_str()),
            Some(_) => {
                return Err(Error::Decode {
                    what: "event",
                    reason: "field `type` is not a string".into(),
                });
            }
            None => {
                return Err(Error::Decode {
                    what: "event",
                    reason: "missing field `type`".into(),
                });
            }
        };
        if !known {
            return Ok(Event::Unknown(value));
        }
        serde_json::from_value::<KnownEvent>(value)
            .map(Event::from_known)
            .map_err(|e| Error::decode("event", &e))
    }

    /// Decodes an event from JSON text (size-checked).
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = decode_frame(text, "event")?;
        Event::from_value(value)
    }

    /// Like [`Event::from_value`], but a known type whose body does not
    /// decode is kept as [`Event::Unknown`] instead of failing: a relay must
    /// never drop what a newer peer sent.
    pub fn from_value_lenient(value: Value) -> Result<Self> {
        match Event::from_value(value.clone()) {
            Ok(e) => Ok(e),
            Err(err) if value.get("type").is_some_and(Value::is_string) => {
                tracing::warn!(error = %err, "event body does not decode; kept as raw JSON");
                Ok(Event::Unknown(value))
            }
            Err(err) => Err(err),
        }
    }

    /// Encodes the event as JSON text, whatever its size (the log checks
    /// [`MAX_EVENT_BYTES`] when the event is appended).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self)
            .map_err(|e| Error::Invalid(format!("event cannot be encoded: {e}")))
    }

    fn from_known(k: KnownEvent) -> Self {
        match k {
            KnownEvent::SessionInit(e) => Event::SessionInit(e),
            KnownEvent::Assistant(e) => Event::Assistant(e),
            KnownEvent::ToolUse(e) => Event::ToolUse(e),
            KnownEvent::ToolResult(e) => Event::ToolResult(e),
            KnownEvent::UserQuestion(e) => Event::UserQuestion(e),
            KnownEvent::QuestionResolved(e) => Event::QuestionResolved(e),
            KnownEvent::Result(e) => Event::Result(e),
            KnownEvent::Error(e) => Event::Error(e),
            KnownEvent::UserMessage(e) => Event::UserMessage(e),
            KnownEvent::SessionState(e) => Event::SessionState(e),
            KnownEvent::Notice(e) => Event::Notice(e),
        }
    }
}

/// [`KnownEvent`] borrowing its body: an event is encoded without cloning
/// it (a large tool result is copied once, into the JSON text).
#[derive(Serialize)]
#[serde(tag = "type")]
enum KnownEventRef<'a> {
    #[serde(rename = "session.init")]
    SessionInit(&'a SessionInit),
    #[serde(rename = "assistant")]
    Assistant(&'a Assistant),
    #[serde(rename = "tool_use")]
    ToolUse(&'a ToolUse),
    #[serde(rename = "tool_result")]
    ToolResult(&'a ToolResult),
    #[serde(rename = "user_question")]
    UserQuestion(&'a UserQuestion),
    #[serde(rename = "question.resolved")]
    QuestionResolved(&'a QuestionResolved),
    #[serde(rename = "result")]
    Result(&'a TurnResult),
    #[serde(rename = "error")]
    Error(&'a ErrorEvent),
    #[serde(rename = "user.message")]
    UserMessage(&'a UserMessage),
    #[serde(rename = "session.state")]
    SessionState(&'a StateChange),
    #[serde(rename = "notice")]
    Notice(&'a Notice),
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let known = match self {
            Event::Unknown(v) => return v.serialize(s),
            Event::SessionInit(e) => KnownEventRef::SessionInit(e),
            Event::Assistant(e) => KnownEventRef::Assistant(e),
            Event::ToolUse(e) => KnownEventRef::ToolUse(e),
            Event::ToolResult(e) => KnownEventRef::ToolResult(e),
            Event::UserQuestion(e) => KnownEventRef::UserQuestion(e),
            Event::QuestionResolved(e) => KnownEventRef::QuestionResolved(e),
            Event::Result(e) => KnownEventRef::Result(e),
            Event::Error(e) => KnownEventRef::Error(e),
            Event::UserMessage(e) => KnownEventRef::UserMessage(e),
            Event::SessionState(e) => KnownEventRef::SessionState(e),
            Event::Notice(e) => KnownEventRef::Notice(e),
        };
        known.serialize(s)
    }
}

/// Inside a frame, events decode leniently: a known type whose body does
/// not decode (a newer peer's shape) is kept raw as [`Event::Unknown`] and
/// relayed, so one odd event never wedges the frames behind it.
/// [`Event::from_value`] and [`Event::from_json`] stay strict.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Event::from_value_lenient(value).map_err(D::Error::custom)
    }
}

/// `session.init`: the executor started or resumed and is ready.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionInit {
    /// The executor's own session id (Claude Code's `session_id`), used to
    /// resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_session_id: Option<String>,
    /// The model in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tools the agent may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The executor's permission mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// The executor's version, e.g. the CLI's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_version: Option<String>,
}

/// Whether an [`Assistant`] event is a streamed piece or the whole message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssistantPhase {
    /// A piece of text to append to the message with the same id.
    Delta,
    /// The complete message text; replaces the deltas shown so far.
    Final,
}

/// `assistant`: the model's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    /// Message id; deltas and the final message share it.
    pub message_id: String,
    /// Delta or final.
    pub phase: AssistantPhase,
    /// The delta's text, or the whole text when final.
    pub text: String,
    /// The turn was interrupted while this message streamed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub aborted: bool,
}

/// `tool_use`: the model asked to run a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolUse {
    /// The tool call's id.
    pub tool_use_id: String,
    /// The tool's name, e.g. `Bash`.
    pub name: String,
    /// The tool's input as the model wrote it.
    pub input: Value,
    /// The assistant message that holds the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// `tool_result`: what a tool returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The tool call's id.
    pub tool_use_id: String,
    /// Text, or structured content blocks.
    pub content: Value,
    /// The tool failed or was denied.
    #[serde(default)]
    pub is_error: bool,
}

/// `user_question`: a human must decide before the session goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserQuestion {
    /// Id to answer with.
    pub question_id: String,
    /// The tool call it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    /// Permission request or AskUserQuestion.
    #[serde(flatten)]
    pub kind: QuestionKind,
}

/// What a [`UserQuestion`] asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum QuestionKind {
    /// May this tool call run?
    Permission {
        /// The tool, e.g. `Bash`.
        tool_name: String,
        /// Its input.
        input: Value,
        /// A description from the executor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// The agent asks the user to choose (Claude Code's AskUserQuestion).
    AskUser {
        /// The questions with their options.
        questions: Vec<AskQuestion>,
    },
}

impl QuestionKind {
    /// The wire name of the kind.
    pub fn name(&self) -> &'static str {
        match self {
            QuestionKind::Permission { .. } => "permission",
            QuestionKind::AskUser { .. } => "ask_user",
        }
    }
}

/// One question of an AskUserQuestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskQuestion {
    /// The question text; answers are keyed by it.
    pub question: String,
    /// A short label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The choices.
    #[serde(default)]
    pub options: Vec<AskOption>,
    /// More than one option may be chosen.
    #[serde(default)]
    pub multi_select: bool,
}

/// One choice of an [`AskQuestion`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskOption {
    /// What the user picks.
    pub label: String,
    /// What it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `question.resolved`: a pending question got its decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionResolved {
    /// The question.
    pub question_id: String,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
    /// Who decided.
    pub by: DecidedBy,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// Token counts of a turn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_input_tokens: u64,
    /// Tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_creation_input_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `result`: a turn ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnResult {
    /// The executor's subtype, e.g. `success`, `error_during_execution`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    /// The turn failed.
    #[serde(default)]
    pub is_error: bool,
    /// Wall time of the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Cost of the session so far, in US dollars (cumulative, as the CLI
    /// reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Model round trips in the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_turns: Option<u32>,
    /// Why the turn ended: `completed`, `aborted_streaming`, `aborted_tools`,
    /// `api_error`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_reason: Option<String>,
}

/// `error`: something failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorEvent {
    /// What happened.
    pub message: String,
    /// A stable code, e.g. `executor_exited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The process exit status, when a process died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The last lines the process wrote to stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
}

/// `user.message`: a user turn as the log records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMessage {
    /// What the user said.
    pub text: String,
    /// Who said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Sent while a turn was running: the agent takes it once that turn
    /// ends (its own turn starts with the next `session.init`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub queued: bool,
}

/// `session.state`: the new state of the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// The state entered.
    #[serde(flatten)]
    pub state: SessionState,
}

/// The [`Notice::code`] of the notice a restarted gateway logs before it
/// runs a turn-starting command it had taken and never started.
pub const NOTICE_RERUN_AFTER_RESTART: &str = "rerun_after_restart";

/// The [`Notice::code`] of the notice logged when a tool call runs without
/// a question because the same call was allowed "for this session" before;
/// its [`Notice::tool_use_id`] names the call.
pub const NOTICE_AUTO_ALLOWED: &str = "auto_allowed";

/// The [`ErrorEvent::code`] of the error that ends a session in which a
/// tool ran that no decision allowed.
pub const ERROR_UNAPPROVED_TOOL: &str = "unapproved_tool";

/// The [`WireError::code`] of a refused session start: the executor (e.g.
/// the Claude Code CLI's version) is not supported.
pub const ERROR_EXECUTOR_UNSUPPORTED: &str = "executor_unsupported";

/// `notice`: something a person reading the session should know that is
/// neither an error nor the agent's work, e.g. that a restarted gateway runs
/// a message it took before its restart ([`NOTICE_RERUN_AFTER_RESTART`]).
/// It changes no session state; a UI shows it as a line of the transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// A stable machine-readable code, e.g. `rerun_after_restart`; a UI
    /// words the codes it knows and shows [`Notice::message`] otherwise.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// The command it is about, when there is one (its id on the link that
    /// carried it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The tool call it is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
}

impl Notice {
    /// A notice with `code` and `message`, about no command.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Notice {
            code: code.into(),
            message: message.into(),
            command_id: None,
            tool_use_id: None,
        }
    }

    /// The same notice, about tool call `id`.
    #[must_use]
    pub fn about_tool_use(mut self, id: impl Into<String>) -> Self {
        self.tool_use_id = Some(id.into());
        self
    }

    /// The same notice, about command `id`.
    #[must_use]
    pub fn about_command(mut self, id: impl Into<String>) -> Self {
        self.command_id = Some(id.into());
        self
    }
}

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

/// The event types whose body a session's state depends on: the actor
/// reads these (`session.init`, questions, the end of a turn); every other
/// type is stored and relayed as its text.
pub const STATEFUL_EVENT_TYPES: &[&str] = &[
    "session.init",
    "user_question",
    "question.resolved",
    "result",
    "error",
];

/// An event as JSON text, decoded only as far as a session's state needs:
/// the body of a [stateful](STATEFUL_EVENT_TYPES) event, nothing else.
///
/// The orchestrator ingests the gateway's events in this form: an event's
/// text goes into the log and to the browsers as the gateway sent it, and
/// a token delta or a tool result is never decoded into an [`Event`] and
/// encoded again.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    json: std::sync::Arc<str>,
    kind: Box<str>,
    typed: Option<Event>,
}

/// The `type` of an event, borrowed when it has no escapes.
#[derive(Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

impl RawEvent {
    /// Checks `text` is an event (a JSON object with a string `type`, no
    /// larger than a frame) and decodes its body if its type is stateful,
    /// leniently as frames do: a stateful type whose body does not decode
    /// is kept as [`Event::Unknown`].
    pub fn from_json(text: &str) -> Result<Self> {
        if text.len() > MAX_FRAME_BYTES {
            return Err(Error::TooLarge {
                what: "event",
                size: text.len(),
                limit: MAX_FRAME_BYTES,
            });
        }
        if !text.trim_start().starts_with('{') {
            return Err(Error::Decode {
                what: "event",
                reason: "an event must be a JSON object".into(),
            });
        }
        let head: EventType<'_> =
            serde_json::from_str(text).map_err(|e| Error::decode("event", &e))?;
        let typed = if STATEFUL_EVENT_TYPES.contains(&head.kind.as_ref()) {
            let value: Value =
                serde_json::from_str(text).map_err(|e| Error::decode("event", &e))?;
            Some(Event::from_value_lenient(value)?)
        } else {
            None
        };
        Ok(RawEvent {
            json: text.into(),
            kind: head.kind.into(),
            typed,
        })
    }

    /// Encodes `event`.
    pub fn from_event(event: &Event) -> Result<Self> {
        let json = event.to_json()?;
        let typed = STATEFUL_EVENT_TYPES
            .contains(&event.type_name())
            .then(|| event.clone());
        Ok(RawEvent {
            json: json.into(),
            kind: event.type_name().into(),
            typed,
        })
    }

    /// The event's JSON text.
    pub fn json(&self) -> &std::sync::Arc<str> {
        &self.json
    }

    /// The event's `type`.
    pub fn type_name(&self) -> &str {
        &self.kind
    }

    /// The decoded event, for a [stateful](STATEFUL_EVENT_TYPES) type;
    /// `None` for the others.
    pub fn event(&self) -> Option<&Event> {
        self.typed.as_ref()
    }
}

/// A frame from the gateway as the orchestrator reads it: an `event`
/// frame's event is kept as text ([`RawEvent`]), the others decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayFrame {
    /// An event of a session, numbered by the gateway.
    Event {
        /// The session.
        session_id: String,
        /// The gateway's sequence number for it.
        gseq: Gseq,
        /// The event, as text.
        event: RawEvent,
    },
    /// Any other frame.
    Other(FromGateway),
}

/// The envelope of a gateway `event` frame, its event left as text.
#[derive(Deserialize)]
struct EventEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    session_id: String,
    gseq: Gseq,
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
}

/// Decodes a frame from the gateway (size-checked), an `event` frame
/// without decoding its event beyond what [`RawEvent::from_json`] needs.
/// Accepts exactly what decoding [`FromGateway`] accepts.
pub fn decode_gateway_frame(text: &str) -> Result<GatewayFrame> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(Error::TooLarge {
            what: "gateway frame",
            size: text.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    if let Ok(env) = serde_json::from_str::<EventEnvelope<'_>>(text)
        && env.kind == "event"
    {
        return Ok(GatewayFrame::Event {
            session_id: env.session_id,
            gseq: env.gseq,
            event: RawEvent::from_json(env.event.get())?,
        });
    }
    match decode_frame::<FromGateway>(text, "gateway frame")? {
        FromGateway::Event {
            session_id,
            gseq,
            event,
        } => Ok(GatewayFrame::Event {
            session_id,
            gseq,
            event: RawEvent::from_event(&event)?,
        }),
        other => Ok(GatewayFrame::Other(other)),
    }
}

/// Builds the gateway's `event` frame from an event's stored JSON text
/// without decoding it; byte-for-byte what serialising
/// `FromGateway::Event` gives.
pub fn gateway_event_frame(session_id: &str, gseq: Gseq, event_json: &str) -> Result<String> {
    let id = serde_json::to_string(session_id).map_err(|e| Error::decode("session id", &e))?;
    let mut s = String::with_capacity(event_json.len() + id.len() + 48);
    s.push_str("{\"type\":\"event\",\"session_id\":");
    s.push_str(&id);
    s.push_str(",\"gseq\":");
    s.push_str(&gseq.to_string());
    s.push_str(",\"event\":");
    s.push_str(event_json);
    s.push('}');
    Ok(s)
}

/// Builds the `event` frame for a browser from an event's stored JSON text
/// without decoding it: replay sends stored bytes as they are.
///
/// The result is byte-for-byte what serialising `ToBrowser::Event` gives.
pub fn browser_event_frame(seq: Seq, event_json: &str) -> String {
    let mut s = String::with_capacity(event_json.len() + 40);
    s.push_str("{\"type\":\"event\",\"seq\":");
    s.push_str(&seq.to_string());
    s.push_str(",\"event\":");
    s.push_str(event_json);
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_event_frames_match_serde() {
        let event = Event::UserMessage(UserMessage {
            text: "hi \"there\"".into(),
            by: None,
            queued: false,
        });
        let json = event.to_json().unwrap();
        let typed = FromGateway::Event {
            session_id: "s-\"1\"".into(),
            gseq: 42,
            event: event.clone(),
        };
        assert_eq!(
            gateway_event_frame("s-\"1\"", 42, &json).unwrap(),
            encode_frame(&typed).unwrap()
        );
        let typed = ToBrowser::Event { seq: 7, event };
        assert_eq!(browser_event_frame(7, &json), encode_frame(&typed).unwrap());
    }

    fn known_events() -> Vec<Event> {
        vec![
            Event::SessionInit(SessionInit {
                model: Some("m".into()),
                ..SessionInit::default()
            }),
            Event::Assistant(Assistant {
                message_id: "m1".into(),
                phase: AssistantPhase::Delta,
                text: "héllo \"x\"\n".into(),
                aborted: false,
            }),
            Event::Result(TurnResult::default()),
            Event::Error(ErrorEvent {
                message: "boom".into(),
                ..ErrorEvent::default()
            }),
            Event::UserMessage(UserMessage {
                text: "hi".into(),
                by: None,
                queued: false,
            }),
            Event::SessionState(StateChange {
                state: SessionState::Active,
            }),
            Event::Unknown(serde_json::json!({"type": "future.thing", "x": [1, 2]})),
        ]
    }

    #[test]
    fn a_raw_event_keeps_its_text_and_decodes_only_stateful_bodies() {
        for event in known_events() {
            let json = event.to_json().unwrap();
            let raw = RawEvent::from_json(&json).unwrap();
            assert_eq!(&**raw.json(), json.as_str());
            let stateful = STATEFUL_EVENT_TYPES.contains(&event.type_name());
            assert_eq!(raw.event(), stateful.then_some(&event), "{json}");
            assert_eq!(RawEvent::from_event(&event).unwrap(), raw);
        }
        // A stateful type whose body does not decode is kept, raw.
        let odd = r#"{"type":"result","cost_usd":"lots"}"#;
        let raw = RawEvent::from_json(odd).unwrap();
        assert_eq!(&**raw.json(), odd);
        assert!(matches!(raw.event(), Some(Event::Unknown(_))));
        // Not an event: refused, as the typed decoding refuses it.
        for bad in [
            "[\"assistant\"]",
            "{\"text\":\"no type\"}",
            "{\"type\":7}",
            "\"x\"",
            "{",
        ] {
            assert!(RawEvent::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_frames_decode_as_the_typed_frames_do() {
        for event in known_events() {
            let json = event.to_json().unwrap();
            let text = gateway_event_frame("s\"1", 9, &json).unwrap();
            let GatewayFrame::Event {
                session_id,
                gseq,
                event: raw,
            } = decode_gateway_frame(&text).unwrap()
            else {
                panic!("not an event frame: {text}");
            };
            assert_eq!((session_id.as_str(), gseq), ("s\"1", 9));
            assert_eq!(&**raw.json(), json.as_str());
            let FromGateway::Event { event: typed, .. } =
                decode_frame::<FromGateway>(&text, "frame").unwrap()
            else {
                panic!("not an event frame");
            };
            assert_eq!(RawEvent::from_event(&typed).unwrap().event(), raw.event());
        }
        // Other frames decode as before; bad ones are refused.
        let pong = encode_frame(&FromGateway::Pong { nonce: 3 }).unwrap();
        assert_eq!(
            decode_gateway_frame(&pong).unwrap(),
            GatewayFrame::Other(FromGateway::Pong { nonce: 3 })
        );
        for bad in [
            r#"{"type":"event","session_id":"s","gseq":1,"event":[1]}"#,
            r#"{"type":"event","session_id":"s","event":{"type":"assistant"}}"#,
            r#"{"type":"nope"}"#,
            "not json",
        ] {
            assert!(decode_gateway_frame(bad).is_err(), "{bad}");
        }
        let huge = format!(
            r#"{{"type":"event","session_id":"s","gseq":1,"event":{{"type":"x","pad":"{}"}}}}"#,
            "a".repeat(MAX_FRAME_BYTES)
        );
        assert!(matches!(
            decode_gateway_frame(&huge),
            Err(Error::TooLarge { .. })
        ));
    }
}
