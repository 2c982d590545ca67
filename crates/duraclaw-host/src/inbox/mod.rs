//! A user's inbox, sans-IO: every change to the user's sessions (state,
//! title, cost, each question that opens or resolves) numbered by a
//! per-user cursor, the list of open questions, and the resume rule of the
//! inbox stream (`GET /api/inbox/ws?after=<cursor>`, `docs/api.md`).
//!
//! Both hosts hold one [`Inbox`] per user and feed it the same way: the
//! session's metadata ([`Inbox::session`]) and its persisted events
//! ([`Inbox::events`], which keeps only what [`is_relevant`] says). The
//! local host holds it in memory and rebuilds it from the sessions' stores
//! on start ([`Inbox::load_session`]); the Cloudflare host keeps it in the
//! user's object's SQL ([`sql`]).
//!
//! # Cursors and resuming
//!
//! Every change gets the next cursor. An inbox starts at a base cursor
//! (the hosts take the clock's milliseconds times 1000), so a cursor handed
//! out by an earlier, lost inbox is below it. [`Inbox::resume`] answers a
//! client's `after`:
//!
//! - no `after`: a [`Snapshot`] (`reason: "fresh"`);
//! - `after` within the retained changes: every change after it, in order,
//!   once each;
//! - `after` below them (older than the last [`MAX_RETAINED`] changes, or
//!   from a lost inbox): a [`Snapshot`] with `reason: "cursor_expired"`,
//!   never a silent gap;
//! - `after` above the current cursor: refused like the session stream's
//!   `ahead_of_log` (close 4409).

pub mod sql;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use duraclaw_core::backend::web::socket::{CLOSE_AHEAD_OF_LOG, Refusal};
use duraclaw_core::protocol::{Event, QuestionKind, UserQuestion, WireError};
use duraclaw_core::state::SessionState;
use duraclaw_core::store::{SessionMeta, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most changes an inbox keeps for resuming; a client further behind
/// gets a snapshot.
pub const MAX_RETAINED: usize = 1000;

/// One open question, as `GET /api/inbox` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    /// The session asking.
    pub session_id: String,
    /// The question's id, to answer with.
    pub question_id: String,
    /// `permission` or `ask_user`.
    pub kind: String,
    /// The tool a permission question is about.
    pub tool: Option<String>,
    /// A permission question's tool input; an `ask_user` question's
    /// `{"questions": [...]}`.
    pub input: Value,
    /// The session's worktree.
    pub worktree: String,
    /// The session's title.
    pub title: String,
    /// When the question was logged, ms since the epoch.
    pub opened_at_ms: i64,
}

impl InboxItem {
    /// The item of `question`, asked in the session of `meta` at `at_ms`.
    pub fn new(meta: &SessionMeta, question: &UserQuestion, at_ms: i64) -> Self {
        let (tool, input) = match &question.kind {
            QuestionKind::Permission {
                tool_name, input, ..
            } => (Some(tool_name.clone()), input.clone()),
            QuestionKind::AskUser { questions } => (
                None,
                serde_json::json!({ "questions": serde_json::to_value(questions).unwrap_or(Value::Null) }),
            ),
            other => (None, serde_json::to_value(other).unwrap_or(Value::Null)),
        };
        InboxItem {
            session_id: meta.session_id.clone(),
            question_id: question.question_id.clone(),
            kind: question.kind.name().to_owned(),
            tool,
            input,
            worktree: meta.worktree.clone(),
            title: meta.title.clone(),
            opened_at_ms: at_ms,
        }
    }
}

/// One change to a user's sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboxChange {
    /// A session is new or what the list shows of it changed (state,
    /// title, cost, pending questions): its metadata now.
    Session {
        /// The metadata.
        session: Box<SessionMeta>,
    },
    /// A question opened.
    QuestionOpened {
        /// The question.
        item: InboxItem,
    },
    /// A question is no longer open: decided (`by` the decider), or its
    /// session ended (`by` absent).
    QuestionResolved {
        /// The session.
        session_id: String,
        /// The question.
        question_id: String,
        /// Who decided.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A session is gone (its start failed).
    SessionRemoved {
        /// The session.
        session_id: String,
    },
}

/// Why a [`Snapshot`] was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    /// The client gave no cursor.
    Fresh,
    /// The client's cursor is older than what the inbox keeps (or from an
    /// inbox that is gone): this replaces its copy.
    CursorExpired,
}

