//! The agents a deployment offers, written once and run on each host by
//! the API suite ([`crate::api`]): every host's gateway is started with
//! [`AGENTS`], an ACP agent whose command is not installed beside the
//! built-in one.

use reqwest::Method;
use serde_json::{Value, json};

use crate::contract::User;

/// The agents file every host's gateway reads (`root/agents.json`): one
/// ACP agent, `ghost`, whose command is nowhere.
pub const AGENTS: &str = r#"{"agents":[{"name":"ghost","title":"Ghost agent",
    "command":"duraclaw-no-such-agent","supports":{"resume":true}}]}"#;

async fn call(u: &User, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = u.request(method, path);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET /api/agents` lists the built-in Claude and `ghost`, unavailable
/// with its reason; a start naming an unknown or unavailable agent is
/// refused (400, naming the agent and why), a malformed `agent` too, and
/// none of them leaves a session; a start naming `claude` records it in
/// the session, as `GET /api/sessions/{id}` and the list show.
pub async fn agents_are_listed_chosen_and_recorded(u: &User) {
    let anonymous = reqwest::Client::new()
        .get(format!("{}/api/agents", u.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let (status, list) = call(u, Method::GET, "/api/agents", None).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<(&str, &str, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap(),
                a["kind"].as_str().unwrap(),
                a["available"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("claude", "claude", true), ("ghost", "acp", false)],
        "{list}"
    );
    assert_eq!(list[0]["supports"]["resume"], true, "{list}");
    // The hosts' gateways run the scripted executor as the built-in agent.
    assert_eq!(list[0]["title"], "Scripted demo", "{list}");
    assert_eq!(list[1]["title"], "Ghost agent");
    assert_eq!(list[1]["supports"]["resume"], true, "{list}");
    assert!(
        list[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("duraclaw-no-such-agent")),
        "{list}"
    );

    let start = |agent: Value| json!({"worktree": u.worktree, "prompt": "go", "agent": agent});
    for (agent, says) in [
        (json!("ghost"), "agent unavailable: \"ghost\" cannot run"),
        (
            json!("codex"),
            "agent unavailable: this gateway has no agent named \"codex\"",
        ),
        (json!(7), "`agent` must be a string"),
        (json!("x".repeat(65)), "at most 64 characters"),
        (json!("gh\u{1}ost"), "only ASCII letters"),
        (json!("../claude"), "only ASCII letters"),
    ] {
        let (status, body) =
            call(u, Method::POST, "/api/sessions", Some(start(agent.clone()))).await;
        assert_eq!(status, 400, "{agent}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{agent}: {body}");
    }
    let (_, sessions) = call(u, Method::GET, "/api/sessions", None).await;
    assert_eq!(sessions, json!([]), "a refused start leaves nothing");

    let (status, created) = call(
        u,
        Method::POST,
        "/api/sessions",
        Some(start(json!("claude"))),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["session_id"].as_str().unwrap();
    let (status, meta) = call(u, Method::GET, &format!("/api/sessions/{id}"), None).await;
    assert_eq!((status, &meta["agent"]), (200, &json!("claude")), "{meta}");
    let (_, sessions) = call(u, Method::GET, "/api/sessions", None).await;
    assert_eq!(sessions[0]["agent"], "claude", "{sessions}");
}
