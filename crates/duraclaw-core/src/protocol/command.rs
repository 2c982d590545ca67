//! Commands: what a human or the orchestrator tells a session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::is_false;

/// An instruction from a human (via the browser) or the orchestrator to a
/// session. The `type` tags are the wire names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Command {
    /// Start a new agent session in a worktree.
    Execute(Execute),
    /// Resume an executor session by the executor's own session id.
    Resume(Resume),
    /// A follow-up user turn.
    Message(UserTurn),
    /// Interrupt the running turn; the session stays resumable.
    Abort(Abort),
    /// A decision on a pending approval or answers to a question.
    Answer(Answer),
    /// End the session: its executor stops and its worktree is free again.
    /// The log stays; the session is `terminated`.
    Close(Close),
    /// Switch the running session's permission mode (`default`,
    /// `acceptEdits`, `plan`); see [`check_permission_mode`].
    SetMode(SetMode),
    /// Switch the running session's model; see [`check_model`].
    SetModel(SetModel),
}

impl Command {
    /// The wire name of this command.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Execute(_) => "execute",
            Command::Resume(_) => "resume",
            Command::Message(_) => "message",
            Command::Abort(_) => "abort",
            Command::Answer(_) => "answer",
            Command::Close(_) => "close",
            Command::SetMode(_) => "set_mode",
            Command::SetModel(_) => "set_model",
        }
    }
}

/// `execute`: start a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Execute {
    /// The worktree path, one the gateway discovered.
    pub worktree: String,
    /// The first user prompt.
    pub prompt: String,
    /// Model name; the executor's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The executor's permission mode; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// Extra system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// The session's approval rules (user, worktree and session scopes),
    /// in force from the first tool call; `rules` frames replace them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleEntry>>,
    /// Run in a new linked worktree made from `worktree`'s repository
    /// rather than in `worktree` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_worktree: Option<NewWorktree>,
    /// A fork: the new session starts from this executor session's
    /// conversation up to one of its messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<Box<ForkFrom>>,
    /// The configured agent that runs the session ([`AgentInfo::name`]);
    /// the built-in Claude Code executor ([`BUILTIN_AGENT`]) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// A new linked worktree for a session: on a new branch
/// (`duraclaw/<short session id>`, suffixed when taken) at `base`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWorktree {
    /// The branch (or commit) the new branch starts at; the HEAD of the
    /// requested worktree when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// Where a fork's conversation comes from: an executor session and its
/// message to resume at (the last message of the turn forked from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkFrom {
    /// The executor's session id of the parent (from its `session.init`).
    pub executor_session_id: String,
    /// The executor's id of the last message kept (a `result`'s
    /// `last_message_uuid`).
    pub at_message_uuid: String,
}

impl Execute {
    /// Starts in `worktree` with the first prompt `prompt`.
    pub fn new(worktree: impl Into<String>, prompt: impl Into<String>) -> Self {
        Execute {
            worktree: worktree.into(),
            prompt: prompt.into(),
            ..Execute::default()
        }
    }

    /// With a model name.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// With a permission mode.
    pub fn with_permission_mode(mut self, mode: impl Into<String>) -> Self {
        self.permission_mode = Some(mode.into());
        self
    }

    /// With an extra system prompt.
    pub fn with_system_prompt(mut self, system_prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(system_prompt.into());
        self
    }
}

/// `resume`: continue an earlier executor session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The executor's session id, from `session.init`.
    pub executor_session_id: String,
    /// The worktree the session ran in.
    pub worktree: String,
    /// A prompt to send once resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The agent the session ran with; the one its metadata records (the
    /// built-in Claude Code executor when neither says) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// `message`: a follow-up user turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserTurn {
    /// What the user typed.
    pub text: String,
}

/// `abort`: interrupt the running turn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {}

/// `close`: end the session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close {}

/// `set_mode`: switch the permission mode mid-session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMode {
    /// `default`, `acceptEdits` or `plan`.
    pub mode: String,
}

/// `set_model`: switch the model mid-session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetModel {
    /// A model name or alias, e.g. `claude-sonnet-4-5` or `opus`.
    pub model: String,
}

/// The permission modes a person may switch a session to.
pub const PERMISSION_MODES: &[&str] = &["default", "acceptEdits", "plan"];

/// Modes that let tools run without a person's decision: never accepted.
pub const REFUSED_PERMISSION_MODES: &[&str] = &["bypassPermissions", "auto", "dontAsk"];

/// Checks a permission mode for `set_mode` (and a session start): one of
/// [`PERMISSION_MODES`]; a mode that skips approvals is refused, and so is
/// an unknown one, each with a message saying which modes there are.
pub fn check_permission_mode(mode: &str) -> Result<(), String> {
    if PERMISSION_MODES.contains(&mode) {
        return Ok(());
    }
    let allowed = PERMISSION_MODES.join(", ");
    if REFUSED_PERMISSION_MODES.contains(&mode) {
        return Err(format!(
            "permission mode `{mode}` is refused: it lets tools run without approval; \
             use one of {allowed}"
        ));
    }
    let shown: String = mode.chars().take(40).collect();
    Err(format!(
        "unknown permission mode `{shown}`; use one of {allowed}"
    ))
}

/// The longest model name `set_model` takes.
pub const MAX_MODEL_LEN: usize = 100;

