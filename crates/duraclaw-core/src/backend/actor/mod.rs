//! The host-agnostic session actor: the logic the local orchestrator and the
//! Durable Object share, with no runtime of its own.
//!
//! - [`SessionLog`] appends through a
//!   [`SessionStore`](crate::store::SessionStore) and only then
//!   publishes to live subscribers (persist before forward), in seq order.
//! - [`Subscription`] gives exactly the events with seq > `after`, in order,
//!   then live ones, with no gap and no duplicate at the seam: it registers
//!   for live events and reads the fence (the highest published seq) in one
//!   step, replays from the store up to the fence, then drains its live
//!   queue skipping what it already gave. Its queue is bounded; a subscriber
//!   that falls behind is cut from the live stream and catches up by replay,
//!   so a slow reader never stalls the session. A gap in the live stream is
//!   filled from the store.
//! - [`SessionActor`] turns gateway events into log entries (idempotent by
//!   gseq, contiguous, acked with the highest persisted gseq), drives the
//!   state machine, records human decisions first-answer-wins, and applies
//!   each command id once, keeping what must reach the gateway in a durable
//!   outbox until the gateway confirms it.

mod input;
mod log;

pub use log::{
    DEFAULT_LIVE_QUEUE, DEFAULT_REPLAY_PAGE, PersistedHook, REPLAY_PAGE_GROWTH, SessionLog,
    Subscription,
};

use std::sync::Arc;

use futures::lock::Mutex as AsyncMutex;

use crate::clock::SharedClock;

use crate::approval::DecideOutcome;
use crate::error::{Error, Result};
use crate::protocol::{
    Command, CommandEnvelope, CommandResult, DecidedBy, Decision, Epoch, ErrorEvent, Event, Gseq,
    RawEvent, Snapshot, StateChange, ToGateway, UserMessage, WireError, encode_frame,
};
use crate::state::{PauseReason, SessionInput, SessionState, transition};
use crate::store::{
    AppendBatch, DynSessionStore, NewEvent, RecordedCommand, Resolution, ResolveOutcome,
    SessionMeta, StoredEvent,
};

use input::{
    Pending, after_the_end, inputs_for, last_logged_state, last_turn_open, pending_counts,
    starts_or_shows_work, turn_running,
};

/// What [`SessionActor::ingest`] did with a batch of gateway events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Events newly stored (state-change events included).
    pub stored: usize,
    /// Gateway events already stored before.
    pub duplicates: usize,
    /// The highest gseq persisted: send it to the gateway as the ack.
    pub ack: Gseq,
    /// The batch skipped a gseq: events from this one on were not stored;
    /// re-attach after `ack`.
    pub gap_at: Option<Gseq>,
}

/// What a browser command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// The reply for the browser.
    pub result: CommandResult,
    /// Frames to forward to the gateway now (also kept in the outbox).
    pub forward: Vec<ToGateway>,
    /// For an `answer`, what the decision did.
    pub decided: Option<DecideOutcome>,
}

/// A person acting through a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The user's name.
    pub user: String,
    /// The client, e.g. `browser 3f2a`.
    pub client: Option<String>,
}

impl Person {
    fn decided_by(&self) -> DecidedBy {
        DecidedBy {
            who: self.user.clone(),
            client: self.client.clone(),
        }
    }
}

/// How stale the stored activity time (`SessionMeta::updated_at_ms`) may
/// grow while events stream: an ingest that changes nothing else in the
/// metadata writes the events alone, and the metadata at most this often.
/// The actor's own copy ([`SessionActor::meta`]) is always exact; after a
/// crash the stored one is at most this much behind the log.
pub const ACTIVITY_WRITE_MS: i64 = 1000;

/// The session actor: one per session, in any host.
#[derive(Debug, Clone)]
pub struct SessionActor {
    log: SessionLog,
    clock: SharedClock,
    inner: Arc<AsyncMutex<ActorState>>,
}

#[derive(Debug)]
struct ActorState {
    meta: SessionMeta,
    /// `updated_at_ms` of the metadata last written to the store: an ingest
    /// that changes nothing but the activity time writes no metadata until
    /// [`ACTIVITY_WRITE_MS`] after it.
    stored_activity_ms: i64,
    highest_gseq: Gseq,
    pending: Pending,
    /// The state before the gateway was lost, to return to.
    before_loss: Option<SessionState>,
}

