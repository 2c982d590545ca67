//! The session object's side of the inbox: after events are persisted and
//! published, [`Notifier::persisted`] makes sure the owner's object hears
//! of those that can change the inbox, one `POST /update` at a time, in
//! order. The seq up to which the user object has them is kept in the
//! session's own SQL, so after a restart (or a failed call) the next
//! update resends from there: at least once, and the inbox applies an
//! event a second time as a no-op.

use std::cell::RefCell;
use std::rc::Rc;

use duraclaw_core::backend::actor::SessionActor;
use duraclaw_core::backend::migrate::{SqlConn, SqlValue};
use duraclaw_core::protocol::Seq;
use duraclaw_core::store::StoredEvent;
use duraclaw_host::inbox::is_relevant;
use worker::{Env, Headers, Method, Request, RequestInit};

use super::{PersistedEvent, USERS_BINDING, UserUpdate};
use crate::DoSqlConn;
use crate::session::{SESSION_HEADER, USER_HEADER};

/// Events read from the log per update.
const PAGE: usize = 512;
/// The session's key in its `duraclaw_meta` table.
const NOTIFIED_KEY: &str = "inbox_notified";

#[derive(Default)]
struct State {
    /// Up to where the user object has the events (`None`: not read yet).
    notified: Option<Seq>,
    running: bool,
    again: bool,
    /// The last call failed: try again on the next publish.
    failed: bool,
    /// The session is gone (its start failed): tell nothing more.
    forgotten: bool,
}

/// Tells the session's owner's object what changed. See the module docs.
pub struct Notifier {
    env: Env,
    conn: DoSqlConn,
    state: RefCell<State>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// The notifier of the session object with `env` and SQL `conn`.
    pub fn new(env: Env, conn: DoSqlConn) -> Rc<Self> {
        Rc::new(Notifier {
            env,
            conn,
            state: RefCell::new(State::default()),
        })
    }

    fn notified(&self) -> Seq {
        if let Some(n) = self.state.borrow().notified {
            return n;
        }
        let mut conn = self.conn.clone();
        let n = conn
            .query(
                "SELECT int_value FROM duraclaw_meta WHERE key = ?1",
                &[SqlValue::Text(NOTIFIED_KEY.into())],
            )
            .ok()
            .and_then(|rows| {
                rows.first()
                    .and_then(|r| r.first().and_then(SqlValue::as_i64))
            })
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        self.state.borrow_mut().notified = Some(n);
        n
    }

    fn set_notified(&self, seq: Seq) {
        self.state.borrow_mut().notified = Some(seq);
        let mut conn = self.conn.clone();
        let stored = conn.execute(
            "INSERT INTO duraclaw_meta (key, int_value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET int_value = excluded.int_value",
            &[
                SqlValue::Text(NOTIFIED_KEY.into()),
                SqlValue::Integer(i64::try_from(seq).unwrap_or(i64::MAX)),
            ],
        );
        if let Err(e) = stored {
            tracing::warn!(error = %e, "cannot record what the inbox has");
        }
    }

    /// The hook: `published` (events `first..=last` of the log) went to
    /// the session's sockets. With nothing published it still catches up,
    /// once after the object woke (a crash between storing and telling)
    /// and after a failed call.
    pub fn persisted(self: &Rc<Self>, actor: &SessionActor, published: &[StoredEvent]) {
        let (woke, failed) = {
            let st = self.state.borrow();
            if st.forgotten {
                return;
            }
            (st.notified.is_none(), st.failed)
        };
        let notified = self.notified();
        let relevant = published.iter().any(|e| is_relevant(&e.json));
        let first = published.first().map(|e| e.seq);
        let last = published.last().map(|e| e.seq);
        {
            let mut st = self.state.borrow_mut();
            let up_to_date = match (first, last) {
                (Some(first), Some(last))
                    if !relevant && !st.running && notified != 0 && notified + 1 == first =>
                {
                    // Nothing for the inbox, and nothing before it pending.
                    st.notified = Some(last);
                    true
                }
                (None, _) => true,
                _ => false,
            };
            if up_to_date && !woke && !failed {
                return;
            }
            if st.running {
                st.again = true;
                return;
            }
            st.running = true;
        }
        let me = self.clone();
        let actor = actor.clone();
        worker::wasm_bindgen_futures::spawn_local(async move {
            me.drain(&actor).await;
        });
    }

    async fn drain(&self, actor: &SessionActor) {
        loop {
            self.state.borrow_mut().again = false;
            let from = self.notified();
            let ok = self.send_after(actor, from).await;
            let mut st = self.state.borrow_mut();
            st.failed = !ok;
            if !ok || !st.again || st.forgotten {
                st.running = false;
                return;
            }
        }
    }

    /// Sends the events after `from` that can change the inbox (all of
    /// them, page by page), with the session's metadata; `false` if a call
    /// failed.
    async fn send_after(&self, actor: &SessionActor, mut from: Seq) -> bool {
        let first_ever = from == 0;
        loop {
            let page = match actor.log().store().read_after(from, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(session = actor.session_id(), error = %e, "cannot read the log for the inbox");
                    return false;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                return true;
            };
            let events: Vec<PersistedEvent> = page
                .iter()
                .filter(|e| is_relevant(&e.json))
                .map(|e| PersistedEvent {
                    seq: e.seq,
                    at_ms: e.at_ms,
                    json: e.json.to_string(),
                })
                .collect();
            if !events.is_empty() || first_ever {
                let update = UserUpdate {
                    meta: actor.meta().await,
                    events,
                };
                if let Err(e) = self.post(&update).await {
                    tracing::warn!(session = actor.session_id(), error = %e, "cannot update the owner's inbox");
                    return false;
                }
            }
            self.set_notified(last);
            from = last;
            if page.len() < PAGE {
                return true;
            }
        }
    }

    /// The session is gone: nothing more is sent for it.
    pub fn forget(&self) {
        self.state.borrow_mut().forgotten = true;
    }

    async fn post(&self, update: &UserUpdate) -> worker::Result<()> {
        if self.state.borrow().forgotten {
            return Ok(());
        }
        let headers = Headers::new();
        headers.set("Content-Type", "application/json")?;
        headers.set(USER_HEADER, &update.meta.owner)?;
        headers.set(SESSION_HEADER, &update.meta.session_id)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(serde_json::to_string(update)?.into()));
        let req = Request::new_with_init("https://user/update", &init)?;
        let answer = user_stub(&self.env, &update.meta.owner)?
            .fetch_with_request(req)
            .await?;
        if answer.status_code() >= 300 {
            return Err(worker::Error::RustError(format!(
                "the user object answered {}",
                answer.status_code()
            )));
        }
        Ok(())
    }
}

/// The stub of `user`'s object.
pub fn user_stub(env: &Env, user: &str) -> worker::Result<worker::Stub> {
    env.durable_object(USERS_BINDING)?
        .id_from_name(user)?
        .get_stub()
}

/// Tells `owner`'s object that session `session_id` is gone (its start
/// failed).
pub async fn session_removed(env: &Env, owner: &str, session_id: &str) -> worker::Result<()> {
    let headers = Headers::new();
    headers.set(USER_HEADER, owner)?;
    headers.set(SESSION_HEADER, session_id)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers);
    let req = Request::new_with_init("https://user/remove", &init)?;
    user_stub(env, owner)?.fetch_with_request(req).await?;
    Ok(())
}
