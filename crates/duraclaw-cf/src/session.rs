//! [`SessionHost`]: the body of a session's Durable Object (SessionDO).
//!
//! One Durable Object holds one session (named by the session id). The host
//! opens core's [`SessionActor`] over the object's own SQLite
//! ([`DoSqlDirectory`]), so ordering, idempotence, acks, decisions and the
//! command outbox are core's, exactly as in the local orchestrator; this
//! module only connects the actor to the two links:
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
//!   `CC_GATEWAY_URL` with `CC_GATEWAY_SECRET` as a bearer token. On open it
//!   sends the actor's `on_gateway_connected` frames (every unconfirmed
//!   command, then attach after the highest persisted gseq); events are
//!   ingested in batches (while they flow, the reader lets the frames that
//!   arrive meanwhile join one batch: one transaction, one ack), published
//!   and acked. An open outbound socket does
//!   not keep a Durable Object alive, so while the session needs its link a
//!   heartbeat alarm pings it every [`HEARTBEAT`] and reconnects when it is
//!   gone; a failed connect retries by alarm with capped exponential
//!   backoff. While the link is down the session shows
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

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use duraclaw_core::actor::{Actor, SessionActor};
use duraclaw_core::protocol::{
    Close, Command, CommandResult, Event, FromBrowser, FromGateway, Gseq, Hello,
    MAX_SESSION_ID_BYTES, Role, Seq, ToBrowser, ToGateway, WireError, browser_event_frame,
    encode_frame,
};
use duraclaw_core::state::{PauseReason, SessionInput, SessionState};
use duraclaw_core::store::{DynSessionStore, SessionDirectory, SessionMeta};
use duraclaw_core::web::{
    LOGIN_ENDED_CLOSE, LOGIN_ENDED_MESSAGE, LOGIN_ENDED_REASON, NewSession, socket,
};
use futures::FutureExt;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use serde::{Deserialize, Serialize};
use worker::{
    Date, Env, Request, Response, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::auth::{CfAuth, json_error};
use crate::gateway_client::{self, GatewayConn, LinkEvent, REQUEST_TIMEOUT, within};
use crate::{DoSqlConn, DoSqlDirectory};

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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    i64::try_from(Date::now().as_millis()).unwrap_or(i64::MAX)
}

/// Who is on a browser socket; kept in its attachment across hibernation.
#[derive(Clone, Serialize, Deserialize)]
struct Attachment {
    user: String,
    client: String,
    /// The login session the socket was opened with (its D1 digest):
    /// checked before every command, and when the Worker says logins ended.
    login: String,
}

/// `POST /create` from the Worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    /// The new session's id.
    pub session_id: String,
    /// Its owner.
    pub owner: String,
    /// The user's request: worktree, first prompt, model.
    #[serde(flatten)]
    pub session: NewSession,
}

struct Link {
    ws: WebSocket,
    epoch: u64,
    last_pong_ms: i64,
}

#[derive(Default)]
struct Inner {
    directory: Option<DoSqlDirectory>,
    actor: Option<SessionActor>,
    published: Seq,
    link: Option<Link>,
    epoch: u64,
    failures: u32,
    link_error: Option<String>,
    waiters: HashMap<String, oneshot::Sender<CommandResult>>,
    /// Commands sent on the link, by their id there: whether each starts a
    /// turn.
    sent: HashMap<String, bool>,
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
    connecting: futures::lock::Mutex<()>,
    /// Browser frames not yet handled, in arrival order: a command waits
    /// for its login check (a D1 read) and frames behind it wait for it, so
    /// every socket's frames are answered in the order sent.
    inbox: RefCell<VecDeque<(WebSocket, WebSocketIncomingMessage)>>,
    /// Whether a handler is draining `inbox`.
    draining: Cell<bool>,
}

impl std::fmt::Debug for SessionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHost").finish_non_exhaustive()
    }
}

fn error_response(status: u16, message: &str) -> worker::Result<Response> {
    json_error(status, message)
}

