//! [`ToolGuard`]: did every tool that ran have a decision that allowed it?
//!
//! A pure check over a session's events, in log order, whatever the
//! executor: a `tool_result` that is not an error counts as a tool that
//! ran, and it must follow a `question.resolved` that allowed its call
//! (`allow`, or `answered` for a question to the user), a `rule_decision`
//! notice of an approval rule that allowed it, or an earlier
//! "allow for this session" (`allow` with `remember`) of the same tool with
//! the same input. Anything else — no question at all, or a question denied,
//! withdrawn or expired — is an [`UnapprovedTool`]: the gateway ends the
//! session on it, and a host can run the same check over a stored log.
//!
//! A `tool_result` marked as an error is taken as a call that did not run
//! (refused before it ran: invalid input, an interrupt, a denial); a tool
//! that ran and failed looks the same, so it is not flagged.

use std::collections::HashMap;

use serde_json::Value;

use crate::protocol::{
    Decision, ERROR_UNAPPROVED_TOOL, ErrorEvent, Event, NOTICE_RULE_DECISION, QuestionKind,
    RuleAction, ToolResult,
};

/// A tool that ran without a decision allowing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnapprovedTool {
    /// The tool's name (`an unknown tool` when its `tool_use` was not seen).
    pub tool_name: String,
    /// The call's id.
    pub tool_use_id: String,
}

impl UnapprovedTool {
    /// `a tool ran without approval: <tool> (<tool_use_id>)`.
    pub fn message(&self) -> String {
        format!(
            "a tool ran without approval: {} ({})",
            self.tool_name, self.tool_use_id
        )
    }

    /// The `error` event (code [`ERROR_UNAPPROVED_TOOL`]) that ends the
    /// session.
    pub fn error_event(&self) -> Event {
        Event::Error(ErrorEvent {
            message: format!(
                "{}; the session was stopped. The executor ran a tool call nobody \
                 allowed (an unsupported executor version, or a fault): check what it did.",
                self.message()
            ),
            code: Some(ERROR_UNAPPROVED_TOOL.to_owned()),
            ..ErrorEvent::default()
        })
    }
}

/// What was decided about one tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    NotAllowed,
}

/// The question asked about a tool call.
#[derive(Debug, Clone)]
struct Asked {
    tool_use_id: String,
    /// Tool and input, for a permission question.
    permission: Option<(String, Value)>,
}

/// Follows a session's events and reports the first tool result no
/// decision allowed. Per-turn state is dropped at each `result`; "allow for
/// this session" decisions are kept for the session.
#[derive(Debug, Clone, Default)]
pub struct ToolGuard {
    /// Tool calls seen this turn: id → (tool, input).
    calls: HashMap<String, (String, Value)>,
    /// Questions about tool calls this turn, by question id.
    questions: HashMap<String, Asked>,
    /// The first decision on each tool call this turn.
    verdicts: HashMap<String, Verdict>,
    /// (tool, input) allowed for the rest of the session.
    standing: Vec<(String, Value)>,
}

impl ToolGuard {
    /// A guard that has seen nothing.
    pub fn new() -> Self {
        ToolGuard::default()
    }

    /// Takes the next event; `Some` when it is a tool result no decision
    /// allowed.
    pub fn observe(&mut self, event: &Event) -> Option<UnapprovedTool> {
        match event {
            Event::ToolUse(t) => {
                self.calls
                    .insert(t.tool_use_id.clone(), (t.name.clone(), t.input.clone()));
            }
            Event::UserQuestion(q) => {
                if let Some(tool_use_id) = &q.tool_use_id {
                    let permission = match &q.kind {
                        QuestionKind::Permission {
                            tool_name, input, ..
                        } => Some((tool_name.clone(), input.clone())),
                        _ => None,
                    };
                    self.questions.insert(
                        q.question_id.clone(),
                        Asked {
                            tool_use_id: tool_use_id.clone(),
                            permission,
                        },
                    );
                }
            }
            Event::QuestionResolved(r) => {
                if let Some(asked) = self.questions.get(&r.question_id) {
                    let verdict = match &r.decision {
                        Decision::Allow { .. } | Decision::Answered { .. } => Verdict::Allowed,
                        _ => Verdict::NotAllowed,
                    };
                    // The first decision is the one the executor acted on.
                    self.verdicts
                        .entry(asked.tool_use_id.clone())
                        .or_insert(verdict);
                    if let (
                        Decision::Allow {
                            remember: true,
                            updated_input,
                        },
                        Some((tool, input)),
                    ) = (&r.decision, &asked.permission)
                        && updated_input.as_ref().is_none_or(|u| u == input)
                        && !self.allowed_for_session(tool, input)
                    {
                        self.standing.push((tool.clone(), input.clone()));
                    }
                }
            }
            // An approval rule decided the call without a question.
            Event::Notice(n) if n.code == NOTICE_RULE_DECISION => {
                if let (Some(id), Some(rule)) = (&n.tool_use_id, &n.rule) {
                    let verdict = if rule.action == RuleAction::Allow {
                        Verdict::Allowed
                    } else {
                        Verdict::NotAllowed
                    };
                    self.verdicts.entry(id.clone()).or_insert(verdict);
                }
            }
            Event::ToolResult(r) => return self.result(r),
            Event::Result(_) => {
                self.calls.clear();
                self.questions.clear();
                self.verdicts.clear();
            }
            _ => {}
        }
        None
    }

