#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The agents a gateway offers, over a real WebSocket link on 127.0.0.1 with
//! a real SQLite outbox: the list (each checked), a session run by the
//! agent it names, an unknown or uninstalled agent refused with
//! `agent_unavailable` and nothing made, and a session going on with its
//! own agent after the gateway restarts.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::executor::{DynEventSink, DynExecutor, Executor, ExecutorSession, StartSpec};
use duraclaw_core::protocol::{
    AgentInfo, AgentKind, Command, CommandResult, Event, FromGateway, GatewayRequest, ToGateway,
    UserTurn,
};
use duraclaw_gateway::acp::AcpAgent;
use duraclaw_gateway::agents::{AgentEntry, Agents, AgentsFile};
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;

mod support;
use support::{Ws, command, events_until, execute, init_repo, open, recv, send};

const SECRET: &str = "test-secret-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(20);

/// An executor whose every turn says `text`.
fn saying(text: &str) -> DynExecutor {
    let turn = vec![Step::Text {
        text: text.into(),
        chunks: 1,
        delay_ms: 0,
    }];
    Arc::new(ScriptedExecutor::new(Script {
        turns: vec![turn.clone(), turn],
    }))
}

/// An executor that counts its starts.
#[derive(Debug)]
struct Counting(DynExecutor, Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Executor for Counting {
    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> duraclaw_core::Result<Box<dyn ExecutorSession>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.start(spec, gate, sink).await
    }
}

/// The built-in agent says "from claude"; `other` says "from other";
/// `ghost` is an ACP agent whose command is not installed. `starts` counts
/// the starts of the built-in agent and of `other`.
fn agents(starts: &[Arc<AtomicUsize>; 2]) -> Agents {
    let file = AgentsFile::parse(
        r#"{"agents":[{"name":"ghost","title":"Ghost","command":"duraclaw-no-such-agent"}]}"#,
    )
    .unwrap();
    let other = AgentEntry {
        agent: AcpAgent {
            name: "other".into(),
            command: "unused".into(),
            args: vec![],
            env_pass: vec![],
            env: Default::default(),
        },
        title: Some("Other".into()),
        supports: Default::default(),
    };
    let claude = Arc::new(Counting(saying("from claude"), starts[0].clone()));
    let other_exec = Arc::new(Counting(saying("from other"), starts[1].clone()));
    Agents::with_file(claude, file).with_executor(other, other_exec)
}

async fn gateway(
    root: &Path,
    starts: &[Arc<AtomicUsize>; 2],
) -> (Gateway, SocketAddr, tokio::task::JoinHandle<()>) {
    let directory = Arc::new(SqliteDirectory::open(&root.join("gw.db")).await.unwrap());
    let gateway = Gateway::with_agents(
        GatewayOptions {
            directory,
            executor: saying("unused"),
            worktrees: WorktreeIndex::new(vec![format!("{}/projects/*", root.display())]).unwrap(),
            approval_timeout: None,
        },
        Arc::new(duraclaw_gateway::approval::TracingAudit),
        agents(starts),
    )
    .await
    .unwrap();
    let (addr, task) = support::serve_link(&gateway, SECRET).await;
    (gateway, addr, task)
}

async fn result_of(ws: &mut Ws, id: &str) -> CommandResult {
    loop {
        if let FromGateway::CommandResult(r) = recv(ws, DEADLINE).await
            && r.id == id
        {
            return r;
        }
    }
}

fn with_agent(mut c: Command, agent: &str) -> Command {
    if let Command::Execute(x) = &mut c {
        x.agent = Some(agent.into());
    }
    c
}

