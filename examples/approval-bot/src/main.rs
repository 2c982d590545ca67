//! `approval-bot`: Duraclaw's approval gate embedded in a tiny agent, with no
//! Claude and no browser, to show the gate is an ordinary library.
//!
//! The bot walks a fixed list of actions. Each goes through a
//! [`PolicyGate`] (reads allowed, `rm -rf*` denied, everything else asks)
//! over a [`DurableGate`] whose requests live in a SQLite file, so a request
//! still pending when the bot is killed is pending again after a restart,
//! and a decision made meanwhile is honoured. A human answers from the
//! terminal (`approve <id>`, `deny <id> <reason>`) or over HTTP on
//! 127.0.0.1 (`GET /pending`, `POST /decide/<id>` with
//! `{"decision":"allow"}` or `{"decision":"deny","reason":"…"}`). The
//! endpoint has no authentication of its own: anyone who can connect to
//! 127.0.0.1 on this machine can decide, which suits a demo on one's own
//! machine and nothing more.
//!
//! ```text
//! approval-bot --data-dir DIR [--port N] [--timeout-secs N] [--rules FILE] [--session ID]
//! ```
//!
//! Every line on stdout starts with a word saying what it is: `LISTENING`,
//! `ACTION`, `PENDING`, `ALLOWED`, `DONE`, `DENIED`, `EXPIRED`,
//! `CANCELLED`, `AUDIT`, `REPLY`, `FINISHED`. A request nobody answers within
//! `--timeout-secs` is reported `EXPIRED`: a timeout is not a human's no.
//! Actions are identified by fixed ids, so running the bot again on the same
//! data directory replays the decisions already made; a fresh directory (or
//! another `--session`) starts over.

mod actions;
mod decide;
mod http;
mod output;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use duraclaw_approval::{DurableGate, JsonlAudit, PolicyGate, PolicyRule};
use duraclaw_core::approval::{ApprovalRequest, DynApprovalGate};
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::protocol::{Decision, QuestionKind, UserQuestion};
use duraclaw_core::store::{DynSessionStore, SessionDirectory, SessionMeta};
use duraclaw_core::{Error, Result};
use duraclaw_store::SqliteDirectory;

use crate::actions::Action;
use crate::output::{PendingPrinter, StdoutAudit, say};

const USAGE: &str = "usage: approval-bot --data-dir DIR [--port N] [--timeout-secs N] \
                     [--rules FILE] [--session ID]";

