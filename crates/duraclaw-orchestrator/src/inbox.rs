//! The per-user inbox on the local host: one [`duraclaw_host::inbox::Inbox`]
//! per user in memory, fed by the orchestrator's persisted-events hook
//! ([`InboxHub::persisted`]), rebuilt from the sessions' stores on start
//! ([`InboxHub::rebuild`]), and its routes: `GET /api/inbox` and the stream
//! `GET /api/inbox/ws?after=<cursor>` (`docs/api.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use duraclaw_core::backend::web::socket;
use duraclaw_core::clock::SharedClock;
use duraclaw_core::store::{DynSessionDirectory, SessionMeta, StoredEvent};
use duraclaw_host::inbox::{self, Inbox, InboxChange, InboxFrame, InboxItem};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::api::{AppState, Incoming, close_socket, next_text, refuse, spawn_writer};
use crate::authn::AuthUser;
use crate::error::ApiError;

/// Changes queued per live inbox socket before it falls behind and is
/// caught up from the inbox's retained changes.
const LIVE_CHANGES: usize = 1024;

/// A socket's view of a user's inbox as it opens: the live changes after
/// now, the first frames, and the cursor they end at.
type Opened = (broadcast::Receiver<(u64, InboxChange)>, Vec<String>, u64);

/// A user's inbox and its live stream.
struct UserInbox {
    inbox: Inbox,
    live: broadcast::Sender<(u64, InboxChange)>,
}

#[derive(Default)]
struct Users {
    by_user: HashMap<String, UserInbox>,
    /// Session id → owner, for the hook (which is given the session only).
    owners: HashMap<String, String>,
}

/// Every user's inbox.
pub struct InboxHub {
    users: Mutex<Users>,
    clock: SharedClock,
}

impl std::fmt::Debug for InboxHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxHub").finish_non_exhaustive()
    }
}

impl Users {
    fn user(&mut self, name: &str, clock: &SharedClock) -> &mut UserInbox {
        self.by_user
            .entry(name.to_owned())
            .or_insert_with(|| UserInbox {
                inbox: Inbox::new(inbox::base_cursor(clock.now_ms())),
                live: broadcast::channel(LIVE_CHANGES).0,
            })
    }
}

fn send_all(live: &broadcast::Sender<(u64, InboxChange)>, changes: Vec<(u64, InboxChange)>) {
    for c in changes {
        // No socket open: nobody to tell.
        let _ = live.send(c);
    }
}

impl InboxHub {
    /// An empty hub whose inboxes start their cursors at `clock`'s time.
    pub fn new(clock: SharedClock) -> Self {
        InboxHub {
            users: Mutex::new(Users::default()),
            clock,
        }
    }

    fn users(&self) -> MutexGuard<'_, Users> {
        // Plain maps: a panic mid-update leaves them usable.
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads every session of `directory`, with its open questions, as it
    /// is (no change recorded): the inboxes after a restart.
    pub async fn rebuild(&self, directory: &DynSessionDirectory) -> duraclaw_core::Result<()> {
        let all = directory.list_all().await?;
        let mut loaded = Vec::with_capacity(all.len());
        for meta in all {
            let mut open = Vec::new();
            if meta.pending_questions > 0 {
                let store = directory.open(&meta.session_id).await?;
                for q in store.questions(true).await? {
                    let at_ms = store
                        .read_after(q.asked_seq.saturating_sub(1), 1)
                        .await?
                        .first()
                        .map_or(meta.updated_at_ms, |e| e.at_ms);
                    open.push((q.question, at_ms));
                }
            }
            loaded.push((meta, open));
        }
        let n = loaded.len();
        let mut users = self.users();
        for (meta, open) in loaded {
            users
                .owners
                .insert(meta.session_id.clone(), meta.owner.clone());
            let owner = meta.owner.clone();
            users
                .user(&owner, &self.clock)
                .inbox
                .load_session(meta, open);
        }
        tracing::info!(sessions = n, users = users.by_user.len(), "inboxes rebuilt");
        Ok(())
    }

