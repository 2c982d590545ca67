//! The event mix: assistant token deltas and small tool results of about
//! 200 bytes of JSON each, and one large tool result (50–200 KB) in every
//! [`LARGE_EVERY`] events. Deterministic: event `i` is always the same.

use duraclaw_core::protocol::{Assistant, AssistantPhase, Event, Gseq, ToolResult};
use duraclaw_core::store::NewEvent;

/// One large tool result in this many events (at index 999, 10,999, …).
pub const LARGE_EVERY: u64 = 10_000;

const WORDS: &[&str] = &[
    "the", "function", "returns", "a", "value", "when", "test", "passes", "cargo", "build",
    "error", "line", "file", "struct", "impl", "async", "await", "store", "event", "session",
    "let", "me", "check", "this", "now", "fix", "it", "and", "run", "again",
];

/// Deterministic text of about `len` bytes, words from a small vocabulary,
/// a newline every ~12 words (as tool output has).
pub fn text(seed: u64, len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut words = 0;
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if !s.is_empty() {
            words += 1;
            s.push(if words % 12 == 0 { '\n' } else { ' ' });
        }
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    s
}

/// Whether event `i` is a large tool result.
pub fn is_large(i: u64) -> bool {
    i % LARGE_EVERY == 999
}

/// An assistant token delta of about 200 bytes of JSON.
pub fn delta(i: u64) -> Event {
    Event::Assistant(Assistant {
        message_id: format!("msg_01HX7Q9K2M{:06}", i / 50),
        phase: AssistantPhase::Delta,
        text: text(i, 120),
        aborted: false,
    })
}

/// Event `i` of the mix: mostly deltas, every 8th a small tool result,
/// and the large ones.
pub fn event(i: u64) -> Event {
    if is_large(i) {
        // 50, 100, 150, 200 KB in turn.
        let size = 50_000 * (1 + (i / LARGE_EVERY % 4) as usize);
        return Event::ToolResult(ToolResult {
            tool_use_id: format!("toolu_01HX7Q9K2M{i:06}"),
            content: serde_json::Value::String(text(i, size)),
            is_error: false,
        });
    }
    if i % 8 == 7 {
        return Event::ToolResult(ToolResult {
            tool_use_id: format!("toolu_01HX7Q9K2M{i:06}"),
            content: serde_json::Value::String(text(i, 100)),
            is_error: false,
        });
    }
    delta(i)
}

/// Event `i` of the mix as an executor emits it through the gateway with
/// no approval modelled: the gateway stops a session whose tool result has
/// no allowing decision before it, so each tool result's text comes as an
/// assistant's final message of the same size instead.
pub fn unasked(i: u64) -> Event {
    match event(i) {
        Event::ToolResult(r) => Event::Assistant(Assistant {
            message_id: r.tool_use_id,
            phase: AssistantPhase::Final,
            text: match r.content {
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            },
            aborted: false,
        }),
        other => other,
    }
}

/// Events `from..to` of the mix, encoded for an append; with `gseq`, event
/// `i` carries gseq `i + 1` (as the gateway numbers from 1).
pub fn new_events(from: u64, to: u64, gseq: bool, at_ms: i64) -> Vec<NewEvent> {
    (from..to)
        .map(|i| {
            let g: Option<Gseq> = gseq.then_some(i + 1);
            NewEvent::new(&event(i), g, at_ms).expect("the mix encodes")
        })
        .collect()
}

/// Token deltas `from..to`, as `(gseq, event)` for `SessionActor::ingest`
/// (gseq = index + 1).
pub fn deltas(from: u64, to: u64) -> Vec<(Gseq, Event)> {
    (from..to).map(|i| (i + 1, delta(i))).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_are_as_described() {
        let small: Vec<usize> = (0..16).map(|i| event(i).to_json().unwrap().len()).collect();
        assert!(small.iter().all(|&n| (170..=240).contains(&n)), "{small:?}");
        let large = event(999).to_json().unwrap().len();
        assert!((50_000..60_000).contains(&large), "{large}");
        let largest = event(30_999).to_json().unwrap().len();
        assert!((200_000..240_000).contains(&largest), "{largest}");
        assert_eq!(event(5), event(5));
    }
}
