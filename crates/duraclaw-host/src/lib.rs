//! What every Duraclaw host does the same way, written once and sans-IO.
//!
//! The local orchestrator (tokio, axum, SQLite) and the Cloudflare Durable
//! Object both drive these types: they take frames and times and return what
//! to send, store and show. Nothing here opens a socket, reads a clock or
//! touches a store, so it builds for wasm32 and every rule is tested once.

pub mod agents;
pub mod auth;
pub mod backoff;
pub mod fork;
pub mod http;
pub mod ids;
pub mod inbox;
pub mod link;
pub mod push;
pub mod rules;
pub mod start;
pub mod worktree;
