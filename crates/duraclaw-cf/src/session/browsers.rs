//! The browser side: hibernatable WebSockets, their replay and live
//! events, and the commands they send.

use std::collections::HashMap;
use std::rc::Rc;

use duraclaw_core::backend::actor::{CommandOutcome, Person, SessionActor};
use duraclaw_core::backend::web::{
    LOGIN_ENDED_CLOSE, LOGIN_ENDED_MESSAGE, LOGIN_ENDED_REASON, deflate, replay, socket,
};
use duraclaw_core::protocol::{
    Command, CommandResult, FromBrowser, Hello, Role, Seq, ToBrowser, WireError,
    browser_event_frame, encode_frame,
};
use worker::{Request, Response, WebSocket, WebSocketIncomingMessage, WebSocketPair};

use super::gateway::needs_link;
use super::{
    Attachment, LAGGED_CLOSE, LOGIN_HEADER, MAX_BROWSER_BUFFER, PAGE, SessionHost, error_response,
    now_ms,
};
use crate::auth::CfAuth;

pub(crate) fn send_browser(ws: &WebSocket, frame: &ToBrowser) {
    match encode_frame(frame) {
        Ok(text) => {
            let _ = ws.send_with_str(text);
        }
        Err(e) => tracing::error!(error = %e, "a browser frame does not encode"),
    }
}

