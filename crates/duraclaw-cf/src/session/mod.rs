//! [`SessionHost`]: the body of a session's Durable Object (SessionDO).
//!
//! One Durable Object holds one session (named by the session id). The host
//! opens core's [`SessionActor`] over the object's own SQLite
//! ([`DoSqlDirectory`]), so ordering, idempotence, acks, decisions and the
//! command outbox are core's; a start follows `duraclaw_host::start`'s plan
//! and errors answer as `duraclaw_host::http` says. This module only
//! connects the actor to the two links:
//!
//! - **Browsers** connect with hibernatable WebSockets
//!   (`accept_websocket_with_tags`): `GET /ws?after=<seq>` answers `hello`,
//!   `snapshot`, every event with `seq > after` from the store, then live
//!   events. After every step that persists events the host sends the new
//!   ones to every socket ([`SessionHost::publish`]). Commands from a socket
//!   go to the actor (each id applied once) and their `command_result` goes
//!   back to that socket. Who is on a socket lives in its attachment (a few
//!   bytes, far under the 16 KiB limit), so a hibernated object wakes with
//!   its sockets and loses nothing.
//! - **The gateway** is one outbound WebSocket per object to
//!   `CC_GATEWAY_URL` with `CC_GATEWAY_SECRET` as a bearer token, driven
//!   by [`duraclaw_host::link`], the code the local orchestrator drives too.
//!   On open it sends the actor's `on_gateway_connected` frames (every
//!   unconfirmed command, then attach after the highest persisted gseq);
//!   events are ingested as text (stored and relayed as the gateway sent
//!   them) in batches (while they flow, the reader lets the frames that
//!   arrive meanwhile join one batch: one transaction, one ack), published
//!   and acked (both leave once the write has committed). An open
//!   outbound socket does
//!   not keep a Durable Object alive, so while the session needs its link a
//!   heartbeat alarm pings it every [`HEARTBEAT`] and reconnects when it is
//!   gone; a failed connect retries by alarm with capped exponential
//!   backoff and jitter ([`duraclaw_host::backoff`]). While the link is down the session shows
//!   `paused/gateway_unreachable`, and returns to what it was doing when the
//!   link is back. An idle session (turn over, nothing unconfirmed) lets its
//!   link go and its alarm lapse; the gateway's outbox keeps anything that
//!   arrives meanwhile, and the next command reconnects.
//!
//! # Replay and live events never overlap or leave a gap
//!
//! The DO-SQL store is synchronous: every store call completes within the
//! poll that makes it, and no actor method awaits a JavaScript promise. A
//! Durable Object runs one JavaScript turn at a time, and another event
//! (a gateway frame, a browser message, an alarm) can only run while the
//! current one awaits a real promise. The host keeps `published`, the
//! highest seq sent to every registered socket, and upholds two rules:
//!
//! 1. every step that appends to the log is followed by [`publish`] in the
//!    same turn (no promise awaited between the append and the publish), so
//!    outside a turn `published` equals the log's head; and
//! 2. a new socket is registered (accepted), sent its snapshot and its
//!    replay of `(after, published]` in one turn as well.
//!
//! So a new socket is either registered before a publish (and receives
//! exactly the events after `published`, which its replay did not include)
//! or after it (and its replay includes them): each event exactly once, in
//! order. Replay up to `published` rather than to the store's head keeps
//! this true even if a publish were ever deferred.
//!
//! [`publish`]: SessionHost::publish

pub(crate) mod browsers;
mod gateway;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use duraclaw_core::backend::actor::{Person, SessionActor, Subscription};
use duraclaw_core::backend::web::NewSession;
use duraclaw_core::protocol::{Close, Command, CommandResult, RuleEntry, Seq, ToGateway};
use duraclaw_core::store::{DynSessionStore, SessionDirectory, SessionMeta};
use duraclaw_host::backoff::Backoff;
use duraclaw_host::http::HttpError;
use duraclaw_host::ids;
use duraclaw_host::push::action::{self, ActionClaim};
use duraclaw_host::start::{self, StartPlan};
use futures::channel::oneshot;
use serde::{Deserialize, Serialize};
use worker::{Env, Request, Response, State, WebSocket, WebSocketIncomingMessage};

use crate::auth::{CfAuth, http_error, json_error};
use crate::clock::{WorkerClock, now_ms};
use crate::gateway_client::{self, REQUEST_TIMEOUT, within};
use crate::{DoSqlConn, DoSqlDirectory};

