//! The Duraclaw gateway: the tier that runs Claude Code sessions on the VPS.
//!
//! This crate is a skeleton for now; the executor, approval gates, worktree
//! discovery and the WebSocket server land here.

pub mod approval;
pub mod claude;
pub mod cli;
pub mod link;
pub mod scripted;
pub mod server;
pub mod worktree;
