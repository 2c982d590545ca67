//! The Duraclaw gateway: the tier that runs Claude Code sessions on the VPS.
//!
//! - [`claude`]: the Claude Code CLI as an executor, with its stream-json
//!   protocol under it ([`claude::cli`], re-exported as [`cli`]);
//!   [`scripted`]: a deterministic executor;
//! - [`approval`]: the approval gates and the audit, re-exported from
//!   [`duraclaw_approval`], where they live;
//! - [`worktree`]: git worktree discovery and path checks;
//! - [`server`] and [`link`]: sessions with durable outboxes behind an
//!   authenticated loopback WebSocket; [`outbox`]: the executor's event
//!   sink, group-committing into the outbox; [`cmd`]: a gateway run from
//!   its serve options, parsed by the command line with the `cli` feature
//!   (default), which the `duraclaw-gateway` binary needs.

pub use duraclaw_approval as approval;
pub mod claude;
/// The Claude Code CLI's stream-json protocol ([`claude::cli`]).
pub use claude::cli;
pub mod cmd;
pub mod link;
pub mod outbox;
pub mod scripted;
pub mod server;
pub mod worktree;
