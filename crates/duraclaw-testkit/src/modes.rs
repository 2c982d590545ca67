//! Permission modes and models switched mid-session, as a client sees
//! them, written once and run on each host as a case of the API suite
//! ([`crate::api::cases`]) with the REAL Claude Code CLI against the fake
//! Anthropic API.

use serde_json::{Value, json};

use crate::browser::{Browser, is};
use crate::host::{Host, create_session, login, worktree};
use crate::rules::{close, restart_gateway};

/// The plan the model proposes through ExitPlanMode.
pub const PLAN: &str = "# Plan\n\n1. Write `plan.txt`.\n2. <b>Done</b>.";

/// A model name the fake Anthropic API answers 404 for.
const UNKNOWN_MODEL: &str = "claude-nonexistent-9";

/// A `notice` with `code` (and, when given, `field` = `value`).
fn notice(
    code: &'static str,
    field: &'static str,
    value: Option<String>,
) -> impl Fn(&Value) -> bool {
    move |e| {
        e["type"] == "notice"
            && e["code"] == code
            && value.as_ref().is_none_or(|v| e[field] == v.as_str())
    }
}

/// Sends a browser command and returns its `command_result`.
async fn command(b: &mut Browser, id: &str, command: Value) -> Value {
    b.command(id, command).await
}

