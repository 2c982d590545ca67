//! The gateway's memory, as a client sees it, written once and run on each
//! host as a case of the API suite ([`crate::api::cases`]): a session the
//! gateway put away (nothing live, every event acknowledged) takes a late
//! answer and a message as before it was put away.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::{Browser, is};
use crate::host::{DEADLINE, Host, create_session, login};
use crate::rules::{claude_bin, close, restart_gateway, wait_link};

/// The gateway's idle bound in these cases, in ms.
const IDLE_MS: &str = "100";

/// The gateway's log filter in these cases: its per-session lines about
/// putting sessions away and loading them again are at debug.
const EVICT_LOG: &str = "info,duraclaw_gateway::evict=debug";

/// The environment of a gateway that puts sessions away after [`IDLE_MS`]
/// and logs each one.
fn evict_env() -> Vec<(String, String)> {
    vec![
        ("DURACLAW_EVICT_IDLE_MS".to_owned(), IDLE_MS.to_owned()),
        ("RUST_LOG".to_owned(), EVICT_LOG.to_owned()),
    ]
}

/// Whether the gateway's log has a line with `what` naming `session`.
fn logged(h: &dyn Host, what: &str, session: &str) -> usize {
    h.gateway_log_text()
        .lines()
        .filter(|l| l.contains(what) && l.contains(session))
        .count()
}

