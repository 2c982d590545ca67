//! The orchestrator's link to the gateway: the IO around
//! [`duraclaw_host::link`], which decides what is sent and what a frame
//! means (the Durable Object drives the same). It dials with the bearer
//! secret, re-attaches every live session after the highest gseq it
//! persisted, resends commands the gateway has not confirmed, ingests
//! events in batches and acks them, and redials with capped exponential
//! backoff and jitter ([`duraclaw_host::backoff`]) when the link drops.
//!
//! The read loop does not wait for the store: it hands each session's
//! events to that session's ingest lane (see [`super::lanes`]) and goes on
//! reading, so reading and decoding the next frames overlap the commit of
//! the previous ones. The lanes' appends still meet in the store's writer
//! queue and commit as one group. A session's events keep their order (one
//! lane per session), and events read before any other frame (a command's
//! result, worktrees, an error) are ingested before that frame is handled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_core::protocol::{
    CommandResult, GatewayRequest, Gseq, LINK_MAX_MESSAGE_BYTES, LINK_READ_BUFFER_BYTES, RawEvent,
    ToGateway, WireError, Worktree,
};
use duraclaw_host::backoff::Backoff;
use duraclaw_host::link::{self, Input, Link};
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Orchestrator;
use super::lanes::{LANE_IDLE, Lanes};

/// The most events ingested for one session in one step.
const MAX_BATCH: usize = 1024;
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// How long a request to the gateway (worktrees, a command) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What the UI shows about the gateway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayStatus {
    /// The link is up.
    pub connected: bool,
    /// Where it dials.
    pub url: String,
    /// Why it is down, if it is.
    pub error: Option<String>,
    /// The gateway's software, from its hello.
    pub agent: Option<String>,
    /// Why the gateway's executor cannot run sessions, from its hello.
    pub executor_error: Option<String>,
}

type Waiters<T> = Mutex<HashMap<String, oneshot::Sender<T>>>;

struct Shared {
    url: String,
    secret: String,
    status: Mutex<GatewayStatus>,
    tx: Mutex<Option<mpsc::Sender<String>>>,
    /// Commands sent and who waits for their results.
    link: Mutex<Link<oneshot::Sender<CommandResult>>>,
    worktrees: Waiters<std::result::Result<Vec<Worktree>, WireError>>,
    /// `request` frames awaiting their reply.
    replies: Waiters<std::result::Result<serde_json::Value, WireError>>,
    next_id: std::sync::atomic::AtomicU64,
    /// How long an idle ingest lane lives.
    lane_idle: Duration,
}

