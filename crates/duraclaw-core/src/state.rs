//! The session state machine: `initializing → active → paused → terminated`.
//!
//! [`transition`] is the one function that moves a session between states;
//! an input that does not apply is an [`Error::IllegalTransition`] value,
//! never a panic.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Why a session is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// A tool call waits for a human's approval.
    AwaitingApproval,
    /// The agent asked the user a question.
    AwaitingAnswer,
    /// The turn ended; the session waits for the next message.
    Idle,
    /// The orchestrator cannot reach the gateway; nothing is lost, it
    /// reconnects and catches up.
    GatewayUnreachable,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SessionState {
    /// Created; the executor is starting.
    Initializing,
    /// A turn is running.
    Active,
    /// Waiting, for the reason given.
    Paused {
        /// Why.
        reason: PauseReason,
    },
    /// Ended for good.
    Terminated,
}

impl SessionState {
    /// Shorthand for `Paused { reason }`.
    pub const fn paused(reason: PauseReason) -> Self {
        SessionState::Paused { reason }
    }

    /// Whether a human must act (approve or answer).
    pub fn needs_attention(&self) -> bool {
        matches!(
            self,
            SessionState::Paused {
                reason: PauseReason::AwaitingApproval | PauseReason::AwaitingAnswer
            }
        )
    }
}

/// What a session should go back to once its gateway is reachable again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resumption {
    /// A turn was running.
    Active,
    /// An approval is still pending.
    AwaitingApproval,
    /// A question is still pending.
    AwaitingAnswer,
    /// No turn was running.
    Idle,
}

/// Something that happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum SessionInput {
    /// The executor announced itself (`session.init`).
    Initialized,
    /// A user turn was sent.
    TurnStarted,
    /// A tool call needs approval.
    ApprovalRequested,
    /// The agent asked a question.
    QuestionAsked,
    /// A question was decided; `still_pending` says what is still open.
    QuestionResolved {
        /// The kind of question still open, if any.
        still_pending: Option<PauseReason>,
    },
    /// The turn ended (`result`, or an executor error).
    TurnEnded,
    /// The gateway link is down.
    GatewayLost,
    /// The gateway link is back.
    GatewayRestored {
        /// What to go back to.
        resume: Resumption,
    },
    /// The session is closed for good.
    Terminate,
}

/// Every input, for exhaustive tests and tooling.
pub const ALL_INPUTS: &[SessionInput] = &[
    SessionInput::Initialized,
    SessionInput::TurnStarted,
    SessionInput::ApprovalRequested,
    SessionInput::QuestionAsked,
    SessionInput::QuestionResolved {
        still_pending: None,
    },
    SessionInput::QuestionResolved {
        still_pending: Some(PauseReason::AwaitingApproval),
    },
    SessionInput::QuestionResolved {
        still_pending: Some(PauseReason::AwaitingAnswer),
    },
    SessionInput::TurnEnded,
    SessionInput::GatewayLost,
    SessionInput::GatewayRestored {
        resume: Resumption::Active,
    },
    SessionInput::GatewayRestored {
        resume: Resumption::AwaitingApproval,
    },
    SessionInput::GatewayRestored {
        resume: Resumption::AwaitingAnswer,
    },
    SessionInput::GatewayRestored {
        resume: Resumption::Idle,
    },
    SessionInput::Terminate,
];

/// Every state, for exhaustive tests and tooling.
pub const ALL_STATES: &[SessionState] = &[
    SessionState::Initializing,
    SessionState::Active,
    SessionState::paused(PauseReason::AwaitingApproval),
    SessionState::paused(PauseReason::AwaitingAnswer),
    SessionState::paused(PauseReason::Idle),
    SessionState::paused(PauseReason::GatewayUnreachable),
    SessionState::Terminated,
];

/// The transition table.
///
/// Notes on the less obvious rows:
/// - questions can arrive while another is pending (parallel tool calls), so
///   `ApprovalRequested` / `QuestionAsked` apply in either awaiting state;
/// - `TurnEnded` applies in the awaiting states too: an interrupt withdraws
///   pending questions and ends the turn;
/// - `GatewayLost` pauses any live state; events replayed by the gateway
///   after `GatewayRestored` re-derive the rest.
pub fn transition(from: SessionState, input: SessionInput) -> Result<SessionState> {
    use PauseReason::*;
    use SessionInput as I;
    use SessionState as S;
    let next = match (from, input) {
        (S::Terminated, _) => None,
        (_, I::Terminate) => Some(S::Terminated),

        (S::Initializing, I::Initialized) => Some(S::Active),
        (S::Initializing, I::TurnEnded) => Some(S::paused(Idle)),
        (S::Initializing, I::ApprovalRequested) => Some(S::paused(AwaitingApproval)),
        (S::Initializing, I::QuestionAsked) => Some(S::paused(AwaitingAnswer)),

        // session.init arrives at the start of every turn of some executors.
        (S::Active, I::Initialized) => Some(S::Active),
        (S::Active, I::TurnStarted) => Some(S::Active),
        (S::Active, I::ApprovalRequested) => Some(S::paused(AwaitingApproval)),
        (S::Active, I::QuestionAsked) => Some(S::paused(AwaitingAnswer)),
        (S::Active, I::TurnEnded) => Some(S::paused(Idle)),

        (S::Paused { reason: Idle }, I::TurnStarted | I::Initialized) => Some(S::Active),
        // An error and the turn's result both end the turn: still idle.
        (S::Paused { reason: Idle }, I::TurnEnded) => Some(S::paused(Idle)),

        (
            S::Paused {
                reason: AwaitingApproval | AwaitingAnswer,
            },
            I::ApprovalRequested,
        ) => Some(S::paused(AwaitingApproval)),
        (
            S::Paused {
                reason: AwaitingApproval | AwaitingAnswer,
            },
            I::QuestionAsked,
        ) => Some(S::paused(AwaitingAnswer)),
        (
            S::Paused {
                reason: AwaitingApproval | AwaitingAnswer,
            },
            I::QuestionResolved { still_pending },
        ) => Some(match still_pending {
            None => S::Active,
            Some(AwaitingAnswer) => S::paused(AwaitingAnswer),
            Some(_) => S::paused(AwaitingApproval),
        }),
        (
            S::Paused {
                reason: AwaitingApproval | AwaitingAnswer,
            },
            I::TurnEnded,
        ) => Some(S::paused(Idle)),

        (
            S::Paused {
                reason: GatewayUnreachable,
            },
            I::GatewayRestored { resume },
        ) => Some(match resume {
            Resumption::Active => S::Active,
            Resumption::AwaitingApproval => S::paused(AwaitingApproval),
            Resumption::AwaitingAnswer => S::paused(AwaitingAnswer),
            Resumption::Idle => S::paused(Idle),
        }),
        (
            S::Paused {
                reason: GatewayUnreachable,
            },
            I::GatewayLost,
        ) => Some(S::paused(GatewayUnreachable)),
        (S::Initializing | S::Active | S::Paused { .. }, I::GatewayLost) => {
            Some(S::paused(GatewayUnreachable))
        }

        _ => None,
    };
    next.ok_or(Error::IllegalTransition { from, input })
}

