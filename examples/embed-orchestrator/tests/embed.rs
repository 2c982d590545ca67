#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The embedding app end to end: a real gateway with the scripted executor
//! in this process, the app on loopback, and one session driven through
//! `/claw/api/…` with the app's own bearer tokens.

use std::sync::Arc;
use std::time::Duration;

use duraclaw_gateway::link::Secret;
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_orchestrator::Authenticator;
use embed_orchestrator::{TokenAuth, app, orchestrator};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const DEADLINE: Duration = Duration::from_secs(30);
const SECRET: &str = "a gateway secret for the embedding test";
const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";
const REPLY: &str = "Hello from the scripted executor.";

/// A git repository with one commit, for the gateway's worktree index.
fn repo(path: &std::path::Path) {
    let repo = git2::Repository::init(path).unwrap();
    std::fs::write(path.join("README.md"), "hi\n").unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(std::path::Path::new("README.md")).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .unwrap();
}

/// A gateway with the scripted executor; its WebSocket URL.
async fn gateway(worktrees: &std::path::Path) -> String {
    let script = Script {
        turns: vec![vec![Step::Text {
            text: REPLY.into(),
            chunks: 3,
            delay_ms: 0,
        }]],
    };
    let gateway = Gateway::new(GatewayOptions {
        directory: Arc::new(duraclaw_store::MemoryDirectory::new()),
        executor: Arc::new(ScriptedExecutor::new(script)),
        worktrees: WorktreeIndex::from_env_value(&worktrees.display().to_string()).unwrap(),
        approval_timeout: None,
    })
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(duraclaw_gateway::link::serve(
        listener,
        gateway,
        Secret::new(SECRET).unwrap(),
    ));
    format!("ws://{addr}")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_session_runs_through_the_embedded_router_with_the_apps_own_login() {
    let dir = tempfile::tempdir().unwrap();
    let worktree = dir.path().join("project");
    repo(&worktree);
    let gateway_url = gateway(&worktree).await;

    let (orch, _tasks) = orchestrator(&gateway_url, SECRET);
    let auth = Authenticator::new(TokenAuth::new([
        ("alice".to_owned(), ALICE.to_owned()),
        ("bob".to_owned(), BOB.to_owned()),
    ]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app(auth, orch)).await });
    let c = reqwest::Client::new();

    // The app's own routes, beside the orchestrator's.
    let home = c.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let who = c.get(format!("{base}/whoami")).send().await.unwrap();
    assert_eq!(who.status(), 401);
    let who = c
        .get(format!("{base}/whoami"))
        .header("authorization", bearer(ALICE))
        .send()
        .await
        .unwrap();
    assert_eq!(who.text().await.unwrap(), "alice\n");

    // The orchestrator's API asks the app's login: no token, a wrong one.
    for auth in [None, Some("Bearer not-a-token")] {
        let mut req = c.get(format!("{base}/claw/api/sessions"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }

    // The gateway's worktree, once the link is up.
    let until = Instant::now() + DEADLINE;
    let worktree_path = loop {
        let r = c
            .get(format!("{base}/claw/api/worktrees"))
            .header("authorization", bearer(ALICE))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let wts: Value = r.json().await.unwrap();
            if let Some(p) = wts[0]["path"].as_str() {
                break p.to_owned();
            }
        }
        assert!(Instant::now() < until, "the gateway link never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let created = c
        .post(format!("{base}/claw/api/sessions"))
        .header("authorization", bearer(ALICE))
        .json(&json!({"worktree": worktree_path, "prompt": "say hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let id = created.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Sessions belong to the user the app's login names.
    let list = |token: &'static str| {
        let c = c.clone();
        let url = format!("{base}/claw/api/sessions");
        async move {
            c.get(url)
                .header("authorization", bearer(token))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mine = list(ALICE).await;
    assert!(mine.to_string().contains(&id), "{mine}");
    let theirs = list(BOB).await;
    assert!(!theirs.to_string().contains(&id), "{theirs}");

    // The session's stream, to the turn's end.
    let url = format!(
        "{}/claw/api/sessions/{id}/ws?after=0&compact=0",
        base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", bearer(ALICE).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut events = Vec::new();
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("no frame in time")
            .expect("the stream closed")
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        if frame["type"] != "event" {
            continue;
        }
        let event = frame["event"].clone();
        let done = event["type"] == "result";
        events.push(event);
        if done {
            break;
        }
    }
    let all = Value::Array(events).to_string();
    assert!(all.contains(REPLY), "{all}");
    assert!(all.contains("say hello"), "{all}");
}
