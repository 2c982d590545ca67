//! [`CliEventMapper`]: CLI stdout lines in, Duraclaw events and the
//! executor's to-dos out. No I/O: the executor feeds it every decoded line,
//! emits the events in order, then carries out the actions.

use std::collections::{HashMap, HashSet};

use duraclaw_core::protocol::{
    AskOption, AskQuestion, Assistant, AssistantPhase, Event, NOTICE_MODE_CHANGED, Notice,
    QuestionKind, SessionInit, ToolResult, ToolUse, TurnResult, Usage, UserQuestion,
};
use serde_json::{Value, json};

use super::input::CliInput;
use super::message::{
    ApiEvent, AssistantLine, CanUseTool, CliLineError, CliMessage, ContentBlock, ControlRequest,
    ControlRequestBody, ResultLine, UserLine,
};

/// The reason given with every "ask" answer to the PreToolUse hook; the CLI
/// echoes it as `can_use_tool`'s `decision_reason`.
pub const DEFAULT_HOOK_REASON: &str = "Duraclaw routes every tool call to a human for approval.";

/// The tool whose `can_use_tool` is a question to the user, not a permission
/// request.
pub const ASK_USER_QUESTION_TOOL: &str = "AskUserQuestion";

/// The tool whose approval ends plan mode; its `plan` input is the plan.
pub const EXIT_PLAN_MODE_TOOL: &str = "ExitPlanMode";

/// Tools that change files: refused in plan mode before anyone is asked.
pub const EDIT_TOOLS: &[&str] = &["Edit", "MultiEdit", "Write", "NotebookEdit"];

/// What the model is told when it tries an edit in plan mode.
pub const PLAN_MODE_EDIT_REASON: &str =
    "The session is in plan mode: files are not changed until the plan is approved.";

/// Something the executor must do besides emitting events.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CliAction {
    /// Write this line to the CLI now (answers that need no human: hooks,
    /// unsupported requests).
    Send(CliInput),
    /// Ask the approval gate about `question`, then answer with
    /// [`CliInput::for_decision`]`(request_id, &input, &decision)` and call
    /// [`CliEventMapper::answered`].
    AskGate {
        /// The CLI's `can_use_tool` request id (also the question id).
        request_id: String,
        /// The question, as emitted in the `user_question` event.
        question: UserQuestion,
        /// The tool input the CLI sent, for an allow without edits.
        input: Value,
    },
    /// The CLI withdrew request `request_id`; cancel the question in the
    /// gate (a late answer would be ignored by the CLI).
    Withdraw {
        /// The CLI's request id.
        request_id: String,
        /// The question it had raised, if it was a pending `can_use_tool`.
        question_id: Option<String>,
    },
    /// The CLI answered one of our control requests.
    Response {
        /// Our request id.
        request_id: String,
        /// The response body, or the CLI's error.
        result: Result<Value, String>,
    },
}

/// What one CLI line produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// Events to emit, in order.
    pub events: Vec<Event>,
    /// Things to do after emitting them.
    pub actions: Vec<CliAction>,
}

/// A `can_use_tool` request waiting for the gate.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingQuestion {
    /// The question as emitted.
    pub question: UserQuestion,
    /// The tool input the CLI sent.
    pub input: Value,
}

/// Turns the CLI's stdout lines into [`Event`]s and [`CliAction`]s.
///
/// - `system/init` → `session.init` (the CLI sends it at the start of every
///   turn; so does the mapper, which the session state machine expects);
/// - `stream_event` text deltas → `assistant` deltas; `assistant` lines →
///   `assistant` final messages, their text blocks merged by message id
///   (joined with a blank line), and `tool_use` for each tool call;
/// - `user` tool results → `tool_result`;
/// - `can_use_tool` → `user_question` (kind `ask_user` for AskUserQuestion
///   with parseable questions, `permission` otherwise) and
///   [`CliAction::AskGate`]; `hook_callback` → [`CliAction::Send`] of an
///   "ask" answer; `control_cancel_request` → [`CliAction::Withdraw`];
///   `control_response` → [`CliAction::Response`];
/// - `result` → `result`;
/// - everything else (status, API retries, interruption markers, unknown
///   lines) → [`Event::Unknown`] with type `cli.<kind>` and the line's
///   content, so it is logged and relayed rather than lost.
#[derive(Debug, Clone)]
pub struct CliEventMapper {
    hook_reason: String,
    session_id: Option<String>,
    streaming_message: Option<String>,
    /// Text blocks per assistant message id, this turn.
    texts: HashMap<String, Vec<String>>,
    /// Line uuids seen this turn, to ignore a repeated line.
    seen_lines: HashSet<String>,
    /// Tool-use ids already reported this turn.
    tool_uses: HashSet<String>,
    /// `can_use_tool` requests awaiting an answer, by request id.
    pending: HashMap<String, PendingQuestion>,
    /// The permission mode in force, as the CLI last reported it.
    permission_mode: Option<String>,
    /// The uuid of the turn's last assistant line: where a fork resumes.
    last_uuid: Option<String>,
    /// ExitPlanMode inputs by tool-use id, this turn: the CLI's
    /// `can_use_tool` for it carries an empty input.
    plans: HashMap<String, Value>,
}

