//! Claude Code's stream-json control protocol, as the executor speaks it.
//!
//! The CLI runs as
//! `claude --output-format stream-json --verbose --input-format stream-json
//! --include-partial-messages --permission-prompt-tool stdio
//! --permission-mode default --model <model> --setting-sources ""`
//! and talks one JSON object per line:
//!
//! - [`message`]: what it writes on stdout, decoded into [`CliMessage`]
//!   (unknown types are kept raw; non-JSON lines are a [`CliLineError`]);
//! - [`input`]: what we write on its stdin, built from [`CliInput`]:
//!   `initialize` with a PreToolUse hook on every tool, user turns,
//!   interrupts, and answers to its control requests;
//! - [`launch`]: the arguments ([`LaunchSpec`]), the inherited variables to
//!   drop, and where the pinned binary is installed;
//! - [`mapper`]: [`CliEventMapper`], a sans-IO state machine that turns the
//!   stdout lines into Duraclaw [`Event`]s plus the [`CliAction`]s the
//!   executor must carry out (answer a hook, ask the approval gate, withdraw
//!   a question).
//!
//! Every tool call is gated: the PreToolUse hook answers "ask", so the CLI
//! sends `can_use_tool` even for tools it would allow on its own; the mapper
//! turns that into a `user_question` and a [`CliAction::AskGate`]; the
//! gate's decision goes back with [`CliInput::for_decision`].
//!
//! [`Event`]: duraclaw_core::protocol::Event

pub mod input;
pub mod launch;
pub mod mapper;
pub mod message;

pub use input::{CliInput, EXPIRED_MESSAGE, PRE_TOOL_USE_CALLBACK_ID};
pub use launch::LaunchSpec;
pub use mapper::{CliAction, CliEventMapper, Mapped, PendingQuestion};
pub use message::{CliLineError, CliMessage};

#[cfg(test)]
mod tests;
