//! Agents that speak the Agent Client Protocol, as executors.
//!
//! This build has no ACP client yet: [`AcpExecutor::check`] says whether
//! the agent's command can be found and [`AcpExecutor::start`] refuses
//! with a clear error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use duraclaw_core::Result;
use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::error::Error;
use duraclaw_core::executor::{DynEventSink, Executor, ExecutorSession, StartSpec};
use serde::{Deserialize, Serialize};

/// An ACP agent the gateway runs: its process and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcpAgent {
    /// What sessions name it by.
    pub name: String,
    /// The program: a path, or a name looked up on `PATH`.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Names of the gateway's environment variables passed through to it.
    #[serde(default)]
    pub env_pass: Vec<String>,
    /// Variables set for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Runs an [`AcpAgent`].
#[derive(Debug, Clone)]
pub struct AcpExecutor {
    agent: AcpAgent,
}

impl AcpExecutor {
    /// An executor running `agent`.
    pub fn new(agent: AcpAgent) -> AcpExecutor {
        AcpExecutor { agent }
    }

    /// The agent it runs.
    pub fn agent(&self) -> &AcpAgent {
        &self.agent
    }
}

/// Where `command` is: itself when it names a path, else the first
/// executable file of that name on `PATH`.
pub(crate) fn resolve_command(command: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = PathBuf::from(command);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| executable(p))
}

#[async_trait::async_trait]
impl Executor for AcpExecutor {
    async fn check(&self) -> Result<()> {
        if self.agent.command.trim().is_empty() {
            return Err(Error::Invalid(format!(
                "agent {}: no command is configured",
                self.agent.name
            )));
        }
        match resolve_command(&self.agent.command) {
            Some(_) => Ok(()),
            None => Err(Error::Invalid(format!(
                "agent {}: command `{}` not found or not executable",
                self.agent.name, self.agent.command
            ))),
        }
    }

    async fn start(
        &self,
        _spec: StartSpec,
        _gate: DynApprovalGate,
        _sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        self.check().await?;
        Err(Error::executor(format!(
            "agent {}: this gateway build cannot run Agent Client Protocol agents yet",
            self.agent.name
        )))
    }
}
