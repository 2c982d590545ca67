//! A session's event log and its subscriptions: persist, then publish in
//! seq order (or publish while the store commits, for a log that opts in:
//! [`SessionLog::publishing_before_commit`]); replay after a seq, then live
//! events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::channel::mpsc;
use futures::lock::Mutex as AsyncMutex;

use crate::error::{Error, Result};
use crate::protocol::Seq;
use crate::store::{
    AppendBatch, AppendOutcome, DynSessionStore, RecordedCommand, Resolution, ResolveOutcome,
    SessionMeta, StoredEvent,
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
    /// A log that publishes before it commits
    /// ([`SessionLog::publishing_before_commit`]): the events of the append
    /// under way, published and not committed yet (empty outside one).
    unconfirmed: Vec<StoredEvent>,
    /// Such a log whose commit failed after its events went out: why. It
    /// takes no more appends.
    failed: Option<String>,
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

/// Called with every batch of events the log stored, right after they
/// went to its live subscribers (a host's per-user views hang here).
pub type PersistedHook = Arc<dyn Fn(&[StoredEvent]) + Send + Sync>;

/// A session's event log with live fan-out. Cheap to clone.
#[derive(Clone)]
pub struct SessionLog {
    shared: Arc<Shared>,
    append_lock: Arc<AsyncMutex<()>>,
    persisted: Option<PersistedHook>,
    early: bool,
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
            persisted: None,
            early: false,
        })
    }

    /// This log, calling `hook` after every batch it stores.
    pub fn on_persisted(mut self, hook: PersistedHook) -> Self {
        self.persisted = Some(hook);
        self
    }

    fn publish(&self, events: &[StoredEvent]) {
        self.shared.publish(events);
        if let Some(hook) = &self.persisted
            && !events.is_empty()
        {
            hook(events);
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &DynSessionStore {
        &self.shared.store
    }

    /// This log, publishing each batch of events (with no command) to its
    /// live subscribers while the store commits it, not after: for a log
    /// whose readers can take a crash taking back what they saw (the
    /// gateway's outbox: its orchestrator is numbered past what the
    /// gateway lost, `duraclaw_gateway::gseq`). Appends still return once
    /// committed, one at a time, and a subscriber still gets every event
    /// once, in order. A commit that fails after its events went out ends
    /// the log: every subscription ends, and every later append fails.
    pub fn publishing_before_commit(mut self) -> Self {
        self.early = true;
        self
    }

    /// Appends, then publishes what was stored: persist before forward
    /// (but see [`SessionLog::publishing_before_commit`]).
    pub async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome> {
        let _order = self.append_lock.lock().await;
        if self.early {
            self.check_failed()?;
            if batch.command.is_none() && !batch.events.is_empty() {
                return self.append_early(batch).await;
            }
        }
        let outcome = self.shared.store.append(batch).await?;
        self.publish(&outcome.stored);
        Ok(outcome)
    }

    /// Whether a commit failed after its events went out (a log that
    /// publishes before it commits): it takes no more appends; open the
    /// store again for a log that goes on from what was committed.
    pub fn has_failed(&self) -> bool {
        self.shared.hub().failed.is_some()
    }

    /// Appends, then publishes what was stored, even on a log that
    /// publishes before it commits: for events whose readers must never
    /// see them unless the store keeps them (a question, a turn's end, on
    /// the gateway: what its restart reads back).
    pub async fn append_committed(&self, batch: AppendBatch) -> Result<AppendOutcome> {
        let _order = self.append_lock.lock().await;
        if self.early {
            self.check_failed()?;
        }
        let outcome = self.shared.store.append(batch).await?;
        self.publish(&outcome.stored);
        Ok(outcome)
    }

    fn check_failed(&self) -> Result<()> {
        match &self.shared.hub().failed {
            Some(why) => Err(Error::storage(
                "log",
                format!("the log stopped after a failed commit: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// Publishes `batch`'s events as the store will number them, then
    /// commits them. Called with the append lock held.
    async fn append_early(&self, batch: AppendBatch) -> Result<AppendOutcome> {
        let first = self.shared.hub().published + 1;
        let expected: Vec<StoredEvent> = batch
            .events
            .iter()
            .zip(first..)
            .map(|(e, seq)| StoredEvent {
                seq,
                gseq: e.gseq,
                at_ms: e.at_ms,
                json: e.json.clone(),
            })
            .collect();
        self.shared.hub().unconfirmed.clone_from(&expected);
        self.shared.publish(&expected);
        // The subscribers woken first: a commit on this thread would hold
        // them until it ends. (A large batch is a burst: throughput, not
        // one event's latency.)
        if expected.len() <= EARLY_YIELD_MAX {
            YieldOnce(false).await;
        }
        let result = self.shared.store.append(batch).await;
        let mut hub = self.shared.hub();
        hub.unconfirmed.clear();
        let why = match result {
            Ok(out)
                if out
                    .stored
                    .iter()
                    .map(|e| e.seq)
                    .eq(expected.iter().map(|e| e.seq)) =>
            {
                drop(hub);
                if let Some(hook) = &self.persisted {
                    hook(&out.stored);
                }
                return Ok(out);
            }
            Ok(out) => format!(
                "the store numbered the events {:?}, not from {first}",
                out.stored.first().map(|e| e.seq)
            ),
            Err(e) => e.to_string(),
        };
        tracing::error!(session = self.shared.store.session_id(), error = %why, "a commit failed after its events were published: the log stops");
        hub.published = first - 1;
        hub.closed = true;
        hub.slots.clear();
        hub.failed = Some(why.clone());
        Err(Error::storage("log", why))
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
        self.publish(&outcome.stored);
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
            self.publish(std::slice::from_ref(e));
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

    /// Moves where the replay starts to after `after`; for a stream whose
    /// start is known only once it subscribed (a tail). Call before the
    /// first [`Subscription::next`].
    pub fn resume_after(&mut self, after: Seq) {
        self.delivered = after;
        self.page.clear();
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
        // Published and not committed yet (a log that publishes before it
        // commits): from the hub. Whatever precedes them is committed.
        let unconfirmed: Vec<StoredEvent> = self
            .shared
            .hub()
            .unconfirmed
            .iter()
            .filter(|e| e.seq > self.delivered && e.seq <= self.fence)
            .cloned()
            .collect();
        if unconfirmed
            .first()
            .is_some_and(|e| e.seq == self.delivered + 1)
        {
            self.page.extend(unconfirmed);
            return Ok(());
        }
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
            return Err(Error::storage(
                "log",
                format!(
                    "the store returned seq {} after {}; events must come dense and in order",
                    first.seq, self.delivered
                ),
            ));
        }
        let before = self.page.len();
        self.page
            .extend(page.into_iter().filter(|e| e.seq <= self.fence));
        if self.page.len() == before {
            return Err(Error::storage(
                "log",
                format!(
                    "events {}..={} are missing from the store",
                    self.delivered + 1,
                    self.fence
                ),
            ));
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

/// The largest batch a log that publishes before it commits lets its
/// subscribers run ahead of the commit for.
const EARLY_YIELD_MAX: usize = 8;

/// Returns `Pending` once (waking itself), so that tasks woken before it
/// run first on any executor.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}
