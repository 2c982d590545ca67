//! The REST and WebSocket API under `/api/` (see `docs/api.md`).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use duraclaw_core::backend::actor::{Person, SessionActor};
use duraclaw_core::backend::web::{
    LOGIN_ENDED_CLOSE, LOGIN_ENDED_MESSAGE, LOGIN_ENDED_REASON, MAX_BODY_BYTES, deflate, replay,
    socket,
};
use duraclaw_core::protocol::{
    CommandResult, FromBrowser, Hello, Role, ToBrowser, WireError, decode_frame, encode_frame,
};
use duraclaw_core::store::SessionMeta;
use duraclaw_host::ids;
use duraclaw_host::start::{self, StartPlan};
use duraclaw_host::worktree as host_worktree;
use futures::future::BoxFuture;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::Orchestrator;
use crate::authn::{AuthUser, Authenticator};
use crate::error::ApiError;

/// Frames queued for one browser before its forwarder waits (the log's own
/// bounded queue then makes it catch up by replay); at most the live queue.
const BROWSER_QUEUE: usize = 256;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Who requests come from ([`Authenticator::new`] over the bundled
    /// `Arc<Auth>`, or an app's own [`Authenticate`](crate::authn::Authenticate)).
    pub auth: Authenticator,
    /// Session actors and the gateway link.
    pub orchestrator: Arc<Orchestrator>,
    /// The origin browsers must come from, when behind a proxy.
    pub public_origin: Option<String>,
    /// Which executor the gateway runs, when this process knows.
    pub executor: Option<String>,
    /// Why that executor cannot run, when this process knows.
    pub executor_error: Option<String>,
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}

/// The session API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/status", get(status))
        .route("/api/worktrees", get(worktrees))
        .route("/api/agents", get(agents))
        .route("/api/sessions", get(list_sessions).post(create_session))
        .route("/api/sessions/{id}", get(get_session))
        .route(
            "/api/sessions/{id}/close",
            axum::routing::post(close_session),
        )
        .route("/api/sessions/{id}/ws", get(session_ws))
        .route("/api/sessions/{id}/fork", axum::routing::post(fork_session))
        .merge(crate::rules::routes())
        .route("/api/inbox", get(crate::inbox::list))
        .route("/api/inbox/ws", get(crate::inbox::stream))
        .route("/api/sessions/{id}/diff", get(session_diff))
}

/// Gives every error answer of the API the documented shape,
/// `{"error": "…"}`: an error response that is not JSON already (a rejection
/// by axum of a body, query, path or WebSocket upgrade, a body over
/// [`MAX_BODY_BYTES`], a method a route does not take) becomes one with its
/// text as the message. A body or query that does not decode (`422`, `415`)
/// answers `400`, as all bad input does; other statuses and headers (e.g.
/// `Allow`) are kept.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is over the limit of {MAX_BODY_BYTES} bytes")
        }
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed".to_owned(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_lowercase(),
        _ => text,
    };
    let status = match status {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            StatusCode::BAD_REQUEST
        }
        other => other,
    };
    let mut out = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}))
}

async fn status(State(app): State<AppState>, _user: AuthUser) -> Json<serde_json::Value> {
    let gw = app.orchestrator.gateway().status();
    Json(json!({
        "gateway": {
            "connected": gw.connected,
            "url": gw.url,
            "error": gw.error,
            "agent": gw.agent,
            "executor": app.executor,
            "executor_error": app.executor_error.clone().or(gw.executor_error),
        },
        "stats": {
            "slow_client_catch_ups": app.orchestrator.catch_ups(),
        }
    }))
}

fn unreachable(app: &AppState) -> ApiError {
    let why = app
        .orchestrator
        .gateway()
        .status()
        .error
        .unwrap_or_else(|| "not connected".into());
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("the gateway is unreachable: {why}"),
    )
}

async fn worktrees(State(app): State<AppState>, _user: AuthUser) -> Result<Response, ApiError> {
    if !app.orchestrator.gateway().is_connected() {
        return Err(unreachable(&app));
    }
    let list = app
        .orchestrator
        .gateway()
        .worktrees()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(list).into_response())
}