    /// A session was created (or its metadata is known now).
    pub fn session(&self, meta: SessionMeta) {
        let mut users = self.users();
        users
            .owners
            .insert(meta.session_id.clone(), meta.owner.clone());
        let user = users.user(&meta.owner.clone(), &self.clock);
        let changes = user.inbox.session(meta);
        send_all(&user.live, changes);
    }

    /// A session was removed (its start failed).
    pub fn removed(&self, session_id: &str) {
        let mut users = self.users();
        let Some(owner) = users.owners.remove(session_id) else {
            return;
        };
        let user = users.user(&owner, &self.clock);
        let changes = user.inbox.remove_session(session_id);
        send_all(&user.live, changes);
    }

    /// The hook: events of `session_id` were persisted.
    pub fn persisted(&self, session_id: &str, events: &[StoredEvent]) {
        if !events.iter().any(|e| inbox::is_relevant(&e.json)) {
            return;
        }
        let mut users = self.users();
        let Some(owner) = users.owners.get(session_id).cloned() else {
            tracing::debug!(session = session_id, "events of a session no inbox knows");
            return;
        };
        let user = users.user(&owner, &self.clock);
        let changes = user.inbox.events(session_id, events);
        send_all(&user.live, changes);
    }

    /// `user`'s cursor and open questions, oldest first.
    pub fn list(&self, user: &str) -> (u64, Vec<InboxItem>) {
        let mut users = self.users();
        let u = users.user(user, &self.clock);
        (u.inbox.cursor(), u.inbox.items())
    }

    /// Opens `user`'s stream after `after`: the live receiver (subscribed
    /// under the same lock as the first frames are made, so nothing falls
    /// between), the first frames and the cursor they end at; or the
    /// refusal.
    fn open(&self, user: &str, after: Option<u64>) -> Result<Opened, socket::Refusal> {
        let mut users = self.users();
        let u = users.user(user, &self.clock);
        let frames = inbox::first_frames(&u.inbox, after)?;
        Ok((u.live.subscribe(), frames, u.inbox.cursor()))
    }

    /// What a socket that fell behind at `after` is sent to catch up.
    fn catch_up(&self, user: &str, after: u64) -> (Vec<String>, u64) {
        let mut users = self.users();
        let u = users.user(user, &self.clock);
        match inbox::first_frames(&u.inbox, Some(after)) {
            Ok(frames) => (frames, u.inbox.cursor()),
            // Cannot be ahead of its own inbox; a snapshot then.
            Err(_) => (
                inbox::first_frames(&u.inbox, None).unwrap_or_default(),
                u.inbox.cursor(),
            ),
        }
    }
}