    /// Takes `tool` with `input` as allowed for the rest of the session (an
    /// "allow for this session" decided before this guard saw the log,
    /// e.g. before a restart).
    pub fn allow_for_session(&mut self, tool: &str, input: &Value) {
        if !self.allowed_for_session(tool, input) {
            self.standing.push((tool.to_owned(), input.clone()));
        }
    }

    /// The calls (tool, input) allowed for the rest of the session, in the
    /// order allowed.
    pub fn session_allows(&self) -> &[(String, Value)] {
        &self.standing
    }

    /// Whether `tool` with `input` was allowed for the rest of the session.
    pub fn allowed_for_session(&self, tool: &str, input: &Value) -> bool {
        self.standing.iter().any(|(t, i)| t == tool && i == input)
    }

    fn result(&mut self, r: &ToolResult) -> Option<UnapprovedTool> {
        let verdict = self.verdicts.remove(&r.tool_use_id);
        let call = self.calls.remove(&r.tool_use_id);
        if verdict == Some(Verdict::Allowed) || r.is_error {
            return None;
        }
        if let Some((tool, input)) = &call
            && self.allowed_for_session(tool, input)
        {
            return None;
        }
        Some(UnapprovedTool {
            tool_name: call.map_or_else(|| "an unknown tool".to_owned(), |(tool, _)| tool),
            tool_use_id: r.tool_use_id.clone(),
        })
    }

