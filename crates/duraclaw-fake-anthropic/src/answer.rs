//! Turning a scripted message into the Messages API's SSE events or JSON.

use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};

use crate::script::{Block, Hold, Latch, Usage};

/// What the streaming task does next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Send these bytes (one SSE event).
    Send(Bytes),
    /// Wait this long.
    Delay(Duration),
    /// Stall until the latch is released.
    Hold(Latch),
}

/// A message to send, fully resolved.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) blocks: Vec<Block>,
    pub(crate) stop_reason: String,
    pub(crate) usage: Usage,
    /// Prefix of generated tool-use ids.
    pub(crate) tool_id_prefix: String,
}

impl Message {
    fn tool_id(&self, index: usize, id: Option<&String>) -> String {
        id.cloned()
            .unwrap_or_else(|| format!("{}_{index}", self.tool_id_prefix))
    }

    /// The whole message as the non-streaming API returns it.
    pub(crate) fn to_json(&self) -> Value {
        let content: Vec<Value> = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| match b {
                Block::Text(t) => json!({"type": "text", "text": t}),
                Block::ToolUse { id, name, input } => json!({
                    "type": "tool_use",
                    "id": self.tool_id(i, id.as_ref()),
                    "name": name,
                    "input": input,
                }),
            })
            .collect();
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        })
    }

    /// The message as SSE steps, with optional pacing and a hold point.
    pub(crate) fn to_steps(
        &self,
        chunk_chars: usize,
        delta_delay: Option<Duration>,
        hold: Option<&Hold>,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        steps.push(sse(
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {
                        "input_tokens": self.usage.input_tokens,
                        "output_tokens": 1,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            }),
        ));
        let mut deltas = 0usize;
        let mut hold_done = false;
        let mut push_delta = |steps: &mut Vec<Step>, event: Value| {
            if let Some(h) = hold
                && !hold_done
                && deltas == h.after_deltas
            {
                steps.push(Step::Hold(h.latch.clone()));
                hold_done = true;
            }
            if deltas > 0
                && let Some(d) = delta_delay
            {
                steps.push(Step::Delay(d));
            }
            steps.push(sse("content_block_delta", &event));
            deltas += 1;
        };
        for (index, block) in self.blocks.iter().enumerate() {
            match block {
                Block::Text(text) => {
                    steps.push(sse(
                        "content_block_start",
                        &json!({
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "text", "text": ""},
                        }),
                    ));
                    for piece in chunks(text, chunk_chars) {
                        push_delta(
                            &mut steps,
                            json!({
                                "type": "content_block_delta",
                                "index": index,
                                "delta": {"type": "text_delta", "text": piece},
                            }),
                        );
                    }
                }
                Block::ToolUse { id, name, input } => {
                    steps.push(sse(
                        "content_block_start",
                        &json!({
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {
                                "type": "tool_use",
                                "id": self.tool_id(index, id.as_ref()),
                                "name": name,
                                "input": {},
                            },
                        }),
                    ));
                    let text = input.to_string();
                    for piece in chunks(&text, chunk_chars) {
                        push_delta(
                            &mut steps,
                            json!({
                                "type": "content_block_delta",
                                "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": piece},
                            }),
                        );
                    }
                }
            }
            steps.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
        // A hold placed after the last delta stalls before the stop events.
        if let Some(h) = hold
            && !hold_done
            && deltas <= h.after_deltas
        {
            let at = steps.len().saturating_sub(1);
            steps.insert(at, Step::Hold(h.latch.clone()));
        }
        steps.push(sse(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                "usage": {
                    "input_tokens": self.usage.input_tokens,
                    "output_tokens": self.usage.output_tokens,
                },
            }),
        ));
        steps.push(sse("message_stop", &json!({"type": "message_stop"})));
        steps
    }
}

/// The JSON error body the Messages API sends with an error status.
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn sse(event: &str, data: &Value) -> Step {
    Step::Send(Bytes::from(format!("event: {event}\ndata: {data}\n\n")))
}

/// Splits `s` into pieces of at most `n` characters (at least one piece).
fn chunks(s: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_on_chars() {
        assert_eq!(chunks("héllo wörld", 4), vec!["héll", "o wö", "rld"]);
        assert_eq!(chunks("", 4), vec![""]);
    }

    fn msg() -> Message {
        Message {
            id: "msg_1".into(),
            model: "m".into(),
            blocks: vec![Block::Text("abcdefgh".into())],
            stop_reason: "end_turn".into(),
            usage: Usage::default(),
            tool_id_prefix: "toolu_x".into(),
        }
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Send(b) => String::from_utf8_lossy(b)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("event: ")
                    .to_owned(),
                Step::Delay(_) => "delay".into(),
                Step::Hold(_) => "hold".into(),
            })
            .collect()
    }

    #[test]
    fn hold_after_first_delta() {
        let latch = Latch::new();
        let hold = Hold {
            after_deltas: 1,
            latch,
        };
        let steps = msg().to_steps(4, None, Some(&hold));
        assert_eq!(
            kinds(&steps),
            vec![
                "message_start",
                "content_block_start",
                "content_block_delta",
                "hold",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn hold_after_all_deltas_stalls_before_stop() {
        let hold = Hold {
            after_deltas: 99,
            latch: Latch::new(),
        };
        let steps = msg().to_steps(4, Some(Duration::from_millis(1)), Some(&hold));
        assert_eq!(
            kinds(&steps),
            vec![
                "message_start",
                "content_block_start",
                "content_block_delta",
                "delay",
                "content_block_delta",
                "hold",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }
}