/// With the real CLI: `set_mode` refuses bypassing modes and unknown ones
/// with a clear error; switched to `plan`, the CLI reports the mode (a
/// `mode_changed` notice) and the next turn's `Write` is refused unasked,
/// the file not made; the plan arrives as an ExitPlanMode approval whose
/// input carries it, and approving it brings `default` back; `set_model`
/// to an unknown model logs a `change_failed` notice, to an alias a
/// `model_changed` notice whose model the next turn's `session.init` and
/// API request use. The scripted gateway is back after.
pub async fn modes_and_models_with_the_real_cli(h: &dyn Host, name: &str) {
    use duraclaw_fake_anthropic::{FakeAnthropic, Options, Turn};
    let cookie = login(h, name, crate::api::PASSWORD).await;
    let wt = std::path::PathBuf::from(worktree(h, name));
    let blocked = wt.join("plan.txt");
    let fake = FakeAnthropic::start_with(
        [
            Turn::text("Hello."),
            Turn::text("Writing it.").with_tool_use_id(
                "toolu_w1",
                "Write",
                json!({"file_path": blocked.display().to_string(), "content": "x\n"}),
            ),
            Turn::text("Not written: plan mode."),
            Turn::text("Here is my plan.").with_tool_use_id(
                "toolu_p1",
                "ExitPlanMode",
                json!({"plan": PLAN}),
            ),
            Turn::text("Plan approved."),
            Turn::text("On the new model."),
        ],
        Options {
            unknown_models: vec![UNKNOWN_MODEL.to_owned()],
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let env = crate::browser_suite::claude_setup(h.root(), &fake);
    restart_gateway(h, &cookie, Some(&env)).await;
    let id = create_session(h, &cookie, name, "Say hello").await;
    let mut b = Browser::connect(h.base(), &cookie, &id, 0).await;
    b.until(is("result")).await;

    let bypass = command(
        &mut b,
        "m-1",
        json!({"type": "set_mode", "mode": "bypassPermissions"}),
    )
    .await;
    let auto = command(&mut b, "m-2", json!({"type": "set_mode", "mode": "auto"})).await;
    let unknown = command(&mut b, "m-3", json!({"type": "set_mode", "mode": "yolo"})).await;
    let bad_model = command(
        &mut b,
        "m-4",
        json!({"type": "set_model", "model": "no spaces"}),
    )
    .await;
    let plan = command(&mut b, "m-5", json!({"type": "set_mode", "mode": "plan"})).await;
    let in_plan = b
        .until(notice(
            "mode_changed",
            "permission_mode",
            Some("plan".into()),
        ))
        .await;

    let sent = command(
        &mut b,
        "t-2",
        json!({"type": "message", "text": "Write plan.txt"}),
    )
    .await;
    let refused = b
        .until(|e: &Value| e["type"] == "tool_result" && e["tool_use_id"] == "toolu_w1")
        .await;
    b.until(is("result")).await;
    let asked_write = b
        .events
        .iter()
        .any(|(_, e)| e["type"] == "user_question" && e["tool_name"] == "Write");
    let written = blocked.exists();

    command(&mut b, "t-3", json!({"type": "message", "text": "Plan it"})).await;
    let q = b.until(is("user_question")).await;
    let allowed = command(
        &mut b,
        "a-3",
        json!({"type": "answer", "question_id": q["question_id"], "decision": "allow"}),
    )
    .await;
    let back = b
        .until(notice(
            "mode_changed",
            "permission_mode",
            Some("default".into()),
        ))
        .await;
    b.until(is("result")).await;

    let unknown_model = command(
        &mut b,
        "m-6",
        json!({"type": "set_model", "model": UNKNOWN_MODEL}),
    )
    .await;
    let failed = b.until(notice("change_failed", "code", None)).await;
    let switched = command(&mut b, "m-7", json!({"type": "set_model", "model": "opus"})).await;
    let changed = b.until(notice("model_changed", "code", None)).await;
    let model = changed["model"].as_str().unwrap_or("").to_owned();
    let seq = b.last_seq();
    command(&mut b, "t-4", json!({"type": "message", "text": "Again"})).await;
    let init = b.until_after(seq, is("session.init")).await;
    b.until(is("result")).await;
    let last_request = fake
        .model_requests()
        .last()
        .map(|r| r.body["model"].clone())
        .unwrap_or(Value::Null);
    close(h, &cookie, &id).await;
    restart_gateway(h, &cookie, None).await;

    let events = &b.events;
    for (r, why) in [
        (&bypass, "refused"),
        (&auto, "refused"),
        (&unknown, "unknown permission mode"),
    ] {
        assert_eq!(r["ok"], false, "{r}");
        let message = r["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(why), "{r}");
        assert!(message.contains("default, acceptEdits, plan"), "{r}");
    }
    assert_eq!(bad_model["ok"], false, "{bad_model}");
    assert_eq!(plan["ok"], true, "{plan}");
    assert!(
        in_plan["message"].as_str().unwrap_or("").contains("plan"),
        "{in_plan}"
    );
    assert_eq!(sent["ok"], true, "{sent}");
    assert_eq!(refused["is_error"], true, "{refused}");
    assert!(
        !asked_write,
        "a Write was asked about in plan mode: {events:?}"
    );
    assert!(!written, "plan mode let the Write through");
    assert_eq!(q["tool_name"], "ExitPlanMode", "{q}");
    assert_eq!(q["input"]["plan"], PLAN, "{q}");
    assert_eq!(allowed["ok"], true, "{allowed}");
    assert_eq!(back["permission_mode"], "default", "{back}");
    assert_eq!(unknown_model["ok"], true, "{unknown_model}");
    assert!(
        failed["message"].as_str().unwrap_or("").contains("model"),
        "{failed}"
    );
    assert!(
        failed["command_id"].as_str().unwrap_or("").ends_with("m-6"),
        "{failed}"
    );
    assert_eq!(switched["ok"], true, "{switched}");
    assert!(!model.is_empty(), "{changed}");
    assert_eq!(init["model"], model.as_str(), "{init}");
    assert_eq!(
        last_request,
        model.as_str(),
        "the next API request uses the new model"
    );
}

/// A mode and a model switched mid-session hold across a gateway restart
/// (the scripted executor): the relaunched executor's `session.init`
/// reports both, and the session's metadata shows them.
pub async fn a_switched_mode_and_model_survive_a_gateway_restart(h: &dyn Host, name: &str) {
    let cookie = login(h, name, crate::api::PASSWORD).await;
    let id = create_session(h, &cookie, name, "build it").await;
    let mut b = Browser::connect(h.base(), &cookie, &id, 0).await;
    let q = b.until(is("user_question")).await;
    let ok = command(
        &mut b,
        "a-1",
        json!({"type": "answer", "question_id": q["question_id"], "decision": "allow"}),
    )
    .await;
    assert_eq!(ok["ok"], true, "{ok}");
    b.until(is("result")).await;
    let plan = command(&mut b, "m-1", json!({"type": "set_mode", "mode": "plan"})).await;
    assert_eq!(plan["ok"], true, "{plan}");
    b.until(notice(
        "mode_changed",
        "permission_mode",
        Some("plan".into()),
    ))
    .await;
    let model = command(
        &mut b,
        "m-2",
        json!({"type": "set_model", "model": "claude-switched-1"}),
    )
    .await;
    assert_eq!(model["ok"], true, "{model}");
    b.until(notice(
        "model_changed",
        "model",
        Some("claude-switched-1".into()),
    ))
    .await;
    restart_gateway(h, &cookie, None).await;
    let seq = b.last_seq();
    let sent = command(&mut b, "t-2", json!({"type": "message", "text": "again"})).await;
    assert_eq!(sent["ok"], true, "{sent}");
    let init = b.until_after(seq, is("session.init")).await;
    b.until_after(seq, is("result")).await;
    let (_, meta) = crate::rules::send(
        h,
        reqwest::Method::GET,
        &cookie,
        &format!("/api/sessions/{id}"),
        None,
    )
    .await;
    close(h, &cookie, &id).await;
    assert_eq!(init["permission_mode"], "plan", "{init}");
    assert_eq!(init["model"], "claude-switched-1", "{init}");
    assert_eq!(meta["permission_mode"], "plan", "{meta}");
    assert_eq!(meta["model"], "claude-switched-1", "{meta}");
}