/// `GET /api/inbox`: `{"cursor", "items"}`, the open questions oldest first.
pub(crate) async fn list(State(app): State<AppState>, user: AuthUser) -> Json<serde_json::Value> {
    let (cursor, items) = app.orchestrator.inbox().list(&user.name);
    Json(serde_json::json!({ "cursor": cursor, "items": items }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct InboxQuery {
    #[serde(default)]
    after: Option<String>,
}

/// `GET /api/inbox/ws?after=<cursor>`: the user's inbox stream.
pub(crate) async fn stream(
    State(app): State<AppState>,
    user: AuthUser,
    Query(q): Query<InboxQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    app.auth.check_origin(&headers)?;
    let after = inbox::parse_after(q.after.as_deref())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(ws
        .max_message_size(socket::TRANSPORT_MAX_MESSAGE_BYTES)
        .max_frame_size(socket::TRANSPORT_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, app, user, after))
        .into_response())
}

async fn serve(socket: WebSocket, app: AppState, user: AuthUser, after: Option<u64>) {
    let (sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel::<String>(256);
    let writer = spawn_writer(sink, rx);
    let hub = app.orchestrator.inbox().clone();
    let (mut live, first, mut last) = match hub.open(&user.name, after) {
        Ok(opened) => opened,
        Err(refusal) => {
            tracing::info!(user = %user.name, ?after, code = %refusal.error.code, "inbox stream refused");
            return refuse(tx, writer, refusal).await;
        }
    };
    for frame in first {
        let _ = tx.send(frame).await;
    }
    let forward_tx = tx.clone();
    let name = user.name.clone();
    let forwarder = tokio::spawn(async move {
        loop {
            let frames = match live.recv().await {
                Ok((cursor, change)) if cursor > last => {
                    last = cursor;
                    vec![InboxFrame::Change { cursor, change }.encode()]
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(user = %name, skipped = n, "slow inbox socket caught up");
                    let (frames, cursor) = hub.catch_up(&name, last);
                    last = cursor;
                    frames
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            for f in frames {
                if forward_tx.send(f).await.is_err() {
                    return;
                }
            }
        }
    });

    let mut refused = None;
    let mut close = None;
    let mut login_ended = app.auth.login_ended(&user.login);
    loop {
        let text = match next_text(&mut stream, &mut login_ended).await {
            Incoming::Text(text) => text,
            Incoming::LoginEnded => {
                tracing::info!(user = %user.name, "login ended: inbox socket closed");
                close = Some(crate::api::login_ended_close());
                break;
            }
            Incoming::Refused(refusal) => {
                refused = Some(refusal);
                break;
            }
            Incoming::Closed => break,
        };
        if let Some(reply) = inbox::answer(text.as_str())
            && tx.send(reply).await.is_err()
        {
            break;
        }
    }
    forwarder.abort();
    match refused {
        Some(refusal) => refuse(tx, writer, refusal).await,
        None => close_socket(tx, writer, close).await,
    }
}

/// The hub as the orchestrator shares it.
pub type SharedInboxHub = Arc<InboxHub>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use duraclaw_core::protocol::Event;
    use serde_json::json;

    use crate::Orchestrator;
    use crate::gateway::GatewayLink;

    /// An orchestrator with no gateway whose clock reads `now_ms`.
    fn offline(dir: Arc<duraclaw_store::MemoryDirectory>, now_ms: i64) -> Arc<Orchestrator> {
        let link = GatewayLink::new("ws://127.0.0.1:9", "unused-secret-0123456789");
        let clock = duraclaw_core::clock::ManualClock::new(now_ms);
        Orchestrator::with_clock(dir, link, Duration::from_secs(60), 64, clock.shared())
    }

    use super::*;

    #[tokio::test]
    async fn persisted_questions_reach_the_owners_inbox_and_survive_a_restart() {
        let dir = Arc::new(duraclaw_store::MemoryDirectory::new());
        let orch = offline(dir.clone(), 1_000);
        let mut meta = SessionMeta::new("s1", "alice", 1);
        meta.worktree = "/w/app".into();
        let actor = orch.create(meta).await.unwrap();
        orch.create(SessionMeta::new("s2", "bob", 1)).await.unwrap();
        let (_, mut live, _) = {
            let (rx, frames, c) = orch.inbox().open("alice", None).unwrap();
            (frames, rx, c)
        };
        let ask = Event::from_value(json!({"type": "user_question", "question_id": "q1",
            "tool_use_id": "t1", "kind": "permission", "tool_name": "Bash",
            "input": {"command": "make"}}))
        .unwrap();
        actor.ingest(vec![(1, ask)]).await.unwrap();
        let (cursor, items) = orch.inbox().list("alice");
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].question_id, "q1");
        assert_eq!(items[0].worktree, "/w/app");
        assert!(orch.inbox().list("bob").1.is_empty(), "not another user's");
        let (c, change) = live.try_recv().unwrap();
        assert!(
            matches!(change, InboxChange::QuestionOpened { .. }),
            "{change:?}"
        );
        assert!(c <= cursor);

        // Restarted: rebuilt from the store.
        drop(actor);
        drop(orch);
        let orch = offline(dir, 2_000);
        assert!(orch.inbox().list("alice").1.is_empty());
        orch.rebuild_inbox().await.unwrap();
        let (after, items) = orch.inbox().list("alice");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].tool.as_deref(), Some("Bash"));
        // A cursor from before the restart gets a snapshot, not a gap.
        let (_, frames, _) = orch.inbox().open("alice", Some(cursor)).unwrap();
        let first: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(first["type"], "snapshot", "{first}");
        assert_eq!(first["reason"], "cursor_expired", "{first}");
        assert!(orch.inbox().open("alice", Some(after + 1)).is_err());
    }
}
