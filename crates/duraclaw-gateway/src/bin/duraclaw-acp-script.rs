//! A scripted ACP agent for tests: it speaks the Agent Client Protocol on
//! stdio and plays the turns of a script, one per prompt.
//!
//! The script is a JSON file named by the first argument or by
//! `DURACLAW_ACP_SCRIPT`:
//!
//! ```json
//! { "load_session": true, "state_dir": "/tmp/x", "modes": ["default", "plan"],
//!   "hang_on": null,
//!   "turns": [[{ "do": "text", "text": "Hello" }]] }
//! ```
//!
//! The turn played is counted in `state_dir` (so a resumed or restarted
//! agent goes on with the next turn), where sessions are kept too, and how
//! each permission request was answered (`permissions`). Steps:
//! `text`, `thought`, `plan`, `usage`, `mode`, `tool` (a tool call, asked
//! first unless `ask` is false), `ask` (an elicitation), `write`, `read`,
//! `terminal`, `stall` (until cancelled), `fail` (an error answer),
//! `crash`, `garbage`, `hang`, `ask_again` (a late request about an earlier
//! turn's call). `hang_on` names a method never answered,
//! `exit_on` one the agent exits on (also while a request of its waits).
//! `replay_tool` and `replay_after_answer` change what `session/load`
//! replays and when. `cancel_ends_prompt` answers the prompt as soon as a
//! cancel comes.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Script {
    #[serde(default)]
    load_session: bool,
    state_dir: PathBuf,
    #[serde(default)]
    modes: Vec<String>,
    /// Models offered as the session's `model` config option.
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    hang_on: Option<String>,
    /// A method on which the agent exits (status 3) instead of answering.
    #[serde(default)]
    exit_on: Option<String>,
    /// `session/load` also replays a completed tool call (as Gemini does).
    #[serde(default)]
    replay_tool: bool,
    /// `session/load` replays the history 20 ms after its answer, not before.
    #[serde(default)]
    replay_after_answer: bool,
    /// A cancel answers the prompt (`cancelled`) at once, before a request
    /// of the agent that waits is answered, as claude-agent-acp does.
    #[serde(default)]
    cancel_ends_prompt: bool,
    turns: Vec<Vec<Step>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
enum Step {
    Text {
        text: String,
        #[serde(default = "three")]
        chunks: usize,
    },
    Thought {
        text: String,
    },
    Plan {
        entries: Vec<String>,
    },
    Usage {
        cost: f64,
    },
    Mode {
        mode: String,
    },
    Tool {
        #[serde(default = "default_title")]
        title: String,
        #[serde(default = "default_kind")]
        kind: String,
        #[serde(default)]
        input: Value,
        #[serde(default)]
        result: String,
        /// Asks before it runs (false: runs unasked).
        #[serde(default = "yes")]
        ask: bool,
        /// The option kinds offered.
        #[serde(default = "all_options")]
        options: Vec<String>,
        /// Steps played while it runs (file writes, terminals).
        #[serde(default)]
        effects: Vec<Step>,
        /// The input comes in an update after an empty one, as agents that
        /// stream it do.
        #[serde(default)]
        stream_input: bool,
        /// The tool's name, given in `_meta` the way Zed's Claude adapter does.
        #[serde(default)]
        meta_name: Option<String>,
        /// The permission request comes before the `tool_call` that names
        /// the tool (claude-agent-acp does so now and then).
        #[serde(default)]
        ask_first: bool,
        /// With `ask_first`: text streamed (a chunk per character) after
        /// the request and before the `tool_call`, as claude-agent-acp
        /// sends the rest of the text before a call after asking about it.
        #[serde(default)]
        text_after_ask: Option<String>,
        /// With `ask_first`: whether the `tool_call` follows the request
        /// (false: it never comes while the request waits).
        #[serde(default = "yes")]
        announce: bool,
    },
    Ask {
        question: String,
        options: Vec<String>,
    },
    Write {
        path: String,
        content: String,
    },
    Read {
        path: String,
    },
    Terminal {
        command: String,
        #[serde(default)]
        args: Vec<String>,
    },
    /// Says the model chosen.
    Model,
    /// Until cancelled; with `go_on`, the steps after it are played all
    /// the same (work in flight that did not see the cancel).
    Stall {
        #[serde(default)]
        go_on: bool,
    },
    Fail {
        message: String,
    },
    Crash,
    Garbage {
        lines: usize,
    },
    Hang,
    /// A permission request about call `id` of an earlier turn, as work in
    /// flight of an interrupted turn may send once the next turn began (a
    /// breach of the protocol); its answer is noted, nothing runs.
    AskAgain {
        id: String,
        #[serde(default)]
        input: Value,
    },
}

