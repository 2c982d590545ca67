//! # duraclaw-core
//!
//! The runtime-free heart of Duraclaw: the types an app and every backend
//! share. It owns:
//!
//! - [`protocol`]: the JSON wire protocol of both links (orchestrator ↔
//!   gateway, browser ↔ orchestrator), tolerant of unknown event types;
//! - [`state`]: the session state machine, one transition function;
//! - [`store`], [`approval`], [`executor`]: the three object-safe async
//!   traits backends implement ([`SessionStore`](store::SessionStore),
//!   [`ApprovalGate`](approval::ApprovalGate),
//!   [`Executor`](executor::Executor)) and the records they pass;
//! - [`Error`]: the one error type, which keeps its source;
//! - [`clock`]: where the time comes from ([`Clock`](clock::Clock)), a
//!   system clock and a manual one for tests;
//! - [`backend`]: what only a store or host implementer needs (the session
//!   actor, the shared store steps, SQL migrations, the tool guard, the web
//!   rules both hosts share);
//! - [`local`]: a session whose executor runs in this process (no gateway,
//!   no WebSocket), over the same actor;
//! - `conformance` (feature `conformance`): the shared test suites every
//!   `SessionStore` backend and every `Executor` runs.
//!
//! It depends on no async runtime and builds for `wasm32-unknown-unknown`, so
//! the same logic runs in a tokio server and in a Cloudflare Durable Object.
//! Stores live in `duraclaw-store`, gates in `duraclaw-approval`, the Claude
//! Code executor in `duraclaw-gateway`, the local host in
//! `duraclaw-orchestrator`.
//!
//! ```
//! use duraclaw_core::protocol::Event;
//! use duraclaw_core::state::{SessionInput, SessionState, transition};
//!
//! // An event as the gateway sends it; an unknown type is kept, not dropped.
//! let event = Event::from_json(r#"{"type":"result","subtype":"success"}"#)?;
//! assert_eq!(event.type_name(), "result");
//! let future = Event::from_json(r#"{"type":"from.the.future","x":1}"#)?;
//! assert!(matches!(future, Event::Unknown(_)));
//!
//! // The session state machine: a turn runs, then ends.
//! let state = transition(SessionState::Initializing, SessionInput::Initialized)?;
//! let state = transition(state, SessionInput::TurnStarted)?;
//! assert_eq!(state, SessionState::Active);
//! // An input that does not apply is an error, never a silent change.
//! assert!(transition(SessionState::Terminated, SessionInput::TurnStarted).is_err());
//! # Ok::<(), duraclaw_core::Error>(())
//! ```

pub mod approval;
pub mod backend;
pub mod clock;
pub mod error;
pub mod executor;
pub mod local;
pub mod protocol;
pub mod state;
pub mod store;
mod sync;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{BoxError, Error, Result};
pub use sync::{SendOutsideWasm, SyncOutsideWasm};