impl SessionActor {
    /// Wakes the actor of the session `store` holds; it stamps events and
    /// metadata with `clock`'s time.
    pub async fn open(store: DynSessionStore, clock: SharedClock) -> Result<Self> {
        let log = SessionLog::open(store).await?;
        Self::with_log(log, clock).await
    }

    /// Wakes the actor over an already opened log. The log is written
    /// before the metadata, so a host that died in between left metadata
    /// one state behind: the state the log last recorded wins.
    pub async fn with_log(log: SessionLog, clock: SharedClock) -> Result<Self> {
        let mut meta = log.store().meta().await?;
        if let Some(logged) = last_logged_state(log.store()).await?
            && logged != meta.state
        {
            tracing::info!(
                session = %meta.session_id,
                stored = ?meta.state,
                logged = ?logged,
                "the session's metadata lagged its log; taking the log's state"
            );
            meta.state = logged;
            log.store().put_meta(&meta).await?;
        }
        let head = log.store().head().await?;
        let pending = pending_counts(log.store()).await?;
        Ok(SessionActor {
            log,
            clock,
            inner: Arc::new(AsyncMutex::new(ActorState {
                stored_activity_ms: meta.updated_at_ms,
                meta,
                highest_gseq: head.highest_gseq,
                pending,
                before_loss: None,
            })),
        })
    }

    /// The log, to subscribe to.
    pub fn log(&self) -> &SessionLog {
        &self.log
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        self.log.store().session_id()
    }

    /// A copy of the session's metadata.
    pub async fn meta(&self) -> SessionMeta {
        self.inner.lock().await.meta.clone()
    }