/// The status and message the local orchestrator answers for a core error.
pub fn error_status(err: &duraclaw_core::Error) -> (u16, String) {
    use duraclaw_core::Error as E;
    match err {
        E::Decode { .. } | E::Invalid(_) => (400, err.to_string()),
        E::TooLarge { .. } => (413, err.to_string()),
        E::NotFound { .. } => (404, err.to_string()),
        E::AlreadyExists { .. } | E::IllegalTransition { .. } => (409, err.to_string()),
        E::Unauthorized(m) => (401, m.clone()),
        E::UnsupportedVersion { .. } | E::Closed(_) => (502, err.to_string()),
        E::Executor(_) => (503, err.to_string()),
        E::Timeout { .. } => (504, err.to_string()),
        _ => {
            tracing::error!(error = %err, "request failed on a server error");
            (
                500,
                "internal server error; the server log has the details".into(),
            )
        }
    }
}

fn core_error(err: &duraclaw_core::Error) -> worker::Result<Response> {
    let (status, message) = error_status(err);
    error_response(status, &message)
}

fn send_browser(ws: &WebSocket, frame: &ToBrowser) {
    match encode_frame(frame) {
        Ok(text) => {
            let _ = ws.send_with_str(text);
        }
        Err(e) => tracing::error!(error = %e, "a browser frame does not encode"),
    }
}

/// Sends `refusal`'s error frame, then closes the socket with its code.
fn refuse(ws: &WebSocket, refusal: socket::Refusal) {
    tracing::info!(code = %refusal.error.code, close = refusal.close_code, "browser socket refused");
    send_browser(ws, &ToBrowser::Error(refusal.error));
    let _ = ws.close(Some(refusal.close_code), Some(refusal.close_reason));
}

/// The bytes `ws` holds queued for the network (`WebSocket.bufferedAmount`,
/// which workerd implements on server sockets, hibernatable ones included);
/// `None` where the runtime does not say.
fn buffered_amount(ws: &WebSocket) -> Option<f64> {
    let raw: &web_sys::WebSocket = ws.as_ref();
    worker::js_sys::Reflect::get(raw, &wasm_bindgen::JsValue::from_str("bufferedAmount"))
        .ok()?
        .as_f64()
}

fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.min(10);
    (BACKOFF_FIRST * factor).min(BACKOFF_CAP)
}

/// Whether the session needs its gateway link: something unconfirmed is in
/// its outbox, or it is neither over nor idle.
async fn needs_link(actor: &SessionActor) -> bool {
    let unconfirmed = match actor.log().store().unforwarded().await {
        Ok(list) => !list.is_empty(),
        Err(_) => true,
    };
    let state = actor.meta().await.state;
    unconfirmed
        || !matches!(
            state,
            SessionState::Terminated
                | SessionState::Paused {
                    reason: PauseReason::Idle
                }
        )
}

impl SessionHost {
    /// The host of the object with `state` and `env`. Opens nothing yet:
    /// `new` cannot fail, so opening (and a failed migration) waits for the
    /// first request, which then answers 500 with the reason.
    pub fn new(state: State, env: Env) -> Rc<SessionHost> {
        crate::logging::init();
        tracing::info!("session object started");
        Rc::new(SessionHost {
            state,
            env,
            inner: RefCell::new(Inner::default()),
            connecting: futures::lock::Mutex::new(()),
            inbox: RefCell::new(VecDeque::new()),
            draining: Cell::new(false),
        })
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
        let actor = SessionActor::open(store).await?;
        let head = actor.log().store().head().await?;
        let mut inner = self.inner.borrow_mut();
        if let Some(a) = &inner.actor {
            return Ok(a.clone());
        }
        inner.published = head.last_seq;
        inner.actor = Some(actor.clone());
        Ok(actor)
    }

    /// Sends every event after `published` to every browser socket.
    pub async fn publish(&self, actor: &SessionActor) {
        loop {
            let from = self.inner.borrow().published;
            let page = match actor.log().store().read_after(from, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(session = actor.session_id(), error = %e, "cannot read the log to publish");
                    return;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                return;
            };
            let frames: Vec<String> = page
                .iter()
                .map(|e| browser_event_frame(e.seq, &e.json))
                .collect();
            let sockets = self.state.get_websockets();
            tracing::debug!(sockets = sockets.len(), events = frames.len(), "publish");
            for ws in sockets {
                for frame in &frames {
                    if ws.send_with_str(frame).is_err() {
                        break;
                    }
                }
                if let Some(queued) = buffered_amount(&ws)
                    && queued > MAX_BROWSER_BUFFER
                {
                    tracing::info!(
                        session = actor.session_id(),
                        queued_bytes = queued,
                        "slow browser closed: it resumes by replay"
                    );
                    let _ = ws.close(
                        Some(LAGGED_CLOSE),
                        Some("lagged: reconnect with after=<the last seq you have>"),
                    );
                }
            }
            self.inner.borrow_mut().published = last;
            if page.len() < PAGE {
                return;
            }
        }
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
    /// `POST /close`, `GET /ws?after=<seq>` (a WebSocket upgrade). Never
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

    async fn route(self: &Rc<Self>, req: Request) -> worker::Result<Response> {
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
            crate::router::LOGIN_ENDED_PATH => self.logins_ended().await,
            other => error_response(404, &format!("no route {other}")),
        }
    }

