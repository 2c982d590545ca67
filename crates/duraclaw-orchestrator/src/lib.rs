//! The local Duraclaw host as a library, on tokio and axum.
//!
//! - [`Orchestrator`]: one session actor per session over any
//!   [`SessionDirectory`](duraclaw_core::store::SessionDirectory) (SQLite,
//!   memory), woken on demand and evicted when unwatched (as Durable Objects
//!   are);
//! - [`gateway::GatewayLink`]: the link to the gateway (bearer secret,
//!   re-attach after the last persisted gseq, resend of unconfirmed
//!   commands, backoff), with its per-session ingest [`lanes`];
//! - [`router`]: the REST + WebSocket API as an axum [`Router`](axum::Router) to mount
//!   under any path of an app ([`api`] has its parts);
//! - [`action`]: `POST /api/push/act`, Approve / Deny from a notification
//!   (merged by the app with its action key; not part of [`router`]);
//! - [`authn`]: who a request comes from, the [`Authenticate`] trait, so an
//!   app can bring its own login;
//! - `auth` (feature `auth`, on by default): the bundled login (users with argon2id hashes, cookie login
//!   sessions, rate limits, the Origin guard, `duraclaw user` commands);
//! - `assets` (feature `ui`, on by default): the browser UI, compiled in.
//!
//! The UI is embedded from `examples/duraclaw-full/ui/dist` by a path
//! relative to this crate (the UI's sources, build script and end-to-end
//! suite live there), so the `ui` feature builds only inside this
//! repository; an app that serves its own UI turns it off.
//!
//! `examples/duraclaw-full` (the `duraclaw` binary) wires these together.
//!
//! Mounted in an app of one's own, with its own login (here a header set by
//! a trusted proxy):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode, request::Parts};
//! use duraclaw_orchestrator::authn::BoxFuture;
//! use duraclaw_orchestrator::gateway::GatewayLink;
//! use duraclaw_orchestrator::{
//!     ApiError, AppState, AuthUser, Authenticate, Authenticator, LoginId, Orchestrator, router,
//! };
//! use tower::ServiceExt;
//!
//! struct ProxyHeader;
//!
//! impl Authenticate for ProxyHeader {
//!     fn authenticate<'a>(
//!         &'a self,
//!         parts: &'a Parts,
//!     ) -> BoxFuture<'a, Result<Option<AuthUser>, ApiError>> {
//!         let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok());
//!         let user = user.map(|name| AuthUser { name: name.into(), login: LoginId::new(name) });
//!         Box::pin(async move { Ok(user) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let orchestrator = Orchestrator::new(
//!     Arc::new(duraclaw_store::MemoryDirectory::new()),
//!     // Dialled by `link.spawn(..)`; this example makes no session.
//!     GatewayLink::new("ws://127.0.0.1:9877", "the gateway's secret"),
//!     Duration::from_secs(60),
//! );
//! let state = AppState {
//!     auth: Authenticator::new(ProxyHeader),
//!     orchestrator,
//!     public_origin: None,
//!     executor: None,
//!     executor_error: None,
//! };
//! let app = axum::Router::new().nest("/claw", router(state));
//!
//! let anonymous = Request::get("/claw/api/sessions").body(Body::empty())?;
//! assert_eq!(app.clone().oneshot(anonymous).await?.status(), StatusCode::UNAUTHORIZED);
//! let alice = Request::get("/claw/api/sessions").header("x-user", "alice").body(Body::empty())?;
//! assert_eq!(app.oneshot(alice).await?.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```
//!
//! Mounted in an app of one's own, with its own login (here a header set by
//! a trusted proxy):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode, request::Parts};
//! use duraclaw_orchestrator::authn::BoxFuture;
//! use duraclaw_orchestrator::gateway::GatewayLink;
//! use duraclaw_orchestrator::{
//!     ApiError, AppState, AuthUser, Authenticate, Authenticator, LoginId, Orchestrator, router,
//! };
//! use tower::ServiceExt;
//!
//! struct ProxyHeader;
//!
//! impl Authenticate for ProxyHeader {
//!     fn authenticate<'a>(
//!         &'a self,
//!         parts: &'a Parts,
//!     ) -> BoxFuture<'a, Result<Option<AuthUser>, ApiError>> {
//!         let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok());
//!         let user = user.map(|name| AuthUser { name: name.into(), login: LoginId::new(name) });
//!         Box::pin(async move { Ok(user) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let orchestrator = Orchestrator::new(
//!     Arc::new(duraclaw_store::MemoryDirectory::new()),
//!     // Dialled by `link.spawn(..)`; this example makes no session.
//!     GatewayLink::new("ws://127.0.0.1:9877", "the gateway's secret"),
//!     Duration::from_secs(60),
//! );
//! let state = AppState {
//!     auth: Authenticator::new(ProxyHeader),
//!     orchestrator,
//!     public_origin: None,
//!     executor: None,
//!     executor_error: None,
//! };
//! let app = axum::Router::new().nest("/claw", router(state));
//!
//! let anonymous = Request::get("/claw/api/sessions").body(Body::empty())?;
//! assert_eq!(app.clone().oneshot(anonymous).await?.status(), StatusCode::UNAUTHORIZED);
//! let alice = Request::get("/claw/api/sessions").header("x-user", "alice").body(Body::empty())?;
//! assert_eq!(app.oneshot(alice).await?.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```

