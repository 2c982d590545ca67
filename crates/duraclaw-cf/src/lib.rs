//! The Cloudflare host for Duraclaw: the session actor as a Durable Object.
//!
//! This crate is a skeleton for now; `SessionDO` and the DO-SQL store land here.
