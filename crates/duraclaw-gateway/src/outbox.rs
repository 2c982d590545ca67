//! The executor's event sink: each event goes into the session's outbox
//! (its durable log), and events that arrive while a commit is in flight
//! are committed together, as one append (group commit at the source).
//!
//! An executor emits one event at a time and waits for each, so a sink that
//! committed every event before returning would never see two at once: a
//! burst of token deltas cost one transaction each and left for the
//! orchestrator one commit apart. Here a committer task owns the appends:
//! it takes every event queued at that moment (up to [`MAX_GROUP`]) and
//! appends them in one batch.
//!
//! What `emit` waits for:
//!
//! - a token delta (`assistant` with phase `delta`) returns once it is
//!   queued, in order, behind the others; the queue is bounded
//!   ([`QUEUE`]), so a producer faster than the disk waits. A delta is the
//!   least a crash can lose: the final `assistant` event repeats its text;
//! - every other event returns once it is durable, and with it every event
//!   queued before it, as [`EventSink::emit`] promises. A question, a tool
//!   use, a result or an error is in the outbox before `emit` returns.
//!
//! A failed append is reported to the events waiting on it, and to the next
//! `emit` for the deltas that did not wait.
//!
//! The orchestrator still never sees an event before it is durable here:
//! the link forwards from the log's subscription, which publishes after
//! the commit.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::actor::SessionLog;
use duraclaw_core::error::Error;
use duraclaw_core::executor::EventSink;
use duraclaw_core::protocol::{Assistant, AssistantPhase, Event};
use duraclaw_core::store::{AppendBatch, NewEvent};
use tokio::sync::{mpsc, oneshot};

use crate::approval::now_ms;

/// The most events one append of the committer takes.
pub const MAX_GROUP: usize = 1024;

/// Events that may wait for the committer before `emit` waits too.
pub const QUEUE: usize = 4096;

type Waiter = oneshot::Sender<Result<()>>;

struct Queued {
    event: NewEvent,
    done: Option<Waiter>,
}

/// Appends an executor's events to a session's outbox, group-committing
/// what arrives while a commit is in flight.
#[derive(Debug, Clone)]
pub struct OutboxSink {
    log: SessionLog,
    queue: mpsc::Sender<Queued>,
    /// The failure of an append no caller waited on, for the next `emit`.
    failed: Arc<Mutex<Option<String>>>,
}

impl OutboxSink {
    /// A sink over `log`; its committer task runs on the current tokio
    /// runtime until every clone of the sink is dropped.
    pub fn new(log: SessionLog) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        tokio::spawn(commit_loop(log.clone(), rx, failed.clone()));
        OutboxSink {
            log,
            queue: tx,
            failed,
        }
    }

    fn take_failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn closed() -> Error {
    Error::Closed("the session's outbox")
}

fn failure(reason: &str) -> Error {
    Error::Storage {
        backend: "outbox",
        reason: format!("events were not recorded: {reason}"),
    }
}

async fn commit_loop(
    log: SessionLog,
    mut rx: mpsc::Receiver<Queued>,
    failed: Arc<Mutex<Option<String>>>,
) {
    let mut group = Vec::with_capacity(64);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let mut events = Vec::with_capacity(group.len());
        let mut waiters = Vec::new();
        for q in group.drain(..) {
            events.push(q.event);
            waiters.extend(q.done);
        }
        let silent = events.len() > waiters.len();
        match log.append(AppendBatch::events(events)).await {
            Ok(_) => {
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(session = log.store().session_id(), error = %reason, "outbox append failed");
                for w in waiters {
                    let _ = w.send(Err(failure(&reason)));
                }
                if silent {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                }
            }
        }
    }
}

/// Whether `emit` may return before the event is durable.
fn is_delta(event: &Event) -> bool {
    matches!(
        event,
        Event::Assistant(Assistant {
            phase: AssistantPhase::Delta,
            ..
        })
    )
}

#[async_trait]
impl EventSink for OutboxSink {
    async fn emit(&self, event: Event) -> Result<()> {
        if let Some(reason) = self.take_failure() {
            return Err(failure(&reason));
        }
        if let Event::SessionInit(init) = &event
            && let Some(id) = &init.executor_session_id
        {
            let store = self.log.store();
            let mut meta = store.meta().await?;
            if meta.executor_session_id.as_deref() != Some(id) {
                meta.executor_session_id = Some(id.clone());
                meta.model.clone_from(&init.model);
                store.put_meta(&meta).await?;
            }
        }
        let e = NewEvent::new(&event, None, now_ms())?;
        if is_delta(&event) {
            return self
                .queue
                .send(Queued {
                    event: e,
                    done: None,
                })
                .await
                .map_err(|_| closed());
        }
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Queued {
                event: e,
                done: Some(tx),
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}