/// The storage key of the approval rules in force for the session.
const RULES_KEY: &str = "approval_rules";

/// How often a needed gateway link is pinged (and the object kept awake).
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// The first reconnect delay after a failure.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Events read from the store per replay or publish page.
const PAGE: usize = 512;
/// The most gateway events ingested in one step.
const MAX_BATCH: usize = 1024;
/// A frame on the gateway link within this many milliseconds of the last
/// ingest waits one trip through the event loop, so that a burst is
/// ingested in batches (one transaction and one ack each) instead of one
/// event at a time.
const BURST_WINDOW_MS: i64 = 2;
/// The most bytes a browser socket may hold queued after a publish (sent
/// by the object, not yet taken by the network): a browser that reads more
/// slowly than the session writes is closed with [`LAGGED_CLOSE`] past it,
/// and resumes with `after=<seq>` by replay, instead of the object's memory
/// growing without bound (128 MB for all its sockets). Well above a healthy
/// browser's backlog, and above the replay of an 80,000-event session, which
/// is queued at once when the socket opens.
pub const MAX_BROWSER_BUFFER: f64 = 16.0 * 1024.0 * 1024.0;
/// The close code of a browser socket that fell too far behind; the UI
/// reconnects at once with `after=` its last seq.
pub const LAGGED_CLOSE: u16 = 4000;

/// The header the Worker names the authenticated user in. Only the Worker
/// can reach a Durable Object, and it always sets this header itself.
pub const USER_HEADER: &str = "x-duraclaw-user";
/// The header the Worker names the session in.
pub const SESSION_HEADER: &str = "x-duraclaw-session";
/// The header the Worker names a WebSocket's login session in (its D1
/// digest, [`crate::auth::AuthUser::login`]).
pub const LOGIN_HEADER: &str = "x-duraclaw-login";

/// Who is on a browser socket; kept in its attachment across hibernation.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Attachment {
    pub(crate) user: String,
    pub(crate) client: String,
    /// The login session the socket was opened with (its D1 digest):
    /// checked before every command, and when the Worker says logins ended.
    pub(crate) login: String,
    /// The socket asked for every event (`compact=0`): its pages are not
    /// compacted either.
    #[serde(default)]
    pub(crate) full: bool,
    /// The socket asked for `compress=deflate-raw`: its pages go as
    /// binary frames.
    #[serde(default)]
    pub(crate) deflate: bool,
}

/// `POST /create` from the Worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    /// The new session's id.
    pub session_id: String,
    /// Its owner.
    pub owner: String,
    /// The approval rules in force for it from the start.
    #[serde(default)]
    pub rules: Vec<RuleEntry>,
    /// The user's request: worktree, first prompt, model.
    #[serde(flatten)]
    pub session: NewSession,
    /// A fork: the parent, the seq of its `user.message` forked from, and
    /// where the executor resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<CreateFork>,
}

/// The fork part of a [`CreateRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateFork {
    /// The parent session's id.
    pub parent: String,
    /// The seq of the parent's `user.message` forked from.
    pub seq: u64,
    /// Where the executor resumes.
    pub from: duraclaw_core::protocol::ForkFrom,
    /// The parent's origin ([`ForkPoint::origin`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// What a session's object answers on `/fork-point`: where a fork of it
/// resumes, and the worktree and model the fork starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForkPoint {
    /// Where the executor resumes.
    pub from: duraclaw_core::protocol::ForkFrom,
    /// The parent's worktree.
    pub worktree: String,
    /// The parent's model.
    pub model: Option<String>,
    /// The parent's origin (it runs in a new worktree made from there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The object route that finds a fork point (`?from_seq=N`).
pub const FORK_POINT_PATH: &str = "/fork-point";

/// The gateway link's socket while it is up.
struct LinkConn {
    ws: WebSocket,
    epoch: u64,
    last_pong_ms: i64,
}

#[derive(Default)]
struct Inner {
    directory: Option<DoSqlDirectory>,
    actor: Option<SessionActor>,
    published: Seq,
    /// The actor's log from `published` on: what an append stored, in
    /// seq order, without reading it back from SQL (a subscriber that
    /// fell behind catches up from the store by itself).
    live: Option<Subscription>,
    link: Option<LinkConn>,
    epoch: u64,
    link_error: Option<String>,
    /// Commands sent on the link and who waits for their results.
    commands: duraclaw_host::link::Link<oneshot::Sender<CommandResult>>,
    indexed: Option<String>,
    indexing: bool,
    nonce: u64,
}

