//! What only a backend implementer needs: the pieces a new store or a new
//! host is built from. An app that runs sessions needs none of this; it
//! picks a store, an executor and a gate and uses the crate root's modules.
//!
//! - [`actor`]: the host-agnostic session actor (persist before forward,
//!   exactly-once replay with a fence, gseq dedupe and acks, command ids
//!   applied once), which each host drives from its own I/O;
//! - [`step`], [`limits`]: the append and resolve steps and the checks
//!   before any write, shared by every [`SessionStore`] backend;
//! - [`migrate`]: versioned, checksummed SQL migrations (the schema
//!   every SQL backend applies is `duraclaw_store::schema`);
//! - [`guard`]: the executor-side check that every tool that ran was
//!   allowed;
//! - [`web`]: the web rules both hosts share (the Origin rule, user name and
//!   password rules, WebSocket close codes), as pure functions over strings.
//!
//! [`SessionStore`]: crate::store::SessionStore

pub mod actor;
pub mod guard;
pub mod limits;
pub mod migrate;
pub mod step;
pub mod web;
