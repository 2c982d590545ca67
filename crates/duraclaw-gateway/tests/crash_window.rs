#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! A gateway killed between taking a turn-starting command and its turn's
//! first event, reproduced deterministically: the executor is the scripted
//! one, but its events are held back (as if the process died before it
//! wrote them), and the kill is the loss of the whole runtime that held the
//! gateway, its executors and its in-memory state. The SQLite outbox on disk
//! is all that survives, as after a SIGKILL. A new gateway over it must end
//! the turn that never began, accept the resent command as applied, and run
//! the next message: no session is left waiting for a turn that will never
//! come. Cases: a message to an idle executor, an execute, and a message
//! the executor queued behind a running turn (killed after that turn's end).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::executor::{
    DynEventSink, DynExecutor, EventSink, Executor, ExecutorSession, StartSpec,
};
use duraclaw_core::protocol::{Command, CommandEnvelope, Event, UserTurn};
use duraclaw_core::store::StoredEvent;
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;

mod support;
use support::{execute, init_repo};

const DEADLINE: Duration = Duration::from_secs(10);
/// How long a turn that should end is given before the test says it never did.
const TURN_DEADLINE: Duration = Duration::from_secs(3);

/// The scripted executor, whose sinks swallow every event while `hold` is
/// set: the executor has the turn, and nothing of it reaches the log.
/// With `hold_after_result`, the hold starts right after the next `result`.
#[derive(Debug)]
struct Holding {
    inner: ScriptedExecutor,
    hold: Arc<AtomicBool>,
    hold_after_result: Arc<AtomicBool>,
}

#[derive(Debug)]
struct HoldingSink {
    inner: DynEventSink,
    hold: Arc<AtomicBool>,
    hold_after_result: Arc<AtomicBool>,
}

#[async_trait]
impl EventSink for HoldingSink {
    async fn emit(&self, event: Event) -> Result<()> {
        if self.hold.load(Ordering::Acquire) {
            // The process "dies" before this write: it never happens.
            std::future::pending::<()>().await;
        }
        let ends = matches!(event, Event::Result(_));
        self.inner.emit(event).await?;
        if ends && self.hold_after_result.load(Ordering::Acquire) {
            self.hold.store(true, Ordering::Release);
        }
        Ok(())
    }
}

#[async_trait]
impl Executor for Holding {
    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        let sink = Arc::new(HoldingSink {
            inner: sink,
            hold: self.hold.clone(),
            hold_after_result: self.hold_after_result.clone(),
        });
        self.inner.start(spec, gate, sink).await
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    glob: String,
    worktree: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    init_repo(&root.join("projects/app"));
    Setup {
        db: root.join("gateway.db"),
        glob: format!("{}/projects/*", root.display()),
        worktree: root.join("projects/app").display().to_string(),
        _dir: dir,
    }
}

fn script() -> Script {
    Script {
        turns: vec![vec![Step::Text {
            text: "Hello there.".into(),
            chunks: 2,
            delay_ms: 0,
        }]],
    }
}

async fn gateway(s: &Setup, executor: DynExecutor) -> Gateway {
    let directory = Arc::new(SqliteDirectory::open(&s.db).await.unwrap());
    Gateway::new(GatewayOptions {
        directory,
        executor,
        worktrees: WorktreeIndex::new(vec![s.glob.clone()]).unwrap(),
        approval_timeout: None,
    })
    .await
    .unwrap()
}

async fn apply(gw: &Gateway, id: &str, command: Command) {
    let r = gw
        .apply(CommandEnvelope {
            id: id.into(),
            session_id: "s1".into(),
            command,
        })
        .await;
    assert!(r.ok, "{id}: {:?}", r.error);
}

fn message(text: &str) -> Command {
    Command::Message(UserTurn { text: text.into() })
}

async fn log(gw: &Gateway) -> Vec<StoredEvent> {
    let s = gw.session("s1").await.unwrap();
    s.log().store().read_after(0, 10_000).await.unwrap()
}

