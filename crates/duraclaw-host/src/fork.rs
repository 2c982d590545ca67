//! Forking a session, the same on both hosts: `POST
//! /api/sessions/{id}/fork` with `{"from_seq": N, "prompt": "…"}` starts a
//! new session carrying the parent's conversation up to and including the
//! exchange of its `user.message` at seq N, then `prompt`.
//!
//! 1. [`read_request`] checks the body.
//! 2. The host reads the parent's log, page by page, into a [`ForkScan`]
//!    until it is done; [`ForkScan::finish`] gives the executor session and
//!    the message to resume at, or the refusal.
//! 3. The host starts the fork like any session, in the parent's worktree,
//!    with [`StartPlan::with_fork`](crate::start::StartPlan::with_fork).

use duraclaw_core::protocol::{Event, ForkFrom};

use crate::http::HttpError;

/// A fork request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkRequest {
    /// The seq of the parent's `user.message` whose exchange is the last
    /// one the fork carries.
    pub from_seq: u64,
    /// The fork's first prompt.
    pub prompt: String,
}

/// Step 1: reads `{"from_seq": N, "prompt": "…"}`.
pub fn read_request(body: &serde_json::Value) -> Result<ForkRequest, HttpError> {
    const SHAPE: &str = r#"expected {"from_seq": <seq of a user.message>, "prompt": "…"}"#;
    let from_seq = body
        .get("from_seq")
        .and_then(serde_json::Value::as_u64)
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            HttpError::new(400, format!("`from_seq` is missing or not a seq: {SHAPE}"))
        })?;
    let prompt = match body.get("prompt") {
        Some(serde_json::Value::String(p)) => p.clone(),
        _ => return Err(HttpError::new(400, format!("`prompt` is missing: {SHAPE}"))),
    };
    if prompt.trim().is_empty() {
        return Err(HttpError::new(400, "a fork needs a first prompt"));
    }
    if prompt.len() > duraclaw_core::protocol::MAX_FRAME_BYTES / 2 {
        return Err(HttpError::new(413, "the prompt is too large"));
    }
    Ok(ForkRequest { from_seq, prompt })
}

/// Step 2: finds where a fork resumes, fed the parent's events in order.
#[derive(Debug, Clone)]
pub struct ForkScan {
    from_seq: u64,
    executor_session_id: Option<String>,
    seen_message: bool,
    /// Turns begun (one per user message, in order) and not yet ended.
    open: u64,
    /// After the message: the `result`s still to come before its own.
    before_own: u64,
    found: Option<Result<ForkFrom, HttpError>>,
}

impl ForkScan {
    /// A scan for a fork from the `user.message` at `from_seq`.
    pub fn new(from_seq: u64) -> Self {
        ForkScan {
            from_seq,
            executor_session_id: None,
            seen_message: false,
            open: 0,
            before_own: 0,
            found: None,
        }
    }

    /// Takes the event at `seq`; `true` once the scan needs no more.
    pub fn feed(&mut self, seq: u64, event: &Event) -> bool {
        if self.found.is_some() {
            return true;
        }
        if let Event::SessionInit(init) = event
            && init.executor_session_id.is_some()
        {
            self.executor_session_id
                .clone_from(&init.executor_session_id);
        }
        if seq < self.from_seq {
            // Each user message is a turn of its own, taken in order; a
            // `result` ends the oldest one open.
            match event {
                Event::UserMessage(_) => self.open += 1,
                Event::Result(_) => self.open = self.open.saturating_sub(1),
                _ => {}
            }
        } else if seq == self.from_seq {
            // A message queued behind running turns: theirs end first.
            self.before_own = self.open;
            if !matches!(event, Event::UserMessage(_)) {
                self.found = Some(Err(HttpError::new(
                    400,
                    format!("event {seq} is not a user message; fork from a user message"),
                )));
            }
            self.seen_message = true;
        } else if self.seen_message
            && let Event::Result(result) = event
        {
            if self.before_own > 0 {
                self.before_own -= 1;
                return false;
            }
            self.found = Some(
                match (&self.executor_session_id, &result.last_message_uuid) {
                    (Some(s), Some(u)) => Ok(ForkFrom {
                        executor_session_id: s.clone(),
                        at_message_uuid: u.clone(),
                    }),
                    _ => Err(HttpError::new(
                        409,
                        "the executor did not report where that turn ended, so it cannot be forked from",
                    )),
                },
            );
        }
        self.found.is_some()
    }

    /// Where the fork resumes, or why it cannot.
    pub fn finish(self) -> Result<ForkFrom, HttpError> {
        match self.found {
            Some(found) => found,
            None if self.seen_message => Err(HttpError::new(
                409,
                "that message's turn has not ended yet; fork from it once it has",
            )),
            None => Err(HttpError::new(
                400,
                format!("the session has no event {}", self.from_seq),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duraclaw_core::protocol::{SessionInit, TurnResult, UserMessage};
    use serde_json::json;

    fn user(text: &str) -> Event {
        Event::UserMessage(UserMessage {
            text: text.into(),
            by: None,
            queued: false,
        })
    }

    fn init(id: &str) -> Event {
        Event::SessionInit(SessionInit {
            executor_session_id: Some(id.into()),
            ..SessionInit::default()
        })
    }

    fn result(uuid: Option<&str>) -> Event {
        Event::Result(TurnResult {
            last_message_uuid: uuid.map(str::to_owned),
            ..TurnResult::default()
        })
    }

    fn scan(events: &[Event], from: u64) -> Result<ForkFrom, HttpError> {
        let mut s = ForkScan::new(from);
        for (i, e) in events.iter().enumerate() {
            if s.feed(i as u64 + 1, e) {
                break;
            }
        }
        s.finish()
    }

    #[test]
    fn a_fork_resumes_at_the_end_of_the_turn_of_its_message() {
        let log = [
            user("one"),
            init("S"),
            result(Some("u1")),
            user("two"),
            init("S"),
            result(Some("u2")),
            user("three"),
            init("S"),
        ];
        let at = scan(&log, 4).unwrap();
        assert_eq!(
            (at.executor_session_id.as_str(), at.at_message_uuid.as_str()),
            ("S", "u2")
        );
        assert_eq!(scan(&log, 1).unwrap().at_message_uuid, "u1");
        assert_eq!(scan(&log, 7).unwrap_err().status, 409);
        assert_eq!(scan(&log, 2).unwrap_err().status, 400);
        assert_eq!(scan(&log, 99).unwrap_err().status, 400);
        // A message queued while turn one ran: its own turn ends second.
        let queued = [
            user("one"),
            init("S"),
            user("two, queued"),
            result(Some("u1")),
            init("S"),
            result(Some("u2")),
        ];
        assert_eq!(scan(&queued, 3).unwrap().at_message_uuid, "u2");
        assert_eq!(scan(&queued, 1).unwrap().at_message_uuid, "u1");
        let old = [user("one"), init("S"), result(None)];
        assert_eq!(scan(&old, 1).unwrap_err().status, 409);
    }

    #[test]
    fn a_bad_request_is_refused() {
        assert_eq!(
            read_request(&json!({"prompt": "p"})).unwrap_err().status,
            400
        );
        assert_eq!(
            read_request(&json!({"from_seq": 0, "prompt": "p"}))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            read_request(&json!({"from_seq": 3, "prompt": " "}))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            read_request(&json!({"from_seq": 3, "prompt": "p"})).unwrap(),
            ForkRequest {
                from_seq: 3,
                prompt: "p".into()
            }
        );
    }
}
