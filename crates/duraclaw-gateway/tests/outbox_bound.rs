#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The gateway's outbox bound over a real WebSocket link on 127.0.0.1, with
//! the scripted executor and a real SQLite outbox: while the orchestrator
//! has not acknowledged more events than the bound, a new turn is refused
//! with `outbox_full` and nothing is recorded; once it acks, the same
//! command (same id) runs. No event is dropped at any point.

use std::sync::Arc;
use std::time::Duration;

use duraclaw_core::protocol::{Command, CommandResult, Event, FromGateway, ToGateway, UserTurn};
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;

mod support;
use support::{Ws, command, events_until, execute, init_repo, open, recv, send};

const SECRET: &str = "test-secret-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(20);

/// The result of command `id`, and the events that came before it.
async fn result_of(ws: &mut Ws, id: &str) -> (CommandResult, Vec<(u64, Event)>) {
    let mut events = Vec::new();
    loop {
        match recv(ws, DEADLINE).await {
            FromGateway::CommandResult(r) if r.id == id => return (r, events),
            FromGateway::Event { gseq, event, .. } => events.push((gseq, event)),
            _ => {}
        }
    }
}

#[tokio::test]
async fn new_turns_wait_for_acks_past_the_bound_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    init_repo(&root.join("projects/app"));
    let directory = Arc::new(SqliteDirectory::open(&root.join("gw.db")).await.unwrap());
    let script = Script {
        turns: vec![vec![Step::Text {
            text: "one two three four".into(),
            chunks: 4,
            delay_ms: 0,
        }]],
    };
    let gateway = Gateway::new(GatewayOptions {
        directory,
        executor: Arc::new(ScriptedExecutor::new(script)),
        worktrees: WorktreeIndex::new(vec![format!("{}/projects/*", root.display())]).unwrap(),
        approval_timeout: None,
    })
    .await
    .unwrap();
    gateway.set_max_unacked(3);
    let (addr, task) = support::serve_link(&gateway, SECRET).await;

    let mut ws = open(addr, SECRET, DEADLINE).await;
    let worktree = root.join("projects/app").display().to_string();
    send(&mut ws, &command("c1", "s1", execute(worktree, "hi"))).await;
    assert!(result_of(&mut ws, "c1").await.0.ok);
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq: 0,
        },
    )
    .await;
    // The first turn: more events than the bound, none acknowledged.
    let first = events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    assert!(first.len() > 3, "{}", first.len());
    let head = first.last().unwrap().0;

    let turn = || {
        Command::Message(UserTurn {
            text: "go on".into(),
        })
    };
    send(&mut ws, &command("c2", "s1", turn())).await;
    let (refused, none) = result_of(&mut ws, "c2").await;
    assert!(!refused.ok && none.is_empty());
    let error = refused.error.unwrap();
    assert_eq!(error.code, "outbox_full", "{error:?}");
    assert!(error.message.contains("not acknowledged"), "{error:?}");
    let session = gateway.session("s1").await.unwrap();
    assert_eq!(
        session.log().store().head().await.unwrap().last_seq,
        head,
        "a refused turn adds nothing"
    );

    // Acknowledged: the same command id now runs (it was not recorded).
    send(
        &mut ws,
        &ToGateway::Ack {
            session_id: "s1".into(),
            gseq: head,
        },
    )
    .await;
    send(&mut ws, &command("c2", "s1", turn())).await;
    let (accepted, mut second) = result_of(&mut ws, "c2").await;
    assert!(accepted.ok, "{accepted:?}");
    if !second.iter().any(|(_, e)| matches!(e, Event::Result(_))) {
        second.extend(events_until(&mut ws, DEADLINE, |e| matches!(e, Event::Result(_))).await);
    }
    // Every event, once, in gseq order, from 1 to the end of the second turn.
    let gseqs: Vec<u64> = first.iter().chain(&second).map(|(g, _)| *g).collect();
    let want: Vec<u64> = (1..=*gseqs.last().unwrap()).collect();
    assert_eq!(gseqs, want);
    task.abort();
}
