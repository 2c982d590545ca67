//! Per-session ingest lanes for a link's read loop.
//!
//! The read loop hands each session's batch of events to that session's
//! lane and goes on reading; the lane takes everything queued for it,
//! ingests it as one batch and acks. Reading and decoding the next frames
//! thus overlap the store's commit of the previous ones, and the appends of
//! all lanes still meet in the store's writer queue and commit together.
//!
//! - One lane (one task, one consumer) per session: a session's batches are
//!   ingested in the order they were dispatched.
//! - A lane's queue is bounded: when it is full, [`Lanes::dispatch`] waits,
//!   which stops the read loop and so pushes back on the socket.
//! - A lane idle for the idle time ends: it closes its queue, ingests what
//!   is still in it, and exits. A dispatch that finds the queue closed
//!   starts a new lane and sends the batch there, so no batch is lost; the
//!   new lane waits for the old one to finish first, so none overtakes.
//! - [`Lanes::settled`] waits until every batch dispatched so far has been
//!   ingested (the read loop calls it before a frame that must come after
//!   the events read before it).
//! - Dropping [`Lanes`] drops the queues' senders: each lane ingests what it
//!   holds and ends.
//!
//! The gateway link's read loop uses it; the benches use it too, so that
//! they measure the same read loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

/// Batches queued per lane before [`Lanes::dispatch`] waits.
pub const LANE_QUEUE: usize = 16;
/// How long a lane with nothing to do lives.
pub const LANE_IDLE: Duration = Duration::from_secs(30);
/// A lane stops merging queued batches once it holds this many items.
const MAX_MERGED: usize = 4096;

/// Batches dispatched and not yet ingested, and a wakeup when that reaches
/// zero.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    zero: Notify,
}

impl InFlight {
    fn done(&self, n: usize) {
        if n > 0 && self.count.fetch_sub(n, Ordering::AcqRel) == n {
            self.zero.notify_waiters();
        }
    }
}

/// Marks `n` batches ingested when dropped (even if the ingest panicked,
/// so that [`Lanes::settled`] never waits for a batch that is gone).
struct Done<'a>(&'a InFlight, usize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.done(self.1);
    }
}

/// A running lane: its queue's sender and its task.
struct Lane<T> {
    tx: mpsc::Sender<Vec<T>>,
    task: tokio::task::JoinHandle<()>,
}

/// The lanes of one link: session id → the sender of its lane's queue.
pub struct Lanes<T, F> {
    lanes: HashMap<String, Lane<T>>,
    ingest: Arc<F>,
    idle: Duration,
    in_flight: Arc<InFlight>,
    /// Ended lanes are pruned from the map when it reaches this size.
    prune_at: usize,
}

