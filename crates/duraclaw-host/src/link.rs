//! The gateway link's decisions, sans-IO: what to send, what a frame from
//! the gateway means, and what to send back once events are stored.
//!
//! A host owns the socket, the clock and the store; it drives a [`Link`]:
//!
//! 1. dial, send [`hello`], read the gateway's first frame with
//!    [`read_hello`] (version checked);
//! 2. send the session actor's `on_gateway_connected` frames (unconfirmed
//!    commands, then attach after the highest persisted gseq) through
//!    [`Link::outgoing`], as every frame it sends;
//! 3. hand the frames it reads to [`Link::read`] (or [`decode`] them
//!    outside any lock, then [`Link::route`]) and act on the [`Input`]s in
//!    order: events are ingested (`ingest_raw`, their text
//!    stored and relayed as it came), and [`after_ingest`] says what to send
//!    back (the ack, and a re-attach after a gap);
//! 4. when the socket ends, call [`Link::on_closed`]; redial after the
//!    delay [`Backoff`](crate::backoff::Backoff) gives.
//!
//! A command's id is unique within its session only (clients choose it)
//! and the gateway's result names the id alone, so on the link the id is
//! qualified with the session (`<session>/<id>`, the same on every resend)
//! and a result is routed back to the session whose command it answers.

use std::collections::HashMap;

use duraclaw_core::backend::actor::IngestOutcome;
use duraclaw_core::error::{Error, Result};
use duraclaw_core::protocol::{
    Command, CommandResult, FromGateway, GatewayFrame, Gseq, Hello, RawEvent, Role, ToGateway,
    WireError, Worktree, decode_frame, decode_gateway_frame, encode_frame,
};

/// What the gateway said about itself in its hello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayInfo {
    /// Its software, e.g. `duraclaw-gateway/0.1.0`.
    pub agent: Option<String>,
    /// Why its executor cannot run sessions, when it cannot.
    pub executor_error: Option<String>,
}

/// Our hello, the first frame on a new link.
pub fn hello() -> Result<String> {
    encode_frame(&ToGateway::Hello(Hello::new(Role::Orchestrator)))
}

/// Reads the gateway's first frame: its hello at our protocol version, or
/// the error it refused the link with.
pub fn read_hello(text: &str) -> Result<GatewayInfo> {
    match decode_frame::<FromGateway>(text, "gateway hello")? {
        FromGateway::Hello(h) => {
            h.check_version()?;
            Ok(GatewayInfo {
                agent: h.agent,
                executor_error: h.executor_error,
            })
        }
        FromGateway::Error(e) => Err(Error::Invalid(format!(
            "the gateway refused the link: {} ({})",
            e.message, e.code
        ))),
        _ => Err(Error::Invalid("the gateway did not say hello".into())),
    }
}

/// A command's id on the link: qualified with its session.
pub fn link_command_id(session_id: &str, id: &str) -> String {
    format!("{session_id}/{id}")
}

/// What to send once a session's events from the gateway are ingested:
/// the ack of what is persisted, then, if the batch skipped a gseq, a
/// re-attach after it (the gateway resends from there). Nothing is sent
/// when ingesting failed: unacked events stay in the gateway's outbox.
pub fn after_ingest(session_id: &str, out: &IngestOutcome) -> Vec<ToGateway> {
    let mut frames = vec![ToGateway::Ack {
        session_id: session_id.to_owned(),
        gseq: out.ack,
    }];
    if out.gap_at.is_some() {
        frames.push(ToGateway::Attach {
            session_id: session_id.to_owned(),
            after_gseq: out.ack,
        });
    }
    frames
}

