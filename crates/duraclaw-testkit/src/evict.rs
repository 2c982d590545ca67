//! The gateway's memory, as a client sees it, written once and run on each
//! host as a case of the API suite ([`crate::api::cases`]): a session the
//! gateway put away (nothing live, every event acknowledged) takes a late
//! answer and a message as before it was put away.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::{Browser, is};
use crate::host::{DEADLINE, Host, create_session, login};
use crate::rules::{close, restart_gateway, wait_link};

/// The gateway's idle bound in this case, in ms.
const IDLE_MS: &str = "100";

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
    let env = [("DURACLAW_EVICT_IDLE_MS".to_owned(), IDLE_MS.to_owned())];
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
