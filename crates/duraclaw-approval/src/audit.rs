//! The audit trail: one entry per request and per decision.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use duraclaw_core::protocol::Decision;
use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A request was made.
    Requested,
    /// A request was decided (by a human, a policy, a timeout or the executor).
    Decided,
    /// A decision came after the first and changed nothing.
    Refused,
    /// A tool ran that no decision allowed (`question_id` holds its
    /// tool_use_id); the session was stopped.
    Unapproved,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// What happened.
    pub action: AuditAction,
    /// The session.
    pub session_id: String,
    /// The question.
    pub question_id: String,
    /// The tool, for permission requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// The tool's input, for requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// The decision, for decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Who: a user, `policy`, `timeout`, `executor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// From which client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Where audit entries go. Writing must not fail the decision: an
/// implementation logs its own errors.
pub trait AuditLog: std::fmt::Debug + Send + Sync {
    /// Records one entry.
    fn record(&self, entry: &AuditEntry);
}

/// Audit entries as structured `tracing` events (target `duraclaw::audit`).
#[derive(Debug, Default, Clone)]
pub struct TracingAudit;

impl AuditLog for TracingAudit {
    fn record(&self, e: &AuditEntry) {
        tracing::info!(
            target: "duraclaw::audit",
            action = ?e.action,
            session = %e.session_id,
            question = %e.question_id,
            tool = e.tool_name.as_deref().unwrap_or(""),
            decision = e.decision.as_ref().map(Decision::name).unwrap_or(""),
            who = e.who.as_deref().unwrap_or(""),
            client = e.client.as_deref().unwrap_or(""),
            "approval"
        );
    }
}

/// Audit entries appended to a JSON-lines file.
#[derive(Debug)]
pub struct JsonlAudit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl JsonlAudit {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JsonlAudit {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }
}

impl AuditLog for JsonlAudit {
    fn record(&self, entry: &AuditEntry) {
        let line = match serde_json::to_string(entry) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit entry does not encode");
                return;
            }
        };
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writeln!(file, "{line}") {
            tracing::error!(path = %self.path.display(), error = %e, "audit log write failed");
        }
    }
}

/// Audit entries kept in memory, for tests and small tools.
#[derive(Debug, Default, Clone)]
pub struct MemoryAudit {
    entries: Arc<Mutex<Vec<AuditEntry>>>,
}

impl MemoryAudit {
    /// Everything recorded so far.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl AuditLog for MemoryAudit {
    fn record(&self, entry: &AuditEntry) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry.clone());
    }
}

/// Every entry to each of several audit logs (e.g. a file and `tracing`).
#[derive(Debug, Clone)]
pub struct AuditTee(pub Vec<Arc<dyn AuditLog>>);

impl AuditLog for AuditTee {
    fn record(&self, entry: &AuditEntry) {
        for log in &self.0 {
            log.record(entry);
        }
    }
}