/// The command line.
#[derive(Debug)]
struct Args {
    data_dir: PathBuf,
    port: u16,
    timeout: Option<Duration>,
    rules: Option<PathBuf>,
    session: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> std::result::Result<Args, String> {
    let mut data_dir = None;
    let mut port = 0u16;
    let mut timeout = None;
    let mut rules = None;
    let mut session = "approval-bot".to_owned();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--port" => {
                let v = value()?;
                port = v.parse().map_err(|_| {
                    format!("--port {v:?} is not a port number (0 picks a free one)")
                })?;
            }
            "--timeout-secs" => {
                let v = value()?;
                let secs: u64 = v.parse().map_err(|_| {
                    format!("--timeout-secs {v:?} is not a whole number of seconds")
                })?;
                if secs == 0 {
                    return Err("--timeout-secs must be at least 1".into());
                }
                timeout = Some(Duration::from_secs(secs));
            }
            "--rules" => rules = Some(PathBuf::from(value()?)),
            "--session" => {
                session = value()?;
                if session.trim().is_empty() {
                    return Err("--session must not be empty".into());
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        data_dir: data_dir.ok_or("--data-dir is required")?,
        port,
        timeout,
        rules,
        session,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("approval-bot: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("approval-bot: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let started_ms = SystemClock.now_ms();
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        Error::Invalid(format!(
            "cannot create the data directory {}: {e}",
            args.data_dir.display()
        ))
    })?;
    let rules = load_rules(args.rules.as_deref())?;
    let store = open_session(&args.data_dir, &args.session).await?;

    let audit_path = args.data_dir.join("audit.jsonl");
    let jsonl = JsonlAudit::open(&audit_path).map_err(|e| {
        Error::Invalid(format!(
            "cannot open the audit log {}: {e}",
            audit_path.display()
        ))
    })?;
    let audit = Arc::new(StdoutAudit::new(jsonl));
    let mut durable = DurableGate::new(store)
        .with_audit(audit.clone())
        .with_sink(Arc::new(PendingPrinter));
    if let Some(t) = args.timeout {
        durable = durable.with_timeout(t);
    }
    let gate: DynApprovalGate = Arc::new(PolicyGate::new(rules, Arc::new(durable)));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| Error::Invalid(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Invalid(format!("cannot read the listening address: {e}")))?;
    let server = tokio::spawn(http::serve(listener, gate.clone()));
    say(format!("LISTENING http://{addr}"));
    tokio::spawn(terminal::read_commands(gate.clone()));

    for earlier in gate.pending().await? {
        say(format!(
            "PENDING {} {} (asked before this run; approve {0} | deny {0} <reason> | POST /decide/{0})",
            earlier.question.question_id,
            describe_question(&earlier.question),
        ));
    }

    for action in actions::ACTIONS {
        perform(&gate, audit.as_ref(), &args, action, started_ms).await?;
    }
    say("FINISHED all actions".to_owned());
    server.abort();
    Ok(())
}

/// Asks the gate about one action and acts on the answer.
async fn perform(
    gate: &DynApprovalGate,
    audit: &StdoutAudit,
    args: &Args,
    action: &Action,
    started_ms: i64,
) -> Result<()> {
    say(format!("ACTION {} {}", action.id, action.text));
    let request = ApprovalRequest {
        session_id: args.session.clone(),
        question: UserQuestion {
            question_id: action.id.to_owned(),
            tool_use_id: None,
            kind: QuestionKind::Permission {
                tool_name: action.tool.to_owned(),
                input: action.input(),
                description: Some(action.text.to_owned()),
            },
        },
        asked_at_ms: SystemClock.now_ms(),
    };
    let resolution = gate.request(request).await?;
    if resolution.by.who == "policy" {
        // The policy layer answers without the durable gate, so its
        // decisions are audited here.
        audit.policy_decision(&args.session, action, &resolution);
    }
    let by = &resolution.by.who;
    let earlier = if resolution.at_ms < started_ms {
        " (decided before this run)"
    } else {
        ""
    };
    match &resolution.decision {
        Decision::Allow { .. } => {
            say(format!("ALLOWED {} by {by}{earlier}", action.id));
            say(format!("DONE {} {}", action.id, action.text));
        }
        Decision::Deny { reason, .. } => {
            say(format!(
                "DENIED {} by {by}{earlier}: {}; skipped",
                action.id,
                if reason.trim().is_empty() {
                    "no reason given"
                } else {
                    reason
                }
            ));
        }
        Decision::Expired => {
            let within = args
                .timeout
                .map_or(String::new(), |t| format!(" within {} s", t.as_secs()));
            say(format!(
                "EXPIRED {}{earlier}: nobody answered{within}; skipped, and not counted as a human's answer",
                action.id
            ));
        }
        Decision::Cancelled { reason } => {
            say(format!(
                "CANCELLED {}: {}; skipped",
                action.id,
                reason.as_deref().unwrap_or("withdrawn")
            ));
        }
        other => {
            say(format!(
                "CANCELLED {}: unexpected answer {}; skipped",
                action.id,
                other.name()
            ));
        }
    }
    Ok(())
}

/// The bot's session in the SQLite file, created on first run.
async fn open_session(data_dir: &std::path::Path, session: &str) -> Result<DynSessionStore> {
    let directory = SqliteDirectory::open(data_dir.join("approvals.sqlite3")).await?;
    match directory.open(session).await {
        Ok(store) => Ok(store),
        Err(Error::NotFound { .. }) => {
            directory
                .create(SessionMeta::new(
                    session,
                    "approval-bot",
                    SystemClock.now_ms(),
                ))
                .await
        }
        Err(e) => Err(e),
    }
}

/// Rules from a JSON file (an array of [`PolicyRule`]), or the built-in ones.
fn load_rules(path: Option<&std::path::Path>) -> Result<Vec<PolicyRule>> {
    let Some(path) = path else {
        return Ok(actions::default_rules());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Invalid(format!(
            "cannot read the rules file {}: {e}",
            path.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "the rules file {} is not a JSON array of rules: {e}",
            path.display()
        ))
    })
}

/// `Bash {"command":"cargo test"}`, for a pending line.
fn describe_question(q: &UserQuestion) -> String {
    match &q.kind {
        QuestionKind::Permission {
            tool_name,
            input,
            description,
        } => match description {
            Some(d) => format!("{tool_name} {input} ({d})"),
            None => format!("{tool_name} {input}"),
        },
        other => other.name().to_owned(),
    }
}