/// What a frame from the gateway asks of the host, in the order to act on.
///
/// Every [`Input::Events`] before another input must be ingested before
/// that input is handled (a command's result follows the events the
/// command produced).
#[derive(Debug)]
pub enum Input<W> {
    /// Events of one session in gseq order, as text: ingest them
    /// (`SessionActor::ingest_raw`), then send [`after_ingest`].
    Events {
        /// The session.
        session_id: String,
        /// Its events with their gseq.
        events: Vec<(Gseq, RawEvent)>,
    },
    /// The gateway's answer to a command this link sent: record it
    /// (`SessionActor::on_command_result`), then act on the flags.
    Result {
        /// The session whose command it answers.
        session_id: String,
        /// The result, with the command's own id (no longer qualified).
        result: CommandResult,
        /// The command started a turn (message, execute, resume).
        starts_turn: bool,
        /// The refused command started a turn nobody waits on: the user's
        /// turn is in the log, and its end is this refusal
        /// (`SessionActor::end_refused_turn`). A waiter (a session start)
        /// handles its refusal itself.
        ends_turn: bool,
        /// Who waits for it ([`Link::wait`]), if anyone.
        waiter: Option<W>,
    },
    /// The worktrees asked for with `list_worktrees` `id`.
    Worktrees {
        /// The request's id.
        id: String,
        /// The worktrees.
        worktrees: Vec<Worktree>,
    },
    /// A link-level error from the gateway (it also answers a pending
    /// worktree listing).
    Error(WireError),
    /// The answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The answer to a `request` (see [`crate::worktree`]).
    Reply {
        /// The request's id.
        id: String,
        /// Its value, or why it failed.
        result: std::result::Result<serde_json::Value, WireError>,
    },
    /// A frame that does not decode: log it; it is skipped.
    Bad(Error),
}

/// Frames from the gateway, decoded and grouped ([`decode`]), not yet
/// matched to the commands sent ([`Link::route`]).
#[derive(Debug, Default)]
pub struct Decoded(Vec<Item>);

#[derive(Debug)]
enum Item {
    Events {
        session_id: String,
        events: Vec<(Gseq, RawEvent)>,
    },
    Result(CommandResult),
    Worktrees {
        id: String,
        worktrees: Vec<Worktree>,
    },
    Error(WireError),
    Pong {
        nonce: u64,
    },
    Reply {
        id: String,
        result: std::result::Result<serde_json::Value, WireError>,
    },
    Bad(Error),
}

/// Decodes frames read from the gateway; needs no link state, so a host
/// that shares its [`Link`] between threads decodes outside its lock.
///
/// Consecutive events are grouped per session (one ingest, one ack each;
/// a session's events keep their order); any other frame comes after the
/// events read before it. A frame that does not decode becomes
/// [`Input::Bad`]; a second hello is skipped.
pub fn decode<I, T>(texts: I) -> Decoded
where
    I: IntoIterator<Item = T>,
    T: AsRef<str>,
{
    let mut out: Vec<Item> = Vec::new();
    // Where the events since the last other frame begin.
    let mut events_from = 0;
    for text in texts {
        let frame = match decode_gateway_frame(text.as_ref()) {
            Ok(f) => f,
            Err(e) => {
                // Skipped: it does not split a run of events.
                out.push(Item::Bad(e));
                continue;
            }
        };
        let other = match frame {
            GatewayFrame::Event {
                session_id,
                gseq,
                event,
            } => {
                let group = out[events_from..].iter_mut().find_map(|i| match i {
                    Item::Events {
                        session_id: s,
                        events,
                    } if *s == session_id => Some(events),
                    _ => None,
                });
                match group {
                    Some(events) => events.push((gseq, event)),
                    None => out.push(Item::Events {
                        session_id,
                        events: vec![(gseq, event)],
                    }),
                }
                continue;
            }
            GatewayFrame::Other(other) => other,
        };
        let item = match other {
            FromGateway::CommandResult(r) => Item::Result(r),
            FromGateway::Worktrees { id, worktrees } => Item::Worktrees { id, worktrees },
            FromGateway::Error(e) => Item::Error(e),
            FromGateway::Pong { nonce } => Item::Pong { nonce },
            FromGateway::Reply { id, value, error } => Item::Reply {
                id,
                result: match (value, error) {
                    (_, Some(e)) => Err(e),
                    (v, None) => Ok(v.unwrap_or(serde_json::Value::Null)),
                },
            },
            _ => continue,
        };
        out.push(item);
        events_from = out.len();
    }
    Decoded(out)
}

/// A command sent on the link, awaiting its result.
#[derive(Debug)]
struct Sent {
    session_id: String,
    id: String,
    starts_turn: bool,
}