pub mod action;
pub mod api;
#[cfg(feature = "ui")]
pub mod assets;
#[cfg(feature = "auth")]
pub mod auth;
pub mod authn;
pub mod error;
pub mod gateway;
pub mod inbox;
pub mod lanes;
#[cfg(feature = "push")]
pub mod push;
pub mod rules;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duraclaw_core::Result;
use std::sync::atomic::{AtomicU64, Ordering};

use duraclaw_core::backend::actor::{
    DEFAULT_LIVE_QUEUE, DEFAULT_REPLAY_PAGE, SessionActor, SessionLog,
};
use duraclaw_core::clock::{SharedClock, SystemClock};
use duraclaw_core::state::{SessionInput, SessionState};
use duraclaw_core::store::{DynSessionDirectory, SessionMeta};
use tokio::sync::Mutex;

use self::gateway::GatewayLink;

pub use api::AppState;
pub use authn::{AuthUser, Authenticate, Authenticator, LoginId};
pub use error::ApiError;

/// The session API (`/api/health`, `/api/status`, `/api/worktrees`,
/// `/api/sessions…` with their WebSocket) as a router to mount anywhere in
/// an app, e.g. `Router::new().nest("/claw", router(state))`: the routes of
/// [`api::routes`] behind the authentication's origin check
/// ([`authn::origin_guard`]), the request body limit, and JSON error
/// answers ([`api::json_errors`]). Who a request comes from is
/// `state.auth`'s to say. The bundled login's own routes
/// (`auth::routes`) and the UI are not in it.
pub fn router(state: AppState) -> axum::Router {
    api::routes()
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            authn::origin_guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            duraclaw_core::backend::web::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::map_response(api::json_errors))
        .with_state(state)
}

/// `e` with the database file named, so that a one-line error says which
/// file to look at (a schema from a newer version, for one, does not name
/// it by itself).
pub fn naming_file(path: &std::path::Path, e: duraclaw_core::Error) -> duraclaw_core::Error {
    let shown = path.display().to_string();
    let text = e.to_string();
    if text.contains(&shown) {
        e
    } else {
        duraclaw_core::Error::Invalid(format!("{shown}: {text}"))
    }
}

/// The most commands a session's outbox may hold unconfirmed by the
/// gateway; past it a new `message` is refused (`outbox_full`) rather than
/// queued without end while the gateway is away.
pub const MAX_QUEUED_COMMANDS: usize = 64;

struct Entry {
    actor: SessionActor,
    last_used: Instant,
}

