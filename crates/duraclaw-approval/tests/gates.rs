#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The approval gates: first answer wins, expiry is not denial, policies,
//! "allow for this session", audit and event reporting.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duraclaw_approval::{
    AuditAction, MemoryAudit, MemoryGate, PolicyAction, PolicyGate, PolicyRule, decision_message,
};
use duraclaw_core::Result;
use duraclaw_core::approval::{ApprovalGate, ApprovalRequest, DecideOutcome};
use duraclaw_core::clock::ManualClock;
use duraclaw_core::executor::EventSink;
use duraclaw_core::protocol::{DecidedBy, Decision, Event, QuestionKind, UserQuestion};
use serde_json::json;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct ChannelSink(mpsc::UnboundedSender<Event>);

#[async_trait]
impl EventSink for ChannelSink {
    async fn emit(&self, event: Event) -> Result<()> {
        self.0
            .send(event)
            .map_err(|_| duraclaw_core::Error::Closed("test sink"))
    }
}

fn sink() -> (Arc<ChannelSink>, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(ChannelSink(tx)), rx)
}

fn request(session: &str, id: &str, tool: &str, input: serde_json::Value) -> ApprovalRequest {
    ApprovalRequest {
        session_id: session.into(),
        question: UserQuestion {
            question_id: id.into(),
            tool_use_id: Some(format!("toolu_{id}")),
            kind: QuestionKind::Permission {
                tool_name: tool.into(),
                input,
                description: None,
            },
        },
        asked_at_ms: 1,
    }
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("no event within the deadline")
        .expect("sink closed")
}

#[tokio::test]
async fn first_answer_wins_and_the_second_is_told_who_decided() {
    let audit = MemoryAudit::default();
    let (sink, mut events) = sink();
    let gate = Arc::new(
        MemoryGate::new()
            .with_audit(Arc::new(audit.clone()))
            .with_sink(sink),
    );
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move {
            gate.request(request("s1", "q1", "Bash", json!({"command": "ls"})))
                .await
        }
    });
    assert!(
        matches!(next_event(&mut events).await, Event::UserQuestion(q) if q.question_id == "q1")
    );
    assert_eq!(gate.pending().await.unwrap().len(), 1);

    let alice = DecidedBy {
        who: "alice".into(),
        client: Some("laptop".into()),
    };
    let first = gate
        .decide(
            "q1",
            Decision::Allow {
                updated_input: None,
                remember: false,
            },
            alice,
        )
        .await
        .unwrap();
    assert_eq!(first, DecideOutcome::Decided);
    let second = gate
        .decide(
            "q1",
            Decision::Deny {
                reason: "no".into(),
                interrupt: false,
            },
            DecidedBy::new("bob"),
        )
        .await
        .unwrap();
    let DecideOutcome::AlreadyDecided { first } = &second else {
        panic!("{second:?}")
    };
    assert_eq!(first.by.who, "alice");
    let text = second.describe();
    assert!(
        text.contains("already decided") && text.contains("alice"),
        "{text}"
    );

    let got = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(got.decision, Decision::Allow { .. }));
    assert!(
        matches!(next_event(&mut events).await, Event::QuestionResolved(r) if r.by.who == "alice")
    );
    assert!(gate.pending().await.unwrap().is_empty());

    let actions: Vec<AuditAction> = audit.entries().iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        vec![
            AuditAction::Requested,
            AuditAction::Decided,
            AuditAction::Refused
        ]
    );
    let requested = &audit.entries()[0];
    assert_eq!(requested.tool_name.as_deref(), Some("Bash"));
    assert_eq!(requested.input, Some(json!({"command": "ls"})));
    assert_eq!(audit.entries()[1].client.as_deref(), Some("laptop"));

    // Asking again with the same id gets the same decision at once.
    let again = gate
        .request(request("s1", "q1", "Bash", json!({})))
        .await
        .unwrap();
    assert_eq!(again.by.who, "alice");
}

#[tokio::test]
async fn a_timeout_expires_and_is_never_called_a_denial() {
    let gate = MemoryGate::new().with_timeout(Duration::from_millis(50));
    let r = gate
        .request(request("s1", "q1", "Bash", json!({})))
        .await
        .unwrap();
    assert_eq!(r.decision, Decision::Expired);
    assert_eq!(r.by.who, "timeout");
    let words = decision_message(&r.decision);
    assert!(
        words.contains("expired") && words.contains("not denied"),
        "{words}"
    );
    assert!(!decision_message(&r.decision).starts_with("denied"));
    // A late human answer is told it expired.
    let late = gate
        .decide(
            "q1",
            Decision::Allow {
                updated_input: None,
                remember: false,
            },
            DecidedBy::new("alice"),
        )
        .await
        .unwrap();
    assert!(late.describe().contains("expired") && late.describe().contains("timeout"));
}