/// One host's gateway link across its connections: the commands sent and
/// not yet answered, and who waits for which (`W`, e.g. a channel sender).
#[derive(Debug)]
pub struct Link<W> {
    /// By id on the link.
    sent: HashMap<String, Sent>,
    /// By id on the link.
    waiters: HashMap<String, W>,
}

impl<W> Default for Link<W> {
    fn default() -> Self {
        Link {
            sent: HashMap::new(),
            waiters: HashMap::new(),
        }
    }
}

impl<W> Link<W> {
    /// A link with nothing sent.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text of `frame` to send: a command's id is qualified with its
    /// session and the command recorded, so its result finds its way back.
    pub fn outgoing(&mut self, frame: &ToGateway) -> Result<String> {
        let ToGateway::Command(env) = frame else {
            return encode_frame(frame);
        };
        let link_id = link_command_id(&env.session_id, &env.id);
        let mut qualified = env.clone();
        qualified.id = link_id.clone();
        let text = encode_frame(&ToGateway::Command(qualified))?;
        let starts_turn = matches!(
            env.command,
            Command::Message(_) | Command::Execute(_) | Command::Resume(_)
        );
        self.sent.insert(
            link_id,
            Sent {
                session_id: env.session_id.clone(),
                id: env.id.clone(),
                starts_turn,
            },
        );
        Ok(text)
    }

    /// `waiter` waits for the result of `session_id`'s command `id`: the
    /// result hands it back in [`Input::Result`]. A link that closes first
    /// drops it.
    pub fn wait(&mut self, session_id: &str, id: &str, waiter: W) {
        self.waiters.insert(link_command_id(session_id, id), waiter);
    }

    /// Takes back the waiter of `session_id`'s command `id` (it gave up).
    pub fn unwait(&mut self, session_id: &str, id: &str) -> Option<W> {
        self.waiters.remove(&link_command_id(session_id, id))
    }

    /// Whether anyone waits for `session_id`'s command `id`.
    pub fn is_waited(&self, session_id: &str, id: &str) -> bool {
        self.waiters.contains_key(&link_command_id(session_id, id))
    }

    /// Frames read from the gateway, in order, as inputs to act on in
    /// order: [`decode`], then [`Link::route`].
    pub fn read<I, T>(&mut self, texts: I) -> Vec<Input<W>>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.route(decode(texts))
    }

    /// [`Link::read`] for one frame.
    pub fn read_one(&mut self, text: &str) -> Vec<Input<W>> {
        self.read([text])
    }

    /// Decoded frames as inputs: each command result matched to the
    /// command this link sent. A result for a command it did not send
    /// (another session's, or one sent before the link closed) is skipped.
    pub fn route(&mut self, frames: Decoded) -> Vec<Input<W>> {
        frames
            .0
            .into_iter()
            .filter_map(|item| match item {
                Item::Events { session_id, events } => Some(Input::Events { session_id, events }),
                Item::Result(r) => self.result(r),
                Item::Worktrees { id, worktrees } => Some(Input::Worktrees { id, worktrees }),
                Item::Error(e) => Some(Input::Error(e)),
                Item::Pong { nonce } => Some(Input::Pong { nonce }),
                Item::Reply { id, result } => Some(Input::Reply { id, result }),
                Item::Bad(e) => Some(Input::Bad(e)),
            })
            .collect()
    }

    fn result(&mut self, mut r: CommandResult) -> Option<Input<W>> {
        let sent = self.sent.remove(&r.id)?;
        let waiter = self.waiters.remove(&r.id);
        r.id = sent.id;
        Some(Input::Result {
            ends_turn: !r.ok && sent.starts_turn && waiter.is_none(),
            session_id: sent.session_id,
            result: r,
            starts_turn: sent.starts_turn,
            waiter,
        })
    }

    /// The socket ended: commands in flight are forgotten (the session's
    /// outbox resends them on the next link) and their waiters dropped
    /// (their answer will not come on this link).
    pub fn on_closed(&mut self) {
        self.sent.clear();
        self.waiters.clear();
    }

    /// Commands sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }
}

#[cfg(test)]
mod tests;
