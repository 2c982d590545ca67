//! The gateway's WebSocket listener: bearer check on upgrade, the versioned
//! hello, bounded frames, and one forwarder per attached session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_core::protocol::{
    FromGateway, Hello, LINK_MAX_MESSAGE_BYTES, LINK_READ_BUFFER_BYTES, Role, ToGateway, WireError,
    check_hello_version, decode_frame, encode_frame, gateway_event_frame,
};
use futures::{SinkExt, StreamExt};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::server::Gateway;

/// How long a new link may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one link before senders wait.
const LINK_QUEUE: usize = 1024;

/// A secret compared in constant time; never printed.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret; refuses one shorter than 16 bytes.
    pub fn new(secret: &str) -> Result<Self> {
        if secret.trim().is_empty() {
            return Err(Error::Invalid(
                "no gateway secret: set CC_GATEWAY_SECRET (the gateway refuses to start without one)".into(),
            ));
        }
        if secret.len() < 16 {
            return Err(Error::Invalid(format!(
                "the gateway secret is {} bytes; use at least 16 random bytes",
                secret.len()
            )));
        }
        Ok(Secret(secret.into()))
    }

    /// Whether `candidate` is the secret, in time independent of where it
    /// differs.
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }

    /// The secret itself, for a client to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Refuses a non-loopback address unless explicitly allowed.
pub fn check_bind(addr: SocketAddr, allow_public: bool) -> Result<()> {
    if addr.ip().is_loopback() || allow_public {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "refusing to listen on {addr}: not a loopback address. The gateway runs sessions \
             that can execute code; reach it through a tunnel, or pass --allow-public-bind if \
             you really mean it"
        )))
    }
}

/// The link's WebSocket configuration: messages bounded by
/// [`LINK_MAX_MESSAGE_BYTES`], reads of at most [`LINK_READ_BUFFER_BYTES`]
/// (the orchestrator's end uses the same limits).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(LINK_MAX_MESSAGE_BYTES))
        .max_frame_size(Some(LINK_MAX_MESSAGE_BYTES))
        .read_buffer_size(LINK_READ_BUFFER_BYTES)
}

