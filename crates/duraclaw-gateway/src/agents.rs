//! The agents a gateway offers: the built-in executor (the Claude Code CLI,
//! or whatever the gateway was started with) under the name
//! [`BUILTIN_AGENT`], and the Agent Client Protocol agents of its agents
//! file ([`AgentsFile`]).
//!
//! Each is checked when the gateway starts and again whenever it is asked
//! ([`Agents::list`], `GET /api/agents`); a session starts with one only
//! when its check passes, and is refused with `agent_unavailable`
//! otherwise.

use std::path::Path;
use std::sync::Arc;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_core::executor::DynExecutor;
use duraclaw_core::protocol::{
    AgentInfo, AgentKind, AgentSupports, BUILTIN_AGENT, check_agent_name,
};
use serde::{Deserialize, Serialize};

use crate::acp::{AcpAgent, AcpExecutor};

/// The prefix of the message of a refused start whose agent is unknown or
/// cannot run; the gateway answers it with the wire code
/// `agent_unavailable`.
pub const UNAVAILABLE_PREFIX: &str = "agent unavailable: ";

/// One agent of the agents file: how to run it, and what the UI shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEntry {
    /// Its process and environment.
    #[serde(flatten)]
    pub agent: AcpAgent,
    /// What the UI shows; the name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What it can do (the UI offers only that); nothing beyond turns
    /// when absent.
    #[serde(default)]
    pub supports: AgentSupports,
}

/// The agents file, JSON: `{"agents": [<AgentEntry>, …]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    /// The agents, in the order the UI lists them (after the built-in one).
    pub agents: Vec<AgentEntry>,
}

