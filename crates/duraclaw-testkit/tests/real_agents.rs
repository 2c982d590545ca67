#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Real agents over the Agent Client Protocol against fakes of their model
//! APIs on 127.0.0.1, driven by the minimal ACP client of
//! `duraclaw_testkit::acp_client` (not yet through the gateway): Codex,
//! Claude through `claude-agent-acp`, and the Gemini CLI.
//!
//! The real Codex, through the pinned `codex-acp`, against the fake OpenAI
//! API on 127.0.0.1: configured by a `config.toml` model provider in its
//! own `CODEX_HOME`, it streams the fake's scripted text back over the
//! Agent Client Protocol, and a function call the fake scripts asks the
//! client's permission before it runs; allowed, the command runs in the
//! session's directory and its output goes back to the model.

use duraclaw_fake_openai::{FakeOpenAi, Turn};
use duraclaw_testkit::acp_client::{Agent, Permission, tool};
use serde_json::json;

const KEY_VAR: &str = "DURACLAW_FAKE_OPENAI_KEY";
const KEY: &str = "sk-fake-openai-0123456789";
/// A model of Codex's own catalog (an unknown one gets a warning in the transcript).
const MODEL: &str = "gpt-5.3-codex";

fn codex_acp() -> std::path::PathBuf {
    tool(
        "CODEX_ACP_BIN",
        "codex-acp-0.16.0/node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp",
        "codex-acp",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_streams_the_fakes_text_and_asks_before_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (home, work) = (root.join("codex-home"), root.join("work"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("README.md"), "# app\n").unwrap();

    let fake = FakeOpenAi::start([
        Turn::text("Hello from the fake OpenAI API."),
        // Outside the sandbox: Codex asks before it runs it.
        Turn::function_call(
            "exec_command",
            json!({"cmd": "echo made > made.txt && echo ran", "tty": false,
                "sandbox_permissions": "require_escalated",
                "justification": "make a file"}),
            "call_1",
        ),
        Turn::text("The command ran."),
        Turn::function_call(
            "exec_command",
            json!({"cmd": "echo no > denied.txt", "tty": false,
                "sandbox_permissions": "require_escalated",
                "justification": "write another file"}),
            "call_2",
        ),
    ])
    .await
    .unwrap();
    std::fs::write(home.join("config.toml"), fake.codex_config(MODEL, KEY_VAR)).unwrap();
    let env = [
        ("CODEX_HOME", home.display().to_string()),
        ("HOME", root.display().to_string()),
        (KEY_VAR, KEY.to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let log = root.join("codex-acp.log");
    let mut agent = Agent::spawn(&codex_acp(), &[], &work, &env, &log);
    let init = agent.initialize().await;
    assert_eq!(init["protocolVersion"], 1, "{init}");
    let session = agent.new_session(&work).await;

    let stop = agent.prompt(&session, "say hello").await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(stop, "end_turn", "{:?}\n{}", agent.updates, log_text());
    assert_eq!(
        agent.agent_text(),
        "Hello from the fake OpenAI API.",
        "{:?}",
        agent.updates
    );
    let first = &fake.model_requests()[0];
    assert_eq!(
        first.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(first.body["model"], MODEL);
    assert_eq!(first.body["stream"], true);
    assert!(
        first.user_texts().iter().any(|t| t.contains("say hello")),
        "{:?}",
        first.body
    );
    eprintln!("tools offered: {:?}", first.tool_names());

    eprintln!("kinds: {:?}", agent.kinds());

    agent.answer = Permission::AllowOnce;
    let stop = agent.prompt(&session, "make a file").await;
    assert_eq!(stop, "end_turn", "{:?}\n{}", agent.updates, log_text());
    assert_eq!(agent.permissions.len(), 1, "{:?}", agent.updates);
    let asked = &agent.permissions[0];
    assert_eq!(asked["toolCall"]["toolCallId"], "call_1", "{asked}");
    assert_eq!(asked["toolCall"]["kind"], "execute", "{asked}");
    let kinds: Vec<&str> = asked["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["allow_once", "allow_always", "reject_once"],
        "{asked}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("made.txt")).unwrap(),
        "made\n"
    );
    let requests = fake.model_requests();
    let outputs = requests.last().unwrap().function_outputs();
    assert!(
        outputs
            .iter()
            .any(|(id, out)| id == "call_1" && out.contains("ran")),
        "{outputs:?}"
    );
    assert!(
        agent.agent_text().ends_with("The command ran."),
        "{}",
        agent.agent_text()
    );
    let kinds = agent.kinds();
    assert!(
        kinds.iter().any(|k| k == "tool_call") && kinds.iter().any(|k| k == "tool_call_update"),
        "{kinds:?}"
    );

    // Rejected ("abort"): the command does not run and the turn ends
    // cancelled, with no further model request.
    agent.answer = Permission::RejectOnce;
    let stop = agent.prompt(&session, "write another").await;
    assert_eq!(agent.permissions.len(), 2, "{:?}", agent.updates);
    assert!(!work.join("denied.txt").exists(), "a rejected command ran");
    assert_eq!(stop, "cancelled", "{}", log_text());
    assert_eq!(fake.model_requests().len(), 4);
    // Everything went to the fake: the Responses API, nothing else.
    for r in fake.requests() {
        assert!(r.is_model_request(), "{} {}", r.method, r.path);
    }
    agent.kill().await;
}

fn claude_agent_acp() -> std::path::PathBuf {
    tool(
        "CLAUDE_AGENT_ACP_BIN",
        "claude-agent-acp-0.23.1/bin/claude-agent-acp",
        "claude-agent-acp",
    )
}

/// Claude Code through the pinned `claude-agent-acp` (its bundled CLI)
/// against the fake Anthropic API (`ANTHROPIC_BASE_URL`): the fake's text
/// streams back, and a `Bash` call asks the client's permission; allowed,
/// it runs in the session's directory and its output goes back to the
/// model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_through_acp_streams_the_fakes_text_and_asks_before_bash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let fake = duraclaw_fake_anthropic::FakeAnthropic::start([
        duraclaw_fake_anthropic::Turn::text("Hello from the fake Anthropic API."),
        duraclaw_fake_anthropic::Turn::text("Making the file.").with_tool_use_id(
            "toolu_acp_1",
            "Bash",
            json!({"command": "echo made > made.txt && echo ran", "description": "make a file"}),
        ),
        duraclaw_fake_anthropic::Turn::text("The command ran."),
    ])
    .await
    .unwrap();
    let env = duraclaw_testkit::browser_suite::claude_setup(&root, &fake);
    let work = root
        .join("projects")
        .join(duraclaw_testkit::browser_suite::CLAUDE_WORKTREE);
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let log = root.join("claude-agent-acp.log");
    let mut agent = Agent::spawn(&claude_agent_acp(), &[], &work, &env, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let init = agent.initialize().await;
    assert_eq!(init["protocolVersion"], 1, "{init}");
    let session = agent.new_session(&work).await;

    let stop = agent.prompt(&session, "say hello").await;
    assert_eq!(stop, "end_turn", "{:?}\n{}", agent.updates, log_text());
    assert_eq!(
        agent.agent_text(),
        "Hello from the fake Anthropic API.",
        "{:?}",
        agent.updates
    );

    agent.answer = Permission::AllowOnce;
    let stop = agent.prompt(&session, "make a file").await;
    assert_eq!(stop, "end_turn", "{:?}\n{}", agent.updates, log_text());
    assert_eq!(agent.permissions.len(), 1, "{:?}", agent.updates);
    let asked = &agent.permissions[0];
    assert_eq!(asked["toolCall"]["toolCallId"], "toolu_acp_1", "{asked}");
    let kinds: Vec<&str> = asked["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["allow_always", "allow_once", "reject_once"],
        "{asked}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("made.txt")).unwrap(),
        "made\n"
    );
    let ran = fake
        .model_requests()
        .iter()
        .flat_map(|r| r.tool_results().into_iter().cloned())
        .any(|r| r.to_string().contains("ran"));
    assert!(ran, "the command's output went back to the model");
    assert!(
        agent.agent_text().ends_with("The command ran."),
        "{}",
        agent.agent_text()
    );
    let kinds = agent.kinds();
    assert!(
        kinds.iter().any(|k| k == "tool_call") && kinds.iter().any(|k| k == "tool_call_update"),
        "{kinds:?}"
    );
    agent.kill().await;
}

fn gemini() -> std::path::PathBuf {
    tool(
        "GEMINI_CLI_BIN",
        "gemini-cli-0.61.0/bin/gemini",
        "gemini-cli",
    )
}

/// The real Gemini CLI (`gemini --acp`) against the fake Gemini API
/// (`GOOGLE_GEMINI_BASE_URL`): the fake's text streams back, and a shell
/// command asks the client's permission before it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_streams_the_fakes_text_and_asks_before_a_command() {
    use duraclaw_fake_gemini::{FakeGemini, Turn as G};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (home, work) = (root.join("home"), root.join("work"));
    std::fs::create_dir_all(home.join(".gemini")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    // No usage statistics or update checks: nothing leaves 127.0.0.1.
    std::fs::write(
        home.join(".gemini/settings.json"),
        r#"{"privacy":{"usageStatisticsEnabled":false},"general":{"disableAutoUpdate":true,"disableUpdateNag":true}}"#,
    )
    .unwrap();
    let fake = FakeGemini::start([
        G::text("Hello from the fake Gemini API."),
        G::function_call(
            "run_shell_command",
            json!({"command": "echo made > made.txt && echo ran", "description": "make a file"}),
        ),
        G::text("The command ran."),
    ])
    .await
    .unwrap();
    let env = [
        ("HOME", home.display().to_string()),
        ("GOOGLE_GEMINI_BASE_URL", fake.base_url()),
        ("GEMINI_API_KEY", "fake-gemini-key".to_owned()),
        ("GEMINI_CLI_NO_RELAUNCH", "true".to_owned()),
    ];
    let log = root.join("gemini.log");
    let mut agent = Agent::spawn(&gemini(), &["--acp"], &work, &env, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let init = agent.initialize().await;
    assert_eq!(init["protocolVersion"], 1, "{init}");
    let session = agent.new_session(&work).await;

    let stop = agent.prompt(&session, "say hello").await;
    assert_eq!(stop, "end_turn", "{:?}\n{}", agent.updates, log_text());
    assert_eq!(
        agent.agent_text(),
        "Hello from the fake Gemini API.",
        "{:?}",
        agent.updates
    );
    let first = &fake.stream_requests()[0];
    assert_eq!(first.header("x-goog-api-key"), Some("fake-gemini-key"));
    assert!(
        first.tool_names().iter().any(|t| t == "run_shell_command"),
        "{:?}",
        first.tool_names()
    );

    agent.answer = Permission::AllowOnce;
    let stop = agent.prompt(&session, "make a file").await;
    assert_eq!(stop, "end_turn", "{:?}\n{}", agent.updates, log_text());
    assert_eq!(agent.permissions.len(), 1, "{:?}", agent.updates);
    let asked = &agent.permissions[0];
    assert_eq!(asked["toolCall"]["kind"], "execute", "{asked}");
    let kinds: Vec<&str> = asked["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["allow_always", "allow_once", "reject_once"],
        "{asked}"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("made.txt")).unwrap(),
        "made\n"
    );
    let back = fake.stream_requests().last().unwrap().function_responses();
    assert!(
        back.iter()
            .any(|(name, r)| name == "run_shell_command" && r.to_string().contains("ran")),
        "{back:?}"
    );
    assert!(
        agent.agent_text().ends_with("The command ran."),
        "{}",
        agent.agent_text()
    );
    assert!(
        agent.kinds().iter().any(|k| k == "tool_call_update"),
        "{:?}",
        agent.kinds()
    );
    // Only the Gemini API's routes were asked (the model router's
    // `:generateContent`, refused, falls back to the default model).
    for r in fake.requests() {
        assert!(
            r.path.starts_with("/v1beta/models/"),
            "{} {}",
            r.method,
            r.path
        );
    }
    agent.kill().await;
}
