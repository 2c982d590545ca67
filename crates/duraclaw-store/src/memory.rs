//! The in-memory backend: [`MemoryDirectory`] and [`MemoryStore`].
//!
//! Every session lives behind its own mutex; each trait method is one
//! critical section, so each step is atomic. Clones of a directory share
//! its sessions, which lets a test drop every store and open the "same"
//! backing again, as after a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use duraclaw_core::protocol::{Gseq, Seq, UserQuestion};
use duraclaw_core::store::{
    AppendBatch, AppendOutcome, DynSessionStore, LogHead, QuestionRecord, RecordedCommand,
    Resolution, ResolveOutcome, SessionDirectory, SessionMeta, SessionStore, StoredEvent,
    page_limit,
};
use duraclaw_core::{Error, Result};

use duraclaw_core::backend::limits;
use duraclaw_core::backend::step::{self, LogStep, QuestionStatus};

/// Sessions held in process memory. Cheap to clone; clones share sessions.
#[derive(Debug, Clone, Default)]
pub struct MemoryDirectory {
    sessions: Arc<Mutex<BTreeMap<String, Arc<Mutex<SessionData>>>>>,
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sessions it holds, of every owner.
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Whether it holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn store(&self, session_id: &str, data: Arc<Mutex<SessionData>>) -> DynSessionStore {
        Arc::new(MemoryStore {
            session_id: session_id.to_owned(),
            data,
        })
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl SessionDirectory for MemoryDirectory {
    async fn create(&self, meta: SessionMeta) -> Result<DynSessionStore> {
        limits::check_meta(&meta)?;
        let mut sessions = lock(&self.sessions);
        if sessions.contains_key(&meta.session_id) {
            return Err(Error::AlreadyExists {
                what: "session",
                id: meta.session_id,
            });
        }
        let id = meta.session_id.clone();
        let data = Arc::new(Mutex::new(SessionData::new(meta)));
        sessions.insert(id.clone(), data.clone());
        Ok(self.store(&id, data))
    }

    async fn open(&self, session_id: &str) -> Result<DynSessionStore> {
        let data = lock(&self.sessions)
            .get(session_id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: "session",
                id: session_id.to_owned(),
            })?;
        Ok(self.store(session_id, data))
    }

    async fn list(&self, owner: &str) -> Result<Vec<SessionMeta>> {
        let mut metas = self.list_all().await?;
        metas.retain(|meta| meta.owner == owner);
        Ok(metas)
    }

    async fn list_all(&self) -> Result<Vec<SessionMeta>> {
        let all: Vec<_> = lock(&self.sessions).values().cloned().collect();
        let mut metas: Vec<SessionMeta> = all.iter().map(|data| lock(data).meta.clone()).collect();
        metas.sort_by(|a, b| {
            b.updated_at_ms
                .cmp(&a.updated_at_ms)
                .then_with(|| a.session_id.cmp(&b.session_id))
        });
        Ok(metas)
    }

    async fn remove(&self, session_id: &str) -> Result<()> {
        lock(&self.sessions)
            .remove(session_id)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound {
                what: "session",
                id: session_id.to_owned(),
            })
    }
}

/// One session held in memory, from a [`MemoryDirectory`].
#[derive(Debug, Clone)]
pub struct MemoryStore {
    session_id: String,
    data: Arc<Mutex<SessionData>>,
}

