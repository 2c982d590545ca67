//! The lines the CLI writes on stdout, decoded.
//!
//! Each line is one JSON object. [`CliMessage::parse_line`] decodes it; a line
//! that is not JSON is a [`CliLineError`]; a JSON object of a type (or
//! control-request subtype) this build does not know is kept whole as
//! [`CliMessage::Unknown`] (or [`ControlRequestBody::Other`]) instead of
//! failing, so a newer CLI degrades instead of breaking the session.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How many characters of a bad line an error keeps.
pub const ERROR_PREFIX_CHARS: usize = 200;

/// A stdout line that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CliLineError {
    /// The line is not JSON.
    #[error("the CLI wrote a line that is not JSON ({reason}): {prefix:?}")]
    NotJson {
        /// The line's first [`ERROR_PREFIX_CHARS`] characters.
        prefix: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The line is JSON but not an object.
    #[error("the CLI wrote JSON that is not an object: {prefix:?}")]
    NotObject {
        /// The line's first [`ERROR_PREFIX_CHARS`] characters.
        prefix: String,
    },
}

fn prefix_of(line: &str) -> String {
    line.chars().take(ERROR_PREFIX_CHARS).collect()
}

/// One line of the CLI's stdout.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CliMessage {
    /// `system`/`init`: sent at the start of every turn.
    SystemInit(SystemInit),
    /// `system`/`status`: e.g. `requesting` before each model call.
    SystemStatus(SystemStatus),
    /// `system`/`api_retry`: a model call failed and will be retried.
    ApiRetry(ApiRetry),
    /// `stream_event`: one raw streaming event of the Messages API.
    StreamEvent(StreamEvent),
    /// `assistant`: a complete content block of an assistant message.
    Assistant(AssistantLine),
    /// `user`: tool results and interruption markers.
    User(UserLine),
    /// `result`: a turn ended.
    Result(ResultLine),
    /// `control_request`: the CLI asks the SDK side something.
    ControlRequest(ControlRequest),
    /// `control_response`: the CLI answers one of our control requests.
    ControlResponse(ControlResponse),
    /// `control_cancel_request`: the CLI withdrew one of its requests.
    ControlCancelRequest(ControlCancelRequest),
    /// Anything else, kept whole.
    Unknown(Value),
}

impl CliMessage {
    /// Decodes one stdout line (without its newline).
    pub fn parse_line(line: &str) -> Result<CliMessage, CliLineError> {
        let value: Value = serde_json::from_str(line).map_err(|e| CliLineError::NotJson {
            prefix: prefix_of(line),
            reason: e.to_string(),
        })?;
        if !value.is_object() {
            return Err(CliLineError::NotObject {
                prefix: prefix_of(line),
            });
        }
        Ok(CliMessage::from_value(value))
    }

    /// Decodes a JSON object. Never fails: a known type whose body does not
    /// fit its struct is kept as [`CliMessage::Unknown`].
    pub fn from_value(value: Value) -> CliMessage {
        let ty = value.get("type").and_then(Value::as_str).unwrap_or("");
        let subtype = value.get("subtype").and_then(Value::as_str).unwrap_or("");
        match (ty, subtype) {
            ("system", "init") => typed(value, CliMessage::SystemInit),
            ("system", "status") => typed(value, CliMessage::SystemStatus),
            ("system", "api_retry") => typed(value, CliMessage::ApiRetry),
            ("stream_event", _) => typed(value, CliMessage::StreamEvent),
            ("assistant", _) => typed(value, CliMessage::Assistant),
            ("user", _) => typed(value, CliMessage::User),
            ("result", _) => typed(value, CliMessage::Result),
            ("control_request", _) => typed(value, CliMessage::ControlRequest),
            ("control_response", _) => typed(value, CliMessage::ControlResponse),
            ("control_cancel_request", _) => typed(value, CliMessage::ControlCancelRequest),
            _ => CliMessage::Unknown(value),
        }
    }

    /// The line's `type` (and `subtype` for `system`), e.g. `system/init`.
    pub fn kind(&self) -> String {
        match self {
            CliMessage::SystemInit(_) => "system/init".into(),
            CliMessage::SystemStatus(_) => "system/status".into(),
            CliMessage::ApiRetry(_) => "system/api_retry".into(),
            CliMessage::StreamEvent(_) => "stream_event".into(),
            CliMessage::Assistant(_) => "assistant".into(),
            CliMessage::User(_) => "user".into(),
            CliMessage::Result(_) => "result".into(),
            CliMessage::ControlRequest(_) => "control_request".into(),
            CliMessage::ControlResponse(_) => "control_response".into(),
            CliMessage::ControlCancelRequest(_) => "control_cancel_request".into(),
            CliMessage::Unknown(v) => {
                let ty = v.get("type").and_then(Value::as_str).unwrap_or("?");
                match v.get("subtype").and_then(Value::as_str) {
                    Some(sub) => format!("{ty}/{sub}"),
                    None => ty.to_owned(),
                }
            }
        }
    }
}

