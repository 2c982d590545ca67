//! [`ApprovalGate`]: "may this tool call run?"
//!
//! A request returns a future decision; `decide` resolves it, first answer
//! wins; `cancel` withdraws it. A decision is never invented: a timeout
//! resolves as [`Decision::Expired`], which is reported in those words and
//! never as a human's denial. Implementations (memory, durable, policy) live
//! in `duraclaw-approval`; this module holds the trait and the types.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::protocol::{DecidedBy, Decision, NOTICE_AUTO_ALLOWED, Notice, UserQuestion};
use crate::store::Resolution;
use crate::{SendOutsideWasm, SyncOutsideWasm};

/// A request for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The session asking.
    pub session_id: String,
    /// The question: a permission request or an AskUserQuestion.
    pub question: UserQuestion,
    /// When it was asked, ms since the epoch.
    pub asked_at_ms: i64,
}

impl ApprovalRequest {
    /// Session `session_id` asks `question` at `asked_at_ms`.
    pub fn new(session_id: impl Into<String>, question: UserQuestion, asked_at_ms: i64) -> Self {
        ApprovalRequest {
            session_id: session_id.into(),
            question,
            asked_at_ms,
        }
    }
}

/// What `decide` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DecideOutcome {
    /// This decision was the first and is final.
    Decided,
    /// Someone decided first: by whom, when and what.
    AlreadyDecided {
        /// The first decision.
        first: Resolution,
    },
}

impl DecideOutcome {
    /// A human-readable line, e.g. "already decided by alice at 1700000000000".
    pub fn describe(&self) -> String {
        match self {
            DecideOutcome::Decided => "decided".to_owned(),
            DecideOutcome::AlreadyDecided { first } => format!(
                "already decided ({}) by {} at {}",
                first.decision.name(),
                first.by.who,
                utc_string(first.at_ms)
            ),
        }
    }
}

/// `2026-11-28 14:52:26 UTC` for milliseconds since the Unix epoch (the
/// core has no clock or calendar crate; this is the civil-from-days
/// algorithm).
pub fn utc_string(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An earlier decision that answers a request without asking anyone: the
/// same tool with the same input was allowed "for this session".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandingAllow {
    /// The question whose answer this repeats.
    pub question_id: String,
    /// Who allowed it then.
    pub by: DecidedBy,
}

impl StandingAllow {
    /// The `notice` (code [`NOTICE_AUTO_ALLOWED`]) an executor logs instead
    /// of a question when it runs `tool` call `tool_use_id` on this allow.
    pub fn notice(&self, tool: &str, tool_use_id: Option<&str>) -> Notice {
        let notice = Notice::new(
            NOTICE_AUTO_ALLOWED,
            format!(
                "{tool} was allowed without asking: {} allowed the same call (same tool, same \
                 input) for this session when answering question {}",
                self.by.who, self.question_id
            ),
        );
        match tool_use_id {
            Some(id) => notice.about_tool_use(id),
            None => notice,
        }
    }
}

/// A decision an approval rule made without asking anyone: the executor
/// logs [`RuleDecided::notice`] (code
/// [`NOTICE_RULE_DECISION`](crate::protocol::NOTICE_RULE_DECISION), naming
/// the rule and its scope) in the question's place and acts on the
/// resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDecided {
    /// The decision: allow, or deny with the reason the model is told.
    pub resolution: Resolution,
    /// The notice to log.
    pub notice: Notice,
}

/// Decides whether tool calls may run.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait ApprovalGate: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Asks, and waits for the decision. Asking again with the same question
    /// id waits for the same decision.
    async fn request(&self, request: ApprovalRequest) -> Result<Resolution>;

    /// Decides a pending request; first answer wins.
    async fn decide(
        &self,
        question_id: &str,
        decision: Decision,
        by: DecidedBy,
    ) -> Result<DecideOutcome>;

    /// Requests still waiting, oldest first.
    async fn pending(&self) -> Result<Vec<ApprovalRequest>>;

    /// Withdraws a request (the executor cancelled it or the session ended);
    /// the waiter gets [`Decision::Cancelled`].
    async fn cancel(&self, question_id: &str, reason: &str) -> Result<DecideOutcome>;

    /// An earlier "allow for this session" that answers `request` (same
    /// session, same tool, same input) without asking; `None` asks. An
    /// executor that gets one logs [`StandingAllow::notice`] instead of the
    /// question and runs the tool.
    async fn standing_allow(&self, request: &ApprovalRequest) -> Result<Option<StandingAllow>> {
        let _ = request;
        Ok(None)
    }

    /// The decision an approval rule makes on `request` without asking
    /// (allow or deny); `None`: no rule decides, ask (an "allow for this
    /// session" may still answer: [`ApprovalGate::standing_allow`]).
    /// Asked before the standing allows: a deny rule beats them.
    async fn by_rule(&self, request: &ApprovalRequest) -> Result<Option<RuleDecided>> {
        let _ = request;
        Ok(None)
    }
}

/// A shared, dynamically typed gate.
pub type DynApprovalGate = Arc<dyn ApprovalGate>;

#[cfg(test)]
mod tests {
    use super::utc_string;

    #[test]
    fn utc_strings() {
        assert_eq!(utc_string(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_string(1_795_877_365_015), "2026-11-28 14:49:25 UTC");
        assert_eq!(utc_string(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_string(-1_000), "1969-12-31 23:59:59 UTC");
    }
}
