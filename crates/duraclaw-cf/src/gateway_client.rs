//! An outbound WebSocket to the gateway, from a Worker or a Durable Object.
//!
//! The `worker` crate's `WebSocket::connect` cannot set headers, so the link
//! is a `fetch` of the gateway's URL (`http://` or `https://`; a `ws://` or
//! `wss://` URL is rewritten to them) with `Upgrade: websocket` and
//! `Authorization: Bearer <secret>`; the response carries the socket.
//!
//! A reader task turns the socket's events into [`LinkEvent`]s on a channel
//! the owner drains, so the socket and its reader need no borrow of each
//! other and the owner decides how to batch. The channel always ends with
//! one [`LinkEvent::Closed`]. Frames stay text: what they mean is
//! [`duraclaw_host::link`]'s to say, as on the local host.

use std::future::Future;
use std::time::Duration;

use duraclaw_core::protocol::{GatewayRequest, ToGateway, WireError, Worktree, encode_frame};
use duraclaw_host::link::{self, Input};
use futures::StreamExt;
use futures::channel::mpsc;
use futures::future::Either;
use worker::{Delay, Fetch, Headers, Method, Request, RequestInit, WebSocket, WebsocketEvent};

/// How long a connect (upgrade and hello) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request on the link (worktrees, a command) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What the reader task reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// A text frame from the gateway.
    Text(String),
    /// The socket closed or failed; nothing follows.
    Closed(String),
}

/// Why a connect failed, said without the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError(pub String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LinkError {}

/// An open, greeted link to the gateway.
#[derive(Debug)]
pub struct GatewayConn {
    ws: WebSocket,
    /// The gateway's frames, then one `Closed`.
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
    /// The gateway's software, from its hello.
    pub agent: Option<String>,
    /// Why the gateway's executor cannot run sessions, from its hello.
    pub executor_error: Option<String>,
}

/// `Some(output)` if `fut` finishes within `limit`, else `None`.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    let delay = std::pin::pin!(Delay::from(limit));
    match futures::future::select(fut, delay).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// The URL `fetch` accepts for a WebSocket upgrade.
pub fn upgrade_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        url.to_owned()
    }
}

impl GatewayConn {
    /// Dials `url` with `secret`, exchanges hellos, and starts the reader.
    /// The upgrade and the hello each have [`CONNECT_TIMEOUT`]; a socket
    /// that was opened is closed again on any failure.
    pub async fn connect(url: &str, secret: &str) -> Result<GatewayConn, LinkError> {
        let timeout = || {
            LinkError(format!(
                "the gateway at {url} did not answer within {CONNECT_TIMEOUT:?}"
            ))
        };
        let ws = within(CONNECT_TIMEOUT, open_socket(url, secret))
            .await
            .ok_or_else(timeout)??;
        let (tx, events) = mpsc::unbounded();
        worker::wasm_bindgen_futures::spawn_local(read(ws.clone(), tx));
        let mut conn = GatewayConn {
            ws,
            events,
            agent: None,
            executor_error: None,
        };
        match conn.greet(url).await {
            Ok((agent, executor_error)) => {
                conn.agent = agent;
                conn.executor_error = executor_error;
                Ok(conn)
            }
            Err(e) => {
                conn.close();
                Err(e)
            }
        }
    }

    /// Sends our hello and reads the gateway's: its software name, and why
    /// its executor cannot run sessions (if it cannot).
    async fn greet(&mut self, url: &str) -> Result<(Option<String>, Option<String>), LinkError> {
        let hello = link::hello().map_err(|e| LinkError(e.to_string()))?;
        send_text(&self.ws, &hello)
            .map_err(|e| LinkError(format!("cannot greet the gateway: {e}")))?;
        let first = within(CONNECT_TIMEOUT, self.events.next())
            .await
            .ok_or_else(|| {
                LinkError(format!(
                    "the gateway at {url} did not say hello within {CONNECT_TIMEOUT:?}"
                ))
            })?;
        match first {
            Some(LinkEvent::Text(text)) => {
                let info = link::read_hello(&text).map_err(|e| LinkError(e.to_string()))?;
                Ok((info.agent, info.executor_error))
            }
            Some(LinkEvent::Closed(why)) => Err(LinkError(format!(
                "the gateway closed the link before its hello: {why}"
            ))),
            None => Err(LinkError("the gateway link ended before its hello".into())),
        }
    }

    /// The socket, to send on from elsewhere.
    pub fn socket(&self) -> &WebSocket {
        &self.ws
    }

    /// Closes the socket (normal closure).
    pub fn close(&self) {
        let _ = self.ws.close(Some(1000), Some("done"));
    }

    /// Asks for the worktrees and waits for them.
    pub async fn worktrees(&mut self, id: &str) -> Result<Vec<Worktree>, LinkError> {
        let frame = ToGateway::ListWorktrees { id: id.to_owned() };
        self.ask(&frame, "list its worktrees", |input| match input {
            Input::Worktrees { id: got, worktrees } if got == id => Some(worktrees),
            _ => None,
        })
        .await
    }

    /// Sends a `request` and waits for its reply: the gateway's answer
    /// (its value, or why it refused).
    pub async fn request(
        &mut self,
        id: &str,
        request: GatewayRequest,
    ) -> Result<Result<serde_json::Value, WireError>, LinkError> {
        let frame = ToGateway::Request {
            id: id.to_owned(),
            request,
        };
        self.ask(&frame, "reply", |input| match input {
            Input::Reply { id: got, result } if got == id => Some(result),
            _ => None,
        })
        .await
    }

