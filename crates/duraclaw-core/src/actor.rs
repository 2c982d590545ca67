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

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::channel::mpsc;
use futures::lock::Mutex as AsyncMutex;

use crate::approval::DecideOutcome;
use crate::error::{Error, Result};
use crate::protocol::{
    Command, CommandEnvelope, CommandResult, DecidedBy, Decision, ERROR_UNAPPROVED_TOOL,
    ErrorEvent, Event, Gseq, QuestionKind, RawEvent, Seq, Snapshot, StateChange, ToGateway,
    UserMessage, WireError, encode_frame,
};
use crate::state::{PauseReason, SessionInput, SessionState, transition};
use crate::store::{
    AppendBatch, AppendOutcome, DynSessionStore, NewEvent, RecordedCommand, Resolution,
    ResolveOutcome, SessionMeta, StoredEvent,
};

/// How many events a live subscriber may have queued before it is cut from
/// the live stream and made to catch up by replay.
pub const DEFAULT_LIVE_QUEUE: usize = 1024;
/// Events read from the store per replay page, for the first page; a
/// reader far behind gets pages that double up to
/// [`REPLAY_PAGE_GROWTH`] times this (fewer round trips to the store).
pub const DEFAULT_REPLAY_PAGE: usize = 512;
/// How many times the first replay page a long replay's pages grow to.
pub const REPLAY_PAGE_GROWTH: usize = 4;

struct Slot {
    tx: mpsc::Sender<StoredEvent>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Hub {
    published: Seq,
    slots: Vec<Slot>,
    closed: bool,
}

struct Shared {
    store: DynSessionStore,
    hub: Mutex<Hub>,
    live_queue: usize,
    replay_page: usize,
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A poisoned hub only means a publisher panicked mid-push; the data
        // (a seq and a list of senders) is still consistent.
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes stored events, in seq order, to every live subscriber.
    fn publish(&self, events: &[StoredEvent]) {
        if events.is_empty() {
            return;
        }
        let mut hub = self.hub();
        for e in events {
            hub.slots
                .retain_mut(|slot| match slot.tx.try_send(e.clone()) {
                    Ok(()) => true,
                    Err(err) => {
                        if err.is_full() {
                            slot.lagged.store(true, Ordering::Release);
                        }
                        false
                    }
                });
            hub.published = hub.published.max(e.seq);
        }
    }

    /// Registers a live queue and returns it with the fence.
    fn register(&self) -> (mpsc::Receiver<StoredEvent>, Arc<AtomicBool>, Seq, bool) {
        let mut hub = self.hub();
        let (tx, rx) = mpsc::channel(self.live_queue);
        let lagged = Arc::new(AtomicBool::new(false));
        if !hub.closed {
            hub.slots.push(Slot {
                tx,
                lagged: lagged.clone(),
            });
        }
        (rx, lagged, hub.published, hub.closed)
    }
}

/// A session's event log with live fan-out. Cheap to clone.
#[derive(Clone)]
pub struct SessionLog {
    shared: Arc<Shared>,
    append_lock: Arc<AsyncMutex<()>>,
}

impl std::fmt::Debug for SessionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLog")
            .field("session_id", &self.shared.store.session_id())
            .finish_non_exhaustive()
    }
}

impl SessionLog {
    /// A log over `store`, with default queue and page sizes.
    pub async fn open(store: DynSessionStore) -> Result<Self> {
        Self::open_with(store, DEFAULT_LIVE_QUEUE, DEFAULT_REPLAY_PAGE).await
    }

    /// A log over `store` with a live queue bound and a replay page size.
    pub async fn open_with(
        store: DynSessionStore,
        live_queue: usize,
        replay_page: usize,
    ) -> Result<Self> {
        let head = store.head().await?;
        let hub = Hub {
            published: head.last_seq,
            ..Hub::default()
        };
        // A Durable Object is single-threaded: the hub need not be Send there.
        #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
        let shared = Arc::new(Shared {
            store,
            hub: Mutex::new(hub),
            live_queue: live_queue.max(1),
            replay_page: replay_page.max(1),
        });
        Ok(SessionLog {
            shared,
            append_lock: Arc::new(AsyncMutex::new(())),
        })
    }

    /// The store underneath.
    pub fn store(&self) -> &DynSessionStore {
        &self.shared.store
    }