/// Session actors by id, and the gateway link.
pub struct Orchestrator {
    directory: DynSessionDirectory,
    actors: Mutex<HashMap<String, Entry>>,
    gateway: GatewayLink,
    idle_evict: Duration,
    live_queue: usize,
    catch_ups: AtomicU64,
    clock: SharedClock,
    /// Where approval rules are kept ([`Orchestrator::set_rule_store`]).
    rules: std::sync::RwLock<Arc<dyn rules::RuleStore>>,
    persisted: Arc<Persisted>,
    #[cfg(feature = "push")]
    push: std::sync::OnceLock<Arc<push::PushService>>,
}

/// Where every session's persisted events go once stored: the per-user
/// views that follow all of a user's sessions.
#[derive(Debug)]
pub struct Persisted {
    inbox: Arc<inbox::InboxHub>,
}

impl Persisted {
    /// The one hook: events of `session_id` were stored and published.
    fn events(&self, session_id: &str, events: &[duraclaw_core::store::StoredEvent]) {
        self.inbox.persisted(session_id, events);
    }
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator over `directory`, linked to the gateway by `gateway`.
    pub fn new(
        directory: DynSessionDirectory,
        gateway: GatewayLink,
        idle_evict: Duration,
    ) -> Arc<Self> {
        Self::with_live_queue(directory, gateway, idle_evict, DEFAULT_LIVE_QUEUE)
    }

    /// Like [`Orchestrator::new`], with `live_queue` events queued per
    /// client before a client that reads too slowly is cut from the live
    /// stream and caught up by replay.
    pub fn with_live_queue(
        directory: DynSessionDirectory,
        gateway: GatewayLink,
        idle_evict: Duration,
        live_queue: usize,
    ) -> Arc<Self> {
        Self::with_clock(
            directory,
            gateway,
            idle_evict,
            live_queue,
            SystemClock::shared(),
        )
    }

    /// Like [`Orchestrator::with_live_queue`], stamping times with `clock`
    /// (a [`ManualClock`](duraclaw_core::clock::ManualClock) in tests).
    pub fn with_clock(
        directory: DynSessionDirectory,
        gateway: GatewayLink,
        idle_evict: Duration,
        live_queue: usize,
        clock: SharedClock,
    ) -> Arc<Self> {
        Arc::new(Orchestrator {
            directory,
            actors: Mutex::new(HashMap::new()),
            gateway,
            idle_evict,
            live_queue: live_queue.max(1),
            catch_ups: AtomicU64::new(0),
            persisted: Arc::new(Persisted {
                inbox: Arc::new(inbox::InboxHub::new(clock.clone())),
            }),
            clock,
            rules: std::sync::RwLock::new(Arc::new(rules::MemoryRules::default())),
            #[cfg(feature = "push")]
            push: std::sync::OnceLock::new(),
        })
    }

    /// Sends Web Push for the sessions' events from now on (once; a
    /// second call is ignored).
    #[cfg(feature = "push")]
    pub fn set_push(&self, push: Arc<push::PushService>) {
        let _ = self.push.set(push);
    }

    /// Hands the events of `actor`'s session that were just persisted
    /// (kept from the gateway's batch by
    /// [`duraclaw_host::push::worth_pushing`]) to the push sender, if any.
    pub async fn events_persisted(
        &self,
        actor: &SessionActor,
        events: Vec<(
            duraclaw_core::protocol::Gseq,
            duraclaw_core::protocol::Event,
        )>,
    ) {
        #[cfg(feature = "push")]
        if let Some(push) = self.push.get()
            && !events.is_empty()
        {
            push.on_events(&actor.meta().await, events).await;
        }
        #[cfg(not(feature = "push"))]
        let _ = (actor, events);
    }

    /// Every user's inbox.
    pub fn inbox(&self) -> &Arc<inbox::InboxHub> {
        &self.persisted.inbox
    }

    /// Rebuilds every user's inbox from the sessions' stores; call it once
    /// on start, before the gateway link runs.
    pub async fn rebuild_inbox(&self) -> Result<()> {
        self.persisted.inbox.rebuild(&self.directory).await
    }