/// Sends `refusal`'s error frame, then closes the socket with its code.
pub(crate) fn refuse(ws: &WebSocket, refusal: socket::Refusal) {
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

impl SessionHost {
    /// Sends every event after `published` to every browser socket.
    pub async fn publish(&self, actor: &SessionActor) {
        let published = self.publish_pages(actor).await;
        self.notifier.persisted(actor, &published);
    }

    /// [`SessionHost::publish`]'s sending; what it sent.
    async fn publish_pages(&self, actor: &SessionActor) -> Vec<duraclaw_core::store::StoredEvent> {
        let mut published = Vec::new();
        loop {
            let page = match self.unpublished(actor).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(session = actor.session_id(), error = %e, "cannot read the log to publish");
                    return published;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                return published;
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
            let full = page.len() == PAGE;
            published.extend(page);
            if !full {
                return published;
            }
        }
    }

    /// Up to [`PAGE`] events after `published`, in seq order: taken from
    /// the log's live subscription (what this turn's appends stored, with
    /// no SQL read back; one that fell behind catches up from the store by
    /// itself), else read from the store.
    async fn unpublished(
        &self,
        actor: &SessionActor,
    ) -> duraclaw_core::Result<Vec<duraclaw_core::store::StoredEvent>> {
        let (mut page, from) = {
            let mut inner = self.inner.borrow_mut();
            let published = inner.published;
            let live = match &mut inner.live {
                Some(l) if l.delivered() == published => l,
                live => live.insert(actor.log().subscribe(published)),
            };
            let (page, failed) = crate::publish::ready(live, PAGE);
            if let Some(e) = failed {
                tracing::warn!(error = %e, "the live log failed; reading the store");
                inner.live = None;
            }
            if inner.live.is_some() || page.len() == PAGE {
                return Ok(page);
            }
            let from = page.last().map_or(published, |e| e.seq);
            (page, from)
        };
        let mut rest = actor
            .log()
            .store()
            .read_after(from, PAGE - page.len())
            .await?;
        page.append(&mut rest);
        Ok(page)
    }

    /// The Worker says some of the owner's logins ended: closes every socket
    /// whose login is no longer live with [`LOGIN_ENDED_CLOSE`] (one D1 read
    /// per distinct login).
    pub(super) async fn logins_ended(&self) -> worker::Result<Response> {
        close_ended_logins(&self.state, &self.env).await
    }
}

/// Closes every browser socket of the object with `state` whose login (in
/// its attachment) is no longer live with [`LOGIN_ENDED_CLOSE`] (one D1
/// read per distinct login); `204`.
pub(crate) async fn close_ended_logins(
    state: &worker::State,
    env: &worker::Env,
) -> worker::Result<Response> {
    {
        let auth = CfAuth::from_env(env)?;
        let mut checked: HashMap<String, bool> = HashMap::new();
        let mut closed = 0u32;
        for ws in state.get_websockets() {
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
}

impl SessionHost {
    /// Accepts a browser's hibernatable socket and sends it hello, snapshot
    /// and its replay, all in this one turn (see the module docs).
    pub(super) async fn accept_browser(
        self: &Rc<Self>,
        req: &Request,
        actor: &SessionActor,
        user: &str,
    ) -> worker::Result<Response> {
        let url = req.url()?;
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let query =
            match replay::parse_stream_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                Ok(q) => q,
                Err(message) => return error_response(400, &message),
            };
        let after: Seq = match query.start {
            replay::Start::After(after) => after,
            replay::Start::Tail(_) => 0,
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
            full: !query.compact,
            deflate: query.deflate,
        })?;
        // From here to the end of the replay no promise is awaited: the
        // store is synchronous, so no publish can run in between.
        self.state.accept_websocket_with_tags(&ws, &[]);
        send_browser(&ws, &ToBrowser::Hello(Hello::new(Role::Orchestrator)));
        let mut delivered = after;
        let mut tail_events = Vec::new();
        match actor.snapshot().await {
            // The object's storage never takes a commit back: it keeps no
            // epochs and a client's `epoch` changes nothing.
            Ok(mut s) => match socket::check_resume(after, s.last_seq, query.epoch, &[]) {
                Ok(()) => {
                    s.first_seq = Some(after + 1);
                    if let replay::Start::Tail(n) = query.start {
                        // Up to what was published: the rest comes live.
                        let published = self.inner.borrow().published.min(s.last_seq);
                        match replay::tail(actor.log().store().as_ref(), published, n).await {
                            Ok(t) => {
                                s.first_seq = Some(t.first_seq);
                                s.turn_start = t.turn_start;
                                delivered = t.first_seq - 1;
                                tail_events = t.events;
                            }
                            Err(e) => {
                                send_browser(&ws, &ToBrowser::Error(WireError::from(&e)));
                                let _ = ws.close(Some(1011), Some("replay failed"));
                                return Response::from_websocket(pair.client);
                            }
                        }
                    }
                    send_browser(&ws, &ToBrowser::Snapshot(s));
                }
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
        // The replay up to the fence, through the compactor unless the
        // client asked for every event.
        let mut compactor = query.compact.then(|| replay::Compactor::new(fence));
        // With `compress=deflate-raw` its frames go in binary batches.
        let mut batcher = query.deflate.then(deflate::Batcher::new);
        let mut out = |frame: String| match batcher.as_mut() {
            Some(b) => {
                if let Some(bin) = b.push(&frame) {
                    let _ = ws.send_with_bytes(bin);
                }
            }
            None => {
                let _ = ws.send_with_str(frame);
            }
        };
        let mut send = |e: duraclaw_core::store::StoredEvent| match compactor.as_mut() {
            Some(c) => {
                c.push(e);
                for item in c.take() {
                    out(item.frame());
                }
            }
            None => out(browser_event_frame(e.seq, &e.json)),
        };
        for e in tail_events.into_iter().filter(|e| e.seq <= fence) {
            delivered = e.seq;
            send(e);
        }
        let mut failed = None;
        while delivered < fence {
            let want = usize::try_from(fence - delivered).unwrap_or(PAGE).min(PAGE);
            match actor.log().store().read_after(delivered, want).await {
                Ok(page) if !page.is_empty() => {
                    for e in page.into_iter().filter(|e| e.seq <= fence) {
                        delivered = e.seq;
                        send(e);
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(c) = compactor.take() {
            for item in c.finish() {
                out(item.frame());
            }
        }
        if let Some(bin) = batcher.as_mut().and_then(deflate::Batcher::finish) {
            let _ = ws.send_with_bytes(bin);
        }
        if let Some(e) = failed {
            send_browser(&ws, &ToBrowser::Error(WireError::from(&e)));
            let _ = ws.close(Some(1011), Some("replay failed"));
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
            FromBrowser::Page { id, before, limit } => {
                let (full, compressed) = match ws.deserialize_attachment::<Attachment>() {
                    Ok(Some(a)) => (a.full, a.deflate),
                    _ => (false, false),
                };
                let frame = match self.actor().await {
                    Ok(Some(actor)) => {
                        // Pages go up to what was published: the rest
                        // reaches this socket as live events.
                        let last = self.inner.borrow().published;
                        replay::page(
                            actor.log().store().as_ref(),
                            &id,
                            before,
                            limit,
                            last,
                            !full,
                        )
                        .await
                    }
                    Ok(None) => replay::page_error_frame(
                        &id,
                        &WireError::new("not_found", "no such session"),
                    ),
                    Err(e) => replay::page_error_frame(&id, &WireError::from(&e)),
                };
                if compressed {
                    let _ = ws.send_with_bytes(deflate::deflate(&frame));
                } else {
                    let _ = ws.send_with_str(frame);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn browser_command(self: &Rc<Self>, ws: &WebSocket, id: String, command: Command) {
        tracing::debug!(command = %id, "browser command");
        let (who, login) = match ws.deserialize_attachment::<Attachment>() {
            Ok(Some(a)) => (
                Person {
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
            Err(e) => Some(duraclaw_core::Error::storage(
                "d1",
                format!("cannot check the login: {e}"),
            )),
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
        // "Always allow for this worktree": the rule is added (and sent)
        // before the allow goes out.
        if let Command::Answer(answer) = &command
            && let Err(e) = self.allow_worktree(&actor, &who.user, answer).await
        {
            send_browser(
                ws,
                &ToBrowser::CommandResult(CommandResult {
                    id,
                    ok: false,
                    error: Some(e),
                }),
            );
            return;
        }
        let result = match self.apply_command(&actor, &id, command, &who).await {
            Ok(out) => out.result,
            Err(e) => CommandResult {
                id,
                ok: false,
                error: Some(WireError::from(&e)),
            },
        };
        send_browser(ws, &ToBrowser::CommandResult(result));
    }

    /// Applies a command from `who` (a browser's, or a notification's
    /// action): the actor applies it once per id, its events go to every
    /// socket, and what it queued for the gateway is sent, then the D1 index
    /// updated, without holding up the caller (nor the frames queued behind
    /// a browser's command).
    pub(super) async fn apply_command(
        self: &Rc<Self>,
        actor: &SessionActor,
        id: &str,
        command: Command,
        who: &Person,
    ) -> duraclaw_core::Result<CommandOutcome> {
        let out = actor.command(id, command, who).await?;
        self.publish(actor).await;
        let host = self.clone();
        let actor = actor.clone();
        let forward = out.forward.clone();
        worker::wasm_bindgen_futures::spawn_local(async move {
            host.forward(&actor, &forward).await;
            host.index(&actor).await;
        });
        Ok(out)
    }

    /// A browser socket closed: complete the close handshake.
    pub async fn websocket_close(&self, ws: WebSocket, code: usize) -> worker::Result<()> {
        close_handshake(&ws, code);
        Ok(())
    }
}

/// Answers a browser's close with its code (or 1000 when it is not one a
/// close frame may carry).
pub(crate) fn close_handshake(ws: &WebSocket, code: usize) {
    let code = u16::try_from(code)
        .ok()
        .filter(|c| (1000..5000).contains(c) && ![1005, 1006, 1015].contains(c))
        .unwrap_or(1000);
    let _ = ws.close(Some(code), Some("bye"));
}
