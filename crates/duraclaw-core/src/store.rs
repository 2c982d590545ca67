//! [`SessionStore`]: one session's durable state, and [`SessionDirectory`],
//! which opens stores by session id and lists a user's sessions.
//!
//! A store holds the session's event log (the store assigns the dense,
//! strictly increasing `seq`), its metadata and state, the questions asked
//! and their first decision, and the ids of commands already applied.
//! Everything a method does is one atomic step: a crash leaves either all of
//! it or none of it.
//!
//! Backends share [`backend::step`](crate::backend::step) (the append and
//! resolve steps over a few primitive reads and writes) and
//! [`backend::limits`](crate::backend::limits) (the checks made before any
//! write), so every backend assigns seqs, drops duplicates and refuses input
//! the same way.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::{
    DecidedBy, Decision, Event, Gseq, MAX_EVENT_BYTES, QuestionResolved, RawEvent, Seq,
    UserQuestion,
};
use crate::state::SessionState;
use crate::{SendOutsideWasm, SyncOutsideWasm};

/// The most events one `read_after` call returns, whatever is asked.
pub const MAX_PAGE: usize = 4096;

/// An event to append, already encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The gateway's sequence number, for events that came from it.
    pub gseq: Option<Gseq>,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The event's JSON text.
    pub json: Arc<str>,
    /// The question this event asks, recorded as pending with it.
    pub asks: Option<UserQuestion>,
    /// The question this event resolves (e.g. the executor withdrew it):
    /// recorded with it if the question is still pending.
    pub resolves: Option<(String, Resolution)>,
}

impl NewEvent {
    /// Encodes `event`; a `user_question` also records the question.
    pub fn new(event: &Event, gseq: Option<Gseq>, at_ms: i64) -> Result<Self> {
        Self::with_json(event.to_json()?.into(), Some(event), gseq, at_ms)
    }

    /// An event already in text form ([`RawEvent`]), appended as its text
    /// without encoding it again; a `user_question` also records the
    /// question.
    pub fn from_raw(event: &RawEvent, gseq: Option<Gseq>, at_ms: i64) -> Result<Self> {
        Self::with_json(event.json().clone(), event.event(), gseq, at_ms)
    }

