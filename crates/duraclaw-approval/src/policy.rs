//! Rules that answer approval requests without a human, and "allow for the
//! rest of this session".

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::approval::{
    ApprovalGate, ApprovalRequest, DecideOutcome, DynApprovalGate, RuleDecided, StandingAllow,
};
use duraclaw_core::clock::{SharedClock, SystemClock};
use duraclaw_core::protocol::{
    DecidedBy, Decision, NOTICE_RULE_DECISION, Notice, QuestionKind, RuleAction, RuleApplied,
};
use duraclaw_core::store::Resolution;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{AuditAction, AuditEntry, AuditLog, TracingAudit};
use crate::rules::{RuleSet, RuleVerdict};
use std::sync::Arc;

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum PolicyAction {
    /// Run the tool without asking.
    Allow,
    /// Refuse it, telling the model why.
    Deny {
        /// The reason the model sees.
        reason: String,
    },
    /// Ask a human (the gate beneath).
    Ask,
}

/// One rule: the first rule whose patterns match decides.
///
/// Patterns are globs: `*` matches any run of characters, `?` one character.
/// `input` is matched against the tool's main argument (`command` for Bash,
/// `file_path` for Read/Write/Edit, `url` for WebFetch, `pattern` for
/// Grep/Glob) or, for other tools, the input's JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// Tool name pattern, e.g. `Read`, `mcp__*`.
    pub tool: String,
    /// Input pattern, e.g. `git status*`; any input when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// What to do.
    #[serde(flatten)]
    pub action: PolicyAction,
}

/// A gate that applies rules, then asks `inner`.
///
/// Two kinds of rules: the user's scoped rules ([`RuleSet`], replaced at
/// any time with [`PolicyGate::set_rules`]; each decision they make is a
/// [`RuleDecided`] with a `rule_decision` notice, see
/// [`ApprovalGate::by_rule`]), asked first; then the application's fixed
/// [`PolicyRule`]s, first match wins.
#[derive(Debug)]
pub struct PolicyGate {
    rules: Vec<PolicyRule>,
    scoped: Mutex<RuleSet>,
    /// "Allow for this session" allows the tool (any input) here; off: the
    /// gate beneath keeps it (the same call only).
    remember_tool: bool,
    inner: DynApprovalGate,
    allowed_for_session: Mutex<HashSet<(String, String)>>,
    audit: Arc<dyn AuditLog>,
    clock: SharedClock,
}

impl PolicyGate {
    /// Rules in order over `inner`.
    pub fn new(rules: Vec<PolicyRule>, inner: DynApprovalGate) -> Self {
        PolicyGate {
            rules,
            scoped: Mutex::new(RuleSet::default()),
            remember_tool: true,
            inner,
            allowed_for_session: Mutex::new(HashSet::new()),
            audit: Arc::new(TracingAudit),
            clock: SystemClock::shared(),
        }
    }

    /// Audits the decisions the rules make to `audit` (the gate beneath
    /// audits its own).
    pub fn with_audit(mut self, audit: Arc<dyn AuditLog>) -> Self {
        self.audit = audit;
        self
    }

    /// Stamps the rules' decisions with `clock`'s time instead of the
    /// system clock's.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Leaves "allow for this session" to the gate beneath, which allows
    /// the same call again (same tool, same input) rather than the tool.
    pub fn with_exact_session_allows(mut self) -> Self {
        self.remember_tool = false;
        self
    }

    /// Replaces the user's scoped rules (and the worktree paths resolve
    /// against); the next request is decided by them.
    pub fn set_rules(&self, rules: RuleSet) {
        *self.scoped.lock().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// The user's scoped rules in force.
    pub fn scoped_rules(&self) -> RuleSet {
        self.scoped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn scoped_verdict(&self, tool: &str, input: &Value) -> Option<RuleVerdict> {
        self.scoped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evaluate(tool, input)
    }

    /// The first rule's action for a tool call, or `Ask` when none matches.
    pub fn evaluate(&self, tool: &str, input: &Value) -> PolicyAction {
        let subject = primary_input(tool, input);
        self.rules
            .iter()
            .find(|r| {
                glob_match(&r.tool, tool)
                    && r.input.as_deref().is_none_or(|p| glob_match(p, &subject))
            })
            .map_or(PolicyAction::Ask, |r| r.action.clone())
    }

    fn remembered(&self, session: &str, tool: &str) -> bool {
        self.allowed_for_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(session.to_owned(), tool.to_owned()))
    }

    fn remember(&self, session: &str, tool: &str) {
        self.allowed_for_session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((session.to_owned(), tool.to_owned()));
    }
}

fn policy_resolution(decision: Decision, why: &str, at_ms: i64) -> Resolution {
    Resolution {
        decision,
        by: DecidedBy {
            who: "policy".into(),
            client: Some(why.to_owned()),
        },
        at_ms,
    }
}

/// The decision and the `rule_decision` notice of a scoped rule's verdict
/// on a call (`None` for an ask: a person decides).
fn rule_decided(
    request: &ApprovalRequest,
    tool: &str,
    verdict: &RuleVerdict,
    at_ms: i64,
) -> Option<RuleDecided> {
    let described = verdict.describe();
    let decision = match verdict.action {
        RuleAction::Allow => Decision::Allow {
            updated_input: None,
            remember: false,
        },
        RuleAction::Deny => Decision::Deny {
            reason: described.clone(),
            interrupt: false,
        },
        RuleAction::Ask => return None,
    };
    let mut notice = Notice::new(
        NOTICE_RULE_DECISION,
        format!("{tool} was {described}, without asking"),
    );
    if let Some(id) = &request.question.tool_use_id {
        notice = notice.about_tool_use(id);
    }
    notice.rule = Some(Box::new(RuleApplied {
        rule: verdict.rule.clone(),
        scope: verdict.scope,
        action: verdict.action,
        id: verdict.id.clone(),
    }));
    Some(RuleDecided {
        resolution: Resolution {
            decision,
            by: DecidedBy {
                who: "rule".into(),
                client: Some(format!("{} ({} scope)", verdict.rule, verdict.scope.name())),
            },
            at_ms,
        },
        notice,
    })
}

#[async_trait]
impl ApprovalGate for PolicyGate {
    async fn by_rule(&self, request: &ApprovalRequest) -> Result<Option<RuleDecided>> {
        let QuestionKind::Permission {
            tool_name, input, ..
        } = &request.question.kind
        else {
            return Ok(None);
        };
        let Some(verdict) = self.scoped_verdict(tool_name, input) else {
            return Ok(None);
        };
        let Some(decided) = rule_decided(request, tool_name, &verdict, self.clock.now_ms()) else {
            return Ok(None);
        };
        tracing::info!(
            session = %request.session_id,
            tool = %tool_name,
            rule = %verdict.rule,
            scope = verdict.scope.name(),
            action = verdict.action.name(),
            "approval rule decided"
        );
        self.audit.record(&AuditEntry {
            at_ms: decided.resolution.at_ms,
            action: AuditAction::Decided,
            session_id: request.session_id.clone(),
            question_id: request.question.question_id.clone(),
            tool_name: Some(tool_name.clone()),
            input: Some(input.clone()),
            decision: Some(decided.resolution.decision.clone()),
            who: Some(decided.resolution.by.who.clone()),
            client: decided.resolution.by.client.clone(),
        });
        Ok(Some(decided))
    }

