//! The append and resolve steps, written once over [`LogStep`], the few
//! primitive reads and writes a backend provides, so that every backend
//! assigns seqs, drops duplicate gseqs, records questions and applies
//! command ids the same way.
//!
//! A backend runs a step inside its own atomic scope (a lock, a savepoint, a
//! Durable Object `transactionSync`).
//! Everything that can refuse a step is checked before the first write.

use crate::backend::limits;
use crate::protocol::{Gseq, Seq, UserQuestion};
use crate::store::{
    AppendBatch, AppendOutcome, LogHead, RecordedCommand, Resolution, ResolveOutcome, StoredEvent,
    resolution_event,
};
use crate::{Error, Result};

/// Where a question stands.
#[derive(Debug, Clone, PartialEq)]
pub enum QuestionStatus {
    /// Never asked in this session.
    Unknown,
    /// Asked, not decided.
    Pending,
    /// Decided, with the first decision.
    Decided(Resolution),
}

/// The primitive operations on one session's log a step is built from.
pub trait LogStep {
    /// The highest seq and gseq: the last event's seq and the highest gseq
    /// stored with it ([`LogStep::insert_event`]); `(0, 0)` for an empty log.
    fn head(&mut self) -> Result<LogHead>;
    /// Whether a command id was recorded before.
    fn command_seen(&mut self, command_id: &str) -> Result<bool>;
    /// Stores one event (its seq is the next one) with `highest_gseq`, the
    /// highest gseq of the log once it holds the event: the log's head is
    /// its last event, so that appending one event writes one row.
    fn insert_event(&mut self, event: &StoredEvent, highest_gseq: Gseq) -> Result<()>;
    /// Records a question as pending, unless its id was recorded before.
    fn ask(&mut self, question: &UserQuestion, asked_seq: Seq) -> Result<()>;
    /// Where a question stands.
    fn question_status(&mut self, question_id: &str) -> Result<QuestionStatus>;
    /// Records a decision on a question if it is still pending.
    fn resolve_pending(&mut self, question_id: &str, resolution: &Resolution) -> Result<()>;
    /// Records a command id (and its frame to forward).
    fn record_command(&mut self, command: &RecordedCommand) -> Result<()>;
}

/// [`SessionStore::append`](crate::store::SessionStore::append) as one step.
pub fn append(log: &mut dyn LogStep, batch: AppendBatch) -> Result<AppendOutcome> {
    let head = log.head()?;
    limits::check_batch(&batch, head.last_seq)?;
    if let Some(command) = &batch.command
        && log.command_seen(&command.id)?
    {
        return Ok(AppendOutcome {
            stored: Vec::new(),
            duplicates: 0,
            highest_gseq: head.highest_gseq,
            duplicate_command: true,
        });
    }
    let mut last_seq = head.last_seq;
    let mut highest_gseq = head.highest_gseq;
    let mut stored = Vec::with_capacity(batch.events.len());
    let mut duplicates = 0;
    for event in batch.events {
        if let Some(gseq) = event.gseq {
            if gseq <= highest_gseq {
                duplicates += 1;
                continue;
            }
            highest_gseq = gseq;
        }
        last_seq += 1;
        let e = StoredEvent {
            seq: last_seq,
            gseq: event.gseq,
            at_ms: event.at_ms,
            json: event.json,
        };
        log.insert_event(&e, highest_gseq)?;
        if let Some(question) = &event.asks {
            log.ask(question, last_seq)?;
        }
        if let Some((question_id, resolution)) = &event.resolves {
            log.resolve_pending(question_id, resolution)?;
        }
        stored.push(e);
    }
    if let Some(command) = &batch.command {
        log.record_command(command)?;
    }
    Ok(AppendOutcome {
        stored,
        duplicates,
        highest_gseq,
        duplicate_command: false,
    })
}

/// [`SessionStore::resolve`](crate::store::SessionStore::resolve) as one step.
///
/// A command id recorded before is refused with [`Error::AlreadyExists`]
/// (`what: "command"`) whatever the question's state, and the step records
/// nothing: the command was applied once already (a retry of a decision
/// that won is not told it lost to itself).
pub fn resolve(
    log: &mut dyn LogStep,
    question_id: &str,
    resolution: Resolution,
    command: Option<RecordedCommand>,
) -> Result<ResolveOutcome> {
    let status = log.question_status(question_id)?;
    if status == QuestionStatus::Unknown {
        return Err(Error::NotFound {
            what: "question",
            id: question_id.to_owned(),
        });
    }
    if let Some(command) = &command
        && log.command_seen(&command.id)?
    {
        return Err(Error::AlreadyExists {
            what: "command",
            id: command.id.clone(),
        });
    }
    if let QuestionStatus::Decided(first) = status {
        return Ok(ResolveOutcome::AlreadyDecided(first));
    }
    let event = resolution_event(question_id, &resolution)?;
    limits::check_event(&event)?;
    let head = log.head()?;
    limits::check_room(head.last_seq, 1)?;
    let e = StoredEvent {
        seq: head.last_seq + 1,
        gseq: None,
        at_ms: event.at_ms,
        json: event.json,
    };
    log.insert_event(&e, head.highest_gseq)?;
    log.resolve_pending(question_id, &resolution)?;
    if let Some(command) = &command {
        log.record_command(command)?;
    }
    Ok(ResolveOutcome::Decided(e))
}
