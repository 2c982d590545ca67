#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The executor conformance suite on the shell-script agent: each case gets
//! a script that plays the case's turns.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use custom_executor::ShellExecutor;
use duraclaw_core::conformance::{
    ASK_OPTIONS, ASK_QUESTION, ExecutorHarness, ExecutorUnderTest, Play,
};
use duraclaw_core::{Error, Result};

struct Shell;

/// A shell line that prints `text` exactly.
fn print(text: &str) -> String {
    format!("printf '%s\\n' '{}'", text.replace('\'', r"'\''"))
}

#[async_trait]
impl ExecutorHarness for Shell {
    async fn executor(&self, turns: &[Play]) -> Result<ExecutorUnderTest> {
        let mut script = String::from("case \"$TURN\" in\n");
        for (n, play) in turns.iter().enumerate() {
            let body = match play {
                Play::Reply(t) => print(&format!("say {t}")),
                Play::Tool => format!(
                    "{}\nread reply\n{}",
                    print("run echo conformance"),
                    print("say Done.")
                ),
                Play::Ask => format!(
                    "{}\nread answer\nprintf 'say You chose %s.\\n' \"$answer\"",
                    print(&format!("ask {ASK_QUESTION}|{}", ASK_OPTIONS.join("|")))
                ),
                Play::Stall => format!("{}\nsleep 600", print("say Streaming before the stall.")),
                Play::Fail => print("fail the script failed"),
            };
            script.push_str(&format!("{n})\n{body}\n;;\n"));
        }
        script.push_str("*) printf 'say You said: %s\\n' \"$1\" ;;\nesac\n");
        let io = |e: std::io::Error| Error::executor_from("test setup", e);
        let dir = tempfile::tempdir().map_err(io)?;
        let agent = dir.path().join("agent.sh");
        std::fs::write(&agent, script).map_err(io)?;
        let worktree = dir.path().join("app");
        std::fs::create_dir(&worktree).map_err(io)?;
        Ok(ExecutorUnderTest {
            executor: Arc::new(ShellExecutor::new(agent, dir.path().join("state"))),
            worktree: worktree.display().to_string(),
            keep: Box::new(dir),
        })
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

duraclaw_core::executor_conformance_tests!(Shell);
