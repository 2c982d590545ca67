//! Idle sessions: the memory 10,000 sessions cost the orchestrator once
//! they went idle and their actors were evicted.
//!
//! As `duraclaw-full`'s orchestrator does: each session is created in one
//! SQLite directory and its `SessionActor` woken into a map of awake
//! actors; each ingests a short turn from its gateway (a few deltas and a
//! result) and a browser subscription reads it and goes away. Then every
//! actor is evicted (dropped from the map, as `evict_idle` does). The
//! resident set size (`/proc/self/statm`) is read before, with every actor
//! awake, and after the eviction; the figures are per session.
//!
//! No baseline: the goal is absolute (≤ 64 KiB per idle session). Prints
//! a JSON summary. `QUICK=1` (or `cargo test --benches`) runs 200 sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;

use duraclaw_benches::{mix, now_ms, quick, rss, runtime};
use duraclaw_core::backend::actor::SessionActor;
use duraclaw_core::clock::SystemClock;
use duraclaw_core::protocol::{Event, TurnResult};
use duraclaw_core::store::{SessionDirectory, SessionMeta};
use duraclaw_store::SqliteDirectory;
use serde_json::json;

/// A short turn: `n` deltas, then the turn's result.
fn turn(n: u64, from_gseq: u64) -> Vec<(u64, Event)> {
    let mut out: Vec<(u64, Event)> = (0..n)
        .map(|i| (from_gseq + i, mix::delta(from_gseq + i)))
        .collect();
    out.push((
        from_gseq + n,
        Event::Result(TurnResult {
            subtype: Some("success".into()),
            is_error: false,
            duration_ms: Some(1200),
            cost_usd: Some(0.01),
            usage: None,
            num_turns: Some(1),
            terminal_reason: Some("completed".into()),
            last_message_uuid: None,
        }),
    ));
    out
}

fn main() {
    let quick = quick();
    let sessions: usize = if quick { 200 } else { 10_000 };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let report = rt.block_on(async {
        let dir = SqliteDirectory::open(tmp.path().join("orchestrator.db"))
            .await
            .unwrap();
        // Warm the allocator, the read pool and SQLite's caches with a few
        // sessions first, so the baseline is a running orchestrator's.
        let mut awake: HashMap<String, SessionActor> = HashMap::new();
        for i in 0..20 {
            let id = format!("warm-{i}");
            dir.create(SessionMeta::new(&id, "bench", now_ms()))
                .await
                .unwrap();
            let actor = SessionActor::open(dir.open(&id).await.unwrap(), SystemClock::shared())
                .await
                .unwrap();
            actor.ingest(turn(20, 1)).await.unwrap();
            awake.insert(id, actor);
        }
        awake.clear();
        let base = rss();

        for i in 0..sessions {
            let id = format!("idle-{i:05}");
            dir.create(SessionMeta::new(&id, "bench", now_ms()))
                .await
                .unwrap();
            let actor = SessionActor::open(dir.open(&id).await.unwrap(), SystemClock::shared())
                .await
                .unwrap();
            actor.ingest(turn(20, 1)).await.unwrap();
            // A browser watched the turn, then left.
            let mut sub = actor.log().subscribe(0);
            let head = actor.log().store().head().await.unwrap().last_seq;
            while let Some(e) = sub.next().await {
                if e.unwrap().seq == head {
                    break;
                }
            }
            drop(sub);
            awake.insert(id, actor);
        }
        let all_awake = rss();
        // Eviction: every actor nobody watches is dropped.
        awake.retain(|_, a| a.log().subscriber_count() > 0);
        assert!(awake.is_empty());
        let evicted = rss();
        let listed = dir.list("bench").await.unwrap().len();
        assert_eq!(listed, sessions + 20, "every session is still in the store");
        let per = |bytes: u64| bytes as f64 / sessions as f64 / 1024.0;
        json!({
            "bench": "idle",
            "quick": quick,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "sessions": sessions,
            "rss_base_mib": base as f64 / 1048576.0,
            "rss_all_awake_mib": all_awake as f64 / 1048576.0,
            "rss_after_eviction_mib": evicted as f64 / 1048576.0,
            "awake_kib_per_session": per(all_awake.saturating_sub(base)),
            "idle_kib_per_session": per(evicted.saturating_sub(base)),
        })
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
