//! [`UserHost`]: the body of a user's Durable Object (`UserObject`, binding
//! `USERS`, named by the user name), holding the user's inbox
//! ([`duraclaw_host::inbox`]) in its own SQL, so a restart keeps it, and
//! the hibernatable WebSockets of the inbox stream.
//!
//! - Session objects call `POST /update` after they persisted events that
//!   can change the inbox (their metadata and those events,
//!   [`UserUpdate`]); the object folds them in, saves what changed and
//!   sends the changes to every socket, all in one turn (the SQL is
//!   synchronous), so a socket accepted in between gets each change once:
//!   either in its first frames or live.
//! - The Worker routes `GET /api/inbox` (`/list`) and
//!   `GET /api/inbox/ws?after=<cursor>` (`/ws`) here, and `/logins-ended`
//!   when a login of the user ended (its sockets close with 4401).

use std::cell::RefCell;
use std::rc::Rc;

use duraclaw_core::backend::migrate::Migrations;
use duraclaw_core::backend::web::socket;
use duraclaw_core::protocol::WireError;
use duraclaw_core::store::{SessionMeta, StoredEvent};
use duraclaw_host::inbox::{self, Inbox, InboxChange, InboxFrame, sql};
use serde::{Deserialize, Serialize};
use worker::{Env, Request, Response, State, WebSocket, WebSocketIncomingMessage, WebSocketPair};

use crate::DoSqlConn;
use crate::auth::json_error;
use crate::clock::now_ms;
use crate::session::browsers::{close_ended_logins, close_handshake, refuse};
use crate::session::{Attachment, LOGIN_HEADER, USER_HEADER};

mod notify;

pub use notify::{Notifier, session_removed, user_stub};

/// The Durable Object namespace binding of the users' objects.
pub const USERS_BINDING: &str = "USERS";

/// One persisted event, as a session object passes it on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedEvent {
    /// Its seq in the session's log.
    pub seq: u64,
    /// When it was recorded.
    pub at_ms: i64,
    /// Its JSON text.
    pub json: String,
}

/// `POST /update` from a session object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserUpdate {
    /// The session's metadata now.
    pub meta: SessionMeta,
    /// Its events since the last update that can change the inbox.
    pub events: Vec<PersistedEvent>,
}

/// A user's Durable Object, minus the `#[durable_object]` glue.
pub struct UserHost {
    state: State,
    env: Env,
    inbox: RefCell<Option<Inbox>>,
}

impl std::fmt::Debug for UserHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserHost").finish_non_exhaustive()
    }
}

fn send(ws: &WebSocket, text: &str) {
    let _ = ws.send_with_str(text);
}

impl UserHost {
    /// The host of the object with `state` and `env`; its inbox is read on
    /// first use.
    pub fn new(state: State, env: Env) -> Rc<UserHost> {
        crate::logging::init();
        Rc::new(UserHost {
            state,
            env,
            inbox: RefCell::new(None),
        })
    }

    fn conn(&self) -> DoSqlConn {
        DoSqlConn::new(&self.state.storage())
    }

    /// Runs `f` on the inbox, loading it (and migrating its tables) first.
    fn with_inbox<T>(
        &self,
        f: impl FnOnce(&mut Inbox, &mut DoSqlConn) -> T,
    ) -> duraclaw_core::Result<T> {
        let mut conn = self.conn();
        let mut slot = self.inbox.borrow_mut();
        if slot.is_none() {
            Migrations::new(sql::INBOX_MIGRATIONS)?.apply(&mut conn)?;
            *slot = Some(sql::load(&mut conn, inbox::base_cursor(now_ms()))?);
        }
        match slot.as_mut() {
            Some(inbox) => Ok(f(inbox, &mut conn)),
            None => Err(duraclaw_core::Error::storage("inbox", "not loaded")),
        }
    }