/// A session's Durable Object, minus the `#[durable_object]` glue: build one
/// in the object's `new` and forward every handler to it.
pub struct SessionHost {
    state: State,
    env: Env,
    inner: RefCell<Inner>,
    /// Reconnect delays after failed connects.
    backoff: RefCell<Backoff>,
    connecting: futures::lock::Mutex<()>,
    /// Browser frames not yet handled, in arrival order: a command waits
    /// for its login check (a D1 read) and frames behind it wait for it, so
    /// every socket's frames are answered in the order sent.
    inbox: RefCell<VecDeque<(WebSocket, WebSocketIncomingMessage)>>,
    /// Whether a handler is draining `inbox`.
    draining: Cell<bool>,
    /// Tells the owner's object (the inbox) what was persisted.
    notifier: Rc<crate::user::Notifier>,
}

impl std::fmt::Debug for SessionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHost").finish_non_exhaustive()
    }
}

fn error_response(status: u16, message: &str) -> worker::Result<Response> {
    json_error(status, message)
}

fn core_error(err: &duraclaw_core::Error) -> worker::Result<Response> {
    http_error(&HttpError::from(err))
}

/// `/fork-point?from_seq=N`: where a fork from this session's
/// `user.message` N resumes (`duraclaw_host::fork`).
async fn fork_point(req: &Request, actor: &SessionActor) -> worker::Result<Response> {
    let from_seq = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "from_seq")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut scan = duraclaw_host::fork::ForkScan::new(from_seq);
    if let Err(e) =
        duraclaw_core::store::walk_log(actor.log().store().as_ref(), |seq, e| scan.feed(seq, e))
            .await
    {
        return core_error(&e);
    }
    match scan.finish() {
        Ok(from) => {
            let meta = actor.meta().await;
            Response::from_json(&ForkPoint {
                from,
                worktree: meta.worktree,
                model: meta.model,
                origin: meta.origin,
            })
        }
        Err(refused) => http_error(&refused),
    }
}

impl SessionHost {
    /// The host of the object with `state` and `env`. Opens nothing yet:
    /// `new` cannot fail, so opening (and a failed migration) waits for the
    /// first request, which then answers 500 with the reason.
    pub fn new(state: State, env: Env) -> Rc<SessionHost> {
        crate::logging::init();
        tracing::info!("session object started");
        let notifier = crate::user::Notifier::new(env.clone(), DoSqlConn::new(&state.storage()));
        Rc::new(SessionHost {
            notifier,
            state,
            env,
            inner: RefCell::new(Inner::default()),
            backoff: RefCell::new(Backoff::new(BACKOFF_FIRST, BACKOFF_CAP)),
            connecting: futures::lock::Mutex::new(()),
            inbox: RefCell::new(VecDeque::new()),
            draining: Cell::new(false),
        })
    }

    /// The object's state (its storage and accepted sockets).
    pub fn state(&self) -> &State {
        &self.state
    }

    fn directory(&self) -> duraclaw_core::Result<DoSqlDirectory> {
        if let Some(d) = &self.inner.borrow().directory {
            return Ok(d.clone());
        }
        let d = DoSqlDirectory::open(DoSqlConn::new(&self.state.storage()))?;
        self.inner.borrow_mut().directory = Some(d.clone());
        Ok(d)
    }

    /// The session's actor, woken from storage; `None` before the session
    /// was created.
    pub async fn actor(&self) -> duraclaw_core::Result<Option<SessionActor>> {
        if let Some(a) = &self.inner.borrow().actor {
            return Ok(Some(a.clone()));
        }
        let directory = self.directory()?;
        let Some(meta) = directory.list_all().await?.into_iter().next() else {
            return Ok(None);
        };
        let store: DynSessionStore = Arc::new(directory.open_store(&meta.session_id)?);
        self.install(store).await.map(Some)
    }

    async fn install(&self, store: DynSessionStore) -> duraclaw_core::Result<SessionActor> {
        let actor = SessionActor::open(store, WorkerClock::shared()).await?;
        let head = actor.log().store().head().await?;
        let mut inner = self.inner.borrow_mut();
        if let Some(a) = &inner.actor {
            return Ok(a.clone());
        }
        inner.published = head.last_seq;
        inner.live = Some(actor.log().subscribe(head.last_seq));
        inner.actor = Some(actor.clone());
        Ok(actor)
    }