    /// What a browser sees first: the state and pending questions.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let st = self.inner.lock().await;
        let pending = self.log.store().questions(true).await?;
        let head = self.log.store().head().await?;
        Ok(Snapshot {
            session_id: st.meta.session_id.clone(),
            state: st.meta.state,
            last_seq: head.last_seq,
            pending: pending.into_iter().map(|q| q.question).collect(),
            first_seq: None,
            turn_start: None,
            epoch: st.meta.epochs.last().map(|e| e.epoch),
        })
    }

    /// Starts a new epoch of the session's log at its current end (see
    /// [`LogEpoch`](crate::store::LogEpoch)) and keeps it in the metadata
    /// before anything else is logged. A host whose store a crash can take
    /// commits back from calls it each time it loads the session; the
    /// streams it serves then name `epoch`.
    pub async fn begin_epoch(&self, epoch: Epoch) -> Result<()> {
        let mut st = self.inner.lock().await;
        let head = self.log.store().head().await?.last_seq;
        let mut meta = st.meta.clone();
        meta.epochs.push(crate::store::LogEpoch { epoch, head });
        let over = meta.epochs.len().saturating_sub(crate::store::MAX_EPOCHS);
        meta.epochs.drain(..over);
        self.log.store().put_meta(&meta).await?;
        st.meta = meta;
        Ok(())
    }

    /// The epochs of the session's log, oldest first (empty on a host that
    /// does not start them).
    pub async fn epochs(&self) -> Vec<crate::store::LogEpoch> {
        self.inner.lock().await.meta.epochs.clone()
    }

    /// Stores a batch of gateway events in gseq order, idempotently.
    ///
    /// Events at or below the highest stored gseq are duplicates and skipped;
    /// the batch must otherwise continue at highest + 1 (the gateway numbers
    /// densely), and a skipped number stops the batch there so nothing is
    /// acked past a hole.
    pub async fn ingest(&self, batch: Vec<(Gseq, Event)>) -> Result<IngestOutcome> {
        let batch = batch
            .iter()
            .map(|(gseq, event)| Ok((*gseq, RawEvent::from_event(event)?)))
            .collect::<Result<Vec<_>>>()?;
        self.ingest_raw(batch).await
    }

    /// [`SessionActor::ingest`] for events in text form, as the gateway
    /// link carries them ([`decode_gateway_frame`](crate::protocol::decode_gateway_frame)):
    /// each event's text is stored as it came, only the bodies the state
    /// depends on were decoded.
    pub async fn ingest_raw(&self, batch: Vec<(Gseq, RawEvent)>) -> Result<IngestOutcome> {
        let now_ms = self.clock.now_ms();
        let mut st = self.inner.lock().await;
        let mut out = IngestOutcome::default();
        let mut next = st.highest_gseq + 1;
        let mut new_events = Vec::with_capacity(batch.len());
        let mut state = st.meta.state;
        let mut meta = st.meta.clone();
        let mut pending = st.pending.clone();
        // The highest gseq taken, stored or not.
        let mut consumed = st.highest_gseq;
        for (gseq, event) in batch {
            if gseq < next {
                out.duplicates += 1;
                continue;
            }
            if gseq > next {
                out.gap_at = Some(next);
                break;
            }
            next += 1;
            consumed = gseq;
            // A turn's start (`session.init`) or work logged while the
            // session reads idle: a turn began that no `user.message`
            // announced (a message the executor queued behind the last
            // turn, or one taken while the gateway was away). The state
            // says so before the event.
            if state == SessionState::paused(PauseReason::Idle)
                && starts_or_shows_work(event.type_name())
            {
                state = self.step(state, SessionInput::TurnStarted, now_ms, &mut new_events)?;
            }
            let inputs = match event.event() {
                Some(typed) => inputs_for(typed, &mut pending, &mut meta),
                None => Vec::new(),
            };
            // The session ended: what the executor still reports of its
            // work (an aborted turn's end, its result) came after the end
            // and is not logged as if it were part of the session. What
            // closes a question, an error and a notice are still logged;
            // the metadata (cost) is kept either way.
            if state == SessionState::Terminated && !after_the_end(event.type_name()) {
                tracing::debug!(
                    session = %meta.session_id,
                    gseq,
                    kind = event.type_name(),
                    "not logged: the session has ended"
                );
                continue;
            }
            new_events.push(NewEvent::from_raw(&event, Some(gseq), now_ms)?);
            for input in inputs {
                state = self.step(state, input, now_ms, &mut new_events)?;
            }
        }
        if new_events.is_empty() {
            st.highest_gseq = consumed;
            out.ack = consumed;
            // A result not logged (it came after the end) still counts.
            if meta.cost_usd != st.meta.cost_usd {
                st.meta.cost_usd = meta.cost_usd;
                self.log.store().put_meta(&st.meta).await?;
            }
            return Ok(out);
        }
        meta.state = state;
        meta.pending_questions = pending.total();
        // The events and the state they imply commit together: one
        // transaction per ingest, however small the batch. An ingest that
        // changes nothing but the activity time (a stream of token deltas)
        // writes the events alone, and the activity time once a second.
        let activity_only = meta == st.meta;
        meta.updated_at_ms = now_ms;
        let batch = AppendBatch::events(new_events);
        let outcome = if activity_only && now_ms - st.stored_activity_ms < ACTIVITY_WRITE_MS {
            self.log.append(batch).await?
        } else {
            let outcome = self.log.append_with_meta(batch, &meta).await?;
            st.stored_activity_ms = now_ms;
            outcome
        };
        out.stored = outcome.stored.len();
        out.duplicates += outcome.duplicates;
        out.ack = outcome.highest_gseq.max(consumed);
        st.highest_gseq = out.ack;
        st.meta = meta;
        st.pending = pending;
        Ok(out)
    }

    /// Applies one state input, logging a `session.state` event when the
    /// state changes. An input the state machine refuses is logged and
    /// ignored: events are never dropped over a state disagreement.
    fn step(
        &self,
        state: SessionState,
        input: SessionInput,
        now_ms: i64,
        out: &mut Vec<NewEvent>,
    ) -> Result<SessionState> {
        match transition(state, input) {
            Ok(next) if next != state => {
                out.push(NewEvent::new(
                    &Event::SessionState(StateChange { state: next }),
                    None,
                    now_ms,
                )?);
                Ok(next)
            }
            Ok(same) => Ok(same),
            Err(err) => {
                tracing::warn!(session = self.session_id(), error = %err, "state input ignored");
                Ok(state)
            }
        }
    }

    /// Moves the session to `input`'s next state (gateway lost or restored,
    /// terminate), logging the change.
    pub async fn apply_input(&self, input: SessionInput) -> Result<SessionState> {
        let now_ms = self.clock.now_ms();
        let mut st = self.inner.lock().await;
        let from = st.meta.state;
        let next = transition(from, input)?;
        if matches!(input, SessionInput::GatewayLost)
            && from != SessionState::paused(PauseReason::GatewayUnreachable)
        {
            st.before_loss = Some(from);
        }
        if next != from {
            let event = NewEvent::new(
                &Event::SessionState(StateChange { state: next }),
                None,
                now_ms,
            )?;
            let mut meta = st.meta.clone();
            meta.state = next;
            meta.updated_at_ms = now_ms;
            self.log
                .append_with_meta(AppendBatch::events(vec![event]), &meta)
                .await?;
            st.meta = meta;
            st.stored_activity_ms = now_ms;
        }
        Ok(next)
    }

    /// Logs an event the host itself observed (e.g. the gateway refused to
    /// start the session), then publishes it.
    pub async fn record(&self, event: &Event) -> Result<StoredEvent> {
        let now_ms = self.clock.now_ms();
        let _st = self.inner.lock().await;
        let outcome = self
            .log
            .append(AppendBatch::events(vec![NewEvent::new(
                event, None, now_ms,
            )?]))
            .await?;
        outcome
            .stored
            .into_iter()
            .next()
            .ok_or_else(|| Error::storage("log", "an append stored nothing"))
    }

    /// What the session should return to once its gateway is back: a
    /// pending question first; else whether the log's last turn is open (a
    /// `user.message` or the agent's work after the last `result`/`error`),
    /// which holds for a message taken while the gateway was away and
    /// across an orchestrator restart; else the state before the loss.
    pub async fn resumption(&self) -> Result<crate::state::Resumption> {
        use crate::state::Resumption;
        let st = self.inner.lock().await;
        let pending = &st.pending;
        if pending.approvals() > 0 {
            return Ok(Resumption::AwaitingApproval);
        }
        if pending.answers() > 0 {
            return Ok(Resumption::AwaitingAnswer);
        }
        if let Some(open) = last_turn_open(self.log.store()).await? {
            return Ok(if open {
                Resumption::Active
            } else {
                Resumption::Idle
            });
        }
        let was = st.before_loss.unwrap_or(st.meta.state);
        Ok(
            if matches!(was, SessionState::Active | SessionState::Initializing) {
                Resumption::Active
            } else {
                Resumption::Idle
            },
        )
    }

    /// The frames to send when the gateway link (re)opens: every command
    /// not yet confirmed, then attach after the highest persisted gseq. The
    /// attach comes last because the gateway refuses to attach a session it
    /// does not have yet: when the `execute` that creates it there is among
    /// the commands resent (the link broke while it was in flight), an
    /// attach sent first was refused, and the session's events never came.
    pub async fn on_gateway_connected(&self) -> Result<Vec<ToGateway>> {
        let st = self.inner.lock().await;
        let attach = ToGateway::Attach {
            session_id: st.meta.session_id.clone(),
            after_gseq: st.highest_gseq,
        };
        let mut frames = Vec::new();
        for cmd in self.log.store().unforwarded().await? {
            if let Some(json) = cmd.forward {
                match crate::protocol::decode_frame::<ToGateway>(&json, "outbox frame") {
                    Ok(frame) => frames.push(frame),
                    Err(err) => {
                        tracing::error!(command = %cmd.id, error = %err, "outbox frame unreadable")
                    }
                }
            }
        }
        frames.push(attach);
        Ok(frames)
    }

    /// The gateway confirmed (or refused) a command: it leaves the outbox.
    pub async fn on_command_result(&self, result: &CommandResult) -> Result<()> {
        self.log.store().mark_forwarded(&result.id).await
    }

    /// The gateway refused a command that started a turn: the user's turn
    /// is in the log, and its end is this refusal. Logs an `error` event
    /// with the refusal's code and reason, then ends the turn.
    pub async fn end_refused_turn(&self, result: &CommandResult) -> Result<()> {
        let (code, why) = result
            .error
            .as_ref()
            .map(|e| (e.code.clone(), e.message.clone()))
            .unwrap_or_else(|| ("refused".into(), "no reason given".into()));
        let event = Event::Error(ErrorEvent {
            message: format!("the gateway refused this turn: {why}"),
            code: Some(code),
            ..ErrorEvent::default()
        });
        self.record(&event).await?;
        self.apply_input(SessionInput::TurnEnded).await?;
        Ok(())
    }

    /// Applies a browser command once per id. `message` logs the user turn,
    /// `answer` records the decision first-answer-wins, `abort` interrupts,
    /// `close` ends the session; each is queued for the gateway in the same
    /// step.
    pub async fn command(
        &self,
        id: &str,
        command: Command,
        person: &Person,
    ) -> Result<CommandOutcome> {
        let now_ms = self.clock.now_ms();
        if matches!(
            command,
            Command::Message(_) | Command::Abort(_) | Command::SetMode(_) | Command::SetModel(_)
        ) && self.inner.lock().await.meta.state == SessionState::Terminated
        {
            return Err(Error::Invalid(
                "this session has ended; start a new one".into(),
            ));
        }
        match command {
            Command::Message(turn) => {
                if turn.text.trim().is_empty() {
                    return Err(Error::Invalid("a message needs some text".into()));
                }
                // Sent while a turn runs, it waits for that turn's end: the
                // log says so rather than putting it inside the turn.
                let queued = turn_running(self.inner.lock().await.meta.state);
                let event = NewEvent::new(
                    &Event::UserMessage(UserMessage {
                        text: turn.text.clone(),
                        by: Some(person.user.clone()),
                        queued,
                    }),
                    None,
                    now_ms,
                )?;
                self.record_command(
                    id,
                    Command::Message(turn),
                    vec![event],
                    Some(SessionInput::TurnStarted),
                    now_ms,
                )
                .await
            }
            Command::Abort(abort) => {
                self.record_command(id, Command::Abort(abort), vec![], None, now_ms)
                    .await
            }
            Command::Close(close) => {
                self.record_command(
                    id,
                    Command::Close(close),
                    vec![],
                    Some(SessionInput::Terminate),
                    now_ms,
                )
                .await
            }
            // Checked here so a refused mode never reaches the gateway (which
            // checks again); the executor's answer is logged as a notice.
            Command::SetMode(set) => {
                crate::protocol::check_permission_mode(&set.mode).map_err(Error::Invalid)?;
                self.record_command(id, Command::SetMode(set), vec![], None, now_ms)
                    .await
            }
            Command::SetModel(set) => {
                crate::protocol::check_model(&set.model).map_err(Error::Invalid)?;
                self.record_command(id, Command::SetModel(set), vec![], None, now_ms)
                    .await
            }
            Command::Answer(answer) => {
                self.decide(
                    id,
                    &answer.question_id,
                    answer.decision,
                    person.decided_by(),
                )
                .await
            }
            other => Err(Error::Invalid(format!(
                "`{}` is not a browser command; use the session API",
                other.name()
            ))),
        }
    }

    /// Starts the session: logs the first prompt as `user.message` and
    /// queues `execute` for the gateway, in one step, once per command id.
    pub async fn execute(
        &self,
        id: &str,
        execute: crate::protocol::Execute,
        person: &Person,
    ) -> Result<CommandOutcome> {
        let now_ms = self.clock.now_ms();
        if execute.prompt.trim().is_empty() {
            return Err(Error::Invalid("a session needs a first prompt".into()));
        }
        let event = NewEvent::new(
            &Event::UserMessage(UserMessage {
                text: execute.prompt.clone(),
                by: Some(person.user.clone()),
                queued: false,
            }),
            None,
            now_ms,
        )?;
        self.record_command(id, Command::Execute(execute), vec![event], None, now_ms)
            .await
    }

    /// Logs `events` (and the state change `input` brings) together with
    /// the command `id` and the frame that carries it to the gateway, in one
    /// step, once per id; a repeated id changes nothing and forwards nothing.
    async fn record_command(
        &self,
        id: &str,
        command: Command,
        mut events: Vec<NewEvent>,
        input: Option<SessionInput>,
        now_ms: i64,
    ) -> Result<CommandOutcome> {
        let mut st = self.inner.lock().await;
        let frame = ToGateway::Command(CommandEnvelope {
            id: id.to_owned(),
            session_id: st.meta.session_id.clone(),
            command,
        });
        let json: Arc<str> = encode_frame(&frame)?.into();
        let state = match input {
            // A message taken while the gateway is away starts its turn
            // once it is back: that is what the session resumes to.
            Some(SessionInput::TurnStarted)
                if st.meta.state == SessionState::paused(PauseReason::GatewayUnreachable) =>
            {
                st.meta.state
            }
            Some(input) => self.step(st.meta.state, input, now_ms, &mut events)?,
            None => st.meta.state,
        };
        let outcome = self
            .log
            .append(AppendBatch {
                events,
                command: Some(RecordedCommand {
                    id: id.to_owned(),
                    forward: Some(json),
                    at_ms: now_ms,
                }),
            })
            .await?;
        let result = CommandResult {
            id: id.to_owned(),
            ok: true,
            error: None,
        };
        if outcome.duplicate_command {
            return Ok(CommandOutcome {
                result,
                forward: vec![],
                decided: None,
            });
        }
        if input == Some(SessionInput::TurnStarted)
            && st.meta.state == SessionState::paused(PauseReason::GatewayUnreachable)
        {
            st.before_loss = Some(SessionState::Active);
        }
        if input.is_some() {
            st.meta.state = state;
            st.meta.updated_at_ms = now_ms;
            self.log.store().put_meta(&st.meta).await?;
            st.stored_activity_ms = now_ms;
        }
        Ok(CommandOutcome {
            result,
            forward: vec![frame],
            decided: None,
        })
    }

    /// Records a decision on a question, first answer wins, and queues the
    /// `answer` for the gateway. A later decision is told who decided first;
    /// a retry of `command_id` (applied before) gets the same `ok` the first
    /// try got and changes and forwards nothing.
    pub async fn decide(
        &self,
        command_id: &str,
        question_id: &str,
        decision: Decision,
        by: DecidedBy,
    ) -> Result<CommandOutcome> {
        let now_ms = self.clock.now_ms();
        let mut st = self.inner.lock().await;
        let frame = ToGateway::Command(CommandEnvelope {
            id: command_id.to_owned(),
            session_id: st.meta.session_id.clone(),
            command: Command::Answer(crate::protocol::Answer {
                question_id: question_id.to_owned(),
                decision: decision.clone(),
                by: Some(by.clone()),
                allow_worktree_rule: None,
            }),
        });
        let json: Arc<str> = encode_frame(&frame)?.into();
        let resolution = Resolution {
            decision,
            by,
            at_ms: now_ms,
        };
        let outcome = match self
            .log
            .resolve(
                question_id,
                resolution,
                Some(RecordedCommand {
                    id: command_id.to_owned(),
                    forward: Some(json),
                    at_ms: now_ms,
                }),
            )
            .await
        {
            Err(Error::AlreadyExists {
                what: "command", ..
            }) => {
                // Only a decision that won records its command id.
                return Ok(CommandOutcome {
                    result: CommandResult {
                        id: command_id.to_owned(),
                        ok: true,
                        error: None,
                    },
                    forward: vec![],
                    decided: None,
                });
            }
            other => other?,
        };
        match outcome {
            ResolveOutcome::AlreadyDecided(first) => {
                let decided = DecideOutcome::AlreadyDecided { first };
                Ok(CommandOutcome {
                    result: CommandResult {
                        id: command_id.to_owned(),
                        ok: false,
                        error: Some(WireError::new("already_decided", decided.describe())),
                    },
                    forward: vec![],
                    decided: Some(decided),
                })
            }
            ResolveOutcome::Decided(_) => {
                let pending = pending_counts(self.log.store()).await?;
                let mut events = Vec::new();
                let state = self.step(
                    st.meta.state,
                    SessionInput::QuestionResolved {
                        still_pending: pending.still_pending(),
                    },
                    now_ms,
                    &mut events,
                )?;
                if !events.is_empty() {
                    self.log.append(AppendBatch::events(events)).await?;
                }
                st.meta.state = state;
                st.meta.updated_at_ms = now_ms;
                st.meta.pending_questions = pending.total();
                st.pending = pending;
                self.log.store().put_meta(&st.meta).await?;
                st.stored_activity_ms = now_ms;
                Ok(CommandOutcome {
                    result: CommandResult {
                        id: command_id.to_owned(),
                        ok: true,
                        error: None,
                    },
                    forward: vec![frame],
                    decided: Some(DecideOutcome::Decided),
                })
            }
        }
    }
}