    /// Answers a request from the Worker or a session object. Never fails:
    /// an internal error is a JSON 500 with its reason.
    pub async fn fetch(self: &Rc<Self>, req: Request) -> worker::Result<Response> {
        match self.route(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::error!(error = %e, "user object request failed");
                json_error(500, &format!("the inbox failed: {e}"))
            }
        }
    }

    async fn route(self: &Rc<Self>, mut req: Request) -> worker::Result<Response> {
        let user = req.headers().get(USER_HEADER)?.unwrap_or_default();
        match req.path().as_str() {
            "/update" => {
                let update: UserUpdate = match req.json().await {
                    Ok(u) => u,
                    Err(e) => return json_error(400, &format!("bad inbox update: {e}")),
                };
                if update.meta.owner != user {
                    return json_error(400, "the update's session belongs to another user");
                }
                self.update(update)
            }
            "/remove" => {
                let session_id = req
                    .headers()
                    .get(crate::session::SESSION_HEADER)?
                    .unwrap_or_default();
                self.apply(|inbox| inbox.remove_session(&session_id))?;
                Response::empty().map(|r| r.with_status(204))
            }
            "/list" => {
                let listed = self.with_inbox(|inbox, _| (inbox.cursor(), inbox.items()));
                match listed {
                    Ok((cursor, items)) => {
                        Response::from_json(&serde_json::json!({"cursor": cursor, "items": items}))
                    }
                    Err(e) => json_error(500, &format!("the inbox cannot be read: {e}")),
                }
            }
            "/ws" => self.accept(&req, &user),
            crate::router::LOGIN_ENDED_PATH => close_ended_logins(&self.state, &self.env).await,
            other => json_error(404, &format!("no route {other}")),
        }
    }

    fn update(&self, update: UserUpdate) -> worker::Result<Response> {
        let session_id = update.meta.session_id.clone();
        let events: Vec<StoredEvent> = update
            .events
            .into_iter()
            .map(|e| StoredEvent {
                seq: e.seq,
                gseq: None,
                at_ms: e.at_ms,
                json: e.json.into(),
            })
            .collect();
        let meta = update.meta;
        self.apply(move |inbox| {
            let mut changes = Vec::new();
            if inbox.session_meta(&session_id).is_none() {
                changes.extend(inbox.session(meta.clone()));
            }
            changes.extend(inbox.events(&session_id, &events));
            // The object's metadata has the last word (e.g. a session that
            // ended closes what is still open).
            changes.extend(inbox.session(meta));
            changes
        })?;
        Response::empty().map(|r| r.with_status(204))
    }

    /// Applies `f`, saves the changes it recorded and sends them to every
    /// socket, in this one turn.
    fn apply(&self, f: impl FnOnce(&mut Inbox) -> Vec<(u64, InboxChange)>) -> worker::Result<()> {
        let result = self.with_inbox(|inbox, conn| {
            let changes = f(inbox);
            sql::save(conn, inbox, &changes).map(|()| changes)
        });
        let changes = match result {
            Ok(Ok(c)) => c,
            Ok(Err(e)) | Err(e) => {
                // What is in memory may be ahead of the SQL now: read it
                // again next time.
                *self.inbox.borrow_mut() = None;
                return Err(worker::Error::RustError(format!(
                    "the inbox cannot be saved: {e}"
                )));
            }
        };
        if changes.is_empty() {
            return Ok(());
        }
        let frames: Vec<String> = changes
            .into_iter()
            .map(|(cursor, change)| InboxFrame::Change { cursor, change }.encode())
            .collect();
        for ws in self.state.get_websockets() {
            for f in &frames {
                send(&ws, f);
            }
        }
        Ok(())
    }

    /// Accepts an inbox socket and sends its first frames in this one turn.
    fn accept(&self, req: &Request, user: &str) -> worker::Result<Response> {
        let raw = req
            .url()?
            .query_pairs()
            .find(|(k, _)| k == "after")
            .map(|(_, v)| v.into_owned());
        let after = match inbox::parse_after(raw.as_deref()) {
            Ok(a) => a,
            Err(e) => return json_error(400, &e),
        };
        let Some(login) = req.headers().get(LOGIN_HEADER)?.filter(|l| !l.is_empty()) else {
            return json_error(400, "the Worker named no login for this socket");
        };
        let pair = WebSocketPair::new()?;
        let ws = pair.server;
        ws.serialize_attachment(Attachment {
            user: user.to_owned(),
            client: "inbox".into(),
            login,
            full: false,
            deflate: false,
        })?;
        self.state.accept_websocket_with_tags(&ws, &["inbox"]);
        match self.with_inbox(|inbox, _| inbox::first_frames(inbox, after)) {
            Ok(Ok(frames)) => {
                for f in &frames {
                    send(&ws, f);
                }
            }
            Ok(Err(refusal)) => {
                tracing::info!(?after, "inbox stream refused: ahead of the inbox");
                refuse(&ws, refusal);
            }
            Err(e) => {
                send(&ws, &InboxFrame::Error(WireError::from(&e)).encode());
                let _ = ws.close(Some(1011), Some("the inbox cannot be read"));
            }
        }
        Response::from_websocket(pair.client)
    }

    /// A frame from an inbox socket: a ping is answered; too large or
    /// binary is refused as on the session stream.
    pub async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
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
        if let Some(reply) = inbox::answer(&text) {
            send(&ws, &reply);
        }
        Ok(())
    }

    /// The object sets no alarm: nothing to do.
    pub async fn alarm(&self) -> worker::Result<Response> {
        Response::empty()
    }

    /// An inbox socket closed: complete the close handshake.
    pub async fn websocket_close(&self, ws: WebSocket, code: usize) -> worker::Result<()> {
        close_handshake(&ws, code);
        Ok(())
    }
}
