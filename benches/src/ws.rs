//! Loopback WebSockets: a server and a client end on 127.0.0.1, and a
//! client task that reads and counts frames.

use std::net::SocketAddr;
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The server end (an accepted socket).
pub type ServerWs = WebSocketStream<TcpStream>;
/// The client end.
pub type ClientWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected pair on 127.0.0.1. `client_nodelay` disables Nagle on the
/// client socket (the orchestrator does so when it dials the gateway); the
/// server side keeps the default, as the gateway's and axum's listeners do.
pub async fn pair(client_nodelay: bool) -> (ServerWs, ClientWs) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr: SocketAddr = listener.local_addr().expect("local address");
    let accept = async {
        let (stream, _) = listener.accept().await.expect("accept");
        tokio_tungstenite::accept_async_with_config(
            stream,
            Some(duraclaw_gateway::link::ws_config()),
        )
        .await
        .expect("server handshake")
    };
    let connect = async {
        tokio_tungstenite::connect_async_with_config(
            format!("ws://{addr}/"),
            Some(duraclaw_gateway::link::ws_config()),
            client_nodelay,
        )
        .await
        .expect("client handshake")
        .0
    };
    tokio::join!(accept, connect)
}

/// What the client received for one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Text frames.
    pub frames: usize,
    /// Their bytes.
    pub bytes: usize,
}

type Job = (usize, oneshot::Sender<Received>);

/// How long a [`Counter`] job may wait for its frames.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// A [`Counter`] job whose frames did not come.
#[derive(Debug)]
pub struct Stalled(pub String);

/// A client task that, for each job, reads the given number of text frames
/// and reports them.
#[derive(Debug, Clone)]
pub struct Counter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Counter {
    /// Starts reading `client` on the current runtime.
    pub fn spawn<S>(mut client: S) -> Self
    where
        S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin
            + Send
            + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some((want, reply)) = rx.recv().await {
                let mut got = Received::default();
                while got.frames < want {
                    match client.next().await {
                        Some(Ok(Message::Text(t))) => {
                            got.frames += 1;
                            got.bytes += t.len();
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => panic!("the client's socket failed: {e}"),
                        None => panic!("the server closed the socket"),
                    }
                }
                let _ = reply.send(got);
            }
        });
        Counter { jobs: tx }
    }

    /// Starts a job: the returned future answers once `frames` frames
    /// arrived, or fails after [`STALL`] without them (a path that stopped
    /// delivering ends the bench instead of hanging it).
    pub fn expect(
        &self,
        frames: usize,
    ) -> impl std::future::Future<Output = Result<Received, Stalled>> + use<> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((frames, tx))
            .expect("the counting client is gone");
        async move {
            match tokio::time::timeout(STALL, rx).await {
                Ok(Ok(got)) => Ok(got),
                Ok(Err(_)) => Err(Stalled(format!(
                    "the counting client ended before {frames} frames"
                ))),
                Err(_) => Err(Stalled(format!(
                    "{frames} frames did not arrive within {STALL:?}"
                ))),
            }
        }
    }
}

/// A writer task owning a server socket's sink, fed through a bounded
/// queue, as the orchestrator serves a browser and as both ends of the
/// gateway link write: every frame already queued is fed into the socket's
/// write buffer, then one flush.
pub fn spawn_writer(server: ServerWs, queue: usize) -> mpsc::Sender<String> {
    let (tx, mut rx) = mpsc::channel::<String>(queue);
    let (mut sink, mut stream) = server.split();
    tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.feed(Message::text(text)).await.is_err() {
                break;
            }
            while let Ok(text) = rx.try_recv() {
                if sink.feed(Message::text(text)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
    });
    // Read (and drop) whatever the client sends, so control frames flow.
    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    tx
}

/// Like [`spawn_writer`], but one `send` (a write and a flush) per frame:
/// the orchestrator's browser writer before it batched, kept to show the
/// difference in the same run.
pub fn spawn_send_writer(server: ServerWs, queue: usize) -> mpsc::Sender<String> {
    let (tx, mut rx) = mpsc::channel::<String>(queue);
    let (mut sink, mut stream) = server.split();
    tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    tx
}

/// Time since `start` in nanoseconds, saturating.
pub fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