/// The whole inbox at `cursor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The cursor of the last change it includes.
    pub cursor: u64,
    /// Why it was sent.
    pub reason: SnapshotReason,
    /// The user's sessions, most recently active first.
    pub sessions: Vec<SessionMeta>,
    /// The open questions, oldest first.
    pub items: Vec<InboxItem>,
}

/// A frame of the inbox stream, host → browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboxFrame {
    /// The whole inbox; replaces what the client holds.
    Snapshot(Snapshot),
    /// One change, after the one with the cursor before it.
    Change {
        /// The change's cursor: resume with `after=` the last one seen.
        cursor: u64,
        /// The change.
        change: InboxChange,
    },
    /// Sent after the changes a resuming client was missing: it is up to
    /// date at `cursor`, and what follows is live.
    Resumed {
        /// The inbox's cursor.
        cursor: u64,
    },
    /// A refusal or a bad frame: `{"type":"error","code","message"}`, as
    /// on the session stream.
    Error(WireError),
    /// The answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

impl InboxFrame {
    /// The frame's JSON text.
    pub fn encode(&self) -> String {
        // Plain data with string keys: it always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A frame of the inbox stream, browser → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InboxRequest {
    /// A keep-alive; answered with a pong.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
}

/// What a client resuming after a cursor gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// Every change after its cursor, in order.
    Changes(Vec<(u64, InboxChange)>),
    /// A snapshot to replace its copy.
    Snapshot(Snapshot),
    /// Refused: its cursor is ahead of the inbox.
    Refused(Refusal),
}

/// A user's inbox. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbox {
    cursor: u64,
    changes: VecDeque<(u64, InboxChange)>,
    /// Changes after this cursor are all in `changes`.
    floor: u64,
    sessions: BTreeMap<String, SessionMeta>,
    /// Open questions by (session, question).
    open: BTreeMap<(String, String), InboxItem>,
}

/// What the session list shows of a session: a change of any of these is
/// an inbox change.
fn shown(meta: &SessionMeta) -> impl PartialEq + '_ {
    (
        &meta.state,
        &meta.title,
        &meta.worktree,
        meta.cost_usd.to_bits(),
        meta.pending_questions,
        &meta.model,
    )
}

/// Whether a persisted event can change an inbox: session state, a
/// turn's result (its cost), a question opened or resolved. The others (a
/// stream of text, tool calls) are not looked at.
pub fn is_relevant(json: &str) -> bool {
    const RELEVANT: [&str; 4] = [
        "session.state",
        "result",
        "user_question",
        "question.resolved",
    ];
    // Events are written type first: a streamed delta is not scanned.
    if let Some(rest) = json.strip_prefix("{\"type\":\"")
        && let Some(end) = rest.find('"')
    {
        return RELEVANT.contains(&&rest[..end]);
    }
    #[derive(Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_str::<Kind<'_>>(json) {
        Ok(k) => RELEVANT.contains(&k.kind.as_ref()),
        Err(_) => false,
    }
}

impl Inbox {
    /// An empty inbox whose cursor starts at `base` (see the module docs).
    pub fn new(base: u64) -> Self {
        Inbox {
            cursor: base,
            changes: VecDeque::new(),
            floor: base,
            sessions: BTreeMap::new(),
            open: BTreeMap::new(),
        }
    }

    /// The cursor of the last change.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Changes after this cursor can be resumed from.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The retained changes, oldest first.
    pub fn changes(&self) -> impl Iterator<Item = &(u64, InboxChange)> {
        self.changes.iter()
    }

    /// The session's metadata, when the inbox knows it.
    pub fn session_meta(&self, session_id: &str) -> Option<&SessionMeta> {
        self.sessions.get(session_id)
    }

    /// The user's sessions, most recently active first.
    pub fn sessions(&self) -> Vec<SessionMeta> {
        let mut all: Vec<SessionMeta> = self.sessions.values().cloned().collect();
        all.sort_by(|a, b| {
            b.updated_at_ms
                .cmp(&a.updated_at_ms)
                .then_with(|| b.session_id.cmp(&a.session_id))
        });
        all
    }

    /// The open questions, oldest first.
    pub fn items(&self) -> Vec<InboxItem> {
        let mut all: Vec<InboxItem> = self.open.values().cloned().collect();
        all.sort_by(|a, b| {
            (a.opened_at_ms, &a.session_id, &a.question_id).cmp(&(
                b.opened_at_ms,
                &b.session_id,
                &b.question_id,
            ))
        });
        all
    }

    /// The whole inbox now.
    pub fn snapshot(&self, reason: SnapshotReason) -> Snapshot {
        Snapshot {
            cursor: self.cursor,
            reason,
            sessions: self.sessions(),
            items: self.items(),
        }
    }

