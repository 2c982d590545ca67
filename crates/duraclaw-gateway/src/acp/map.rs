//! `session/update` notifications to our events. The crate's types stop
//! here: what leaves this module is [`Event`]s and plain data.

use std::collections::{HashMap, HashSet, VecDeque};

use agent_client_protocol::v1::schema::{
    ContentBlock, PlanEntry, PromptResponse, SessionUpdate, StopReason, ToolCallContent,
    ToolCallStatus, ToolKind,
};
use duraclaw_core::protocol::{
    Assistant, AssistantPhase, Event, Notice, ToolResult, ToolUse, Usage,
};
use serde_json::{Value, json};

/// A tool call the agent reported this turn.
#[derive(Debug, Clone)]
pub(super) struct Call {
    /// Its name for the gate (fixed once its `tool_use` is logged).
    pub name: String,
    /// Its input; `Null` until the agent says it.
    pub input: Value,
    pub title: String,
    /// The agent's own name for the tool, when it says.
    hint: Option<String>,
    kind: Option<ToolKind>,
    /// Its `tool_use` was logged.
    pub shown: bool,
    /// A decision allowed it (a person, a rule or a standing allow).
    pub allowed: bool,
    /// Its result was reported.
    pub done: bool,
}

/// What the agent says of a tool call (a `tool_call`, an update, a
/// permission request).
#[derive(Debug, Default)]
pub(super) struct Seen<'a> {
    pub title: Option<&'a str>,
    pub kind: Option<&'a ToolKind>,
    pub name: Option<&'a str>,
    pub raw_input: Option<&'a Value>,
    pub meta: Option<&'a serde_json::Map<String, Value>>,
}

