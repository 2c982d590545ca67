#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! A gateway killed between taking a turn-starting command and its turn's
//! first event, reproduced deterministically: the executor is the scripted
//! one, but its events are held back (as if the process died before it
//! wrote them), and the kill is the loss of the whole runtime that held the
//! gateway, its executors and its in-memory state. The SQLite outbox on disk
//! is all that survives, as after a SIGKILL. A new gateway over it must run
//! the command it took and never started, by itself, once, announced by a
//! `notice`; take the orchestrator's resend as a duplicate; and run the next
//! message. Cases: a message to an idle executor, an execute, a message the
//! executor queued behind a running turn (killed after that turn's end), two
//! queued messages (run in the order taken), a re-run killed again before it
//! began (run by the next restart, still once), a session closed after the
//! message was taken (not run: its turn ends with an error), a mark left
//! by an earlier version that does not say what the command was (its turn
//! ends with an error), and a re-run whose worktree is gone (its turn ends
//! with an error). Also: a notice an earlier build logged as raw JSON reads
//! back as the typed notice; and a gateway killed right after an agent's
//! `session.init`: after a resume without a prompt (no turn, so nothing to
//! end) and after a resume with one (its turn ends with an error).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::executor::{
    DynEventSink, DynExecutor, EventSink, Executor, ExecutorSession, StartSpec,
};
use duraclaw_core::protocol::Close;
use duraclaw_core::protocol::{Command, CommandEnvelope, Event, Resume, UserTurn};
use duraclaw_core::store::{AppendBatch, RecordedCommand, SessionDirectory, StoredEvent};
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions, RERUN_NOTICE, TURN_PENDING};
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

/// Whether the log holds only the session's first event, the worktree
/// notice: no turn has begun.
fn only_the_worktree_notice(events: &[StoredEvent]) -> bool {
    matches!(events, [e] if matches!(e.event().unwrap(), Event::Notice(n) if n.worktree.is_some()))
}

/// Whether an event ends a turn.
fn is_end(e: &StoredEvent) -> bool {
    matches!(e.event().unwrap(), Event::Result(_) | Event::Error(_))
}

/// Waits until the log holds more than `after` events and its last is a
/// turn's end (`result` or `error`); the log then, or `None` at the deadline.
async fn turn_ended(gw: &Gateway, after: usize, within: Duration) -> Option<Vec<StoredEvent>> {
    turns_ended(gw, after, 1, within).await
}

/// Waits until the log after its first `after` events holds `n` turn ends
/// and ends with one; the log then, or `None` at the deadline.
async fn turns_ended(
    gw: &Gateway,
    after: usize,
    n: usize,
    within: Duration,
) -> Option<Vec<StoredEvent>> {
    let until = Instant::now() + within;
    loop {
        let events = log(gw).await;
        if events.len() > after
            && events[after..].iter().filter(|e| is_end(e)).count() >= n
            && events.last().is_some_and(is_end)
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

/// The re-run notices among `events`: typed, each about a command.
fn notices(events: &[StoredEvent]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e.event().unwrap(),
                Event::Notice(n) if n.code == RERUN_NOTICE && n.command_id.is_some()
            )
        })
        .count()
}

/// Where in `events` the assistant said something containing `text`.
fn said(events: &[StoredEvent], text: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| matches!(e.event().unwrap(), Event::Assistant(a) if a.text.contains(text)))
}

