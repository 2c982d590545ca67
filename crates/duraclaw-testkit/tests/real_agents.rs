#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The pinned real agents over the Agent Client Protocol against fakes of
//! their model APIs on 127.0.0.1, each run from the agents-file entry of
//! `duraclaw_testkit::real_agents` by the minimal ACP client of
//! `duraclaw_testkit::acp_client` (not yet through the gateway): the
//! fake's text streams back, and a command the fake scripts asks the
//! client's permission first; allowed, it runs in the session's directory
//! and its output goes back to the model. The gateway reads the same
//! entries as its agents file and finds every agent runnable.

use std::path::Path;
use std::sync::Arc;

use duraclaw_fake_openai::{FakeOpenAi, Turn};
use duraclaw_testkit::acp_client::{Agent, Permission};
use duraclaw_testkit::real_agents::{self, CODEX_MODEL, GEMINI_KEY, OPENAI_KEY};
use serde_json::{Value, json};

/// The kinds of the options of a permission request, in order.
fn option_kinds(asked: &Value) -> Vec<&str> {
    asked["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect()
}

fn has_tool_updates(agent: &Agent) -> bool {
    agent.kinds().iter().any(|k| k == "tool_call_update")
}

/// A work directory with a file in it.
fn work(root: &Path) -> std::path::PathBuf {
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("README.md"), "# app\n").unwrap();
    work
}

/// Codex through `codex-acp`, configured by a `config.toml` model provider
/// in its own `CODEX_HOME`; a command outside its sandbox asks first, and a
/// rejected one does not run and ends the turn as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_streams_the_fakes_text_and_asks_before_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let work = work(&root);
    let fake = FakeOpenAi::start([
        Turn::text("Hello from the fake OpenAI API."),
        // Outside the sandbox: Codex asks before it runs it.
        Turn::function_call(
            "exec_command",
            json!({"cmd": "echo made > made.txt && echo ran", "tty": false}),
            "call_1",
        ),
        Turn::text("The command ran."),
        Turn::function_call(
            "exec_command",
            json!({"cmd": "echo no > denied.txt", "tty": false}),
            "call_2",
        ),
    ])
    .await
    .unwrap();
    let entry = real_agents::codex(&root, &fake);
    let log = root.join("codex-acp.log");
    let mut agent = Agent::spawn_entry(&entry, &work, &log);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let init = agent.initialize().await;
    assert_eq!(init["protocolVersion"], 1, "{init}");
    let session = agent.new_session(&work).await;

    let stop = agent.prompt(&session, "say hello").await;
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
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(first.body["model"], CODEX_MODEL);
    assert_eq!(first.body["stream"], true);
    assert!(
        first.user_texts().iter().any(|t| t.contains("say hello")),
        "{:?}",
        first.body
    );
    assert!(
        first.tool_names().iter().any(|t| t == "exec_command"),
        "{:?}",
        first.tool_names()
    );

    agent.answer = Permission::AllowOnce;
    let stop = agent.prompt(&session, "make a file").await;
    assert_eq!(stop, "end_turn", "{:?}\n{}", agent.updates, log_text());
    assert_eq!(agent.permissions.len(), 1, "{:?}", agent.updates);
    let asked = &agent.permissions[0];
    assert_eq!(asked["toolCall"]["toolCallId"], "call_1", "{asked}");
    assert_eq!(asked["toolCall"]["kind"], "execute", "{asked}");
    assert_eq!(
        option_kinds(asked),
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
    assert!(has_tool_updates(&agent), "{:?}", agent.kinds());

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

/// Claude Code through `claude-agent-acp` (its bundled CLI) against the
/// fake Anthropic API (`ANTHROPIC_BASE_URL`): a `Bash` call asks first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_through_acp_streams_the_fakes_text_and_asks_before_bash() {
    use duraclaw_fake_anthropic::{FakeAnthropic, Turn as A};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let fake = FakeAnthropic::start([
        A::text("Hello from the fake Anthropic API."),
        A::text("Making the file.").with_tool_use_id(
            "toolu_acp_1",
            "Bash",
            json!({"command": "echo made > made.txt && echo ran", "description": "make a file"}),
        ),
        A::text("The command ran."),
    ])
    .await
    .unwrap();
    let entry = real_agents::claude_acp(&root, &fake);
    let work = root
        .join("projects")
        .join(duraclaw_testkit::browser_suite::CLAUDE_WORKTREE);
    let log = root.join("claude-agent-acp.log");
    let mut agent = Agent::spawn_entry(&entry, &work, &log);
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
    assert_eq!(
        option_kinds(asked),
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
    assert!(has_tool_updates(&agent), "{:?}", agent.kinds());
    agent.kill().await;
}

/// The Gemini CLI (`gemini --acp`) against the fake Gemini API
/// (`GOOGLE_GEMINI_BASE_URL`): a shell command asks first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_streams_the_fakes_text_and_asks_before_a_command() {
    use duraclaw_fake_gemini::{FakeGemini, Turn as G};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let work = work(&root);
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
    let entry = real_agents::gemini(&root, &fake);
    let log = root.join("gemini.log");
    let mut agent = Agent::spawn_entry(&entry, &work, &log);
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
    assert_eq!(first.header("x-goog-api-key"), Some(GEMINI_KEY));
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
    assert_eq!(
        option_kinds(asked),
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
    assert!(has_tool_updates(&agent), "{:?}", agent.kinds());
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

/// The gateway reads the three entries as its agents file and finds each
/// installed and runnable, beside the built-in agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_offers_the_real_agents() {
    use duraclaw_gateway::agents::{Agents, AgentsFile};
    use duraclaw_gateway::scripted::{Script, ScriptedExecutor};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let openai = FakeOpenAi::start([]).await.unwrap();
    let anthropic = duraclaw_fake_anthropic::FakeAnthropic::start([])
        .await
        .unwrap();
    let gemini = duraclaw_fake_gemini::FakeGemini::start([]).await.unwrap();
    let file = real_agents::agents_file(&[
        real_agents::codex(&root, &openai),
        real_agents::claude_acp(&root, &anthropic),
        real_agents::gemini(&root, &gemini),
    ]);
    let agents = Agents::with_file(
        Arc::new(ScriptedExecutor::new(Script::demo())),
        AgentsFile::parse(&file).unwrap(),
    );
    let list: Vec<(String, bool, Option<String>)> = agents
        .list()
        .await
        .into_iter()
        .map(|a| (a.name, a.available, a.error))
        .collect();
    assert_eq!(
        list,
        [
            ("claude".to_owned(), true, None),
            ("codex".to_owned(), true, None),
            ("claude-acp".to_owned(), true, None),
            ("gemini".to_owned(), true, None),
        ]
    );
}