/// Whether `v` says something (agents stream an empty input first).
fn known(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// What the reader does with one update, in order.
#[derive(Debug)]
pub(super) enum Out {
    Emit(Event),
    /// The agent says this call runs (or ran): it must have been allowed.
    Runs(String),
}

/// How many ended turns' call ids a [`Mapper`] keeps.
const ENDED_CALLS: usize = 4096;

/// Follows a session's updates.
#[derive(Debug)]
pub(super) struct Mapper {
    /// Unique to this process of the agent: message ids never repeat
    /// across resumes.
    nonce: String,
    next_message: u64,
    /// The message streaming now: id and text so far.
    open: Option<(String, String)>,
    /// The thought streaming now.
    thought: String,
    pub calls: HashMap<String, Call>,
    /// The ids of the calls of ended turns, the latest [`ENDED_CALLS`]
    /// (oldest first), to tell a late request about one of them.
    ended: VecDeque<String>,
    ended_ids: HashSet<String>,
    /// The cost the agent last reported, in US dollars.
    cost_usd: Option<f64>,
    /// The agent's mode.
    mode: Option<String>,
}

impl Mapper {
    pub(super) fn new(nonce: String) -> Self {
        Mapper {
            nonce,
            next_message: 0,
            open: None,
            thought: String::new(),
            calls: HashMap::new(),
            ended: VecDeque::new(),
            ended_ids: HashSet::new(),
            cost_usd: None,
            mode: None,
        }
    }

    /// The agent's mode now.
    pub(super) fn mode(&self) -> Option<String> {
        self.mode.clone()
    }

    /// The agent's mode is `mode` (it said so, or we set it).
    pub(super) fn set_mode(&mut self, mode: &str) {
        self.mode = Some(mode.to_owned());
    }

    fn message_id(&mut self) -> String {
        self.next_message += 1;
        format!("{}-m{}", self.nonce, self.next_message)
    }

    /// Ends the streaming message and thought, if any.
    pub(super) fn close(&mut self, aborted: bool) -> Vec<Event> {
        let mut out = Vec::new();
        if !self.thought.is_empty() {
            out.push(Event::Unknown(json!({
                "type": "acp.thought",
                "text": std::mem::take(&mut self.thought),
            })));
        }
        if let Some((message_id, text)) = self.open.take() {
            out.push(Event::Assistant(Assistant {
                message_id,
                phase: AssistantPhase::Final,
                text,
                aborted,
            }));
        }
        out
    }

    /// Ends the turn: what streams is closed; calls are forgotten, but
    /// their ids are kept (the latest [`ENDED_CALLS`]).
    pub(super) fn end_turn(&mut self, aborted: bool) -> (Vec<Event>, Option<f64>) {
        let out = self.close(aborted);
        for (id, _) in self.calls.drain() {
            if self.ended_ids.insert(id.clone()) {
                self.ended.push_back(id);
            }
        }
        while self.ended.len() > ENDED_CALLS {
            if let Some(old) = self.ended.pop_front() {
                self.ended_ids.remove(&old);
            }
        }
        (out, self.cost_usd)
    }

    /// Whether `id` is a call of an ended turn and not one of this turn's
    /// (an agent that reuses an id announces it again first).
    pub(super) fn of_an_ended_turn(&self, id: &str) -> bool {
        !self.calls.contains_key(id) && self.ended_ids.contains(id)
    }

    /// Notes what the agent says of call `id`; its `tool_use` is logged
    /// once its input is known.
    pub(super) fn note(&mut self, id: &str, seen: &Seen<'_>) -> Vec<Out> {
        let call = self.calls.entry(id.to_owned()).or_insert_with(|| Call {
            name: String::new(),
            input: Value::Null,
            title: String::new(),
            hint: None,
            kind: None,
            shown: false,
            allowed: false,
            done: false,
        });
        if let Some(t) = seen.title.filter(|t| !t.is_empty()) {
            call.title = t.to_owned();
        }
        if let Some(k) = seen.kind {
            call.kind = Some(*k);
        }
        // The agent's name for the tool; Zed's Claude adapter puts Claude
        // Code's (`Bash`, `Read`, …) in `_meta`, so rules written for
        // Claude apply to it.
        let hint = seen
            .name
            .map(str::to_owned)
            .or_else(|| meta_name(seen.meta).map(str::to_owned));
        if let Some(h) = hint.filter(|h| !h.is_empty()) {
            call.hint = Some(h);
        }
        if !call.shown
            && let Some(input) = seen.raw_input.filter(|v| known(v))
        {
            call.input = input.clone();
        }
        if !call.shown && known(&call.input) {
            return self.show(id);
        }
        Vec::new()
    }

    /// Logs call `id`'s `tool_use` if it was not yet (what is known of its
    /// input then is its input).
    pub(super) fn show(&mut self, id: &str) -> Vec<Out> {
        if self.calls.get(id).is_none_or(|c| c.shown) {
            return Vec::new();
        }
        let mut out: Vec<Out> = self.close(false).into_iter().map(Out::Emit).collect();
        if let Some(call) = self.calls.get_mut(id) {
            call.shown = true;
            call.name = tool_name(call.hint.as_deref(), call.kind.as_ref(), &call.title);
            if !known(&call.input) {
                call.input = json!({ "title": call.title });
            }
            out.push(Out::Emit(Event::ToolUse(ToolUse {
                tool_use_id: id.to_owned(),
                name: call.name.clone(),
                input: call.input.clone(),
                message_id: None,
            })));
        }
        out
    }

    /// One update.
    pub(super) fn update(&mut self, update: SessionUpdate) -> Vec<Out> {
        match update {
            SessionUpdate::AgentMessageChunk(chunk) => {
                let text = block_text(&chunk.content);
                if text.is_empty() {
                    return Vec::new();
                }
                let mut out = Vec::new();
                if !self.thought.is_empty() {
                    out.push(Out::Emit(Event::Unknown(json!({
                        "type": "acp.thought",
                        "text": std::mem::take(&mut self.thought),
                    }))));
                }
                if self.open.is_none() {
                    let id = self.message_id();
                    self.open = Some((id, String::new()));
                }
                if let Some((id, so_far)) = self.open.as_mut() {
                    so_far.push_str(&text);
                    out.push(Out::Emit(Event::Assistant(Assistant {
                        message_id: id.clone(),
                        phase: AssistantPhase::Delta,
                        text,
                        aborted: false,
                    })));
                }
                out
            }
            SessionUpdate::AgentThoughtChunk(chunk) => {
                self.thought.push_str(&block_text(&chunk.content));
                Vec::new()
            }
            SessionUpdate::ToolCall(tc) => {
                let id = tc.tool_call_id.0.to_string();
                let mut out = self.note(
                    &id,
                    &Seen {
                        title: Some(&tc.title),
                        kind: Some(&tc.kind),
                        name: tc.name.as_deref(),
                        raw_input: tc.raw_input.as_ref(),
                        meta: tc.meta.as_ref(),
                    },
                );
                out.extend(self.status(&id, tc.status, &tc.content, tc.raw_output.as_ref()));
                out
            }
            SessionUpdate::ToolCallUpdate(u) => {
                let id = u.tool_call_id.0.to_string();
                let f = u.fields;
                let mut out = self.note(
                    &id,
                    &Seen {
                        title: f.title.as_deref(),
                        kind: f.kind.as_ref(),
                        name: f.name.as_deref(),
                        raw_input: f.raw_input.as_ref(),
                        meta: u.meta.as_ref(),
                    },
                );
                if let Some(status) = f.status {
                    let content = f.content.unwrap_or_default();
                    out.extend(self.status(&id, status, &content, f.raw_output.as_ref()));
                }
                out
            }
            SessionUpdate::Plan(plan) => {
                let mut out: Vec<Out> = self.close(false).into_iter().map(Out::Emit).collect();
                out.push(Out::Emit(Event::Unknown(json!({
                    "type": "acp.plan",
                    "entries": plan.entries.iter().map(plan_entry).collect::<Vec<_>>(),
                }))));
                out
            }
            SessionUpdate::UsageUpdate(u) => {
                if let Some(cost) = u.cost
                    && cost.currency.eq_ignore_ascii_case("USD")
                {
                    self.cost_usd = Some(cost.amount);
                }
                Vec::new()
            }
            SessionUpdate::CurrentModeUpdate(m) => {
                let mode = m.current_mode_id.0.to_string();
                if self.mode.as_deref() == Some(mode.as_str()) {
                    return Vec::new();
                }
                self.mode = Some(mode.clone());
                let mut notice = Notice::new(
                    duraclaw_core::protocol::NOTICE_MODE_CHANGED,
                    format!("The agent's mode is now `{mode}`."),
                );
                notice.permission_mode = Some(mode);
                vec![Out::Emit(Event::Notice(notice))]
            }
            other => {
                tracing::debug!(update = ?other, "an ACP update with nothing to show");
                Vec::new()
            }
        }
    }

    fn status(
        &mut self,
        id: &str,
        status: ToolCallStatus,
        content: &[ToolCallContent],
        raw_output: Option<&Value>,
    ) -> Vec<Out> {
        if matches!(status, ToolCallStatus::Pending) {
            return Vec::new();
        }
        let mut out = self.show(id);
        let Some(call) = self.calls.get_mut(id) else {
            return out;
        };
        match status {
            ToolCallStatus::InProgress => out.push(Out::Runs(id.to_owned())),
            ToolCallStatus::Completed | ToolCallStatus::Failed if !call.done => {
                call.done = true;
                let failed = status == ToolCallStatus::Failed;
                if !failed {
                    out.push(Out::Runs(id.to_owned()));
                }
                out.push(Out::Emit(Event::ToolResult(ToolResult {
                    tool_use_id: id.to_owned(),
                    content: result_content(content, raw_output),
                    is_error: failed,
                })));
            }
            _ => {}
        }
        out
    }
}

/// The tool's name in an agent's `_meta` (Zed's Claude adapter says
/// Claude Code's there).
pub(super) fn meta_name(meta: Option<&serde_json::Map<String, Value>>) -> Option<&str> {
    meta.and_then(|m| m.get("claudeCode"))
        .and_then(|c| c.get("toolName"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// The tool's name for the gate and its rules: the agent's name for it
/// (or its hint in `_meta`), else its kind (`execute`, `edit`, …), else its title.
fn tool_name(name: Option<&str>, kind: Option<&ToolKind>, title: &str) -> String {
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        return n.to_owned();
    }
    match kind.and_then(|k| serde_json::to_value(k).ok()) {
        Some(Value::String(k)) if k != "other" => k,
        _ if !title.is_empty() => title.to_owned(),
        _ => "tool".to_owned(),
    }
}

fn block_text(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::ResourceLink(l) => format!("[{}]({})", l.name, l.uri),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .map(|t| format!("[{t}]"))
            .unwrap_or_default(),
    }
}

fn result_content(content: &[ToolCallContent], raw_output: Option<&Value>) -> Value {
    let mut parts = Vec::new();
    for c in content {
        match c {
            ToolCallContent::Content(c) => parts.push(block_text(&c.content)),
            ToolCallContent::Diff(d) => parts.push(format!("edited {}", d.path.display())),
            ToolCallContent::Terminal(t) => parts.push(format!("terminal {}", t.terminal_id.0)),
            _ => {}
        }
    }
    if parts.is_empty() {
        return match raw_output {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(v) if !v.is_null() => v.clone(),
            _ => Value::String(String::new()),
        };
    }
    Value::String(parts.join("\n"))
}

fn plan_entry(e: &PlanEntry) -> Value {
    json!({
        "content": e.content,
        "priority": e.priority,
        "status": e.status,
    })
}

/// The turn's token counts, when the agent gives them.
pub(super) fn usage(r: &PromptResponse) -> Option<Usage> {
    r.usage.as_ref().map(|u| Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_input_tokens: u.cached_read_tokens.unwrap_or(0),
        cache_creation_input_tokens: u.cached_write_tokens.unwrap_or(0),
    })
}

/// Our turn's end for the agent's stop reason: (subtype, is_error).
pub(super) fn stop(reason: &StopReason, interrupted: bool) -> (String, bool) {
    let name = match serde_json::to_value(reason) {
        Ok(Value::String(s)) => s,
        _ => "unknown".to_owned(),
    };
    let is_error = interrupted || !matches!(reason, StopReason::EndTurn);
    (name, is_error)
}
