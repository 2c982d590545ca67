//! # duraclaw-core
//!
//! The runtime-free heart of Duraclaw. It owns:
//!
//! - [`protocol`]: the JSON wire protocol of both links (orchestrator ↔
//!   gateway, browser ↔ orchestrator), tolerant of unknown event types;
//! - [`state`]: the session state machine, one transition function;
//! - [`store`], [`relay`], [`approval`], [`executor`]: the four object-safe
//!   async traits that hosts and backends implement;
//! - [`actor`]: the host-agnostic session actor logic (persist before
//!   forward, exactly-once replay with a fence, gseq dedupe and acks,
//!   command ids applied once);
//! - [`guard`]: the check that every tool that ran was allowed;
//! - [`local`]: a session whose executor runs in this process (no gateway,
//!   no WebSocket), over the same actor;
//! - [`web`]: the web rules both hosts share (the Origin rule, user name
//!   and password rules), as pure functions over strings;
//! - [`migrate`]: versioned, checksummed schema migrations with the version
//!   kept in a meta table, for every SQL backend;
//! - `conformance` (feature `conformance`): the shared test suite every
//!   `SessionStore` backend runs, and the one every `Executor` runs.
//!
//! It depends on no async runtime and builds for `wasm32-unknown-unknown`, so
//! the same logic runs in a tokio server and in a Cloudflare Durable Object.

pub mod actor;
pub mod approval;
pub mod error;
pub mod executor;
pub mod guard;
pub mod local;
pub mod migrate;
pub mod protocol;
pub mod relay;
pub mod state;
pub mod store;
mod sync;
pub mod web;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Error, Result};
pub use sync::{SendOutsideWasm, SyncOutsideWasm};