    /// The clock the actors stamp times with.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// A fresh session id ([`duraclaw_host::ids::session_id`]) at the
    /// clock's time, its noise from the process id, a counter and the
    /// system clock's nanoseconds.
    pub fn new_session_id(&self) -> String {
        duraclaw_host::ids::session_id(self.clock.now_ms(), unique_noise())
    }

    /// Events queued per live client before it is caught up by replay.
    pub fn live_queue(&self) -> usize {
        self.live_queue
    }

    /// How many times, since this process started, a client overflowed its
    /// live queue and was caught up by replay.
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups.load(Ordering::Relaxed)
    }

    /// Counts `n` more catch-ups by replay.
    pub fn count_catch_ups(&self, n: u64) {
        self.catch_ups.fetch_add(n, Ordering::Relaxed);
    }

    /// The session directory.
    pub fn directory(&self) -> &DynSessionDirectory {
        &self.directory
    }

    /// The gateway link.
    pub fn gateway(&self) -> &GatewayLink {
        &self.gateway
    }

    /// The actor of `session_id`, woken from the store if it sleeps.
    pub async fn actor(&self, session_id: &str) -> Result<SessionActor> {
        let mut actors = self.actors.lock().await;
        if let Some(e) = actors.get_mut(session_id) {
            if !e.actor.log().has_failed() {
                e.last_used = Instant::now();
                return Ok(e.actor.clone());
            }
            // A commit failed after its events went out: the log stopped.
            // Load it again from what the store kept, in a new epoch.
            tracing::warn!(
                session = session_id,
                "reloading a session whose log stopped"
            );
            if let Some(e) = actors.remove(session_id) {
                e.actor.log().close();
            }
        }
        let store = self.directory.open(session_id).await?;
        let persisted = self.persisted.clone();
        let id = session_id.to_owned();
        // Events go out to browsers while the store commits them: a crash
        // in between is an epoch the next load does not vouch for (below),
        // so a browser that got them starts over instead of missing what
        // takes their seqs. A browser's command still commits first.
        let log = SessionLog::open_with(store, self.live_queue, DEFAULT_REPLAY_PAGE)
            .await?
            .on_persisted(Arc::new(move |events| persisted.events(&id, events)))
            .publishing_before_commit();
        let actor = SessionActor::with_log(log, self.clock.clone()).await?;
        // The store may lose its last commits in a machine crash: each
        // load is an epoch, so that a client holding events a crash took
        // back is told to start over instead of resuming into other events
        // at the same seqs.
        actor.begin_epoch(new_epoch()).await?;
        actors.insert(
            session_id.to_owned(),
            Entry {
                actor: actor.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(actor)
    }

    /// Creates a session and wakes its actor.
    pub async fn create(&self, meta: SessionMeta) -> Result<SessionActor> {
        let session_id = meta.session_id.clone();
        self.directory.create(meta.clone()).await?;
        self.persisted.inbox.session(meta);
        self.actor(&session_id).await
    }

    /// Removes a session whose start failed, and its actor: as if it had
    /// never been created.
    pub async fn remove(&self, session_id: &str) -> Result<()> {
        if let Some(e) = self.actors.lock().await.remove(session_id) {
            e.actor.log().close();
        }
        self.persisted.inbox.removed(session_id);
        self.directory.remove(session_id).await
    }

    /// Refuses command `id` if it is new and the session's outbox already
    /// holds [`MAX_QUEUED_COMMANDS`] commands the gateway has not confirmed.
    /// A resend of a queued command passes (it is applied once anyway).
    pub async fn check_outbox(
        &self,
        actor: &SessionActor,
        id: &str,
    ) -> std::result::Result<(), duraclaw_core::protocol::WireError> {
        let queued = match actor.log().store().unforwarded().await {
            Ok(q) => q,
            Err(e) => return Err(duraclaw_core::protocol::WireError::from(&e)),
        };
        if queued.len() < MAX_QUEUED_COMMANDS || queued.iter().any(|c| c.id == id) {
            return Ok(());
        }
        tracing::warn!(
            session = actor.session_id(),
            queued = queued.len(),
            "outbox full: refusing a new message while the gateway has not confirmed the queued ones"
        );
        Err(duraclaw_core::protocol::WireError::new(
            "outbox_full",
            format!(
                "{} commands of this session wait for the gateway (the bound is \
                 {MAX_QUEUED_COMMANDS}); send this message again once it is back",
                queued.len()
            ),
        ))
    }

    /// How many actors are awake.
    pub async fn awake(&self) -> usize {
        self.actors.lock().await.len()
    }

    /// Puts to sleep the actors nobody watched for the idle period. Their
    /// state is all in the store; the next use wakes them again.
    pub async fn evict_idle(&self) -> usize {
        let mut actors = self.actors.lock().await;
        let before = actors.len();
        let idle = self.idle_evict;
        actors.retain(|_, e| {
            let keep = e.last_used.elapsed() < idle || e.actor.log().subscriber_count() > 0;
            if !keep {
                e.actor.log().close();
            }
            keep
        });
        before - actors.len()
    }

    /// Runs [`Orchestrator::evict_idle`] periodically until dropped.
    pub fn spawn_evictor(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let period = (self.idle_evict / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                let n = this.evict_idle().await;
                if n > 0 {
                    tracing::debug!(evicted = n, "idle session actors put to sleep");
                }
            }
        })
    }

    /// Every session that is not terminated.
    pub async fn live_sessions(&self) -> Result<Vec<SessionMeta>> {
        let mut all = self.directory.list_all().await?;
        all.retain(|m| m.state != SessionState::Terminated);
        Ok(all)
    }

    /// Marks every awake, live session as waiting for the gateway.
    pub async fn gateway_lost(&self) {
        let actors: Vec<SessionActor> = self
            .actors
            .lock()
            .await
            .values()
            .map(|e| e.actor.clone())
            .collect();
        for actor in actors {
            let state = actor.meta().await.state;
            if state != SessionState::Terminated
                && let Err(e) = actor.apply_input(SessionInput::GatewayLost).await
            {
                tracing::warn!(session = actor.session_id(), error = %e, "cannot mark the gateway lost");
            }
        }
    }

    /// Brings sessions paused for the gateway back to what they were doing.
    pub async fn gateway_restored(&self, actor: &SessionActor) {
        let state = actor.meta().await.state;
        if state == SessionState::paused(duraclaw_core::state::PauseReason::GatewayUnreachable) {
            let resume = match actor.resumption().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(session = actor.session_id(), error = %e, "cannot tell how to resume");
                    return;
                }
            };
            if let Err(e) = actor
                .apply_input(SessionInput::GatewayRestored { resume })
                .await
            {
                tracing::warn!(session = actor.session_id(), error = %e, "cannot mark the gateway restored");
            }
        }
    }
}