/// `GET /api/agents`: the agents the gateway offers, each checked now.
async fn agents(State(app): State<AppState>, _user: AuthUser) -> Result<Response, ApiError> {
    let value = ask_gateway(&app, duraclaw_host::agents::request()).await?;
    let body = duraclaw_host::agents::body(value)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn list_sessions(
    State(app): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<SessionMeta>>, ApiError> {
    let sessions = app.orchestrator.directory().list(&user.name).await?;
    Ok(Json(
        sessions.into_iter().map(SessionMeta::for_clients).collect(),
    ))
}

/// The session's actor if `user` owns it; 404 otherwise, exactly as for a
/// session that does not exist.
pub(crate) async fn owned_actor(
    app: &AppState,
    user: &AuthUser,
    id: &str,
) -> Result<SessionActor, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such session");
    if !ids::is_session_id(id) {
        return Err(not_found());
    }
    let actor = match app.orchestrator.actor(id).await {
        Ok(a) => a,
        Err(duraclaw_core::Error::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if actor.meta().await.owner != user.name {
        return Err(not_found());
    }
    Ok(actor)
}

async fn get_session(
    State(app): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<SessionMeta>, ApiError> {
    let actor = owned_actor(&app, &user, &id).await?;
    Ok(Json(actor.meta().await.for_clients()))
}

/// `POST /api/sessions/{id}/close`: ends the session, freeing its worktree;
/// `{"worktree":"remove"}` first has the gateway remove the worktree it
/// made for the session (`duraclaw_host::worktree`).
async fn close_session(
    State(app): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<SessionMeta>, ApiError> {
    let actor = owned_actor(&app, &user, &id).await?;
    let choice = host_worktree::read_close(&body)?;
    if choice.remove {
        ask_gateway(&app, host_worktree::remove_request(&id, choice)).await?;
    }
    let who = Person {
        user: user.name.clone(),
        client: Some("web".into()),
    };
    let out = actor
        .command(
            &ids::close_command_id(&id),
            duraclaw_core::protocol::Command::Close(duraclaw_core::protocol::Close {}),
            &who,
        )
        .await?;
    for frame in &out.forward {
        // Not connected: the outbox sends it when the gateway is back.
        let _ = app.orchestrator.gateway().send(frame);
    }
    Ok(Json(actor.meta().await.for_clients()))
}

/// Sends a `request` to the gateway: its reply's value, or the refusal as
/// an HTTP error.
async fn ask_gateway(
    app: &AppState,
    request: duraclaw_core::protocol::GatewayRequest,
) -> Result<serde_json::Value, ApiError> {
    let gateway = app.orchestrator.gateway();
    if !gateway.is_connected() {
        return Err(unreachable(app));
    }
    match gateway.request(request).await? {
        Ok(value) => Ok(value),
        Err(e) => Err(host_worktree::refused(&e).into()),
    }
}

/// `GET /api/sessions/{id}/diff[?format=patch]`: the session's changes
/// since its base commit, from the gateway.
async fn session_diff(
    State(app): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    owned_actor(&app, &user, &id).await?;
    let format = host_worktree::DiffFormat::from_query(uri.query());
    let value = ask_gateway(&app, host_worktree::diff_request(&id)).await?;
    let body = host_worktree::diff_body(value, format)?;
    Ok(match format {
        host_worktree::DiffFormat::Json => {
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        host_worktree::DiffFormat::Patch => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/x-diff; charset=utf-8".to_owned(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}\"",
                        host_worktree::patch_file_name(&id)
                    ),
                ),
            ],
            body,
        )
            .into_response(),
    })
}

/// `POST /api/sessions`: the start plan of `duraclaw_host::start`.
async fn create_session(
    State(app): State<AppState>,
    user: AuthUser,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let request = start::read_request(body, &user.name)?;
    start_session(&app, &user, request, None).await
}

/// `POST /api/sessions/{id}/fork`: a new session, in the parent's
/// worktree, carrying the parent's conversation up to the exchange of one
/// of its user messages (`duraclaw_host::fork`).
async fn fork_session(
    State(app): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let fork = duraclaw_host::fork::read_request(&body)?;
    let parent = owned_actor(&app, &user, &id).await?;
    let mut scan = duraclaw_host::fork::ForkScan::new(fork.from_seq);
    duraclaw_core::store::walk_log(parent.log().store().as_ref(), |seq, e| scan.feed(seq, e))
        .await?;
    let from = scan.finish()?;
    let meta = parent.meta().await;
    let request = start::read_request(
        json!({"worktree": meta.worktree, "prompt": fork.prompt, "model": meta.model}),
        &user.name,
    )?;
    let origin = meta.origin.clone();
    start_session(
        &app,
        &user,
        request,
        Some((id, fork.from_seq, from, origin)),
    )
    .await
}

/// Starts `request` for `user` (a fork of a session when `fork` is set):
/// `201` with the new session's metadata.
async fn start_session(
    app: &AppState,
    user: &AuthUser,
    request: duraclaw_core::backend::web::NewSession,
    fork: Option<(
        String,
        u64,
        duraclaw_core::protocol::ForkFrom,
        Option<String>,
    )>,
) -> Result<Response, ApiError> {
    let gateway = app.orchestrator.gateway();
    if !gateway.is_connected() {
        return Err(unreachable(app));
    }
    let worktrees = gateway
        .worktrees()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    start::check_worktree(&request, &worktrees)?;
    let mut plan = StartPlan::new(
        request,
        &user.name,
        app.orchestrator.new_session_id(),
        app.orchestrator.clock().now_ms(),
    );
    if let Some((parent, seq, from, origin)) = fork {
        // In the parent's worktree, with its rules' worktree.
        plan = plan.with_fork(&parent, seq, from).with_origin(origin);
    }
    let actor = app.orchestrator.create(plan.meta()).await?;
    match start_created(app, &actor, &plan).await {
        Ok(meta) => Ok((StatusCode::CREATED, Json(meta.for_clients())).into_response()),
        Err(e) => {
            // All or nothing: a start that failed leaves no session.
            let id = plan.session_id();
            if let Err(undo) = app.orchestrator.remove(id).await {
                tracing::error!(session = %id, error = %undo, "cannot remove a session that did not start");
            }
            Err(e)
        }
    }
}

/// Starts a just created session on the gateway: its metadata, or the
/// error to answer.
async fn start_created(
    app: &AppState,
    actor: &SessionActor,
    plan: &StartPlan,
) -> Result<SessionMeta, ApiError> {
    let gateway = app.orchestrator.gateway();
    let id = plan.session_id();
    let (command_id, mut execute, who) = plan.execute();
    // The rules in force from the first tool call on.
    execute.rules = Some(
        app.orchestrator
            .rules_for(plan.owner(), plan.rules_worktree(), id)
            .await?,
    );
    let out = actor.execute(&command_id, execute, &who).await?;
    for frame in &out.forward {
        let result = match gateway.command(frame).await {
            Ok(r) => r,
            // The command stays in the outbox and is resent on reconnect.
            Err(_) => continue,
        };
        if let Err(e) = actor.on_command_result(&result).await {
            // Still in the outbox: resent on reconnect, applied once there.
            tracing::warn!(session = %id, error = %e, "cannot record the gateway's answer to execute");
        }
        plan.answer(Some(&result))?;
        // Started: stream its events (a reconnect attaches it too).
        let _ = gateway.send(&duraclaw_core::protocol::ToGateway::Attach {
            session_id: id.to_owned(),
            after_gseq: 0,
        });
    }
    Ok(actor.meta().await)
}

async fn session_ws(
    State(app): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    app.auth.check_origin(&headers)?;
    let query = replay::parse_stream_query(q.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(ApiError::bad_request)?;
    let actor = owned_actor(&app, &user, &id).await?;
    // The transport reads up to its hard cap, so a frame over the
    // protocol's limit is answered `too_large` (serve_session) before the
    // close instead of failing the read unanswered.
    Ok(ws
        .max_message_size(socket::TRANSPORT_MAX_MESSAGE_BYTES)
        .max_frame_size(socket::TRANSPORT_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_session(socket, app, user, actor, query)))
}

fn client_id(orchestrator: &Orchestrator) -> String {
    let id = orchestrator.new_session_id();
    format!("web {}", &id[id.len() - 6..])
}

async fn serve_session(
    socket: WebSocket,
    app: AppState,
    user: AuthUser,
    actor: SessionActor,
    query: replay::StreamQuery,
) {
    let (sink, mut stream) = socket.split();
    let queue = BROWSER_QUEUE.min(app.orchestrator.live_queue()).max(8);
    let (tx, rx) = mpsc::channel::<Message>(queue);
    let writer = spawn_writer(sink, rx);

    let after = match query.start {
        replay::Start::After(after) => after,
        replay::Start::Tail(_) => 0,
    };
    // Subscribe before the snapshot so nothing falls between them.
    let mut sub = actor.log().subscribe(after);
    let first = async {
        let hello = encode_frame(&ToBrowser::Hello(Hello::new(Role::Orchestrator)))?;
        let mut snapshot = actor.snapshot().await?;
        let epochs = actor.epochs().await;
        if let Err(refusal) = socket::check_resume(after, snapshot.last_seq, query.epoch, &epochs) {
            let _ = tx.send(hello.into()).await;
            return Err(RefusedFirst::Refused(refusal));
        }
        snapshot.first_seq = Some(after + 1);
        if let replay::Start::Tail(n) = query.start {
            let tail = replay::tail(actor.log().store().as_ref(), snapshot.last_seq, n).await?;
            snapshot.first_seq = Some(tail.first_seq);
            snapshot.turn_start = tail.turn_start;
            sub.resume_after(tail.first_seq - 1);
        }
        let end = snapshot.last_seq;
        let snapshot = encode_frame(&ToBrowser::Snapshot(snapshot))?;
        Ok::<_, RefusedFirst>((hello, snapshot, end))
    };
    let replay_end = match first.await {
        Ok((hello, snapshot, end)) => {
            let _ = tx.send(hello.into()).await;
            let _ = tx.send(snapshot.into()).await;
            end
        }
        Err(RefusedFirst::Refused(refusal)) => {
            tracing::info!(session = actor.session_id(), after, code = %refusal.error.code, "session stream refused");
            drop(sub);
            return refuse(tx, writer, refusal).await;
        }
        Err(RefusedFirst::Failed(e)) => {
            tracing::error!(session = actor.session_id(), error = %e, "cannot open the session stream");
            return;
        }
    };
    // The replay (up to the snapshot's last seq) goes through the
    // compactor; live events after it go as they are.
    let replaying = sub.delivered() < replay_end;
    let mut compactor = (query.compact && replaying).then(|| replay::Compactor::new(replay_end));
    // With `compress=deflate-raw` the replay's frames go in binary batches.
    let mut batcher = (query.deflate && replaying).then(deflate::Batcher::new);
    let forward_tx = tx.clone();
    let session_id = actor.session_id().to_owned();
    let orch = app.orchestrator.clone();
    let user_name = user.name.clone();
    let log = actor.log().clone();
    let forwarder = tokio::spawn(async move {
        let mut caught_up = 0;
        while let Some(item) = sub.next().await {
            if sub.catch_ups() > caught_up {
                // This client read too slowly: its live queue overflowed and
                // it was caught up from the log instead of stalling others.
                orch.count_catch_ups(sub.catch_ups() - caught_up);
                caught_up = sub.catch_ups();
                tracing::info!(
                    session = %session_id,
                    user = %user_name,
                    catch_ups = caught_up,
                    total = orch.catch_ups(),
                    "slow client caught up by replay"
                );
            }
            match item {
                Ok(e) => {
                    let seq = e.seq;
                    let items = replay::feed(&mut compactor, e);
                    let texts = items.iter().map(replay::ReplayItem::frame);
                    let frames: Vec<Message> = match batcher.as_mut() {
                        Some(b) => {
                            let mut out: Vec<Message> = texts
                                .filter_map(|t| b.push(&t))
                                .map(Message::from)
                                .collect();
                            if seq >= replay_end {
                                out.extend(b.finish().map(Message::from));
                                batcher = None;
                            }
                            out
                        }
                        None => texts.map(Message::from).collect(),
                    };
                    let mut gone = false;
                    for frame in frames {
                        if forward_tx.send(frame).await.is_err() {
                            gone = true;
                            break;
                        }
                    }
                    if gone {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(session = %session_id, error = %e, "session stream failed");
                    break;
                }
            }
        }
        if log.has_failed() {
            // The log stopped after a failed commit: the next connection
            // gets it loaded again (in a new epoch, which tells a client
            // whether what it holds is still the log).
            let close = CloseFrame {
                code: CLOSE_LOG_RESTARTED,
                reason: "the session's log restarted: reconnect".into(),
            };
            let _ = forward_tx.send(Message::Close(Some(close))).await;
        }
    });

    let who = Person {
        user: user.name.clone(),
        client: Some(client_id(&app.orchestrator)),
    };
    let mut refused = None;
    // Ends the socket the moment its login ends (kept across the loop: see
    // `LoginWatch::ended`).
    let mut login_ended = app.auth.login_ended(&user.login);
    let mut close = None;
    loop {
        let text = match next_text(&mut stream, &mut login_ended).await {
            Incoming::Text(text) => text,
            Incoming::LoginEnded => {
                tracing::info!(session = actor.session_id(), user = %user.name, "login ended: socket closed");
                close = Some(login_ended_close());
                break;
            }
            Incoming::Refused(refusal) => {
                refused = Some(refusal);
                break;
            }
            Incoming::Closed => break,
        };
        let reply = match decode_frame::<FromBrowser>(text.as_str(), "browser frame") {
            Ok(FromBrowser::Command { id, command }) => {
                // A command racing a revocation: refused, and the socket
                // ends.
                let refusal = match app.auth.login_alive(&user.login).await {
                    Ok(true) => None,
                    Ok(false) => Some(duraclaw_core::Error::Unauthorized(
                        LOGIN_ENDED_MESSAGE.into(),
                    )),
                    Err(e) => Some(e),
                };
                if let Some(e) = refusal {
                    let ended = matches!(e, duraclaw_core::Error::Unauthorized(_));
                    let reply = ToBrowser::CommandResult(CommandResult {
                        id,
                        ok: false,
                        error: Some(WireError::from(&e)),
                    });
                    if let Ok(text) = encode_frame(&reply) {
                        let _ = tx.send(text.into()).await;
                    }
                    if ended {
                        close = Some(login_ended_close());
                        break;
                    }
                    continue;
                }
                let room = match &command {
                    duraclaw_core::protocol::Command::Message(_) => {
                        app.orchestrator.check_outbox(&actor, &id).await
                    }
                    _ => Ok(()),
                };
                if let Err(error) = room {
                    let reply = ToBrowser::CommandResult(CommandResult {
                        id,
                        ok: false,
                        error: Some(error),
                    });
                    match encode_frame(&reply) {
                        Ok(text) => {
                            if tx.send(text.into()).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "reply does not encode"),
                    }
                    continue;
                }
                // "Always allow for this worktree": the rule is added (and
                // sent) before the allow goes out.
                if let Err(e) = allow_worktree(&app, &user, &actor, &command).await {
                    let reply = ToBrowser::CommandResult(CommandResult {
                        id,
                        ok: false,
                        error: Some(WireError::new("bad_rule", e.message)),
                    });
                    if let Ok(text) = encode_frame(&reply)
                        && tx.send(text.into()).await.is_err()
                    {
                        break;
                    }
                    continue;
                }
                match actor.command(&id, command, &who).await {
                    Ok(out) => {
                        for frame in &out.forward {
                            // Not connected: the outbox resends it later.
                            let _ = app.orchestrator.gateway().send(frame);
                        }
                        ToBrowser::CommandResult(out.result)
                    }
                    Err(e) => ToBrowser::CommandResult(CommandResult {
                        id,
                        ok: false,
                        error: Some(WireError::from(&e)),
                    }),
                }
            }
            Ok(FromBrowser::Ping { nonce }) => ToBrowser::Pong { nonce },
            Ok(FromBrowser::Page { id, before, limit }) => {
                let store = actor.log().store();
                let frame = match store.head().await {
                    Ok(head) => {
                        replay::page(
                            store.as_ref(),
                            &id,
                            before,
                            limit,
                            head.last_seq,
                            query.compact,
                        )
                        .await
                    }
                    Err(e) => replay::page_error_frame(&id, &WireError::from(&e)),
                };
                // Compressed streams get their pages as a binary frame.
                let frame = if query.deflate {
                    Message::from(deflate::deflate(&frame))
                } else {
                    Message::from(frame)
                };
                if tx.send(frame).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(FromBrowser::Hello(h)) => match h.check_version() {
                Ok(()) => continue,
                Err(e) => ToBrowser::Error(WireError::from(&e)),
            },
            Ok(_) => continue,
            Err(e) => ToBrowser::Error(WireError::from(&e)),
        };
        match encode_frame(&reply) {
            Ok(text) => {
                if tx.send(text.into()).await.is_err() {
                    break;
                }
            }
            Err(e) => tracing::error!(error = %e, "reply does not encode"),
        }
    }
    forwarder.abort();
    match refused {
        Some(refusal) => {
            tracing::info!(session = actor.session_id(), user = %user.name, code = %refusal.error.code, "browser frame refused; closing");
            refuse(tx, writer, refusal).await;
        }
        None => close_socket(tx, writer, close).await,
    }
}

/// The writing half of a browser socket.
pub(crate) type Writer = tokio::task::JoinHandle<futures::stream::SplitSink<WebSocket, Message>>;

/// Writes what `rx` carries to `sink`: every frame already queued goes into
/// the socket's write buffer, then one flush, so a replay or a burst costs
/// one write per batch, not one per frame, and a lone live frame is
/// flushed at once. Gives the sink back when `rx` ends or a write fails.
pub(crate) fn spawn_writer<T: Into<Message> + Send + 'static>(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<T>,
) -> Writer {
    tokio::spawn(async move {
        'write: while let Some(frame) = rx.recv().await {
            if sink.feed(frame.into()).await.is_err() {
                break;
            }
            while let Ok(frame) = rx.try_recv() {
                if sink.feed(frame.into()).await.is_err() {
                    break 'write;
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        sink
    })
}

/// Ends a socket once what `tx` queued is written: with `close` (e.g.
/// [`login_ended_close`]), or a plain close.
pub(crate) async fn close_socket<T>(
    tx: mpsc::Sender<T>,
    writer: Writer,
    close: Option<CloseFrame>,
) {
    drop(tx);
    if let Ok(mut sink) = writer.await {
        match close {
            Some(frame) => {
                let _ = sink.send(Message::Close(Some(frame))).await;
            }
            None => {
                let _ = sink.close().await;
            }
        }
    }
}

/// Adds the worktree rule an `answer` carries ("always allow for this
/// worktree") for the session's worktree; nothing for any other command.
async fn allow_worktree(
    app: &AppState,
    user: &AuthUser,
    actor: &SessionActor,
    command: &duraclaw_core::protocol::Command,
) -> Result<(), duraclaw_host::http::HttpError> {
    let duraclaw_core::protocol::Command::Answer(answer) = command else {
        return Ok(());
    };
    let orch = &app.orchestrator;
    let meta = actor.meta().await;
    let Some(rule) = duraclaw_host::rules::answer_rule(
        answer,
        &meta,
        orch.new_rule_id(),
        orch.clock().now_ms(),
    )?
    else {
        return Ok(());
    };
    orch.add_rules(&user.name, vec![rule])
        .await
        .map(|_| ())
        .map_err(|e| duraclaw_host::http::HttpError::from(&e))
}

/// Why a session stream did not open.
enum RefusedFirst {
    /// Refused with an error frame and a close.
    Refused(socket::Refusal),
    /// The store failed.
    Failed(duraclaw_core::Error),
}

impl From<duraclaw_core::Error> for RefusedFirst {
    fn from(e: duraclaw_core::Error) -> Self {
        RefusedFirst::Failed(e)
    }
}

/// Sends `refusal`'s error frame after what `tx` queued, then closes the
/// socket with its code.
/// Close code when a session's log stopped under a stream (a commit failed
/// after its events went out): the client reconnects.
const CLOSE_LOG_RESTARTED: u16 = 1012;

pub(crate) async fn refuse<T: From<String>>(
    tx: mpsc::Sender<T>,
    writer: Writer,
    refusal: socket::Refusal,
) {
    match encode_frame(&ToBrowser::Error(refusal.error)) {
        Ok(text) => {
            let _ = tx.send(text.into()).await;
        }
        Err(e) => tracing::error!(error = %e, "refusal does not encode"),
    }
    drop(tx);
    if let Ok(mut sink) = writer.await {
        let close = CloseFrame {
            code: refusal.close_code,
            reason: refusal.close_reason.into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    }
}

/// What a browser socket brought next.
pub(crate) enum Incoming {
    /// A text frame within the size limit.
    Text(Utf8Bytes),
    /// The socket's login ended.
    LoginEnded,
    /// A frame the socket refuses (binary, too large).
    Refused(socket::Refusal),
    /// The browser closed the socket, or it failed.
    Closed,
}

/// The next text frame from `stream`, unless `login_ended` fires first or
/// the frame is refused; pings and pongs are passed over.
pub(crate) async fn next_text(
    stream: &mut SplitStream<WebSocket>,
    login_ended: &mut BoxFuture<'static, ()>,
) -> Incoming {
    loop {
        let msg = tokio::select! {
            () = &mut *login_ended => return Incoming::LoginEnded,
            msg = stream.next() => msg,
        };
        let Some(Ok(msg)) = msg else {
            return Incoming::Closed;
        };
        return match msg {
            Message::Text(text) => match socket::check_text(text.len()) {
                Ok(()) => Incoming::Text(text),
                Err(refusal) => Incoming::Refused(refusal),
            },
            Message::Binary(_) => Incoming::Refused(socket::refuse_binary()),
            Message::Close(_) => Incoming::Closed,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
    }
}

pub(crate) fn login_ended_close() -> CloseFrame {
    CloseFrame {
        code: LOGIN_ENDED_CLOSE,
        reason: LOGIN_ENDED_REASON.into(),
    }
}
