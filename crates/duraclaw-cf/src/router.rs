//! The Worker in front of the session Durable Objects: every route of
//! `docs/api.md`, with the JSON errors of `duraclaw_host::http`.
//!
//! - `GET /api/health` needs nothing else; every other route first brings
//!   the D1 schema up to date ([`CfAuth::migrate`]; a failure answers 500
//!   with the reason), then the auth routes go to [`CfAuth::handle`] and the
//!   rest require a user ([`CfAuth::require_user`]: cookie, and Origin for
//!   state-changing requests and WebSocket upgrades).
//! - `/api/status` and `/api/worktrees` open a short-lived link to the
//!   gateway from the Worker itself: they concern the gateway, not a
//!   session, and a link per request needs no state and no object to keep
//!   awake (the cost is one WebSocket handshake, ~1 ms to a local gateway,
//!   more through a tunnel). `/api/status`, which every open UI polls, reuses
//!   an isolate's probe for [`STATUS_TTL_MS`].
//! - Sessions: the list comes from the D1 index; a session's routes check
//!   the owner in the index (another user's session answers 404 exactly as
//!   a missing one) and go to the session's Durable Object
//!   (`SESSIONS.idFromName(id)`), the WebSocket upgrade included: the
//!   object accepts it as a hibernatable socket.
//! - Any other path goes to the static assets (`ASSETS`), when bound, and
//!   comes back with core's [`UI_HEADERS`] (the local server sends the
//!   same): the deploy config runs the Worker first for every path.
//! - `/api/rules…`: the user's approval rules in D1 ([`crate::rules`]).
//! - A request that ends logins (logout, an admin password change or
//!   removal) tells every session object of that user to check its
//!   sockets' logins ([`LOGIN_ENDED_PATH`]): sockets whose login ended close
//!   with 4401 at once.
//!
//! - `POST /api/push/act` (Approve / Deny from a notification) checks the
//!   action token in the Worker and has the session's object apply the
//!   decision ([`ACT_PATH`]) as it applies a browser's `answer`.
//! - The inbox (`/api/inbox`, `/api/inbox/ws`) goes to the user's own
//!   Durable Object (`USERS.idFromName(user)`, [`crate::user`]).
//!
//! Bindings: `SESSIONS` (the session Durable Object namespace), `USERS`
//! (the users' objects), `DB` (D1),
//! `CC_GATEWAY_URL`, the secrets `CC_GATEWAY_SECRET`,
//! `DURACLAW_COOKIE_SECRET`, `DURACLAW_ADMIN_TOKEN` and
//! `DURACLAW_VAPID_PRIVATE_KEY`, optionally `ASSETS`.

use std::cell::RefCell;

use duraclaw_core::backend::web::{MAX_BODY_BYTES, UI_HEADERS};
use duraclaw_host::push::action;
use duraclaw_host::worktree as host_worktree;
use duraclaw_host::{ids, start};
use serde_json::json;
use worker::js_sys::Math;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Stub};

use crate::auth::{AuthUser, CfAuth, http_error, json_error};
use crate::clock::now_ms;
use crate::gateway_client;
use crate::session::{CreateRequest, LOGIN_HEADER, SESSION_HEADER, USER_HEADER};

/// The Durable Object namespace binding of the sessions.
pub const SESSIONS_BINDING: &str = "SESSIONS";

/// A fresh session id ([`ids::session_id`]); not a secret, so the noise
/// comes from `Math.random`.
pub fn new_session_id() -> String {
    let mut noise: u128 = 0;
    for _ in 0..4 {
        // 20 bits a draw: well within an f64's exact range.
        noise = (noise << 20) | ((Math::random() * f64::from(1u32 << 20)) as u128);
    }
    ids::session_id(now_ms(), noise)
}

/// Answers one request to the Worker. Never fails: an internal error is a
/// 500 with its reason.
pub async fn handle(req: Request, env: Env) -> worker::Result<Response> {
    crate::logging::init();
    match route(req, &env).await {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::error!(error = %e, "request failed");
            json_error(500, &format!("internal error: {e}"))
        }
    }
}