impl<T, F, Fut> Lanes<T, F>
where
    T: Send + 'static,
    F: Fn(String, Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Lanes that ingest with `ingest(session_id, batch)` and end after
    /// `idle` with nothing to do.
    pub fn new(idle: Duration, ingest: F) -> Self {
        Lanes {
            lanes: HashMap::new(),
            ingest: Arc::new(ingest),
            idle,
            in_flight: Arc::new(InFlight::default()),
            prune_at: 64,
        }
    }

    /// Queues `batch` on `session_id`'s lane, starting the lane if it has
    /// none or its lane has ended. Waits while the lane's queue is full.
    pub async fn dispatch(&mut self, session_id: String, batch: Vec<T>) {
        if batch.is_empty() {
            return;
        }
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        let mut batch = batch;
        let mut ended = None;
        if let Some(lane) = self.lanes.get(&session_id) {
            match lane.tx.send(batch).await {
                Ok(()) => return,
                // The lane ended (idle): the batch comes back, for a new one.
                Err(mpsc::error::SendError(b)) => batch = b,
            }
            ended = self.lanes.remove(&session_id).map(|l| l.task);
        }
        self.prune();
        let lane = self.start(session_id.clone(), ended);
        if let Err(mpsc::error::SendError(b)) = lane.tx.send(batch).await {
            // A new lane closes only after its idle time with an empty
            // queue, so this cannot happen; were it to, the batch is not
            // ingested and must not be waited for.
            drop(b);
            self.in_flight.done(1);
        }
        self.lanes.insert(session_id, lane);
    }

    /// Waits until every batch dispatched so far has been ingested.
    pub async fn settled(&self) {
        loop {
            let zero = self.in_flight.zero.notified();
            tokio::pin!(zero);
            // Registered before the check, so a wakeup between the check
            // and the wait is not missed.
            zero.as_mut().enable();
            if self.in_flight.count.load(Ordering::Acquire) == 0 {
                return;
            }
            zero.await;
        }
    }

    /// Drops the senders of lanes that have ended, once the map has grown
    /// to twice its size after the last pruning.
    fn prune(&mut self) {
        if self.lanes.len() >= self.prune_at {
            self.lanes.retain(|_, lane| !lane.tx.is_closed());
            self.prune_at = (self.lanes.len() * 2).max(64);
        }
    }

    /// Starts a lane for `session_id`; with `after`, the session's ended
    /// lane, whose last ingest (what got in before it closed) the new one
    /// waits for, so the session's batches stay in order.
    fn start(&self, session_id: String, after: Option<tokio::task::JoinHandle<()>>) -> Lane<T> {
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        let task = tokio::spawn(lane(
            session_id,
            rx,
            self.ingest.clone(),
            self.idle,
            self.in_flight.clone(),
            after,
        ));
        Lane { tx, task }
    }
}