    /// What a client resuming after `after` gets (see the module docs).
    pub fn resume(&self, after: Option<u64>) -> Resume {
        let Some(after) = after else {
            return Resume::Snapshot(self.snapshot(SnapshotReason::Fresh));
        };
        if after > self.cursor {
            return Resume::Refused(ahead_of_inbox(after, self.cursor));
        }
        if after < self.floor {
            return Resume::Snapshot(self.snapshot(SnapshotReason::CursorExpired));
        }
        Resume::Changes(
            self.changes
                .iter()
                .filter(|(c, _)| *c > after)
                .cloned()
                .collect(),
        )
    }

    /// Loads a session as it is, recording no change (a rebuild from the
    /// session's store): its metadata and its open questions with the
    /// times they were asked.
    pub fn load_session(&mut self, meta: SessionMeta, open: Vec<(UserQuestion, i64)>) {
        let meta = meta.for_clients();
        for (q, at_ms) in open {
            let item = InboxItem::new(&meta, &q, at_ms);
            self.open
                .insert((meta.session_id.clone(), q.question_id), item);
        }
        self.sessions.insert(meta.session_id.clone(), meta);
    }

    /// The session's metadata as its host has it now: a `session` change
    /// when it is new or what the list shows of it changed. Returns the
    /// changes recorded.
    pub fn session(&mut self, meta: SessionMeta) -> Vec<(u64, InboxChange)> {
        let meta = meta.for_clients();
        let mut out = Vec::new();
        let changed = match self.sessions.get(&meta.session_id) {
            Some(old) => shown(old) != shown(&meta),
            None => true,
        };
        if meta.state == SessionState::Terminated {
            self.close_questions_of(&meta.session_id, &mut out);
        }
        // Only what a change carries is kept, so a snapshot equals the
        // changes before it.
        if changed {
            self.sessions.insert(meta.session_id.clone(), meta.clone());
            self.record(
                InboxChange::Session {
                    session: Box::new(meta),
                },
                &mut out,
            );
        }
        out
    }

    /// Folds a session's persisted events into the inbox (only those
    /// [`is_relevant`] are decoded). A session the inbox does not know is
    /// ignored. Returns the changes recorded, in order.
    pub fn events(&mut self, session_id: &str, events: &[StoredEvent]) -> Vec<(u64, InboxChange)> {
        let mut out = Vec::new();
        let Some(mut meta) = self.sessions.get(session_id).cloned() else {
            return out;
        };
        let before = meta.clone();
        for e in events {
            if !is_relevant(&e.json) {
                continue;
            }
            let event = match e.event() {
                Ok(ev) => ev,
                Err(err) => {
                    tracing::warn!(session = session_id, seq = e.seq, error = %err, "an event the inbox cannot read");
                    continue;
                }
            };
            meta.updated_at_ms = meta.updated_at_ms.max(e.at_ms);
            match event {
                Event::SessionState(s) => {
                    meta.state = s.state;
                    if s.state == SessionState::Terminated {
                        self.close_questions_of(session_id, &mut out);
                    }
                }
                Event::Result(r) => {
                    if let Some(cost) = r.cost_usd {
                        meta.cost_usd = cost;
                    }
                }
                Event::UserQuestion(q) => {
                    let key = (session_id.to_owned(), q.question_id.clone());
                    if let std::collections::btree_map::Entry::Vacant(slot) = self.open.entry(key) {
                        let item = InboxItem::new(&meta, &q, e.at_ms);
                        slot.insert(item.clone());
                        self.record(InboxChange::QuestionOpened { item }, &mut out);
                    }
                }
                Event::QuestionResolved(r) => {
                    let key = (session_id.to_owned(), r.question_id.clone());
                    if self.open.remove(&key).is_some() {
                        self.record(
                            InboxChange::QuestionResolved {
                                session_id: session_id.to_owned(),
                                question_id: r.question_id,
                                by: Some(r.by.who),
                            },
                            &mut out,
                        );
                    }
                }
                _ => {}
            }
        }
        meta.pending_questions = self.open_count(session_id);
        if shown(&before) != shown(&meta) {
            self.sessions.insert(session_id.to_owned(), meta.clone());
            self.record(
                InboxChange::Session {
                    session: Box::new(meta),
                },
                &mut out,
            );
        }
        out
    }