fn three() -> usize {
    3
}
fn yes() -> bool {
    true
}
fn default_title() -> String {
    "Run a command".into()
}
fn default_kind() -> String {
    "execute".into()
}
fn all_options() -> Vec<String> {
    ["allow_once", "allow_always", "reject_once", "reject_always"]
        .map(String::from)
        .to_vec()
}

/// A permission request's options, one of each kind in `kinds`.
fn offered(kinds: &[String]) -> Vec<Value> {
    kinds
        .iter()
        .map(|k| json!({ "optionId": format!("opt-{k}"), "name": k, "kind": k }))
        .collect()
}

/// The option id a permission request's answer chose, or `cancelled`.
fn chosen_option(answer: Result<Value, String>) -> String {
    let outcome = answer
        .ok()
        .and_then(|a| a.get("outcome").cloned())
        .unwrap_or(Value::Null);
    match outcome.get("outcome").and_then(Value::as_str) {
        Some("selected") => outcome
            .get("optionId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => "cancelled".to_owned(),
    }
}

/// How a tool step reports its call.
struct ToolHow {
    ask: bool,
    ask_first: bool,
    stream_input: bool,
    meta_name: Option<String>,
    text_after_ask: Option<String>,
    announce: bool,
}

struct Agent {
    script: Script,
    rx: mpsc::Receiver<Value>,
    next_id: u64,
    cancelled: bool,
    /// The id of the prompt being played, until it is answered.
    prompt: Option<Value>,
    session: String,
    said: String,
    /// The model chosen, said by the `model` step.
    model: String,
}

fn send(message: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{message}");
    let _ = out.flush();
}

fn respond(id: &Value, result: Value) {
    send(&json!({ "jsonrpc": "2.0", "id": id, "result": result }));
}

fn respond_error(id: &Value, message: &str) {
    send(&json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32000, "message": message } }));
}

impl Agent {
    fn update(&self, update: Value) {
        send(&json!({
            "jsonrpc": "2.0", "method": "session/update",
            "params": { "sessionId": self.session, "update": update },
        }));
    }

    /// Exits (status 3) on a message of the method `exit_on` names, also
    /// while a request of the agent waits.
    fn exit_if_told(&self, message: &Value) {
        let method = message.get("method").and_then(Value::as_str);
        if let Some(method) = method.filter(|m| self.script.exit_on.as_deref() == Some(*m)) {
            eprintln!("the script exits on {method}");
            std::process::exit(3);
        }
    }

    /// A `session/cancel` came: noted, and with `cancel_ends_prompt` the
    /// prompt is answered at once.
    fn cancel(&mut self) {
        self.cancelled = true;
        if self.script.cancel_ends_prompt
            && let Some(prompt) = self.prompt.take()
        {
            respond(&prompt, json!({ "stopReason": "cancelled" }));
        }
    }