impl Default for CliEventMapper {
    fn default() -> Self {
        CliEventMapper::new()
    }
}

impl CliEventMapper {
    /// A mapper for a new CLI process.
    pub fn new() -> Self {
        CliEventMapper {
            hook_reason: DEFAULT_HOOK_REASON.to_owned(),
            session_id: None,
            streaming_message: None,
            texts: HashMap::new(),
            seen_lines: HashSet::new(),
            tool_uses: HashSet::new(),
            pending: HashMap::new(),
            permission_mode: None,
            last_uuid: None,
            plans: HashMap::new(),
        }
    }

    /// Starts in permission mode `mode` (the one the CLI was launched with).
    pub fn with_permission_mode(mut self, mode: impl Into<String>) -> Self {
        self.permission_mode = Some(mode.into());
        self
    }

    /// The permission mode in force, once the CLI reported one.
    pub fn permission_mode(&self) -> Option<&str> {
        self.permission_mode.as_deref()
    }

    /// A `mode_changed` notice when `mode` differs from the one in force.
    fn mode_reported(&mut self, mode: Option<&String>, out: &mut Mapped) {
        let Some(mode) = mode else { return };
        if self.permission_mode.as_ref() == Some(mode) {
            return;
        }
        let first = self.permission_mode.is_none();
        self.permission_mode = Some(mode.clone());
        if !first {
            let mut notice = Notice::new(
                NOTICE_MODE_CHANGED,
                format!("The permission mode is now {mode}."),
            );
            notice.permission_mode = Some(mode.clone());
            out.events.push(Event::Notice(notice));
        }
    }

    /// Uses `reason` in the hook's "ask" answers.
    pub fn with_hook_reason(mut self, reason: impl Into<String>) -> Self {
        self.hook_reason = reason.into();
        self
    }

    /// The CLI's session id, once `system/init` was seen.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// `can_use_tool` requests still waiting, by request id.
    pub fn pending(&self) -> &HashMap<String, PendingQuestion> {
        &self.pending
    }

    /// Records that `request_id` was answered; returns what it asked.
    pub fn answered(&mut self, request_id: &str) -> Option<PendingQuestion> {
        self.pending.remove(request_id)
    }

    /// Decodes and maps one stdout line.
    pub fn feed_line(&mut self, line: &str) -> Result<Mapped, CliLineError> {
        Ok(self.feed(&CliMessage::parse_line(line)?))
    }

