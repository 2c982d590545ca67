//! A log that publishes before it commits
//! (`SessionLog::publishing_before_commit`), over SQLite, when a commit
//! fails after its events went out (the disk is full: here a trigger
//! refuses the insert, so the real store fails the real transaction). Its
//! subscribers got those events and then end; every later append fails; and
//! a log opened again over the store has only what was committed, and goes
//! on from there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use duraclaw_core::backend::actor::{SessionLog, Subscription};
use duraclaw_core::protocol::{Assistant, AssistantPhase, Event};
use duraclaw_core::store::{AppendBatch, NewEvent, SessionDirectory, SessionMeta};
use duraclaw_store::SqliteDirectory;

const DEADLINE: Duration = Duration::from_secs(10);

fn events(from: u64, n: u64) -> AppendBatch {
    AppendBatch::events(
        (from..from + n)
            .map(|i| {
                let e = Event::Assistant(Assistant {
                    message_id: "m".into(),
                    phase: AssistantPhase::Delta,
                    text: format!("token {i}"),
                    aborted: false,
                });
                NewEvent::new(&e, None, 0).unwrap()
            })
            .collect(),
    )
}

async fn next(sub: &mut Subscription) -> Option<u64> {
    tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("the subscription neither gave an event nor ended")
        .map(|e| e.unwrap().seq)
}

#[tokio::test]
async fn a_commit_that_fails_after_its_events_went_out_stops_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sessions.db");
    let dir = SqliteDirectory::open(&path).await.unwrap();
    let store = dir
        .create(SessionMeta::new("s1", "alice", 0))
        .await
        .unwrap();
    let log = SessionLog::open(store)
        .await
        .unwrap()
        .publishing_before_commit();
    log.append(events(1, 3)).await.unwrap();
    let mut sub = log.subscribe(0);
    for seq in 1..=3 {
        assert_eq!(next(&mut sub).await, Some(seq));
    }

    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON events \
         BEGIN SELECT RAISE(ABORT, 'no space left on the device'); END;",
    )
    .unwrap();
    let failed = log.append(events(4, 2)).await.unwrap_err().to_string();
    assert!(failed.contains("no space left"), "{failed}");
    // The subscriber had the two events before the commit failed, then the
    // log ended.
    assert_eq!(next(&mut sub).await, Some(4));
    assert_eq!(next(&mut sub).await, Some(5));
    assert_eq!(next(&mut sub).await, None);
    // Nothing more is taken, even once the disk has room again.
    raw.execute_batch("DROP TRIGGER refuse").unwrap();
    let refused = log.append(events(6, 1)).await.unwrap_err().to_string();
    assert!(
        refused.contains("stopped after a failed commit"),
        "{refused}"
    );
    // A subscription after the failure gets what was committed.
    let mut late = log.subscribe(0);
    for seq in 1..=3 {
        assert_eq!(next(&mut late).await, Some(seq));
    }
    assert_eq!(next(&mut late).await, None);

    // Opened again: the committed events, and appends go on after them.
    let log = SessionLog::open(dir.open("s1").await.unwrap())
        .await
        .unwrap()
        .publishing_before_commit();
    let out = log.append(events(4, 1)).await.unwrap();
    assert_eq!(out.stored[0].seq, 4);
    let mut sub = log.subscribe(0);
    for seq in 1..=4 {
        assert_eq!(next(&mut sub).await, Some(seq));
    }
}