fn typed<T: DeserializeOwned>(value: Value, wrap: fn(T) -> CliMessage) -> CliMessage {
    match T::deserialize(&value) {
        Ok(t) => wrap(t),
        Err(e) => {
            tracing::warn!(error = %e, "a CLI line of a known type does not decode; kept raw");
            CliMessage::Unknown(value)
        }
    }
}

/// `system`/`init`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SystemInit {
    /// The CLI's session id, used with `--resume`.
    pub session_id: String,
    /// The model.
    #[serde(default)]
    pub model: Option<String>,
    /// Tool names the agent may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Permission mode, e.g. `default`.
    #[serde(default, rename = "permissionMode")]
    pub permission_mode: Option<String>,
    /// The CLI's version, e.g. `2.1.332`.
    #[serde(default)]
    pub claude_code_version: Option<String>,
}

/// `system`/`status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SystemStatus {
    /// E.g. `requesting`.
    #[serde(default)]
    pub status: Option<String>,
    /// The permission mode in force (sent when it changes).
    #[serde(default, rename = "permissionMode")]
    pub permission_mode: Option<String>,
    /// The CLI's session id.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `system`/`api_retry`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ApiRetry {
    /// Which retry this is, from 1.
    #[serde(default)]
    pub attempt: Option<u32>,
    /// How many retries the CLI allows.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Wait before the retry.
    #[serde(default)]
    pub retry_delay_ms: Option<u64>,
    /// The HTTP status that failed.
    #[serde(default)]
    pub error_status: Option<u16>,
    /// A short error name, e.g. `overloaded`.
    #[serde(default)]
    pub error: Option<String>,
}

/// `stream_event`: a raw Messages API streaming event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct StreamEvent {
    /// The SSE event's JSON, as the API sent it.
    pub event: Value,
    /// The id of the assistant message being streamed.
    #[serde(default)]
    pub api_message_id: Option<String>,
    /// Set when a sub-agent's message streams.
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    /// The CLI's session id.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A typed view of a [`StreamEvent`]'s event.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ApiEvent<'a> {
    /// `message_start`, with the message id.
    MessageStart {
        /// The message id.
        message_id: Option<&'a str>,
    },
    /// `content_block_start`.
    BlockStart {
        /// Block index.
        index: u64,
        /// `text`, `tool_use`, `thinking`, ...
        block_type: &'a str,
    },
    /// `content_block_delta` with a `text_delta`.
    TextDelta {
        /// Block index.
        index: u64,
        /// The text piece.
        text: &'a str,
    },
    /// `content_block_delta` with an `input_json_delta`.
    InputJsonDelta {
        /// Block index.
        index: u64,
        /// A piece of the tool input's JSON text.
        partial_json: &'a str,
    },
    /// `content_block_stop`.
    BlockStop {
        /// Block index.
        index: u64,
    },
    /// `message_delta`, with the stop reason.
    MessageDelta {
        /// E.g. `end_turn`, `tool_use`.
        stop_reason: Option<&'a str>,
    },
    /// `message_stop`.
    MessageStop,
    /// Anything else (thinking deltas, pings, ...).
    Other(&'a Value),
}

impl StreamEvent {
    /// The event, typed.
    pub fn api_event(&self) -> ApiEvent<'_> {
        let e = &self.event;
        let index = e.get("index").and_then(Value::as_u64).unwrap_or(0);
        match e.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => ApiEvent::MessageStart {
                message_id: e.pointer("/message/id").and_then(Value::as_str),
            },
            "content_block_start" => ApiEvent::BlockStart {
                index,
                block_type: e
                    .pointer("/content_block/type")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            },
            "content_block_delta" => {
                let delta = e.get("delta");
                let dt = delta
                    .and_then(|d| d.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let field = |name: &str| delta.and_then(|d| d.get(name)).and_then(Value::as_str);
                match (dt, field("text"), field("partial_json")) {
                    ("text_delta", Some(text), _) => ApiEvent::TextDelta { index, text },
                    ("input_json_delta", _, Some(partial_json)) => ApiEvent::InputJsonDelta {
                        index,
                        partial_json,
                    },
                    _ => ApiEvent::Other(e),
                }
            }
            "content_block_stop" => ApiEvent::BlockStop { index },
            "message_delta" => ApiEvent::MessageDelta {
                stop_reason: e.pointer("/delta/stop_reason").and_then(Value::as_str),
            },
            "message_stop" => ApiEvent::MessageStop,
            _ => ApiEvent::Other(e),
        }
    }
}

