//! What the bot prints: one line per event, each starting with a word that
//! says what it is, and an `AUDIT` line per request and decision.

use std::io::Write;

use async_trait::async_trait;
use duraclaw_approval::{AuditAction, AuditEntry, AuditLog, JsonlAudit};
use duraclaw_core::Result;
use duraclaw_core::executor::EventSink;
use duraclaw_core::protocol::Event;
use duraclaw_core::store::Resolution;

use crate::actions::Action;

/// Prints one line to stdout and flushes it, so a reader of a pipe sees it
/// at once. A closed stdout is not the bot's problem to report.
pub fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Audit entries as `AUDIT` lines on stdout, and in a JSON-lines file.
#[derive(Debug)]
pub struct StdoutAudit {
    file: JsonlAudit,
}

impl StdoutAudit {
    /// Also appends every entry to `file`.
    pub fn new(file: JsonlAudit) -> Self {
        StdoutAudit { file }
    }

    /// Audits a decision the policy layer made on its own.
    pub fn policy_decision(&self, session: &str, action: &Action, r: &Resolution) {
        self.record(&AuditEntry {
            at_ms: r.at_ms,
            action: AuditAction::Decided,
            session_id: session.to_owned(),
            question_id: action.id.to_owned(),
            tool_name: Some(action.tool.to_owned()),
            input: Some(action.input()),
            decision: Some(r.decision.clone()),
            who: Some(r.by.who.clone()),
            client: r.by.client.clone(),
        });
    }
}

impl AuditLog for StdoutAudit {
    fn record(&self, e: &AuditEntry) {
        let action = match e.action {
            AuditAction::Requested => "requested",
            AuditAction::Decided => "decided",
            AuditAction::Refused => "refused",
            AuditAction::Unapproved => "unapproved",
        };
        let mut line = format!("AUDIT {action} {}", e.question_id);
        if let Some(tool) = &e.tool_name {
            line.push_str(&format!(" tool={tool}"));
        }
        if let Some(d) = &e.decision {
            line.push_str(&format!(" decision={}", d.name()));
        }
        if let Some(who) = &e.who {
            line.push_str(&format!(" who={who}"));
        }
        if let Some(client) = &e.client {
            line.push_str(&format!(" client={client:?}"));
        }
        line.push_str(&format!(" at_ms={}", e.at_ms));
        say(line);
        self.file.record(e);
    }
}

/// Prints `PENDING` once a request is in the store: from then on it
/// survives a restart, and it can be decided.
#[derive(Debug)]
pub struct PendingPrinter;

#[async_trait]
impl EventSink for PendingPrinter {
    async fn emit(&self, event: Event) -> Result<()> {
        if let Event::UserQuestion(q) = event {
            say(format!(
                "PENDING {} {} (approve {0} | deny {0} <reason> | POST /decide/{0})",
                q.question_id,
                crate::describe_question(&q),
            ));
        }
        Ok(())
    }
}
