//! Events for the backends' own unit tests; the semantics both backends
//! share are core's conformance suite (`tests/conformance.rs`).

use duraclaw_core::protocol::{Assistant, AssistantPhase, Event};
use duraclaw_core::store::NewEvent;

pub(crate) const T0: i64 = 1_700_000_000_000;

fn delta(i: u64) -> Event {
    Event::Assistant(Assistant {
        message_id: "m".into(),
        phase: AssistantPhase::Delta,
        text: format!("t{i}"),
        aborted: false,
    })
}

pub(crate) fn ev(i: u64, gseq: Option<u64>) -> NewEvent {
    NewEvent::new(&delta(i), gseq, T0).unwrap()
}