    /// Sends `frame` and waits, within [`REQUEST_TIMEOUT`], for the first
    /// input `pick` takes; a gateway error, a closed link or the timeout
    /// (the gateway did not `what`) fail it. Nothing else is sent on this
    /// link, so there are no command results to route.
    async fn ask<T>(
        &mut self,
        frame: &ToGateway,
        what: &str,
        mut pick: impl FnMut(Input<()>) -> Option<T>,
    ) -> Result<T, LinkError> {
        let text = encode_frame(frame).map_err(|e| LinkError(e.to_string()))?;
        send_text(&self.ws, &text)?;
        let mut reader = link::Link::<()>::new();
        let wait = async {
            while let Some(ev) = self.events.next().await {
                match ev {
                    LinkEvent::Text(text) => {
                        for input in reader.read_one(&text) {
                            if let Input::Error(e) = &input {
                                return Err(wire(e));
                            }
                            if let Some(found) = pick(input) {
                                return Ok(found);
                            }
                        }
                    }
                    LinkEvent::Closed(why) => {
                        return Err(LinkError(format!("the gateway link closed: {why}")));
                    }
                }
            }
            Err(LinkError("the gateway link ended".into()))
        };
        within(REQUEST_TIMEOUT, wait).await.unwrap_or_else(|| {
            Err(LinkError(format!(
                "the gateway did not {what} within {REQUEST_TIMEOUT:?}"
            )))
        })
    }
}

/// One `request` over a short-lived link.
pub async fn request(
    url: &str,
    secret: &str,
    request: GatewayRequest,
) -> Result<Result<serde_json::Value, WireError>, LinkError> {
    let mut conn = GatewayConn::connect(url, secret).await?;
    let result = conn.request("request", request).await;
    conn.close();
    result
}

/// The upgrade: a `fetch` with `Upgrade: websocket` and the bearer.
async fn open_socket(url: &str, secret: &str) -> Result<WebSocket, LinkError> {
    let fail = |what: &str, e: worker::Error| LinkError(format!("{what}: {e}"));
    let headers = Headers::new();
    headers
        .set("Upgrade", "websocket")
        .map_err(|e| fail("cannot build the upgrade", e))?;
    headers
        .set("Authorization", &format!("Bearer {secret}"))
        .map_err(|_| LinkError("the gateway secret is not a valid header value".into()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let req = Request::new_with_init(&upgrade_url(url), &init)
        .map_err(|e| fail(&format!("bad gateway URL {url}"), e))?;
    let resp = Fetch::Request(req)
        .send()
        .await
        .map_err(|e| fail(&format!("cannot reach the gateway at {url}"), e))?;
    let status = resp.status_code();
    let Some(ws) = resp.websocket() else {
        return Err(LinkError(if status == 401 {
            "the gateway refused the secret (401)".into()
        } else {
            format!("the gateway at {url} did not upgrade (HTTP {status})")
        }));
    };
    ws.accept()
        .map_err(|e| fail("cannot accept the socket", e))?;
    Ok(ws)
}

fn wire(e: &WireError) -> LinkError {
    LinkError(format!("{} ({})", e.message, e.code))
}

/// Sends one frame's text on `ws`.
pub fn send_text(ws: &WebSocket, text: &str) -> Result<(), LinkError> {
    ws.send_with_str(text)
        .map_err(|e| LinkError(format!("cannot send to the gateway: {e}")))
}

/// The reader task: every frame, then one `Closed`.
async fn read(ws: WebSocket, tx: mpsc::UnboundedSender<LinkEvent>) {
    let why = match ws.events() {
        Err(e) => format!("cannot read the socket: {e}"),
        Ok(mut events) => loop {
            match events.next().await {
                Some(Ok(WebsocketEvent::Message(m))) => {
                    let Some(text) = m.text() else { continue };
                    if tx.unbounded_send(LinkEvent::Text(text)).is_err() {
                        break "the link's owner went away".to_owned();
                    }
                }
                Some(Ok(WebsocketEvent::Close(c))) => {
                    break format!("closed ({}): {}", c.code(), c.reason());
                }
                Some(Err(e)) => break format!("socket error: {e}"),
                None => break "the socket ended".to_owned(),
            }
        },
    };
    let _ = tx.unbounded_send(LinkEvent::Closed(why));
}

/// What the UI shows about the gateway (`GET /api/status`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GatewayStatus {
    /// A link could be opened just now.
    pub connected: bool,
    /// Where the gateway is.
    pub url: String,
    /// Why it could not, if it could not.
    pub error: Option<String>,
    /// The gateway's software, from its hello.
    pub agent: Option<String>,
    /// Which executor it runs (not known from here).
    pub executor: Option<String>,
    /// Why that executor cannot run, from the gateway's hello.
    pub executor_error: Option<String>,
}

/// Opens a short-lived link to see whether the gateway answers.
pub async fn probe(url: &str, secret: &str) -> GatewayStatus {
    match GatewayConn::connect(url, secret).await {
        Ok(conn) => {
            conn.close();
            GatewayStatus {
                connected: true,
                url: url.to_owned(),
                agent: conn.agent.clone(),
                executor_error: conn.executor_error.clone(),
                ..GatewayStatus::default()
            }
        }
        Err(e) => GatewayStatus {
            connected: false,
            url: url.to_owned(),
            error: Some(e.0),
            ..GatewayStatus::default()
        },
    }
}

/// The gateway's worktrees over a short-lived link.
pub async fn list_worktrees(url: &str, secret: &str) -> Result<Vec<Worktree>, LinkError> {
    let mut conn = GatewayConn::connect(url, secret).await?;
    let result = conn.worktrees("worktrees").await;
    conn.close();
    result
}
