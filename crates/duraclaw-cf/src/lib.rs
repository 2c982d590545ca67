//! # duraclaw-cf
//!
//! The Cloudflare host for Duraclaw: the session actor as a Durable Object.
//! Its [`SessionStore`] is `duraclaw_store`'s [`SqlConnDirectory`] and
//! [`SqlConnStore`] (the store over any synchronous in-process [`SqlConn`],
//! with the SQL schema every SQL store shares) over the object's own SQL:
//!
//! - [`auth`]: users, login sessions and the session index in D1 (its
//!   rules target-independent, the D1 and WebCrypto side on wasm32);
//! - [`publish`]: what a session object publishes next, from its log's
//!   live subscription;
//! - on wasm32, `do_sql`: `DoSqlConn`, a Durable Object's SQL storage as a
//!   [`SqlConn`] whose transactions are `storage.transactionSync`, and the
//!   aliases `DoSqlDirectory` / `DoSqlStore`;
//! - on wasm32, `session`: `SessionHost`, the body of a session's Durable
//!   Object (browser sockets, gateway link, alarms) around core's
//!   `SessionActor`;
//! - on wasm32, `router`: the Worker's routes (`router::handle`), and
//!   `gateway_client`: the outbound link to the gateway;
//! - on wasm32, `user`: `UserHost`, the body of a user's Durable Object
//!   (the user's inbox and its WebSocket stream), and the session
//!   object's `Notifier` that keeps it up to date;
//! - on wasm32, `logging`: `tracing` to the Workers console;
//! - on wasm32, `objects`: `host_object!`, a Durable Object class around
//!   one of these hosts, for the Workers that export them;
//! - on wasm32, `push`: the Web Push routes and `PushHost`, the per-user
//!   Durable Object that sends the pushes;
//! - on wasm32, `auth`: users, logins and the session index in D1;
//! - on wasm32 with feature `conformance`: the Durable Object harnesses of
//!   core's conformance suite.
//!
//! On other targets the crate holds only the target-independent parts, so
//! the workspace builds and lints natively without the Workers runtime.
//!
//! One Durable Object holds one session: its `SessionDO` opens
//! `DoSqlDirectory::open(DoSqlConn::new(&state.storage()))` and creates or
//! opens its own session in it.
//!
//! [`SessionStore`]: duraclaw_core::store::SessionStore
//! [`SqlConn`]: duraclaw_core::backend::migrate::SqlConn

pub mod auth;
#[cfg(target_arch = "wasm32")]
pub mod clock;
#[cfg(target_arch = "wasm32")]
pub mod do_sql;
#[cfg(target_arch = "wasm32")]
pub mod gateway_client;
#[cfg(target_arch = "wasm32")]
pub mod logging;
#[cfg(target_arch = "wasm32")]
pub mod objects;
pub mod publish;
#[cfg(target_arch = "wasm32")]
pub mod push;
#[cfg(target_arch = "wasm32")]
pub mod router;
#[cfg(target_arch = "wasm32")]
pub mod rules;
#[cfg(target_arch = "wasm32")]
pub mod session;
#[cfg(target_arch = "wasm32")]
pub mod user;

#[cfg(all(target_arch = "wasm32", feature = "conformance"))]
pub mod conformance;

pub use duraclaw_store::{SqlConnDirectory, SqlConnStore};

#[cfg(target_arch = "wasm32")]
pub use do_sql::DoSqlConn;

/// Every session in a Durable Object's SQL storage (in practice, its one).
#[cfg(target_arch = "wasm32")]
pub type DoSqlDirectory = SqlConnDirectory<DoSqlConn>;

/// One session in a Durable Object's SQL storage.
#[cfg(target_arch = "wasm32")]
pub type DoSqlStore = SqlConnStore<DoSqlConn>;