    fn with_json(
        json: Arc<str>,
        event: Option<&Event>,
        gseq: Option<Gseq>,
        at_ms: i64,
    ) -> Result<Self> {
        if json.len() > MAX_EVENT_BYTES {
            return Err(Error::TooLarge {
                what: "event",
                size: json.len(),
                limit: MAX_EVENT_BYTES,
            });
        }
        let (asks, resolves) = match event {
            Some(Event::UserQuestion(q)) => (Some(q.clone()), None),
            Some(Event::QuestionResolved(r)) => (
                None,
                Some((
                    r.question_id.clone(),
                    Resolution {
                        decision: r.decision.clone(),
                        by: r.by.clone(),
                        at_ms: r.at_ms,
                    },
                )),
            ),
            _ => (None, None),
        };
        Ok(NewEvent {
            gseq,
            at_ms,
            json,
            asks,
            resolves,
        })
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Dense per-session sequence number, from 1.
    pub seq: Seq,
    /// The gateway's sequence number, if it came from the gateway.
    pub gseq: Option<Gseq>,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The event's JSON text, as appended.
    pub json: Arc<str>,
}

impl StoredEvent {
    /// Decodes the event.
    pub fn event(&self) -> Result<Event> {
        Event::from_json(&self.json)
    }
}

/// Reads a session's log from the start, a page at a time, handing each
/// event to `take` until it returns `true` or the log ends. An event that
/// does not decode is skipped (and logged).
pub async fn walk_log(
    store: &dyn SessionStore,
    mut take: impl FnMut(Seq, &Event) -> bool + SendOutsideWasm,
) -> Result<()> {
    let mut after = 0;
    loop {
        let page = store.read_after(after, MAX_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        for stored in &page {
            match stored.event() {
                Ok(event) => {
                    if take(stored.seq, &event) {
                        return Ok(());
                    }
                }
                Err(e) => {
                    tracing::warn!(seq = stored.seq, error = %e, "an event of the log does not decode")
                }
            }
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendOutcome {
    /// The events stored, with their new seqs, in order.
    pub stored: Vec<StoredEvent>,
    /// Events skipped because their gseq was already stored.
    pub duplicates: usize,
    /// The highest gseq now stored (0 if none).
    pub highest_gseq: Gseq,
    /// The batch's command id was seen before; nothing was appended.
    pub duplicate_command: bool,
}

/// The ends of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogHead {
    /// The highest seq (0 when empty).
    pub last_seq: Seq,
    /// The highest gseq (0 when none).
    pub highest_gseq: Gseq,
}

/// A decision on a question and who made it when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// The decision.
    pub decision: Decision,
    /// Who decided.
    pub by: DecidedBy,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// A question and, once decided, its first decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    /// The question as asked.
    pub question: UserQuestion,
    /// The seq of the `user_question` event.
    pub asked_seq: Seq,
    /// The first decision, once there is one.
    pub resolution: Option<Resolution>,
}

/// What [`SessionStore::resolve`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ResolveOutcome {
    /// This decision was the first; its `question.resolved` event is logged.
    Decided(StoredEvent),
    /// Someone decided first; nothing changed.
    AlreadyDecided(Resolution),
}

/// The `question.resolved` event for a resolution, as every backend logs it.
pub fn resolution_event(question_id: &str, r: &Resolution) -> Result<NewEvent> {
    let event = Event::QuestionResolved(QuestionResolved {
        question_id: question_id.to_owned(),
        decision: r.decision.clone(),
        by: r.by.clone(),
        at_ms: r.at_ms,
    });
    let mut e = NewEvent::new(&event, None, r.at_ms)?;
    // The store records this resolution itself, first-answer-wins.
    e.resolves = None;
    Ok(e)
}

/// What the directory knows of a session without opening its log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// The session id.
    pub session_id: String,
    /// The user who owns it; every other user gets "not found".
    pub owner: String,
    /// A title, e.g. the first prompt's first line.
    #[serde(default)]
    pub title: String,
    /// The worktree it runs in.
    #[serde(default)]
    pub worktree: String,
    /// The worktree it was asked to run in, when it runs in a new one made
    /// from there (see [`SessionMeta::rules_worktree`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The model: the one it started with, or the one last switched to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The permission mode last switched to (`mode_changed`), when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// The executor's session id, for resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_session_id: Option<String>,
    /// The configured agent that runs it; the built-in Claude Code
    /// executor when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Current state.
    #[serde(flatten)]
    pub state: SessionState,
    /// Created, ms since the epoch.
    pub created_at_ms: i64,
    /// Last activity, ms since the epoch.
    pub updated_at_ms: i64,
    /// Cumulative cost in US dollars.
    #[serde(default)]
    pub cost_usd: f64,
    /// Questions waiting for a human.
    #[serde(default)]
    pub pending_questions: u32,
    /// A fork: the session and the `user.message` it was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkedFrom>,
    /// In a gateway's own store: the session was put away (evicted from
    /// memory) with nothing pending. Hosts never set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<Box<Parked>>,
    /// In a gateway's own store: the calls allowed "for this session"
    /// (`allow` with `remember`), in the order decided, so that they hold
    /// after the session is put away or the gateway restarts. Hosts never
    /// set it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_allows: Vec<SessionAllow>,
    /// In a gateway's own store: where the gseqs its link sends part from
    /// its log's seqs, oldest first (empty: the gseq is the seq). Hosts
    /// never set it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gseq_shifts: Vec<GseqShift>,
    /// On a host whose store a crash can take commits back from: the loads
    /// of the session's log, oldest first, at most [`MAX_EPOCHS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epochs: Vec<LogEpoch>,
}

impl SessionMeta {
    /// The metadata as clients see it (the API's sessions, the inbox):
    /// without what only its host reads back (the log's epochs, a
    /// gateway's gseq shifts and session allows).
    pub fn for_clients(mut self) -> SessionMeta {
        self.epochs = Vec::new();
        self.gseq_shifts = Vec::new();
        self.session_allows = Vec::new();
        self
    }
}

/// The most epochs a session keeps: a client whose epoch is older is told
/// to start over.
pub const MAX_EPOCHS: usize = 16;

/// One load of a session's log and where the log ended then.
///
/// A store that commits without waiting for the disk (SQLite in WAL with
/// `synchronous=NORMAL`) can lose its last commits in a machine crash; the
/// log then grows again from an earlier seq, and those seqs number other
/// events. What a client saw in epoch `e` up to seq `after` is still the log
/// if every later load found the log at least that long: a load that found
/// it shorter means it was taken back below `after`
/// ([`resumable`](LogEpoch::resumable)). The record is written with the
/// metadata, in the same store: a crash that takes it back took back
/// everything logged after it too, so the next load's end is no later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEpoch {
    /// Its id.
    pub epoch: crate::protocol::Epoch,
    /// The log's last seq when it was loaded.
    pub head: crate::protocol::Seq,
}

