//! Events kept as JSON text: decoded only as far as a session's state needs.

use serde::Deserialize;
use serde_json::Value;

use super::{Event, FromGateway, Gseq, MAX_FRAME_BYTES, Seq, decode_frame};
use crate::error::{Error, Result};

/// The event types whose body a session's state depends on: the actor
/// reads these (`session.init`, questions, the end of a turn); every other
/// type is stored and relayed as its text.
pub const STATEFUL_EVENT_TYPES: &[&str] = &[
    "session.init",
    "user_question",
    "question.resolved",
    "result",
    "error",
    "notice",
];

/// An event as JSON text, decoded only as far as a session's state needs:
/// the body of a [stateful](STATEFUL_EVENT_TYPES) event, nothing else.
///
/// The orchestrator ingests the gateway's events in this form: an event's
/// text goes into the log and to the browsers as the gateway sent it, and
/// a token delta or a tool result is never decoded into an [`Event`] and
/// encoded again.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    json: std::sync::Arc<str>,
    kind: Box<str>,
    typed: Option<Event>,
}

/// The `type` of an event, borrowed when it has no escapes.
#[derive(Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

impl RawEvent {
    /// Checks `text` is an event (a JSON object with a string `type`, no
    /// larger than a frame) and decodes its body if its type is stateful,
    /// leniently as frames do: a stateful type whose body does not decode
    /// is kept as [`Event::Unknown`].
    pub fn from_json(text: &str) -> Result<Self> {
        if text.len() > MAX_FRAME_BYTES {
            return Err(Error::TooLarge {
                what: "event",
                size: text.len(),
                limit: MAX_FRAME_BYTES,
            });
        }
        if !text.trim_start().starts_with('{') {
            return Err(Error::decode_msg("event", "an event must be a JSON object"));
        }
        let head: EventType<'_> =
            serde_json::from_str(text).map_err(|e| Error::decode("event", e))?;
        let typed = if STATEFUL_EVENT_TYPES.contains(&head.kind.as_ref()) {
            let value: Value = serde_json::from_str(text).map_err(|e| Error::decode("event", e))?;
            Some(Event::from_value_lenient(value)?)
        } else {
            None
        };
        Ok(RawEvent {
            json: text.into(),
            kind: head.kind.into(),
            typed,
        })
    }

    /// Encodes `event`.
    pub fn from_event(event: &Event) -> Result<Self> {
        let json = event.to_json()?;
        let typed = STATEFUL_EVENT_TYPES
            .contains(&event.type_name())
            .then(|| event.clone());
        Ok(RawEvent {
            json: json.into(),
            kind: event.type_name().into(),
            typed,
        })
    }

    /// The event's JSON text.
    pub fn json(&self) -> &std::sync::Arc<str> {
        &self.json
    }

    /// The event's `type`.
    pub fn type_name(&self) -> &str {
        &self.kind
    }

    /// The decoded event, for a [stateful](STATEFUL_EVENT_TYPES) type;
    /// `None` for the others.
    pub fn event(&self) -> Option<&Event> {
        self.typed.as_ref()
    }
}

/// A frame from the gateway as the orchestrator reads it: an `event`
/// frame's event is kept as text ([`RawEvent`]), the others decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayFrame {
    /// An event of a session, numbered by the gateway.
    Event {
        /// The session.
        session_id: String,
        /// The gateway's sequence number for it.
        gseq: Gseq,
        /// The event, as text.
        event: RawEvent,
    },
    /// Any other frame.
    Other(FromGateway),
}

/// The envelope of a gateway `event` frame, its event left as text.
#[derive(Deserialize)]
struct EventEnvelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    session_id: String,
    gseq: Gseq,
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
}

/// Decodes a frame from the gateway (size-checked), an `event` frame
/// without decoding its event beyond what [`RawEvent::from_json`] needs.
/// Accepts exactly what decoding [`FromGateway`] accepts.
pub fn decode_gateway_frame(text: &str) -> Result<GatewayFrame> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(Error::TooLarge {
            what: "gateway frame",
            size: text.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    if let Ok(env) = serde_json::from_str::<EventEnvelope<'_>>(text)
        && env.kind == "event"
    {
        return Ok(GatewayFrame::Event {
            session_id: env.session_id,
            gseq: env.gseq,
            event: RawEvent::from_json(env.event.get())?,
        });
    }
    match decode_frame::<FromGateway>(text, "gateway frame")? {
        FromGateway::Event {
            session_id,
            gseq,
            event,
        } => Ok(GatewayFrame::Event {
            session_id,
            gseq,
            event: RawEvent::from_event(&event)?,
        }),
        other => Ok(GatewayFrame::Other(other)),
    }
}

/// Builds the gateway's `event` frame from an event's stored JSON text
/// without decoding it; byte-for-byte what serialising
/// `FromGateway::Event` gives.
pub fn gateway_event_frame(session_id: &str, gseq: Gseq, event_json: &str) -> Result<String> {
    let id = serde_json::to_string(session_id).map_err(|e| Error::decode("session id", e))?;
    let mut s = String::with_capacity(event_json.len() + id.len() + 48);
    s.push_str("{\"type\":\"event\",\"session_id\":");
    s.push_str(&id);
    s.push_str(",\"gseq\":");
    s.push_str(&gseq.to_string());
    s.push_str(",\"event\":");
    s.push_str(event_json);
    s.push('}');
    Ok(s)
}

/// Builds the `event` frame for a browser from an event's stored JSON text
/// without decoding it: replay sends stored bytes as they are.
///
/// The result is byte-for-byte what serialising `ToBrowser::Event` gives.
pub fn browser_event_frame(seq: Seq, event_json: &str) -> String {
    let mut s = String::with_capacity(event_json.len() + 40);
    s.push_str("{\"type\":\"event\",\"seq\":");
    s.push_str(&seq.to_string());
    s.push_str(",\"event\":");
    s.push_str(event_json);
    s.push('}');
    s
}