    /// Maps one decoded line.
    pub fn feed(&mut self, msg: &CliMessage) -> Mapped {
        let mut out = Mapped::default();
        match msg {
            CliMessage::SystemInit(init) => {
                self.session_id = Some(init.session_id.clone());
                self.mode_reported(init.permission_mode.as_ref(), &mut out);
                out.events.push(Event::SessionInit(SessionInit {
                    executor_session_id: Some(init.session_id.clone()),
                    model: init.model.clone(),
                    tools: init.tools.clone(),
                    cwd: init.cwd.clone(),
                    permission_mode: init.permission_mode.clone(),
                    executor_version: init.claude_code_version.clone(),
                }));
            }
            CliMessage::SystemStatus(s) => {
                out.events
                    .push(cli_event("status", json!({"status": s.status})));
                self.mode_reported(s.permission_mode.as_ref(), &mut out);
            }
            CliMessage::ApiRetry(r) => out.events.push(cli_event(
                "api_retry",
                json!({
                    "attempt": r.attempt,
                    "max_retries": r.max_retries,
                    "retry_delay_ms": r.retry_delay_ms,
                    "error_status": r.error_status,
                    "error": r.error,
                }),
            )),
            CliMessage::StreamEvent(se) => match se.api_event() {
                ApiEvent::MessageStart { message_id } => {
                    self.streaming_message = se
                        .api_message_id
                        .clone()
                        .or_else(|| message_id.map(str::to_owned));
                }
                ApiEvent::TextDelta { text, .. } if !text.is_empty() => {
                    let id = se
                        .api_message_id
                        .clone()
                        .or_else(|| self.streaming_message.clone())
                        .unwrap_or_default();
                    out.events.push(Event::Assistant(Assistant {
                        message_id: id,
                        phase: AssistantPhase::Delta,
                        text: text.to_owned(),
                        aborted: false,
                    }));
                }
                // Tool input, thinking and framing events: the complete
                // `assistant` line that follows carries what they build.
                _ => {}
            },
            CliMessage::Assistant(a) => self.assistant(a, &mut out),
            CliMessage::User(u) => self.user(u, &mut out),
            CliMessage::Result(r) => {
                let mut result = turn_result(r);
                result.last_message_uuid = self.last_uuid.take();
                out.events.push(Event::Result(result));
                self.end_turn();
            }
            CliMessage::ControlRequest(req) => self.control_request(req, &mut out),
            CliMessage::ControlResponse(resp) => {
                let b = &resp.response;
                let result = if b.subtype == "success" {
                    Ok(b.response.clone().unwrap_or(Value::Null))
                } else {
                    Err(b
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("control response `{}`", b.subtype)))
                };
                out.actions.push(CliAction::Response {
                    request_id: b.request_id.clone(),
                    result,
                });
            }
            CliMessage::ControlCancelRequest(c) => {
                let question_id = self
                    .pending
                    .remove(&c.request_id)
                    .map(|p| p.question.question_id);
                out.actions.push(CliAction::Withdraw {
                    request_id: c.request_id.clone(),
                    question_id,
                });
            }
            CliMessage::Unknown(raw) => {
                out.events
                    .push(cli_event(&unknown_kind(raw), json!({"line": raw})));
            }
        }
        out
    }

    fn first_time(&mut self, uuid: Option<&String>) -> bool {
        match uuid {
            Some(u) => self.seen_lines.insert(u.clone()),
            None => true,
        }
    }

    fn assistant(&mut self, a: &AssistantLine, out: &mut Mapped) {
        if !self.first_time(a.uuid.as_ref()) {
            return;
        }
        if a.uuid.is_some() {
            self.last_uuid.clone_from(&a.uuid);
        }
        let id = &a.message.id;
        let mut text_changed = false;
        for block in &a.message.content {
            match block {
                ContentBlock::Text { text } => {
                    self.texts.entry(id.clone()).or_default().push(text.clone());
                    text_changed = true;
                }
                ContentBlock::ToolUse {
                    id: tool_use_id,
                    name,
                    input,
                } if self.tool_uses.insert(tool_use_id.clone()) => {
                    if name == EXIT_PLAN_MODE_TOOL {
                        self.plans.insert(tool_use_id.clone(), input.clone());
                    }
                    out.events.push(Event::ToolUse(ToolUse {
                        tool_use_id: tool_use_id.clone(),
                        name: name.clone(),
                        input: input.clone(),
                        message_id: Some(id.clone()),
                    }));
                }
                _ => {}
            }
        }
        if text_changed || (a.aborted && self.texts.contains_key(id)) {
            let text = self
                .texts
                .get(id)
                .map(|t| t.join("\n\n"))
                .unwrap_or_default();
            // Ahead of any tool_use of the same line: text comes first in a
            // message.
            let at = out
                .events
                .iter()
                .position(|e| matches!(e, Event::ToolUse(_)))
                .unwrap_or(out.events.len());
            out.events.insert(
                at,
                Event::Assistant(Assistant {
                    message_id: id.clone(),
                    phase: AssistantPhase::Final,
                    text,
                    aborted: a.aborted,
                }),
            );
        }
    }

    fn user(&mut self, u: &UserLine, out: &mut Mapped) {
        if !self.first_time(u.uuid.as_ref()) {
            return;
        }
        let mut other_text = Vec::new();
        for block in &u.message.content {
            match block {
                ContentBlock::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => {
                    self.pending
                        .retain(|_, p| p.question.tool_use_id.as_ref() != Some(tool_use_id));
                    out.events.push(Event::ToolResult(ToolResult {
                        tool_use_id: tool_use_id.clone(),
                        content: content.clone(),
                        is_error: *is_error,
                    }));
                }
                ContentBlock::Text { text } => other_text.push(text.clone()),
                _ => {}
            }
        }
        if !other_text.is_empty() {
            // E.g. "[Request interrupted by user]".
            out.events
                .push(cli_event("user", json!({"text": other_text.join("\n\n")})));
        }
    }

    fn control_request(&mut self, req: &ControlRequest, out: &mut Mapped) {
        let request_id = req.request_id.clone();
        match &req.request {
            ControlRequestBody::HookCallback(h) => {
                let pre_tool_use = h
                    .input
                    .hook_event_name
                    .as_deref()
                    .is_none_or(|n| n == "PreToolUse");
                let plan_edit = self.permission_mode.as_deref() == Some("plan")
                    && h.input
                        .tool_name
                        .as_deref()
                        .is_some_and(|t| EDIT_TOOLS.contains(&t));
                out.actions
                    .push(CliAction::Send(if pre_tool_use && plan_edit {
                        CliInput::HookDeny {
                            request_id,
                            reason: PLAN_MODE_EDIT_REASON.to_owned(),
                        }
                    } else if pre_tool_use {
                        CliInput::HookAsk {
                            request_id,
                            reason: self.hook_reason.clone(),
                        }
                    } else {
                        CliInput::HookContinue { request_id }
                    }));
            }
            ControlRequestBody::CanUseTool(c) => {
                // ExitPlanMode's request carries no input: the plan is in
                // its tool_use, which the person approving must read.
                let filled;
                let c = match c.tool_use_id.as_ref().and_then(|id| self.plans.get(id)) {
                    Some(plan) if c.tool_name == EXIT_PLAN_MODE_TOOL && is_empty(&c.input) => {
                        let mut with = c.clone();
                        with.input = plan.clone();
                        filled = with;
                        &filled
                    }
                    _ => c,
                };
                let question = UserQuestion {
                    question_id: request_id.clone(),
                    tool_use_id: c.tool_use_id.clone(),
                    kind: question_kind(c),
                };
                self.pending.insert(
                    request_id.clone(),
                    PendingQuestion {
                        question: question.clone(),
                        input: c.input.clone(),
                    },
                );
                out.events.push(Event::UserQuestion(question.clone()));
                out.actions.push(CliAction::AskGate {
                    request_id,
                    question,
                    input: c.input.clone(),
                });
            }
            ControlRequestBody::Other { subtype, raw } => {
                out.events.push(cli_event(
                    "control_request",
                    json!({"subtype": subtype, "request": raw}),
                ));
                out.actions.push(CliAction::Send(CliInput::Error {
                    request_id,
                    message: format!("unsupported control request `{subtype}`"),
                }));
            }
        }
    }

    fn end_turn(&mut self) {
        self.streaming_message = None;
        self.texts.clear();
        self.seen_lines.clear();
        self.tool_uses.clear();
        self.plans.clear();
    }
}