impl AgentsFile {
    /// Reads and checks the agents file at `path`.
    pub fn load(path: &Path) -> Result<AgentsFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the agents file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text)
            .map_err(|e| Error::Invalid(format!("the agents file {}: {e}", path.display())))
    }

    /// Parses and checks an agents file's text: every name valid, unique
    /// and not the built-in one's; every command given.
    pub fn parse(text: &str) -> Result<AgentsFile> {
        let file: AgentsFile =
            serde_json::from_str(text).map_err(|e| Error::Invalid(format!("not valid: {e}")))?;
        let mut seen = std::collections::BTreeSet::new();
        for entry in &file.agents {
            let name = &entry.agent.name;
            check_agent_name(name).map_err(|why| Error::Invalid(format!("{name:?}: {why}")))?;
            if name == BUILTIN_AGENT {
                return Err(Error::Invalid(format!(
                    "{name:?} is the built-in agent's name; name the agent otherwise"
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(Error::Invalid(format!("agent {name:?} is listed twice")));
            }
            if entry.agent.command.trim().is_empty() {
                return Err(Error::Invalid(format!("agent {name:?} has no command")));
            }
        }
        Ok(file)
    }
}

/// A configured agent and what runs it.
#[derive(Debug, Clone)]
struct Configured {
    name: String,
    title: String,
    kind: AgentKind,
    supports: AgentSupports,
    executor: DynExecutor,
}

impl Configured {
    async fn info(&self) -> AgentInfo {
        let error = self.executor.check().await.err().map(|e| e.to_string());
        AgentInfo {
            name: self.name.clone(),
            title: self.title.clone(),
            kind: self.kind,
            available: error.is_none(),
            error,
            supports: self.supports,
        }
    }
}

/// The agents a gateway offers, the built-in one first.
#[derive(Debug, Clone)]
pub struct Agents {
    list: Arc<Vec<Configured>>,
}

/// What the built-in Claude Code executor supports.
pub const CLAUDE_SUPPORTS: AgentSupports = AgentSupports {
    resume: true,
    modes: true,
    models: true,
    cost: true,
};

impl Agents {
    /// Only the built-in agent, run by `builtin`.
    pub fn new(builtin: DynExecutor) -> Agents {
        Agents {
            list: Arc::new(vec![Configured {
                name: BUILTIN_AGENT.to_owned(),
                title: "Claude Code".to_owned(),
                kind: AgentKind::Claude,
                supports: CLAUDE_SUPPORTS,
                executor: builtin,
            }]),
        }
    }

    /// The built-in agent shown as `title` (e.g. a scripted executor's);
    /// its name stays [`BUILTIN_AGENT`].
    #[must_use]
    pub fn with_builtin_title(self, title: &str) -> Agents {
        let mut list = Arc::unwrap_or_clone(self.list);
        list[0].title = title.to_owned();
        Agents {
            list: Arc::new(list),
        }
    }

    /// The built-in agent and the ACP agents of `file`.
    pub fn with_file(builtin: DynExecutor, file: AgentsFile) -> Agents {
        let mut agents = Self::new(builtin);
        for entry in file.agents {
            let executor: DynExecutor = Arc::new(AcpExecutor::new(entry.agent.clone()));
            agents = agents.with_executor(entry, executor);
        }
        agents
    }

    /// Adds `entry`, run by `executor` (any executor: tests give a
    /// scripted one a name of its own). An entry of a name already there
    /// replaces it.
    #[must_use]
    pub fn with_executor(self, entry: AgentEntry, executor: DynExecutor) -> Agents {
        let mut list = Arc::unwrap_or_clone(self.list);
        list.retain(|c| c.name != entry.agent.name);
        list.push(Configured {
            title: entry.title.unwrap_or_else(|| entry.agent.name.clone()),
            name: entry.agent.name,
            kind: AgentKind::Acp,
            supports: entry.supports,
            executor,
        });
        Agents {
            list: Arc::new(list),
        }
    }

    /// The built-in agent's executor.
    pub fn builtin(&self) -> &DynExecutor {
        // `new` puts it first and nothing removes it (its name is refused
        // in files, and `with_executor` of it replaces it in place).
        &self.list[0].executor
    }

    /// Every agent, each checked now.
    pub async fn list(&self) -> Vec<AgentInfo> {
        let mut out = Vec::with_capacity(self.list.len());
        for c in self.list.iter() {
            out.push(c.info().await);
        }
        out
    }

    /// The executor of agent `name` (the built-in one when `None`), for a
    /// session to start or go on with. An unknown agent, or one whose
    /// check fails, is refused with a message starting
    /// [`UNAVAILABLE_PREFIX`] that names it and says why. The built-in
    /// agent is not checked here: its own start refuses with its own code
    /// (`executor_unsupported`).
    pub async fn pick(&self, name: Option<&str>) -> Result<DynExecutor> {
        let name = name.unwrap_or(BUILTIN_AGENT);
        let Some(c) = self.list.iter().find(|c| c.name == name) else {
            let known: Vec<&str> = self.list.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::Invalid(format!(
                "{UNAVAILABLE_PREFIX}this gateway has no agent named {name:?} (it offers {})",
                known.join(", ")
            )));
        };
        if c.kind == AgentKind::Acp
            && let Err(e) = c.executor.check().await
        {
            return Err(Error::Invalid(format!(
                "{UNAVAILABLE_PREFIX}{name:?} cannot run on this gateway: {e}"
            )));
        }
        Ok(c.executor.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::{Script, ScriptedExecutor};

    fn scripted() -> DynExecutor {
        Arc::new(ScriptedExecutor::new(Script::demo()))
    }

    #[test]
    fn the_file_is_checked() {
        let ok = AgentsFile::parse(
            r#"{"agents":[{"name":"codex","title":"Codex","command":"codex-acp",
                "env_pass":["OPENAI_API_KEY"],"supports":{"resume":true}}]}"#,
        )
        .unwrap();
        let codex = &ok.agents[0];
        assert_eq!(codex.agent.command, "codex-acp");
        assert_eq!(codex.agent.env_pass, ["OPENAI_API_KEY"]);
        assert!(codex.supports.resume && !codex.supports.cost);
        for (text, says) in [
            (
                r#"{"agents":[{"name":"claude","command":"x"}]}"#,
                "built-in",
            ),
            (
                r#"{"agents":[{"name":"a","command":"x"},{"name":"a","command":"y"}]}"#,
                "listed twice",
            ),
            (r#"{"agents":[{"name":"a b","command":"x"}]}"#, "ASCII"),
            (r#"{"agents":[{"name":"a","command":" "}]}"#, "no command"),
            (r#"{"agents":[{"name":"a"}]}"#, "command"),
            (r#"{"agent":[]}"#, "unknown field"),
            ("[", "not valid"),
        ] {
            match AgentsFile::parse(text) {
                Err(Error::Invalid(m)) => assert!(m.contains(says), "{text}: {m}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn unknown_and_missing_agents_are_refused_naming_why() {
        let file = AgentsFile::parse(
            r#"{"agents":[{"name":"ghost","command":"duraclaw-no-such-agent-here"}]}"#,
        )
        .unwrap();
        let agents = Agents::with_file(scripted(), file).with_builtin_title("Scripted demo");
        let list = agents.list().await;
        assert_eq!(list[0].title, "Scripted demo");
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].name.as_str(), list[0].kind, list[0].available),
            ("claude", AgentKind::Claude, true)
        );
        assert_eq!((list[1].name.as_str(), list[1].available), ("ghost", false));
        let why = list[1].error.as_deref().unwrap();
        assert!(why.contains("duraclaw-no-such-agent-here"), "{why}");

        assert!(agents.pick(None).await.is_ok());
        assert!(agents.pick(Some("claude")).await.is_ok());
        match agents.pick(Some("ghost")).await {
            Err(Error::Invalid(m)) => {
                assert!(m.starts_with(UNAVAILABLE_PREFIX), "{m}");
                assert!(m.contains("\"ghost\"") && m.contains("not found"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        match agents.pick(Some("codex")).await {
            Err(Error::Invalid(m)) => {
                assert!(m.starts_with(UNAVAILABLE_PREFIX), "{m}");
                assert!(m.contains("no agent named \"codex\""), "{m}");
                assert!(m.contains("claude, ghost"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