    /// Appends, then publishes what was stored: persist before forward.
    pub async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome> {
        let _order = self.append_lock.lock().await;
        let outcome = self.shared.store.append(batch).await?;
        self.shared.publish(&outcome.stored);
        Ok(outcome)
    }

    /// Appends and replaces the session's metadata in one step
    /// ([`SessionStore::append_with_meta`](crate::store::SessionStore::append_with_meta)),
    /// then publishes what was stored.
    pub async fn append_with_meta(
        &self,
        batch: AppendBatch,
        meta: &SessionMeta,
    ) -> Result<AppendOutcome> {
        let _order = self.append_lock.lock().await;
        let outcome = self.shared.store.append_with_meta(batch, meta).await?;
        self.shared.publish(&outcome.stored);
        Ok(outcome)
    }

    /// Records a decision first-answer-wins and publishes its event.
    pub async fn resolve(
        &self,
        question_id: &str,
        resolution: Resolution,
        command: Option<RecordedCommand>,
    ) -> Result<ResolveOutcome> {
        let _order = self.append_lock.lock().await;
        let outcome = self
            .shared
            .store
            .resolve(question_id, resolution, command)
            .await?;
        if let ResolveOutcome::Decided(e) = &outcome {
            self.shared.publish(std::slice::from_ref(e));
        }
        Ok(outcome)
    }

    /// Every event with seq > `after`, then live events.
    pub fn subscribe(&self, after: Seq) -> Subscription {
        let (live, lagged, fence, closed) = self.shared.register();
        Subscription {
            shared: self.shared.clone(),
            delivered: after,
            fence,
            page: VecDeque::new(),
            held: None,
            live,
            lagged,
            closed,
            catch_ups: 0,
            page_size: self.shared.replay_page,
        }
    }

    /// Ends every subscription once it has delivered what it holds (the
    /// actor is being evicted); new subscriptions get the replay only.
    pub fn close(&self) {
        let mut hub = self.shared.hub();
        hub.closed = true;
        hub.slots.clear();
    }

    /// Live subscribers right now (ones that went away are forgotten).
    pub fn subscriber_count(&self) -> usize {
        let mut hub = self.shared.hub();
        hub.slots.retain(|s| !s.tx.is_closed());
        hub.slots.len()
    }
}

/// A reader of a session's log: replay after a seq, then live events.
pub struct Subscription {
    shared: Arc<Shared>,
    delivered: Seq,
    fence: Seq,
    page: VecDeque<StoredEvent>,
    held: Option<StoredEvent>,
    live: mpsc::Receiver<StoredEvent>,
    lagged: Arc<AtomicBool>,
    closed: bool,
    catch_ups: u64,
    /// The next replay page's size: the first is small (the first events
    /// reach the client soon), the next ones double.
    page_size: usize,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("delivered", &self.delivered)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The highest seq handed out so far (or the `after` it started from).
    pub fn delivered(&self) -> Seq {
        self.delivered
    }

