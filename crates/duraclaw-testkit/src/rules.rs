//! Approval rules as a client sees them, written once and run on each host
//! as cases of the API suite ([`crate::api::cases`]): the `/api/rules`
//! routes (ownership, presets, clear 400s), a rule deciding a tool call
//! with a `rule_decision` notice naming it, a deny beating a session
//! allow, and "always allow for this worktree" from the prompt.
//!
//! The hosts run the scripted executor ([`crate::host::SCRIPT`]: one
//! `Bash` call, `make`), which asks the same gate the Claude Code executor
//! does; one case runs the real Claude Code CLI against the fake Anthropic
//! API ("reads are free").

use serde_json::{Value, json};

use crate::browser::{Browser, is, state_is};
use crate::host::{Host, create_session, http, login, worktree};

/// `method` on `path` of the host, as the browser of login `cookie` (none
/// when empty) sends it: the status and the JSON body (`Null` if none).
pub(crate) async fn send(
    h: &dyn Host,
    method: reqwest::Method,
    cookie: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http()
        .request(method, format!("{}{path}", h.base()))
        .header("origin", h.origin());
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn add_rule(h: &dyn Host, cookie: &str, body: Value) -> (u16, Value) {
    send(h, reqwest::Method::POST, cookie, "/api/rules", Some(body)).await
}

async fn rules(h: &dyn Host, cookie: &str) -> Vec<Value> {
    let (status, body) = send(h, reqwest::Method::GET, cookie, "/api/rules", None).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

/// `GET /api/sessions/{id}`: the status and the session's metadata.
pub(crate) async fn session_meta(h: &dyn Host, cookie: &str, id: &str) -> (u16, Value) {
    send(
        h,
        reqwest::Method::GET,
        cookie,
        &format!("/api/sessions/{id}"),
        None,
    )
    .await
}

pub(crate) async fn close(h: &dyn Host, cookie: &str, id: &str) {
    let (status, body) = send(
        h,
        reqwest::Method::POST,
        cookie,
        &format!("/api/sessions/{id}/close"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A `notice` with code `rule_decision` naming `rule` at `scope`.
fn decided_by(
    rule: &'static str,
    scope: &'static str,
    action: &'static str,
) -> impl Fn(&Value) -> bool {
    move |e| {
        e["type"] == "notice"
            && e["code"] == "rule_decision"
            && e["rule"]["rule"] == rule
            && e["rule"]["scope"] == scope
            && e["rule"]["action"] == action
    }
}

/// The routes: malformed rules get a 400 that says why, a rule is added
/// (201), listed, and removed (204); another user's rule is a 404 and is
/// not in their list; a preset adds its rules.
pub async fn the_rules_api_checks_owns_and_presets(h: &dyn Host, alice_name: &str, bob_name: &str) {
    let alice = login(h, alice_name, crate::api::PASSWORD).await;
    let bob = login(h, bob_name, crate::api::PASSWORD).await;
    for (body, says) in [
        (
            json!({"scope": "user", "rule": "Bash(git status", "action": "allow"}),
            "must end with `)`",
        ),
        (
            json!({"scope": "user", "rule": "Task(x)", "action": "allow"}),
            "takes no pattern",
        ),
        (
            json!({"scope": "user", "rule": "Edit(../x)", "action": "allow"}),
            "cannot contain `..`",
        ),
        (
            json!({"scope": "user", "rule": "", "action": "allow"}),
            "names no tool",
        ),
        (
            json!({"scope": "nowhere", "rule": "Read", "action": "allow"}),
            "unknown scope",
        ),
        (
            json!({"scope": "user", "rule": "Read", "action": "sometimes"}),
            "unknown action",
        ),
        (
            json!({"scope": "worktree", "rule": "Read", "action": "allow"}),
            "needs `worktree`",
        ),
        (
            json!({"scope": "session", "rule": "Read", "action": "allow"}),
            "needs `session_id`",
        ),
    ] {
        let (status, answer) = add_rule(h, &alice, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{body}: {answer}"
        );
    }
    assert!(rules(h, &alice).await.is_empty());
    let (status, added) = add_rule(
        h,
        &alice,
        json!({"scope": "user", "rule": "Bash(git status*)", "action": "allow"}),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(
        (&added["scope"], &added["rule"], &added["action"]),
        (&json!("user"), &json!("Bash(git status*)"), &json!("allow"))
    );
    let id = added["id"].as_str().unwrap().to_owned();
    assert_eq!(rules(h, &alice).await, vec![added.clone()]);
    // Bob sees none of it and cannot remove it.
    assert!(rules(h, &bob).await.is_empty());
    let (status, _) = send(
        h,
        reqwest::Method::DELETE,
        &bob,
        &format!("/api/rules/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Nor name alice's session for a rule of his.
    let session = create_session(h, &alice, alice_name, "build it").await;
    let (status, _) = add_rule(
        h,
        &bob,
        json!({"scope": "session", "session_id": session, "rule": "Bash", "action": "allow"}),
    )
    .await;
    assert_eq!(status, 404);
    close(h, &alice, &session).await;
    assert_eq!(rules(h, &alice).await.len(), 1);
    let (status, _) = send(
        h,
        reqwest::Method::DELETE,
        &alice,
        &format!("/api/rules/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(rules(h, &alice).await.is_empty());

    let (status, presets) = send(h, reqwest::Method::GET, &alice, "/api/rules/presets", None).await;
    assert_eq!(status, 200);
    assert!(
        presets
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "reads_free"),
        "{presets}"
    );
    let (status, added) = send(
        h,
        reqwest::Method::POST,
        &alice,
        "/api/rules/preset",
        Some(json!({"preset": "reads_free"})),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let texts: Vec<&str> = added
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Read", "Glob", "Grep", "LS"]);
    let (status, bad) = send(
        h,
        reqwest::Method::POST,
        &alice,
        "/api/rules/preset",
        Some(json!({"preset": "yolo"})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(rules(h, &alice).await.len(), 4);
}

/// A deny on `Bash(make*)` for the user beats an allow on `Bash` for the
/// session: the call is denied without a question, with a `rule_decision`
/// naming the deny. A rule added while the session runs reaches it.
pub async fn a_deny_beats_a_session_allow(h: &dyn Host, name: &str) {
    let cookie = login(h, name, crate::api::PASSWORD).await;
    let (status, body) = add_rule(
        h,
        &cookie,
        json!({"scope": "user", "rule": "Bash(make*)", "action": "deny"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = create_session(h, &cookie, name, "build it").await;
    let (status, body) = add_rule(
        h,
        &cookie,
        json!({"scope": "session", "session_id": id, "rule": "Bash", "action": "allow"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut b = Browser::connect(h.base(), &cookie, &id, 0).await;
    b.until(decided_by("Bash(make*)", "user", "deny")).await;
    b.until(is("result")).await;
    assert!(
        !b.events.iter().any(|(_, e)| e["type"] == "user_question"),
        "{:?}",
        b.events
    );
    close(h, &cookie, &id).await;
}

/// "Always allow for this worktree" from the prompt: the answer adds the
/// rule shown for the session's worktree and allows; the next session of
/// that user there is not asked (a `rule_decision` names the rule); a
/// session of another user in the same worktree is asked.
pub async fn always_allow_for_this_worktree(h: &dyn Host, alice_name: &str, bob_name: &str) {
    let alice = login(h, alice_name, crate::api::PASSWORD).await;
    let bob = login(h, bob_name, crate::api::PASSWORD).await;
    let wt = worktree(h, alice_name);
    let first = create_session(h, &alice, alice_name, "build it").await;
    let mut b = Browser::connect(h.base(), &alice, &first, 0).await;
    let q = b.until(is("user_question")).await;
    let qid = q["question_id"].as_str().unwrap().to_owned();
    // A malformed rule is refused and decides nothing.
    let refused = b
        .command(
            "a-0",
            json!({"type": "answer", "question_id": qid, "decision": "allow",
                   "allow_worktree_rule": "Bash(make"}),
        )
        .await;
    assert_eq!(
        (&refused["ok"], &refused["error"]["code"]),
        (&json!(false), &json!("bad_rule")),
        "{refused}"
    );
    let ok = b
        .command(
            "a-1",
            json!({"type": "answer", "question_id": qid, "decision": "allow",
                   "allow_worktree_rule": "Bash(make)"}),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    b.until(is("result")).await;
    let listed = rules(h, &alice).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            &listed[0]["scope"],
            &listed[0]["worktree"],
            &listed[0]["rule"],
            &listed[0]["action"]
        ),
        (
            &json!("worktree"),
            &json!(wt),
            &json!("Bash(make)"),
            &json!("allow")
        )
    );
    close(h, &alice, &first).await;

    // The next session there is not asked.
    let second = create_session(h, &alice, alice_name, "build it again").await;
    allowed_by_worktree_rule(h, &alice, &second, "Bash(make)").await;

    // Another user's session in the same worktree is asked.
    let theirs = create_session_in(h, &bob, &wt, "build it too").await;
    asked_with_no_rule(h, &bob, &theirs).await;
}

/// "Always allow for this worktree" from the prompt of a session in a new
/// worktree made from a repository: the rule names the repository (the
/// worktree notice's `origin`), so the next new-worktree session of that
/// user from it is not asked (a `rule_decision` names the rule); a
/// new-worktree session of another user from it is asked.
pub async fn always_allow_in_new_worktrees(h: &dyn Host, alice_name: &str, bob_name: &str) {
    use crate::api::start_in_new_worktree;
    let alice = login(h, alice_name, crate::api::PASSWORD).await;
    let bob = login(h, bob_name, crate::api::PASSWORD).await;
    let repo = worktree(h, alice_name);
    let first = start_in_new_worktree(h, &alice, &repo).await;
    let mut b = Browser::connect(h.base(), &alice, &first, 0).await;
    let made = b
        .until(|e: &Value| e["type"] == "notice" && e["code"] == "worktree")
        .await;
    assert_eq!(made["worktree"]["created"], true, "{made}");
    assert_eq!(made["worktree"]["origin"], repo.as_str(), "{made}");
    assert_ne!(made["worktree"]["path"], repo.as_str(), "{made}");
    let q = b.until(is("user_question")).await;
    let ok = b
        .command(
            "a-1",
            json!({"type": "answer", "question_id": q["question_id"], "decision": "allow",
                   "allow_worktree_rule": "Bash(make)"}),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    b.until(is("result")).await;
    let listed = rules(h, &alice).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            &listed[0]["scope"],
            &listed[0]["worktree"],
            &listed[0]["rule"]
        ),
        (&json!("worktree"), &json!(repo), &json!("Bash(make)"))
    );
    let (_, meta) = session_meta(h, &alice, &first).await;
    assert_eq!(meta["origin"], repo.as_str(), "{meta}");
    close(h, &alice, &first).await;

    // The next new worktree from the repository is not asked.
    let second = start_in_new_worktree(h, &alice, &repo).await;
    let b = allowed_by_worktree_rule(h, &alice, &second, "Bash(make)").await;

    // A fork of it runs in its worktree with the repository's rules.
    let message = b
        .events
        .iter()
        .find(|(_, e)| e["type"] == "user.message")
        .map(|(s, _)| *s)
        .unwrap();
    let (status, fork) = send(
        h,
        reqwest::Method::POST,
        &alice,
        &format!("/api/sessions/{second}/fork"),
        Some(json!({"from_seq": message, "prompt": "again"})),
    )
    .await;
    assert_eq!(status, 201, "{fork}");
    let fork_id = fork["session_id"].as_str().unwrap().to_owned();
    let mut fb = Browser::connect(h.base(), &alice, &fork_id, 0).await;
    fb.until(is("result")).await;
    let (_, fork) = session_meta(h, &alice, &fork_id).await;
    assert_eq!(fork["origin"], repo.as_str(), "{fork}");
    assert_ne!(fork["worktree"], repo.as_str(), "{fork}");
    close(h, &alice, &fork_id).await;

    // Another user's new worktree from it is asked.
    let theirs = start_in_new_worktree(h, &bob, &repo).await;
    asked_with_no_rule(h, &bob, &theirs).await;
}

/// Session `id` runs to its result unasked, allowed by the worktree rule
/// `rule`; then it is closed. The browser that watched it.
async fn allowed_by_worktree_rule(
    h: &dyn Host,
    cookie: &str,
    id: &str,
    rule: &'static str,
) -> Browser {
    let mut b = Browser::connect(h.base(), cookie, id, 0).await;
    b.until(decided_by(rule, "worktree", "allow")).await;
    b.until(is("result")).await;
    assert!(
        !b.events.iter().any(|(_, e)| e["type"] == "user_question"),
        "{:?}",
        b.events
    );
    close(h, cookie, id).await;
    b
}

/// Session `id` asks and waits for the answer, no rule deciding it; then
/// it is closed.
async fn asked_with_no_rule(h: &dyn Host, cookie: &str, id: &str) {
    let mut b = Browser::connect(h.base(), cookie, id, 0).await;
    b.until(is("user_question")).await;
    b.until(state_is("paused", Some("awaiting_approval"))).await;
    assert!(
        !b.events
            .iter()
            .any(|(_, e)| e["type"] == "notice" && e["code"] == "rule_decision"),
        "{:?}",
        b.events
    );
    close(h, cookie, id).await;
}

async fn create_session_in(h: &dyn Host, cookie: &str, wt: &str, prompt: &str) -> String {
    let (status, body) = send(
        h,
        reqwest::Method::POST,
        cookie,
        "/api/sessions",
        Some(json!({"worktree": wt, "prompt": prompt})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["session_id"].as_str().unwrap().to_owned()
}

/// The Claude Code CLI the real-CLI case runs: `$CLAUDE_BIN`
/// (`scripts/tool-env.sh` sets it), else `claude` on `PATH`; missing, the
/// case fails (it never skips).
pub(crate) fn claude_bin() -> std::path::PathBuf {
    crate::local::env_path("CLAUDE_BIN")
        .or_else(|| crate::local::on_path("claude"))
        .unwrap_or_else(|| {
            panic!("the Claude Code CLI is missing: run `scripts/install-tools.sh claude` and `source scripts/tool-env.sh`")
        })
}

/// With "reads are free", the REAL Claude Code CLI (against the fake
/// Anthropic API) reads three files and edits one: it is asked once, about
/// the edit, and the log shows three `rule_decision` notices naming `Read`
/// at the user scope. The scripted gateway is back after.
pub async fn reads_free_with_the_real_cli(h: &dyn Host, name: &str) {
    use duraclaw_fake_anthropic::{FakeAnthropic, Turn};
    let cookie = login(h, name, crate::api::PASSWORD).await;
    let (status, added) = send(
        h,
        reqwest::Method::POST,
        &cookie,
        "/api/rules/preset",
        Some(json!({"preset": "reads_free"})),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    let wt = std::path::PathBuf::from(worktree(h, name));
    for (file, text) in [
        ("a.txt", "alpha\n"),
        ("b.txt", "beta\n"),
        ("c.txt", "gamma\n"),
    ] {
        std::fs::write(wt.join(file), text).unwrap();
    }
    let path = |f: &str| wt.join(f).display().to_string();
    let fake = FakeAnthropic::start([
        Turn::text("One.").with_tool_use_id(
            "toolu_r1",
            "Read",
            json!({"file_path": path("a.txt")}),
        ),
        Turn::text("Two.").with_tool_use_id(
            "toolu_r2",
            "Read",
            json!({"file_path": path("b.txt")}),
        ),
        Turn::text("Three.").with_tool_use_id(
            "toolu_r3",
            "Read",
            json!({"file_path": path("c.txt")}),
        ),
        Turn::text("Edit.").with_tool_use_id(
            "toolu_e1",
            "Edit",
            json!({"file_path": path("a.txt"), "old_string": "alpha", "new_string": "ALPHA"}),
        ),
        Turn::text("Read three, edited one."),
    ])
    .await
    .unwrap();
    let env = crate::browser_suite::claude_setup(h.root(), &fake);
    restart_gateway(h, &cookie, Some(&env)).await;
    let id = create_session(h, &cookie, name, "Read three files, edit one").await;
    let mut b = Browser::connect(h.base(), &cookie, &id, 0).await;
    let q = b.until(is("user_question")).await;
    assert_eq!(q["tool_name"], "Edit", "{:?}", b.events);
    let ok = b
        .command(
            "a-1",
            json!({"type": "answer", "question_id": q["question_id"], "decision": "allow"}),
        )
        .await;
    assert_eq!(ok["ok"], true, "{ok}");
    b.until(is("result")).await;
    let asked = b
        .events
        .iter()
        .filter(|(_, e)| e["type"] == "user_question")
        .count();
    let decided: Vec<&Value> = b
        .events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| decided_by("Read", "user", "allow")(e))
        .collect();
    let ids: Vec<&str> = decided
        .iter()
        .map(|e| e["tool_use_id"].as_str().unwrap_or(""))
        .collect();
    let edited = std::fs::read_to_string(wt.join("a.txt")).unwrap();
    close(h, &cookie, &id).await;
    restart_gateway(h, &cookie, None).await;
    assert_eq!(asked, 1, "{:?}", b.events);
    assert_eq!(ids, ["toolu_r1", "toolu_r2", "toolu_r3"], "{:?}", b.events);
    assert_eq!(edited, "ALPHA\n");
}

/// Restarts the host's gateway, running the real Claude Code CLI with
/// `claude_env` (`Some`, see `browser_suite::claude_setup`) or the scripted
/// executor (`None`), and waits for its link to drop and come back.
pub(crate) async fn restart_gateway(
    h: &dyn Host,
    cookie: &str,
    claude_env: Option<&[(String, String)]>,
) {
    h.kill_gateway().await;
    wait_link(h, cookie, false).await;
    match claude_env {
        Some(env) => h.start_gateway_with_claude(&claude_bin(), env).await,
        None => h.start_gateway().await,
    }
    wait_link(h, cookie, true).await;
}

/// Waits until the host's link to the gateway is down, or up to a gateway
/// that can run sessions (bounded).
pub(crate) async fn wait_link(h: &dyn Host, cookie: &str, up: bool) {
    let deadline = std::time::Instant::now() + crate::host::DEADLINE;
    loop {
        let (_, st) = send(h, reqwest::Method::GET, cookie, "/api/status", None).await;
        let connected = st["gateway"]["connected"] == true;
        if connected == up && (!up || st["gateway"]["executor_error"].is_null()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway link never became {}: {st}\n{}",
            if up { "up" } else { "down" },
            h.log_tails()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
