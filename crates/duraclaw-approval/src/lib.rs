//! Approval gates for Duraclaw: memory, durable (store-backed) and a policy
//! layer, with an audit trail of every request and decision.
//!
//! - [`MemoryGate`] holds requests in memory; first answer wins; an optional
//!   timeout resolves a request as [`Decision::Expired`] (reported as
//!   "expired", never as a denial).
//! - [`DurableGate`] keeps requests and decisions in a
//!   [`SessionStore`](duraclaw_core::store::SessionStore): pending requests
//!   survive a restart and are listed again; a decision made while the
//!   requester was gone is there when it asks again.
//! - [`PolicyGate`] answers by rules (tool name and input pattern → allow,
//!   deny or ask) and remembers "allow for the rest of this session", asking
//!   the gate beneath for everything else.
//!
//! - [`rules`]: the rules a user sets (`Read`, `Bash(git status*)` → allow,
//!   ask or deny at the user, worktree or session scope), their matching
//!   and precedence; pure, so hosts validate with it (without the `gates`
//!   feature it is all this crate builds).
//!
//! Every gate writes to an [`AuditLog`]: who, when, which client, what input.
//!
//! Each gate implements core's
//! [`ApprovalGate`](duraclaw_core::approval::ApprovalGate), so the gateway's
//! executors and an application of its own use them alike. This crate runs
//! no process, opens no socket and touches no git repository.
//!
//! ```
//! use std::sync::Arc;
//!
//! use duraclaw_approval::{MemoryGate, PolicyAction, PolicyGate, PolicyRule};
//! use duraclaw_core::approval::{ApprovalGate, ApprovalRequest};
//! use duraclaw_core::clock::{Clock, SystemClock};
//! use duraclaw_core::protocol::{DecidedBy, Decision, QuestionKind, UserQuestion};
//!
//! fn ask(id: &str, tool: &str, input: serde_json::Value) -> ApprovalRequest {
//!     ApprovalRequest {
//!         session_id: "s1".into(),
//!         question: UserQuestion {
//!             question_id: id.into(),
//!             tool_use_id: None,
//!             kind: QuestionKind::Permission {
//!                 tool_name: tool.into(),
//!                 input,
//!                 description: None,
//!             },
//!         },
//!         asked_at_ms: SystemClock.now_ms(),
//!     }
//! }
//!
//! # fn main() -> duraclaw_core::Result<()> {
//! // Reads run, `rm` never does, everything else asks a person.
//! let rules = vec![
//!     PolicyRule { tool: "Read".into(), input: None, action: PolicyAction::Allow },
//!     PolicyRule {
//!         tool: "Bash".into(),
//!         input: Some("rm *".into()),
//!         action: PolicyAction::Deny { reason: "no deleting".into() },
//!     },
//! ];
//! let people = Arc::new(MemoryGate::new());
//! let gate = PolicyGate::new(rules, people.clone());
//!
//! futures::executor::block_on(async {
//!     let read = gate.request(ask("q1", "Read", serde_json::json!({"file_path": "a.rs"}))).await?;
//!     assert!(matches!(read.decision, Decision::Allow { .. }));
//!     let rm = gate.request(ask("q2", "Bash", serde_json::json!({"command": "rm -rf /"}))).await?;
//!     assert!(matches!(rm.decision, Decision::Deny { .. }));
//!
//!     // No rule for `git push`: it waits until a person decides.
//!     let (asked, _) = futures::join!(
//!         gate.request(ask("q3", "Bash", serde_json::json!({"command": "git push"}))),
//!         async {
//!             assert_eq!(people.pending().await?.len(), 1);
//!             let no = Decision::Deny { reason: "not today".into(), interrupt: false };
//!             people.decide("q3", no, DecidedBy::new("alice")).await
//!         },
//!     );
//!     assert_eq!(asked?.by.who, "alice");
//!     Ok(())
//! })
//! # }
//! ```

#[cfg(feature = "gates")]
mod audit;
#[cfg(feature = "gates")]
mod durable;
#[cfg(feature = "gates")]
mod memory;
#[cfg(feature = "gates")]
mod policy;
pub mod rules;

#[cfg(feature = "gates")]
pub use audit::{
    AuditAction, AuditEntry, AuditLog, AuditTee, JsonlAudit, MemoryAudit, TracingAudit,
};
#[cfg(feature = "gates")]
pub use durable::DurableGate;
#[cfg(feature = "gates")]
pub use memory::MemoryGate;
#[cfg(feature = "gates")]
pub use policy::{PolicyAction, PolicyGate, PolicyRule, glob_match};

use duraclaw_core::protocol::Decision;
#[cfg(feature = "gates")]
use duraclaw_core::protocol::QuestionKind;

/// The words the model and the user are told for a decision.
///
/// An expired request says it expired: a timeout is not a human's "no".
pub fn decision_message(decision: &Decision) -> String {
    match decision {
        Decision::Allow { .. } => "approved".to_owned(),
        Decision::Deny { reason, .. } if reason.trim().is_empty() => {
            "denied by the user".to_owned()
        }
        Decision::Deny { reason, .. } => format!("denied by the user: {reason}"),
        Decision::Answered { .. } => "answered".to_owned(),
        Decision::Expired => {
            "the approval request expired before anyone answered; it was not denied by a human. \
             Ask again or wait for the user."
                .to_owned()
        }
        Decision::Cancelled { reason } => match reason {
            Some(r) => format!("cancelled: {r}"),
            None => "cancelled".to_owned(),
        },
        _ => decision.name().to_owned(),
    }
}

/// The `question.resolved` event an executor logs once the gate decided
/// ([`duraclaw_core::executor::question_resolved`]).
#[cfg(feature = "gates")]
pub use duraclaw_core::executor::question_resolved as resolution_event;

/// The tool a question is about, if it is a permission request.
#[cfg(feature = "gates")]
pub(crate) fn tool_name(kind: &QuestionKind) -> Option<&str> {
    match kind {
        QuestionKind::Permission { tool_name, .. } => Some(tool_name),
        _ => None,
    }
}
