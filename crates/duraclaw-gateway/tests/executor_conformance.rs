#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The executor conformance suite (`duraclaw_core::conformance`) on the
//! gateway's two executors: the scripted one, and the REAL Claude Code
//! CLI (the pinned version and the oldest supported one) against the fake
//! Messages API. A failing turn
//! of the CLI is its process killed mid-turn.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duraclaw_core::conformance::{
    ASK_OPTIONS, ASK_QUESTION, ExecutorHarness, ExecutorUnderTest, Play,
};
use duraclaw_core::{Error, Result};
use duraclaw_fake_anthropic::{FakeAnthropic, Latch, Turn};
use duraclaw_gateway::claude::ClaudeExecutor;
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use serde_json::json;

mod support;

/// The command a [`Play::Tool`] turn runs.
const TOOL_COMMAND: &str = "echo conformance";

struct Scripted;

#[async_trait]
impl ExecutorHarness for Scripted {
    async fn executor(&self, turns: &[Play]) -> Result<ExecutorUnderTest> {
        let text = |t: &str| Step::Text {
            text: t.into(),
            chunks: 3,
            delay_ms: 0,
        };
        let turns = turns
            .iter()
            .map(|play| match play {
                Play::Reply(t) => vec![text(t)],
                Play::Tool => vec![
                    Step::Tool {
                        name: "Bash".into(),
                        input: json!({ "command": TOOL_COMMAND }),
                        result: "conformance".into(),
                    },
                    text("Done."),
                ],
                Play::Ask => vec![
                    Step::Ask {
                        questions: vec![ask_question()],
                    },
                    text("Thanks."),
                ],
                Play::Stall => vec![text("Streaming before the stall."), Step::Stall],
                Play::Fail => vec![Step::Fail {
                    message: "the script failed".into(),
                    code: None,
                }],
            })
            .collect();
        Ok(ExecutorUnderTest {
            executor: Arc::new(ScriptedExecutor::new(Script { turns })),
            worktree: "/nowhere/scripted".into(),
            keep: Box::new(()),
        })
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn ask_question() -> duraclaw_core::protocol::AskQuestion {
    duraclaw_core::protocol::AskQuestion {
        question: ASK_QUESTION.into(),
        header: Some("Go on".into()),
        options: ASK_OPTIONS
            .iter()
            .map(|label| duraclaw_core::protocol::AskOption {
                label: (*label).into(),
                description: Some(format!("Answer {label}")),
            })
            .collect(),
        multi_select: false,
    }
}

/// The real CLI (the binary the function names): each case gets its own
/// fake Messages API, worktree and private CLI directories.
struct Claude(fn() -> std::path::PathBuf);

#[async_trait]
impl ExecutorHarness for Claude {
    async fn executor(&self, turns: &[Play]) -> Result<ExecutorUnderTest> {
        let held = Latch::new();
        let dies = Latch::new();
        let script: Vec<Turn> = turns
            .iter()
            .flat_map(|play| match play {
                Play::Reply(t) => vec![Turn::text(t)],
                Play::Tool => vec![
                    Turn::tool_use(
                        "Bash",
                        json!({ "command": TOOL_COMMAND, "description": "Print a word" }),
                    ),
                    Turn::text("Done."),
                ],
                Play::Ask => vec![
                    Turn::tool_use("AskUserQuestion", json!({ "questions": [ask_question()] })),
                    Turn::text("Thanks."),
                ],
                Play::Stall => vec![
                    Turn::text("A long answer that is cut off before it ends.")
                        .with_chunk_chars(4)
                        .with_hold(2, &held),
                ],
                // The way the CLI fails for good: its process dies mid-turn.
                Play::Fail => vec![
                    Turn::text("This turn dies before it ends.")
                        .with_chunk_chars(4)
                        .with_hold(2, &dies),
                ],
            })
            .collect();
        let io = |e: std::io::Error| Error::executor_from("test setup", e);
        let fake = FakeAnthropic::start(script).await.map_err(io)?;
        let dir = tempfile::tempdir().map_err(io)?;
        let root = dir.path().canonicalize().map_err(io)?;
        let worktree = root.join("app");
        support::init_repo(&worktree);
        let private = support::private_dirs(&root);
        let config = support::claude_config(&(self.0)(), &fake, &private);
        let cwd = worktree.clone();
        let projects = private.join("config/projects");
        let killer = tokio::spawn(async move {
            dies.reached().await;
            // Killed once it saved its transcript, so it can be resumed
            // (no event says when; the file is polled, bounded).
            let give_up = std::time::Instant::now() + Duration::from_secs(30);
            while !saved_a_transcript(&projects) && std::time::Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for pid in support::cli_pids(&cwd) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        });
        Ok(ExecutorUnderTest {
            executor: Arc::new(ClaudeExecutor::new(config)),
            worktree: worktree.display().to_string(),
            keep: Box::new((fake, dir, held, AbortOnDrop(killer))),
        })
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Whether the CLI saved a session transcript under `projects`.
fn saved_a_transcript(projects: &std::path::Path) -> bool {
    let Ok(dirs) = std::fs::read_dir(projects) else {
        return false;
    };
    dirs.flatten().any(|d| {
        std::fs::read_dir(d.path()).is_ok_and(|files| {
            files.flatten().any(|f| {
                f.path().extension().is_some_and(|x| x == "jsonl")
                    && std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("\"user\""))
            })
        })
    })
}

/// Ends the task when the case ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

mod scripted {
    duraclaw_core::executor_conformance_tests!(super::Scripted);
}

mod claude {
    duraclaw_core::executor_conformance_tests!(super::Claude(super::support::claude_bin));
}

/// The oldest supported CLI keeps the contract too.
mod claude_oldest_supported {
    duraclaw_core::executor_conformance_tests!(super::Claude(super::support::claude_min_bin));
}

/// An ACP agent: the in-repo scripted one, playing the case's turns.
struct Acp;

/// What a scripted ACP agent needs for one case.
struct AcpRig {
    executor: duraclaw_gateway::acp::AcpExecutor,
    worktree: std::path::PathBuf,
    root: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A scripted ACP agent playing `turns` (the script's steps, as JSON),
/// with `load_session` and `extra` merged into its script, and the agent
/// config changed by `config`.
fn acp_rig(
    turns: serde_json::Value,
    extra: serde_json::Value,
    config: impl FnOnce(&mut duraclaw_gateway::acp::AcpAgent),
    limits: duraclaw_gateway::acp::AcpLimits,
) -> AcpRig {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let worktree = root.join("app");
    support::init_repo(&worktree);
    let state = root.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut script = json!({ "load_session": true, "state_dir": state, "turns": turns });
    if let (Some(s), Some(e)) = (script.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let path = root.join("script.json");
    std::fs::write(&path, script.to_string()).unwrap();
    let mut agent = duraclaw_gateway::acp::AcpAgent {
        name: "script".into(),
        command: env!("CARGO_BIN_EXE_duraclaw-acp-script").into(),
        args: vec![path.display().to_string()],
        env_pass: Vec::new(),
        env: Default::default(),
    };
    config(&mut agent);
    AcpRig {
        executor: duraclaw_gateway::acp::AcpExecutor::new(agent).with_limits(limits),
        worktree,
        root,
        _dir: dir,
    }
}

fn acp_limits() -> duraclaw_gateway::acp::AcpLimits {
    duraclaw_gateway::acp::AcpLimits {
        request_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(2),
        announce_wait: Duration::from_millis(500),
    }
}

/// The script's steps for a conformance [`Play`].
fn acp_turn(play: &Play) -> serde_json::Value {
    match play {
        Play::Reply(t) => json!([{ "do": "text", "text": t }]),
        Play::Tool => json!([
            { "do": "tool", "title": "Print a word", "input": { "command": TOOL_COMMAND }, "result": "conformance" },
            { "do": "text", "text": "Done." },
        ]),
        Play::Ask => json!([
            { "do": "ask", "question": ASK_QUESTION, "options": ASK_OPTIONS },
            { "do": "text", "text": "Thanks." },
        ]),
        Play::Stall => json!([
            { "do": "text", "text": "Streaming before the stall." },
            { "do": "stall" },
        ]),
        Play::Fail => json!([{ "do": "fail", "message": "the script failed" }]),
    }
}

#[async_trait]
impl ExecutorHarness for Acp {
    async fn executor(&self, turns: &[Play]) -> Result<ExecutorUnderTest> {
        let turns: Vec<serde_json::Value> = turns.iter().map(acp_turn).collect();
        let rig = acp_rig(json!(turns), json!({}), |_| {}, acp_limits());
        Ok(ExecutorUnderTest {
            executor: Arc::new(rig.executor.clone()),
            worktree: rig.worktree.display().to_string(),
            keep: Box::new(rig),
        })
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

mod acp {
    duraclaw_core::executor_conformance_tests!(super::Acp);
}

#[path = "executor_conformance/acp_cases.rs"]
mod acp_cases;