/// Waits (bounded) until the gateway logged `what` for `session` more than
/// `before` times.
async fn until_logged(h: &dyn Host, what: &str, session: &str, before: usize) {
    let deadline = Instant::now() + DEADLINE;
    while logged(h, what, session) <= before {
        assert!(
            Instant::now() < deadline,
            "the gateway never logged {what:?} for {session}\n{}",
            h.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A session waits for an approval when the gateway is killed; the
/// restarted gateway (idle bound 100 ms) withdraws the question and, once
/// the host has every event, puts the session away. The late answer to
/// the withdrawn question is refused and decides nothing; a message then
/// loads the session again and resumes it, its events reaching the
/// browser. The gateway with the default bound is back after.
pub async fn an_evicted_sessions_late_answer_and_resume_work(h: &dyn Host, name: &str) {
    let cookie = login(h, name, crate::api::PASSWORD).await;
    let env = evict_env();
    let id = create_session(h, &cookie, name, "build it").await;
    let mut b = Browser::connect(h.base(), &cookie, &id, 0).await;
    let q = b.until(is("user_question")).await;
    let qid = q["question_id"].as_str().unwrap_or("").to_owned();
    h.kill_gateway().await;
    wait_link(h, &cookie, false).await;
    let put_away = logged(h, "session put away", &id);
    let loaded = logged(h, "session loaded again", &id);
    h.start_gateway_with_env(&env).await;
    wait_link(h, &cookie, true).await;
    b.until(|e: &Value| e["type"] == "question.resolved" && e["question_id"] == qid.as_str())
        .await;
    until_logged(h, "session put away", &id, put_away).await;

    let late = b
        .command(
            "late-1",
            json!({"type": "answer", "question_id": qid, "decision": "allow"}),
        )
        .await;
    let seq = b.last_seq();
    let sent = b
        .command("m-1", json!({"type": "message", "text": "continue"}))
        .await;
    let said = b
        .until_after(seq, |e: &Value| {
            e["type"] == "assistant"
                && e["phase"] == "final"
                && e["text"].as_str().is_some_and(|t| t.contains("continue"))
        })
        .await;
    b.until_after(seq, is("result")).await;
    until_logged(h, "session loaded again", &id, loaded).await;
    close(h, &cookie, &id).await;
    restart_gateway(h, &cookie, None).await;

    assert_eq!(late["ok"], false, "{late}");
    assert!(
        !b.events
            .iter()
            .any(|(s, e)| *s > seq && e["type"] == "tool_result"),
        "the late answer ran the tool: {:?}",
        b.events
    );
    assert_eq!(sent["ok"], true, "{sent}");
    assert!(said["text"].as_str().is_some(), "{said}");
}

/// "Allow for this session" holds for the session's life, with the REAL
/// Claude Code CLI (against the fake Anthropic API): a Bash call allowed
/// for the session; the CLI, idle past the gateway's bound (300 ms), is
/// stopped with no error shown and the session put away; the gateway is
/// then killed and started again. The next message resumes the CLI session
/// (the model sees the first turn), and the same call runs without a
/// question, its `auto_allowed` notice naming the first answer; another
/// command is asked about. The scripted gateway is back after.
pub async fn allow_for_this_session_outlives_the_cli_and_a_gateway_restart(
    h: &dyn Host,
    name: &str,
) {
    use duraclaw_fake_anthropic::{FakeAnthropic, Turn};
    let cookie = login(h, name, crate::api::PASSWORD).await;
    let echo = |w: &str| json!({"command": format!("echo {w}"), "description": "Say a word"});
    let fake = FakeAnthropic::start([
        Turn::text("Saying it.").with_tool_use_id("toolu_e1", "Bash", echo("alpha")),
        Turn::text("Said alpha."),
        Turn::text("Again.").with_tool_use_id("toolu_e2", "Bash", echo("alpha")),
        Turn::text("Now another.").with_tool_use_id("toolu_e3", "Bash", echo("beta")),
        Turn::text("Said both."),
    ])
    .await
    .unwrap();
    let mut env = crate::browser_suite::claude_setup(h.root(), &fake);
    env.extend(evict_env());
    env.push(("DURACLAW_EXECUTOR_IDLE_MS".to_owned(), "300".to_owned()));
    restart_gateway(h, &cookie, Some(&env)).await;
    let id = create_session(h, &cookie, name, "Say alpha").await;
    let stopped = logged(h, "idle executor stopped", &id);
    let put_away = logged(h, "session put away", &id);
    let mut b = Browser::connect(h.base(), &cookie, &id, 0).await;
    let q = b.until(is("user_question")).await;
    let qid = q["question_id"].as_str().unwrap_or("").to_owned();
    let allowed = b
        .command(
            "a-1",
            json!({"type": "answer", "question_id": qid, "decision": "allow", "remember": true}),
        )
        .await;
    b.until(is("result")).await;
    // Idle: the CLI is stopped and the session put away.
    until_logged(h, "idle executor stopped", &id, stopped).await;
    until_logged(h, "session put away", &id, put_away).await;
    h.kill_gateway().await;
    wait_link(h, &cookie, false).await;
    h.start_gateway_with_claude(&claude_bin(), &env).await;
    wait_link(h, &cookie, true).await;

    let seq = b.last_seq();
    let sent = b
        .command(
            "m-1",
            json!({"type": "message", "text": "Say alpha again, then beta"}),
        )
        .await;
    let asked = b.until_after(seq, is("user_question")).await;
    let second = b
        .command(
            "a-2",
            json!({"type": "answer", "question_id": asked["question_id"], "decision": "allow"}),
        )
        .await;
    b.until_after(seq, is("result")).await;
    let resumed = fake
        .model_requests()
        .iter()
        .map(|r| r.body["messages"].to_string())
        .find(|m| m.contains("Say alpha again"));
    close(h, &cookie, &id).await;
    restart_gateway(h, &cookie, None).await;

    assert_eq!(allowed["ok"], true, "{allowed}");
    assert_eq!(sent["ok"], true, "{sent}");
    assert_eq!(second["ok"], true, "{second}");
    assert_eq!(asked["tool_use_id"], "toolu_e3", "{:?}", b.events);
    let after: Vec<&Value> = b
        .events
        .iter()
        .filter(|(s, _)| *s > seq)
        .map(|(_, e)| e)
        .collect();
    let notice = after.iter().position(|e| {
        e["type"] == "notice"
            && e["code"] == "auto_allowed"
            && e["tool_use_id"] == "toolu_e2"
            && e["message"].as_str().is_some_and(|m| m.contains(&qid))
    });
    let ran = after
        .iter()
        .position(|e| e["type"] == "tool_result" && e["tool_use_id"] == "toolu_e2");
    assert!(
        notice.is_some() && ran.is_some() && notice < ran,
        "no auto_allowed notice before the allowed call ran: {after:?}"
    );
    assert!(
        after.iter().all(|e| e["type"] != "tool_result"
            || e["tool_use_id"] != "toolu_e2"
            || e["is_error"] != true),
        "{after:?}"
    );
    assert!(
        !b.events.iter().any(|(_, e)| e["type"] == "error"),
        "an error was shown: {:?}",
        b.events
    );
    let resumed = resumed.expect("a model request after the message");
    assert!(
        resumed.contains("Say alpha") && resumed.contains("Said alpha."),
        "the resumed request lacks the earlier conversation: {resumed}"
    );
}