/// `tail` is one event: the `error` a restart ends a turn with.
fn assert_one_restart_error(tail: &[StoredEvent]) {
    assert_eq!(tail.len(), 1, "{:?}", kinds(tail));
    assert!(
        matches!(tail[0].event().unwrap(), Event::Error(ref e) if e.code.as_deref() == Some("gateway_restarted")),
        "{:?}",
        kinds(tail)
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn holding(hold: bool) -> Arc<Holding> {
    Arc::new(Holding {
        inner: ScriptedExecutor::new(script()),
        hold: Arc::new(AtomicBool::new(hold)),
        hold_after_result: Arc::default(),
    })
}

/// The recovery half: a new gateway over the outbox the killed one left.
/// With nothing resent, the command taken before the kill must run, once,
/// its turn streaming `text`; the orchestrator's resend of it afterwards is
/// a duplicate; the next message runs. Returns the gateway's log.
fn after_the_kill(s: &Setup, resend: &str, resent: Command, before: usize, text: &str) {
    runtime().block_on(async {
        let gw = gateway(s, Arc::new(ScriptedExecutor::new(script()))).await;
        let Some(events) = turn_ended(&gw, before, TURN_DEADLINE).await else {
            panic!(
                "the command taken before the kill was not run after the restart: log {:?}",
                kinds(&log(&gw).await)
            );
        };
        let tail = &events[before..];
        assert_eq!(
            notices(tail),
            1,
            "one notice of the re-run: {:?}",
            kinds(tail)
        );
        assert_eq!(
            tail.iter().filter(|e| is_end(e)).count(),
            1,
            "one end for the one turn: {:?}",
            kinds(tail)
        );
        assert!(
            matches!(tail.last().unwrap().event().unwrap(), Event::Result(_)),
            "the turn ran to its result: {:?}",
            kinds(tail)
        );
        assert!(
            said(tail, text).is_some(),
            "the turn was the one taken: {:?}",
            kinds(tail)
        );
        let s1 = gw.session("s1").await.unwrap();
        assert!(
            s1.log().store().unforwarded().await.unwrap().is_empty(),
            "no mark is left"
        );
        // The orchestrator resends what was not confirmed, under the same
        // id: a duplicate of a turn that ran, so nothing more is logged.
        let n = events.len();
        apply(&gw, resend, resent).await;
        assert_eq!(log(&gw).await.len(), n, "the resend ran nothing");
        // Not stuck: the next message runs to its result.
        apply(&gw, "c-next", message("and now?")).await;
        let events = turn_ended(&gw, n, DEADLINE)
            .await
            .expect("the next message's turn");
        assert!(
            matches!(events.last().unwrap().event().unwrap(), Event::Result(_)),
            "{:?}",
            kinds(&events)
        );
        assert_eq!(notices(&events), 1, "{:?}", kinds(&events));
    });
}

/// Runs `c1` (an execute) to its result, then holds every event and takes
/// the messages `taken`; returns the log's length before them.
fn take_and_kill(s: &Setup, taken: &[(&str, &str)]) -> usize {
    let hold = Arc::new(AtomicBool::new(false));
    let killed = runtime();
    let before = killed.block_on(async {
        let gw = gateway(
            s,
            Arc::new(Holding {
                inner: ScriptedExecutor::new(script()),
                hold: hold.clone(),
                hold_after_result: Arc::default(),
            }),
        )
        .await;
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        let events = turn_ended(&gw, 0, DEADLINE).await.expect("the first turn");
        // The executor takes the next messages, and dies before it says a word.
        hold.store(true, Ordering::Release);
        for (id, text) in taken {
            apply(&gw, id, message(text)).await;
        }
        assert_eq!(log(&gw).await.len(), events.len(), "the window is open");
        events.len()
    });
    // SIGKILL: every task, executor and in-memory state of that gateway is gone.
    killed.shutdown_background();
    before
}

#[test]
fn a_message_taken_just_before_a_kill_is_run_after_the_restart() {
    let s = setup();
    let before = take_and_kill(&s, &[("c2", "go on")]);
    after_the_kill(&s, "c2", message("go on"), before, "go on");
}

#[test]
fn an_execute_taken_just_before_a_kill_is_run_after_the_restart() {
    let s = setup();
    let killed = runtime();
    killed.block_on(async {
        let gw = gateway(&s, holding(true)).await;
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        assert!(
            only_the_worktree_notice(&log(&gw).await),
            "the window is open"
        );
    });
    killed.shutdown_background();
    after_the_kill(
        &s,
        "c1",
        execute(s.worktree.clone(), "hi"),
        0,
        "Hello there.",
    );
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
    after_the_kill(&s, "c2", message("and then"), before, "and then");
}

#[test]
fn messages_taken_before_a_kill_run_in_the_order_taken_and_before_new_ones() {
    let s = setup();
    let before = take_and_kill(&s, &[("c2", "first of two"), ("c3", "second of two")]);
    runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        // A message sent after the restart queues behind the re-runs.
        apply(&gw, "c4", message("after the restart")).await;
        let Some(events) = turns_ended(&gw, before, 3, TURN_DEADLINE).await else {
            panic!("three turns: log {:?}", kinds(&log(&gw).await));
        };
        let tail = &events[before..];
        assert_eq!(notices(tail), 2, "{:?}", kinds(tail));
        assert_eq!(
            tail.iter().filter(|e| is_end(e)).count(),
            3,
            "{:?}",
            kinds(tail)
        );
        assert!(
            tail.iter()
                .filter(|e| is_end(e))
                .all(|e| matches!(e.event().unwrap(), Event::Result(_))),
            "{:?}",
            kinds(tail)
        );
        let first = said(tail, "first of two").expect("the first re-run");
        let second = said(tail, "second of two").expect("the second re-run");
        let third = said(tail, "after the restart").expect("the new message");
        assert!(first < second && second < third, "{first} {second} {third}");
        // Both resends are duplicates.
        let n = events.len();
        apply(&gw, "c2", message("first of two")).await;
        apply(&gw, "c3", message("second of two")).await;
        assert_eq!(log(&gw).await.len(), n);
    });
}

