//! The pinned real ACP agents, each set up against the fake of its model
//! API on 127.0.0.1: an entry of the gateway's agents file
//! (`{"name","title","command","args","env","supports"}`, docs/agents.md)
//! that runs it with private directories under a test's root and nothing
//! reaching the network. [`crate::acp_client::Agent::spawn_entry`] runs an
//! entry directly; a gateway started with an agents file of them offers
//! them to sessions.

use std::path::{Path, PathBuf};

use duraclaw_fake_anthropic::FakeAnthropic;
use duraclaw_fake_gemini::FakeGemini;
use duraclaw_fake_openai::FakeOpenAi;
use serde_json::{Value, json};

/// A tool installed by `scripts/install-tools.sh`: `$var`, else `cached`
/// under the per-user cache; panics naming how to install it.
pub fn tool(var: &str, cached: &str, install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME")
        .join("duraclaw")
        .join(cached);
    assert!(
        cache.exists(),
        "{var} is not set and {} is missing: run `scripts/install-tools.sh {install}`",
        cache.display()
    );
    cache
}

/// The pinned `codex-acp` (`CODEX_ACP_BIN`).
pub fn codex_acp_bin() -> PathBuf {
    tool(
        "CODEX_ACP_BIN",
        "codex-acp-0.16.0/node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp",
        "codex-acp",
    )
}

/// The pinned `claude-agent-acp` launcher (`CLAUDE_AGENT_ACP_BIN`).
pub fn claude_agent_acp_bin() -> PathBuf {
    tool(
        "CLAUDE_AGENT_ACP_BIN",
        "claude-agent-acp-0.23.1/bin/claude-agent-acp",
        "claude-agent-acp",
    )
}

/// The pinned Gemini CLI launcher (`GEMINI_CLI_BIN`).
pub fn gemini_bin() -> PathBuf {
    tool(
        "GEMINI_CLI_BIN",
        "gemini-cli-0.61.0/bin/gemini",
        "gemini-cli",
    )
}

/// The environment variable Codex reads the fake's key from.
pub const OPENAI_KEY_VAR: &str = "DURACLAW_FAKE_OPENAI_KEY";
/// The key Codex sends the fake OpenAI API (`Authorization: Bearer …`).
pub const OPENAI_KEY: &str = "sk-fake-openai-0123456789";
/// The model Codex asks for: one of its own catalog (an unknown one gets
/// a warning streamed into the transcript).
pub const CODEX_MODEL: &str = "gpt-5.3-codex";
/// The key the Gemini CLI sends the fake Gemini API (`x-goog-api-key`).
pub const GEMINI_KEY: &str = "fake-gemini-key";

fn dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What makes Codex ask before every command it does not know to be a
/// read (`ls`, `cat`, `grep`, …) and before every patch: the `untrusted`
/// approval policy; the workspace-write sandbox still confines what an
/// allowed command can write.
pub const CODEX_GATE: &str =
    "approval_policy = \"untrusted\"\nsandbox_mode = \"workspace-write\"\n";

/// `codex`: Codex through `codex-acp`, its `CODEX_HOME` (`root/codex-home`)
/// holding a `config.toml` whose model provider is `fake`.
pub fn codex(root: &Path, fake: &FakeOpenAi) -> Value {
    let home = dir(root, "codex-home");
    std::fs::write(
        home.join("config.toml"),
        format!(
            "{CODEX_GATE}{}",
            fake.codex_config(CODEX_MODEL, OPENAI_KEY_VAR)
        ),
    )
    .unwrap();
    json!({
        "name": "codex",
        "title": "Codex",
        "command": codex_acp_bin(),
        "env": {
            "CODEX_HOME": home,
            "HOME": dir(root, "codex-user"),
            OPENAI_KEY_VAR: OPENAI_KEY,
        },
        "supports": {"resume": true},
    })
}

/// `claude-acp`: Claude Code through `claude-agent-acp` (its bundled CLI)
/// against `fake`, with the environment and private directories of
/// [`crate::browser_suite::claude_setup`] (which also makes the
/// repository `root/projects/notes-app`).
pub fn claude_acp(root: &Path, fake: &FakeAnthropic) -> Value {
    let env: serde_json::Map<String, Value> = crate::browser_suite::claude_setup(root, fake)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    json!({
        "name": "claude-acp",
        "title": "Claude (ACP)",
        "command": claude_agent_acp_bin(),
        "env": env,
        "supports": {"resume": true, "modes": true, "models": true},
    })
}

/// `gemini`: the Gemini CLI in ACP mode against `fake`
/// (`GOOGLE_GEMINI_BASE_URL`), its home `root/gemini-home` with usage
/// statistics and update checks off.
pub fn gemini(root: &Path, fake: &FakeGemini) -> Value {
    let home = dir(root, "gemini-home");
    std::fs::create_dir_all(home.join(".gemini")).unwrap();
    std::fs::write(
        home.join(".gemini/settings.json"),
        r#"{"privacy":{"usageStatisticsEnabled":false},"general":{"disableAutoUpdate":true,"disableUpdateNag":true}}"#,
    )
    .unwrap();
    json!({
        "name": "gemini",
        "title": "Gemini CLI",
        "command": gemini_bin(),
        "args": ["--acp"],
        "env": {
            "HOME": home,
            "GOOGLE_GEMINI_BASE_URL": fake.base_url(),
            "GEMINI_API_KEY": GEMINI_KEY,
            "GEMINI_CLI_NO_RELAUNCH": "true",
        },
        // Its session/load fails for an earlier process's session: a
        // follow-up after a restart starts afresh.
        "supports": {"resume": false, "modes": true},
    })
}

/// An agents file (`{"agents": [...]}`) of `entries`.
pub fn agents_file(entries: &[Value]) -> String {
    json!({ "agents": entries }).to_string()
}