#[tokio::test]
async fn gates_stamp_decisions_with_their_clock() {
    let clock = ManualClock::new(5_000);
    let gate = Arc::new(
        MemoryGate::new()
            .with_timeout(Duration::from_millis(20))
            .with_clock(clock.shared()),
    );
    let expired = gate
        .request(request("s1", "q1", "Bash", json!({})))
        .await
        .unwrap();
    assert_eq!(
        (expired.decision, expired.at_ms),
        (Decision::Expired, 5_000)
    );
    clock.advance(2_000);
    let rules = vec![PolicyRule {
        tool: "Read".into(),
        input: None,
        action: PolicyAction::Allow,
    }];
    let policy = PolicyGate::new(rules, gate).with_clock(clock.shared());
    let allowed = policy
        .request(request("s1", "q2", "Read", json!({})))
        .await
        .unwrap();
    assert_eq!((allowed.by.who.as_str(), allowed.at_ms), ("policy", 7_000));
}

#[tokio::test]
async fn cancel_withdraws_a_pending_request() {
    let gate = Arc::new(MemoryGate::new());
    let (sink, mut events) = sink();
    let gate2 = Arc::new(MemoryGate::new().with_sink(sink));
    let waiter = tokio::spawn({
        let gate2 = gate2.clone();
        async move { gate2.request(request("s1", "q9", "Edit", json!({}))).await }
    });
    next_event(&mut events).await;
    gate2
        .cancel("q9", "the agent withdrew the request")
        .await
        .unwrap();
    let r = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(r.decision, Decision::Cancelled { .. }));
    assert_eq!(r.by.who, "executor");
    assert!(matches!(
        gate.decide("nope", Decision::Expired, DecidedBy::new("x"))
            .await,
        Err(duraclaw_core::Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn pending_lists_requests_oldest_first() {
    let (sink, mut events) = sink();
    let gate = Arc::new(MemoryGate::new().with_sink(sink));
    let mut tasks = Vec::new();
    for id in ["a", "b", "c"] {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            gate.request(request("s1", id, "Read", json!({}))).await
        }));
        next_event(&mut events).await;
    }
    let ids: Vec<String> = gate
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.question.question_id)
        .collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    for id in ["b", "a", "c"] {
        gate.decide(id, Decision::Expired, DecidedBy::new("t"))
            .await
            .unwrap();
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().decision, Decision::Expired);
    }
}

#[tokio::test]
async fn policy_rules_allow_deny_and_ask() {
    let (sink, mut events) = sink();
    let inner = Arc::new(MemoryGate::new().with_sink(sink));
    let rules: Vec<PolicyRule> = serde_json::from_value(json!([
        {"tool": "Read", "action": "allow"},
        {"tool": "Bash", "input": "rm -rf*", "action": "deny", "reason": "never delete trees"},
        {"tool": "Bash", "input": "git status*", "action": "allow"},
        {"tool": "mcp__*", "action": "ask"}
    ]))
    .unwrap();
    let policy_audit = MemoryAudit::default();
    let gate =
        Arc::new(PolicyGate::new(rules, inner.clone()).with_audit(Arc::new(policy_audit.clone())));

    let r = gate
        .request(request("s1", "q1", "Read", json!({"file_path": "/x"})))
        .await
        .unwrap();
    assert!(matches!(r.decision, Decision::Allow { .. }));
    assert_eq!(r.by.who, "policy");
    let r = gate
        .request(request("s1", "q2", "Bash", json!({"command": "rm -rf /"})))
        .await
        .unwrap();
    assert_eq!(
        r.decision,
        Decision::Deny {
            reason: "never delete trees".into(),
            interrupt: false
        }
    );
    let r = gate
        .request(request(
            "s1",
            "q3",
            "Bash",
            json!({"command": "git status --short"}),
        ))
        .await
        .unwrap();
    assert!(matches!(r.decision, Decision::Allow { .. }));
    assert_eq!(
        gate.evaluate("Bash", &json!({"command": "make"})),
        PolicyAction::Ask
    );

    // No rule matches: a human is asked; they allow Edit for the session.
    let ask = tokio::spawn({
        let gate = gate.clone();
        async move {
            gate.request(request("s1", "q4", "Edit", json!({"file_path": "a"})))
                .await
        }
    });
    assert!(
        matches!(next_event(&mut events).await, Event::UserQuestion(q) if q.question_id == "q4")
    );
    gate.decide(
        "q4",
        Decision::Allow {
            updated_input: None,
            remember: true,
        },
        DecidedBy::new("alice"),
    )
    .await
    .unwrap();
    assert_eq!(ask.await.unwrap().unwrap().by.who, "alice");
    assert!(
        matches!(next_event(&mut events).await, Event::QuestionResolved(r) if r.question_id == "q4")
    );
    let r = gate
        .request(request("s1", "q5", "Edit", json!({"file_path": "b"})))
        .await
        .unwrap();
    assert_eq!(r.by.who, "policy");
    assert_eq!(
        r.by.client.as_deref(),
        Some("allowed for the rest of this session")
    );

    // Another session is still asked.
    let other = tokio::spawn({
        let gate = gate.clone();
        async move { gate.request(request("s2", "q6", "Edit", json!({}))).await }
    });
    assert!(
        matches!(next_event(&mut events).await, Event::UserQuestion(q) if q.question_id == "q6")
    );
    gate.cancel("q6", "session ended").await.unwrap();
    assert!(matches!(
        other.await.unwrap().unwrap().decision,
        Decision::Cancelled { .. }
    ));
}

