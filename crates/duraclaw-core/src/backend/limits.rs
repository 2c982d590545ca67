//! Checks every backend applies before a step changes anything, so a step
//! that is refused leaves no trace.

use crate::protocol::{Gseq, MAX_EVENT_BYTES, Seq};
use crate::store::{AppendBatch, NewEvent, SessionMeta};
use crate::{Error, Result};

/// The largest seq or gseq a store accepts: 2^53 - 1, the largest integer a
/// JavaScript number (and so DO SQL) holds exactly.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// Refuses an event over the frame limit or with a gseq no backend can store.
pub fn check_event(event: &NewEvent) -> Result<()> {
    if event.json.len() > MAX_EVENT_BYTES {
        return Err(Error::TooLarge {
            what: "event",
            size: event.json.len(),
            limit: MAX_EVENT_BYTES,
        });
    }
    if let Some(gseq) = event.gseq {
        check_gseq(gseq)?;
    }
    Ok(())
}

/// Refuses a gseq above [`MAX_SEQ`].
pub fn check_gseq(gseq: Gseq) -> Result<()> {
    if gseq > MAX_SEQ {
        return Err(Error::Invalid(format!(
            "gseq {gseq} is above {MAX_SEQ}, the largest sequence number a store keeps exactly"
        )));
    }
    Ok(())
}

/// Checks every event of a batch, and that the log has room for all of them
/// after `last_seq`.
pub fn check_batch(batch: &AppendBatch, last_seq: Seq) -> Result<()> {
    for event in &batch.events {
        check_event(event)?;
    }
    check_room(last_seq, batch.events.len())
}

/// Refuses appending `count` events after `last_seq` if a seq would pass
/// [`MAX_SEQ`].
pub fn check_room(last_seq: Seq, count: usize) -> Result<()> {
    let count = u64::try_from(count).unwrap_or(u64::MAX);
    match last_seq.checked_add(count) {
        Some(end) if end <= MAX_SEQ => Ok(()),
        _ => Err(Error::Invalid(format!(
            "appending {count} events after seq {last_seq} would pass {MAX_SEQ}, the largest seq a store keeps"
        ))),
    }
}

/// Refuses metadata that would change a session's id or owner, or that
/// cannot be stored as JSON and read back (a cost that is not a number).
pub fn check_meta_update(stored: &SessionMeta, new: &SessionMeta) -> Result<()> {
    if new.session_id != stored.session_id {
        return Err(Error::Invalid(format!(
            "cannot change session id {:?} to {:?}",
            stored.session_id, new.session_id
        )));
    }
    if new.owner != stored.owner {
        return Err(Error::Invalid(format!(
            "cannot change the owner of session {:?} from {:?} to {:?}",
            stored.session_id, stored.owner, new.owner
        )));
    }
    check_meta(new)
}

/// Refuses metadata whose cost is not a finite number (JSON has no NaN).
pub fn check_meta(meta: &SessionMeta) -> Result<()> {
    if !meta.cost_usd.is_finite() {
        return Err(Error::Invalid(format!(
            "session {:?} has cost {} which is not a finite number",
            meta.session_id, meta.cost_usd
        )));
    }
    Ok(())
}
