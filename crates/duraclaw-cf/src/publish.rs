//! What a session object publishes next: the events its log's live
//! subscription holds ready, so a publish sends what the append just
//! stored without reading it back from SQL.

use duraclaw_core::Error;
use duraclaw_core::backend::actor::Subscription;
use duraclaw_core::store::StoredEvent;
use futures::FutureExt;

/// Up to `max` events `live` holds ready, in seq order, each once, without
/// waiting. Over a synchronous store (a Durable Object's SQL) a catch-up
/// read of a subscriber that fell behind completes within its first poll,
/// so a pending poll means nothing more was stored. A failure comes with
/// the events taken before it.
pub fn ready(live: &mut Subscription, max: usize) -> (Vec<StoredEvent>, Option<Error>) {
    let mut events = Vec::new();
    while events.len() < max {
        match live.next().now_or_never() {
            Some(Some(Ok(e))) => events.push(e),
            Some(Some(Err(e))) => return (events, Some(e)),
            Some(None) | None => break,
        }
    }
    (events, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use duraclaw_core::backend::actor::{DEFAULT_LIVE_QUEUE, SessionLog};
    use duraclaw_core::protocol::{Assistant, AssistantPhase, Event};
    use duraclaw_core::store::{AppendBatch, NewEvent, SessionDirectory, SessionMeta};
    use duraclaw_store::MemoryDirectory;

    use super::*;

    fn deltas(from: u64, n: u64) -> AppendBatch {
        let events = (from..from + n)
            .map(|i| {
                let delta = Event::Assistant(Assistant {
                    message_id: "m".into(),
                    phase: AssistantPhase::Delta,
                    text: format!("t{i}"),
                    aborted: false,
                });
                NewEvent::new(&delta, Some(i), 1).unwrap()
            })
            .collect();
        AppendBatch::events(events)
    }

    /// Every page [`ready`] gives until it gives none: their seqs.
    fn drain(live: &mut Subscription, max: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        loop {
            let (page, failed) = ready(live, max);
            assert!(failed.is_none(), "{failed:?}");
            assert!(page.len() <= max);
            if page.is_empty() {
                return seqs;
            }
            seqs.extend(page.iter().map(|e| e.seq));
        }
    }

    /// What an append stored is ready at once, in order, each once; an
    /// append larger than the live queue (the subscriber falls behind)
    /// still yields every event, from the store.
    #[test]
    fn ready_gives_every_stored_event_once_in_order() {
        let dir = MemoryDirectory::new();
        let store = dir
            .create(SessionMeta::new("s", "u", 1))
            .now_or_never()
            .unwrap()
            .unwrap();
        let log = SessionLog::open(Arc::clone(&store))
            .now_or_never()
            .unwrap()
            .unwrap();
        let mut live = log.subscribe(0);
        assert!(drain(&mut live, 512).is_empty(), "nothing stored yet");

        log.append(deltas(1, 3)).now_or_never().unwrap().unwrap();
        assert_eq!(drain(&mut live, 512), vec![1, 2, 3]);

        let big = DEFAULT_LIVE_QUEUE as u64 * 2 + 7;
        log.append(deltas(4, big)).now_or_never().unwrap().unwrap();
        log.append(deltas(4 + big, 5))
            .now_or_never()
            .unwrap()
            .unwrap();
        let want: Vec<u64> = (4..4 + big + 5).collect();
        assert_eq!(drain(&mut live, 512), want);
        assert!(live.catch_ups() >= 1, "it fell behind and caught up");
        assert_eq!(live.delivered(), 3 + big + 5);
    }
}