/// Decides request `id` of `gate` with `decision` once it is pending.
async fn decide_when_pending(gate: &Arc<MemoryGate>, req: ApprovalRequest, decision: Decision) {
    let g = gate.clone();
    let waiting = tokio::spawn(async move { g.request(req).await });
    let id = loop {
        if let Some(p) = gate.pending().await.unwrap().first() {
            break p.question.question_id.clone();
        }
        tokio::task::yield_now().await;
    };
    gate.decide(&id, decision, DecidedBy::new("alice"))
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// An allow put back (decided before the gate existed) answers the same
/// session, tool and input exactly as one decided here, and nothing else.
#[tokio::test]
async fn an_allow_put_back_answers_the_same_call_only() {
    let gate = MemoryGate::new();
    let ls = json!({"command": "ls"});
    let allow = duraclaw_core::approval::StandingAllow {
        question_id: "q1".into(),
        by: DecidedBy::new("alice"),
    };
    gate.restore_session_allow("s1", "Bash", ls.clone(), allow.clone());
    assert_eq!(
        gate.standing_allow(&request("s1", "q2", "Bash", ls.clone()))
            .await
            .unwrap(),
        Some(allow)
    );
    for other in [
        request("s1", "q3", "Bash", json!({"command": "ls -a"})),
        request("s1", "q4", "Read", ls.clone()),
        request("s2", "q5", "Bash", ls.clone()),
    ] {
        assert_eq!(
            gate.standing_allow(&other).await.unwrap(),
            None,
            "{other:?}"
        );
    }
}

#[tokio::test]
async fn the_memory_gate_remembers_an_allow_for_the_same_session_tool_and_input_only() {
    let audit = Arc::new(MemoryAudit::default());
    let gate = Arc::new(MemoryGate::new().with_audit(audit.clone()));
    let ls = json!({"command": "ls"});
    let allow = |remember| Decision::Allow {
        updated_input: None,
        remember,
    };
    // Nothing remembered yet.
    assert_eq!(
        gate.standing_allow(&request("s1", "q0", "Bash", ls.clone()))
            .await
            .unwrap(),
        None
    );
    decide_when_pending(&gate, request("s1", "q1", "Bash", ls.clone()), allow(true)).await;
    let standing = gate
        .standing_allow(&request("s1", "q2", "Bash", ls.clone()))
        .await
        .unwrap()
        .expect("the same call is allowed");
    assert_eq!(standing.question_id, "q1");
    assert_eq!(standing.by.who, "alice");
    // Audited as a decision on the new request.
    assert!(audit.entries().iter().any(|e| e.question_id == "q2"
        && e.action == AuditAction::Decided
        && e.client.as_deref().is_some_and(|c| c.contains("q1"))));
    // Another input, tool or session is asked.
    for other in [
        request("s1", "q3", "Bash", json!({"command": "ls -a"})),
        request("s1", "q4", "Read", ls.clone()),
        request("s2", "q5", "Bash", ls.clone()),
    ] {
        assert_eq!(
            gate.standing_allow(&other).await.unwrap(),
            None,
            "{other:?}"
        );
    }
    // A denial, an allow without `remember` and an edited allow leave
    // nothing standing.
    let rm = json!({"command": "rm -rf build"});
    for (n, decision) in [
        Decision::Deny {
            reason: "no".into(),
            interrupt: false,
        },
        allow(false),
        Decision::Allow {
            updated_input: Some(json!({"command": "rm -rf build/tmp"})),
            remember: true,
        },
    ]
    .into_iter()
    .enumerate()
    {
        decide_when_pending(
            &gate,
            request("s1", &format!("r{n}"), "Bash", rm.clone()),
            decision,
        )
        .await;
        assert_eq!(
            gate.standing_allow(&request("s1", "r9", "Bash", rm.clone()))
                .await
                .unwrap(),
            None,
            "after decision {n}"
        );
    }
}

/// The user's scoped rules decide before anyone is asked: each decision is
/// a `rule_decision` notice naming the rule and an audit entry (who:
/// `rule`); a deny rule beats an earlier "allow for this session"; new
/// rules replace the old ones at once.
#[tokio::test]
async fn scoped_rules_decide_with_a_notice_and_an_audit_entry() {
    use duraclaw_approval::rules::{RuleSet, ScopedRule};
    use duraclaw_core::protocol::{NOTICE_RULE_DECISION, RuleAction, RuleEntry, RuleScope};
    let audit = Arc::new(MemoryAudit::default());
    let memory = Arc::new(MemoryGate::new());
    let gate = PolicyGate::new(vec![], memory.clone())
        .with_audit(audit.clone())
        .with_exact_session_allows();
    let entry = |scope, rule: &str, action| RuleEntry {
        id: Some(format!("id-{rule}")),
        scope,
        rule: rule.into(),
        action,
    };
    gate.set_rules(RuleSet::from_entries(
        "/w",
        &[
            entry(RuleScope::User, "Read", RuleAction::Allow),
            entry(RuleScope::User, "Bash(rm *)", RuleAction::Deny),
        ],
    ));
    let read = request("s1", "q1", "Read", json!({"file_path": "/w/a"}));
    let decided = gate.by_rule(&read).await.unwrap().unwrap();
    assert!(matches!(
        decided.resolution.decision,
        Decision::Allow { .. }
    ));
    assert_eq!(decided.notice.code, NOTICE_RULE_DECISION);
    let named = decided.notice.rule.clone().unwrap();
    assert_eq!(
        (named.rule.as_str(), named.scope, named.id.as_deref()),
        ("Read", RuleScope::User, Some("id-Read"))
    );
    let rm = request("s1", "q2", "Bash", json!({"command": "ls && rm -rf /"}));
    let denied = gate.request(rm.clone()).await.unwrap();
    assert!(
        matches!(&denied.decision, Decision::Deny { reason, .. } if reason == "denied by rule Bash(rm *) (user scope)"),
        "{denied:?}"
    );
    let entries = audit.entries();
    assert_eq!(entries.len(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e.action == AuditAction::Decided && e.who.as_deref() == Some("rule"))
    );
    assert_eq!(
        entries[1].client.as_deref(),
        Some("Bash(rm *) (user scope)")
    );
    // New rules replace the old ones: nothing decides reads any more.
    gate.set_rules(RuleSet::new("/w", Vec::<ScopedRule>::new()));
    assert!(gate.by_rule(&read).await.unwrap().is_none());
    // A deny rule beats an "allow for this session" of the same call.
    let rm_x = |id: &str| request("s1", id, "Bash", json!({"command": "rm x"}));
    decide_when_pending(
        &memory,
        rm_x("q3"),
        Decision::Allow {
            updated_input: None,
            remember: true,
        },
    )
    .await;
    assert!(gate.standing_allow(&rm_x("q4")).await.unwrap().is_some());
    gate.set_rules(RuleSet::from_entries(
        "/w",
        &[entry(RuleScope::User, "Bash(rm *)", RuleAction::Deny)],
    ));
    assert_eq!(gate.standing_allow(&rm_x("q4")).await.unwrap(), None);
    let denied = gate.by_rule(&rm_x("q4")).await.unwrap().unwrap();
    assert!(matches!(denied.resolution.decision, Decision::Deny { .. }));
}