    async fn create(self: &Rc<Self>, mut req: Request) -> worker::Result<Response> {
        let body: CreateRequest = match req.json().await {
            Ok(b) => b,
            Err(e) => return error_response(400, &format!("bad create request: {e}")),
        };
        if body.session_id.is_empty() || body.session_id.len() > MAX_SESSION_ID_BYTES {
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
        let Some(wt) = worktrees.iter().find(|w| w.path == body.session.worktree) else {
            return error_response(
                400,
                &format!(
                    "{} is not a worktree the gateway offers",
                    body.session.worktree
                ),
            );
        };
        if let Some(holder) = &wt.busy_session {
            return error_response(409, &duraclaw_core::web::worktree_busy(&wt.path, holder));
        }
        let directory = match self.directory() {
            Ok(d) => d,
            Err(e) => return error_response(500, &format!("the session store failed: {e}")),
        };
        let now = now_ms();
        let meta = body.session.meta(&body.session_id, &body.owner, now);
        let store = match directory.create_store(meta) {
            Ok(s) => s,
            Err(e) => return core_error(&e),
        };
        let actor = match self.install(Arc::new(store)).await {
            Ok(a) => a,
            Err(e) => {
                self.undo_create(&body.session_id, &body.owner).await;
                return core_error(&e);
            }
        };
        let (id, owner) = (body.session_id.clone(), body.owner.clone());
        let answer = self.start_created(&actor, body, now).await;
        if !matches!(&answer, Ok(r) if r.status_code() == 201) {
            // All or nothing: a start that failed leaves no session.
            self.undo_create(&id, &owner).await;
        }
        answer
    }

    /// Indexes a just created session and starts it on the gateway; `201`
    /// with its metadata, or the error to answer.
    async fn start_created(
        self: &Rc<Self>,
        actor: &SessionActor,
        body: CreateRequest,
        now: i64,
    ) -> worker::Result<Response> {
        // Indexed before anything else, so the owner can always reach it.
        if !self.index(actor).await {
            return error_response(500, "the session index (D1) cannot be written");
        }
        let who = Actor {
            user: body.owner.clone(),
            client: Some("web".into()),
        };
        let command_id = format!("execute-{}", body.session_id);
        let out = match actor
            .execute(&command_id, body.session.into_execute(), &who, now)
            .await
        {
            Ok(o) => o,
            Err(e) => return core_error(&e),
        };
        self.settle(actor).await;
        let (tx, rx) = oneshot::channel();
        self.inner
            .borrow_mut()
            .waiters
            .insert(command_id.clone(), tx);
        // Connecting sends the outbox, the execute included.
        if !out.forward.is_empty() {
            let _ = self.ensure_link(actor).await;
        }
        let result = within(REQUEST_TIMEOUT, rx).await;
        self.inner.borrow_mut().waiters.remove(&command_id);
        if let Some(Ok(result)) = result
            && !result.ok
        {
            let err = result
                .error
                .unwrap_or_else(|| WireError::new("gateway", "refused"));
            tracing::info!(session = actor.session_id(), code = %err.code, "the gateway refused to start the session");
            let status = match err.code.as_str() {
                "worktree_busy" => 409,
                "invalid" | "not_found" => 400,
                "executor" | "executor_unsupported" => 503,
                _ => 502,
            };
            return error_response(status, &err.message);
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
            inner.indexed = None;
            inner.waiters.clear();
            inner.sent.clear();
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
    }

    async fn close(self: &Rc<Self>, actor: &SessionActor, user: &str) -> worker::Result<Response> {
        let who = Actor {
            user: user.to_owned(),
            client: Some("web".into()),
        };
        let id = format!("close-{}", actor.session_id());
        let out = match actor
            .command(&id, Command::Close(Close {}), &who, now_ms())
            .await
        {
            Ok(o) => o,
            Err(e) => return core_error(&e),
        };
        self.settle(actor).await;
        self.forward(actor, &out.forward).await;
        Response::from_json(&actor.meta().await)
    }

    /// The Worker says some of the owner's logins ended: closes every socket
    /// whose login is no longer live with [`LOGIN_ENDED_CLOSE`] (one D1 read
    /// per distinct login).
    async fn logins_ended(&self) -> worker::Result<Response> {
        let auth = CfAuth::from_env(&self.env)?;
        let mut checked: HashMap<String, bool> = HashMap::new();
        let mut closed = 0u32;
        for ws in self.state.get_websockets() {
            let login = match ws.deserialize_attachment::<Attachment>() {
                Ok(Some(a)) => a.login,
                _ => continue,
            };
            let alive = match checked.get(&login) {
                Some(alive) => *alive,
                None => {
                    let alive = auth.login_alive(&login).await?;
                    checked.insert(login, alive);
                    alive
                }
            };
            if !alive {
                let _ = ws.close(Some(LOGIN_ENDED_CLOSE), Some(LOGIN_ENDED_REASON));
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::info!(sockets = closed, "login ended: sockets closed");
        }
        Response::empty().map(|r| r.with_status(204))
    }

    /// Accepts a browser's hibernatable socket and sends it hello, snapshot
    /// and its replay, all in this one turn (see the module docs).
    async fn accept_browser(
        self: &Rc<Self>,
        req: &Request,
        actor: &SessionActor,
        user: &str,
    ) -> worker::Result<Response> {
        let after: Seq = match req
            .url()?
            .query_pairs()
            .find(|(k, _)| k == "after")
            .map(|(_, v)| v.parse::<Seq>())
        {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return error_response(400, "after must be a non-negative integer");
            }
        };
        let Some(login) = req.headers().get(LOGIN_HEADER)?.filter(|l| !l.is_empty()) else {
            return error_response(400, "the Worker named no login for this socket");
        };
        let pair = WebSocketPair::new()?;
        let ws = pair.server;
        let nonce = {
            let mut inner = self.inner.borrow_mut();
            inner.nonce += 1;
            inner.nonce
        };
        let client = format!("web {:06x}", (now_ms() as u64 ^ (nonce << 20)) & 0xff_ffff);
        ws.serialize_attachment(Attachment {
            user: user.to_owned(),
            client,
            login,
        })?;
        // From here to the end of the replay no promise is awaited: the
        // store is synchronous, so no publish can run in between.
        self.state.accept_websocket_with_tags(&ws, &[]);
        send_browser(&ws, &ToBrowser::Hello(Hello::new(Role::Orchestrator)));
        match actor.snapshot().await {
            Ok(s) => match socket::check_resume(after, s.last_seq) {
                Ok(()) => send_browser(&ws, &ToBrowser::Snapshot(s)),
                Err(refusal) => {
                    tracing::info!(
                        session = actor.session_id(),
                        after,
                        "session stream refused: ahead of the log"
                    );
                    refuse(&ws, refusal);
                    return Response::from_websocket(pair.client);
                }
            },
            Err(e) => {
                send_browser(&ws, &ToBrowser::Error(WireError::from(&e)));
                let _ = ws.close(Some(1011), Some("snapshot failed"));
                return Response::from_websocket(pair.client);
            }
        }
        let fence = self.inner.borrow().published;
        let mut delivered = after;
        while delivered < fence {
            let want = usize::try_from(fence - delivered).unwrap_or(PAGE).min(PAGE);
            match actor.log().store().read_after(delivered, want).await {
                Ok(page) if !page.is_empty() => {
                    for e in page.iter().filter(|e| e.seq <= fence) {
                        let _ = ws.send_with_str(browser_event_frame(e.seq, &e.json));
                        delivered = e.seq;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    send_browser(&ws, &ToBrowser::Error(WireError::from(&e)));
                    let _ = ws.close(Some(1011), Some("replay failed"));
                    break;
                }
            }
        }
        // A browser watching a session that needs its gateway link: make
        // sure it is up (after a restart the alarm would do it too).
        if self.inner.borrow().link.is_none() && needs_link(actor).await {
            let host = self.clone();
            let actor = actor.clone();
            worker::wasm_bindgen_futures::spawn_local(async move {
                let _ = host.ensure_link(&actor).await;
            });
        }
        Response::from_websocket(pair.client)
    }

    /// A frame from a browser socket: queued, and handled after every
    /// frame that arrived before it (the handler that finds the queue idle
    /// drains it).
    pub async fn websocket_message(
        self: &Rc<Self>,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        self.inbox.borrow_mut().push_back((ws, message));
        if self.draining.replace(true) {
            return Ok(());
        }
        loop {
            let next = self.inbox.borrow_mut().pop_front();
            let Some((ws, message)) = next else { break };
            if let Err(e) = self.browser_frame(ws, message).await {
                tracing::error!(error = %e, "a browser frame failed");
            }
        }
        self.draining.set(false);
        Ok(())
    }

    /// Handles one browser frame.
    async fn browser_frame(
        self: &Rc<Self>,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        tracing::debug!("browser frame");
        let text = match message {
            WebSocketIncomingMessage::String(t) => t,
            WebSocketIncomingMessage::Binary(_) => {
                refuse(&ws, socket::refuse_binary());
                return Ok(());
            }
        };
        if let Err(refusal) = socket::check_text(text.len()) {
            refuse(&ws, refusal);
            return Ok(());
        }
        let frame =
            match duraclaw_core::protocol::decode_frame::<FromBrowser>(&text, "browser frame") {
                Ok(f) => f,
                Err(e) => {
                    send_browser(&ws, &ToBrowser::Error(WireError::from(&e)));
                    return Ok(());
                }
            };
        match frame {
            FromBrowser::Ping { nonce } => send_browser(&ws, &ToBrowser::Pong { nonce }),
            FromBrowser::Hello(h) => {
                if let Err(e) = h.check_version() {
                    send_browser(&ws, &ToBrowser::Error(WireError::from(&e)));
                }
            }
            FromBrowser::Command { id, command } => {
                self.browser_command(&ws, id, command).await;
            }
            _ => {}
        }
        Ok(())
    }

    async fn browser_command(self: &Rc<Self>, ws: &WebSocket, id: String, command: Command) {
        tracing::debug!(command = %id, "browser command");
        let (who, login) = match ws.deserialize_attachment::<Attachment>() {
            Ok(Some(a)) => (
                Actor {
                    user: a.user,
                    client: Some(a.client),
                },
                a.login,
            ),
            _ => {
                send_browser(
                    ws,
                    &ToBrowser::Error(WireError::new("invalid", "this socket has no user")),
                );
                let _ = ws.close(Some(1008), Some("no user"));
                return;
            }
        };
        // A command racing a revocation: refused, and the socket ends.
        let alive = match CfAuth::from_env(&self.env) {
            Ok(auth) => auth.login_alive(&login).await,
            Err(e) => Err(e),
        };
        let refusal = match alive {
            Ok(true) => None,
            Ok(false) => Some(duraclaw_core::Error::Unauthorized(
                LOGIN_ENDED_MESSAGE.into(),
            )),
            Err(e) => Some(duraclaw_core::Error::Storage {
                backend: "d1",
                reason: format!("cannot check the login: {e}"),
            }),
        };
        if let Some(e) = refusal {
            send_browser(
                ws,
                &ToBrowser::CommandResult(CommandResult {
                    id,
                    ok: false,
                    error: Some(WireError::from(&e)),
                }),
            );
            if matches!(e, duraclaw_core::Error::Unauthorized(_)) {
                let _ = ws.close(Some(LOGIN_ENDED_CLOSE), Some(LOGIN_ENDED_REASON));
            }
            return;
        }
        let actor = match self.actor().await {
            Ok(Some(a)) => a,
            Ok(None) => {
                let _ = ws.close(Some(1011), Some("no such session"));
                return;
            }
            Err(e) => {
                send_browser(ws, &ToBrowser::Error(WireError::from(&e)));
                return;
            }
        };
        let forward = match actor.command(&id, command, &who, now_ms()).await {
            Ok(out) => {
                self.publish(&actor).await;
                send_browser(ws, &ToBrowser::CommandResult(out.result));
                out.forward
            }
            Err(e) => {
                let r = CommandResult {
                    id,
                    ok: false,
                    error: Some(WireError::from(&e)),
                };
                send_browser(ws, &ToBrowser::CommandResult(r));
                Vec::new()
            }
        };
        // Answered: what follows (a gateway connect, a D1 write) does not
        // hold up the frames queued behind this one.
        let host = self.clone();
        worker::wasm_bindgen_futures::spawn_local(async move {
            host.forward(&actor, &forward).await;
            host.index(&actor).await;
        });
    }

    /// Sends frames to the gateway now if the link is up, else connects
    /// (which sends the whole outbox, these included).
    async fn forward(self: &Rc<Self>, actor: &SessionActor, frames: &[ToGateway]) {
        if frames.is_empty() {
            return;
        }
        let up = self.inner.borrow().link.is_some();
        if up {
            self.send_gateway(frames);
        } else {
            let _ = self.ensure_link(actor).await;
        }
    }

    fn gateway_config(&self) -> Result<(String, String), String> {
        let url = self
            .env
            .var("CC_GATEWAY_URL")
            .map(|v| v.to_string())
            .map_err(|_| "CC_GATEWAY_URL is not set".to_owned())?;
        let secret = self
            .env
            .secret("CC_GATEWAY_SECRET")
            .map(|v| v.to_string())
            .map_err(|_| "the secret CC_GATEWAY_SECRET is not set".to_owned())?;
        Ok((url, secret))
    }

    /// Opens the gateway link unless it is up. On failure the session is
    /// marked `gateway_unreachable` (when it needs the link) and a retry is
    /// scheduled by alarm with backoff.
    pub async fn ensure_link(self: &Rc<Self>, actor: &SessionActor) -> Result<(), String> {
        if self.inner.borrow().link.is_some() {
            return Ok(());
        }
        let _one = self.connecting.lock().await;
        if self.inner.borrow().link.is_some() {
            return Ok(());
        }
        let (url, secret) = self.gateway_config()?;
        match GatewayConn::connect(&url, &secret).await {
            Ok(conn) => {
                let epoch = {
                    let mut inner = self.inner.borrow_mut();
                    inner.epoch += 1;
                    inner.failures = 0;
                    inner.link_error = None;
                    inner.link = Some(Link {
                        ws: conn.socket().clone(),
                        epoch: inner.epoch,
                        last_pong_ms: now_ms(),
                    });
                    inner.epoch
                };
                tracing::info!(session = actor.session_id(), "gateway link up");
                let GatewayConn { events, .. } = conn;
                let host = self.clone();
                worker::wasm_bindgen_futures::spawn_local(async move {
                    host.read_link(events, epoch).await;
                });
                self.on_connected(actor).await;
                self.set_alarm(HEARTBEAT).await;
                Ok(())
            }
            Err(e) => {
                let failures = {
                    let mut inner = self.inner.borrow_mut();
                    inner.failures = inner.failures.saturating_add(1);
                    inner.link_error = Some(e.0.clone());
                    inner.failures
                };
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(session = actor.session_id(), error = %e, failures, "gateway unreachable");
                }
                self.link_down(actor).await;
                self.set_alarm(backoff(failures - 1)).await;
                Err(e.0)
            }
        }
    }

    /// Marks the session `gateway_unreachable` if it needs its link.
    async fn link_down(&self, actor: &SessionActor) {
        if !needs_link(actor).await {
            return;
        }
        let state = actor.meta().await.state;
        if state != SessionState::Terminated
            && state != SessionState::paused(PauseReason::GatewayUnreachable)
        {
            if let Err(e) = actor.apply_input(SessionInput::GatewayLost, now_ms()).await {
                tracing::warn!(error = %e, "cannot mark the gateway lost");
            }
            self.settle(actor).await;
        }
    }

    async fn on_connected(&self, actor: &SessionActor) {
        let state = actor.meta().await.state;
        if state == SessionState::paused(PauseReason::GatewayUnreachable) {
            match actor.resumption().await {
                Ok(resume) => {
                    if let Err(e) = actor
                        .apply_input(SessionInput::GatewayRestored { resume }, now_ms())
                        .await
                    {
                        tracing::warn!(error = %e, "cannot mark the gateway restored");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot tell how to resume"),
            }
            self.settle(actor).await;
        }
        let frames = match actor.on_gateway_connected().await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        self.send_gateway(&frames);
    }

    /// Sends frames on the link, if it is up. A command's id is qualified
    /// with the session on the link (`<session>/<id>`, the same on every
    /// resend), as the local orchestrator does: ids are unique per session
    /// only, and the gateway serves many sessions.
    fn send_gateway(&self, frames: &[ToGateway]) {
        let ws = self.inner.borrow().link.as_ref().map(|l| l.ws.clone());
        if let Some(ws) = ws {
            for f in frames {
                let f = match f {
                    ToGateway::Command(env) => {
                        let mut env = env.clone();
                        let link_id = format!("{}/{}", env.session_id, env.id);
                        let starts_turn = matches!(
                            env.command,
                            Command::Message(_) | Command::Execute(_) | Command::Resume(_)
                        );
                        self.inner
                            .borrow_mut()
                            .sent
                            .insert(link_id.clone(), starts_turn);
                        env.id = link_id;
                        ToGateway::Command(env)
                    }
                    other => other.clone(),
                };
                if let Err(e) = gateway_client::send(&ws, &f) {
                    tracing::warn!(error = %e, "cannot send to the gateway");
                    break;
                }
            }
        }
    }

    async fn set_alarm(&self, after: Duration) {
        if let Err(e) = self.state.storage().set_alarm(after).await {
            tracing::error!(error = %e, "cannot set the alarm");
        }
    }

    async fn read_link(self: Rc<Self>, mut events: mpsc::UnboundedReceiver<LinkEvent>, epoch: u64) {
        let mut flowing_until = i64::MIN;
        let why = loop {
            let Some(first) = events.next().await else {
                break "the link ended".to_owned();
            };
            // Group commit: every message on the link is its own input
            // event, so the batch would almost always be one frame, and each
            // event its own transaction, commit and ack. While frames are
            // flowing (one arrived within BURST_WINDOW_MS of the last
            // ingest), one trip through the event loop lets those that
            // arrive meanwhile join this batch; a lone event is not delayed.
            if now_ms() <= flowing_until {
                worker::Delay::from(Duration::ZERO).await;
            }
            let mut frames = vec![first];
            while frames.len() < MAX_BATCH {
                match events.next().now_or_never() {
                    Some(Some(ev)) => frames.push(ev),
                    _ => break,
                }
            }
            let actor = match self.actor().await {
                Ok(Some(a)) => a,
                _ => break "the session is gone".to_owned(),
            };
            let mut batch: Vec<(Gseq, Event)> = Vec::new();
            let mut closed = None;
            for ev in frames {
                match ev {
                    LinkEvent::Frame(FromGateway::Event {
                        session_id,
                        gseq,
                        event,
                    }) => {
                        if session_id == actor.session_id() {
                            batch.push((gseq, event));
                        }
                    }
                    LinkEvent::Frame(other) => {
                        self.ingest(&actor, std::mem::take(&mut batch)).await;
                        self.handle_frame(&actor, other).await;
                    }
                    LinkEvent::Closed(why) => {
                        closed = Some(why);
                        break;
                    }
                }
            }
            self.ingest(&actor, batch).await;
            flowing_until = now_ms().saturating_add(BURST_WINDOW_MS);
            if let Some(why) = closed {
                break why;
            }
        };
        self.link_lost(epoch, &why).await;
    }

    async fn ingest(&self, actor: &SessionActor, batch: Vec<(Gseq, Event)>) {
        if batch.is_empty() {
            return;
        }
        match actor.ingest(batch, now_ms()).await {
            Ok(out) => {
                tracing::debug!(
                    session = actor.session_id(),
                    stored = out.stored,
                    ack = out.ack,
                    "ingested"
                );
                // Persisted and published in this turn; then acked.
                self.publish(actor).await;
                let mut frames = vec![ToGateway::Ack {
                    session_id: actor.session_id().to_owned(),
                    gseq: out.ack,
                }];
                if out.gap_at.is_some() {
                    frames.push(ToGateway::Attach {
                        session_id: actor.session_id().to_owned(),
                        after_gseq: out.ack,
                    });
                }
                self.send_gateway(&frames);
                self.index(actor).await;
            }
            Err(e) => {
                // Not acked: the gateway keeps them and a re-attach resends.
                tracing::error!(session = actor.session_id(), error = %e, "cannot persist gateway events");
            }
        }
    }

    async fn handle_frame(&self, actor: &SessionActor, frame: FromGateway) {
        match frame {
            FromGateway::CommandResult(mut r) => {
                let link_id = std::mem::take(&mut r.id);
                let starts_turn = self.inner.borrow_mut().sent.remove(&link_id);
                let prefix = format!("{}/", actor.session_id());
                let Some(id) = link_id.strip_prefix(&prefix) else {
                    tracing::debug!(command = %link_id, "a result for another session's command");
                    return;
                };
                r.id = id.to_owned();
                if let Err(e) = actor.on_command_result(&r).await {
                    tracing::warn!(error = %e, "cannot record a command result");
                }
                let waited = self.inner.borrow().waiters.contains_key(&r.id);
                if !r.ok {
                    tracing::info!(command = %r.id, error = ?r.error, "the gateway refused a command");
                    // The user's turn is in the log; its end is this refusal
                    // (a waiting create undoes its session itself).
                    if starts_turn == Some(true) && !waited {
                        self.end_refused_turn(actor, &r).await;
                    }
                }
                if r.ok && r.id.starts_with("execute-") {
                    // Started: stream its events (the attach sent on
                    // connect may have come before the session existed).
                    match actor.log().store().head().await {
                        Ok(head) => self.send_gateway(&[ToGateway::Attach {
                            session_id: actor.session_id().to_owned(),
                            after_gseq: head.highest_gseq,
                        }]),
                        Err(e) => tracing::error!(error = %e, "cannot read the log head"),
                    }
                }
                let waiter = self.inner.borrow_mut().waiters.remove(&r.id);
                if let Some(w) = waiter {
                    let _ = w.send(r);
                }
            }
            FromGateway::Pong { .. } => {
                if let Some(l) = self.inner.borrow_mut().link.as_mut() {
                    l.last_pong_ms = now_ms();
                }
            }
            FromGateway::Error(e) => {
                tracing::info!(code = %e.code, message = %e.message, "the gateway reported an error");
            }
            _ => {}
        }
    }

    /// Logs a refused turn's end, as the local orchestrator does.
    async fn end_refused_turn(&self, actor: &SessionActor, r: &CommandResult) {
        if let Err(e) = actor.end_refused_turn(r, now_ms()).await {
            tracing::warn!(error = %e, "cannot end a refused turn");
        }
        self.settle(actor).await;
    }

    async fn link_lost(self: &Rc<Self>, epoch: u64, why: &str) {
        let current = {
            let mut inner = self.inner.borrow_mut();
            if inner.link.as_ref().is_some_and(|l| l.epoch == epoch) {
                inner.link = None;
                inner.link_error = Some(why.to_owned());
                inner.waiters.clear();
                inner.sent.clear();
                true
            } else {
                false
            }
        };
        if !current {
            return;
        }
        tracing::warn!(reason = %why, "gateway link lost");
        if let Ok(Some(actor)) = self.actor().await {
            self.link_down(&actor).await;
            if needs_link(&actor).await {
                self.set_alarm(BACKOFF_FIRST).await;
            }
        }
    }

    /// The alarm: reconnects a needed link that is gone, pings one that is
    /// up, and lets the link go when the session no longer needs it.
    pub async fn alarm(self: &Rc<Self>) -> worker::Result<Response> {
        tracing::debug!("alarm");
        let actor = match self.actor().await {
            Ok(Some(a)) => a,
            Ok(None) => return Response::ok("no session"),
            Err(e) => return Response::error(format!("the session store failed: {e}"), 500),
        };
        if !needs_link(&actor).await {
            let link = self.inner.borrow_mut().link.take();
            if let Some(l) = link {
                let _ = l.ws.close(Some(1000), Some("idle"));
            }
            return Response::ok("idle");
        }
        let link = self
            .inner
            .borrow()
            .link
            .as_ref()
            .map(|l| (l.ws.clone(), l.epoch, l.last_pong_ms));
        if let Some((ws, epoch, last_pong)) = link {
            let stale = now_ms() - last_pong > 2 * HEARTBEAT.as_millis() as i64 + 5_000;
            let nonce = {
                let mut inner = self.inner.borrow_mut();
                inner.nonce += 1;
                inner.nonce
            };
            if !stale && gateway_client::send(&ws, &ToGateway::Ping { nonce }).is_ok() {
                self.set_alarm(HEARTBEAT).await;
                return Response::ok("pinged");
            }
            let _ = ws.close(Some(1001), Some("no pong"));
            self.link_lost(epoch, "the gateway stopped answering pings")
                .await;
        }
        match self.ensure_link(&actor).await {
            Ok(()) => Response::ok("connected"),
            Err(_) => Response::ok("retrying"),
        }
    }

    /// A browser socket closed: complete the close handshake.
    pub async fn websocket_close(&self, ws: WebSocket, code: usize) -> worker::Result<()> {
        let code = u16::try_from(code)
            .ok()
            .filter(|c| (1000..5000).contains(c) && ![1005, 1006, 1015].contains(c))
            .unwrap_or(1000);
        let _ = ws.close(Some(code), Some("bye"));
        Ok(())
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
