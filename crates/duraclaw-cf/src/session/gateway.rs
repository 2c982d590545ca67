//! The gateway link: one outbound WebSocket, kept while the session needs
//! it, with heartbeat alarms, backoff and batched ingest. What is sent and
//! what a frame means is [`duraclaw_host::link`]'s, as on the local host;
//! this is the IO around it.

use std::rc::Rc;
use std::time::Duration;

use duraclaw_core::backend::actor::SessionActor;
use duraclaw_core::protocol::{CommandResult, Gseq, RawEvent, ToGateway};
use duraclaw_core::state::{PauseReason, SessionInput, SessionState};
use duraclaw_host::link::{self, Input};
use futures::FutureExt;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use worker::Response;

use super::{BURST_WINDOW_MS, HEARTBEAT, LinkConn, MAX_BATCH, SessionHost, now_ms};
use crate::gateway_client::{self, GatewayConn, LinkEvent};

/// Randomness for reconnect jitter.
fn random() -> u32 {
    (worker::js_sys::Math::random() * f64::from(u32::MAX)) as u32
}

/// Whether the session needs its gateway link: something unconfirmed is in
/// its outbox, or it is neither over nor idle.
pub(super) async fn needs_link(actor: &SessionActor) -> bool {
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
    /// Sends frames to the gateway now if the link is up, else connects
    /// (which sends the whole outbox, these included).
    pub(super) async fn forward(self: &Rc<Self>, actor: &SessionActor, frames: &[ToGateway]) {
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

    pub(super) fn gateway_config(&self) -> Result<(String, String), String> {
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
                self.backoff.borrow_mut().connected();
                let epoch = {
                    let mut inner = self.inner.borrow_mut();
                    inner.epoch += 1;
                    inner.link_error = None;
                    inner.link = Some(LinkConn {
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
                self.inner.borrow_mut().link_error = Some(e.0.clone());
                let retry = self.backoff.borrow_mut().failed(random());
                if retry.log {
                    tracing::warn!(session = actor.session_id(), error = %e, failures = retry.failures, "gateway unreachable");
                }
                self.link_down(actor).await;
                self.set_alarm(retry.delay).await;
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
            if let Err(e) = actor.apply_input(SessionInput::GatewayLost).await {
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
                        .apply_input(SessionInput::GatewayRestored { resume })
                        .await
                    {
                        tracing::warn!(error = %e, "cannot mark the gateway restored");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot tell how to resume"),
            }
            self.settle(actor).await;
        }
        let mut frames = match actor.on_gateway_connected().await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        // The session's rules again (a restarted gateway has none), after
        // a resent `execute` and before the attach.
        let rules = self.rules_frame(actor).await;
        frames.insert(frames.len().saturating_sub(1), rules);
        self.send_gateway(&frames);
    }

    /// Sends frames on the link, if it is up; a command's id goes out
    /// qualified with its session ([`link::Link::outgoing`]).
    pub(super) fn send_gateway(&self, frames: &[ToGateway]) {
        let ws = self.inner.borrow().link.as_ref().map(|l| l.ws.clone());
        if let Some(ws) = ws {
            for f in frames {
                let text = self.inner.borrow_mut().commands.outgoing(f);
                let sent = match text {
                    Ok(text) => gateway_client::send_text(&ws, &text),
                    Err(e) => {
                        tracing::error!(error = %e, "a frame for the gateway does not encode");
                        continue;
                    }
                };
                if let Err(e) = sent {
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
            let mut texts = Vec::with_capacity(frames.len());
            let mut closed = None;
            for ev in frames {
                match ev {
                    LinkEvent::Text(text) => texts.push(text),
                    LinkEvent::Closed(why) => {
                        closed = Some(why);
                        break;
                    }
                }
            }
            let inputs = self.inner.borrow_mut().commands.read(texts);
            for input in inputs {
                match input {
                    Input::Events { session_id, events } if session_id == actor.session_id() => {
                        self.ingest(&actor, events).await;
                    }
                    Input::Events { session_id, .. } => {
                        tracing::debug!(other = %session_id, "events for another session");
                    }
                    other => self.handle_input(&actor, other).await,
                }
            }
            flowing_until = now_ms().saturating_add(BURST_WINDOW_MS);
            if let Some(why) = closed {
                break why;
            }
        };
        self.link_lost(epoch, &why).await;
    }

    /// Stores events as the gateway sent them (the text the browsers get),
    /// publishes them, then acks (and re-attaches after a gap).
    async fn ingest(&self, actor: &SessionActor, batch: Vec<(Gseq, RawEvent)>) {
        if batch.is_empty() {
            return;
        }
        let pushed = duraclaw_host::push::worth_pushing(batch.iter().map(|(g, e)| (*g, e.event())));
        match actor.ingest_raw(batch).await {
            Ok(out) => {
                tracing::debug!(
                    session = actor.session_id(),
                    stored = out.stored,
                    ack = out.ack,
                    "ingested"
                );
                // Persisted, published and acked in this turn, before any
                // promise is awaited (the push object's fetch): the
                // browsers' frames and the ack leave once the write has
                // committed (the output gate).
                self.publish(actor).await;
                self.send_gateway(&link::after_ingest(actor.session_id(), &out));
                if !pushed.is_empty() {
                    crate::push::events_persisted(&self.env, &actor.meta().await, pushed).await;
                }
                self.index(actor).await;
            }
            Err(e) => {
                // Not acked: the gateway keeps them and a re-attach resends.
                tracing::error!(session = actor.session_id(), error = %e, "cannot persist gateway events");
            }
        }
    }

    async fn handle_input(
        &self,
        actor: &SessionActor,
        input: Input<oneshot::Sender<CommandResult>>,
    ) {
        match input {
            Input::Result {
                result: r,
                ends_turn,
                waiter,
                ..
            } => {
                if let Err(e) = actor.on_command_result(&r).await {
                    tracing::warn!(error = %e, "cannot record a command result");
                }
                if !r.ok {
                    tracing::info!(command = %r.id, error = ?r.error, "the gateway refused a command");
                }
                if ends_turn {
                    self.end_refused_turn(actor, &r).await;
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
                if let Some(w) = waiter {
                    let _ = w.send(r);
                }
            }
            Input::Pong { .. } => {
                if let Some(l) = self.inner.borrow_mut().link.as_mut() {
                    l.last_pong_ms = now_ms();
                }
            }
            Input::Error(e) => {
                tracing::info!(code = %e.code, message = %e.message, "the gateway reported an error");
            }
            Input::Bad(e) => tracing::warn!(error = %e, "bad frame from the gateway"),
            // The object sends no requests on its link.
            Input::Events { .. } | Input::Worktrees { .. } | Input::Reply { .. } => {}
        }
    }

    /// Logs a refused turn's end.
    async fn end_refused_turn(&self, actor: &SessionActor, r: &CommandResult) {
        if let Err(e) = actor.end_refused_turn(r).await {
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
                inner.commands.on_closed();
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
                // It was up: redial promptly.
                let delay = self.backoff.borrow_mut().lost(random());
                self.set_alarm(delay).await;
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
            let ping = self
                .inner
                .borrow_mut()
                .commands
                .outgoing(&ToGateway::Ping { nonce });
            if !stale && ping.is_ok_and(|p| gateway_client::send_text(&ws, &p).is_ok()) {
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
}
