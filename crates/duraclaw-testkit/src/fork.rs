//! Forking a session, as a client sees it, written once and run on each
//! host as a case of the API suite ([`crate::api::cases`]) with the REAL
//! Claude Code CLI against the fake Anthropic API.

use serde_json::{Value, json};

use crate::browser::{Browser, is};
use crate::host::{Host, create_session, login};
use crate::rules::{close, restart_gateway, send, session_meta};

/// Runs a message as its own turn and waits for its `result`.
async fn turn(b: &mut Browser, id: &str, text: &str) {
    let ok = b
        .command(id, json!({"type": "message", "text": text}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    b.until(is("result")).await;
}

/// Three exchanges with the real CLI, then a fork from the second user
/// message: refused while the parent holds the worktree and for a seq
/// that is not a user message; once the parent ended, the fork starts
/// (its metadata naming the parent and the seq) and the fake API's
/// request for its first turn carries the first two exchanges and its own
/// prompt, not the third. The scripted gateway is back after.
pub async fn fork_from_the_second_of_three(h: &dyn Host, name: &str) {
    use duraclaw_fake_anthropic::{FakeAnthropic, Turn};
    let cookie = login(h, name, crate::api::PASSWORD).await;
    let fake = FakeAnthropic::start([
        Turn::text("Answer one."),
        Turn::text("Answer two."),
        Turn::text("Answer three."),
        Turn::text("Answer in the fork."),
    ])
    .await
    .unwrap();
    let env = crate::browser_suite::claude_setup(h.root(), &fake);
    restart_gateway(h, &cookie, Some(&env)).await;
    let id = create_session(h, &cookie, name, "Message one").await;
    let mut b = Browser::connect(h.base(), &cookie, &id, 0).await;
    b.until(is("result")).await;
    turn(&mut b, "t-2", "Message two").await;
    turn(&mut b, "t-3", "Message three").await;
    let seq_of = |text: &str| {
        b.events
            .iter()
            .find(|(_, e)| e["type"] == "user.message" && e["text"] == text)
            .map(|(s, _)| *s)
            .unwrap()
    };
    let second = seq_of("Message two");
    let not_a_message = b
        .events
        .iter()
        .find(|(_, e)| e["type"] == "result")
        .map(|(s, _)| *s)
        .unwrap();
    let path = format!("/api/sessions/{id}/fork");
    let post = |body: Value| send(h, reqwest::Method::POST, &cookie, &path, Some(body));
    let (busy, busy_body) = post(json!({"from_seq": second, "prompt": "Fork message"})).await;
    let (bad, bad_body) = post(json!({"from_seq": not_a_message, "prompt": "Fork message"})).await;
    close(h, &cookie, &id).await;
    let (status, meta) = post(json!({"from_seq": second, "prompt": "Fork message"})).await;
    let fork_id = meta["session_id"].as_str().unwrap_or("").to_owned();
    let mut fb = Browser::connect(h.base(), &cookie, &fork_id, 0).await;
    fb.until(is("result")).await;
    let (_, listed) = session_meta(h, &cookie, &fork_id).await;
    // The session list carries the lineage too.
    let (_, list) = send(h, reqwest::Method::GET, &cookie, "/api/sessions", None).await;
    let in_list = list
        .as_array()
        .and_then(|l| l.iter().find(|m| m["session_id"] == fork_id.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    let request = fake
        .model_requests()
        .last()
        .map(|r| r.body["messages"].to_string())
        .unwrap_or_default();
    let answered = fb
        .events
        .iter()
        .any(|(_, e)| e["type"] == "assistant" && e["text"] == "Answer in the fork.");
    close(h, &cookie, &fork_id).await;
    restart_gateway(h, &cookie, None).await;

    assert_eq!(busy, 409, "{busy_body}");
    assert!(
        busy_body["error"].as_str().unwrap_or("").contains("busy"),
        "{busy_body}"
    );
    assert_eq!(bad, 400, "{bad_body}");
    assert_eq!(status, 201, "{meta}");
    assert_ne!(fork_id, id);
    for m in [&meta, &listed, &in_list] {
        assert_eq!(m["forked_from"]["session_id"], id.as_str(), "{m}");
        assert_eq!(m["forked_from"]["seq"], second, "{m}");
    }
    for kept in [
        "Message one",
        "Answer one.",
        "Message two",
        "Answer two.",
        "Fork message",
    ] {
        assert!(
            request.contains(kept),
            "{kept:?} is not in the fork's request: {request}"
        );
    }
    for dropped in ["Message three", "Answer three."] {
        assert!(
            !request.contains(dropped),
            "{dropped:?} is in the fork's request: {request}"
        );
    }
    assert!(answered, "{:?}", fb.events);
}