async fn route(mut req: Request, env: &Env) -> worker::Result<Response> {
    let path = req.path();
    if !path.starts_with("/api/") && path != "/api" {
        return match env.assets("ASSETS") {
            Ok(assets) => with_ui_headers(assets.fetch_request(req).await?),
            Err(_) => json_error(404, "not found"),
        };
    }
    if path == "/api/health" {
        return Response::from_json(&json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}));
    }
    let auth = match CfAuth::from_env(env) {
        Ok(a) => a,
        Err(e) => return json_error(500, &format!("the server is misconfigured: {e}")),
    };
    if let Err(e) = auth.migrate().await {
        return json_error(500, &format!("the user database cannot be migrated: {e}"));
    }
    if let Some(answer) = auth.handle(&mut req).await {
        if let Some(user) = auth.take_ended() {
            end_logins(env, &auth, &user).await;
        }
        return answer;
    }
    let user = match auth.require_user(&req).await {
        Ok(u) => u,
        Err(denied) => return denied.into_response(),
    };
    let method = req.method();
    let segments: Vec<&str> = path
        .trim_start_matches("/api/")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (method, segments.as_slice()) {
        (Method::Get, ["status"]) => status(env).await,
        (Method::Get, ["worktrees"]) => worktrees(env).await,
        (Method::Get, ["agents"]) => agents(env).await,
        (Method::Get, ["sessions"]) => Response::from_json(&auth.list_sessions(&user.name).await?),
        (Method::Post, ["sessions"]) => create_session(req, env, &auth, &user).await,
        (_, ["rules", rest @ ..]) => crate::rules::route(&mut req, env, &auth, &user, rest).await,
        (Method::Get, ["sessions", id]) => {
            to_session(env, &auth, &user, id, "/meta", Method::Get, None).await
        }
        (Method::Post, ["sessions", id, "fork"]) => fork_session(req, env, &auth, &user, id).await,
        (Method::Post, ["sessions", id, "close"]) => {
            close_session(req, env, &auth, &user, id).await
        }
        (Method::Get, ["sessions", id, "diff"]) => session_diff(&req, env, &auth, &user, id).await,
        (Method::Get, ["sessions", id, "ws"]) => {
            let upgrade = req.headers().get("Upgrade")?.unwrap_or_default();
            if !upgrade.eq_ignore_ascii_case("websocket") {
                return json_error(400, "this route needs a WebSocket upgrade");
            }
            let query = req
                .url()?
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let path = format!("/ws{query}");
            to_session(env, &auth, &user, id, &path, Method::Get, Some("websocket")).await
        }
        (Method::Post, ["push", "act"]) => push_act(req, env, &auth, &user).await,
        (_, ["push", rest @ ..]) if rest != ["act"] => {
            crate::push::route(&mut req, env, &user, rest).await
        }
        (Method::Get, ["inbox"]) => to_user(env, &user, "/list", None).await,
        (Method::Get, ["inbox", "ws"]) => {
            let upgrade = req.headers().get("Upgrade")?.unwrap_or_default();
            if !upgrade.eq_ignore_ascii_case("websocket") {
                return json_error(400, "this route needs a WebSocket upgrade");
            }
            let query = req
                .url()?
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            to_user(env, &user, &format!("/ws{query}"), Some("websocket")).await
        }
        (
            _,
            ["status" | "worktrees" | "inbox"] | ["sessions", ..] | ["inbox", ..] | ["push", "act"],
        ) => json_error(405, "method not allowed"),
        _ => json_error(404, "no such route"),
    }
}

/// A static asset's response with the UI's security headers (an asset's
/// own headers are immutable: they are copied).
fn with_ui_headers(asset: Response) -> worker::Result<Response> {
    let headers = Headers::new();
    for (name, value) in asset.headers().entries() {
        headers.append(&name, &value)?;
    }
    for (name, value) in UI_HEADERS {
        headers.set(name, value)?;
    }
    let status = asset.status_code();
    Ok(asset.with_headers(headers).with_status(status))
}

/// The session object route that makes it check its sockets' logins.
pub const LOGIN_ENDED_PATH: &str = "/logins-ended";