    async fn request(&self, request: ApprovalRequest) -> Result<Resolution> {
        if let Some(decided) = self.by_rule(&request).await? {
            return Ok(decided.resolution);
        }
        let QuestionKind::Permission {
            tool_name, input, ..
        } = &request.question.kind
        else {
            return self.inner.request(request).await;
        };
        let tool = tool_name.clone();
        // Deny rules always win; "allow for this session" only saves asking.
        let action = self.evaluate(&tool, input);
        let decided = match action {
            PolicyAction::Deny { reason } => Some((
                Decision::Deny {
                    reason,
                    interrupt: false,
                },
                "rule",
            )),
            _ if self.remembered(&request.session_id, &tool) => Some((
                Decision::Allow {
                    updated_input: None,
                    remember: false,
                },
                "allowed for the rest of this session",
            )),
            PolicyAction::Allow => Some((
                Decision::Allow {
                    updated_input: None,
                    remember: false,
                },
                "rule",
            )),
            PolicyAction::Ask => None,
        };
        if let Some((decision, why)) = decided {
            let resolution = policy_resolution(decision, why, self.clock.now_ms());
            self.audit.record(&AuditEntry {
                at_ms: resolution.at_ms,
                action: AuditAction::Decided,
                session_id: request.session_id.clone(),
                question_id: request.question.question_id.clone(),
                tool_name: Some(tool),
                input: Some(input.clone()),
                decision: Some(resolution.decision.clone()),
                who: Some(resolution.by.who.clone()),
                client: resolution.by.client.clone(),
            });
            return Ok(resolution);
        }
        let session = request.session_id.clone();
        let resolution = self.inner.request(request).await?;
        if self.remember_tool
            && let Decision::Allow { remember: true, .. } = resolution.decision
        {
            self.remember(&session, &tool);
        }
        Ok(resolution)
    }

    async fn decide(
        &self,
        question_id: &str,
        decision: Decision,
        by: DecidedBy,
    ) -> Result<DecideOutcome> {
        self.inner.decide(question_id, decision, by).await
    }

    async fn pending(&self) -> Result<Vec<ApprovalRequest>> {
        self.inner.pending().await
    }

    async fn cancel(&self, question_id: &str, reason: &str) -> Result<DecideOutcome> {
        self.inner.cancel(question_id, reason).await
    }

    async fn standing_allow(&self, request: &ApprovalRequest) -> Result<Option<StandingAllow>> {
        // A deny rule wins over an earlier "allow for this session".
        if let QuestionKind::Permission {
            tool_name, input, ..
        } = &request.question.kind
            && (matches!(self.evaluate(tool_name, input), PolicyAction::Deny { .. })
                || self
                    .scoped_verdict(tool_name, input)
                    .is_some_and(|v| v.action == RuleAction::Deny))
        {
            return Ok(None);
        }
        self.inner.standing_allow(request).await
    }
}

/// The string a rule's `input` pattern is matched against.
fn primary_input(tool: &str, input: &Value) -> String {
    let field = match tool {
        "Bash" => "command",
        "Read" | "Write" | "Edit" | "MultiEdit" | "NotebookEdit" => "file_path",
        "WebFetch" => "url",
        "Grep" | "Glob" => "pattern",
        _ => "",
    };
    match input.get(field).and_then(Value::as_str) {
        Some(s) => s.to_owned(),
        None => input.to_string(),
    }
}

/// Glob match with `*` (any run of characters) and `?` (one character), as
/// [`PolicyRule`] patterns use it; iterative, no recursion.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("Read", "Read"));
        assert!(!glob_match("Read", "ReadX"));
        assert!(glob_match("mcp__*", "mcp__github__x"));
        assert!(glob_match("git status*", "git status --short"));
        assert!(!glob_match("git status*", "git push"));
        assert!(glob_match("*.rs", "src/main.rs"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!glob_match("*a*b*c*", "xxaxxcxxbxx"));
    }
}