/// Checks a model name for `set_model`: 1 to [`MAX_MODEL_LEN`] characters
/// of ASCII letters, digits and `.-_:[]@/`. Whether the executor knows the
/// model is its own answer.
pub fn check_model(model: &str) -> Result<(), String> {
    if model.is_empty() {
        return Err("a model name is needed".into());
    }
    if model.len() > MAX_MODEL_LEN {
        return Err(format!(
            "a model name has at most {MAX_MODEL_LEN} characters"
        ));
    }
    if !model
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-_:[]@/".contains(c))
    {
        return Err("a model name has only ASCII letters, digits and `.-_:[]@/`".into());
    }
    Ok(())
}

/// The name of the built-in agent, the Claude Code executor: what a
/// session runs when it names no agent.
pub const BUILTIN_AGENT: &str = "claude";

/// The longest agent name, in bytes.
pub const MAX_AGENT_NAME_LEN: usize = 64;

/// Checks an agent name (a session's `agent`, a configured agent's
/// `name`): 1 to [`MAX_AGENT_NAME_LEN`] characters of ASCII letters,
/// digits and `-_.`. Whether the gateway offers it is its own answer.
pub fn check_agent_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an agent name is needed".into());
    }
    if name.len() > MAX_AGENT_NAME_LEN {
        return Err(format!(
            "an agent name has at most {MAX_AGENT_NAME_LEN} characters"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("an agent name has only ASCII letters, digits and `-_.`".into());
    }
    Ok(())
}

/// What kind of executor runs an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// The built-in Claude Code executor.
    Claude,
    /// An Agent Client Protocol agent the gateway was configured with.
    Acp,
}

/// What an agent can do beyond a turn of text and tool calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSupports {
    /// A session continues after its process is gone (a gateway restart).
    #[serde(default)]
    pub resume: bool,
    /// The permission mode switches mid-session (`set_mode`).
    #[serde(default)]
    pub modes: bool,
    /// The model switches mid-session (`set_model`).
    #[serde(default)]
    pub models: bool,
    /// Turns report their cost.
    #[serde(default)]
    pub cost: bool,
}

/// An agent a gateway offers, as `GET /api/agents` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// What sessions name it by (`execute.agent`).
    pub name: String,
    /// What the UI shows.
    pub title: String,
    /// What runs it.
    pub kind: AgentKind,
    /// Whether sessions can start with it now.
    pub available: bool,
    /// Why it cannot, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What it can do.
    #[serde(default)]
    pub supports: AgentSupports,
}

/// `answer`: resolve a pending [`UserQuestion`](super::UserQuestion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The question's id, from `user_question`.
    pub question_id: String,
    /// What was decided.
    #[serde(flatten)]
    pub decision: Decision,
    /// Who decided, for the gateway's audit trail (set by the orchestrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<DecidedBy>,
    /// "Always allow for this worktree": the rule (e.g. `Bash(git status)`)
    /// the host adds for the session's worktree before it allows. Only
    /// with an `allow`; the host consumes it and does not forward it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_worktree_rule: Option<String>,
}

/// The scope a rule applies at: every session of its user, the sessions
/// in one worktree, or one session. The more specific scope decides
/// between allow and ask; a deny at any scope wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleScope {
    /// Every session of the user.
    User,
    /// The sessions in one worktree.
    Worktree,
    /// One session.
    Session,
}

impl RuleScope {
    /// The wire name, e.g. `worktree`.
    pub fn name(self) -> &'static str {
        match self {
            RuleScope::User => "user",
            RuleScope::Worktree => "worktree",
            RuleScope::Session => "session",
        }
    }
}

/// What a matching rule does with a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Run it without asking.
    Allow,
    /// Ask a person.
    Ask,
    /// Refuse it.
    Deny,
}

impl RuleAction {
    /// The wire name, e.g. `allow`.
    pub fn name(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Ask => "ask",
            RuleAction::Deny => "deny",
        }
    }
}

/// One approval rule in force for a session, as the host sends it to the
/// gateway: `rule` is its text (`Read`, `Bash(git status*)`; see
/// `docs/approvals.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEntry {
    /// The host's id for it, named in the decisions it makes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where it applies.
    pub scope: RuleScope,
    /// The rule's text.
    pub rule: String,
    /// What it does.
    pub action: RuleAction,
}

/// The outcome of an approval or a question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// Run the tool, optionally with edited input; `remember` allows this tool
    /// for the rest of the session.
    Allow {
        /// Input to run the tool with instead of the model's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        updated_input: Option<Value>,
        /// Allow this tool for the rest of the session.
        #[serde(default, skip_serializing_if = "is_false")]
        remember: bool,
    },
    /// Do not run the tool; the model is told the reason.
    Deny {
        /// Why, in the human's words; the model sees it.
        reason: String,
        /// Also interrupt the turn.
        #[serde(default, skip_serializing_if = "is_false")]
        interrupt: bool,
    },
    /// Answers to an AskUserQuestion: question text → chosen label(s), or
    /// free text.
    Answered {
        /// Question text → answer.
        answers: BTreeMap<String, String>,
    },
    /// A timeout policy fired. Never reported as a denial by a human.
    Expired,
    /// The executor withdrew the request, or the session ended.
    Cancelled {
        /// Why, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}
impl Decision {
    /// The wire name of the decision, e.g. `allow`.
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Answered { .. } => "answered",
            Decision::Expired => "expired",
            Decision::Cancelled { .. } => "cancelled",
        }
    }
}

/// Who decided something, and from which client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedBy {
    /// A user name, or `policy`, `timeout`, `executor`.
    pub who: String,
    /// The client it came from, e.g. `browser 3f2a…` or `cli`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl DecidedBy {
    /// A decider with no client information.
    pub fn new(who: impl Into<String>) -> Self {
        DecidedBy {
            who: who.into(),
            client: None,
        }
    }
}
