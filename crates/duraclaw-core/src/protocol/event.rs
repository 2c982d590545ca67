//! Events: what happened in a session, as the log stores them.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{DecidedBy, Decision, decode_frame, is_false};
use crate::error::{Error, Result};
use crate::state::SessionState;

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
            return Err(Error::decode_msg("event", "an event must be a JSON object"));
        }
        let known = match value.get("type") {
            Some(Value::String(t)) => KNOWN_EVENT_TYPES.contains(&t.as_str()),
            Some(_) => {
                return Err(Error::decode_msg("event", "field `type` is not a string"));
            }
            None => {
                return Err(Error::decode_msg("event", "missing field `type`"));
            }
        };
        if !known {
            return Ok(Event::Unknown(value));
        }
        serde_json::from_value::<KnownEvent>(value)
            .map(Event::from_known)
            .map_err(|e| Error::decode("event", e))
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
    /// [`MAX_EVENT_BYTES`](super::MAX_EVENT_BYTES) when the event is appended).
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

impl UserQuestion {
    /// "May `tool_name` run with `input`?", about tool call `tool_use_id`.
    pub fn permission(
        question_id: impl Into<String>,
        tool_use_id: impl Into<String>,
        tool_name: impl Into<String>,
        input: Value,
    ) -> Self {
        UserQuestion {
            question_id: question_id.into(),
            tool_use_id: Some(tool_use_id.into()),
            kind: QuestionKind::Permission {
                tool_name: tool_name.into(),
                input,
                description: None,
            },
        }
    }
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
    /// The executor's id of the turn's last message (Claude Code's
    /// transcript uuid): a fork of the session resumes at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_uuid: Option<String>,
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

/// The [`Notice::code`] of the notice logged when an approval rule decided
/// a tool call (allowed or denied it) without asking; the message names
/// the rule and its scope, [`Notice::tool_use_id`] the call.
pub const NOTICE_RULE_DECISION: &str = "rule_decision";

/// The [`Notice::code`] of the notice logged when the executor's
/// permission mode changed (a `set_mode`, or an approved ExitPlanMode);
/// [`Notice::permission_mode`] is the new mode.
pub const NOTICE_MODE_CHANGED: &str = "mode_changed";

/// The [`Notice::code`] of the notice logged when the model changed
/// (`set_model`); [`Notice::model`] is the model the executor now uses.
pub const NOTICE_MODEL_CHANGED: &str = "model_changed";

/// The [`Notice::code`] of the notice logged when the executor refused a
/// `set_mode` or `set_model`; the message says why.
pub const NOTICE_CHANGE_FAILED: &str = "change_failed";

/// The [`ErrorEvent::code`] of the error that ends a session in which a
/// tool ran that no decision allowed.
pub const ERROR_UNAPPROVED_TOOL: &str = "unapproved_tool";

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
    /// For a [`NOTICE_RULE_DECISION`]: the rule that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Box<RuleApplied>>,
    /// The worktree the session runs in ([`NOTICE_WORKTREE`] only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<Box<SessionWorktree>>,
    /// For a [`NOTICE_MODE_CHANGED`]: the permission mode now in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// For a [`NOTICE_MODEL_CHANGED`]: the model now in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The rule that decided a tool call, in its `rule_decision` notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleApplied {
    /// The rule's text, e.g. `Read` or `Bash(rm *)`.
    pub rule: String,
    /// Its scope.
    pub scope: super::RuleScope,
    /// What it decided: `allow` or `deny`.
    pub action: super::RuleAction,
    /// The host's id for the rule, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The [`Notice::code`] of the first event the gateway logs in a session:
/// the worktree it runs in and the commit it started from.
pub const NOTICE_WORKTREE: &str = "worktree";

/// Where a session runs, as its [`NOTICE_WORKTREE`] notice records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionWorktree {
    /// The worktree's absolute path.
    pub path: String,
    /// Its branch at the start (`None` when HEAD was detached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// HEAD at the start: the base of the session's diff (`None` before the
    /// repository's first commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The gateway made this worktree for the session (it may remove it
    /// when the session is closed).
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub created: bool,
    /// The worktree the session was asked to run in, when the gateway made
    /// a new one from its repository: worktree-scope approval rules key on
    /// it, so they hold for every new worktree made from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Notice {
    /// A notice with `code` and `message`, about no command.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Notice {
            code: code.into(),
            message: message.into(),
            command_id: None,
            tool_use_id: None,
            rule: None,
            worktree: None,
            permission_mode: None,
            model: None,
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