    /// Sends a request and waits for its answer; a cancel meanwhile is noted.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.call_then(method, params, |_| {})
    }

    /// Sends a request, then does `then`, then waits for its answer.
    fn call_then(
        &mut self,
        method: &str,
        params: Value,
        then: impl FnOnce(&Self),
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        then(self);
        loop {
            let Ok(m) = self.rx.recv() else {
                std::process::exit(0);
            };
            self.exit_if_told(&m);
            if m.get("method").and_then(Value::as_str) == Some("session/cancel") {
                self.cancel();
                continue;
            }
            if m.get("id").and_then(Value::as_u64) == Some(id) && m.get("method").is_none() {
                return match m.get("error") {
                    Some(e) => Err(e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("error")
                        .to_owned()),
                    None => Ok(m.get("result").cloned().unwrap_or(Value::Null)),
                };
            }
        }
    }

    fn text(&mut self, text: &str, chunks: usize) {
        let chars: Vec<char> = text.chars().collect();
        let per = chars.len().div_ceil(chunks.max(1)).max(1);
        for piece in chars.chunks(per) {
            let piece: String = piece.iter().collect();
            self.update(json!({
                "sessionUpdate": "agent_message_chunk",
                "content": { "type": "text", "text": piece },
            }));
        }
        self.said.push_str(text);
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.script.state_dir.join(name)
    }

    /// The index of the turn to play, counted across processes.
    fn next_turn(&self) -> usize {
        let path = self.state_file("turn");
        let n: usize = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let _ = std::fs::write(&path, (n + 1).to_string());
        n
    }

    fn tool_id(&self) -> String {
        let path = self.state_file("tools");
        let n: usize = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let _ = std::fs::write(&path, (n + 1).to_string());
        format!("call-{}", n + 1)
    }

    /// Plays one prompt's turn; returns the stop reason, or an error.
    fn play(&mut self, prompt: &str) -> Result<&'static str, String> {
        self.cancelled = false;
        self.said.clear();
        let turn = self.next_turn();
        let steps = self.script.turns.get(turn).cloned().unwrap_or_else(|| {
            vec![Step::Text {
                text: format!("(no turn {turn} in the script)"),
                chunks: 1,
            }]
        });
        let _ = prompt;
        self.steps(steps)?;
        Ok(if self.cancelled {
            "cancelled"
        } else {
            "end_turn"
        })
    }

    fn effects(&mut self, steps: Vec<Step>) {
        if let Err(e) = self.steps(steps) {
            self.text(&format!("an effect failed: {e}. "), 1);
        }
    }

    fn steps(&mut self, steps: Vec<Step>) -> Result<(), String> {
        for step in steps {
            if self.cancelled {
                break;
            }
            match step {
                Step::Text { text, chunks } => self.text(&text, chunks),
                Step::Thought { text } => self.update(json!({
                    "sessionUpdate": "agent_thought_chunk",
                    "content": { "type": "text", "text": text },
                })),
                Step::Plan { entries } => self.update(json!({
                    "sessionUpdate": "plan",
                    "entries": entries.iter().map(|e| json!({
                        "content": e, "priority": "medium", "status": "pending"
                    })).collect::<Vec<_>>(),
                })),
                Step::Usage { cost } => self.update(json!({
                    "sessionUpdate": "usage_update", "used": 1000, "size": 200000,
                    "cost": { "amount": cost, "currency": "USD" },
                })),
                Step::Mode { mode } => self.update(json!({
                    "sessionUpdate": "current_mode_update", "currentModeId": mode,
                })),
                Step::Tool {
                    title,
                    kind,
                    input,
                    result,
                    ask,
                    options,
                    effects,
                    stream_input,
                    meta_name,
                    ask_first,
                    text_after_ask,
                    announce,
                } => {
                    let how = ToolHow {
                        ask,
                        ask_first,
                        stream_input,
                        meta_name,
                        text_after_ask,
                        announce,
                    };
                    self.tool(&title, &kind, input, &result, &how, &options, effects)
                }
                Step::Ask { question, options } => {
                    let answer = self.call(
                        "elicitation/create",
                        json!({
                            "sessionId": self.session, "mode": "form", "message": question,
                            "requestedSchema": {
                                "type": "object",
                                "properties": { "answer": {
                                    "type": "string", "title": question, "enum": options,
                                } },
                                "required": ["answer"],
                            },
                        }),
                    );
                    let said = match answer {
                        Ok(a) => match a.get("action").and_then(Value::as_str) {
                            Some("accept") => format!(
                                "You chose {}. ",
                                a.pointer("/content/answer")
                                    .and_then(Value::as_str)
                                    .unwrap_or("?")
                            ),
                            Some(other) => format!("The question was {other}ed. "),
                            None => "No answer. ".into(),
                        },
                        Err(e) => format!("The question failed: {e}. "),
                    };
                    self.text(&said, 1);
                }
                Step::Write { path, content } => {
                    let r = self.call(
                        "fs/write_text_file",
                        json!({ "sessionId": self.session, "path": path, "content": content }),
                    );
                    let said = match r {
                        Ok(_) => format!("wrote {path}. "),
                        Err(e) => format!("write refused: {e}. "),
                    };
                    self.text(&said, 1);
                }
                Step::Read { path } => {
                    let r = self.call(
                        "fs/read_text_file",
                        json!({ "sessionId": self.session, "path": path }),
                    );
                    let said = match r {
                        Ok(v) => format!(
                            "read: {}. ",
                            v.get("content").and_then(Value::as_str).unwrap_or("")
                        ),
                        Err(e) => format!("read refused: {e}. "),
                    };
                    self.text(&said, 1);
                }
                Step::Terminal { command, args } => {
                    let said = self.terminal(&command, &args);
                    self.text(&said, 1);
                }
                Step::Model => {
                    let said = format!("model: {}", self.model);
                    self.text(&said, 1);
                }
                Step::Stall { go_on } => {
                    while !self.cancelled {
                        let Ok(m) = self.rx.recv() else {
                            std::process::exit(0);
                        };
                        if m.get("method").and_then(Value::as_str) == Some("session/cancel") {
                            self.cancel();
                        }
                    }
                    if go_on {
                        self.cancelled = false;
                    }
                }
                Step::Fail { message } => return Err(message),
                Step::Crash => {
                    eprintln!("the script crashes here");
                    std::process::exit(3);
                }
                Step::Garbage { lines } => {
                    let mut out = std::io::stdout().lock();
                    for i in 0..lines {
                        let _ = writeln!(out, "this is not JSON, line {i}");
                    }
                    let _ = out.flush();
                }
                Step::Hang => loop {
                    std::thread::park();
                },
                Step::AskAgain { id, input } => {
                    let answer = self.call(
                        "session/request_permission",
                        json!({
                            "sessionId": self.session,
                            "toolCall": { "toolCallId": id, "title": default_title(),
                                          "kind": default_kind(), "rawInput": input },
                            "options": offered(&all_options()),
                        }),
                    );
                    self.note_answer(&id, &chosen_option(answer));
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn tool(
        &mut self,
        title: &str,
        kind: &str,
        input: Value,
        result: &str,
        how: &ToolHow,
        options: &[String],
        effects: Vec<Step>,
    ) {
        let id = self.tool_id();
        let meta = match &how.meta_name {
            Some(n) => json!({ "claudeCode": { "toolName": n } }),
            None => Value::Null,
        };
        let announce = |agent: &Self| {
            agent.update(json!({
                "sessionUpdate": "tool_call", "toolCallId": id, "title": title, "kind": kind,
                "status": "pending", "rawInput": if how.stream_input { json!({}) } else { input.clone() },
                "_meta": meta,
            }));
            if how.stream_input {
                agent.update(json!({
                    "sessionUpdate": "tool_call_update", "toolCallId": id, "rawInput": input,
                    "_meta": meta,
                }));
            }
        };
        let announced_first = !(how.ask && how.ask_first);
        if announced_first {
            announce(self);
        }
        let mut chosen = "unasked".to_owned();
        if how.ask {
            // Asked first, the call is announced after the question is sent,
            // while the question waits.
            let answer = self.call_then(
                "session/request_permission",
                json!({
                    "sessionId": self.session,
                    "toolCall": { "toolCallId": id, "title": title, "kind": kind, "rawInput": input, "_meta": meta },
                    "options": offered(options),
                }),
                |agent| {
                    if !announced_first {
                        for c in how.text_after_ask.iter().flat_map(|t| t.chars()) {
                            agent.update(json!({
                                "sessionUpdate": "agent_message_chunk",
                                "content": { "type": "text", "text": c.to_string() },
                            }));
                        }
                        if how.announce {
                            announce(agent);
                        }
                    }
                },
            );
            if !announced_first && let Some(t) = &how.text_after_ask {
                self.said.push_str(t);
            }
            chosen = chosen_option(answer);
            if chosen == "cancelled" {
                self.cancelled = true;
            }
            self.note_answer(&id, &chosen);
        }
        if chosen == "cancelled" || chosen.starts_with("opt-reject") {
            self.update(json!({
                "sessionUpdate": "tool_call_update", "toolCallId": id, "status": "failed",
                "content": [{ "type": "content", "content": { "type": "text", "text": format!("not run [{chosen}]") } }],
            }));
            return;
        }
        self.update(json!({ "sessionUpdate": "tool_call_update", "toolCallId": id, "status": "in_progress" }));
        self.effects(effects);
        self.update(json!({
            "sessionUpdate": "tool_call_update", "toolCallId": id, "status": "completed",
            "content": [{ "type": "content", "content": { "type": "text", "text": format!("{result} [{chosen}]") } }],
        }));
    }

    /// Appends `id chosen` to `state_dir/permissions`: how each permission
    /// request was answered (`cancelled`, or the option id).
    fn note_answer(&self, id: &str, chosen: &str) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_file("permissions"));
        if let Ok(mut f) = file {
            let _ = writeln!(f, "{id} {chosen}");
        }
    }

    /// Replays a loaded session's history; with `replay_tool`, each turn
    /// shows a completed tool call too, without its input, as Gemini does.
    fn replay(&self, history: &[(String, String)]) {
        for (n, (user, agent)) in history.iter().enumerate() {
            self.update(json!({ "sessionUpdate": "user_message_chunk", "content": { "type": "text", "text": user } }));
            if self.script.replay_tool {
                let id = format!("replayed-{}", n + 1);
                self.update(json!({
                    "sessionUpdate": "tool_call", "toolCallId": id, "title": "Shell",
                    "kind": "execute", "status": "completed",
                }));
                self.update(json!({
                    "sessionUpdate": "tool_call_update", "toolCallId": id, "status": "completed",
                    "content": [{ "type": "content", "content": { "type": "text", "text": "old output" } }],
                }));
            }
            self.update(json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "text", "text": agent } }));
        }
    }

    fn terminal(&mut self, command: &str, args: &[String]) -> String {
        let created = self.call(
            "terminal/create",
            json!({ "sessionId": self.session, "command": command, "args": args }),
        );
        let id = match created {
            Ok(v) => v.get("terminalId").cloned().unwrap_or(Value::Null),
            Err(e) => return format!("terminal refused: {e}. "),
        };
        let exit = self.call(
            "terminal/wait_for_exit",
            json!({ "sessionId": self.session, "terminalId": id }),
        );
        let output = self.call(
            "terminal/output",
            json!({ "sessionId": self.session, "terminalId": id }),
        );
        let _ = self.call(
            "terminal/release",
            json!({ "sessionId": self.session, "terminalId": id }),
        );
        format!(
            "terminal exited {}: {}. ",
            exit.ok()
                .and_then(|e| e.get("exitCode").cloned())
                .unwrap_or(Value::Null),
            output
                .ok()
                .and_then(|o| o.get("output").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default()
                .trim()
        )
    }

    fn sessions(&self) -> HashMap<String, Vec<(String, String)>> {
        std::fs::read_to_string(self.state_file("sessions.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn save(&self, sessions: &HashMap<String, Vec<(String, String)>>) {
        if let Ok(t) = serde_json::to_string(sessions) {
            let _ = std::fs::write(self.state_file("sessions.json"), t);
        }
    }

    fn modes(&self) -> Value {
        match self.script.modes.first() {
            None => Value::Null,
            Some(first) => json!({
                "currentModeId": first,
                "availableModes": self.script.modes.iter().map(|m| json!({ "id": m, "name": m })).collect::<Vec<_>>(),
            }),
        }
    }

    fn config_options(&self, current: Option<&str>) -> Value {
        match self.script.models.first() {
            None => Value::Null,
            Some(first) => json!([{
                "id": "model", "name": "Model", "category": "model", "type": "select",
                "currentValue": current.unwrap_or(first),
                "options": self.script.models.iter().map(|m| json!({ "value": m, "name": m })).collect::<Vec<_>>(),
            }]),
        }
    }

    fn serve(&mut self) {
        while let Ok(m) = self.rx.recv() {
            let method = m
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let Some(id) = m.get("id").cloned() else {
                continue;
            };
            if self.script.hang_on.as_deref() == Some(method.as_str()) {
                continue;
            }
            self.exit_if_told(&m);
            let params = m.get("params").cloned().unwrap_or(Value::Null);
            match method.as_str() {
                "initialize" => respond(
                    &id,
                    json!({
                        "protocolVersion": 1,
                        "agentCapabilities": { "loadSession": self.script.load_session },
                        "agentInfo": { "name": "duraclaw-acp-script", "version": env!("CARGO_PKG_VERSION") },
                    }),
                ),
                "session/new" => {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or_default();
                    self.session = format!("script-{}-{nanos}", std::process::id());
                    let mut sessions = self.sessions();
                    sessions.insert(self.session.clone(), Vec::new());
                    self.save(&sessions);
                    respond(
                        &id,
                        json!({
                            "sessionId": self.session, "modes": self.modes(),
                            "configOptions": self.config_options(None),
                        }),
                    );
                }
                "session/load" => {
                    let wanted = params
                        .get("sessionId")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let sessions = self.sessions();
                    let Some(history) = sessions.get(wanted) else {
                        respond_error(&id, "no such session");
                        continue;
                    };
                    self.session = wanted.to_owned();
                    // The history is replayed before the answer (or after).
                    let history = history.clone();
                    if self.script.replay_after_answer {
                        respond(&id, json!({ "modes": self.modes() }));
                        // Replayed a moment later, as by a task of its own.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    self.replay(&history);
                    if !self.script.replay_after_answer {
                        respond(&id, json!({ "modes": self.modes() }));
                    }
                }
                "session/set_config_option" => {
                    let value = params.get("value").and_then(Value::as_str).unwrap_or("");
                    if self.script.models.iter().any(|m| m == value) {
                        self.model = value.to_owned();
                        respond(
                            &id,
                            json!({ "configOptions": self.config_options(Some(value)) }),
                        );
                    } else {
                        respond_error(&id, "no such model");
                    }
                }
                "session/set_mode" => {
                    respond(&id, json!({}));
                    let mode = params.get("modeId").cloned().unwrap_or(Value::Null);
                    self.update(
                        json!({ "sessionUpdate": "current_mode_update", "currentModeId": mode }),
                    );
                }
                "session/prompt" => {
                    let prompt = params
                        .pointer("/prompt/0/text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    self.prompt = Some(id);
                    let played = self.play(&prompt);
                    if played.is_ok() {
                        let mut sessions = self.sessions();
                        sessions
                            .entry(self.session.clone())
                            .or_default()
                            .push((prompt, self.said.clone()));
                        self.save(&sessions);
                    }
                    // Unless a cancel answered it already.
                    let Some(id) = self.prompt.take() else {
                        continue;
                    };
                    match played {
                        Ok(stop) => respond(
                            &id,
                            json!({ "stopReason": stop, "usage": {
                                "totalTokens": 30, "inputTokens": 20, "outputTokens": 10,
                            } }),
                        ),
                        Err(e) => respond_error(&id, &e),
                    }
                }
                _ => respond_error(&id, "method not found"),
            }
        }
    }
}

fn main() {
    let path = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("DURACLAW_ACP_SCRIPT"));
    let Some(path) = path else {
        eprintln!("usage: duraclaw-acp-script SCRIPT.json (or DURACLAW_ACP_SCRIPT)");
        std::process::exit(2);
    };
    let script: Script = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "cannot read the script {}: {e}",
                PathBuf::from(&path).display()
            );
            std::process::exit(2);
        }
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("not JSON from the client: {e}"),
            }
        }
    });
    let mut agent = Agent {
        script,
        rx,
        next_id: 0,
        cancelled: false,
        prompt: None,
        session: String::new(),
        said: String::new(),
        model: String::new(),
    };
    agent.serve();
}
