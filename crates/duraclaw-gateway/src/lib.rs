//! The Duraclaw gateway: the tier that runs sessions with Claude Code on the VPS.
//!
//! - [`claude`]: the Claude Code CLI as an executor, with its stream-json
//!   protocol under it ([`claude::cli`], re-exported as [`cli`]);
//!   [`scripted`]: a deterministic executor; [`acp`]: agents that speak
//!   the Agent Client Protocol; [`agents`]: the agents a gateway offers,
//!   chosen per session;
//! - [`approval`]: the approval gates and the audit, re-exported from
//!   [`duraclaw_approval`], where they live;
//! - [`worktree`]: git worktree discovery and path checks;
//! - [`server`] and [`link`]: sessions with durable outboxes behind an
//!   authenticated loopback WebSocket; [`outbox`]: the executor's event
//!   sink, group-committing into the outbox; [`cmd`]: a gateway run from
//!   its serve options, parsed by the command line with the `cli` feature
//!   (default), which the `duraclaw-gateway` binary needs.
//!
//! An executor runs a session through a gate and into an event sink; here
//! the scripted one, with a policy that lets `Read` run:
//!
//! ```
//! use std::sync::Arc;
//!
//! use duraclaw_approval::{MemoryGate, PolicyAction, PolicyGate, PolicyRule};
//! use duraclaw_core::executor::{EventSink, Executor, StartSpec};
//! use duraclaw_core::protocol::Event;
//! use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
//! use tokio::sync::mpsc;
//!
//! #[derive(Debug)]
//! struct Collect(mpsc::UnboundedSender<Event>);
//!
//! #[async_trait::async_trait]
//! impl EventSink for Collect {
//!     async fn emit(&self, event: Event) -> duraclaw_core::Result<()> {
//!         self.0.send(event).map_err(|_| duraclaw_core::Error::Closed("collector"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> duraclaw_core::Result<()> {
//! let read = Step::Tool {
//!     name: "Read".into(),
//!     input: serde_json::json!({"file_path": "src/main.rs"}),
//!     result: "fn main() {}".into(),
//! };
//! let executor = ScriptedExecutor::new(Script { turns: vec![vec![read]] });
//! let allow_reads = PolicyRule { tool: "Read".into(), input: None, action: PolicyAction::Allow };
//! let gate = PolicyGate::new(vec![allow_reads], Arc::new(MemoryGate::new()));
//! let (tx, mut events) = mpsc::unbounded_channel();
//! let spec = StartSpec {
//!     session_id: "s1".into(),
//!     worktree: "/srv/project".into(),
//!     prompt: Some("what is in main.rs?".into()),
//!     model: None,
//!     permission_mode: None,
//!     system_prompt: None,
//!     resume: None,
//!     fork_at: None,
//! };
//! let session = executor.start(spec, Arc::new(gate), Arc::new(Collect(tx))).await?;
//!
//! let mut seen = Vec::new();
//! while let Some(event) = events.recv().await {
//!     seen.push(event.type_name().to_owned());
//!     if matches!(event, Event::Result(_)) {
//!         break;
//!     }
//! }
//! let at = |t: &str| seen.iter().position(|s| s == t);
//! assert!(at("tool_use").is_some(), "{seen:?}");
//! assert!(at("tool_use") < at("tool_result"), "the allowed tool ran: {seen:?}");
//! session.shutdown().await?;
//! # Ok(())
//! # }
//! ```

pub mod acp;
pub mod agents;
pub use duraclaw_approval as approval;
pub mod claude;
/// The Claude Code CLI's stream-json protocol ([`claude::cli`]).
pub use claude::cli;
pub mod cmd;
pub mod diff;
pub mod fresh;
pub mod gseq;
pub mod link;
pub mod outbox;
pub mod scripted;
pub mod server;
pub mod worktree;
