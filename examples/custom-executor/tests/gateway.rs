#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The shell-script agent plugged into the gateway, driven as a client
//! drives it: over the authenticated WebSocket, an `execute`, the question
//! its `run` line asks, an answer, the result. The allowed command really
//! runs in the worktree; the denied one does not.

use std::sync::Arc;
use std::time::Duration;

use custom_executor::ShellExecutor;
use duraclaw_core::protocol::{
    Answer, Command, CommandEnvelope, DecidedBy, Decision, Event, Execute, FromGateway, Hello,
    Role, ToGateway, decode_frame, encode_frame,
};
use duraclaw_gateway::link::{Secret, serve};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;
use duraclaw_testkit::local::init_repo;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "custom-executor-test-secret-0123";
const DEADLINE: Duration = Duration::from_secs(30);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The agent: creates one file with approval, asks to create another.
const AGENT: &str = r#"
printf 'say I will create two files.\n'
printf 'run touch allowed.txt\n'
read first
printf 'run touch denied.txt\n'
read second
printf 'say first: %s, second: %s\n' "$first" "$second"
"#;

async fn send(ws: &mut Ws, frame: &ToGateway) {
    let text = encode_frame(frame).unwrap();
    ws.send(Message::text(text)).await.unwrap();
}

async fn recv(ws: &mut Ws) -> FromGateway {
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("no frame within the deadline")
            .expect("link closed")
            .expect("link error");
        if let Message::Text(t) = msg {
            return decode_frame(t.as_str(), "test frame").unwrap();
        }
    }
}

fn command(id: &str, command: Command) -> ToGateway {
    ToGateway::Command(CommandEnvelope {
        id: id.into(),
        session_id: "s1".into(),
        command,
    })
}

fn answer(question_id: &str, decision: Decision) -> Command {
    Command::Answer(Answer {
        question_id: question_id.into(),
        decision,
        by: Some(DecidedBy::new("alice")),
        allow_worktree_rule: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_agent_runs_through_the_gateway_under_approval() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let app = root.join("projects/app");
    init_repo(&app, &[("README.md", "hello\n")]);
    let agent = root.join("agent.sh");
    std::fs::write(&agent, AGENT).unwrap();
    let gateway = Gateway::new(GatewayOptions {
        directory: Arc::new(
            SqliteDirectory::open(&root.join("gateway.db"))
                .await
                .unwrap(),
        ),
        executor: Arc::new(ShellExecutor::new(agent, root.join("state"))),
        worktrees: WorktreeIndex::new(vec![format!("{}/projects/*", root.display())]).unwrap(),
        approval_timeout: None,
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve(
        listener,
        gateway.clone(),
        Secret::new(SECRET).unwrap(),
    ));

    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    let bearer = format!("Bearer {SECRET}").parse().unwrap();
    req.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(&mut ws, &ToGateway::Hello(Hello::new(Role::Orchestrator))).await;
    assert!(matches!(recv(&mut ws).await, FromGateway::Hello(_)));
    let execute = Execute::new(app.display().to_string(), "Make two files");
    send(&mut ws, &command("c1", Command::Execute(execute))).await;
    send(
        &mut ws,
        &ToGateway::Attach {
            session_id: "s1".into(),
            after_gseq: 0,
        },
    )
    .await;

    let allow = Decision::Allow {
        updated_input: None,
        remember: false,
    };
    let deny = Decision::Deny {
        reason: "one is enough".into(),
        interrupt: false,
    };
    let (mut decisions, mut events, mut n) = (vec![allow, deny].into_iter(), Vec::new(), 0);
    loop {
        match recv(&mut ws).await {
            FromGateway::Event { event, .. } => {
                if let Event::UserQuestion(q) = &event {
                    n += 1;
                    let decision = decisions.next().expect("two questions only");
                    send(
                        &mut ws,
                        &command(&format!("a{n}"), answer(&q.question_id, decision)),
                    )
                    .await;
                }
                let done = matches!(event, Event::Result(_) | Event::Error(_));
                events.push(event);
                if done {
                    break;
                }
            }
            FromGateway::CommandResult(r) => assert!(r.ok, "{r:?}"),
            _ => {}
        }
    }
    let Some(Event::Result(result)) = events.last() else {
        panic!("the turn ended without a result: {events:?}");
    };
    assert!(!result.is_error, "{result:?}");
    assert!(app.join("allowed.txt").is_file(), "the allowed command ran");
    assert!(
        !app.join("denied.txt").exists(),
        "the denied command did not run"
    );
    let resolved: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::QuestionResolved(r) => Some(r.decision.name()),
            _ => None,
        })
        .collect();
    assert_eq!(resolved, ["allow", "deny"]);
    let said: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Assistant(a) if a.phase == duraclaw_core::protocol::AssistantPhase::Final => {
                Some(a.text.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(said.last(), Some(&"first: ok, second: denied"));
    server.abort();
    gateway.shutdown().await;
}