impl MemoryStore {
    fn data(&self) -> MutexGuard<'_, SessionData> {
        lock(&self.data)
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
impl SessionStore for MemoryStore {
    fn session_id(&self) -> &str {
        &self.session_id
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome> {
        step::append(&mut *self.data(), batch)
    }

    async fn append_with_meta(
        &self,
        batch: AppendBatch,
        meta: &SessionMeta,
    ) -> Result<AppendOutcome> {
        let mut data = self.data();
        // Checked before the append writes anything, so a refused update
        // refuses the events too.
        limits::check_meta_update(&data.meta, meta)?;
        let outcome = step::append(&mut *data, batch)?;
        data.meta = meta.clone();
        Ok(outcome)
    }

    async fn read_after(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
        let data = self.data();
        let start = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(data
            .events
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(page_limit(limit))
            .cloned()
            .collect())
    }

    async fn head(&self) -> Result<LogHead> {
        let data = self.data();
        Ok(data.head())
    }

    async fn meta(&self) -> Result<SessionMeta> {
        Ok(self.data().meta.clone())
    }

    async fn put_meta(&self, meta: &SessionMeta) -> Result<()> {
        let mut data = self.data();
        limits::check_meta_update(&data.meta, meta)?;
        data.meta = meta.clone();
        Ok(())
    }

    async fn resolve(
        &self,
        question_id: &str,
        resolution: Resolution,
        command: Option<RecordedCommand>,
    ) -> Result<ResolveOutcome> {
        step::resolve(&mut *self.data(), question_id, resolution, command)
    }

    async fn questions(&self, pending_only: bool) -> Result<Vec<QuestionRecord>> {
        Ok(self
            .data()
            .questions
            .iter()
            .filter(|q| !pending_only || q.resolution.is_none())
            .cloned()
            .collect())
    }

    async fn unforwarded(&self) -> Result<Vec<RecordedCommand>> {
        Ok(self
            .data()
            .commands
            .iter()
            .filter(|c| c.command.forward.is_some() && !c.forwarded)
            .map(|c| c.command.clone())
            .collect())
    }

    async fn mark_forwarded(&self, command_id: &str) -> Result<()> {
        let mut data = self.data();
        if let Some(&i) = data.command_index.get(command_id)
            && let Some(c) = data.commands.get_mut(i)
        {
            c.forwarded = true;
        }
        Ok(())
    }

    async fn mark_turn_began(&self, command_id: &str, seq: Seq) -> Result<()> {
        let mut data = self.data();
        if let Some(&i) = data.command_index.get(command_id)
            && let Some(c) = data.commands.get_mut(i)
        {
            c.forwarded = true;
            c.turn_seq = Some(seq);
        }
        Ok(())
    }

    async fn turn_began_at(&self, seq: Seq) -> Result<bool> {
        Ok(self.data().commands.iter().any(|c| c.turn_seq == Some(seq)))
    }
}

#[derive(Debug)]
struct CommandEntry {
    command: RecordedCommand,
    forwarded: bool,
    /// The seq of the event its turn began with.
    turn_seq: Option<Seq>,
}

#[derive(Debug)]
struct SessionData {
    meta: SessionMeta,
    /// `events[i].seq == i + 1`.
    events: Vec<StoredEvent>,
    highest_gseq: Gseq,
    /// In the order asked.
    questions: Vec<QuestionRecord>,
    question_index: HashMap<String, usize>,
    /// In the order recorded.
    commands: Vec<CommandEntry>,
    command_index: HashMap<String, usize>,
}

impl SessionData {
    fn new(meta: SessionMeta) -> Self {
        SessionData {
            meta,
            events: Vec::new(),
            highest_gseq: 0,
            questions: Vec::new(),
            question_index: HashMap::new(),
            commands: Vec::new(),
            command_index: HashMap::new(),
        }
    }

    fn head(&self) -> LogHead {
        LogHead {
            last_seq: self.events.last().map_or(0, |e| e.seq),
            highest_gseq: self.highest_gseq,
        }
    }
}

// Every method is infallible: the step's checks run before its first write,
// so a refused step leaves the session untouched.
impl LogStep for SessionData {
    fn head(&mut self) -> Result<LogHead> {
        Ok(SessionData::head(self))
    }

    fn command_seen(&mut self, command_id: &str) -> Result<bool> {
        Ok(self.command_index.contains_key(command_id))
    }

    fn insert_event(&mut self, event: &StoredEvent, highest_gseq: Gseq) -> Result<()> {
        self.events.push(event.clone());
        self.highest_gseq = highest_gseq;
        Ok(())
    }

