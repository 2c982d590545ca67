//! One way to turn a human's answer into a gate decision, shared by the
//! terminal and the HTTP endpoint.

use duraclaw_core::Error;
use duraclaw_core::approval::{DecideOutcome, DynApprovalGate};
use duraclaw_core::protocol::{DecidedBy, Decision};

/// A human's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Allow,
    /// Do not, because of this.
    Deny(String),
}

/// What became of an answer.
#[derive(Debug)]
pub enum Reply {
    /// It decided the request.
    Decided,
    /// Someone (or the timeout) answered first; this one changed nothing.
    AlreadyDecided(DecideOutcome),
    /// No such request.
    Unknown,
    /// The gate failed.
    Failed(Error),
}

impl Reply {
    /// One line for a person.
    pub fn describe(&self, id: &str) -> String {
        match self {
            Reply::Decided => format!("{id}: decided"),
            Reply::AlreadyDecided(outcome) => format!("{id}: {}", outcome.describe()),
            Reply::Unknown => format!("{id}: no such approval request"),
            Reply::Failed(e) => format!("{id}: {e}"),
        }
    }
}

/// Applies `verdict` to request `id`; first answer wins.
pub async fn apply(gate: &DynApprovalGate, id: &str, verdict: Verdict, by: DecidedBy) -> Reply {
    let decision = match verdict {
        Verdict::Allow => Decision::Allow {
            updated_input: None,
            remember: false,
        },
        Verdict::Deny(reason) => Decision::Deny {
            reason,
            interrupt: false,
        },
    };
    match gate.decide(id, decision, by).await {
        Ok(DecideOutcome::Decided) => Reply::Decided,
        Ok(other) => Reply::AlreadyDecided(other),
        Err(Error::NotFound { .. }) => Reply::Unknown,
        Err(e) => Reply::Failed(e),
    }
}
