//! A scripted fake of the Anthropic Messages API, for tests that run the
//! real Claude Code CLI (or any Messages API client) with no network.
//!
//! The fake listens on an ephemeral port of 127.0.0.1 and answers
//! `POST /v1/messages` (any query, e.g. `?beta=true`) from a script of
//! assistant [`Turn`]s: as server-sent events (`message_start`,
//! `content_block_start`, `content_block_delta`, `content_block_stop`,
//! `message_delta`, `message_stop`) when the request says `"stream": true`,
//! as one JSON message otherwise.
//!
//! - Each new model request takes the next turn. A request whose message
//!   count and last message equal the previous one's (ignoring cache markers
//!   and `<system-reminder>` sections, which the CLI changes between retries)
//!   is a retry and gets the same turn again.
//! - Side requests (no tools, or a JSON-schema output format such as the
//!   CLI's title generation) get minimal matching JSON and take no turn.
//! - Turns can pace their deltas, stall on a [`Latch`] until the test
//!   releases it, fail with an HTTP status, or fail their first attempts.
//! - Every request is recorded ([`FakeAnthropic::requests`]); unknown routes
//!   get 404 with a JSON error; bodies over [`Options::max_body_bytes`] get
//!   413.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use duraclaw_fake_anthropic::{FakeAnthropic, Turn};
//! let fake = FakeAnthropic::start([Turn::text("Hello!")]).await?;
//! // point the client at fake.base_url(), run it, then:
//! assert_eq!(fake.model_requests().len(), 1);
//! # Ok(()) }
//! ```

mod answer;
mod schema;
mod script;
mod server;

pub use schema::minimal_value;
pub use script::{Block, HttpError, Latch, Turn, Usage};
pub use server::{FakeAnthropic, Options, RecordedRequest, RequestKind};

#[cfg(test)]
mod tests;
