//! The lines we write to the CLI's stdin.

use std::collections::BTreeMap;

use duraclaw_core::protocol::Decision;
use serde_json::{Value, json};

/// The callback id of the PreToolUse hook registered by
/// [`CliInput::Initialize`].
pub const PRE_TOOL_USE_CALLBACK_ID: &str = "duraclaw-pre-tool-use";

/// What the model is told when an approval expired (a timeout policy fired):
/// never worded as a human's denial.
pub const EXPIRED_MESSAGE: &str =
    "No decision was made on this tool call in time, so it did not run. Nobody denied it.";

/// One line for the CLI's stdin.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CliInput {
    /// `initialize`, registering a PreToolUse hook on every tool so that
    /// every tool call reaches `can_use_tool`.
    Initialize {
        /// Our request id; the CLI's `control_response` echoes it.
        request_id: String,
    },
    /// A user turn.
    UserTurn {
        /// What the user said.
        text: String,
    },
    /// Interrupt the running turn.
    Interrupt {
        /// Our request id.
        request_id: String,
    },
    /// Answer a PreToolUse `hook_callback` with "ask", which makes the CLI
    /// send `can_use_tool` even for tools it would auto-allow.
    HookAsk {
        /// The CLI's request id.
        request_id: String,
        /// Shown as the decision reason.
        reason: String,
    },
    /// Answer a PreToolUse `hook_callback` with "deny": the tool does not
    /// run and the model is told `reason` (an edit in plan mode).
    HookDeny {
        /// The CLI's request id.
        request_id: String,
        /// What the model is told.
        reason: String,
    },
    /// Switch the permission mode (`set_permission_mode`).
    SetPermissionMode {
        /// Our request id.
        request_id: String,
        /// The mode, e.g. `plan`.
        mode: String,
    },
    /// Switch the model (`set_model`).
    SetModel {
        /// Our request id.
        request_id: String,
        /// The model name or alias.
        model: String,
    },
    /// Answer a `hook_callback` of another hook event: no opinion.
    HookContinue {
        /// The CLI's request id.
        request_id: String,
    },
    /// Allow a `can_use_tool` request.
    Allow {
        /// The CLI's request id.
        request_id: String,
        /// The input to run the tool with (the model's, or edited).
        updated_input: Value,
    },
    /// Deny a `can_use_tool` request; the model sees `message`.
    Deny {
        /// The CLI's request id.
        request_id: String,
        /// Why.
        message: String,
        /// Also interrupt the turn.
        interrupt: bool,
    },
    /// Answer a control request with an error (e.g. an unknown subtype).
    Error {
        /// The CLI's request id.
        request_id: String,
        /// What went wrong.
        message: String,
    },
}

impl CliInput {
    /// The JSON object of the line.
    pub fn to_value(&self) -> Value {
        match self {
            CliInput::Initialize { request_id } => json!({
                "type": "control_request",
                "request_id": request_id,
                "request": {
                    "subtype": "initialize",
                    "hooks": {
                        "PreToolUse": [
                            {"matcher": null, "hookCallbackIds": [PRE_TOOL_USE_CALLBACK_ID]}
                        ]
                    }
                }
            }),
            CliInput::UserTurn { text } => json!({
                "type": "user",
                "message": {"role": "user", "content": text},
                "parent_tool_use_id": null,
            }),
            CliInput::Interrupt { request_id } => json!({
                "type": "control_request",
                "request_id": request_id,
                "request": {"subtype": "interrupt"},
            }),
            CliInput::HookAsk { request_id, reason } => success(
                request_id,
                json!({
                    "hookSpecificOutput": {
                        "hookEventName": "PreToolUse",
                        "permissionDecision": "ask",
                        "permissionDecisionReason": reason,
                    }
                }),
            ),
            CliInput::HookDeny { request_id, reason } => success(
                request_id,
                json!({
                    "hookSpecificOutput": {
                        "hookEventName": "PreToolUse",
                        "permissionDecision": "deny",
                        "permissionDecisionReason": reason,
                    }
                }),
            ),
            CliInput::SetPermissionMode { request_id, mode } => json!({
                "type": "control_request",
                "request_id": request_id,
                "request": {"subtype": "set_permission_mode", "mode": mode},
            }),
            CliInput::SetModel { request_id, model } => json!({
                "type": "control_request",
                "request_id": request_id,
                "request": {"subtype": "set_model", "model": model},
            }),
            CliInput::HookContinue { request_id } => success(request_id, json!({})),
            CliInput::Allow {
                request_id,
                updated_input,
            } => success(
                request_id,
                json!({"behavior": "allow", "updatedInput": updated_input}),
            ),
            CliInput::Deny {
                request_id,
                message,
                interrupt,
            } => {
                let mut body = json!({"behavior": "deny", "message": message});
                if *interrupt {
                    body["interrupt"] = Value::Bool(true);
                }
                success(request_id, body)
            }
            CliInput::Error {
                request_id,
                message,
            } => json!({
                "type": "control_response",
                "response": {"subtype": "error", "request_id": request_id, "error": message},
            }),
        }
    }

    /// The line as JSON text, ending with a newline.
    pub fn to_line(&self) -> String {
        let mut s = self.to_value().to_string();
        s.push('\n');
        s
    }

    /// The answer to `can_use_tool` request `request_id` (whose tool input
    /// was `input`) for a gate decision.
    ///
    /// - allow: the edited input, or `input` unchanged;
    /// - deny: the human's reason (and interrupt, if asked);
    /// - answered (AskUserQuestion): allow with `input` plus `answers`, which
    ///   is how the CLI takes the answers;
    /// - expired: a deny whose message says nobody decided
    ///   ([`EXPIRED_MESSAGE`]);
    /// - cancelled: a deny saying so.
    pub fn for_decision(request_id: &str, input: &Value, decision: &Decision) -> CliInput {
        let request_id = request_id.to_owned();
        match decision {
            Decision::Allow { updated_input, .. } => CliInput::Allow {
                request_id,
                updated_input: updated_input.clone().unwrap_or_else(|| input.clone()),
            },
            Decision::Deny { reason, interrupt } => CliInput::Deny {
                request_id,
                message: reason.clone(),
                interrupt: *interrupt,
            },
            Decision::Answered { answers } => CliInput::Allow {
                request_id,
                updated_input: with_answers(input, answers),
            },
            Decision::Expired => CliInput::Deny {
                request_id,
                message: EXPIRED_MESSAGE.to_owned(),
                interrupt: false,
            },
            Decision::Cancelled { reason } => CliInput::Deny {
                request_id,
                message: match reason {
                    Some(r) => format!("The request was cancelled: {r}"),
                    None => "The request was cancelled.".to_owned(),
                },
                interrupt: false,
            },
            // A decision kind added later: refuse rather than run the tool.
            _ => CliInput::Deny {
                request_id,
                message: format!("Unsupported decision `{}`.", decision.name()),
                interrupt: false,
            },
        }
    }
}

fn success(request_id: &str, response: Value) -> Value {
    json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    })
}

/// AskUserQuestion's input with `answers` (question text → chosen label)
/// added.
fn with_answers(input: &Value, answers: &BTreeMap<String, String>) -> Value {
    let mut out = match input {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let answers: serde_json::Map<String, Value> = answers
        .iter()
        .map(|(q, a)| (q.clone(), Value::String(a.clone())))
        .collect();
    out.insert("answers".to_owned(), Value::Object(answers));
    Value::Object(out)
}
