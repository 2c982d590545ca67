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
//! With turn marks (the gateway's sinks) the committer also clears the
//! "turn pending" mark of the command that started a turn once that turn's
//! first event is durable (see `TURN_PENDING` in the server).
//!
//! The outbox's log publishes each batch while it commits it
//! ([`SessionLog::publishing_before_commit`]): the link forwards an event
//! while the gateway writes it, so the orchestrator's commit and the
//! gateway's run side by side instead of one after the other. A gateway
//! that dies in between (or whose commit fails) has sent events its log
//! does not keep; the orchestrator keeps them, and the gateway numbers its
//! next events after them ([`crate::gseq`]). A batch with a question
//! (asked or resolved) or a turn's end is committed first, then sent: a
//! restart reads those back, so the orchestrator never holds one the
//! gateway lost.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::backend::actor::SessionLog;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::error::Error;
use duraclaw_core::executor::EventSink;
use duraclaw_core::protocol::{Assistant, AssistantPhase, Event};
use duraclaw_core::store::{AppendBatch, NewEvent};
use tokio::sync::{mpsc, oneshot};

/// The most events one append of the committer takes.
pub const MAX_GROUP: usize = 1024;

/// Events that may wait for the committer before `emit` waits too.
pub const QUEUE: usize = 4096;

type Waiter = oneshot::Sender<Result<()>>;

/// Ids of recorded turn-starting commands whose turn has logged nothing
/// yet, oldest first.
pub(crate) type Unstarted = Arc<Mutex<Vec<String>>>;

/// Whether an event shows a turn at work (what a restart looks for to know
/// a turn was cut, and, but for a `session.init` no command waits for,
/// what clears a turn's pending mark: [`TurnStep::of`]). A `notice` is
/// not: the re-run it announces keeps its mark until its own first event.
pub(crate) fn shows_work(event: &Event) -> bool {
    // A list of what IS work, so an event type added later counts as
    // nothing until someone decides otherwise (counting a notice as work
    // once let a re-run's own notice clear its pending mark).
    matches!(
        event,
        Event::SessionInit(_)
            | Event::Assistant(_)
            | Event::ToolUse(_)
            | Event::ToolResult(_)
            | Event::UserQuestion(_)
            | Event::UserMessage(_)
            | Event::SessionState(_)
    )
}

/// What an event means for the turn it belongs to, as the gateway counts
/// turns: the same for a turn's pending mark (the outbox) and for whether
/// an executor sits idle (the server), so the two never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnStep {
    /// The turn is at work.
    Work,
    /// The turn ended (`result` or `error`).
    End,
    /// Neither.
    Other,
}

impl TurnStep {
    /// The step `event` is; `waiting`: whether a turn-starting command
    /// waits for its turn to begin.
    ///
    /// A `session.init` is work only when a command waits: the Claude Code
    /// CLI sends one at the start of every turn, after it read the turn's
    /// prompt, and before the model's first word (which may be minutes
    /// away); the scripted and ACP executors send one when they start,
    /// which is no turn when they were resumed without a prompt.
    pub(crate) fn of(event: &Event, waiting: bool) -> Self {
        match event {
            Event::SessionInit(_) if !waiting => TurnStep::Other,
            _ if shows_work(event) => TurnStep::Work,
            Event::Result(_) | Event::Error(_) => TurnStep::End,
            _ => TurnStep::Other,
        }
    }
}

/// Whether a turn-starting command waits for its turn in `unstarted`.
pub(crate) fn waiting(unstarted: &Unstarted) -> bool {
    !unstarted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
}

/// Clears the pending mark of each turn's command once its first event is
/// durable. Events of a turn already under way clear nothing: a message the
/// executor queued behind it keeps its mark until its own turn.
struct TurnMarks {
    unstarted: Unstarted,
    turn_open: bool,
}

impl TurnMarks {
    /// The commands whose marks the committed `steps` clear, in order,
    /// each with the index of the step its turn began with.
    fn committed(&mut self, steps: &[TurnStep]) -> Vec<(String, usize)> {
        let mut cleared = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            match step {
                TurnStep::Work if !self.turn_open => {
                    self.turn_open = true;
                    let mut list = self.unstarted.lock().unwrap_or_else(|p| p.into_inner());
                    if !list.is_empty() {
                        cleared.push((list.remove(0), i));
                    }
                }
                TurnStep::End => self.turn_open = false,
                TurnStep::Work | TurnStep::Other => {}
            }
        }
        cleared
    }
}

struct Queued {
    event: NewEvent,
    step: TurnStep,
    done: Option<Waiter>,
}

/// Appends an executor's events to a session's outbox, group-committing
/// what arrives while a commit is in flight.
#[derive(Debug, Clone)]
pub struct OutboxSink {
    log: SessionLog,
    queue: mpsc::Sender<Queued>,
    /// The commands waiting for their turn (with turn marks).
    unstarted: Option<Unstarted>,
    /// The failure of an append no caller waited on, for the next `emit`.
    failed: Arc<Mutex<Option<String>>>,
}

impl OutboxSink {
    /// A sink over `log`; its committer task runs on the current tokio
    /// runtime until every clone of the sink is dropped.
    pub fn new(log: SessionLog) -> Self {
        Self::spawn(log, None)
    }

    /// A sink that also clears, once a turn's first event is durable, the
    /// pending mark of the oldest command in `unstarted`.
    pub(crate) fn with_turn_marks(log: SessionLog, unstarted: Unstarted) -> Self {
        Self::spawn(
            log,
            Some(TurnMarks {
                unstarted,
                turn_open: false,
            }),
        )
    }