#[test]
fn a_re_run_killed_before_it_began_is_run_by_the_next_restart_once() {
    let s = setup();
    let before = take_and_kill(&s, &[("c2", "go on")]);
    // The first restart re-runs it, and is killed before the turn says a word.
    let killed = runtime();
    killed.block_on(async {
        let gw = gateway(&s, holding(true)).await;
        let events = log(&gw).await;
        assert_eq!(notices(&events[before..]), 1, "{:?}", kinds(&events));
        assert_eq!(
            events.len(),
            before + 1,
            "only the notice: {:?}",
            kinds(&events)
        );
    });
    killed.shutdown_background();
    // The second restart runs it (one more notice), once.
    let n = runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        let Some(events) = turn_ended(&gw, before, TURN_DEADLINE).await else {
            panic!("never run: log {:?}", kinds(&log(&gw).await));
        };
        let tail = &events[before..];
        assert_eq!(notices(tail), 2, "{:?}", kinds(tail));
        assert_eq!(
            tail.iter().filter(|e| is_end(e)).count(),
            1,
            "{:?}",
            kinds(tail)
        );
        assert!(said(tail, "go on").is_some(), "{:?}", kinds(tail));
        let n = events.len();
        apply(&gw, "c2", message("go on")).await;
        assert_eq!(log(&gw).await.len(), n);
        gw.shutdown().await;
        n
    });
    // A third start finds nothing to do.
    runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        assert_eq!(log(&gw).await.len(), n, "nothing is run again");
    });
}

#[test]
fn a_message_taken_before_its_session_was_closed_is_not_run_after_a_restart() {
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
        hold.store(true, Ordering::Release);
        apply(&gw, "c2", message("go on")).await;
        // The close stops an executor that cannot finish its turn (its
        // events are held): it is killed while the close waits for it.
        let closing = gw.clone();
        tokio::spawn(async move {
            apply(&closing, "c3", Command::Close(Close::default())).await;
        });
        let s1 = gw.session("s1").await.unwrap();
        let until = Instant::now() + DEADLINE;
        while s1.log().store().meta().await.unwrap().state
            != duraclaw_core::state::SessionState::Terminated
        {
            assert!(Instant::now() < until, "the close never took");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        events.len()
    });
    killed.shutdown_background();
    runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        let events = log(&gw).await;
        let tail = &events[before..];
        assert_eq!(notices(tail), 0, "{:?}", kinds(tail));
        assert_eq!(tail.len(), 1, "one error ends the turn: {:?}", kinds(tail));
        match tail[0].event().unwrap() {
            Event::Error(e) => {
                assert_eq!(e.code.as_deref(), Some("gateway_restarted"));
                assert!(e.message.contains("closed"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
        let s1 = gw.session("s1").await.unwrap();
        assert!(s1.log().store().unforwarded().await.unwrap().is_empty());
        // A closed session takes no new turn.
        let r = gw
            .apply(CommandEnvelope {
                id: "c4".into(),
                session_id: "s1".into(),
                command: message("still there?"),
            })
            .await;
        assert!(!r.ok);
        assert_eq!(r.error.unwrap().code, "session_closed");
        assert_eq!(log(&gw).await.len(), events.len());
        assert!(s1.log().store().unforwarded().await.unwrap().is_empty());
    });
}

#[test]
fn an_earlier_versions_bare_mark_ends_its_turn_with_an_error() {
    let s = setup();
    let before = runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        let n = turn_ended(&gw, 0, DEADLINE)
            .await
            .expect("the first turn")
            .len();
        gw.shutdown().await;
        n
    });
    // What an earlier version left: a taken command with a bare mark.
    runtime().block_on(async {
        let dir = SqliteDirectory::open(&s.db).await.unwrap();
        let store = dir.open("s1").await.unwrap();
        store
            .append(AppendBatch {
                events: vec![],
                command: Some(RecordedCommand {
                    id: "old".into(),
                    forward: Some(TURN_PENDING.into()),
                    at_ms: 1,
                }),
            })
            .await
            .unwrap();
    });
    runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        let events = log(&gw).await;
        let tail = &events[before..];
        assert_one_restart_error(tail);
        let s1 = gw.session("s1").await.unwrap();
        assert!(s1.log().store().unforwarded().await.unwrap().is_empty());
        apply(&gw, "old", message("ignored")).await;
        assert_eq!(log(&gw).await.len(), events.len());
        apply(&gw, "c-next", message("and now?")).await;
        let events = turn_ended(&gw, events.len(), DEADLINE)
            .await
            .expect("the next message's turn");
        assert!(matches!(
            events.last().unwrap().event().unwrap(),
            Event::Result(_)
        ));
    });
}