impl LogEpoch {
    /// Whether a client that saw the log up to `after` in `epoch` holds
    /// exactly the log's events up to there: `epoch` is one of `epochs`
    /// and no later load found the log shorter than `after`.
    pub fn resumable(
        epochs: &[LogEpoch],
        epoch: crate::protocol::Epoch,
        after: crate::protocol::Seq,
    ) -> bool {
        match epochs.iter().position(|e| e.epoch == epoch) {
            Some(i) => epochs[i + 1..].iter().all(|later| later.head >= after),
            None => false,
        }
    }
}

/// A gateway log whose tail a machine crash rolled back, while the
/// orchestrator had those events already: the gateway's events after seq
/// `after_seq` go out numbered after gseq `after_gseq` (the last the
/// orchestrator held), so that none takes a gseq the orchestrator has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GseqShift {
    /// The log's last seq when the orchestrator was found ahead.
    pub after_seq: crate::protocol::Seq,
    /// The orchestrator's last gseq then: seq `after_seq + n` goes out as
    /// gseq `after_gseq + n`.
    pub after_gseq: crate::protocol::Gseq,
}

/// One "allow for this session": the same tool with the same input is
/// allowed again without asking, as `by` allowed it answering
/// `question_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionAllow {
    /// The tool's name.
    pub tool: String,
    /// Its input, exactly.
    pub input: serde_json::Value,
    /// The question whose answer allowed it.
    pub question_id: String,
    /// Who allowed it.
    pub by: crate::protocol::DecidedBy,
}

/// A session a gateway put away with nothing pending (no running
/// executor, no open question, no turn waiting to start, every event
/// acknowledged): a restart need not load it, and loading it again on
/// demand restores its approval rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The approval rules in force for it: the ones it had, replaced by
    /// each the host sends while it is put away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::protocol::RuleEntry>,
}

/// The lineage of a fork: its parent session and the seq of the parent's
/// `user.message` whose exchange is the last one the fork carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkedFrom {
    /// The parent session's id.
    pub session_id: String,
    /// The seq of the parent's `user.message` forked from.
    pub seq: u64,
}

impl SessionMeta {
    /// A new session's metadata, in state `initializing`.
    pub fn new(
        session_id: impl Into<String>,
        owner: impl Into<String>,
        created_at_ms: i64,
    ) -> Self {
        SessionMeta {
            session_id: session_id.into(),
            owner: owner.into(),
            title: String::new(),
            worktree: String::new(),
            origin: None,
            model: None,
            permission_mode: None,
            executor_session_id: None,
            agent: None,
            state: SessionState::Initializing,
            created_at_ms,
            updated_at_ms: created_at_ms,
            cost_usd: 0.0,
            forked_from: None,
            pending_questions: 0,
            parked: None,
            session_allows: Vec::new(),
            gseq_shifts: Vec::new(),
            epochs: Vec::new(),
        }
    }