    fn spawn(log: SessionLog, marks: Option<TurnMarks>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let unstarted = marks.as_ref().map(|m| m.unstarted.clone());
        tokio::spawn(commit_loop(log.clone(), rx, failed.clone(), marks));
        OutboxSink {
            log,
            queue: tx,
            unstarted,
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
    Error::storage("outbox", format_args!("events were not recorded: {reason}"))
}

async fn commit_loop(
    log: SessionLog,
    mut rx: mpsc::Receiver<Queued>,
    failed: Arc<Mutex<Option<String>>>,
    mut marks: Option<TurnMarks>,
) {
    let mut group = Vec::with_capacity(64);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let mut events = Vec::with_capacity(group.len());
        let mut steps = Vec::with_capacity(group.len());
        let mut waiters = Vec::new();
        for q in group.drain(..) {
            events.push(q.event);
            steps.push(q.step);
            waiters.extend(q.done);
        }
        let silent = events.len() > waiters.len();
        // What a restart reads back from the log (a question asked or
        // resolved, a turn's end) goes out only once it is kept: the
        // orchestrator never holds a question the gateway could not
        // withdraw, or a turn's end the gateway would end again.
        let keep_first = steps.contains(&TurnStep::End)
            || events
                .iter()
                .any(|e| e.asks.is_some() || e.resolves.is_some());
        let batch = AppendBatch::events(events);
        let appended = if keep_first {
            log.append_committed(batch).await
        } else {
            log.append(batch).await
        };
        match appended {
            Ok(out) => {
                // Before the waiters return: a caller that saw its event
                // durable also sees its turn's mark cleared, and a restart
                // sees which event began the turn.
                if let Some(marks) = marks.as_mut() {
                    for (id, i) in marks.committed(&steps) {
                        let cleared = match out.stored.get(i) {
                            Some(began) => log.store().mark_turn_began(&id, began.seq).await,
                            None => log.store().mark_forwarded(&id).await,
                        };
                        if let Err(e) = cleared {
                            tracing::error!(session = log.store().session_id(), error = %e, "could not clear a turn's pending mark");
                        }
                    }
                }
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
        let e = NewEvent::new(&event, None, SystemClock.now_ms())?;
        // Read when the event is emitted, as the server reads it for the
        // same event (`GuardedSink`).
        let step = TurnStep::of(&event, self.unstarted.as_ref().is_some_and(waiting));
        if is_delta(&event) {
            return self
                .queue
                .send(Queued {
                    event: e,
                    step,
                    done: None,
                })
                .await
                .map_err(|_| closed());
        }
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Queued {
                event: e,
                step,
                done: Some(tx),
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

#[cfg(test)]
mod tests {
    use duraclaw_core::protocol::{ToolResult, TurnResult};
    use duraclaw_core::store::{SessionDirectory, SessionMeta};
    use duraclaw_store::SqliteDirectory;

    use super::*;

    fn delta(i: u64) -> Event {
        Event::Assistant(Assistant {
            message_id: "m".into(),
            phase: AssistantPhase::Delta,
            text: format!("token {i} "),
            aborted: false,
        })
    }

    async fn sink() -> (OutboxSink, SqliteDirectory, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SqliteDirectory::open(tmp.path().join("outbox.db"))
            .await
            .unwrap();
        let store = dir
            .create(SessionMeta::new("s", "gateway", 1_700_000_000_000))
            .await
            .unwrap();
        let log = SessionLog::open(store).await.unwrap();
        (OutboxSink::new(log), dir, tmp)
    }

    /// A burst of deltas emitted one at a time, as an executor does, costs
    /// a few transactions, not one per delta; the event after them returns
    /// once it and every delta before it are durable, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_group_committed_and_a_result_waits_for_all() {
        let (sink, dir, _tmp) = sink().await;
        let before = dir.stats();
        for i in 0..2000 {
            sink.emit(delta(i)).await.unwrap();
        }
        sink.emit(Event::Result(TurnResult {
            last_message_uuid: None,
            subtype: Some("success".into()),
            is_error: false,
            duration_ms: None,
            cost_usd: None,
            usage: None,
            num_turns: None,
            terminal_reason: None,
        }))
        .await
        .unwrap();
        // Returned: everything is stored, with no waiting.
        let store = sink.log.store().clone();
        assert_eq!(store.head().await.unwrap().last_seq, 2001);
        let after = dir.stats();
        assert_eq!(after.events_written - before.events_written, 2001);
        // One transaction per event would be 2,001.
        assert!(
            after.transactions - before.transactions < 500,
            "{before:?} -> {after:?}"
        );
        let mut seen = Vec::new();
        let mut after_seq = 0;
        loop {
            let page = store.read_after(after_seq, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after_seq = last.seq;
            seen.extend(page.into_iter().map(|e| e.event().unwrap()));
        }
        for (i, e) in seen.iter().take(2000).enumerate() {
            assert_eq!(*e, delta(i as u64), "event {i} out of order");
        }
        assert!(matches!(seen[2000], Event::Result(_)));
    }

    /// An event other than a delta returns only once it is durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tool_result_is_durable_when_emit_returns() {
        let (sink, _dir, _tmp) = sink().await;
        for k in 0..50u64 {
            sink.emit(Event::ToolResult(ToolResult {
                tool_use_id: format!("toolu_{k}"),
                content: serde_json::Value::String("ok".into()),
                is_error: false,
            }))
            .await
            .unwrap();
            assert_eq!(sink.log.store().head().await.unwrap().last_seq, k + 1);
        }
    }
}