    /// Forgets a session (its start failed): a `session_removed` change.
    pub fn remove_session(&mut self, session_id: &str) -> Vec<(u64, InboxChange)> {
        let mut out = Vec::new();
        if self.sessions.remove(session_id).is_none() {
            return out;
        }
        self.open.retain(|(s, _), _| s != session_id);
        self.record(
            InboxChange::SessionRemoved {
                session_id: session_id.to_owned(),
            },
            &mut out,
        );
        out
    }

    fn open_count(&self, session_id: &str) -> u32 {
        let n = self.open.keys().filter(|(s, _)| s == session_id).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn close_questions_of(&mut self, session_id: &str, out: &mut Vec<(u64, InboxChange)>) {
        let closed: Vec<(String, String)> = self
            .open
            .keys()
            .filter(|(s, _)| s == session_id)
            .cloned()
            .collect();
        for key in closed {
            self.open.remove(&key);
            self.record(
                InboxChange::QuestionResolved {
                    session_id: key.0,
                    question_id: key.1,
                    by: None,
                },
                out,
            );
        }
    }

    fn record(&mut self, change: InboxChange, out: &mut Vec<(u64, InboxChange)>) {
        self.cursor += 1;
        self.changes.push_back((self.cursor, change.clone()));
        while self.changes.len() > MAX_RETAINED {
            if let Some((c, _)) = self.changes.pop_front() {
                self.floor = c;
            }
        }
        out.push((self.cursor, change));
    }

    /// An inbox from what [`sql`] stored: its cursors, sessions, open
    /// questions and retained changes (oldest first).
    pub fn from_parts(
        cursor: u64,
        floor: u64,
        sessions: Vec<SessionMeta>,
        items: Vec<InboxItem>,
        changes: Vec<(u64, InboxChange)>,
    ) -> Self {
        Inbox {
            cursor,
            floor,
            changes: changes.into_iter().collect(),
            sessions: sessions
                .into_iter()
                .map(|m| (m.session_id.clone(), m))
                .collect(),
            open: items
                .into_iter()
                .map(|i| ((i.session_id.clone(), i.question_id.clone()), i))
                .collect(),
        }
    }
}

/// The refusal of a cursor ahead of the inbox: an `ahead_of_log` error,
/// then close 4409, as on the session stream.
pub fn ahead_of_inbox(after: u64, cursor: u64) -> Refusal {
    Refusal {
        error: WireError::new(
            "ahead_of_log",
            format!(
                "after={after} is ahead of this inbox, whose cursor is {cursor}: your copy is \
                 from another history; drop it and reconnect without after"
            ),
        ),
        close_code: CLOSE_AHEAD_OF_LOG,
        close_reason: "ahead of the inbox: reconnect without after",
    }
}

/// Reads the `after` query parameter of the inbox stream: absent, or a
/// non-negative integer.
pub fn parse_after(raw: Option<&str>) -> Result<Option<u64>, String> {
    match raw {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("after must be a non-negative integer, not {v:?}")),
    }
}

/// The base cursor of an inbox made at `now_ms`: above every cursor an
/// earlier inbox of the same user handed out (unless it recorded more than
/// a thousand changes a millisecond on average).
pub fn base_cursor(now_ms: i64) -> u64 {
    u64::try_from(now_ms).unwrap_or(0).saturating_mul(1000)
}

/// The frames a client resuming after `after` is sent first (before the
/// live changes): a snapshot, or the changes it missed then `resumed`; or
/// the refusal to send before closing.
pub fn first_frames(inbox: &Inbox, after: Option<u64>) -> Result<Vec<String>, Refusal> {
    match inbox.resume(after) {
        Resume::Snapshot(s) => Ok(vec![InboxFrame::Snapshot(s).encode()]),
        Resume::Changes(changes) => {
            let mut frames: Vec<String> = changes
                .into_iter()
                .map(|(cursor, change)| InboxFrame::Change { cursor, change }.encode())
                .collect();
            frames.push(
                InboxFrame::Resumed {
                    cursor: inbox.cursor(),
                }
                .encode(),
            );
            Ok(frames)
        }
        Resume::Refused(r) => Err(r),
    }
}

/// The answer to a client's text frame on the inbox stream, if any: a pong
/// to a ping, an `error` frame for what does not parse.
pub fn answer(text: &str) -> Option<String> {
    match serde_json::from_str::<InboxRequest>(text) {
        Ok(InboxRequest::Ping { nonce }) => Some(InboxFrame::Pong { nonce }.encode()),
        Err(e) => Some(
            InboxFrame::Error(WireError::new("invalid", format!("bad inbox frame: {e}"))).encode(),
        ),
    }
}