    fn ask(&mut self, question: &UserQuestion, asked_seq: Seq) -> Result<()> {
        if !self.question_index.contains_key(&question.question_id) {
            self.question_index
                .insert(question.question_id.clone(), self.questions.len());
            self.questions.push(QuestionRecord {
                question: question.clone(),
                asked_seq,
                resolution: None,
            });
        }
        Ok(())
    }

    fn question_status(&mut self, question_id: &str) -> Result<QuestionStatus> {
        let record = self
            .question_index
            .get(question_id)
            .and_then(|&i| self.questions.get(i));
        Ok(match record {
            None => QuestionStatus::Unknown,
            Some(QuestionRecord {
                resolution: Some(r),
                ..
            }) => QuestionStatus::Decided(r.clone()),
            Some(_) => QuestionStatus::Pending,
        })
    }

    fn resolve_pending(&mut self, question_id: &str, resolution: &Resolution) -> Result<()> {
        if let Some(&i) = self.question_index.get(question_id)
            && let Some(record) = self.questions.get_mut(i)
            && record.resolution.is_none()
        {
            record.resolution = Some(resolution.clone());
        }
        Ok(())
    }

    fn record_command(&mut self, command: &RecordedCommand) -> Result<()> {
        if !self.command_index.contains_key(&command.id) {
            self.command_index
                .insert(command.id.clone(), self.commands.len());
            self.commands.push(CommandEntry {
                command: command.clone(),
                forwarded: false,
                turn_seq: None,
            });
        }
        Ok(())
    }
}

/// Locks a mutex; a poisoned one is still consistent, because every
/// critical section checks before it writes and its writes cannot panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_events::{T0, ev};

    #[tokio::test]
    async fn clones_share_sessions() {
        let dir = MemoryDirectory::new();
        assert!(dir.is_empty());
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        store
            .append(AppendBatch::events(vec![ev(0, Some(1)), ev(1, None)]))
            .await
            .unwrap();
        let again = dir.clone();
        drop(store);
        drop(dir);
        assert_eq!(again.len(), 1);
        let store = again.open("s").await.unwrap();
        let head = store.head().await.unwrap();
        assert_eq!((head.last_seq, head.highest_gseq), (2, 1));
        // A separate directory is separate.
        assert!(matches!(
            MemoryDirectory::new().open("s").await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn read_after_past_the_end_and_huge_after() {
        let dir = MemoryDirectory::new();
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        store
            .append(AppendBatch::events(vec![ev(0, None), ev(1, None)]))
            .await
            .unwrap();
        assert!(store.read_after(2, 10).await.unwrap().is_empty());
        assert!(store.read_after(u64::MAX, 10).await.unwrap().is_empty());
        assert_eq!(store.read_after(1, 0).await.unwrap()[0].seq, 2);
    }

    #[tokio::test]
    async fn seq_room_is_checked_before_anything_changes() {
        let dir = MemoryDirectory::new();
        let store = dir
            .create(SessionMeta::new("s", "alice", T0))
            .await
            .unwrap();
        store
            .append(AppendBatch::events(vec![ev(0, None)]))
            .await
            .unwrap();
        // Pretend the log is almost full, then try to pass the limit.
        {
            let shared = store_data(&dir, "s");
            let mut data = lock(&shared);
            let mut last = data.events[0].clone();
            last.seq = limits::MAX_SEQ - 1;
            data.events = vec![last];
        }
        let err = store
            .append(AppendBatch::events(vec![ev(1, None), ev(2, None)]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        let out = store
            .append(AppendBatch::events(vec![ev(1, None)]))
            .await
            .unwrap();
        assert_eq!(out.stored[0].seq, limits::MAX_SEQ);
    }

    fn store_data(dir: &MemoryDirectory, id: &str) -> Arc<Mutex<SessionData>> {
        lock(&dir.sessions).get(id).cloned().unwrap()
    }
}
