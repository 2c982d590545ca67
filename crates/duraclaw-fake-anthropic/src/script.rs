//! What the fake answers: scripted assistant turns and the latches that stall
//! them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

/// One content block of a scripted assistant message.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Text, streamed as several `text_delta`s.
    Text(String),
    /// A tool call, its input streamed as `input_json_delta`s.
    ToolUse {
        /// The call's id; `toolu_fake_<turn>_<block>` when `None`.
        id: Option<String>,
        /// The tool's name, e.g. `Read`.
        name: String,
        /// The tool's input.
        input: Value,
    },
}

/// Token counts reported for a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, reported in `message_start`.
    pub input_tokens: u64,
    /// Output tokens, reported in `message_delta`.
    pub output_tokens: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            input_tokens: 10,
            output_tokens: 5,
        }
    }
}

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status code, e.g. 400, 401, 529.
    pub status: u16,
    /// The error message in the JSON body.
    pub message: String,
}

/// A place in a streamed answer where the fake waits.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    /// Wait after this many `content_block_delta` events were sent.
    pub(crate) after_deltas: usize,
    pub(crate) latch: Latch,
}

/// One scripted assistant turn: the answer to one model request.
///
/// Built with the constructors and chained `with_*` methods:
///
/// ```
/// use duraclaw_fake_anthropic::Turn;
/// let turn = Turn::text("Let me look.")
///     .with_tool_use("Read", serde_json::json!({"file_path": "/tmp/x"}));
/// ```
#[derive(Debug, Clone)]
pub struct Turn {
    pub(crate) blocks: Vec<Block>,
    pub(crate) stop_reason: Option<String>,
    pub(crate) usage: Usage,
    pub(crate) delta_delay: Option<Duration>,
    pub(crate) hold: Option<Hold>,
    pub(crate) error: Option<HttpError>,
    pub(crate) fail_first: u32,
    pub(crate) fail_status: u16,
    pub(crate) chunk_chars: usize,
}

impl Turn {
    fn empty() -> Self {
        Turn {
            blocks: Vec::new(),
            stop_reason: None,
            usage: Usage::default(),
            delta_delay: None,
            hold: None,
            error: None,
            fail_first: 0,
            fail_status: 529,
            chunk_chars: 8,
        }
    }

    /// A turn answering with `text` only; it ends with `end_turn`.
    pub fn text(text: impl Into<String>) -> Self {
        Turn::empty().with_text(text)
    }

    /// A turn calling one tool; it ends with `tool_use`.
    pub fn tool_use(name: impl Into<String>, input: Value) -> Self {
        Turn::empty().with_tool_use(name, input)
    }

    /// A turn answered with an HTTP error (every attempt, retries included).
    pub fn http_error(status: u16, message: impl Into<String>) -> Self {
        let mut t = Turn::empty();
        t.error = Some(HttpError {
            status,
            message: message.into(),
        });
        t
    }

    /// Appends a text block.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.blocks.push(Block::Text(text.into()));
        self
    }

    /// Appends a tool call with a generated id.
    pub fn with_tool_use(mut self, name: impl Into<String>, input: Value) -> Self {
        self.blocks.push(Block::ToolUse {
            id: None,
            name: name.into(),
            input,
        });
        self
    }

    /// Appends a tool call with the given id.
    pub fn with_tool_use_id(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        input: Value,
    ) -> Self {
        self.blocks.push(Block::ToolUse {
            id: Some(id.into()),
            name: name.into(),
            input,
        });
        self
    }

    /// Sets the stop reason; by default `tool_use` when the turn calls a tool,
    /// `end_turn` otherwise.
    pub fn with_stop_reason(mut self, stop_reason: impl Into<String>) -> Self {
        self.stop_reason = Some(stop_reason.into());
        self
    }

    /// Sets the reported token counts.
    pub fn with_usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = Usage {
            input_tokens,
            output_tokens,
        };
        self
    }

    /// Waits `delay` between consecutive deltas.
    pub fn with_delta_delay(mut self, delay: Duration) -> Self {
        self.delta_delay = Some(delay);
        self
    }

    /// Stalls the stream after `after_deltas` deltas until `latch` is
    /// released; [`Latch::reached`] tells when the stream got there.
    pub fn with_hold(mut self, after_deltas: usize, latch: &Latch) -> Self {
        self.hold = Some(Hold {
            after_deltas,
            latch: latch.clone(),
        });
        self
    }

    /// Answers the first `times` attempts of this turn with HTTP `status`
    /// (an identical retry is another attempt), then streams the turn.
    pub fn failing_first(mut self, times: u32, status: u16) -> Self {
        self.fail_first = times;
        self.fail_status = status;
        self
    }

    /// Splits text and tool input into deltas of at most `chars` characters
    /// (default 8).
    pub fn with_chunk_chars(mut self, chars: usize) -> Self {
        self.chunk_chars = chars.max(1);
        self
    }

    /// The blocks of the answer.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    pub(crate) fn effective_stop_reason(&self) -> String {
        if let Some(s) = &self.stop_reason {
            return s.clone();
        }
        if self
            .blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. }))
        {
            "tool_use".to_owned()
        } else {
            "end_turn".to_owned()
        }
    }
}

/// A latch a scripted stream waits on; released from the test.
///
/// Clones share the latch. Once released it stays released, so a retried
/// request does not stall again.
#[derive(Debug, Clone, Default)]
pub struct Latch {
    inner: Arc<LatchInner>,
}

#[derive(Debug)]
struct LatchInner {
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl Default for LatchInner {
    fn default() -> Self {
        LatchInner {
            reached: watch::Sender::new(false),
            released: watch::Sender::new(false),
        }
    }
}

impl Latch {
    /// A new, unreleased latch.
    pub fn new() -> Self {
        Latch::default()
    }

    /// Lets every stream waiting on this latch go on.
    pub fn release(&self) {
        self.inner.released.send_replace(true);
    }

    /// Whether [`Latch::release`] was called.
    pub fn is_released(&self) -> bool {
        *self.inner.released.borrow()
    }

    /// Waits until a stream has stalled at this latch (returns at once if
    /// one already did).
    pub async fn reached(&self) {
        let mut rx = self.inner.reached.subscribe();
        // The sender lives in `self`, so the channel cannot close while we
        // wait; an error here is impossible and harmless.
        let _ = rx.wait_for(|r| *r).await;
    }

    pub(crate) fn mark_reached(&self) {
        self.inner.reached.send_replace(true);
    }

    pub(crate) async fn released(&self) {
        let mut rx = self.inner.released.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
}