    /// Sets what a session started in `worktree` with `prompt` shows: its
    /// title ([`SessionMeta::title_from_prompt`]), its worktree, and its
    /// model when one is named (a blank one is none).
    pub fn starting(mut self, worktree: &str, prompt: &str, model: Option<&str>) -> Self {
        self.title = Self::title_from_prompt(prompt);
        self.worktree = worktree.to_owned();
        self.model = model.filter(|m| !m.trim().is_empty()).map(str::to_owned);
        self
    }

    /// The worktree its worktree-scope approval rules name: the one it was
    /// asked to run in ([`SessionMeta::origin`]) when the gateway made it a
    /// new one, else the one it runs in.
    pub fn rules_worktree(&self) -> &str {
        self.origin.as_deref().unwrap_or(&self.worktree)
    }

    /// A session's title: the first non-blank line of its prompt, trimmed,
    /// at most 80 characters.
    pub fn title_from_prompt(prompt: &str) -> String {
        prompt
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .chars()
            .take(80)
            .collect()
    }
}

/// A command id recorded with the step that applies it, and the frame to
/// forward to the gateway (kept until the gateway confirms it).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCommand {
    /// The command's id; a second step with the same id is skipped whole.
    pub id: String,
    /// The `ToGateway` frame to forward, if any.
    pub forward: Option<Arc<str>>,
    /// When it was recorded, ms since the epoch.
    pub at_ms: i64,
}

/// Events to append in one atomic step, optionally tied to a command id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendBatch {
    /// The events, in order.
    pub events: Vec<NewEvent>,
    /// The command this step applies: if its id was recorded before, nothing
    /// is appended and [`AppendOutcome::duplicate_command`] is set.
    pub command: Option<RecordedCommand>,
}

impl AppendBatch {
    /// A batch of events with no command.
    pub fn events(events: Vec<NewEvent>) -> Self {
        AppendBatch {
            events,
            command: None,
        }
    }
}

