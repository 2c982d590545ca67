//! The bot's fixed work list and its built-in policy.

use duraclaw_approval::{PolicyAction, PolicyRule};
use serde_json::{Map, Value};

/// One thing the bot wants to do, phrased as the tool call an agent would
/// make.
#[derive(Debug)]
pub struct Action {
    /// Stable id: the approval request's question id.
    pub id: &'static str,
    /// What a person reads.
    pub text: &'static str,
    /// The tool it would use.
    pub tool: &'static str,
    /// The tool input's main field and value.
    field: &'static str,
    value: &'static str,
}

impl Action {
    /// The tool input, e.g. `{"command":"cargo test"}`.
    pub fn input(&self) -> Value {
        let mut input = Map::new();
        input.insert(self.field.to_owned(), Value::from(self.value));
        Value::Object(input)
    }
}

/// What the bot does, in order.
pub const ACTIONS: &[Action] = &[
    Action {
        id: "read-config",
        text: "read config.toml",
        tool: "Read",
        field: "file_path",
        value: "config.toml",
    },
    Action {
        id: "rm-build",
        text: "run rm -rf build/",
        tool: "Bash",
        field: "command",
        value: "rm -rf build/",
    },
    Action {
        id: "cargo-test",
        text: "run cargo test",
        tool: "Bash",
        field: "command",
        value: "cargo test",
    },
    Action {
        id: "deploy-prod",
        text: "deploy to prod",
        tool: "Deploy",
        field: "target",
        value: "prod",
    },
];

/// Reads are allowed, recursive deletes denied, everything else asks a
/// human (the policy's default when no rule matches).
pub fn default_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            tool: "Read".into(),
            input: None,
            action: PolicyAction::Allow,
        },
        PolicyRule {
            tool: "Bash".into(),
            input: Some("rm -rf*".into()),
            action: PolicyAction::Deny {
                reason: "recursive deletes are never run by this bot".into(),
            },
        },
    ]
}
