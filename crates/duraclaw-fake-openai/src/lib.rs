//! A scripted fake of the OpenAI Responses API, for tests that run the real
//! Codex (through `codex-acp`) with no network.
//!
//! The fake listens on an ephemeral port of 127.0.0.1 and answers
//! `POST /v1/responses` from a script of assistant [`Turn`]s, as the
//! server-sent events a streaming response is made of
//! (`response.created`, `response.output_item.added`,
//! `response.output_text.delta`, `response.function_call_arguments.delta`,
//! `response.output_item.done`, `response.completed`).
//!
//! - Each model request takes the next turn; after the script, a request
//!   gets a short text ([`EXHAUSTED_TEXT`]).
//! - `GET /v1/models` lists no models; other routes get 404 with a JSON
//!   error.
//! - Every request is recorded ([`FakeOpenAi::requests`]), with its
//!   headers and JSON body.
//!
//! Codex reaches it through a model provider of its `config.toml`
//! ([`FakeOpenAi::codex_config`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use duraclaw_fake_openai::{FakeOpenAi, Turn};
//! let fake = FakeOpenAi::start([Turn::text("Hello!")]).await?;
//! // point the client at fake.base_url(), run it, then:
//! assert_eq!(fake.model_requests().len(), 1);
//! # Ok(()) }
//! ```

mod server;

pub use server::{EXHAUSTED_TEXT, FakeOpenAi, RecordedRequest, Turn};