/// One session's durable state.
///
/// Backends: memory and SQLite in `duraclaw-store`, DO SQL in `duraclaw-cf`.
/// All pass the `conformance` suite.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait SessionStore: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// The session this store holds.
    fn session_id(&self) -> &str;

    /// Appends events in order, assigning each the next seq, in one step.
    ///
    /// Idempotent for gateway events: one whose gseq is not above the
    /// highest stored gseq is skipped and counted as a duplicate. A
    /// `user_question` event's question is recorded as pending in the same
    /// step. Backends group concurrent appends into one transaction.
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome>;

    /// Up to `limit` (at most [`MAX_PAGE`]) events with seq > `after`, in order.
    async fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>>;

    /// The highest seq and gseq.
    async fn head(&self) -> Result<LogHead>;

    /// The session's metadata.
    async fn meta(&self) -> Result<SessionMeta>;

    /// Replaces the session's metadata (the id and owner cannot change).
    async fn put_meta(&self, meta: &SessionMeta) -> Result<()>;

    /// [`SessionStore::append`] and then [`SessionStore::put_meta`], as one
    /// write where the backend can: the events and the state they imply
    /// commit together, in one transaction instead of two (the SQLite and
    /// memory backends do so). If the append fails nothing is written; a
    /// refused metadata update refuses the events too.
    ///
    /// The default runs the two one after the other.
    async fn append_with_meta(
        &self,
        batch: AppendBatch,
        meta: &SessionMeta,
    ) -> Result<AppendOutcome> {
        let outcome = self.append(batch).await?;
        self.put_meta(meta).await?;
        Ok(outcome)
    }

    /// Decides a question, first answer wins: the first decision is recorded,
    /// its `question.resolved` event appended and `command` recorded in one
    /// step; later ones get [`ResolveOutcome::AlreadyDecided`] with the first
    /// and record nothing. [`Error::NotFound`] for an unknown question.
    async fn resolve(
        &self,
        question_id: &str,
        resolution: Resolution,
        command: Option<RecordedCommand>,
    ) -> Result<ResolveOutcome>;

    /// Questions, oldest first; only undecided ones when `pending_only`.
    async fn questions(&self, pending_only: bool) -> Result<Vec<QuestionRecord>>;

    /// Recorded commands whose frame has not been forwarded yet, oldest first.
    async fn unforwarded(&self) -> Result<Vec<RecordedCommand>>;

    /// Records that a command's frame reached the gateway.
    async fn mark_forwarded(&self, command_id: &str) -> Result<()>;

    /// Clears the mark of turn-starting command `command_id` as
    /// [`SessionStore::mark_forwarded`] does, and records that its turn
    /// began with the event at `seq`: what tells, after a restart, an
    /// event that began a turn from the same event with no turn behind it
    /// (an agent's `session.init` when it was resumed without a prompt).
    /// The default records no position.
    async fn mark_turn_began(&self, command_id: &str, seq: Seq) -> Result<()> {
        let _ = seq;
        self.mark_forwarded(command_id).await
    }

    /// Whether a command's turn began with the event at `seq`
    /// ([`SessionStore::mark_turn_began`]). The default, for a store that
    /// records no position, answers `true`: every such event counts as a
    /// turn's beginning.
    async fn turn_began_at(&self, seq: Seq) -> Result<bool> {
        let _ = seq;
        Ok(true)
    }
}

/// A shared, dynamically typed store.
pub type DynSessionStore = Arc<dyn SessionStore>;

/// Opens session stores by id and lists sessions.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait SessionDirectory: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Creates a session; [`Error::AlreadyExists`] if the id is taken.
    async fn create(&self, meta: SessionMeta) -> Result<DynSessionStore>;

    /// Opens an existing session; [`Error::NotFound`] if there is none.
    async fn open(&self, session_id: &str) -> Result<DynSessionStore>;

    /// The sessions `owner` owns, most recently active first.
    async fn list(&self, owner: &str) -> Result<Vec<SessionMeta>>;

    /// Every session, most recently active first (hosts use it to
    /// re-attach sessions after a restart).
    async fn list_all(&self) -> Result<Vec<SessionMeta>>;

    /// Removes a session and all it holds, in one step, as if it had never
    /// been created: hosts undo a start that failed part way with it.
    /// [`Error::NotFound`] if there is none.
    async fn remove(&self, session_id: &str) -> Result<()>;
}

/// A shared, dynamically typed directory.
pub type DynSessionDirectory = Arc<dyn SessionDirectory>;

/// Checks `limit` for [`SessionStore::read_after`] and clamps it.
pub fn page_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_session_is_titled_by_its_prompt() {
        assert_eq!(
            SessionMeta::title_from_prompt("\n  \n  fix the bug  \nthen more"),
            "fix the bug"
        );
        assert_eq!(SessionMeta::title_from_prompt(" \n\t"), "");
        let long = "é".repeat(100);
        assert_eq!(SessionMeta::title_from_prompt(&long).chars().count(), 80);

        let meta = SessionMeta::new("s1", "alice", 5).starting("/wt", "hello", Some("  "));
        assert_eq!(
            (meta.title.as_str(), meta.worktree.as_str(), meta.model),
            ("hello", "/wt", None)
        );
        let meta = SessionMeta::new("s1", "alice", 5).starting("/wt", "hello", Some("opus"));
        assert_eq!(meta.model.as_deref(), Some("opus"));
        assert_eq!(meta.state, SessionState::Initializing);
    }
}