/// A content block of an assistant or user message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call.
    ToolUse {
        /// The call's id.
        id: String,
        /// Tool name.
        name: String,
        /// Tool input.
        input: Value,
    },
    /// A tool's result.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// A string or an array of content blocks.
        content: Value,
        /// The tool failed or was refused.
        is_error: bool,
    },
    /// Extended thinking.
    Thinking {
        /// The thinking text.
        thinking: String,
    },
    /// Any other block, kept whole.
    Other(Value),
}

impl ContentBlock {
    fn from_value(v: Value) -> ContentBlock {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        match v.get("type").and_then(Value::as_str) {
            Some("text") => match s("text") {
                Some(text) => ContentBlock::Text { text },
                None => ContentBlock::Other(v),
            },
            Some("tool_use") => match (s("id"), s("name")) {
                (Some(id), Some(name)) => ContentBlock::ToolUse {
                    id,
                    name,
                    input: v.get("input").cloned().unwrap_or(Value::Null),
                },
                _ => ContentBlock::Other(v),
            },
            Some("tool_result") => match s("tool_use_id") {
                Some(tool_use_id) => ContentBlock::ToolResult {
                    tool_use_id,
                    content: v.get("content").cloned().unwrap_or(Value::Null),
                    is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                },
                None => ContentBlock::Other(v),
            },
            Some("thinking") => match s("thinking") {
                Some(thinking) => ContentBlock::Thinking { thinking },
                None => ContentBlock::Other(v),
            },
            _ => ContentBlock::Other(v),
        }
    }
}

/// A message's `content`: a string (one text block) or an array of blocks.
fn de_content<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ContentBlock>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(text) => vec![ContentBlock::Text { text }],
        Value::Array(items) => items.into_iter().map(ContentBlock::from_value).collect(),
        Value::Null => Vec::new(),
        other => vec![ContentBlock::Other(other)],
    })
}

/// The `message` of an `assistant` line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ApiMessage {
    /// The message id; several lines share it, one per content block.
    pub id: String,
    /// The model, or `<synthetic>` for messages the CLI made up (API
    /// errors).
    #[serde(default)]
    pub model: Option<String>,
    /// The blocks this line carries (usually one).
    #[serde(default, deserialize_with = "de_content")]
    pub content: Vec<ContentBlock>,
    /// Stop reason, when known.
    #[serde(default)]
    pub stop_reason: Option<String>,
}

/// `assistant`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct AssistantLine {
    /// The message (one content block of it).
    pub message: ApiMessage,
    /// Set for a sub-agent's message.
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    /// Unique per line.
    #[serde(default)]
    pub uuid: Option<String>,
    /// The turn was interrupted while this message streamed.
    #[serde(default)]
    pub aborted: bool,
    /// The CLI made this message up to report a failed API call.
    #[serde(default)]
    pub is_api_error_message: bool,
    /// The HTTP status of that failed call.
    #[serde(default)]
    pub api_error_status: Option<u16>,
}

/// The `message` of a `user` line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct UserContent {
    /// The blocks.
    #[serde(default, deserialize_with = "de_content")]
    pub content: Vec<ContentBlock>,
}

/// `user`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct UserLine {
    /// The message.
    pub message: UserContent,
    /// Set for a sub-agent's message.
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    /// Unique per line.
    #[serde(default)]
    pub uuid: Option<String>,
    /// The tool's structured result (e.g. a file's contents for `Read`).
    #[serde(default)]
    pub tool_use_result: Option<Value>,
}

/// Token counts in a `result`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ResultUsage {
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt-cache reads.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Prompt-cache writes.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
}

/// A tool call the turn refused, from `permission_denials`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PermissionDenial {
    /// Tool name.
    pub tool_name: String,
    /// The call's id.
    #[serde(default)]
    pub tool_use_id: Option<String>,
    /// Its input.
    #[serde(default)]
    pub tool_input: Value,
}