    /// Publishes, then brings the D1 session index up to date when what it
    /// shows changed.
    async fn settle(&self, actor: &SessionActor) {
        self.publish(actor).await;
        self.index(actor).await;
    }

    /// Updates the D1 index when the state, cost, pending count, title or
    /// minute of last activity changed since the last update (not on every
    /// event). One update runs
    /// at a time and loops until the index shows the latest metadata, so a
    /// slow D1 write never leaves an older one last. `false` if D1 failed.
    async fn index(&self, actor: &SessionActor) -> bool {
        if std::mem::replace(&mut self.inner.borrow_mut().indexing, true) {
            return true;
        }
        let mut ok = true;
        loop {
            let meta = actor.meta().await;
            let key = index_key(&meta);
            if self.inner.borrow().indexed.as_deref() == Some(key.as_str()) {
                break;
            }
            let result = match CfAuth::from_env(&self.env) {
                Ok(auth) => auth.index_session(&meta).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => self.inner.borrow_mut().indexed = Some(key),
                Err(e) => {
                    tracing::warn!(session = %meta.session_id, error = %e, "cannot update the session index");
                    ok = false;
                    break;
                }
            }
        }
        self.inner.borrow_mut().indexing = false;
        ok
    }

    /// Answers a request from the Worker: `POST /create`, `GET /meta`,
    /// `POST /close`, `POST /act`, `GET /ws?after=<seq>` (a WebSocket upgrade). Never
    /// fails: an internal error is a JSON 500 with its reason.
    pub async fn fetch(self: &Rc<Self>, req: Request) -> worker::Result<Response> {
        match self.route(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::error!(error = %e, "session request failed");
                error_response(500, &format!("the session failed: {e}"))
            }
        }
    }

    async fn route(self: &Rc<Self>, mut req: Request) -> worker::Result<Response> {
        let path = req.path();
        let user = req.headers().get(USER_HEADER)?.unwrap_or_default();
        if path == "/create" {
            return self.create(req).await;
        }
        let actor = match self.actor().await {
            Ok(Some(a)) => a,
            Ok(None) => return error_response(404, "no such session"),
            Err(e) => return error_response(500, &format!("the session store failed: {e}")),
        };
        if actor.meta().await.owner != user {
            return error_response(404, "no such session");
        }
        match path.as_str() {
            "/meta" => Response::from_json(&actor.meta().await),
            "/close" => self.close(&actor, &user).await,
            "/ws" => self.accept_browser(&req, &actor, &user).await,
            crate::router::ACT_PATH => self.act(&mut req, &actor, &user).await,
            crate::router::LOGIN_ENDED_PATH => self.logins_ended().await,
            crate::rules::RULES_PATH => self.take_rules(req, &actor).await,
            FORK_POINT_PATH => fork_point(&req, &actor).await,
            other => error_response(404, &format!("no route {other}")),
        }
    }

    async fn create(self: &Rc<Self>, mut req: Request) -> worker::Result<Response> {
        let body: CreateRequest = match req.json().await {
            Ok(b) => b,
            Err(e) => return error_response(400, &format!("bad create request: {e}")),
        };
        if !ids::is_session_id(&body.session_id) {
            return error_response(400, "bad session id");
        }
        if let Err(e) = body.session.check(&body.owner) {
            return core_error(&e);
        }
        let (url, secret) = match self.gateway_config() {
            Ok(c) => c,
            Err(e) => return error_response(500, &e),
        };
        let worktrees = match gateway_client::list_worktrees(&url, &secret).await {
            Ok(w) => w,
            Err(e) => {
                return error_response(502, &format!("the gateway is unreachable: {e}"));
            }
        };
        if let Err(refused) = start::check_worktree(&body.session, &worktrees) {
            return http_error(&refused);
        }
        let directory = match self.directory() {
            Ok(d) => d,
            Err(e) => return error_response(500, &format!("the session store failed: {e}")),
        };
        if let Err(e) = self.keep_rules(&body.rules).await {
            return error_response(500, &format!("the session store failed: {e}"));
        }
        let mut plan = StartPlan::new(body.session, &body.owner, body.session_id, now_ms());
        if let Some(f) = body.fork {
            plan = plan
                .with_fork(&f.parent, f.seq, f.from)
                .with_origin(f.origin);
        }
        let store = match directory.create_store(plan.meta()) {
            Ok(s) => s,
            Err(e) => return core_error(&e),
        };
        let actor = match self.install(Arc::new(store)).await {
            Ok(a) => a,
            Err(e) => {
                self.undo_create(plan.session_id(), plan.owner()).await;
                return core_error(&e);
            }
        };
        let answer = self.start_created(&actor, &plan).await;
        if !matches!(&answer, Ok(r) if r.status_code() == 201) {
            // All or nothing: a start that failed leaves no session.
            self.undo_create(plan.session_id(), plan.owner()).await;
        }
        answer
    }

    /// Indexes a just created session and starts it on the gateway; `201`
    /// with its metadata, or the error to answer.
    async fn start_created(
        self: &Rc<Self>,
        actor: &SessionActor,
        plan: &StartPlan,
    ) -> worker::Result<Response> {
        // Indexed before anything else, so the owner can always reach it.
        if !self.index(actor).await {
            return error_response(500, "the session index (D1) cannot be written");
        }
        let (command_id, mut execute, who) = plan.execute();
        execute.rules = Some(self.kept_rules().await);
        let out = match actor.execute(&command_id, execute, &who).await {
            Ok(o) => o,
            Err(e) => return core_error(&e),
        };
        self.settle(actor).await;
        let (tx, rx) = oneshot::channel();
        let session_id = actor.session_id();
        self.inner
            .borrow_mut()
            .commands
            .wait(session_id, &command_id, tx);
        // Connecting sends the outbox, the execute included.
        if !out.forward.is_empty() {
            let _ = self.ensure_link(actor).await;
        }
        let result = within(REQUEST_TIMEOUT, rx).await;
        self.inner
            .borrow_mut()
            .commands
            .unwait(session_id, &command_id);
        let result = result.and_then(Result::ok);
        if let Err(refused) = plan.answer(result.as_ref()) {
            return http_error(&refused);
        }
        // Started, or not confirmed yet: the outbox resends it on reconnect.
        Ok(Response::from_json(&actor.meta().await)?.with_status(201))
    }

    /// Undoes a create: the session leaves the index and the object's
    /// storage, and the object forgets it.
    async fn undo_create(&self, session_id: &str, owner: &str) {
        let link = {
            let mut inner = self.inner.borrow_mut();
            inner.actor = None;
            inner.published = 0;
            inner.live = None;
            inner.indexed = None;
            inner.commands.on_closed();
            inner.link.take()
        };
        if let Some(l) = link {
            let _ = l.ws.close(Some(1000), Some("session not started"));
        }
        match self.directory() {
            Ok(d) => {
                if let Err(e) = d.remove(session_id).await {
                    tracing::warn!(session = session_id, error = %e, "cannot remove a session that did not start");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the session store"),
        }
        let unindexed = match CfAuth::from_env(&self.env) {
            Ok(auth) => auth.unindex_session(session_id, owner).await,
            Err(e) => Err(e),
        };
        if let Err(e) = unindexed {
            tracing::error!(session = session_id, error = %e, "cannot remove a session that did not start from the index");
        }
        self.notifier.forget();
        if let Err(e) = crate::user::session_removed(&self.env, owner, session_id).await {
            tracing::warn!(session = session_id, error = %e, "cannot remove a session that did not start from the inbox");
        }
    }

    /// `POST /act` from the Worker, which checked the token: the claim's
    /// decision applied as a browser's `answer` is
    /// (`duraclaw_host::push::action`).
    async fn act(
        self: &Rc<Self>,
        req: &mut Request,
        actor: &SessionActor,
        user: &str,
    ) -> worker::Result<Response> {
        let claim: ActionClaim = match req.json().await {
            Ok(c) => c,
            Err(e) => return error_response(400, &format!("bad action request: {e}")),
        };
        if claim.user != user || claim.session_id != actor.session_id() {
            return error_response(403, "this action is not for this user and session");
        }
        let id = action::command_id(&crate::router::new_session_id());
        let out = match self
            .apply_command(actor, &id, claim.command(), &claim.person())
            .await
        {
            Ok(o) => o,
            Err(e) => return core_error(&e),
        };
        match action::answer(&claim, &out) {
            Ok(body) => {
                tracing::info!(
                    session = %claim.session_id,
                    question = %claim.question_id,
                    user,
                    decision = claim.decision.name(),
                    "decided from a notification"
                );
                Response::from_json(&body)
            }
            Err(refused) => http_error(&refused),
        }
    }

    /// Keeps the rules in force for this session (they are sent to the
    /// gateway each time the link opens).
    async fn keep_rules(&self, rules: &[RuleEntry]) -> worker::Result<()> {
        self.state.storage().put(RULES_KEY, rules).await
    }

    /// The rules in force for this session (none kept: none).
    pub(super) async fn kept_rules(&self) -> Vec<RuleEntry> {
        match self.state.storage().get::<Vec<RuleEntry>>(RULES_KEY).await {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                // Unreadable: no rule decides; every call asks.
                tracing::warn!(error = %e, "the approval rules kept are unreadable");
                Vec::new()
            }
        }
    }

    /// The `rules` frame for this session.
    pub(super) async fn rules_frame(&self, actor: &SessionActor) -> ToGateway {
        ToGateway::Rules {
            session_id: actor.session_id().to_owned(),
            rules: self.kept_rules().await,
        }
    }

    /// `POST /rules` from the Worker: the rules now in force; kept, and
    /// sent at once when the link is up.
    async fn take_rules(&self, mut req: Request, actor: &SessionActor) -> worker::Result<Response> {
        #[derive(Deserialize)]
        struct Body {
            rules: Vec<RuleEntry>,
        }
        let body: Body = match req.json().await {
            Ok(b) => b,
            Err(e) => return error_response(400, &format!("bad rules: {e}")),
        };
        self.keep_rules(&body.rules).await?;
        let frame = self.rules_frame(actor).await;
        self.send_gateway(&[frame]);
        Response::empty().map(|r| r.with_status(204))
    }

    /// Adds the worktree rule an answer carries ("always allow for this
    /// worktree") for this session's worktree, tells the user's other
    /// sessions, and puts this session's new rules in force.
    async fn allow_worktree(
        &self,
        actor: &SessionActor,
        user: &str,
        answer: &duraclaw_core::protocol::Answer,
    ) -> Result<(), duraclaw_core::protocol::WireError> {
        use duraclaw_core::protocol::WireError;
        let meta = actor.meta().await;
        let rule = match duraclaw_host::rules::answer_rule(
            answer,
            &meta,
            crate::rules::new_rule_id(),
            now_ms(),
        ) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => return Err(WireError::new("bad_rule", e.message)),
        };
        let failed =
            |e: worker::Error| WireError::new("storage", format!("cannot add the rule: {e}"));
        let auth = CfAuth::from_env(&self.env).map_err(failed)?;
        match crate::rules::add(&self.env, &auth, user, vec![rule], Some(actor.session_id()))
            .await
            .map_err(failed)?
        {
            Ok(_) => {}
            Err(e) => return Err(WireError::new("bad_rule", e.message)),
        }
        let all = auth.rules(user).await.map_err(failed)?;
        let mine = duraclaw_host::rules::effective_for(&all, &meta);
        self.keep_rules(&mine).await.map_err(failed)?;
        let frame = self.rules_frame(actor).await;
        self.send_gateway(&[frame]);
        Ok(())
    }

    async fn close(self: &Rc<Self>, actor: &SessionActor, user: &str) -> worker::Result<Response> {
        let who = Person {
            user: user.to_owned(),
            client: Some("web".into()),
        };
        let id = ids::close_command_id(actor.session_id());
        let out = match actor.command(&id, Command::Close(Close {}), &who).await {
            Ok(o) => o,
            Err(e) => return core_error(&e),
        };
        self.settle(actor).await;
        self.forward(actor, &out.forward).await;
        Response::from_json(&actor.meta().await)
    }
}

/// What the index shows of a session: a change of any of these is written
/// to D1. Activity counts by the minute, so the list's "most recently
/// active first" stays close while a busy session writes D1 at most about
/// once a minute for it.
fn index_key(meta: &SessionMeta) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}|{:?}|{:?}",
        meta.updated_at_ms / 60_000,
        serde_json::to_string(&meta.state).unwrap_or_default(),
        meta.cost_usd,
        meta.pending_questions,
        meta.title,
        meta.worktree,
        meta.model,
        meta.executor_session_id
    )
}
