//! The API suite: what a client sees over HTTP and WebSocket, written once
//! against [`Host`] and run on each host by a test file of a few lines
//! (`tests/api.rs` for the local host, `tests/cloudflare_api.rs` for the
//! Worker). One host per test binary serves every case; each case has a
//! user and a worktree of its own.
//!
//! `DURACLAW_CASES=name,name` runs only those cases.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use serde_json::{Value, json};

use crate::both_hosts;
use crate::browser::{Browser, is, open_ws, state_is};
use crate::contract;
use crate::host::{DEADLINE, Host, create_session, http, login, worktree};

/// The password of every user the suite adds.
pub const PASSWORD: &str = "correct horse battery staple 42";
const NEW_PASSWORD: &str = "a brand new passphrase 42";

/// A named case of a suite on hosts of type `H`.
pub type Case<H> = (&'static str, for<'a> fn(&'a H) -> BoxFuture<'a, ()>);

/// One [`Case`] per `async fn(&dyn Host)` named.
macro_rules! cases {
    ($($case:ident),+ $(,)?) => {
        vec![$((stringify!($case), |h: &H| -> BoxFuture<'_, ()> { Box::pin($case(h)) })),+]
    };
}

/// The API suite's cases, for hosts of type `H`.
pub fn cases<H: Host>() -> Vec<Case<H>> {
    cases![
        the_whole_flow_over_the_api,
        a_retried_answer_gets_its_first_result,
        refused_frames_and_resume_points_get_an_error_and_a_close_code,
        malformed_requests_get_json_errors_and_create_nothing,
        racing_starts_leave_only_the_started_sessions,
        an_ended_login_closes_its_sockets_and_refuses_their_commands,
        the_page_and_its_assets_carry_the_security_headers,
        a_restarted_host_and_a_killed_gateway_lose_nothing,
        a_gateway_machine_crash_that_took_back_its_outbox_loses_no_later_turn,
        a_copy_a_host_crash_took_back_starts_over_and_any_other_resumes,
        an_old_cli_is_named_in_the_status_and_refuses_a_start,
        a_notification_action_decides_once_as_the_user_on_the_device,
        the_rules_api_checks_owns_and_presets,
        a_deny_rule_beats_a_session_allow,
        always_allow_for_this_worktree_from_the_prompt,
        always_allow_for_this_worktree_holds_in_new_worktrees_of_its_repository,
        reads_are_free_with_the_real_cli,
        the_inbox_lists_the_users_own_questions_and_resumes_exactly_once,
        an_ended_login_closes_the_inbox_stream,
        new_worktrees_run_side_by_side_show_their_diff_and_are_kept_or_removed,
        modes_and_models_switch_mid_session_with_the_real_cli,
        a_fork_carries_the_conversation_up_to_its_message,
        agents_are_listed_chosen_and_recorded,
        a_stream_opens_with_its_tail_pages_back_and_compacts_closed_messages,
        a_compressed_stream_decodes_to_the_frames_of_a_plain_one,
        a_switched_mode_and_model_survive_a_gateway_restart,
        an_evicted_sessions_late_answer_and_resume_work,
        allow_for_this_session_outlives_the_cli_and_a_gateway_restart,
        codex_through_acp_runs_a_whole_session_under_the_gate,
        claude_through_acp_runs_a_whole_session_under_the_gate,
        the_same_session_shows_the_same_events_through_both_claude_executors,
    ]
}

async fn codex_through_acp_runs_a_whole_session_under_the_gate(h: &dyn Host) {
    user(h, "acpcodex").await;
    crate::acp_e2e::codex(h, "acpcodex").await;
}

async fn the_same_session_shows_the_same_events_through_both_claude_executors(h: &dyn Host) {
    user(h, crate::acp_e2e::SAME_USERS[0]).await;
    crate::acp_e2e::the_same_session_through_both_executors(h).await;
}

async fn claude_through_acp_runs_a_whole_session_under_the_gate(h: &dyn Host) {
    user(h, "acpclaude").await;
    crate::acp_e2e::claude_acp(h, "acpclaude").await;
}

async fn agents_are_listed_chosen_and_recorded(h: &dyn Host) {
    let u = user(h, "agents").await;
    crate::agents::agents_are_listed_chosen_and_recorded(&u).await;
}

async fn a_stream_opens_with_its_tail_pages_back_and_compacts_closed_messages(h: &dyn Host) {
    let u = user(h, "tail").await;
    crate::replay::tail_pages_and_compacted_ranges(h, &u, "tail").await;
}

async fn a_compressed_stream_decodes_to_the_frames_of_a_plain_one(h: &dyn Host) {
    let u = user(h, "deflate").await;
    crate::replay::compressed_replay(h, &u, "deflate").await;
}

async fn a_fork_carries_the_conversation_up_to_its_message(h: &dyn Host) {
    user(h, "forkcli").await;
    crate::fork::fork_from_the_second_of_three(h, "forkcli").await;
}

async fn an_evicted_sessions_late_answer_and_resume_work(h: &dyn Host) {
    user(h, "evicted").await;
    crate::evict::an_evicted_sessions_late_answer_and_resume_work(h, "evicted").await;
}

async fn allow_for_this_session_outlives_the_cli_and_a_gateway_restart(h: &dyn Host) {
    user(h, "allowkept").await;
    crate::evict::allow_for_this_session_outlives_the_cli_and_a_gateway_restart(h, "allowkept")
        .await;
}

async fn a_switched_mode_and_model_survive_a_gateway_restart(h: &dyn Host) {
    user(h, "modesrestart").await;
    crate::modes::a_switched_mode_and_model_survive_a_gateway_restart(h, "modesrestart").await;
}

async fn modes_and_models_switch_mid_session_with_the_real_cli(h: &dyn Host) {
    user(h, "modescli").await;
    crate::modes::modes_and_models_with_the_real_cli(h, "modescli").await;
}

async fn reads_are_free_with_the_real_cli(h: &dyn Host) {
    user(h, "rulescli").await;
    crate::rules::reads_free_with_the_real_cli(h, "rulescli").await;
}

async fn the_rules_api_checks_owns_and_presets(h: &dyn Host) {
    user(h, "rulesapi").await;
    h.add_user("rulesapi2", PASSWORD).await;
    crate::rules::the_rules_api_checks_owns_and_presets(h, "rulesapi", "rulesapi2").await;
}

async fn a_deny_rule_beats_a_session_allow(h: &dyn Host) {
    user(h, "rulesdeny").await;
    crate::rules::a_deny_beats_a_session_allow(h, "rulesdeny").await;
}

async fn always_allow_for_this_worktree_from_the_prompt(h: &dyn Host) {
    user(h, "rulewt").await;
    h.add_user("rulewt2", PASSWORD).await;
    crate::rules::always_allow_for_this_worktree(h, "rulewt", "rulewt2").await;
}

async fn always_allow_for_this_worktree_holds_in_new_worktrees_of_its_repository(h: &dyn Host) {
    user(h, "rulenew").await;
    h.add_user("rulenew2", PASSWORD).await;
    crate::rules::always_allow_in_new_worktrees(h, "rulenew", "rulenew2").await;
}

async fn the_inbox_lists_the_users_own_questions_and_resumes_exactly_once(h: &dyn Host) {
    let u = user(h, "inbox").await;
    let other = user(h, "inboxother").await;
    crate::inbox::lists_own_questions_and_resumes_exactly_once(
        h,
        (&u, "inbox"),
        (&other, "inboxother"),
    )
    .await;
    crate::inbox::refusals(&u).await;
}

/// Logout with the inbox stream open closes it with 4401.
async fn an_ended_login_closes_the_inbox_stream(h: &dyn Host) {
    let u = user(h, "inboxlogin").await;
    let mut ws = crate::inbox::open(&u, "").await;
    let first = crate::inbox::frame(&mut ws).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    let out = http()
        .post(format!("{}/api/logout", h.base()))
        .header("cookie", &u.cookie)
        .header("origin", h.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    both_hosts::assert_closes(&mut ws).await;
}

/// Runs `cases` on `h` one after another (those named in `DURACLAW_CASES`
/// when it is set), each to its end even when an earlier one failed; panics
/// naming every failed case, with the host's logs.
pub async fn run<H: Host>(h: &H, cases: &[Case<H>]) {
    let only: Option<Vec<String>> = std::env::var("DURACLAW_CASES")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in cases {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        ran += 1;
        // The ACP cases share a gateway of their own; any other case gets
        // the suite's.
        if !crate::acp_e2e::CASES.contains(name) {
            crate::acp_e2e::leave(h).await;
        }
        let t = Instant::now();
        let outcome = AssertUnwindSafe(case(h)).catch_unwind().await;
        let took = t.elapsed();
        match outcome {
            Ok(()) => eprintln!("{} host: {name} ok ({took:.1?})", h.name()),
            Err(_) => {
                eprintln!("{} host: {name} FAILED ({took:.1?})", h.name());
                failed.push(*name);
            }
        }
    }
    crate::acp_e2e::leave(h).await;
    assert!(ran > 0, "DURACLAW_CASES names no case of this suite");
    assert!(
        failed.is_empty(),
        "{} of {ran} cases failed on the {} host (their panics are above): {failed:?}\n\n{}",
        failed.len(),
        h.name(),
        h.log_tails()
    );
}

/// User `name` (added now) logged in, with worktree `name`.
async fn user(h: &dyn Host, name: &str) -> contract::User {
    h.add_user(name, PASSWORD).await;
    contract::User {
        base: h.base().to_owned(),
        cookie: login(h, name, PASSWORD).await,
        worktree: worktree(h, name),
    }
}

/// User `name` and a session of theirs in worktree `name`, waiting for its
/// approval.
async fn user_with_session(h: &dyn Host, name: &str) -> (contract::User, String) {
    let u = user(h, name).await;
    let id = create_session(h, &u.cookie, name, "build it").await;
    (u, id)
}

async fn a_retried_answer_gets_its_first_result(h: &dyn Host) {
    let (u, id) = user_with_session(h, "retry").await;
    contract::retried_answer_gets_its_first_result(&u, &id).await;
}

async fn refused_frames_and_resume_points_get_an_error_and_a_close_code(h: &dyn Host) {
    let (u, id) = user_with_session(h, "frames").await;
    contract::websocket_refusals(&u, &id).await;
}

async fn malformed_requests_get_json_errors_and_create_nothing(h: &dyn Host) {
    let (u, id) = user_with_session(h, "malformed").await;
    contract::malformed_requests_get_json_errors(&u, &id).await;
    contract::busy_worktree_says_what_to_do(&u, &id).await;
}

async fn racing_starts_leave_only_the_started_sessions(h: &dyn Host) {
    let u = user(h, "race").await;
    let started = contract::racing_starts_leave_only_started_sessions(&u, &u.worktree).await;
    crate::inbox::sessions_become(&u, &started).await;
}

/// A login that ends (logout, a password change, the user removed) closes
/// that login's open sockets with 4401 and a command sent on them is
/// refused and starts no turn; another login of the same user lives on
/// until its own end.
async fn an_ended_login_closes_its_sockets_and_refuses_their_commands(h: &dyn Host) {
    let base = h.base();
    let (laptop_user, id) = user_with_session(h, "login").await;
    let laptop = laptop_user.cookie;
    let phone = login(h, "login", PASSWORD).await;

    // Logout ends that login's sockets, not the other login's.
    let (mut laptop_ws, _) = both_hosts::open(base, &laptop, &id).await;
    let (mut laptop_ws2, _) = both_hosts::open(base, &laptop, &id).await;
    let (mut phone_ws, _) = both_hosts::open(base, &phone, &id).await;
    let out = http()
        .post(format!("{base}/api/logout"))
        .header("cookie", &laptop)
        .header("origin", base)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    both_hosts::assert_closes(&mut laptop_ws2).await;
    both_hosts::assert_login_ended(&mut laptop_ws, "after-logout", "sent after logout").await;

    // An administrator's password change ends every login of the user.
    let (mut phone_ws2, _) = both_hosts::open(base, &phone, &id).await;
    h.set_password("login", NEW_PASSWORD).await;
    both_hosts::assert_closes(&mut phone_ws2).await;
    both_hosts::assert_login_ended(&mut phone_ws, "after-passwd", "sent after passwd").await;

    // So does removing the user.
    let fresh = login(h, "login", NEW_PASSWORD).await;
    let (mut fresh_ws, _) = both_hosts::open(base, &fresh, &id).await;
    let (mut fresh_ws2, _) = both_hosts::open(base, &fresh, &id).await;
    h.remove_user("login").await;
    both_hosts::assert_closes(&mut fresh_ws2).await;
    both_hosts::assert_login_ended(&mut fresh_ws, "after-remove", "sent after remove").await;
    let me = http()
        .get(format!("{base}/api/me"))
        .header("cookie", &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401, "GET /api/me after the user was removed");

    // The user again (their sessions stayed): none of the refused commands
    // ran.
    h.add_user("login", PASSWORD).await;
    let again = login(h, "login", PASSWORD).await;
    for text in [
        "sent after logout",
        "sent after passwd",
        "sent after remove",
    ] {
        both_hosts::assert_never_ran(base, &again, &id, text).await;
    }
}

async fn the_page_and_its_assets_carry_the_security_headers(h: &dyn Host) {
    both_hosts::assert_ui_headers(&http(), h.base()).await;
}

/// `GET path` with `cookie` (none when empty): the status and the body as
/// JSON (null when it is not).
async fn get(h: &dyn Host, cookie: &str, path: &str) -> (u16, Value) {
    let mut req = http().get(format!("{}{path}", h.base()));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `POST path` with `cookie`, from `origin`, with `body`: the status and
/// the body as JSON (null when it is not).
async fn post(h: &dyn Host, cookie: &str, origin: &str, path: &str, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{}{path}", h.base()))
        .header("cookie", cookie)
        .header("origin", origin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A session from start to close as browsers see it: auth and ownership,
/// every browser seeing the same log, exact replay after any seq, an
/// approval from one browser seen by the others and a late answer told who
/// decided, the turn's end, the session closed and its worktree freed.
async fn the_whole_flow_over_the_api(h: &dyn Host) {
    let base = h.base();
    let (status, _) = get(h, "", "/api/sessions").await;
    assert_eq!(status, 401, "no cookie, no sessions");
    h.add_user("flow", PASSWORD).await;
    let r = http()
        .post(format!("{base}/api/login"))
        .header("origin", base)
        .json(&json!({"username": "flow", "password": "wrong password!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a wrong password");
    let alice = login(h, "flow", PASSWORD).await;
    h.add_user("stranger", PASSWORD).await;
    let bob = login(h, "stranger", PASSWORD).await;

    let wt = worktree(h, "flow");
    let (status, wts) = get(h, &alice, "/api/worktrees").await;
    assert_eq!(status, 200, "{wts}");
    assert!(
        wts.as_array()
            .unwrap()
            .iter()
            .any(|w| w["path"] == wt.as_str()),
        "{wts}"
    );
    let (status, st) = get(h, &alice, "/api/status").await;
    assert_eq!(
        (status, &st["gateway"]["connected"]),
        (200, &json!(true)),
        "{st}"
    );

    // A cross-origin POST is refused and starts nothing.
    let create = json!({"worktree": wt, "prompt": "build it"});
    let (status, _) = post(
        h,
        &alice,
        "http://evil.example",
        "/api/sessions",
        create.clone(),
    )
    .await;
    assert_eq!(status, 403, "a cross-origin POST");
    let (status, s) = post(h, &alice, base, "/api/sessions", create).await;
    assert_eq!(status, 201, "{s}");
    let id = s["session_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&s["owner"], &s["title"]),
        (&json!("flow"), &json!("build it"))
    );

    // Another user: 404 on every route, exactly as for a missing session.
    let (status, body) = get(h, &bob, &format!("/api/sessions/{id}")).await;
    let (missing_status, missing) = get(h, &bob, "/api/sessions/01NOSUCHSESSION0000000000").await;
    assert_eq!((status, &body), (404, &missing), "{body}");
    assert_eq!(missing_status, 404);
    let (status, _) = post(
        h,
        &bob,
        base,
        &format!("/api/sessions/{id}/close"),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        open_ws(base, &bob, &id, 0).await.err().as_deref(),
        Some("HTTP 404")
    );

    // Every browser sees the same log, up to the approval.
    let mut one = Browser::connect(base, &alice, &id, 0).await;
    let question = one.until(is("user_question")).await;
    let qid = question["question_id"].as_str().unwrap().to_owned();
    one.until(state_is("paused", Some("awaiting_approval")))
        .await;
    let n = one.last_seq();
    assert_eq!(one.events[0].1["type"], "user.message");
    assert_eq!(one.events[0].1["text"], "build it");
    let mut two = Browser::connect(base, &alice, &id, 0).await;
    assert_eq!(two.snapshot["last_seq"], n);
    assert_eq!(two.snapshot["reason"], "awaiting_approval");
    assert_eq!(two.snapshot["pending"][0]["question_id"], qid.as_str());
    two.until_seq(n).await;
    assert_eq!(two.events, one.events);

    // One resuming after k gets exactly the events after k, the question
    // pending in its snapshot; a malformed frame gets a typed error and the
    // socket lives on; a ping gets its pong.
    let k = n / 2;
    let mut three = Browser::connect(base, &alice, &id, k).await;
    assert_eq!(three.snapshot["pending"][0]["question_id"], qid.as_str());
    three.until_seq(n).await;
    assert_eq!(three.events[..], one.events[k as usize..]);
    three.send(json!({"type": "no such frame"})).await;
    let e = three.reply().await;
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("bad_frame")),
        "{e}"
    );
    three.send(json!({"type": "ping", "nonce": 7})).await;
    assert_eq!(three.reply().await, json!({"type": "pong", "nonce": 7}));

    // The third approves; the first sees it resolved by the user; the
    // first's late answer is told who decided.
    let ok = three
        .command(
            "phone-1",
            json!({"type": "answer", "question_id": qid, "decision": "allow"}),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let resolved = one.until(is("question.resolved")).await;
    assert_eq!(resolved["by"]["who"], "flow");
    one.send(json!({"type": "command", "id": "laptop-1", "command":
        {"type": "answer", "question_id": qid, "decision": "deny", "reason": "late"}}))
        .await;
    let late = loop {
        let f = one.reply().await;
        if f["type"] == "command_result" && f["id"] == "laptop-1" {
            break f;
        }
    };
    assert_eq!(late["ok"], false, "{late}");
    assert_eq!(late["error"]["code"], "already_decided", "{late}");
    assert!(
        late["error"]["message"].as_str().unwrap().contains("flow"),
        "{late}"
    );

    // The turn ends with its tool's output and a cost; the session idles.
    let result = three.until(is("result")).await;
    assert!(
        three
            .events
            .iter()
            .any(|(_, e)| e["type"] == "tool_result" && e["content"] == "built"),
        "{:?}",
        three.events
    );
    assert!(result["cost_usd"].as_f64().is_some(), "{result}");
    three.until(state_is("paused", Some("idle"))).await;
    let (_, meta) = get(h, &alice, &format!("/api/sessions/{id}")).await;
    assert_eq!(
        (&meta["state"], &meta["reason"]),
        (&json!("paused"), &json!("idle")),
        "{meta}"
    );

    // Every socket closed; a follow-up from one resuming after the last
    // seq seen: every missed event exactly once, in order.
    let last_seen = three.last_seq();
    drop((one, two, three));
    let mut four = Browser::connect(base, &alice, &id, last_seen).await;
    let ok = four
        .command("m-1", json!({"type": "message", "text": "thanks"}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    four.until(is("result")).await;
    let final_seq = four.last_seq();
    drop(four);
    // From scratch, the whole log: dense seqs from 1 (checked as it comes).
    let mut all = Browser::connect(base, &alice, &id, 0).await;
    all.until_seq(final_seq).await;

    // The worktree is busy while the session lives; closing it ends the
    // session, refuses more turns and frees the worktree.
    let again = json!({"worktree": wt, "prompt": "another"});
    let (status, body) = post(h, &alice, base, "/api/sessions", again.clone()).await;
    assert_eq!(status, 409, "the worktree is still held: {body}");
    let (status, closed) = post(
        h,
        &alice,
        base,
        &format!("/api/sessions/{id}/close"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["state"], "terminated", "{closed}");
    all.until(state_is("terminated", None)).await;
    all.send(json!({"type": "command", "id": "late-1", "command":
        {"type": "message", "text": "still there?"}}))
        .await;
    let late = loop {
        let f = all.reply().await;
        if f["type"] == "command_result" && f["id"] == "late-1" {
            break f;
        }
    };
    assert_eq!(
        late["ok"], false,
        "a closed session takes no more turns: {late}"
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, body) = post(h, &alice, base, "/api/sessions", again.clone()).await;
        if status == 201 {
            break;
        }
        assert_eq!(status, 409, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worktree was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a host may take to link to a gateway again by itself after a
/// restart of either (the Durable Object's alarm: a heartbeat is at most
/// 30 s away; plus a start on a busy machine).
const RELINK_WITHIN: Duration = Duration::from_secs(120);

/// The host restarted with an approval pending keeps the history and the
/// question, which is then answered and the turn ends; the gateway
/// SIGKILLed while another session waits for approval: the session shows
/// the gateway unreachable, and once it is back the question its restart
/// orphaned is withdrawn and the turn ended, every event once, and the
/// session takes the next message.
async fn a_restarted_host_and_a_killed_gateway_lose_nothing(h: &dyn Host) {
    let base = h.base();
    let u = user(h, "restart").await;
    let id = create_session(h, &u.cookie, "restart", "build it").await;
    let mut one = Browser::connect(base, &u.cookie, &id, 0).await;
    let question = one.until(is("user_question")).await;
    let qid = question["question_id"].as_str().unwrap().to_owned();
    one.until(state_is("paused", Some("awaiting_approval")))
        .await;
    let before = one.events.clone();
    drop(one);
    let inbox = crate::inbox::list_until(&u, "the question in the inbox", |items| {
        items.iter().any(|i| i["question_id"] == qid.as_str())
    })
    .await;

    h.restart_host().await;
    crate::inbox::survives_restart(h, &u, &inbox).await;
    let mut two = Browser::connect(base, &u.cookie, &id, 0).await;
    assert_eq!(
        two.snapshot["pending"][0]["question_id"],
        qid.as_str(),
        "{}",
        two.snapshot
    );
    two.until_seq(before.last().unwrap().0).await;
    assert_eq!(two.events, before, "the history survived the restart");
    let ok = two
        .command(
            "approve-1",
            json!({"type": "answer", "question_id": qid, "decision": "allow"}),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    two.until_within(RELINK_WITHIN, is("result")).await;
    drop(two);

    // Another session waits for approval; the gateway dies.
    let id2 = create_session(h, &u.cookie, "gateway", "build it").await;
    let mut b = Browser::connect(base, &u.cookie, &id2, 0).await;
    b.until(state_is("paused", Some("awaiting_approval"))).await;
    h.kill_gateway().await;
    b.until(state_is("paused", Some("gateway_unreachable")))
        .await;
    h.start_gateway().await;
    // The gateway withdraws the question its restart orphaned and ends the
    // turn; the host links again by itself and logs both.
    b.until_within(RELINK_WITHIN, |e| {
        e["type"] == "error" && e["code"] == "gateway_restarted"
    })
    .await;
    let seen: Vec<String> = b
        .events
        .iter()
        .filter(|(_, e)| e["type"] != "session.state")
        .map(|(_, e)| e.to_string())
        .collect();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no event twice: {seen:#?}");
    for kind in ["user_question", "question.resolved", "tool_use"] {
        assert_eq!(
            b.events.iter().filter(|(_, e)| e["type"] == kind).count(),
            1,
            "{kind} once: {:#?}",
            b.events
        );
    }
    // The session goes on.
    let ok = b
        .command("m-1", json!({"type": "message", "text": "continue"}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    b.until_within(RELINK_WITHIN, is("result")).await;
    // The whole log replays identically.
    let mut again = Browser::connect(base, &u.cookie, &id2, 0).await;
    again.until_seq(b.last_seq()).await;
    assert_eq!(again.events, b.events);
}

/// A machine crash of the gateway's host (power loss, a kernel panic) can
/// take back the last commits of its outbox (SQLite's WAL, committed
/// without `fsync`) while the host has those events. Reproduced with the
/// files themselves: the gateway's database as a SIGKILL left it after
/// the first turn is put back after two more turns reached the host. The
/// next turn's events, numbered from the outbox's end, would take gseqs the
/// host has and be dropped as resends; every one of them must reach the
/// browser, once, and the log replay identically.
async fn a_gateway_machine_crash_that_took_back_its_outbox_loses_no_later_turn(h: &dyn Host) {
    let base = h.base();
    let (u, id, mut b) = approved_first_turn(h, "machinecrash").await;

    // The disk as a crash would leave it now: the database and its WAL.
    h.kill_gateway().await;
    let saved = h.root().join("machinecrash-saved");
    save_db(&h.gateway_db(), &saved);
    h.start_gateway().await;
    message_turn(&mut b, "m-2", "second").await;
    message_turn(&mut b, "m-3", "third").await;

    // The crash: the gateway's outbox is back where it was after the
    // first turn; the host has the two turns since.
    h.kill_gateway().await;
    restore_db(&saved, &h.gateway_db());
    h.start_gateway().await;
    let at = b.last_seq();
    let ok = b
        .command("m-4", json!({"type": "message", "text": "after the crash"}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    let said = |e: &Value| {
        e["type"] == "assistant"
            && e["phase"] != "delta"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("after the crash"))
    };
    b.until_after(at, said).await;
    b.until_after(at, is("result")).await;
    let turn: Vec<&str> = b
        .events
        .iter()
        .filter(|(s, _)| *s > at)
        .filter_map(|(_, e)| e["type"].as_str())
        .collect();
    for kind in ["user.message", "assistant", "result"] {
        assert!(turn.contains(&kind), "{kind} in the turn: {turn:?}");
    }
    let mut again = Browser::connect(base, &u.cookie, &id, 0).await;
    again.until_seq(b.last_seq()).await;
    assert_eq!(again.events, b.events);
}

/// User `name`'s new session in worktree `name`, its first turn's tool
/// call allowed and read to its `result` by a browser.
async fn approved_first_turn(h: &dyn Host, name: &str) -> (contract::User, String, Browser) {
    let u = user(h, name).await;
    let id = create_session(h, &u.cookie, name, "build it").await;
    let mut b = Browser::connect(h.base(), &u.cookie, &id, 0).await;
    let question = b.until(is("user_question")).await;
    let ok = b
        .command(
            "approve-1",
            json!({"type": "answer", "question_id": question["question_id"], "decision": "allow"}),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    b.until_after(0, is("result")).await;
    (u, id, b)
}

/// Copies the SQLite database `db` and its WAL, as a process killed just
/// now left them on the disk, into the directory `to`.
fn save_db(db: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in db_files(db).iter().take(2) {
        if f.exists() {
            std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// Puts back the database `db` saved in `from` by [`save_db`] (its
/// process stopped): what a machine crash that lost every later commit
/// leaves.
fn restore_db(from: &std::path::Path, db: &std::path::Path) {
    for f in db_files(db) {
        let _ = std::fs::remove_file(&f);
        let saved = from.join(f.file_name().unwrap());
        if saved.exists() {
            std::fs::copy(saved, f).unwrap();
        }
    }
}

/// The database file, its WAL and its shared-memory index.
fn db_files(db: &std::path::Path) -> [std::path::PathBuf; 3] {
    let name = db.file_name().unwrap().to_str().unwrap();
    ["", "-wal", "-shm"].map(|ext| db.with_file_name(format!("{name}{ext}")))
}

/// A resume after `after` in `epoch` on `u`'s session `id` is refused
/// with `ahead_of_log` and 4409, before any snapshot or event.
async fn refused_resume(u: &contract::User, id: &str, after: u64, epoch: &str, what: &str) {
    let query = format!("after={after}&epoch={epoch}&compact=0");
    let mut ws = crate::browser::open_ws_query(&u.base, &u.cookie, id, &query)
        .await
        .unwrap();
    let (frames, close) = contract::until_closed(&mut ws).await;
    contract::check_refused(what, &frames, close, "ahead_of_log", 4409);
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "snapshot" && f["type"] != "event"),
        "{what}: {frames:?}"
    );
}

/// One message turn on `b`'s session: sent as command `id`, read to its
/// `result`.
async fn message_turn(b: &mut Browser, id: &str, text: &str) {
    let at = b.last_seq();
    let ok = b
        .command(id, json!({"type": "message", "text": text}))
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    b.until_after(at, is("result")).await;
}

/// A browser resuming after a host crash, naming the log's epoch its copy
/// came from: a crash that took nothing back resumes it, on both hosts. On
/// the local host a machine crash can take back the session database's
/// last commits (SQLite without waiting for the disk) while a browser
/// holds them; the log then grows again with other events at those seqs,
/// and that browser is told to start over (`ahead_of_log`, 4409) instead
/// of resuming into them. A Durable Object never takes a commit back and
/// names no epoch.
async fn a_copy_a_host_crash_took_back_starts_over_and_any_other_resumes(h: &dyn Host) {
    let base = h.base();
    let (u, id, b) = approved_first_turn(h, "hostcrash").await;
    let db = h.sessions_db();
    assert_eq!(
        b.epoch().is_some(),
        db.is_some(),
        "an epoch is named where a crash can take commits back: {}",
        b.snapshot
    );

    // A crash that took nothing back: the copy resumes where it was, in
    // the log's next epoch; an epoch a host does not keep changes nothing
    // where it keeps none.
    let (seen, epoch) = (b.events.clone(), b.epoch());
    drop(b);
    h.crash_host().await;
    let mut b = Browser::resume(
        base,
        &u.cookie,
        &id,
        seen.last().unwrap().0,
        epoch.as_deref(),
    )
    .await;
    if db.is_some() {
        assert_ne!(b.epoch(), epoch, "each load is an epoch");
    } else {
        let other = Browser::resume(base, &u.cookie, &id, 1, Some("00000000000000ff")).await;
        assert_eq!(other.epoch(), None, "{}", other.snapshot);
    }
    message_turn(&mut b, "m-2", "second").await;
    let mut all = seen;
    all.extend(b.events.iter().cloned());
    let mut fresh = Browser::connect(base, &u.cookie, &id, 0).await;
    fresh.until_seq(b.last_seq()).await;
    assert_eq!(fresh.events, all, "the resumed copy is the log");
    // The epochs are the host's own records: no listing shows them.
    let (status, meta) = get(h, &u.cookie, &format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{meta}");
    assert!(meta.get("epochs").is_none(), "{meta}");
    let (_, list) = get(h, &u.cookie, "/api/sessions").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["session_id"] == id.as_str());
    assert!(listed.is_some_and(|m| m.get("epochs").is_none()), "{list}");
    let Some(db) = db else { return };

    // The disk as a machine crash would leave it now.
    drop(fresh);
    h.kill_host().await;
    let saved = h.root().join("hostcrash-saved");
    save_db(&db, &saved);
    let (kept, kept_epoch) = (b.last_seq(), b.epoch());
    h.start_host().await;
    let mut b = Browser::resume(base, &u.cookie, &id, kept, b.epoch().as_deref()).await;
    message_turn(&mut b, "m-3", "third").await;
    message_turn(&mut b, "m-4", "fourth").await;
    let (held, held_epoch) = (b.last_seq(), b.epoch());
    drop(b);

    // The crash: the database is back where it was after the second turn,
    // while a browser holds the third and fourth.
    h.kill_host().await;
    restore_db(&saved, &db);
    h.start_host().await;
    // The log grows past what the browser holds, with other events.
    let mut c = Browser::connect(base, &u.cookie, &id, 0).await;
    let mut n = 5;
    while c.last_seq() <= held {
        message_turn(&mut c, &format!("m-{n}"), "after the crash").await;
        n += 1;
        assert!(n < 20, "the log did not grow past {held}");
    }

    // The copy of the lost turns is refused, and told to start over.
    let lost = held_epoch.as_deref().unwrap();
    refused_resume(&u, &id, held, lost, "a copy a crash took back").await;
    // What was kept resumes from the epoch that saw it. The epoch the
    // crash took back is not known any more: even a copy of what was kept
    // starts over from there.
    let mut r = Browser::resume(base, &u.cookie, &id, kept, kept_epoch.as_deref()).await;
    r.until_seq(c.last_seq()).await;
    let after: Vec<_> = c
        .events
        .iter()
        .filter(|(s, _)| *s > kept)
        .cloned()
        .collect();
    assert_eq!(r.events, after, "resumed after {kept}");
    refused_resume(&u, &id, kept, lost, "an epoch the crash took back").await;
    // Starting over: every seq once, in order, ending with the new turns.
    let mut again = Browser::connect(base, &u.cookie, &id, 0).await;
    again.until_seq(c.last_seq()).await;
    assert_eq!(again.events, c.events);
    let texts: Vec<&str> = c
        .events
        .iter()
        .filter(|(_, e)| e["type"] == "user.message")
        .filter_map(|(_, e)| e["text"].as_str())
        .collect();
    assert!(
        !texts.contains(&"third"),
        "the crash took the third turn back: {texts:?}"
    );
    assert!(texts.contains(&"after the crash"), "{texts:?}");
}

/// A gateway whose Claude Code CLI is older than the minimum: `/api/status`
/// names the version found and the one needed, and a new session is
/// refused (503) with the same words. The scripted gateway is back after.
async fn an_old_cli_is_named_in_the_status_and_refuses_a_start(h: &dyn Host) {
    let u = user(h, "oldcli").await;
    let old_cli = h.root().join("old-claude");
    std::fs::write(
        &old_cli,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo '2.1.84 (Claude Code)'; exit 0; }\nexit 1\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&old_cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    h.kill_gateway().await;
    h.start_gateway_with_cli(&old_cli).await;
    let why = status_until(h, &u.cookie, |st| {
        st["gateway"]["executor_error"].as_str().is_some_and(|e| {
            e.starts_with(
                "unsupported Claude Code CLI: version 2.1.84 found, 2.1.88 or later needed",
            )
        })
    })
    .await["gateway"]["executor_error"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = post(
        h,
        &u.cookie,
        h.origin(),
        "/api/sessions",
        json!({"worktree": u.worktree, "prompt": "run on the old CLI"}),
    )
    .await;
    h.kill_gateway().await;
    h.start_gateway().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains(&why)),
        "{body}"
    );
    status_until(h, &u.cookie, |st| {
        st["gateway"]["connected"] == true && st["gateway"]["executor_error"].is_null()
    })
    .await;
}

/// Polls `/api/status` until `done` holds (bounded by [`DEADLINE`]); the
/// status that did.
async fn status_until(h: &dyn Host, cookie: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, st) = get(h, cookie, "/api/status").await;
        if done(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the status never became as expected: {st}\n{}",
            h.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /api/push/act` (Approve / Deny from a notification): a forged,
/// malformed, expired or another user's token is refused with its status
/// and changes nothing; the genuine one decides as the user on that device
/// (the log's `question.resolved` names both) and the turn goes on; the
/// same token again, or the Deny of the same notification, is told who
/// decided and changes nothing.
async fn a_notification_action_decides_once_as_the_user_on_the_device(h: &dyn Host) {
    use crate::notify::{claim, now_ms, token};
    use duraclaw_host::push::action::ActionDecision;
    let base = h.base();
    let (u, id) = user_with_session(h, "notify").await;
    h.add_user("notify-other", PASSWORD).await;
    let other = login(h, "notify-other", PASSWORD).await;
    let mut b = Browser::connect(base, &u.cookie, &id, 0).await;
    let question = b.until(is("user_question")).await;
    let qid = question["question_id"].as_str().unwrap().to_owned();
    b.until(state_is("paused", Some("awaiting_approval"))).await;
    let before = b.last_seq();

    let approve = claim("notify", &id, &qid, ActionDecision::Approve, "Pixel 8");
    let genuine = token(h, &approve);
    let act = |cookie: &str, origin: &str, t: &str| {
        let (cookie, origin, t) = (cookie.to_owned(), origin.to_owned(), t.to_owned());
        async move { post(h, &cookie, &origin, "/api/push/act", json!({"token": t})).await }
    };
    // Refusals, each with its status and a message.
    let forged = duraclaw_host::push::action::mint(b"not the host's key", &approve);
    let expired = token(
        h,
        &duraclaw_host::push::action::ActionClaim {
            expires_at_ms: now_ms() - 1,
            ..approve.clone()
        },
    );
    let mut tampered = genuine.clone();
    tampered.insert(3, 'x');
    for (what, cookie, t, want) in [
        ("a forged token", u.cookie.as_str(), forged.as_str(), 400),
        ("a tampered token", &u.cookie, &tampered, 400),
        ("not a token", &u.cookie, "hello", 400),
        ("an expired token", &u.cookie, &expired, 410),
        ("another user's token", &other, &genuine, 403),
    ] {
        let (status, body) = act(cookie, base, t).await;
        assert_eq!(status, want, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
    }
    let (status, _) = act("", base, &genuine).await;
    assert_eq!(status, 401, "no login");
    let (status, _) = act(&u.cookie, "http://evil.example", &genuine).await;
    assert_eq!(status, 403, "a cross-origin request");
    let (status, body) = post(h, &u.cookie, base, "/api/push/act", json!({"nope": 1})).await;
    assert_eq!(status, 400, "no token: {body}");
    // Nothing changed: the question still waits, nothing was logged.
    let mut check = Browser::connect(base, &u.cookie, &id, 0).await;
    assert_eq!(check.snapshot["last_seq"], before, "{}", check.snapshot);
    assert_eq!(check.snapshot["pending"][0]["question_id"], qid.as_str());
    check.until_seq(before).await;
    drop(check);

    // The genuine token decides, as the user on that device.
    let (status, body) = act(&u.cookie, base, &genuine).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "session_id": id, "question_id": qid, "decision": "approve"})
    );
    let resolved = b.until(is("question.resolved")).await;
    assert_eq!(resolved["question_id"], qid.as_str());
    assert_eq!(resolved["decision"], "allow", "{resolved}");
    assert_eq!(resolved["by"]["who"], "notify", "{resolved}");
    assert_eq!(
        resolved["by"]["client"], "notification Pixel 8",
        "{resolved}"
    );
    b.until(is("result")).await;
    assert!(
        b.events
            .iter()
            .any(|(_, e)| e["type"] == "tool_result" && e["content"] == "built"),
        "the approved tool ran: {:?}",
        b.events
    );
    b.until(state_is("paused", Some("idle"))).await;
    let after = b.last_seq();

    // Replayed, or the other action of the same notification: refused,
    // naming who decided; nothing logged.
    let deny = token(
        h,
        &claim("notify", &id, &qid, ActionDecision::Deny, "Pixel 8"),
    );
    for (what, t) in [("the same token again", &genuine), ("its Deny", &deny)] {
        let (status, body) = act(&u.cookie, base, t).await;
        assert_eq!(status, 409, "{what}: {body}");
        let e = body["error"].as_str().unwrap_or_default();
        assert!(
            e.starts_with("already decided by notify from notification Pixel 8 (allow)"),
            "{what}: {body}"
        );
    }
    let mut check = Browser::connect(base, &u.cookie, &id, 0).await;
    assert_eq!(check.snapshot["last_seq"], after, "{}", check.snapshot);
    check.until_seq(after).await;
    // The gateway echoes the decision it applied: the one decision, as made.
    for (_, e) in check
        .events
        .iter()
        .filter(|(_, e)| e["type"] == "question.resolved")
    {
        assert_eq!(
            (&e["decision"], &e["by"]["client"]),
            (&json!("allow"), &json!("notification Pixel 8")),
            "{e}"
        );
    }
}
/// `git args` in `dir`: its standard output.
fn git(dir: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `POST /api/sessions` for a new worktree from `repo`: the session id.
pub(crate) async fn start_in_new_worktree(h: &dyn Host, cookie: &str, repo: &str) -> String {
    let (status, body) = post(
        h,
        cookie,
        h.origin(),
        "/api/sessions",
        json!({"worktree": repo, "prompt": "build it", "new_worktree": {}}),
    )
    .await;
    assert_eq!(status, 201, "{body}\n{}", h.log_tails());
    body["session_id"].as_str().unwrap().to_owned()
}

/// Session `id`'s worktree once the gateway's worktree notice moved it
/// away from `repo`.
async fn moved_worktree(h: &dyn Host, cookie: &str, id: &str, repo: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, meta) = get(h, cookie, &format!("/api/sessions/{id}")).await;
        assert_eq!(status, 200, "{meta}");
        if let Some(w) = meta["worktree"].as_str().filter(|w| *w != repo) {
            return w.to_owned();
        }
        assert!(Instant::now() < deadline, "still in {repo}: {meta}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sessions started with a new worktree from one repository run side by
/// side, each in its own; the diff equals `git diff <base>` there (JSON
/// and as a patch); closing keeps the worktree, or removes it (refused
/// with 409 while it has uncommitted changes unless forced); another user
/// sees none of it.
async fn new_worktrees_run_side_by_side_show_their_diff_and_are_kept_or_removed(h: &dyn Host) {
    let u = user(h, "fresh").await;
    let (status, list) = get(h, &u.cookie, "/api/worktrees").await;
    assert_eq!(status, 200);
    let offered = list
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["path"] == u.worktree.as_str())
        .cloned()
        .unwrap();
    assert_eq!(offered["new_worktree"], true, "{offered}");

    // A base that does not exist: refused, and nothing is left behind.
    let (_, before) = get(h, &u.cookie, "/api/sessions").await;
    let (status, body) = post(
        h,
        &u.cookie,
        h.origin(),
        "/api/sessions",
        json!({"worktree": &u.worktree, "prompt": "go", "new_worktree": {"base": "no-such-branch"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no-such-branch"),
        "{body}"
    );
    let (_, after) = get(h, &u.cookie, "/api/sessions").await;
    assert_eq!(before, after);
    assert_eq!(git(&u.worktree, &["branch", "--list", "duraclaw/*"]), "");

    let a = start_in_new_worktree(h, &u.cookie, &u.worktree).await;
    let b = start_in_new_worktree(h, &u.cookie, &u.worktree).await;
    let wa = moved_worktree(h, &u.cookie, &a, &u.worktree).await;
    let wb = moved_worktree(h, &u.cookie, &b, &u.worktree).await;
    assert_ne!(wa, wb);
    assert!(std::path::Path::new(&wa).join("README.md").exists());

    // The diff: what the agent would have changed, as git shows it.
    std::fs::write(
        std::path::Path::new(&wa).join("README.md"),
        "# app\nchanged <b>x</b>\n",
    )
    .unwrap();
    let (status, diff) = get(h, &u.cookie, &format!("/api/sessions/{a}/diff")).await;
    assert_eq!(status, 200, "{diff}");
    let base = diff["base"].as_str().unwrap().to_owned();
    assert_eq!(git(&wa, &["rev-parse", "HEAD"]).trim(), base);
    let files = diff["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{diff}");
    assert_eq!(files[0]["path"], "README.md");
    assert_eq!(files[0]["additions"], 1);
    let expected = git(&wa, &["diff", &base]);
    assert_eq!(files[0]["patch"].as_str().unwrap(), expected);
    let r = http()
        .get(format!("{}/api/sessions/{a}/diff?format=patch", h.base()))
        .header("cookie", &u.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/x-diff")
    );
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".patch")
    );
    assert_eq!(r.text().await.unwrap(), expected);

    // Another user sees neither the diff nor the close.
    h.add_user("fresh-outsider", PASSWORD).await;
    let stranger = login(h, "fresh-outsider", PASSWORD).await;
    let (status, _) = get(h, &stranger, &format!("/api/sessions/{a}/diff")).await;
    assert_eq!(status, 404);
    let close = |id: &str| format!("/api/sessions/{id}/close");
    let (status, _) = post(
        h,
        &stranger,
        h.origin(),
        &close(&a),
        json!({"worktree": "remove", "force": true}),
    )
    .await;
    assert_eq!(status, 404);
    assert!(std::path::Path::new(&wa).exists());

    // Remove: refused while dirty, nothing changes; forced, it goes.
    let (status, body) = post(
        h,
        &u.cookie,
        h.origin(),
        &close(&a),
        json!({"worktree": "bin"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        h,
        &u.cookie,
        h.origin(),
        &close(&a),
        json!({"worktree": "remove"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("uncommitted changes: README.md"),
        "{body}"
    );
    assert!(std::path::Path::new(&wa).join("README.md").exists());
    let (_, meta) = get(h, &u.cookie, &format!("/api/sessions/{a}")).await;
    assert_ne!(meta["state"], "terminated", "{meta}");
    let (status, meta) = post(
        h,
        &u.cookie,
        h.origin(),
        &close(&a),
        json!({"worktree": "remove", "force": true}),
    )
    .await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["state"], "terminated", "{meta}");
    assert!(!std::path::Path::new(&wa).exists());

    // Keep: the worktree stays; removing it later (clean) takes it.
    let (status, meta) = post(
        h,
        &u.cookie,
        h.origin(),
        &close(&b),
        json!({"worktree": "keep"}),
    )
    .await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["state"], "terminated", "{meta}");
    assert!(std::path::Path::new(&wb).join("README.md").exists());
    let (status, meta) = post(
        h,
        &u.cookie,
        h.origin(),
        &close(&b),
        json!({"worktree": "remove"}),
    )
    .await;
    assert_eq!(status, 200, "{meta}");
    assert!(!std::path::Path::new(&wb).exists());
    // The repository's own worktree is never removed.
    let c = create_session(h, &u.cookie, "fresh", "build it").await;
    let (status, body) = post(
        h,
        &u.cookie,
        h.origin(),
        &close(&c),
        json!({"worktree": "remove", "force": true}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(std::path::Path::new(&u.worktree).join("README.md").exists());
}
