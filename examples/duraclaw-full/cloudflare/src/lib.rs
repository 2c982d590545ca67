//! Duraclaw on Cloudflare: the glue that exports the Worker's fetch handler
//! and the Durable Objects (`SessionObject` per session, `UserObject` and
//! `PushObject` per user) to the runtime. All the logic is in `duraclaw-cf`
//! (`router::handle`, `session::SessionHost`, `user::UserHost`,
//! `push::PushHost`).

#![cfg(target_arch = "wasm32")]
// `#[durable_object]` exports methods to JavaScript that carry no docs.
#![allow(missing_docs)]

use std::rc::Rc;

use duraclaw_cf::push::PushHost;
use duraclaw_cf::session::SessionHost;
use duraclaw_cf::user::UserHost;
use worker::{
    Context, DurableObject, Env, Request, Response, Result, Socket, State, WebSocket,
    WebSocketIncomingMessage, durable_object, event,
};

/// One session: its log, its browser sockets and its gateway link.
#[durable_object]
pub struct SessionObject {
    host: Rc<SessionHost>,
}

impl DurableObject for SessionObject {
    fn new(state: State, env: Env) -> Self {
        SessionObject {
            host: SessionHost::new(state, env),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.host.fetch(req).await
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

/// One user: their inbox and its live stream.
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

/// One user's Web Push sender: records deliveries in D1, sends them with
/// `fetch`, retries by its alarm.
#[durable_object]
pub struct PushObject {
    host: PushHost,
}

impl DurableObject for PushObject {
    fn new(state: State, env: Env) -> Self {
        PushObject {
            host: PushHost::new(state, env),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.host.fetch(req).await
    }

    async fn alarm(&self) -> Result<Response> {
        self.host.alarm().await
    }

    async fn connect(&self, _socket: Socket) -> Result<()> {
        Ok(())
    }

    async fn websocket_message(
        &self,
        _ws: WebSocket,
        _message: WebSocketIncomingMessage,
    ) -> Result<()> {
        Ok(())
    }

    async fn websocket_close(
        &self,
        _ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: worker::Error) -> Result<()> {
        Ok(())
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    duraclaw_cf::router::handle(req, env).await
}