    /// How many times this subscriber fell behind and caught up by replay.
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups
    }

    /// The next event in seq order; `None` once the log is closed and
    /// everything before the close was delivered.
    pub async fn next(&mut self) -> Option<Result<StoredEvent>> {
        loop {
            if let Some(e) = self.page.pop_front() {
                if e.seq == self.delivered + 1 {
                    self.delivered = e.seq;
                    return Some(Ok(e));
                }
                continue;
            }
            if self.delivered < self.fence {
                if let Err(e) = self.fill_page().await {
                    return Some(Err(e));
                }
                continue;
            }
            if let Some(e) = self.held.take() {
                if e.seq == self.delivered + 1 {
                    self.delivered = e.seq;
                    return Some(Ok(e));
                }
                if e.seq > self.delivered + 1 {
                    self.fence = e.seq - 1;
                    self.held = Some(e);
                }
                continue;
            }
            if self.closed {
                return None;
            }
            match self.live.next().await {
                Some(e) if e.seq <= self.delivered => continue,
                Some(e) => self.held = Some(e),
                None if self.lagged.load(Ordering::Acquire) => {
                    // Fell behind: re-register, then replay up to the new fence.
                    let (live, lagged, fence, closed) = self.shared.register();
                    self.live = live;
                    self.lagged = lagged;
                    self.fence = fence;
                    self.closed = closed;
                    self.catch_ups += 1;
                }
                None => {
                    // The log was closed; deliver what the store holds.
                    self.closed = true;
                    match self.shared.store.head().await {
                        Ok(head) => self.fence = head.last_seq,
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }

    async fn fill_page(&mut self) -> Result<()> {
        let want = usize::try_from(self.fence - self.delivered)
            .unwrap_or(usize::MAX)
            .min(self.page_size);
        self.page_size = self
            .page_size
            .saturating_mul(2)
            .min(self.shared.replay_page.saturating_mul(REPLAY_PAGE_GROWTH));
        let page = self.shared.store.read_after(self.delivered, want).await?;
        if let Some(first) = page.first()
            && first.seq != self.delivered + 1
        {
            return Err(Error::Storage {
                backend: "log",
                reason: format!(
                    "the store returned seq {} after {}; events must come dense and in order",
                    first.seq, self.delivered
                ),
            });
        }
        let before = self.page.len();
        self.page
            .extend(page.into_iter().filter(|e| e.seq <= self.fence));
        if self.page.len() == before {
            return Err(Error::Storage {
                backend: "log",
                reason: format!(
                    "events {}..={} are missing from the store",
                    self.delivered + 1,
                    self.fence
                ),
            });
        }
        Ok(())
    }

    /// The subscription as a `Stream`.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<StoredEvent>> {
        futures::stream::unfold(self, |mut sub| async move {
            sub.next().await.map(|item| (item, sub))
        })
    }
}

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
pub struct Actor {
    /// The user's name.
    pub user: String,
    /// The client, e.g. `browser 3f2a`.
    pub client: Option<String>,
}

impl Actor {
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
    /// Wakes the actor of the session `store` holds.
    pub async fn open(store: DynSessionStore) -> Result<Self> {
        let log = SessionLog::open(store).await?;
        Self::with_log(log).await
    }

    /// Wakes the actor over an already opened log. The log is written
    /// before the metadata, so a host that died in between left metadata
    /// one state behind: the state the log last recorded wins.
    pub async fn with_log(log: SessionLog) -> Result<Self> {
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
        })
    }

    /// Stores a batch of gateway events in gseq order, idempotently.
    ///
    /// Events at or below the highest stored gseq are duplicates and skipped;
    /// the batch must otherwise continue at highest + 1 (the gateway numbers
    /// densely), and a skipped number stops the batch there so nothing is
    /// acked past a hole.
    pub async fn ingest(&self, batch: Vec<(Gseq, Event)>, now_ms: i64) -> Result<IngestOutcome> {
        let batch = batch
            .iter()
            .map(|(gseq, event)| Ok((*gseq, RawEvent::from_event(event)?)))
            .collect::<Result<Vec<_>>>()?;
        self.ingest_raw(batch, now_ms).await
    }

    /// [`SessionActor::ingest`] for events in text form, as the gateway
    /// link carries them ([`decode_gateway_frame`](crate::protocol::decode_gateway_frame)):
    /// each event's text is stored as it came, only the bodies the state
    /// depends on were decoded.
    pub async fn ingest_raw(
        &self,
        batch: Vec<(Gseq, RawEvent)>,
        now_ms: i64,
    ) -> Result<IngestOutcome> {
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
    pub async fn apply_input(&self, input: SessionInput, now_ms: i64) -> Result<SessionState> {
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
    pub async fn record(&self, event: &Event, now_ms: i64) -> Result<StoredEvent> {
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
            .ok_or_else(|| Error::Storage {
                backend: "log",
                reason: "an append stored nothing".into(),
            })
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
    pub async fn end_refused_turn(&self, result: &CommandResult, now_ms: i64) -> Result<()> {
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
        self.record(&event, now_ms).await?;
        self.apply_input(SessionInput::TurnEnded, now_ms).await?;
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
        actor: &Actor,
        now_ms: i64,
    ) -> Result<CommandOutcome> {
        if matches!(command, Command::Message(_) | Command::Abort(_))
            && self.inner.lock().await.meta.state == SessionState::Terminated
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
                        by: Some(actor.user.clone()),
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
            Command::Answer(answer) => {
                self.decide(
                    id,
                    &answer.question_id,
                    answer.decision,
                    actor.decided_by(),
                    now_ms,
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
        actor: &Actor,
        now_ms: i64,
    ) -> Result<CommandOutcome> {
        if execute.prompt.trim().is_empty() {
            return Err(Error::Invalid("a session needs a first prompt".into()));
        }
        let event = NewEvent::new(
            &Event::UserMessage(UserMessage {
                text: execute.prompt.clone(),
                by: Some(actor.user.clone()),
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
        now_ms: i64,
    ) -> Result<CommandOutcome> {
        let mut st = self.inner.lock().await;
        let frame = ToGateway::Command(CommandEnvelope {
            id: command_id.to_owned(),
            session_id: st.meta.session_id.clone(),
            command: Command::Answer(crate::protocol::Answer {
                question_id: question_id.to_owned(),
                decision: decision.clone(),
                by: Some(by.clone()),
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

/// Whether an event is the agent at work: a turn is running when it is
/// logged.
fn shows_work(event: &Event) -> bool {
    shows_work_type(event.type_name())
}

/// [`shows_work`] by the event's `type`.
fn shows_work_type(kind: &str) -> bool {
    matches!(
        kind,
        "assistant" | "tool_use" | "tool_result" | "user_question"
    )
}

/// [`shows_work_type`], or a turn's start (`session.init`).
fn starts_or_shows_work(kind: &str) -> bool {
    kind == "session.init" || shows_work_type(kind)
}

/// Whether an event of type `kind` is logged when it comes after the
/// session ended: a question's resolution (the stop withdrew it), an
/// error, a notice. The executor's work is not.
fn after_the_end(kind: &str) -> bool {
    matches!(kind, "question.resolved" | "error" | "notice")
}

/// Whether a turn is running in `state`: a message sent now waits for it.
fn turn_running(state: SessionState) -> bool {
    matches!(
        state,
        SessionState::Initializing
            | SessionState::Active
            | SessionState::Paused {
                reason: PauseReason::AwaitingApproval | PauseReason::AwaitingAnswer
            }
    )
}

/// How far back [`last_turn_open`] looks.
const TURN_LOOKBACK: Seq = 64;

/// Whether the log's last turn is open: scanning back from its end, a
/// `user.message`, `session.init` or the agent's work comes before any
/// `result` or `error`. `None` when the tail holds neither (only state
/// changes, resolutions and unknown events).
async fn last_turn_open(store: &DynSessionStore) -> Result<Option<bool>> {
    let head = store.head().await?;
    let from = head.last_seq.saturating_sub(TURN_LOOKBACK);
    let limit = usize::try_from(TURN_LOOKBACK).unwrap_or(64);
    let tail = store.read_after(from, limit).await?;
    for e in tail.iter().rev() {
        match e.event() {
            Ok(Event::Result(_) | Event::Error(_)) => return Ok(Some(false)),
            Ok(Event::UserMessage(_) | Event::SessionInit(_)) => return Ok(Some(true)),
            Ok(event) if shows_work(&event) => return Ok(Some(true)),
            Ok(_) | Err(_) => continue,
        }
    }
    Ok(None)
}

/// The state the log last recorded (its last `session.state` event),
/// looking back a bounded number of events.
async fn last_logged_state(store: &DynSessionStore) -> Result<Option<SessionState>> {
    const PAGE: Seq = 512;
    const PAGES: Seq = 8;
    let head = store.head().await?.last_seq;
    let mut to = head;
    for _ in 0..PAGES {
        if to == 0 {
            break;
        }
        let from = to.saturating_sub(PAGE);
        let page = store
            .read_after(from, usize::try_from(to - from).unwrap_or(MAX_READ))
            .await?;
        for e in page.iter().rev() {
            if let Ok(Event::SessionState(s)) = e.event() {
                return Ok(Some(s.state));
            }
        }
        to = from;
    }
    Ok(None)
}

/// The most events [`last_logged_state`] asks for at once.
const MAX_READ: usize = 512;

/// The questions still open, by id (`true` for an AskUserQuestion), so a
/// resolution of a question already decided (the executor confirming a
/// human's answer) changes no state.
#[derive(Debug, Default, Clone)]
struct Pending {
    ids: std::collections::BTreeMap<String, bool>,
}

impl Pending {
    fn answers(&self) -> usize {
        self.ids.values().filter(|a| **a).count()
    }

    fn approvals(&self) -> usize {
        self.ids.len() - self.answers()
    }

    fn total(&self) -> u32 {
        u32::try_from(self.ids.len()).unwrap_or(u32::MAX)
    }

    fn still_pending(&self) -> Option<PauseReason> {
        if self.approvals() > 0 {
            Some(PauseReason::AwaitingApproval)
        } else if self.answers() > 0 {
            Some(PauseReason::AwaitingAnswer)
        } else {
            None
        }
    }
}

async fn pending_counts(store: &DynSessionStore) -> Result<Pending> {
    let mut p = Pending::default();
    for q in store.questions(true).await? {
        let is_answer = matches!(q.question.kind, QuestionKind::AskUser { .. });
        p.ids.insert(q.question.question_id, is_answer);
    }
    Ok(p)
}

/// The state inputs an event implies, updating the pending counts and the
/// metadata it carries (executor session id, model, cost). Only the
/// [stateful types](crate::protocol::STATEFUL_EVENT_TYPES) imply any:
/// [`SessionActor::ingest_raw`] decodes no other.
fn inputs_for(event: &Event, pending: &mut Pending, meta: &mut SessionMeta) -> Vec<SessionInput> {
    match event {
        Event::SessionInit(init) => {
            if init.executor_session_id.is_some() {
                meta.executor_session_id
                    .clone_from(&init.executor_session_id);
            }
            if init.model.is_some() {
                meta.model.clone_from(&init.model);
            }
            vec![SessionInput::Initialized]
        }
        Event::UserQuestion(q) => {
            let is_answer = matches!(q.kind, QuestionKind::AskUser { .. });
            pending.ids.insert(q.question_id.clone(), is_answer);
            if is_answer {
                vec![SessionInput::QuestionAsked]
            } else {
                vec![SessionInput::ApprovalRequested]
            }
        }
        // Only a question still open moves the state: the executor
        // withdrew or timed it out. A confirmation of a decision already
        // recorded changes nothing.
        Event::QuestionResolved(r) if pending.ids.remove(&r.question_id).is_some() => {
            vec![SessionInput::QuestionResolved {
                still_pending: pending.still_pending(),
            }]
        }
        Event::Result(r) => {
            if let Some(cost) = r.cost_usd {
                meta.cost_usd = cost;
            }
            vec![SessionInput::TurnEnded]
        }
        // A tool ran that no decision allowed: the gateway stopped the
        // session for good.
        Event::Error(e) if e.code.as_deref() == Some(ERROR_UNAPPROVED_TOOL) => {
            vec![SessionInput::Terminate]
        }
        Event::Error(_) => vec![SessionInput::TurnEnded],
        // A notice tells a person something (e.g. that a restarted gateway
        // runs a message it took): the turn it announces moves the state by
        // its own events.
        Event::Notice(_) => vec![],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{NOTICE_RERUN_AFTER_RESTART, Notice};

    #[test]
    fn an_unapproved_tool_error_terminates_the_session() {
        let mut pending = Pending::default();
        let mut meta = SessionMeta::new("s", "alice", 1);
        let error = |code: &str| {
            Event::Error(crate::protocol::ErrorEvent {
                code: Some(code.into()),
                ..crate::protocol::ErrorEvent::default()
            })
        };
        assert_eq!(
            inputs_for(&error(ERROR_UNAPPROVED_TOOL), &mut pending, &mut meta),
            vec![SessionInput::Terminate]
        );
        assert_eq!(
            inputs_for(&error("executor_exited"), &mut pending, &mut meta),
            vec![SessionInput::TurnEnded]
        );
    }

    #[test]
    fn a_notice_changes_no_state_and_no_metadata() {
        let mut pending = Pending::default();
        pending.ids.insert("q-1".into(), false);
        let mut meta = SessionMeta::new("s", "alice", 1);
        meta.state = SessionState::paused(PauseReason::AwaitingApproval);
        let before = (pending.ids.clone(), meta.clone());
        let notice = Event::Notice(
            Notice::new(NOTICE_RERUN_AFTER_RESTART, "run again").about_command("s/c-1"),
        );
        assert_eq!(inputs_for(&notice, &mut pending, &mut meta), vec![]);
        assert_eq!((pending.ids, meta), before);
        // The same code path gives a turn's end an input, so the empty list
        // above is the notice's doing, not a stub's.
        let mut pending = Pending::default();
        let mut meta = SessionMeta::new("s", "alice", 1);
        assert_eq!(
            inputs_for(
                &Event::Error(crate::protocol::ErrorEvent::default()),
                &mut pending,
                &mut meta
            ),
            vec![SessionInput::TurnEnded]
        );
    }
}