/// An empty object, or nothing.
fn is_empty(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty)
}

/// An [`Event::Unknown`] of type `cli.<kind>` with `fields`.
fn cli_event(kind: &str, fields: Value) -> Event {
    let mut obj = match fields {
        Value::Object(m) => m,
        other => {
            let mut m = serde_json::Map::new();
            m.insert("value".to_owned(), other);
            m
        }
    };
    obj.insert("type".to_owned(), Value::String(format!("cli.{kind}")));
    Event::Unknown(Value::Object(obj))
}

fn unknown_kind(raw: &Value) -> String {
    let ty = raw.get("type").and_then(Value::as_str).unwrap_or("unknown");
    match raw.get("subtype").and_then(Value::as_str) {
        Some(sub) => format!("{ty}.{sub}"),
        None => ty.to_owned(),
    }
}

fn turn_result(r: &ResultLine) -> TurnResult {
    TurnResult {
        last_message_uuid: None,
        subtype: r.subtype.clone(),
        is_error: r.is_error,
        duration_ms: r.duration_ms,
        cost_usd: r.total_cost_usd,
        usage: r.usage.as_ref().map(|u| Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_input_tokens: u.cache_read_input_tokens,
            cache_creation_input_tokens: u.cache_creation_input_tokens,
        }),
        num_turns: r.num_turns,
        terminal_reason: r.terminal_reason.clone(),
    }
}

fn question_kind(c: &CanUseTool) -> QuestionKind {
    if c.tool_name == ASK_USER_QUESTION_TOOL
        && let Some(questions) = ask_questions(&c.input)
    {
        return QuestionKind::AskUser { questions };
    }
    QuestionKind::Permission {
        tool_name: c.tool_name.clone(),
        input: c.input.clone(),
        description: c.description.clone(),
    }
}

/// AskUserQuestion's `questions`, or `None` when they do not parse.
fn ask_questions(input: &Value) -> Option<Vec<AskQuestion>> {
    let items = input.get("questions")?.as_array()?;
    let mut out = Vec::with_capacity(items.len());
    for q in items {
        let question = q.get("question")?.as_str()?.to_owned();
        let options = match q.get("options") {
            Some(Value::Array(opts)) => opts
                .iter()
                .map(|o| {
                    Some(AskOption {
                        label: o.get("label")?.as_str()?.to_owned(),
                        description: o
                            .get("description")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    })
                })
                .collect::<Option<Vec<_>>>()?,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return None,
        };
        out.push(AskQuestion {
            question,
            header: q.get("header").and_then(Value::as_str).map(str::to_owned),
            options,
            multi_select: q
                .get("multiSelect")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    Some(out)
}
