#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! `LocalSession` beyond the happy path: an interrupt, a close, and an
//! executor that runs a tool nobody allowed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use custom_executor::ShellExecutor;
use duraclaw_core::Result;
use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::backend::actor::Subscription;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::executor::{DynEventSink, Executor, ExecutorSession, StartSpec};
use duraclaw_core::local::LocalSession;
use duraclaw_core::protocol::{
    ERROR_UNAPPROVED_TOOL, Event, Execute, SessionInit, ToolResult, ToolUse,
};
use duraclaw_core::state::{PauseReason, SessionState};
use duraclaw_core::store::{DynSessionStore, SessionDirectory, SessionMeta};
use duraclaw_store::MemoryDirectory;
use serde_json::json;

async fn store() -> DynSessionStore {
    let dir = MemoryDirectory::new();
    dir.create(SessionMeta::new("s1", "alice", SystemClock.now_ms()))
        .await
        .unwrap()
}

/// The next event satisfying `stop`, within 20 s.
async fn until(sub: &mut Subscription, stop: impl Fn(&Event) -> bool) -> Event {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("no event in time")
            .expect("the log closed")
            .unwrap();
        let event = next.event().unwrap();
        if stop(&event) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_ends_the_turn_and_close_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent.sh");
    std::fs::write(&agent, "printf 'say Working on it.\\n'\nsleep 600\n").unwrap();
    let shell = Arc::new(ShellExecutor::new(agent, dir.path().join("state")));
    let first = Execute::new(dir.path().display().to_string(), "Work");
    let session = LocalSession::start(shell, store().await, "alice", first)
        .await
        .unwrap();
    let mut sub = session.subscribe(0);
    until(&mut sub, |e| matches!(e, Event::Assistant(_))).await;
    assert_eq!(
        session.snapshot().await.unwrap().state,
        SessionState::Active
    );
    session.interrupt().await.unwrap();
    let Event::Result(r) = until(&mut sub, |e| matches!(e, Event::Result(_))).await else {
        unreachable!()
    };
    assert!(r.is_error, "{r:?}");
    until(&mut sub, |e| matches!(e, Event::SessionState(_))).await;
    let idle = SessionState::paused(PauseReason::Idle);
    assert_eq!(session.snapshot().await.unwrap().state, idle);
    session.close().await.unwrap();
    assert_eq!(
        session.snapshot().await.unwrap().state,
        SessionState::Terminated
    );
    assert!(
        session.send("More?").await.is_err(),
        "an ended session takes no message"
    );
}

/// Runs a tool without asking anyone.
#[derive(Debug)]
struct Rogue;

#[derive(Debug)]
struct Gone;

#[async_trait]
impl ExecutorSession for Gone {
    async fn send_message(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn interrupt(&self) -> Result<()> {
        Ok(())
    }
    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }
    fn is_running(&self) -> bool {
        false
    }
}

#[async_trait]
impl Executor for Rogue {
    async fn start(
        &self,
        _: StartSpec,
        _: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        sink.emit(Event::SessionInit(SessionInit::default()))
            .await?;
        let call = ToolUse {
            tool_use_id: "toolu_1".into(),
            name: "Bash".into(),
            input: json!({"command": "rm -rf build"}),
            message_id: None,
        };
        sink.emit(Event::ToolUse(call)).await?;
        let ran = ToolResult {
            tool_use_id: "toolu_1".into(),
            content: json!("removed"),
            is_error: false,
        };
        sink.emit(Event::ToolResult(ran)).await?;
        Ok(Box::new(Gone))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_run_without_approval_ends_the_session() {
    let first = Execute::new("/nowhere", "Clean up");
    let session = LocalSession::start(Arc::new(Rogue), store().await, "alice", first)
        .await
        .unwrap();
    let mut sub = session.subscribe(0);
    let Event::Error(e) = until(&mut sub, |e| matches!(e, Event::Error(_))).await else {
        unreachable!()
    };
    assert_eq!(e.code.as_deref(), Some(ERROR_UNAPPROVED_TOOL));
    assert!(
        e.message
            .starts_with("a tool ran without approval: Bash (toolu_1)"),
        "{e:?}"
    );
    assert_eq!(
        session.snapshot().await.unwrap().state,
        SessionState::Terminated
    );
    assert!(session.send("Go on").await.is_err());
}

/// Cannot run sessions here.
#[derive(Debug)]
struct TooOld;

#[async_trait]
impl Executor for TooOld {
    async fn check(&self) -> Result<()> {
        Err(duraclaw_core::Error::ExecutorUnsupported(
            "agent 0.1 is older than the minimum 0.2".into(),
        ))
    }

    async fn start(
        &self,
        _: StartSpec,
        _: DynApprovalGate,
        _: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        panic!("started although its check failed")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_cannot_start_ends_the_turn_with_its_reason() {
    let store = store().await;
    let first = Execute::new("/nowhere", "Hello");
    let refused = LocalSession::start(Arc::new(TooOld), store.clone(), "alice", first).await;
    let Err(duraclaw_core::Error::ExecutorUnsupported(why)) = refused else {
        panic!("started: {refused:?}");
    };
    assert!(why.contains("older than the minimum"));
    let logged = store.read_after(0, 100).await.unwrap();
    let last_error = logged
        .iter()
        .filter_map(|e| match e.event().unwrap() {
            Event::Error(e) => Some(e),
            _ => None,
        })
        .next_back()
        .expect("an error was logged");
    assert_eq!(last_error.code.as_deref(), Some("executor_unsupported"));
    assert!(
        last_error.message.contains("older than the minimum"),
        "{last_error:?}"
    );
    assert_eq!(
        store.meta().await.unwrap().state,
        SessionState::paused(PauseReason::Idle)
    );
}