/// Waits until the log holds more than `after` events and its last is a
/// turn's end (`result` or `error`); the log then, or `None` at the deadline.
async fn turn_ended(gw: &Gateway, after: usize, within: Duration) -> Option<Vec<StoredEvent>> {
    let until = Instant::now() + within;
    loop {
        let events = log(gw).await;
        if events.len() > after
            && let Some(last) = events.last()
            && matches!(last.event().unwrap(), Event::Result(_) | Event::Error(_))
        {
            return Some(events);
        }
        if Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds(events: &[StoredEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.json).unwrap();
            v["type"].as_str().unwrap_or("?").to_owned()
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The recovery half: a new gateway over the outbox the killed one left.
fn after_the_kill(s: &Setup, resend: &str, resent: Command, before: usize) {
    runtime().block_on(async {
        let gw = gateway(s, Arc::new(ScriptedExecutor::new(script()))).await;
        // The orchestrator resends what was not confirmed, under the same id.
        apply(&gw, resend, resent).await;
        let Some(events) = turn_ended(&gw, before, TURN_DEADLINE).await else {
            panic!(
                "the command taken before the kill never got its turn ended: log {:?}",
                kinds(&log(&gw).await)
            );
        };
        let ended = events[before..]
            .iter()
            .filter(|e| matches!(e.event().unwrap(), Event::Result(_) | Event::Error(_)))
            .count();
        assert_eq!(ended, 1, "one end for the one turn: {:?}", kinds(&events));
        if let Event::Error(e) = events.last().unwrap().event().unwrap() {
            assert_eq!(e.code.as_deref(), Some("gateway_restarted"), "{e:?}");
        }
        // Not stuck: the next message runs to its result.
        let n = events.len();
        apply(&gw, "c-next", message("and now?")).await;
        let events = turn_ended(&gw, n, DEADLINE)
            .await
            .expect("the next message's turn");
        assert!(
            matches!(events.last().unwrap().event().unwrap(), Event::Result(_)),
            "{:?}",
            kinds(&events)
        );
        // A second resend is still a duplicate: nothing more is logged.
        let n = events.len();
        apply(&gw, resend, message("ignored")).await;
        assert_eq!(log(&gw).await.len(), n);
    });
}

#[test]
fn a_message_taken_just_before_a_kill_has_its_turn_ended_after_the_restart() {
    let s = setup();
    let hold = Arc::new(AtomicBool::new(false));
    let killed = runtime();
    let before = killed.block_on(async {
        let gw = gateway(
            &s,
            Arc::new(Holding {
                inner: ScriptedExecutor::new(script()),
                hold: hold.clone(),
                hold_after_result: Arc::default(),
            }),
        )
        .await;
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        let events = turn_ended(&gw, 0, DEADLINE).await.expect("the first turn");
        // The executor takes the next message, and dies before it says a word.
        hold.store(true, Ordering::Release);
        apply(&gw, "c2", message("go on")).await;
        assert_eq!(log(&gw).await.len(), events.len(), "the window is open");
        events.len()
    });
    // SIGKILL: every task, executor and in-memory state of that gateway is gone.
    killed.shutdown_background();
    after_the_kill(&s, "c2", message("go on"), before);
}

#[test]
fn an_execute_taken_just_before_a_kill_has_its_turn_ended_after_the_restart() {
    let s = setup();
    let killed = runtime();
    killed.block_on(async {
        let gw = gateway(
            &s,
            Arc::new(Holding {
                inner: ScriptedExecutor::new(script()),
                hold: Arc::new(AtomicBool::new(true)),
                hold_after_result: Arc::default(),
            }),
        )
        .await;
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        assert!(log(&gw).await.is_empty(), "the window is open");
    });
    killed.shutdown_background();
    after_the_kill(&s, "c1", execute(s.worktree.clone(), "hi"), 0);
}

#[test]
fn a_message_queued_behind_a_running_turn_keeps_its_mark_until_its_own_turn() {
    let s = setup();
    let slow = Script {
        turns: vec![vec![Step::Text {
            text: "a turn that takes a while to stream".into(),
            chunks: 10,
            delay_ms: 30,
        }]],
    };
    let hold_after_result = Arc::new(AtomicBool::new(false));
    let killed = runtime();
    let before = killed.block_on(async {
        let gw = gateway(
            &s,
            Arc::new(Holding {
                inner: ScriptedExecutor::new(slow),
                hold: Arc::default(),
                hold_after_result: hold_after_result.clone(),
            }),
        )
        .await;
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        // Mid-turn: the executor queues the next message behind this turn.
        let until = Instant::now() + DEADLINE;
        while !log(&gw)
            .await
            .iter()
            .any(|e| matches!(e.event().unwrap(), Event::Assistant(_)))
        {
            assert!(Instant::now() < until, "the first turn never streamed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        hold_after_result.store(true, Ordering::Release);
        apply(&gw, "c2", message("and then")).await;
        // The first turn ends; the queued one never logs a word.
        let events = turn_ended(&gw, 0, DEADLINE).await.expect("the first turn");
        assert!(
            matches!(events.last().unwrap().event().unwrap(), Event::Result(_)),
            "{:?}",
            kinds(&events)
        );
        events.len()
    });
    killed.shutdown_background();
    after_the_kill(&s, "c2", message("and then"), before);
}
