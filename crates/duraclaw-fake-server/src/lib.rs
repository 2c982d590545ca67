//! What the fake model APIs (`duraclaw-fake-anthropic`, `-openai`,
//! `-gemini`) share: a server on an ephemeral port of 127.0.0.1 that stops
//! when dropped ([`FakeServer`]), a script of turns that records every
//! request ([`Script`]), and the pieces of their answers (JSON and
//! server-sent-event responses, request headers, text cut into deltas).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A running axum app on 127.0.0.1.
///
/// Dropping it starts a graceful shutdown: the listener closes, and answers
/// that watch the stop signal ([`FakeServer::start_with_stop`]) end.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Serves `app` on an ephemeral port of 127.0.0.1; `name` says which
    /// fake it is in logs.
    pub async fn start(name: &'static str, app: Router) -> std::io::Result<Self> {
        FakeServer::start_with_stop(name, app, watch::Sender::new(false)).await
    }

    /// Like [`FakeServer::start`], shutting down when `shutdown` turns
    /// `true` (it does when the server is dropped), so answers that
    /// subscribed to it before can end with the server.
    pub async fn start_with_stop(
        name: &'static str,
        app: Router,
        shutdown: watch::Sender<bool>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let mut stop = shutdown.subscribe();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, fake = name, "fake API server failed");
            }
        });
        Ok(FakeServer {
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down and waits for the server task to end.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// A script of turns, taken one a model request, and every request the
/// fake received (`R`), in order.
#[derive(Debug)]
pub struct Script<T, R> {
    state: Mutex<ScriptState<T, R>>,
}

#[derive(Debug)]
struct ScriptState<T, R> {
    turns: Vec<T>,
    next: usize,
    requests: Vec<R>,
}

impl<T: Clone, R: Clone> Script<T, R> {
    /// A script of `turns`, none taken, nothing recorded.
    pub fn new(turns: impl IntoIterator<Item = T>) -> Self {
        Script {
            state: Mutex::new(ScriptState {
                turns: turns.into_iter().collect(),
                next: 0,
                requests: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ScriptState<T, R>> {
        // Every update is a plain assignment or push, so a poisoned lock
        // still holds consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a request that takes no turn.
    pub fn record(&self, request: R) {
        self.lock().requests.push(request);
    }

    /// Takes the next turn, if the script has one, and records the request
    /// `request` makes of the turn's index (`None` after the script).
    pub fn take(&self, request: impl FnOnce(Option<usize>) -> R) -> Option<(usize, T)> {
        let mut state = self.lock();
        let i = state.next;
        let turn = state.turns.get(i).cloned();
        if turn.is_some() {
            state.next += 1;
        }
        let recorded = request(turn.as_ref().map(|_| i));
        state.requests.push(recorded);
        turn.map(|t| (i, t))
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<R> {
        self.lock().requests.clone()
    }
}

/// A [`FakeServer`] answering from a [`Script`]: the shape of a fake whose
/// every model request takes the next turn.
pub struct ScriptedServer<T, R> {
    server: FakeServer,
    script: Arc<Script<T, R>>,
}

impl<T, R> std::fmt::Debug for ScriptedServer<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedServer")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl<T, R> ScriptedServer<T, R>
where
    T: Clone + Send + 'static,
    R: Clone + Send + 'static,
{
    /// Serves `app`, its state the script of `turns`, on 127.0.0.1.
    pub async fn start(
        name: &'static str,
        turns: impl IntoIterator<Item = T>,
        app: Router<Arc<Script<T, R>>>,
    ) -> std::io::Result<Self> {
        let script = Arc::new(Script::new(turns));
        let server = FakeServer::start(name, app.with_state(Arc::clone(&script))).await?;
        Ok(ScriptedServer { server, script })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<R> {
        self.script.requests()
    }

    /// Shuts down and waits for the server task to end.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// The headers of a request, names lower case, in arrival order.
pub fn headers_of(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The value of header `name` (lower case) among `headers`, if sent.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `body` as a JSON response with `status`.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The status `code` names; 500 when it names none.
pub fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A `text/event-stream` response of `events`.
pub fn event_stream(
    events: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    let mut resp = Response::new(Body::from_stream(events));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// What `rx` receives, as a stream that ends when every sender is gone.
pub fn received(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `text` in `chunks` pieces (at least one), split at character
/// boundaries.
pub fn pieces(text: &str, chunks: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = chunks.max(1).min(chars.len().max(1));
    let size = chars.len().div_ceil(n).max(1);
    let mut out: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_into_pieces_that_join_to_it() {
        assert_eq!(pieces("hello world", 3).concat(), "hello world");
        assert_eq!(pieces("hello world", 3).len(), 3);
        assert_eq!(pieces("", 3), [""]);
        assert_eq!(pieces("é", 5), ["é"]);
    }

    #[test]
    fn a_script_hands_out_its_turns_once_and_records_every_request() {
        let script: Script<&str, (u8, Option<usize>)> = Script::new(["a", "b"]);
        script.record((0, None));
        assert_eq!(script.take(|t| (1, t)), Some((0, "a")));
        assert_eq!(script.take(|t| (2, t)), Some((1, "b")));
        assert_eq!(script.take(|t| (3, t)), None);
        assert_eq!(
            script.requests(),
            [(0, None), (1, Some(0)), (2, Some(1)), (3, None)]
        );
    }
}