/// Accepts links on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, gateway: Gateway, secret: Secret) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let gateway = gateway.clone();
                let secret = secret.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, peer, gateway, secret).await {
                        tracing::info!(%peer, error = %e, "link ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn unauthorized(why: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(format!("{why}\n")));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp
}

// The handshake callback's error type is the library's HTTP response.
#[allow(clippy::result_large_err)]
async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    gateway: Gateway,
    secret: Secret,
) -> Result<()> {
    let check = |req: &Request, resp: Response| -> std::result::Result<Response, ErrorResponse> {
        match bearer(req) {
            Some(token) if secret.matches(token) => Ok(resp),
            Some(_) => Err(unauthorized("wrong bearer token")),
            None => Err(unauthorized(
                "missing bearer token: send Authorization: Bearer <CC_GATEWAY_SECRET>",
            )),
        }
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(ws_config()))
        .await
        .map_err(|e| Error::Unauthorized(format!("upgrade from {peer} refused: {e}")))?;
    tracing::info!(%peer, "orchestrator connected");
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(LINK_QUEUE);
    // Every frame already queued goes into the socket's write buffer, then
    // one flush: one write system call per burst, not per frame, and no
    // added latency (the flush happens as soon as the queue is empty).
    let writer = tokio::spawn(async move {
        'write: while let Some(msg) = rx.recv().await {
            let mut closing = matches!(msg, Message::Close(_));
            if sink.feed(msg).await.is_err() {
                break;
            }
            while !closing && let Ok(msg) = rx.try_recv() {
                closing = matches!(msg, Message::Close(_));
                if sink.feed(msg).await.is_err() {
                    break 'write;
                }
            }
            if sink.flush().await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let loads = gateway.loads();
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let mut link = Link {
        gateway,
        tx,
        forwarders: HashMap::new(),
        next_forwarder: 0,
        dormant: HashMap::new(),
        ended_tx,
        ended,
        loads,
    };
    let result = link.run(&mut stream).await;
    for (_, (_, f)) in link.forwarders.drain() {
        f.abort();
    }
    drop(link);
    let _ = writer.await;
    result
}

/// A forwarder ended because its session was put away: the session, the
/// forwarder's number, and the last gseq it sent.
type Ended = (String, u64, u64);

struct Link {
    gateway: Gateway,
    tx: mpsc::Sender<Message>,
    /// Each attached session's forwarder, with its number.
    forwarders: HashMap<String, (u64, JoinHandle<()>)>,
    /// The number of the next forwarder.
    next_forwarder: u64,
    /// Attached sessions whose forwarder ended because the session was put
    /// away, with the last gseq sent: re-attached from there when the
    /// session is loaded again.
    dormant: HashMap<String, u64>,
    /// A forwarder whose session was put away says so here.
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended: mpsc::UnboundedReceiver<Ended>,
    /// Sessions loaded from the store.
    loads: tokio::sync::broadcast::Receiver<String>,
}

impl Link {
    async fn send(&self, frame: &FromGateway) -> Result<()> {
        let text = encode_frame(frame)?;
        self.tx
            .send(Message::text(text))
            .await
            .map_err(|_| Error::Closed("gateway link"))
    }

    async fn close(&self, code: CloseCode, reason: &str) {
        let _ = self
            .tx
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.chars().take(120).collect::<String>().into(),
            })))
            .await;
    }

    async fn run<S>(&mut self, stream: &mut S) -> Result<()>
    where
        S: futures::Stream<
                Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>,
            > + Unpin,
    {
        // The hello comes first, within a deadline.
        let first = match tokio::time::timeout(HELLO_TIMEOUT, next_text(stream)).await {
            Ok(r) => r?,
            Err(_) => {
                self.close(CloseCode::Policy, "no hello").await;
                return Err(Error::Timeout {
                    what: "hello",
                    ms: HELLO_TIMEOUT.as_millis() as u64,
                });
            }
        };
        let Some(first) = first else { return Ok(()) };
        if let Err(e) = check_hello_version(&first) {
            self.send(&FromGateway::Error(WireError::from(&e))).await?;
            self.close(CloseCode::Protocol, "bad hello").await;
            return Err(e);
        }
        match decode_frame::<ToGateway>(&first, "gateway frame") {
            Ok(ToGateway::Hello(h)) => {
                if let Err(e) = h.check_version() {
                    self.send(&FromGateway::Error(WireError::from(&e))).await?;
                    self.close(CloseCode::Protocol, "unsupported protocol version")
                        .await;
                    return Err(e);
                }
            }
            Ok(_) => {
                let e = Error::Invalid("the first frame must be a hello".into());
                self.send(&FromGateway::Error(WireError::from(&e))).await?;
                self.close(CloseCode::Protocol, "expected hello").await;
                return Err(e);
            }
            Err(e) => {
                self.send(&FromGateway::Error(WireError::from(&e))).await?;
                self.close(CloseCode::Protocol, "bad hello").await;
                return Err(e);
            }
        }
        let mut hello = Hello::new(Role::Gateway);
        hello.agent = Some(format!("duraclaw-gateway/{}", env!("CARGO_PKG_VERSION")));
        hello.executor_error = self.gateway.executor_error().await;
        self.send(&FromGateway::Hello(hello)).await?;

        loop {
            let text = tokio::select! {
                text = next_text(stream) => match text? {
                    Some(t) => t,
                    None => break,
                },
                Some((id, number, last)) = self.ended.recv() => {
                    self.put_away(id, number, last).await?;
                    continue;
                }
                loaded = self.loads.recv() => {
                    self.loaded(loaded).await?;
                    continue;
                }
            };
            let frame = match decode_frame::<ToGateway>(&text, "gateway frame") {
                Ok(f) => f,
                Err(e) => {
                    // A bad frame is answered, not fatal: the link goes on.
                    self.send(&FromGateway::Error(WireError::from(&e))).await?;
                    continue;
                }
            };
            self.dispatch(frame).await?;
        }
        Ok(())
    }

    async fn dispatch(&mut self, frame: ToGateway) -> Result<()> {
        match frame {
            ToGateway::Hello(_) => Ok(()),
            ToGateway::Command(env) => {
                let result = self.gateway.apply(env).await;
                self.send(&FromGateway::CommandResult(result)).await
            }
            ToGateway::Attach {
                session_id,
                after_gseq,
            } => {
                self.attach(session_id.clone(), after_gseq).await?;
                self.gateway.acked(&session_id, after_gseq).await;
                Ok(())
            }
            ToGateway::Ack { session_id, gseq } => {
                tracing::debug!(session = %session_id, gseq, "acked");
                self.gateway.acked(&session_id, gseq).await;
                Ok(())
            }
            ToGateway::ListWorktrees { id } => match self.gateway.worktrees().await {
                Ok(worktrees) => self.send(&FromGateway::Worktrees { id, worktrees }).await,
                Err(e) => self.send(&FromGateway::Error(WireError::from(&e))).await,
            },
            ToGateway::Request { id, request } => {
                let reply = match self.gateway.request(request).await {
                    Ok(value) => FromGateway::Reply {
                        id,
                        value: Some(value),
                        error: None,
                    },
                    Err(error) => FromGateway::Reply {
                        id,
                        value: None,
                        error: Some(error),
                    },
                };
                self.send(&reply).await
            }
            ToGateway::Ping { nonce } => self.send(&FromGateway::Pong { nonce }).await,
            ToGateway::Rules { session_id, rules } => {
                self.gateway.set_rules(&session_id, &rules).await;
                Ok(())
            }
            _ => {
                let e = Error::Invalid("frame type not handled by this gateway".into());
                self.send(&FromGateway::Error(WireError::from(&e))).await
            }
        }
    }

    async fn attach(&mut self, session_id: String, after: u64) -> Result<()> {
        // A session put away of which the host has everything is not
        // loaded: its forwarder waits as dormant until it is.
        if let Ok(Some(head)) = self.gateway.parked_head(&session_id).await
            && after >= head
        {
            if let Some((_, old)) = self.forwarders.remove(&session_id) {
                old.abort();
            }
            self.dormant.insert(session_id, after);
            return Ok(());
        }
        let session = match self.gateway.session(&session_id).await {
            Ok(s) => s,
            Err(e) => return self.send(&FromGateway::Error(WireError::from(&e))).await,
        };
        self.forward(&session, session_id, after).await
    }

    /// Forwards `session`'s events after gseq `after` (replacing a
    /// forwarder it had). Once the session is put away its forwarder ends
    /// and reports the last gseq it sent ([`Link::put_away`]).
    async fn forward(
        &mut self,
        session: &crate::server::GatewaySession,
        session_id: String,
        after: u64,
    ) -> Result<()> {
        self.dormant.remove(&session_id);
        if let Some((_, old)) = self.forwarders.remove(&session_id) {
            old.abort();
        }
        let gseqs = match session.gseqs_for_forwarder(after).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(session = %session_id, error = %e, "cannot record the session's gseqs");
                return self.send(&FromGateway::Error(WireError::from(&e))).await;
            }
        };
        let number = self.next_forwarder;
        self.next_forwarder += 1;
        let mut sub = session.log().subscribe(gseqs.seq_upto(after));
        let tx = self.tx.clone();
        let ended = self.ended_tx.clone();
        let id = session_id.clone();
        let task = tokio::spawn(async move {
            let mut last = after;
            while let Some(item) = sub.next().await {
                let (gseq, frame) = match item.and_then(|e| {
                    let gseq = gseqs.gseq_of(e.seq);
                    Ok((gseq, gateway_event_frame(&id, gseq, &e.json)?))
                }) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(session = %id, error = %e, "outbox read failed");
                        return;
                    }
                };
                if tx.send(Message::text(frame)).await.is_err() {
                    return;
                }
                last = gseq;
            }
            // The session was put away (its log closed).
            let _ = ended.send((id, number, last));
        });
        self.forwarders.insert(session_id, (number, task));
        Ok(())
    }

    /// A forwarder's session was put away after gseq `last` was sent: it
    /// waits as dormant, or follows the session at once if it is loaded
    /// again already.
    async fn put_away(&mut self, id: String, number: u64, last: u64) -> Result<()> {
        if self.forwarders.get(&id).is_none_or(|(n, _)| *n != number) {
            // Attached again since: that forwarder follows it.
            return Ok(());
        }
        self.forwarders.remove(&id);
        match self.gateway.loaded(&id).await {
            Some(session) => self.forward(&session, id, last).await?,
            None => {
                self.dormant.insert(id, last);
            }
        }
        Ok(())
    }

    /// A session was loaded from the store: a dormant forwarder of it
    /// follows it again. Missed loads (the link lagged) are looked up.
    async fn loaded(
        &mut self,
        loaded: std::result::Result<String, tokio::sync::broadcast::error::RecvError>,
    ) -> Result<()> {
        let ids: Vec<String> = match loaded {
            Ok(id) if self.dormant.contains_key(&id) => vec![id],
            Ok(_) => return Ok(()),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                self.dormant.keys().cloned().collect()
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        };
        for id in ids {
            if let Some(session) = self.gateway.loaded(&id).await
                && let Some(last) = self.dormant.get(&id).copied()
            {
                self.forward(&session, id, last).await?;
            }
        }
        Ok(())
    }
}

/// The next text frame; pings are answered by the library, binary frames
/// refused, a close or the end of the stream is `None`.
async fn next_text<S>(stream: &mut S) -> Result<Option<String>>
where
    S: futures::Stream<Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    loop {
        match stream.next().await {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(Error::Invalid(format!("link error: {e}")));
            }
            Some(Ok(Message::Text(t))) => return Ok(Some(t.as_str().to_owned())),
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Binary(_))) => {
                return Err(Error::Invalid(
                    "binary frames are not part of the protocol".into(),
                ));
            }
            Some(Ok(_)) => continue,
        }
    }
}