#[test]
fn a_re_run_that_cannot_start_ends_its_turn_with_an_error() {
    let s = setup();
    let killed = runtime();
    killed.block_on(async {
        let gw = gateway(&s, holding(true)).await;
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        assert!(
            only_the_worktree_notice(&log(&gw).await),
            "the window is open"
        );
    });
    killed.shutdown_background();
    // The worktree is gone by the time the gateway is back.
    std::fs::remove_dir_all(&s.worktree).unwrap();
    runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        let events = log(&gw).await;
        // The worktree notice, the re-run's notice, and its end.
        assert_eq!(
            kinds(&events),
            ["notice", "notice", "error"],
            "{:?}",
            kinds(&events)
        );
        match events[2].event().unwrap() {
            Event::Error(e) => {
                assert_eq!(e.code.as_deref(), Some("gateway_restarted"));
                assert!(
                    e.message.contains("could not run it again"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
        let s1 = gw.session("s1").await.unwrap();
        assert!(s1.log().store().unforwarded().await.unwrap().is_empty());
        // The resend is a duplicate of a turn that ended.
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        assert_eq!(log(&gw).await.len(), 3);
    });
}

/// An earlier build logged the notice as raw JSON (core had no typed
/// variant). Such a log, read by this build, gives the typed notice, and
/// its stored bytes are what a replay sends: nothing to migrate.
#[test]
fn a_notice_an_earlier_build_logged_reads_back_as_the_typed_notice() {
    use duraclaw_core::protocol::Notice;
    use duraclaw_core::store::{NewEvent, SessionMeta};

    let s = setup();
    let written = runtime().block_on(async {
        let dir = SqliteDirectory::open(&s.db).await.unwrap();
        let store = dir
            .create(SessionMeta::new("s1", "gateway", 1))
            .await
            .unwrap();
        // Exactly what the earlier gateway built.
        let raw = serde_json::json!({
            "type": "notice",
            "code": "rerun_after_restart",
            "message": "the gateway restarted before the agent began this turn; it is run now",
            "command_id": "c1",
        });
        let legacy = NewEvent::new(&Event::Unknown(raw.clone()), None, 1).unwrap();
        let written = legacy.json.clone();
        store
            .append(AppendBatch::events(vec![legacy]))
            .await
            .unwrap();
        written
    });
    runtime().block_on(async {
        let dir = SqliteDirectory::open(&s.db).await.unwrap();
        let store = dir.open("s1").await.unwrap();
        let events = store.read_after(0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        // Stored as the earlier build wrote it (its keys in serde_json's
        // map order), which is what a replay sends.
        assert_eq!(events[0].json, written);
        assert_eq!(
            events[0].event().unwrap(),
            Event::Notice(
                Notice::new(
                    RERUN_NOTICE,
                    "the gateway restarted before the agent began this turn; it is run now"
                )
                .about_command("c1")
            )
        );
        assert_eq!(notices(&events), 1);
        // The typed notice encodes to the same JSON.
        let stored: serde_json::Value = serde_json::from_str(&events[0].json).unwrap();
        let typed: serde_json::Value =
            serde_json::from_str(&events[0].event().unwrap().to_json().unwrap()).unwrap();
        assert_eq!(typed, stored);
    });
}

/// The scripted executor, whose process "dies" right after its
/// `session.init`: every later event is held back forever.
#[derive(Debug)]
struct DiesAfterInit(ScriptedExecutor);

#[derive(Debug)]
struct DiesAfterInitSink {
    inner: DynEventSink,
    started: AtomicBool,
}

#[async_trait]
impl EventSink for DiesAfterInitSink {
    async fn emit(&self, event: Event) -> Result<()> {
        if self.started.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        let init = matches!(event, Event::SessionInit(_));
        self.inner.emit(event).await?;
        if init {
            self.started.store(true, Ordering::Release);
        }
        Ok(())
    }
}

#[async_trait]
impl Executor for DiesAfterInit {
    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        let sink = Arc::new(DiesAfterInitSink {
            inner: sink,
            started: AtomicBool::new(false),
        });
        self.0.start(spec, gate, sink).await
    }
}

/// Runs `c1` to its result and stops that gateway; then, on a new one,
/// resumes the session (with `prompt`, or none: the agent is resumed and
/// waits) with an executor that dies right after its `session.init`, and
/// kills that gateway once the init (and the clearing of the resume's
/// mark, when it left one) is durable. Returns the log's length then.
fn resume_and_kill(s: &Setup, prompt: Option<&str>) -> usize {
    runtime().block_on(async {
        let gw = gateway(s, Arc::new(ScriptedExecutor::new(script()))).await;
        apply(&gw, "c1", execute(s.worktree.clone(), "hi")).await;
        turn_ended(&gw, 0, DEADLINE).await.expect("the first turn");
        gw.shutdown().await;
    });
    let killed = runtime();
    let n = killed.block_on(async {
        let gw = gateway(s, Arc::new(DiesAfterInit(ScriptedExecutor::new(script())))).await;
        let before = log(&gw).await.len();
        let resume = Command::Resume(Resume {
            executor_session_id: "scripted-s1".into(),
            worktree: s.worktree.clone(),
            prompt: prompt.map(Into::into),
            model: None,
            agent: None,
        });
        apply(&gw, "c2", resume).await;
        let store = gw.session("s1").await.unwrap().log().store().clone();
        let until = Instant::now() + DEADLINE;
        loop {
            let events = log(&gw).await;
            let started = events.len() > before
                && matches!(
                    events.last().unwrap().event().unwrap(),
                    Event::SessionInit(_)
                );
            if started && store.unforwarded().await.unwrap().is_empty() {
                break events.len();
            }
            assert!(
                Instant::now() < until,
                "the resumed agent did not start: {:?}",
                kinds(&events)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // SIGKILL, with the log ending in the agent's `session.init`.
    killed.shutdown_background();
    n
}

#[test]
fn an_agent_resumed_without_a_prompt_ran_no_turn_a_restart_could_cut() {
    let s = setup();
    let n = resume_and_kill(&s, None);
    runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        let events = log(&gw).await;
        assert_eq!(
            events.len(),
            n,
            "a restart after a resume with no prompt logged {:?}",
            kinds(&events[n.min(events.len())..])
        );
        // The session goes on: the next message runs to its result.
        apply(&gw, "c-next", message("and now?")).await;
        let events = turn_ended(&gw, n, DEADLINE)
            .await
            .expect("the next message's turn");
        assert!(
            matches!(events.last().unwrap().event().unwrap(), Event::Result(_)),
            "{:?}",
            kinds(&events)
        );
    });
}

#[test]
fn a_turn_cut_right_after_its_session_init_ends_with_an_error() {
    let s = setup();
    let n = resume_and_kill(&s, Some("go on"));
    runtime().block_on(async {
        let gw = gateway(&s, Arc::new(ScriptedExecutor::new(script()))).await;
        let events = log(&gw).await;
        let tail = &events[n..];
        assert_one_restart_error(tail);
        // Its turn began, so it is not run again.
        assert_eq!(notices(tail), 0, "{:?}", kinds(tail));
    });
}
