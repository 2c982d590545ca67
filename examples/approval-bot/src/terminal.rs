//! Decisions typed on the terminal: `approve <id>`, `deny <id> <reason>`,
//! `pending`, `help`.

use std::io::BufRead;

use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::protocol::DecidedBy;

use crate::decide::{Verdict, apply};
use crate::output::say;

const HELP: &str = "REPLY commands: approve <id> | deny <id> <reason> | pending | help";

/// Reads commands from stdin until it closes; HTTP keeps working after that.
///
/// Stdin is read on a plain thread, not a runtime blocking task: a runtime
/// shutting down waits for its blocking tasks, and a read on an idle
/// terminal never ends.
pub async fn read_commands(gate: DynApprovalGate) {
    let who = std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "operator".to_owned());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(16);
    let reader = std::thread::Builder::new()
        .name("approval-bot-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if tx.blocking_send(line).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = reader {
        say(format!(
            "REPLY cannot read the terminal ({e}); answer over HTTP"
        ));
        return;
    }
    while let Some(line) = rx.recv().await {
        match line {
            Ok(line) => handle(&gate, &who, &line).await,
            Err(e) => {
                say(format!(
                    "REPLY cannot read the terminal ({e}); answer over HTTP"
                ));
                return;
            }
        }
    }
}

async fn handle(gate: &DynApprovalGate, who: &str, line: &str) {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or("");
    let id = words.next();
    let rest: Vec<&str> = words.collect();
    let verdict = match (command, id) {
        ("approve" | "allow", Some(_)) if rest.is_empty() => Verdict::Allow,
        ("deny", Some(_)) => Verdict::Deny(rest.join(" ")),
        ("pending", None) => {
            match gate.pending().await {
                Ok(pending) if pending.is_empty() => say("REPLY nothing is pending".to_owned()),
                Ok(pending) => {
                    for p in pending {
                        say(format!(
                            "REPLY pending {} {}",
                            p.question.question_id,
                            crate::describe_question(&p.question)
                        ));
                    }
                }
                Err(e) => say(format!("REPLY cannot list pending requests: {e}")),
            }
            return;
        }
        ("", None) => return,
        _ => {
            say(HELP.to_owned());
            return;
        }
    };
    let Some(id) = id else { return };
    let by = DecidedBy {
        who: who.to_owned(),
        client: Some("terminal".to_owned()),
    };
    let reply = apply(gate, id, verdict, by).await;
    say(format!("REPLY {}", reply.describe(id)));
}