    /// The tool results in `events` (a session's log, in order) that no
    /// decision allowed.
    pub fn check<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<UnapprovedTool> {
        let mut guard = ToolGuard::new();
        events
            .into_iter()
            .filter_map(|e| guard.observe(e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::protocol::{DecidedBy, QuestionResolved, ToolUse, TurnResult, UserQuestion};

    fn tool_use(id: &str, tool: &str, input: Value) -> Event {
        Event::ToolUse(ToolUse {
            tool_use_id: id.into(),
            name: tool.into(),
            input,
            message_id: None,
        })
    }

    fn asked(q: &str, id: &str, tool: &str, input: Value) -> Event {
        Event::UserQuestion(UserQuestion {
            question_id: q.into(),
            tool_use_id: Some(id.into()),
            kind: QuestionKind::Permission {
                tool_name: tool.into(),
                input,
                description: None,
            },
        })
    }

    fn resolved(q: &str, decision: Decision) -> Event {
        Event::QuestionResolved(QuestionResolved {
            question_id: q.into(),
            decision,
            by: DecidedBy::new("alice"),
            at_ms: 1,
        })
    }

    fn allow(remember: bool) -> Decision {
        Decision::Allow {
            updated_input: None,
            remember,
        }
    }

    fn ran(id: &str) -> Event {
        Event::ToolResult(ToolResult {
            tool_use_id: id.into(),
            content: json!("ok"),
            is_error: false,
        })
    }

    fn refused(id: &str) -> Event {
        Event::ToolResult(ToolResult {
            tool_use_id: id.into(),
            content: json!("denied"),
            is_error: true,
        })
    }

    fn end() -> Event {
        Event::Result(TurnResult {
            last_message_uuid: None,
            subtype: Some("success".into()),
            is_error: false,
            duration_ms: None,
            cost_usd: None,
            usage: None,
            num_turns: None,
            terminal_reason: None,
        })
    }

    fn flagged(events: &[Event]) -> Vec<String> {
        ToolGuard::check(events)
            .into_iter()
            .map(|u| u.message())
            .collect()
    }

    #[test]
    fn a_tool_that_ran_with_no_question_is_flagged() {
        let ls = json!({"command": "ls"});
        assert_eq!(
            flagged(&[tool_use("t1", "Bash", ls), ran("t1")]),
            ["a tool ran without approval: Bash (t1)"]
        );
        assert_eq!(
            flagged(&[ran("t9")]),
            ["a tool ran without approval: an unknown tool (t9)"]
        );
    }

    fn by_rule(id: &str, action: RuleAction) -> Event {
        let mut n = crate::protocol::Notice::new(NOTICE_RULE_DECISION, "by rule Read (user scope)")
            .about_tool_use(id);
        n.rule = Some(Box::new(crate::protocol::RuleApplied {
            rule: "Read".into(),
            scope: crate::protocol::RuleScope::User,
            action,
            id: None,
        }));
        Event::Notice(n)
    }

    #[test]
    fn a_call_a_rule_allowed_passes_and_one_it_denied_does_not() {
        let read = json!({"file_path": "a"});
        let allowed = [
            tool_use("t1", "Read", read.clone()),
            by_rule("t1", RuleAction::Allow),
            ran("t1"),
        ];
        assert!(flagged(&allowed).is_empty());
        let denied = [
            tool_use("t2", "Read", read.clone()),
            by_rule("t2", RuleAction::Deny),
            ran("t2"),
        ];
        assert_eq!(flagged(&denied), ["a tool ran without approval: Read (t2)"]);
        // A notice about another call allows nothing here.
        let other = [
            tool_use("t3", "Read", read),
            by_rule("t4", RuleAction::Allow),
            ran("t3"),
        ];
        assert_eq!(flagged(&other).len(), 1);
    }

    #[test]
    fn an_allowed_or_answered_call_passes() {
        let ls = json!({"command": "ls"});
        let events = [
            tool_use("t1", "Bash", ls.clone()),
            asked("q1", "t1", "Bash", ls),
            resolved("q1", allow(false)),
            ran("t1"),
            tool_use("t2", "AskUserQuestion", json!({})),
            Event::UserQuestion(UserQuestion {
                question_id: "q2".into(),
                tool_use_id: Some("t2".into()),
                kind: QuestionKind::AskUser { questions: vec![] },
            }),
            resolved(
                "q2",
                Decision::Answered {
                    answers: BTreeMap::new(),
                },
            ),
            ran("t2"),
            end(),
        ];
        assert_eq!(flagged(&events), Vec::<String>::new());
    }

    #[test]
    fn a_call_that_ran_after_a_denial_withdrawal_or_timeout_is_flagged() {
        let ls = json!({"command": "ls"});
        for decision in [
            Decision::Deny {
                reason: "no".into(),
                interrupt: false,
            },
            Decision::Cancelled { reason: None },
            Decision::Expired,
        ] {
            let name = decision.name();
            let mut events = vec![
                tool_use("t1", "Bash", ls.clone()),
                asked("q1", "t1", "Bash", ls.clone()),
                resolved("q1", decision),
            ];
            // Reported as refused: nothing ran.
            assert_eq!(
                flagged(&[events.clone(), vec![refused("t1")]].concat()),
                Vec::<String>::new(),
                "{name}"
            );
            events.push(ran("t1"));
            assert_eq!(flagged(&events).len(), 1, "{name}");
        }
        // The first decision counts: an allow after a denial changes nothing.
        let events = [
            tool_use("t1", "Bash", ls.clone()),
            asked("q1", "t1", "Bash", ls),
            resolved(
                "q1",
                Decision::Deny {
                    reason: "no".into(),
                    interrupt: false,
                },
            ),
            resolved("q1", allow(false)),
            ran("t1"),
        ];
        assert_eq!(flagged(&events).len(), 1);
    }

    #[test]
    fn allow_for_this_session_covers_the_same_tool_with_the_same_input_only() {
        let read_a = json!({"file_path": "/w/a"});
        let read_b = json!({"file_path": "/w/b"});
        let first = [
            tool_use("t1", "Read", read_a.clone()),
            asked("q1", "t1", "Read", read_a.clone()),
            resolved("q1", allow(true)),
            ran("t1"),
            end(),
        ];
        let same = [tool_use("t2", "Read", read_a.clone()), ran("t2")];
        assert_eq!(
            flagged(&[&first[..], &same[..]].concat()),
            Vec::<String>::new()
        );
        let other_input = [tool_use("t3", "Read", read_b), ran("t3")];
        assert_eq!(flagged(&[&first[..], &other_input[..]].concat()).len(), 1);
        let other_tool = [tool_use("t4", "Bash", read_a.clone()), ran("t4")];
        assert_eq!(flagged(&[&first[..], &other_tool[..]].concat()).len(), 1);
        // Without `remember`, the next call needs its own decision.
        let once = [
            tool_use("t1", "Read", read_a.clone()),
            asked("q1", "t1", "Read", read_a.clone()),
            resolved("q1", allow(false)),
            ran("t1"),
        ];
        assert_eq!(flagged(&[&once[..], &same[..]].concat()).len(), 1);
        // An allow with edited input is not a standing allow of the
        // model's input.
        let edited = [
            tool_use("t1", "Read", read_a.clone()),
            asked("q1", "t1", "Read", read_a.clone()),
            resolved(
                "q1",
                Decision::Allow {
                    updated_input: Some(json!({"file_path": "/w/c"})),
                    remember: true,
                },
            ),
            ran("t1"),
        ];
        assert_eq!(flagged(&[&edited[..], &same[..]].concat()).len(), 1);
    }

    #[test]
    fn an_allow_put_back_covers_the_same_call_only() {
        let read_a = json!({"file_path": "/w/a"});
        let mut guard = ToolGuard::new();
        guard.allow_for_session("Read", &read_a);
        guard.allow_for_session("Read", &read_a);
        assert_eq!(guard.session_allows().len(), 1);
        assert_eq!(guard.observe(&tool_use("t1", "Read", read_a)), None);
        assert_eq!(guard.observe(&ran("t1")), None);
        let read_b = json!({"file_path": "/w/b"});
        assert_eq!(guard.observe(&tool_use("t2", "Read", read_b)), None);
        assert!(guard.observe(&ran("t2")).is_some());
    }
}