/// The most session objects one ended login tells (its user's most
/// recently active), well inside a request's subrequest limit.
pub const MAX_LOGIN_ENDED_NOTICES: usize = 500;

/// Tells the session objects of `user` (the [`MAX_LOGIN_ENDED_NOTICES`]
/// most recently active) that some of their logins ended; each closes the
/// sockets whose login did. A socket missed here (a failure, which is
/// logged, or an older session) still has its next command refused: the
/// object checks the login before every command.
async fn end_logins(env: &Env, auth: &CfAuth, user: &str) {
    let to_user = async {
        let headers = Headers::new();
        headers.set(USER_HEADER, user)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_headers(headers);
        let inner = Request::new_with_init(&format!("https://user{LOGIN_ENDED_PATH}"), &init)?;
        crate::user::user_stub(env, user)?
            .fetch_with_request(inner)
            .await
    };
    if let Err(e) = to_user.await {
        tracing::warn!(user, error = %e, "cannot tell the user's inbox its logins ended");
    }
    let sessions = match auth.list_sessions(user).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(user, error = %e, "cannot list the sessions whose logins ended");
            return;
        }
    };
    let calls = sessions.iter().take(MAX_LOGIN_ENDED_NOTICES).map(|meta| async move {
        let result = async {
            let headers = Headers::new();
            headers.set(USER_HEADER, &meta.owner)?;
            headers.set(SESSION_HEADER, &meta.session_id)?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post).with_headers(headers);
            let inner =
                Request::new_with_init(&format!("https://session{LOGIN_ENDED_PATH}"), &init)?;
            stub(env, &meta.session_id)?
                .fetch_with_request(inner)
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(session = %meta.session_id, error = %e, "cannot tell a session its logins ended");
        }
    });
    futures::future::join_all(calls).await;
}

fn gateway_config(env: &Env) -> Result<(String, String), String> {
    let url = env
        .var("CC_GATEWAY_URL")
        .map(|v| v.to_string())
        .map_err(|_| "CC_GATEWAY_URL is not set".to_owned())?;
    let secret = env
        .secret("CC_GATEWAY_SECRET")
        .map(|v| v.to_string())
        .map_err(|_| "the secret CC_GATEWAY_SECRET is not set".to_owned())?;
    Ok((url, secret))
}

/// How long an isolate reuses a gateway probe for `GET /api/status`.
pub const STATUS_TTL_MS: i64 = 3_000;

thread_local! {
    /// The isolate's last gateway probe and when it finished (ms since the
    /// epoch). An isolate runs one request's JavaScript at a time, so a
    /// thread-local is the per-isolate cache.
    static LAST_PROBE: RefCell<Option<(i64, gateway_client::GatewayStatus)>> =
        const { RefCell::new(None) };
}

/// The gateway's status: a probe (one WebSocket handshake and hello) at
/// most every [`STATUS_TTL_MS`] per isolate, since every open UI polls this
/// route every 5 s; a newer answer is never more than that old.
async fn gateway_status(env: &Env) -> gateway_client::GatewayStatus {
    let (url, secret) = match gateway_config(env) {
        Ok(c) => c,
        Err(e) => {
            return gateway_client::GatewayStatus {
                error: Some(e),
                ..Default::default()
            };
        }
    };
    let now = now_ms();
    let cached = LAST_PROBE.with_borrow(|last| {
        last.as_ref()
            .filter(|(at, s)| s.url == url && (0..STATUS_TTL_MS).contains(&(now - at)))
            .map(|(_, s)| s.clone())
    });
    if let Some(status) = cached {
        return status;
    }
    let status = gateway_client::probe(&url, &secret).await;
    LAST_PROBE.set(Some((now_ms(), status.clone())));
    status
}

async fn status(env: &Env) -> worker::Result<Response> {
    let gateway = gateway_status(env).await;
    // No per-client queue here to overflow: the session object sends each
    // event to every socket as it is stored.
    Response::from_json(&json!({ "gateway": gateway, "stats": {"slow_client_catch_ups": 0} }))
}

