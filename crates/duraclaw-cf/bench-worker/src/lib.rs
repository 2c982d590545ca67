//! The bench worker: the product's Worker (`duraclaw_cf::router::handle`)
//! and Durable Objects (`SessionHost`, `UserHost`), exactly as
//! `examples/duraclaw-full/cloudflare` exports them, plus bench-only routes
//! that measure the raw baselines inside the same session object:
//!
//! - `GET /bench/<session>/scan`: one raw DO SQL scan of the session's
//!   events (`SELECT seq, json … ORDER BY seq`), every row read; answers
//!   `{"rows", "bytes"}`.
//! - `GET /bench/<session>/raw-replay` (WebSocket upgrade): the same scan,
//!   each row framed as the browser's event frame and sent on a plain
//!   accepted socket, before the response returns (as the real replay
//!   does): the physical limit of a replay.
//! - `GET /bench/<session>/echo?url=<http url>`: opens an outbound WebSocket
//!   from the object to `url` (the way the gateway link is opened) and
//!   echoes every text frame: the raw round trip through the object that
//!   the gateway link's append + ack is compared with.
//!
//! Every other path is the product's. Nothing here is deployed.

#![cfg(target_arch = "wasm32")]
// `#[durable_object]` exports methods to JavaScript that carry no docs.
#![allow(missing_docs)]

use std::rc::Rc;

use duraclaw_cf::gateway_client::upgrade_url;
use duraclaw_cf::session::SessionHost;
use duraclaw_cf::user::UserHost;
use duraclaw_core::protocol::browser_event_frame;
use futures::StreamExt;
use worker::{
    Context, DurableObject, Env, Fetch, Headers, Method, Request, RequestInit, Response, Result,
    Socket, SqlStorage, SqlStorageValue, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
    WebsocketEvent, durable_object, event,
};

/// The product's user object (the inbox session objects update).
#[durable_object]
pub struct UserObject {
    host: Rc<UserHost>,
}

impl DurableObject for UserObject {
    fn new(state: State, env: Env) -> Self {
        UserObject {
            host: UserHost::new(state, env),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.host.fetch(req).await
    }

    async fn alarm(&self) -> Result<Response> {
        Response::empty()
    }

    async fn connect(&self, _socket: Socket) -> Result<()> {
        Ok(())
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.host.websocket_message(ws, message).await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        self.host.websocket_close(ws, code).await
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: worker::Error) -> Result<()> {
        Ok(())
    }
}

/// The product's session object, with the bench routes in front.
#[durable_object]
pub struct SessionObject {
    host: Rc<SessionHost>,
    sql: SqlStorage,
}

impl DurableObject for SessionObject {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        SessionObject {
            host: SessionHost::new(state, env),
            sql,
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/bench/scan" => self.scan(),
            "/bench/raw-replay" => self.raw_replay(),
            "/bench/echo" => echo(&req).await,
            _ => self.host.fetch(req).await,
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.host.alarm().await
    }

    // Every handler the runtime could call is implemented: the defaults panic.
    async fn connect(&self, _socket: Socket) -> Result<()> {
        Ok(())
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        self.host.websocket_message(ws, message).await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        self.host.websocket_close(ws, code).await
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: worker::Error) -> Result<()> {
        Ok(())
    }
}

impl SessionObject {
    /// Every event row, read through `each(seq, json)`.
    fn each_event(&self, mut each: impl FnMut(u64, &str) -> Result<()>) -> Result<()> {
        let cursor = self
            .sql
            .exec("SELECT seq, json FROM events ORDER BY seq", None)?;
        for row in cursor.raw() {
            let row = row?;
            let (Some(SqlStorageValue::Integer(seq)), Some(SqlStorageValue::String(json))) =
                (row.first(), row.get(1))
            else {
                return Err(worker::Error::RustError(format!(
                    "an event row is not (seq, json): {row:?}"
                )));
            };
            each(u64::try_from(*seq).unwrap_or(0), json)?;
        }
        Ok(())
    }

    fn scan(&self) -> Result<Response> {
        let (mut rows, mut bytes) = (0u64, 0u64);
        self.each_event(|_, json| {
            rows += 1;
            bytes += json.len() as u64;
            Ok(())
        })?;
        Response::from_json(&serde_json::json!({"rows": rows, "bytes": bytes}))
    }

    fn raw_replay(&self) -> Result<Response> {
        let pair = WebSocketPair::new()?;
        pair.server.accept()?;
        self.each_event(|seq, json| pair.server.send_with_str(browser_event_frame(seq, json)))?;
        Response::from_websocket(pair.client)
    }
}

/// Opens an outbound WebSocket to `?url=` and echoes its text frames until
/// it closes.
async fn echo(req: &Request) -> Result<Response> {
    let Some(url) = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
    else {
        return Response::error("echo needs ?url=", 400);
    };
    let headers = Headers::new();
    headers.set("Upgrade", "websocket")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let resp = Fetch::Request(Request::new_with_init(&upgrade_url(&url), &init)?)
        .send()
        .await?;
    let Some(ws) = resp.websocket() else {
        return Response::error(format!("{url} did not upgrade"), 502);
    };
    ws.accept()?;
    worker::wasm_bindgen_futures::spawn_local(async move {
        let Ok(mut events) = ws.events() else { return };
        while let Some(Ok(WebsocketEvent::Message(m))) = events.next().await {
            if let Some(text) = m.text()
                && ws.send_with_str(text).is_err()
            {
                break;
            }
        }
    });
    Response::ok("echoing")
}

/// `/bench/<session>/<op>` goes to that session's object as
/// `/bench/<op>`, a WebSocket upgrade included; the rest to the product.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let Some(rest) = path.strip_prefix("/bench/") else {
        return duraclaw_cf::router::handle(req, env).await;
    };
    let Some((session, op)) = rest.split_once('/') else {
        return Response::error("/bench/<session>/<op>", 404);
    };
    let headers = Headers::new();
    if let Some(u) = req.headers().get("Upgrade")? {
        headers.set("Upgrade", &u)?;
    }
    let query = req
        .url()?
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let inner = Request::new_with_init(&format!("https://session/bench/{op}{query}"), &init)?;
    env.durable_object(duraclaw_cf::router::SESSIONS_BINDING)?
        .id_from_name(session)?
        .get_stub()?
        .fetch_with_request(inner)
        .await
}