/// One session's lane: ingests what is queued, in order, merging what has
/// piled up into one batch.
async fn lane<T, F, Fut>(
    session_id: String,
    mut rx: mpsc::Receiver<Vec<T>>,
    ingest: Arc<F>,
    idle: Duration,
    in_flight: Arc<InFlight>,
    after: Option<tokio::task::JoinHandle<()>>,
) where
    F: Fn(String, Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    tracing::debug!(session = %session_id, "ingest lane started");
    if let Some(previous) = after {
        // An ingest that panicked ended its lane too; order is all we wait for.
        let _ = previous.await;
    }
    loop {
        let (mut batch, mut n) = match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some(b)) => (b, 1),
            // The link ended and everything queued has been ingested.
            Ok(None) => break,
            Err(_) => {
                // Idle: refuse new batches (their dispatch starts a new
                // lane), then ingest whatever got in before the close.
                rx.close();
                let (mut batch, mut n) = (Vec::new(), 0);
                while let Some(b) = rx.recv().await {
                    batch.extend(b);
                    n += 1;
                }
                if n > 0 {
                    let _done = Done(&in_flight, n);
                    ingest(session_id.clone(), batch).await;
                }
                break;
            }
        };
        while batch.len() < MAX_MERGED {
            match rx.try_recv() {
                Ok(more) => {
                    batch.extend(more);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        let _done = Done(&in_flight, n);
        ingest(session_id.clone(), batch).await;
    }
    tracing::debug!(session = %session_id, "ingest lane ended");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::*;

    type Seen = Arc<Mutex<Vec<(String, Vec<u64>)>>>;
    type Ingest =
        Box<dyn Fn(String, Vec<u64>) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

    /// Lanes whose ingest records each batch, after a permit of `gate`
    /// (so a test can hold ingests back).
    fn recording(idle: Duration, gate: Arc<Semaphore>) -> (Lanes<u64, Ingest>, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let ingest: Ingest = Box::new(move |session: String, batch: Vec<u64>| {
            let (s, gate) = (s.clone(), gate.clone());
            Box::pin(async move {
                gate.acquire().await.unwrap().forget();
                s.lock().unwrap().push((session, batch));
            })
        });
        let lanes = Lanes::new(idle, ingest);
        (lanes, seen)
    }

    fn of(seen: &Seen, session: &str) -> Vec<u64> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s == session)
            .flat_map(|(_, b)| b.clone())
            .collect()
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_batch_is_ingested_in_order_per_session_and_merged() {
        let gate = Arc::new(Semaphore::new(0));
        let (mut lanes, seen) = recording(LANE_IDLE, gate.clone());
        // Held back: the batches pile up in the lanes' queues.
        for k in 0..10u64 {
            for s in 0..3 {
                lanes
                    .dispatch(format!("s{s}"), vec![k * 2, k * 2 + 1])
                    .await;
            }
        }
        assert_eq!(lanes.lanes.len(), 3);
        gate.add_permits(1000);
        lanes.settled().await;
        for s in 0..3 {
            assert_eq!(of(&seen, &format!("s{s}")), (0..20).collect::<Vec<_>>());
        }
        // Each lane took its first batch, then merged the nine queued
        // behind it into one.
        let calls = seen.lock().unwrap().len();
        assert!(calls <= 6, "{calls} ingests for 30 batches");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settled_waits_for_every_dispatched_batch() {
        let gate = Arc::new(Semaphore::new(0));
        let (mut lanes, seen) = recording(LANE_IDLE, gate.clone());
        lanes.dispatch("a".into(), vec![1]).await;
        lanes.dispatch("b".into(), vec![2]).await;
        let settled = lanes.settled();
        tokio::pin!(settled);
        // Nothing ingested yet: not settled.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), settled.as_mut())
                .await
                .is_err()
        );
        gate.add_permits(1);
        until("one ingest", || seen.lock().unwrap().len() == 1).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), settled.as_mut())
                .await
                .is_err()
        );
        gate.add_permits(1);
        tokio::time::timeout(Duration::from_secs(10), settled)
            .await
            .expect("settled once both batches were ingested");
        assert_eq!(seen.lock().unwrap().len(), 2);
        // With nothing in flight it returns at once.
        lanes.settled().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_lane_ends_and_a_new_one_takes_the_next_batch() {
        let gate = Arc::new(Semaphore::new(1000));
        let (mut lanes, seen) = recording(Duration::from_millis(20), gate);
        lanes.dispatch("a".into(), vec![1]).await;
        lanes.settled().await;
        let first = lanes.lanes["a"].tx.clone();
        until("the idle lane ended", || first.is_closed()).await;
        lanes.dispatch("a".into(), vec![2]).await;
        lanes.settled().await;
        assert!(!lanes.lanes["a"].tx.same_channel(&first), "a new lane");
        assert_eq!(of(&seen, "a"), vec![1, 2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_racing_the_idle_close_are_not_lost() {
        // A lane that idles out immediately: many dispatches land just
        // before, during or after its close.
        let gate = Arc::new(Semaphore::new(1_000_000));
        let (mut lanes, seen) = recording(Duration::from_micros(1), gate);
        for k in 0..2000u64 {
            lanes.dispatch("a".into(), vec![k]).await;
            if k % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        lanes.settled().await;
        assert_eq!(of(&seen, "a"), (0..2000).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_lanes_ingest_what_they_hold() {
        let gate = Arc::new(Semaphore::new(0));
        let (mut lanes, seen) = recording(LANE_IDLE, gate.clone());
        for k in 0..5u64 {
            lanes.dispatch("a".into(), vec![k]).await;
        }
        drop(lanes);
        gate.add_permits(1000);
        until("the lane ingested all", || of(&seen, "a").len() == 5).await;
        assert_eq!(of(&seen, "a"), (0..5).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ended_lanes_are_pruned() {
        let gate = Arc::new(Semaphore::new(1_000_000));
        let (mut lanes, _seen) = recording(Duration::from_millis(1), gate);
        for s in 0..64 {
            lanes.dispatch(format!("s{s}"), vec![1]).await;
        }
        lanes.settled().await;
        let senders: Vec<_> = lanes.lanes.values().map(|l| l.tx.clone()).collect();
        until("all lanes ended", || senders.iter().all(|t| t.is_closed())).await;
        drop(senders);
        lanes.dispatch("new".into(), vec![1]).await;
        assert_eq!(
            lanes.lanes.len(),
            1,
            "the ended lanes are gone from the map"
        );
        lanes.settled().await;
    }
}