async fn worktrees(env: &Env) -> worker::Result<Response> {
    let (url, secret) = match gateway_config(env) {
        Ok(c) => c,
        Err(e) => return json_error(502, &format!("the gateway is unreachable: {e}")),
    };
    match gateway_client::list_worktrees(&url, &secret).await {
        Ok(list) => Response::from_json(&list),
        Err(e) => json_error(502, &format!("the gateway is unreachable: {e}")),
    }
}

/// `GET /api/agents`: the agents the gateway offers, each checked now.
async fn agents(env: &Env) -> worker::Result<Response> {
    let value = match ask_gateway(env, duraclaw_host::agents::request()).await? {
        Ok(v) => v,
        Err(answer) => return Ok(answer),
    };
    match duraclaw_host::agents::body(value) {
        Ok(body) => {
            let mut response = Response::ok(body)?;
            let headers = response.headers_mut();
            headers.set("Content-Type", "application/json")?;
            headers.set("Cache-Control", "no-store")?;
            Ok(response)
        }
        Err(e) => http_error(&e),
    }
}

/// Whether session `id` is `user`'s (anything else answers 404).
async fn owns(auth: &CfAuth, user: &AuthUser, id: &str) -> worker::Result<bool> {
    Ok(ids::is_session_id(id)
        && auth
            .session_owner(id)
            .await?
            .is_some_and(|owner| owner == user.name))
}

/// Sends a `request` to the gateway: its reply's value, or the answer to
/// send instead (its refusal, or why it is unreachable).
async fn ask_gateway(
    env: &Env,
    request: duraclaw_core::protocol::GatewayRequest,
) -> worker::Result<Result<serde_json::Value, Response>> {
    let (url, secret) = match gateway_config(env) {
        Ok(c) => c,
        Err(e) => {
            return json_error(502, &format!("the gateway is unreachable: {e}")).map(Err);
        }
    };
    match gateway_client::request(&url, &secret, request).await {
        Ok(Ok(value)) => Ok(Ok(value)),
        Ok(Err(refused)) => http_error(&host_worktree::refused(&refused)).map(Err),
        Err(e) => json_error(502, &format!("the gateway is unreachable: {e}")).map(Err),
    }
}

/// `POST /api/sessions/{id}/close`: with `{"worktree":"remove"}` the
/// gateway first removes the worktree it made for the session
/// (`duraclaw_host::worktree`); then the session object closes it.
async fn close_session(
    mut req: Request,
    env: &Env,
    auth: &CfAuth,
    user: &AuthUser,
    id: &str,
) -> worker::Result<Response> {
    if !owns(auth, user, id).await? {
        return json_error(404, "no such session");
    }
    let body = req.bytes().await.unwrap_or_default();
    if body.len() > MAX_BODY_BYTES {
        return body_too_large();
    }
    let choice = match host_worktree::read_close(&body) {
        Ok(c) => c,
        Err(e) => return http_error(&e),
    };
    if choice.remove
        && let Err(answer) = ask_gateway(env, host_worktree::remove_request(id, choice)).await?
    {
        return Ok(answer);
    }
    to_session(env, auth, user, id, "/close", Method::Post, None).await
}

/// `GET /api/sessions/{id}/diff[?format=patch]`: the session's changes
/// since its base commit, from the gateway.
async fn session_diff(
    req: &Request,
    env: &Env,
    auth: &CfAuth,
    user: &AuthUser,
    id: &str,
) -> worker::Result<Response> {
    if !owns(auth, user, id).await? {
        return json_error(404, "no such session");
    }
    let url = req.url()?;
    let format = host_worktree::DiffFormat::from_query(url.query());
    let value = match ask_gateway(env, host_worktree::diff_request(id)).await? {
        Ok(v) => v,
        Err(answer) => return Ok(answer),
    };
    let body = match host_worktree::diff_body(value, format) {
        Ok(b) => b,
        Err(e) => return http_error(&e),
    };
    let mut response = Response::ok(body)?;
    let headers = response.headers_mut();
    headers.set("Cache-Control", "no-store")?;
    match format {
        host_worktree::DiffFormat::Json => headers.set("Content-Type", "application/json")?,
        host_worktree::DiffFormat::Patch => {
            headers.set("Content-Type", "text/x-diff; charset=utf-8")?;
            headers.set(
                "Content-Disposition",
                &format!(
                    "attachment; filename=\"{}\"",
                    host_worktree::patch_file_name(id)
                ),
            )?;
        }
    }
    Ok(response)
}