/// The text of the session's turn up to its `result`.
async fn turn_text(ws: &mut Ws, session: &str, after: u64) -> String {
    send(
        ws,
        &ToGateway::Attach {
            session_id: session.into(),
            after_gseq: after,
        },
    )
    .await;
    let events = events_until(ws, DEADLINE, |e| matches!(e, Event::Result(_))).await;
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Assistant(m) => Some(format!("{m:?}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn sessions_run_the_agent_they_name_and_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    for name in ["a", "b", "c", "d"] {
        init_repo(&root.join("projects").join(name));
    }
    let wt = |name: &str| root.join("projects").join(name).display().to_string();
    let starts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let (gw, addr, task) = gateway(&root, &starts).await;
    let mut ws = open(addr, SECRET, DEADLINE).await;

    // The list, each agent checked.
    send(
        &mut ws,
        &ToGateway::Request {
            id: "r1".into(),
            request: GatewayRequest::Agents {},
        },
    )
    .await;
    let list: Vec<AgentInfo> = loop {
        if let FromGateway::Reply { id, value, error } = recv(&mut ws, DEADLINE).await
            && id == "r1"
        {
            assert_eq!(error, None);
            break serde_json::from_value(value.unwrap()).unwrap();
        }
    };
    let names: Vec<(&str, AgentKind, bool)> = list
        .iter()
        .map(|a| (a.name.as_str(), a.kind, a.available))
        .collect();
    assert_eq!(
        names,
        [
            ("claude", AgentKind::Claude, true),
            ("ghost", AgentKind::Acp, false),
            ("other", AgentKind::Acp, true),
        ]
    );
    assert!(
        list[1]
            .error
            .as_deref()
            .unwrap()
            .contains("duraclaw-no-such-agent"),
        "{list:?}"
    );
    assert!(list[0].supports.resume && list[0].supports.cost);

    // No agent named: the built-in one.
    send(&mut ws, &command("c1", "s1", execute(wt("a"), "hi"))).await;
    assert!(result_of(&mut ws, "c1").await.ok);
    assert!(turn_text(&mut ws, "s1", 0).await.contains("from claude"));

    // `other`, recorded in the session's metadata.
    send(
        &mut ws,
        &command("c2", "s2", with_agent(execute(wt("b"), "hi"), "other")),
    )
    .await;
    assert!(result_of(&mut ws, "c2").await.ok);
    let first = turn_text(&mut ws, "s2", 0).await;
    assert!(
        first.contains("from other") && !first.contains("from claude"),
        "{first}"
    );
    let s2 = gw.session("s2").await.unwrap();
    assert_eq!(
        s2.log().store().meta().await.unwrap().agent.as_deref(),
        Some("other")
    );

    // Unknown and uninstalled agents: refused, naming why; nothing made.
    for (session, agent, says) in [
        ("s3", "codex", "no agent named \"codex\""),
        ("s4", "ghost", "duraclaw-no-such-agent"),
    ] {
        send(
            &mut ws,
            &command(session, session, with_agent(execute(wt("c"), "hi"), agent)),
        )
        .await;
        let refused = result_of(&mut ws, session).await;
        assert!(!refused.ok);
        let error = refused.error.unwrap();
        assert_eq!(error.code, "agent_unavailable", "{error:?}");
        assert!(
            error.message.starts_with("agent unavailable: ") && error.message.contains(says),
            "{error:?}"
        );
        assert!(gw.session(session).await.is_err(), "{session} was made");
    }
    let count = |i: usize| starts[i].load(Ordering::SeqCst);
    assert_eq!((count(0), count(1)), (1, 1), "s1 by claude, s2 by other");
    let head = s2.log().store().head().await.unwrap().last_seq;
    drop(ws);
    task.abort();
    let _ = task.await;

    // A restarted gateway goes on with the session's own agent.
    let starts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let (_gw, addr, task) = gateway(&root, &starts).await;
    let mut ws = open(addr, SECRET, DEADLINE).await;
    send(
        &mut ws,
        &command(
            "c5",
            "s2",
            Command::Message(UserTurn {
                text: "go on".into(),
            }),
        ),
    )
    .await;
    assert!(result_of(&mut ws, "c5").await.ok);
    let second = turn_text(&mut ws, "s2", head).await;
    assert!(second.contains("go on"), "{second}");
    let count = |i: usize| starts[i].load(Ordering::SeqCst);
    assert_eq!((count(0), count(1)), (0, 1), "run by `other` again");
    task.abort();
}