/// A handle on the gateway link. Cheap to clone.
#[derive(Clone)]
pub struct GatewayLink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GatewayLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("GatewayLink")
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GatewayLink {
    /// A link to `url` (e.g. `ws://127.0.0.1:9877`) with `secret`; not yet
    /// dialling: see [`GatewayLink::spawn`].
    pub fn new(url: &str, secret: &str) -> Self {
        Self::with_lane_idle(url, secret, LANE_IDLE)
    }

    /// [`GatewayLink::new`] whose per-session ingest lanes end after
    /// `lane_idle` with nothing to ingest.
    pub fn with_lane_idle(url: &str, secret: &str, lane_idle: Duration) -> Self {
        GatewayLink {
            shared: Arc::new(Shared {
                url: url.to_owned(),
                secret: secret.to_owned(),
                status: Mutex::new(GatewayStatus {
                    connected: false,
                    url: url.to_owned(),
                    error: Some("not connected yet".into()),
                    agent: None,
                    executor_error: None,
                }),
                tx: Mutex::new(None),
                link: Mutex::new(Link::new()),
                worktrees: Mutex::new(HashMap::new()),
                replies: Mutex::new(HashMap::new()),
                next_id: std::sync::atomic::AtomicU64::new(1),
                lane_idle,
            }),
        }
    }

    /// The link's state.
    pub fn status(&self) -> GatewayStatus {
        lock(&self.shared.status).clone()
    }

    /// Whether the link is up.
    pub fn is_connected(&self) -> bool {
        lock(&self.shared.status).connected
    }

    /// Sends a frame now, if the link is up. Commands that must not be lost
    /// are also in their session's outbox and resent on reconnect. A
    /// command's id goes out qualified with its session
    /// ([`Link::outgoing`]).
    pub fn send(&self, frame: &ToGateway) -> Result<()> {
        let text = lock(&self.shared.link).outgoing(frame)?;
        let tx = lock(&self.shared.tx).clone();
        match tx {
            Some(tx) => tx.try_send(text).map_err(|_| Error::Closed("gateway link")),
            None => Err(Error::Closed("gateway link")),
        }
    }

    /// Sends a command and waits for the gateway's result.
    pub async fn command(&self, frame: &ToGateway) -> Result<CommandResult> {
        let ToGateway::Command(env) = frame else {
            return Err(Error::Invalid("not a command".into()));
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.link).wait(&env.session_id, &env.id, tx);
        let answer = match self.send(frame) {
            Ok(()) => tokio::time::timeout(REQUEST_TIMEOUT, rx).await,
            Err(e) => {
                lock(&self.shared.link).unwait(&env.session_id, &env.id);
                return Err(e);
            }
        };
        match answer {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(Error::Closed("gateway link")),
            Err(_) => {
                lock(&self.shared.link).unwait(&env.session_id, &env.id);
                Err(Error::Timeout {
                    what: "the gateway's answer",
                    ms: REQUEST_TIMEOUT.as_millis() as u64,
                })
            }
        }
    }

    /// The gateway's worktrees.
    pub async fn worktrees(&self) -> Result<Vec<Worktree>> {
        let id = format!(
            "wt-{}",
            self.shared
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.worktrees).insert(id.clone(), tx);
        self.send(&ToGateway::ListWorktrees { id })?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(Ok(w))) => Ok(w),
            Ok(Ok(Err(e))) => Err(Error::Invalid(e.message)),
            Ok(Err(_)) => Err(Error::Closed("gateway link")),
            Err(_) => Err(Error::Timeout {
                what: "the gateway's worktrees",
                ms: REQUEST_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    /// Sends a `request` and waits for its reply: the gateway's answer
    /// (its value, or why it refused), or why none came.
    pub async fn request(
        &self,
        request: GatewayRequest,
    ) -> Result<std::result::Result<serde_json::Value, WireError>> {
        let id = format!(
            "rq-{}",
            self.shared
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.replies).insert(id.clone(), tx);
        if let Err(e) = self.send(&ToGateway::Request {
            id: id.clone(),
            request,
        }) {
            lock(&self.shared.replies).remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Error::Closed("gateway link")),
            Err(_) => {
                lock(&self.shared.replies).remove(&id);
                Err(Error::Timeout {
                    what: "the gateway's reply",
                    ms: REQUEST_TIMEOUT.as_millis() as u64,
                })
            }
        }
    }

    /// Dials and keeps dialling until the orchestrator is dropped.
    pub fn spawn(&self, orchestrator: Weak<Orchestrator>) -> tokio::task::JoinHandle<()> {
        let link = self.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_CAP);
            loop {
                let Some(orch) = orchestrator.upgrade() else {
                    return;
                };
                let result = link.run_once(&orch).await;
                lock(&link.shared.tx).take();
                let error = result.err().map(|e| e.to_string());
                if error.is_some() {
                    lock(&link.shared.status).error.clone_from(&error);
                }
                let was_connected =
                    std::mem::replace(&mut lock(&link.shared.status).connected, false);
                let delay = if was_connected {
                    // However it ended, redial promptly.
                    tracing::warn!(url = %link.shared.url, error = ?error, "gateway link lost");
                    orch.gateway_lost().await;
                    backoff.lost(random())
                } else {
                    let retry = backoff.failed(random());
                    if retry.log {
                        tracing::warn!(url = %link.shared.url, error = ?error, attempt = retry.failures, "gateway unreachable");
                    }
                    retry.delay
                };
                drop(orch);
                tokio::time::sleep(delay).await;
            }
        })
    }

    async fn run_once(&self, orch: &Arc<Orchestrator>) -> Result<()> {
        let mut req = self
            .shared
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Invalid(format!("bad gateway URL {}: {e}", self.shared.url)))?;
        let bearer = format!("Bearer {}", self.shared.secret)
            .parse()
            .map_err(|_| Error::Invalid("the gateway secret is not a valid header value".into()))?;
        req.headers_mut().insert("authorization", bearer);
        // The same limits as the gateway's end of the link.
        let config = WebSocketConfig::default()
            .max_message_size(Some(LINK_MAX_MESSAGE_BYTES))
            .max_frame_size(Some(LINK_MAX_MESSAGE_BYTES))
            .read_buffer_size(LINK_READ_BUFFER_BYTES);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(resp) if resp.status() == 401 => {
                    Error::Unauthorized("the gateway refused the secret (401)".into())
                }
                other => Error::Closed(leak_reason(&other)),
            })?;
        let (mut sink, mut stream) = ws.split();
        sink.send(Message::text(link::hello()?))
            .await
            .map_err(|_| Error::Closed("gateway link"))?;
        let hello = match tokio::time::timeout(REQUEST_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => link::read_hello(t.as_str())?,
            _ => return Err(Error::Closed("gateway link before its hello")),
        };

        let (tx, mut rx) = mpsc::channel::<String>(4096);
        *lock(&self.shared.tx) = Some(tx);
        {
            let mut st = lock(&self.shared.status);
            st.connected = true;
            st.error = None;
            st.agent = hello.agent;
            st.executor_error = hello.executor_error;
        }
        tracing::info!(url = %self.shared.url, "gateway connected");
        // Every frame already queued, then one flush (one write per burst).
        let writer = tokio::spawn(async move {
            'write: while let Some(text) = rx.recv().await {
                if sink.feed(Message::text(text)).await.is_err() {
                    break;
                }
                while let Ok(text) = rx.try_recv() {
                    if sink.feed(Message::text(text)).await.is_err() {
                        break 'write;
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        // Re-attach every live session and resend what is unconfirmed.
        for meta in orch.live_sessions().await? {
            let actor = orch.actor(&meta.session_id).await?;
            orch.gateway_restored(&actor).await;
            let mut frames = actor.on_gateway_connected().await?;
            // The session's rules again (a restarted gateway has none),
            // after a resent `execute` and before the attach.
            let rules = orch
                .rules_frame(&meta.owner, meta.rules_worktree(), &meta.session_id)
                .await?;
            frames.insert(frames.len().saturating_sub(1), rules);
            for frame in frames {
                self.send(&frame)?;
            }
        }

        let result = self.read_loop(orch, &mut stream).await;
        lock(&self.shared.tx).take();
        writer.abort();
        // Requests waiting on this link get their answer from the next one.
        lock(&self.shared.link).on_closed();
        lock(&self.shared.worktrees).clear();
        lock(&self.shared.replies).clear();
        result
    }

    /// Reads until the link ends, with a lane per session; once it ends,
    /// waits until the lanes have ingested what they were given.
    async fn read_loop<S>(&self, orch: &Arc<Orchestrator>, stream: &mut S) -> Result<()>
    where
        S: futures::Stream<
                Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>,
            > + Unpin,
    {
        let link = self.clone();
        let weak = Arc::downgrade(orch);
        let mut lanes = Lanes::new(self.shared.lane_idle, move |session_id, batch| {
            let (link, weak) = (link.clone(), weak.clone());
            async move {
                if let Some(orch) = weak.upgrade() {
                    link.ingest(&orch, session_id, batch).await;
                }
            }
        });
        let result = self.read_frames(orch, stream, &mut lanes).await;
        // Everything read is ingested before the next link re-attaches;
        // dropping the lanes' senders then ends each lane.
        lanes.settled().await;
        drop(lanes);
        result
    }

    async fn read_frames<S, F, Fut>(
        &self,
        orch: &Arc<Orchestrator>,
        stream: &mut S,
        lanes: &mut Lanes<(Gseq, RawEvent), F>,
    ) -> Result<()>
    where
        S: futures::Stream<
                Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>,
            > + Unpin,
        F: Fn(String, Vec<(Gseq, RawEvent)>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        loop {
            let Some(first) = stream.next().await else {
                return Ok(());
            };
            // Take whatever else has already arrived: one batch per session
            // for a burst of events (group commit at the source).
            let mut frames = vec![first];
            while frames.len() < MAX_BATCH {
                match stream.next().now_or_never() {
                    Some(Some(m)) => frames.push(m),
                    _ => break,
                }
            }
            let mut texts = Vec::with_capacity(frames.len());
            let mut end = None;
            for msg in frames {
                match msg {
                    Ok(Message::Text(t)) => texts.push(t),
                    Ok(Message::Close(_)) => {
                        end = Some(Ok(()));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        end = Some(Err(Error::Closed(leak_reason(&e))));
                        break;
                    }
                }
            }
            // Events stay text: only what the session's state needs is
            // decoded, and the text is stored and relayed as it came.
            // decoded here, outside the lock senders take.
            let decoded = link::decode(texts.iter().map(|t| t.as_str()));
            let inputs = lock(&self.shared.link).route(decoded);
            for input in inputs {
                match input {
                    // A lane per session (a session's events keep their
                    // order); it waits while the lane's queue is full
                    // (back-pressure on the socket).
                    Input::Events { session_id, events } => {
                        lanes.dispatch(session_id, events).await;
                    }
                    other => {
                        // The events read before this frame are ingested
                        // before it is handled (rare frames: a cheap wait).
                        lanes.settled().await;
                        self.handle(orch, other).await;
                    }
                }
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    async fn ingest(
        &self,
        orch: &Arc<Orchestrator>,
        session_id: String,
        batch: Vec<(Gseq, RawEvent)>,
    ) {
        let actor = match orch.actor(&session_id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(session = %session_id, error = %e, "events for an unknown session");
                return;
            }
        };
        let pushed = duraclaw_host::push::worth_pushing(batch.iter().map(|(g, e)| (*g, e.event())));
        match actor.ingest_raw(batch).await {
            Ok(out) => {
                orch.events_persisted(&actor, pushed).await;
                for frame in link::after_ingest(&session_id, &out) {
                    let _ = self.send(&frame);
                }
            }
            Err(e) => {
                // Not acked: the gateway keeps them and a re-attach
                // resends them.
                tracing::error!(session = %session_id, error = %e, "cannot persist gateway events");
            }
        }
    }

    async fn handle(&self, orch: &Arc<Orchestrator>, input: Input<oneshot::Sender<CommandResult>>) {
        match input {
            Input::Result {
                session_id: session,
                result: r,
                ends_turn,
                waiter,
                ..
            } => {
                let actor = orch.actor(&session).await;
                if let Ok(actor) = &actor
                    && let Err(e) = actor.on_command_result(&r).await
                {
                    tracing::warn!(session = %session, error = %e, "cannot record a command result");
                }
                if !r.ok {
                    tracing::info!(session = %session, command = %r.id, error = ?r.error, "the gateway refused a command");
                }
                // The user's turn is in the log; its end is this refusal.
                if ends_turn
                    && let Ok(actor) = &actor
                    && let Err(e) = actor.end_refused_turn(&r).await
                {
                    tracing::warn!(session = %session, error = %e, "cannot end a refused turn");
                }
                if let Some(w) = waiter {
                    let _ = w.send(r);
                }
            }
            Input::Worktrees { id, worktrees } => {
                if let Some(w) = lock(&self.shared.worktrees).remove(&id) {
                    let _ = w.send(Ok(worktrees));
                }
            }
            Input::Error(e) => {
                tracing::warn!(code = %e.code, message = %e.message, "the gateway reported an error");
                // A failed worktree listing answers its waiters.
                let waiters: Vec<_> = lock(&self.shared.worktrees).drain().collect();
                for (_, w) in waiters {
                    let _ = w.send(Err(e.clone()));
                }
                // As does a request a gateway without `request` cannot read.
                let replies: Vec<_> = lock(&self.shared.replies).drain().collect();
                for (_, w) in replies {
                    let _ = w.send(Err(e.clone()));
                }
            }
            Input::Reply { id, result } => {
                if let Some(w) = lock(&self.shared.replies).remove(&id) {
                    let _ = w.send(result);
                }
            }
            Input::Bad(e) => tracing::warn!(error = %e, "bad frame from the gateway"),
            Input::Events { .. } | Input::Pong { .. } => {}
        }
    }
}

/// Connection errors as static reasons (the tungstenite error may carry the
/// URL, never the secret; a static string keeps logs tidy).
fn leak_reason(e: &tokio_tungstenite::tungstenite::Error) -> &'static str {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(_) => "gateway link (connection refused or reset)",
        E::Http(_) => "gateway link (HTTP error on upgrade)",
        E::Capacity(_) => "gateway link (frame too large)",
        _ => "gateway link",
    }
}

/// Low bits of the clock: randomness enough for reconnect jitter.
fn random() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0)
}