/// `result`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ResultLine {
    /// `success`, `error_during_execution`, ...; `success` also ends a turn
    /// that failed with an API error (then `is_error` is true).
    #[serde(default)]
    pub subtype: Option<String>,
    /// The turn failed.
    #[serde(default)]
    pub is_error: bool,
    /// Wall time of the turn.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Time spent in model calls.
    #[serde(default)]
    pub duration_api_ms: Option<u64>,
    /// Cost of the whole session so far (cumulative).
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    /// Token counts of this turn.
    #[serde(default)]
    pub usage: Option<ResultUsage>,
    /// Model calls in the turn.
    #[serde(default)]
    pub num_turns: Option<u32>,
    /// Tool calls refused in the turn.
    #[serde(default)]
    pub permission_denials: Vec<PermissionDenial>,
    /// `completed`, `aborted_streaming`, `aborted_tools`, `api_error`, ...
    #[serde(default)]
    pub terminal_reason: Option<String>,
    /// The final text, when the turn succeeded.
    #[serde(default)]
    pub result: Option<String>,
    /// The HTTP status of a failed model call.
    #[serde(default)]
    pub api_error_status: Option<u16>,
    /// The CLI's session id.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// `control_request`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ControlRequest {
    /// Echo it in the `control_response`.
    pub request_id: String,
    /// What is asked.
    pub request: ControlRequestBody,
}

/// What a [`ControlRequest`] asks.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ControlRequestBody {
    /// A hook we registered fired.
    HookCallback(HookCallback),
    /// May this tool call run?
    CanUseTool(CanUseTool),
    /// Another subtype, kept whole; answer it with an error so the CLI does
    /// not wait.
    Other {
        /// The subtype, e.g. `mcp_message`.
        subtype: String,
        /// The whole request object.
        raw: Value,
    },
}

impl<'de> Deserialize<'de> for ControlRequestBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(d)?;
        let subtype = raw
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let other = |raw: Value| ControlRequestBody::Other {
            subtype: subtype.clone(),
            raw,
        };
        Ok(match subtype.as_str() {
            "hook_callback" => match HookCallback::deserialize(&raw) {
                Ok(h) => ControlRequestBody::HookCallback(h),
                Err(_) => other(raw),
            },
            "can_use_tool" => match CanUseTool::deserialize(&raw) {
                Ok(c) => ControlRequestBody::CanUseTool(c),
                Err(_) => other(raw),
            },
            _ => other(raw),
        })
    }
}

/// `hook_callback`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct HookCallback {
    /// The callback id we registered in `initialize`.
    #[serde(default)]
    pub callback_id: Option<String>,
    /// The hook's input.
    pub input: HookInput,
    /// The tool call it is about.
    #[serde(default)]
    pub tool_use_id: Option<String>,
}

/// The input of a hook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct HookInput {
    /// E.g. `PreToolUse`.
    #[serde(default)]
    pub hook_event_name: Option<String>,
    /// Tool name.
    #[serde(default)]
    pub tool_name: Option<String>,
    /// Tool input.
    #[serde(default)]
    pub tool_input: Option<Value>,
    /// The call's id.
    #[serde(default)]
    pub tool_use_id: Option<String>,
}

/// `can_use_tool`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct CanUseTool {
    /// Tool name, e.g. `Bash`, `AskUserQuestion`.
    pub tool_name: String,
    /// Tool input.
    #[serde(default)]
    pub input: Value,
    /// The call's id.
    #[serde(default)]
    pub tool_use_id: Option<String>,
    /// A short description, e.g. the file name for `Read`.
    #[serde(default)]
    pub description: Option<String>,
    /// Why the CLI asks (our hook's reason).
    #[serde(default)]
    pub decision_reason: Option<String>,
    /// Rules the CLI suggests to remember the decision.
    #[serde(default)]
    pub permission_suggestions: Option<Value>,
    /// A path outside the allowed directories, when that is why it asks.
    #[serde(default)]
    pub blocked_path: Option<String>,
    /// Set for tools that need a human's input (AskUserQuestion).
    #[serde(default)]
    pub requires_user_interaction: bool,
}

/// `control_response`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ControlResponse {
    /// The answer.
    pub response: ControlResponseBody,
}

/// The body of a [`ControlResponse`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ControlResponseBody {
    /// `success` or `error`.
    pub subtype: String,
    /// Our request's id.
    pub request_id: String,
    /// The answer on success.
    #[serde(default)]
    pub response: Option<Value>,
    /// The error on failure.
    #[serde(default)]
    pub error: Option<String>,
}

/// `control_cancel_request`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ControlCancelRequest {
    /// The id of the CLI's request it withdrew.
    pub request_id: String,
}