#[cfg(test)]
mod tests {
    use super::*;
    use PauseReason::*;
    use SessionInput as I;
    use SessionState as S;

    /// The whole table, written out: (from, input) → Some(to) or None.
    fn expected(from: S, input: I) -> Option<S> {
        let awaiting = |s: S| {
            matches!(
                s,
                S::Paused {
                    reason: AwaitingApproval | AwaitingAnswer
                }
            )
        };
        match input {
            _ if from == S::Terminated => None,
            I::Terminate => Some(S::Terminated),
            I::GatewayLost => Some(S::paused(GatewayUnreachable)),
            I::Initialized => match from {
                S::Initializing | S::Active | S::Paused { reason: Idle } => Some(S::Active),
                _ => None,
            },
            I::TurnStarted => match from {
                S::Active | S::Paused { reason: Idle } => Some(S::Active),
                _ => None,
            },
            I::ApprovalRequested => match from {
                S::Initializing | S::Active => Some(S::paused(AwaitingApproval)),
                s if awaiting(s) => Some(S::paused(AwaitingApproval)),
                _ => None,
            },
            I::QuestionAsked => match from {
                S::Initializing | S::Active => Some(S::paused(AwaitingAnswer)),
                s if awaiting(s) => Some(S::paused(AwaitingAnswer)),
                _ => None,
            },
            I::QuestionResolved { still_pending } if awaiting(from) => Some(match still_pending {
                None => S::Active,
                Some(AwaitingAnswer) => S::paused(AwaitingAnswer),
                Some(_) => S::paused(AwaitingApproval),
            }),
            I::QuestionResolved { .. } => None,
            I::TurnEnded => match from {
                S::Initializing | S::Active | S::Paused { reason: Idle } => Some(S::paused(Idle)),
                s if awaiting(s) => Some(S::paused(Idle)),
                _ => None,
            },
            I::GatewayRestored { resume } => match from {
                S::Paused {
                    reason: GatewayUnreachable,
                } => Some(match resume {
                    Resumption::Active => S::Active,
                    Resumption::AwaitingApproval => S::paused(AwaitingApproval),
                    Resumption::AwaitingAnswer => S::paused(AwaitingAnswer),
                    Resumption::Idle => S::paused(Idle),
                }),
                _ => None,
            },
        }
    }

    #[test]
    fn every_state_and_input_matches_the_table() {
        let mut legal = 0;
        let mut illegal = 0;
        for &from in ALL_STATES {
            for &input in ALL_INPUTS {
                match (transition(from, input), expected(from, input)) {
                    (Ok(to), Some(want)) => {
                        assert_eq!(to, want, "{from:?} + {input:?}");
                        legal += 1;
                    }
                    (Err(Error::IllegalTransition { from: f, input: i }), None) => {
                        assert_eq!((f, i), (from, input));
                        illegal += 1;
                    }
                    (got, want) => panic!("{from:?} + {input:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert_eq!(legal + illegal, ALL_STATES.len() * ALL_INPUTS.len());
        assert!(
            legal > 30 && illegal > 20,
            "legal {legal}, illegal {illegal}"
        );
    }

    #[test]
    fn terminated_is_final() {
        for &input in ALL_INPUTS {
            assert!(transition(S::Terminated, input).is_err());
        }
    }

    #[test]
    fn a_full_turn_with_an_approval() {
        let mut s = S::Initializing;
        for input in [
            I::Initialized,
            I::ApprovalRequested,
            I::QuestionResolved {
                still_pending: None,
            },
            I::TurnEnded,
            I::TurnStarted,
            I::GatewayLost,
            I::GatewayRestored {
                resume: Resumption::Active,
            },
            I::TurnEnded,
            I::Terminate,
        ] {
            s = transition(s, input).unwrap();
        }
        assert_eq!(s, S::Terminated);
    }

    #[test]
    fn state_json_is_flat() {
        let j = serde_json::to_string(&S::paused(AwaitingApproval)).unwrap();
        assert_eq!(j, r#"{"state":"paused","reason":"awaiting_approval"}"#);
        let j = serde_json::to_string(&S::Active).unwrap();
        assert_eq!(j, r#"{"state":"active"}"#);
    }
}
