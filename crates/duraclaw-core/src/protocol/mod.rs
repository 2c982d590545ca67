//! The wire protocol of both links, as JSON text frames.
//!
//! ```text
//! browser ══WS1══▶ orchestrator ══WS2══▶ gateway
//!   FromBrowser ▶        ◀ ToBrowser
//!                  ToGateway ▶      ◀ FromGateway
//! ```
//!
//! Every frame is a JSON object with a `"type"`. Each link opens with a
//! [`Hello`] carrying the major protocol version [`PROTOCOL_VERSION`]; a peer
//! refuses another major version with [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion).
//! Commands carry an `id` that the receiver applies once. Gateway events carry
//! the gateway's per-session `gseq`; browser events carry the orchestrator's
//! dense per-session `seq`.
//!
//! An [`Event`] of a type this build does not know decodes into
//! [`Event::Unknown`], which keeps the raw JSON so it is stored and relayed
//! unchanged, never dropped. `docs/protocol.md` describes every frame; the
//! golden fixtures under `tests/fixtures/` pin their exact JSON.

mod command;
mod event;
mod frame;
mod link;
mod raw;
#[cfg(test)]
mod tests;

pub use command::*;
pub use event::*;
pub use frame::*;
pub use link::*;
pub use raw::*;

/// The major protocol version this code speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either link accepts, in bytes of JSON text.
///
/// Large enough for a 200 KB tool result with room to spare, small enough
/// that a hostile peer cannot make a server buffer without bound.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// The largest WebSocket message either end of the gateway link accepts:
/// the frame limit plus room for the frame's envelope.
pub const LINK_MAX_MESSAGE_BYTES: usize = MAX_FRAME_BYTES + 1024;

/// Bytes a gateway-link socket read asks for at most. WebSocket libraries
/// zero that much of their buffer before every read, so a large default
/// (128 KiB) costs a `memset` of that size per frame when frames come one
/// by one; a burst takes a few more reads of this size instead, and a
/// large frame still arrives whole (the buffer grows to the frame).
pub const LINK_READ_BUFFER_BYTES: usize = 16 * 1024;

/// The largest event, in bytes of JSON text: a frame's limit less room for
/// the envelope (`type`, `session_id`, `seq`/`gseq`), so every stored event
/// can be sent in one frame on either link.
pub const MAX_EVENT_BYTES: usize = MAX_FRAME_BYTES - 4096;

/// The longest session id, so the envelope always fits.
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// The orchestrator's dense, strictly increasing per-session sequence number.
pub type Seq = u64;
/// The gateway's per-session sequence number for the events it emits.
pub type Gseq = u64;

fn is_false(b: &bool) -> bool {
    !*b
}