pub(crate) fn stub(env: &Env, id: &str) -> worker::Result<Stub> {
    env.durable_object(SESSIONS_BINDING)?
        .id_from_name(id)?
        .get_stub()
}

/// The `413` of a request body over [`MAX_BODY_BYTES`].
fn body_too_large() -> worker::Result<Response> {
    json_error(
        413,
        &format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
    )
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`], sent as
/// `application/json`; the error answer otherwise (`413` too large, `400`
/// not this JSON).
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    req: &mut Request,
) -> worker::Result<Result<T, Response>> {
    let content_type = req.headers().get("Content-Type")?.unwrap_or_default();
    let is_json = content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return json_error(
            400,
            "expected a JSON body with the header Content-Type: application/json",
        )
        .map(Err);
    }
    let declared = req
        .headers()
        .get("Content-Length")?
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return body_too_large().map(Err);
    }
    let bytes = match req.bytes().await {
        Ok(b) => b,
        Err(e) => return json_error(400, &format!("the request body is unreadable: {e}")).map(Err),
    };
    if bytes.len() > MAX_BODY_BYTES {
        return body_too_large().map(Err);
    }
    match serde_json::from_slice(&bytes) {
        Ok(body) => Ok(Ok(body)),
        Err(e) => json_error(400, &format!("bad request body: {e}")).map(Err),
    }
}

async fn create_session(
    mut req: Request,
    env: &Env,
    auth: &CfAuth,
    user: &AuthUser,
) -> worker::Result<Response> {
    let body: serde_json::Value = match json_body(&mut req).await? {
        Ok(b) => b,
        Err(refused) => return Ok(refused),
    };
    let body = match start::read_request(body, &user.name) {
        Ok(b) => b,
        Err(refused) => return http_error(&refused),
    };
    create_in_object(env, auth, user, body, None).await
}

/// `POST /api/sessions/{id}/fork`: the parent's object finds where the
/// fork resumes, then the fork is created like any session, in the
/// parent's worktree (`duraclaw_host::fork`).
async fn fork_session(
    mut req: Request,
    env: &Env,
    auth: &CfAuth,
    user: &AuthUser,
    parent: &str,
) -> worker::Result<Response> {
    let body: serde_json::Value = match json_body(&mut req).await? {
        Ok(b) => b,
        Err(refused) => return Ok(refused),
    };
    let fork = match duraclaw_host::fork::read_request(&body) {
        Ok(f) => f,
        Err(refused) => return http_error(&refused),
    };
    let path = format!(
        "{}?from_seq={}",
        crate::session::FORK_POINT_PATH,
        fork.from_seq
    );
    let mut answer = to_session(env, auth, user, parent, &path, Method::Get, None).await?;
    if answer.status_code() != 200 {
        return Ok(answer);
    }
    let point: crate::session::ForkPoint = answer.json().await?;
    let request = json!({"worktree": point.worktree, "prompt": fork.prompt, "model": point.model});
    let session = match start::read_request(request, &user.name) {
        Ok(b) => b,
        Err(refused) => return http_error(&refused),
    };
    let origin = crate::session::CreateFork {
        parent: parent.to_owned(),
        seq: fork.from_seq,
        from: point.from,
        origin: point.origin,
    };
    create_in_object(env, auth, user, session, Some(origin)).await
}

/// Creates session `body` of `user` in a new object (a fork when `fork`
/// is set).
async fn create_in_object(
    env: &Env,
    auth: &CfAuth,
    user: &AuthUser,
    body: duraclaw_core::backend::web::NewSession,
    fork: Option<crate::session::CreateFork>,
) -> worker::Result<Response> {
    let id = new_session_id();
    // The rules in force from the session's first tool call on.
    // A fork in its parent's new worktree has the parent's rules' worktree.
    let rules_worktree = fork
        .as_ref()
        .and_then(|f| f.origin.as_deref())
        .unwrap_or(&body.worktree);
    let rules = crate::rules::for_new_session(auth, &user.name, rules_worktree, &id).await?;
    let create = CreateRequest {
        session_id: id.clone(),
        owner: user.name.clone(),
        rules,
        session: body,
        fork,
    };
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    headers.set(USER_HEADER, &user.name)?;
    headers.set(SESSION_HEADER, &id)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(serde_json::to_string(&create)?.into()));
    let inner = Request::new_with_init("https://session/create", &init)?;
    stub(env, &id)?.fetch_with_request(inner).await
}

/// The session object route that applies a notification's action.
pub const ACT_PATH: &str = "/act";

/// The key action tokens are made and checked under: the action key of
/// the VAPID private key (the secret [`crate::push::KEY_SECRET`]), as
/// `duraclaw_host::push::VapidKey::action_key` makes it; `None` without a
/// usable key (push is not set up).
pub fn push_action_key(env: &Env) -> Option<[u8; 32]> {
    match crate::push::vapid_key(env) {
        Ok(key) => key.map(|k| k.action_key()),
        Err(e) => {
            tracing::error!(error = %e, "the VAPID key is unusable");
            None
        }
    }
}

/// `POST /api/push/act`: checks the token here, then the session's object
/// applies its decision as it applies a browser's `answer`.
async fn push_act(
    mut req: Request,
    env: &Env,
    auth: &CfAuth,
    user: &AuthUser,
) -> worker::Result<Response> {
    let body: action::ActRequest = match json_body(&mut req).await? {
        Ok(b) => b,
        Err(refused) => return Ok(refused),
    };
    // Like the other push routes: no VAPID key, no push (503).
    let Some(key) = push_action_key(env) else {
        return json_error(503, duraclaw_host::push::NO_KEY);
    };
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let claim = match action::check(&key, &body, &user.name, now) {
        Ok(c) => c,
        Err(refused) => return http_error(&refused),
    };
    let id = claim.session_id.clone();
    if !ids::is_session_id(&id) {
        return json_error(404, "no such session");
    }
    match auth.session_owner(&id).await? {
        Some(owner) if owner == user.name => {}
        _ => return json_error(404, "no such session"),
    }
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    headers.set(USER_HEADER, &user.name)?;
    headers.set(SESSION_HEADER, &id)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(serde_json::to_string(&claim)?.into()));
    let inner = Request::new_with_init(&format!("https://session{ACT_PATH}"), &init)?;
    stub(env, &id)?.fetch_with_request(inner).await
}

/// Forwards an inbox route to `user`'s object.
async fn to_user(
    env: &Env,
    user: &AuthUser,
    path: &str,
    upgrade: Option<&str>,
) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set(USER_HEADER, &user.name)?;
    if let Some(u) = upgrade {
        headers.set("Upgrade", u)?;
        headers.set(LOGIN_HEADER, &user.login)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let inner = Request::new_with_init(&format!("https://user{path}"), &init)?;
    crate::user::user_stub(env, &user.name)?
        .fetch_with_request(inner)
        .await
}

/// Forwards a session route to its object, once `user` is known to own it.
async fn to_session(
    env: &Env,
    auth: &CfAuth,
    user: &AuthUser,
    id: &str,
    path: &str,
    method: Method,
    upgrade: Option<&str>,
) -> worker::Result<Response> {
    if !ids::is_session_id(id) {
        return json_error(404, "no such session");
    }
    match auth.session_owner(id).await? {
        Some(owner) if owner == user.name => {}
        _ => return json_error(404, "no such session"),
    }
    let headers = Headers::new();
    headers.set(USER_HEADER, &user.name)?;
    headers.set(SESSION_HEADER, id)?;
    if let Some(u) = upgrade {
        headers.set("Upgrade", u)?;
        // The socket keeps its login, checked before every command.
        headers.set(LOGIN_HEADER, &user.login)?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    let inner = Request::new_with_init(&format!("https://session{path}"), &init)?;
    stub(env, id)?.fetch_with_request(inner).await
}