/// Noise unique in this process and unlikely to repeat across processes:
/// the process id, a counter and the system clock's nanoseconds, mixed so
/// that consecutive values do not share their tail.
fn unique_noise() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let noise =
        u128::from(std::process::id()) << 64 | u128::from(counter) << 32 | u128::from(nanos);
    noise.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
}

/// A new log epoch: unique per load.
fn new_epoch() -> duraclaw_core::protocol::Epoch {
    let noise = unique_noise();
    duraclaw_core::protocol::Epoch((noise >> 64) as u64 ^ noise as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duraclaw_core::protocol::Event;

    /// A link to a gateway nobody runs: every command stays in the outbox.
    fn unreachable_link() -> GatewayLink {
        GatewayLink::new("ws://127.0.0.1:9", "unused-secret-0123456789")
    }

    /// An orchestrator over `dir` with no gateway, and alice's new session
    /// `s1`.
    async fn offline(
        dir: Arc<duraclaw_store::MemoryDirectory>,
        idle: Duration,
    ) -> (Arc<Orchestrator>, SessionActor) {
        let orch = Orchestrator::new(dir, unreachable_link(), idle);
        let actor = orch
            .create(SessionMeta::new("s1", "alice", 1))
            .await
            .unwrap();
        (orch, actor)
    }

    /// Events go out to browsers while they commit; a commit that fails
    /// after that stops the session's log, and the next use loads it again
    /// from the store in a new epoch, under which a browser that got the
    /// lost events is told to start over.
    #[tokio::test]
    async fn a_log_stopped_by_a_failed_commit_is_loaded_again_in_a_new_epoch() {
        use duraclaw_core::backend::web::socket::check_resume;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sessions.db");
        let dir = Arc::new(duraclaw_store::SqliteDirectory::open(&path).await.unwrap());
        let orch = Orchestrator::new(dir, unreachable_link(), Duration::from_secs(60));
        let actor = orch
            .create(SessionMeta::new("s1", "alice", 1))
            .await
            .unwrap();
        let first = actor.snapshot().await.unwrap().epoch.unwrap();
        actor.ingest(gateway_turn(1, true, false)).await.unwrap();
        let kept = actor.log().store().head().await.unwrap().last_seq;
        let mut browser = actor.log().subscribe(kept);

        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events \
             BEGIN SELECT RAISE(ABORT, 'no space left on the device'); END;",
        )
        .unwrap();
        let failed = actor.ingest(gateway_turn(3, false, false)).await;
        assert!(failed.is_err(), "{failed:?}");
        // The browser got the event, then its stream ended.
        let got = browser.next().await.unwrap().unwrap();
        assert_eq!(got.seq, kept + 1);
        assert!(browser.next().await.is_none());
        raw.execute_batch("DROP TRIGGER refuse").unwrap();

        // Loaded again: from what was kept, in a new epoch.
        let again = orch.actor("s1").await.unwrap();
        assert!(!again.log().has_failed());
        let second = again.snapshot().await.unwrap().epoch.unwrap();
        assert_ne!(second, first);
        let epochs = again.epochs().await;
        assert_eq!(epochs.last().map(|e| e.head), Some(kept));
        // The gateway resends (nothing was acked) and more comes after.
        let out = again.ingest(gateway_turn(3, false, true)).await.unwrap();
        assert_eq!(out.ack, 4);
        let last = again.log().store().head().await.unwrap().last_seq;
        assert!(last > kept + 1);
        let refused = check_resume(kept + 1, last, Some(first), &epochs);
        assert!(refused.is_err(), "the lost event's copy resumed");
        assert_eq!(check_resume(kept, last, Some(first), &epochs), Ok(()));
    }

    #[tokio::test]
    async fn idle_actors_sleep_and_wake_with_their_state() {
        use duraclaw_core::backend::actor::Person;
        use duraclaw_core::protocol::{Command, UserTurn};
        let dir = Arc::new(duraclaw_store::MemoryDirectory::new());
        let (orch, actor) = offline(dir, Duration::ZERO).await;
        let who = Person {
            user: "alice".into(),
            client: None,
        };
        let turn = Command::Message(UserTurn {
            text: "hello".into(),
        });
        actor.command("c1", turn.clone(), &who).await.unwrap();

        // Watched: stays awake whatever the idle period.
        let sub = actor.log().subscribe(0);
        assert_eq!(orch.evict_idle().await, 0);
        drop(sub);
        drop(actor);
        assert_eq!(orch.evict_idle().await, 1);
        assert_eq!(orch.awake().await, 0);

        // Woken on demand, with its log, state and applied command ids.
        let actor = orch.actor("s1").await.unwrap();
        assert_eq!(orch.awake().await, 1);
        assert_eq!(actor.log().store().head().await.unwrap().last_seq, 1);
        let again = actor.command("c1", turn, &who).await.unwrap();
        assert!(
            again.forward.is_empty(),
            "a command id applies once across sleeps"
        );
        assert_eq!(actor.meta().await.state, SessionState::Initializing);
        assert_eq!(actor.log().store().unforwarded().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_new_messages_with_a_typed_error() {
        use duraclaw_core::backend::actor::Person;
        use duraclaw_core::protocol::{Command, CommandResult, UserTurn};
        let dir = Arc::new(duraclaw_store::MemoryDirectory::new());
        let (orch, actor) = offline(dir, Duration::from_secs(60)).await;
        let who = Person {
            user: "alice".into(),
            client: None,
        };
        let turn = |i: usize| {
            Command::Message(UserTurn {
                text: format!("message {i}"),
            })
        };
        for i in 0..MAX_QUEUED_COMMANDS {
            let id = format!("m{i}");
            orch.check_outbox(&actor, &id).await.unwrap();
            actor.command(&id, turn(i), &who).await.unwrap();
        }
        let err = orch.check_outbox(&actor, "one-more").await.unwrap_err();
        assert_eq!(err.code, "outbox_full", "{err:?}");
        assert!(err.message.contains("64"), "{err:?}");
        // A resend of a queued one still passes: it is applied once.
        orch.check_outbox(&actor, "m3").await.unwrap();
        // Nothing was lost: every queued command is still there, in order.
        let queued = actor.log().store().unforwarded().await.unwrap();
        assert_eq!(queued.len(), MAX_QUEUED_COMMANDS);
        assert_eq!(queued[0].id, "m0");
        // The gateway confirms one: there is room again.
        actor
            .on_command_result(&CommandResult {
                id: "m0".into(),
                ok: true,
                error: None,
            })
            .await
            .unwrap();
        orch.check_outbox(&actor, "one-more").await.unwrap();
    }

    /// A scripted turn as the gateway would send it, from gseq `from`:
    /// `init` (a `session.init` first, as a fresh executor says), text, and
    /// its `result` when `ends`.
    fn gateway_turn(from: u64, init: bool, ends: bool) -> Vec<(u64, Event)> {
        use serde_json::json;
        let mut events = Vec::new();
        if init {
            events.push(json!({"type": "session.init", "executor_session_id": "x1"}));
        }
        events.push(json!({"type": "assistant", "message_id": format!("m{from}"), "phase": "final", "text": "working"}));
        if ends {
            events.push(json!({"type": "result", "subtype": "success", "is_error": false}));
        }
        events
            .into_iter()
            .enumerate()
            .map(|(i, v)| (from + i as u64, Event::from_value(v).unwrap()))
            .collect()
    }

    fn idle() -> SessionState {
        SessionState::paused(duraclaw_core::state::PauseReason::Idle)
    }

    /// A session with one finished turn, then a message taken while the
    /// gateway is away; `restart` drops the orchestrator in between (its
    /// actors and their memory gone, the store kept). Returns the state the
    /// session resumes to when the gateway is back.
    async fn message_while_the_gateway_is_away(restart: bool) -> SessionState {
        use duraclaw_core::backend::actor::Person;
        use duraclaw_core::protocol::{Command, UserTurn};
        let dir = Arc::new(duraclaw_store::MemoryDirectory::new());
        let (mut orch, actor) = offline(dir.clone(), Duration::from_secs(60)).await;
        actor.ingest(gateway_turn(1, true, true)).await.unwrap();
        assert_eq!(actor.meta().await.state, idle());
        orch.gateway_lost().await;
        let who = Person {
            user: "alice".into(),
            client: None,
        };
        let turn = Command::Message(UserTurn {
            text: "go on".into(),
        });
        actor.command("c2", turn, &who).await.unwrap();
        let mut actor = actor;
        if restart {
            drop(actor);
            drop(orch);
            orch = Orchestrator::new(dir, unreachable_link(), Duration::from_secs(60));
            actor = orch.actor("s1").await.unwrap();
        }
        orch.gateway_restored(&actor).await;
        let resumed = actor.meta().await.state;
        // The turn runs and ends: idle again.
        actor.ingest(gateway_turn(4, false, true)).await.unwrap();
        assert_eq!(actor.meta().await.state, idle());
        resumed
    }

    #[tokio::test]
    async fn a_message_taken_while_the_gateway_was_away_resumes_active() {
        assert_eq!(
            message_while_the_gateway_is_away(false).await,
            SessionState::Active
        );
    }

    #[tokio::test]
    async fn a_message_taken_while_the_gateway_was_away_resumes_active_after_a_restart() {
        assert_eq!(
            message_while_the_gateway_is_away(true).await,
            SessionState::Active
        );
    }

    #[tokio::test]
    async fn a_turn_queued_behind_another_reads_active_from_its_first_event() {
        use duraclaw_core::backend::actor::Person;
        use duraclaw_core::protocol::{Command, UserTurn};
        let dir = Arc::new(duraclaw_store::MemoryDirectory::new());
        let (_orch, actor) = offline(dir, Duration::from_secs(60)).await;
        // Mid-turn, a second message: the executor queues it.
        actor.ingest(gateway_turn(1, true, false)).await.unwrap();
        assert_eq!(actor.meta().await.state, SessionState::Active);
        let who = Person {
            user: "alice".into(),
            client: None,
        };
        let turn = Command::Message(UserTurn {
            text: "and then".into(),
        });
        actor.command("c2", turn, &who).await.unwrap();
        // The first turn ends; the queued one streams with no session.init.
        let end = vec![(
            3,
            Event::from_value(
                serde_json::json!({"type": "result", "subtype": "success", "is_error": false}),
            )
            .unwrap(),
        )];
        actor.ingest(end).await.unwrap();
        assert_eq!(actor.meta().await.state, idle());
        actor.ingest(gateway_turn(4, false, false)).await.unwrap();
        assert_eq!(actor.meta().await.state, SessionState::Active);
        // The log says so before the turn's first event, not after.
        let log = actor.log().store().read_after(0, 100).await.unwrap();
        let first = log
            .iter()
            .position(|e| e.gseq == Some(4))
            .expect("the queued turn's first event");
        assert!(
            matches!(
                log[first - 1].event().unwrap(),
                Event::SessionState(s) if s.state == SessionState::Active
            ),
            "{:?}",
            log.iter().map(|e| e.json.to_string()).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn an_actor_woken_after_a_crash_takes_the_state_its_log_recorded() {
        use duraclaw_core::backend::actor::Person;
        use duraclaw_core::protocol::{Command, UserTurn};
        let dir = Arc::new(duraclaw_store::MemoryDirectory::new());
        let (orch, actor) = offline(dir.clone(), Duration::from_secs(60)).await;
        actor.ingest(gateway_turn(1, true, true)).await.unwrap();
        assert_eq!(actor.meta().await.state, idle());
        // The process died after the log's append and before the metadata
        // was written: the metadata still says the turn runs.
        let store = actor.log().store().clone();
        let mut stale = store.meta().await.unwrap();
        stale.state = SessionState::Active;
        store.put_meta(&stale).await.unwrap();
        drop(actor);
        drop(orch);
        let orch = Orchestrator::new(dir, unreachable_link(), Duration::from_secs(60));
        let actor = orch.actor("s1").await.unwrap();
        assert_eq!(actor.meta().await.state, idle(), "the log's state wins");
        // So the next turn is logged as active again.
        let who = Person {
            user: "alice".into(),
            client: None,
        };
        let turn = Command::Message(UserTurn {
            text: "go on".into(),
        });
        actor.command("c2", turn, &who).await.unwrap();
        assert_eq!(actor.meta().await.state, SessionState::Active);
        let log = actor.log().store().read_after(0, 100).await.unwrap();
        assert!(
            matches!(
                log.last().unwrap().event().unwrap(),
                Event::SessionState(s) if s.state == SessionState::Active
            ),
            "{:?}",
            log.iter().map(|e| e.json.to_string()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn session_ids_are_unique_sortable_and_url_safe() {
        let dir = Arc::new(duraclaw_store::MemoryDirectory::new());
        let clock = duraclaw_core::clock::ManualClock::new(1_700_000_000_000);
        let orch = Orchestrator::with_clock(
            dir,
            unreachable_link(),
            Duration::ZERO,
            DEFAULT_LIVE_QUEUE,
            clock.shared(),
        );
        // The same millisecond: the noise keeps them apart.
        let a = orch.new_session_id();
        let b = orch.new_session_id();
        clock.advance(1);
        let later = orch.new_session_id();
        assert!(later > a && later > b, "{a} {b} {later}");
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
