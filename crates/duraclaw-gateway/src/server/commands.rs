//! The commands that drive sessions: each applied once, a turn taken
//! durably before it starts.

use std::path::PathBuf;
use std::sync::Arc;

use duraclaw_core::Result;
use duraclaw_core::approval::ApprovalGate;
use duraclaw_core::clock::{Clock, SystemClock};
use duraclaw_core::error::Error;
use duraclaw_core::executor::StartSpec;
use duraclaw_core::protocol::{
    Command, CommandEnvelope, CommandResult, DecidedBy, Event, NOTICE_WORKTREE, Notice,
    SessionWorktree, WireError, encode_frame,
};
use duraclaw_core::state::SessionState;
use duraclaw_core::store::{AppendBatch, DynSessionStore, NewEvent, RecordedCommand, SessionMeta};

/// Why a `set_mode`/`set_model` finds nothing to change.
const NOT_RUNNING: &str = "the session's executor is not running (it starts again with the next message); send a message first";

use super::guard::{GuardedSink, mark_closed, stop_unapproved};
use super::{GATEWAY_OWNER, Gateway, GatewaySession};
use crate::outbox::OutboxSink;

impl Gateway {
    /// Applies a command once per id and says how it went.
    pub async fn apply(&self, env: CommandEnvelope) -> CommandResult {
        let id = env.id.clone();
        match self.apply_inner(env).await {
            Ok(()) => CommandResult {
                id,
                ok: true,
                error: None,
            },
            Err(e) => {
                tracing::info!(command = %id, error = %e, "command refused");
                let mut wire = WireError::from(&e);
                if let Error::Invalid(msg) = &e {
                    if msg.starts_with("worktree busy") {
                        wire.code = "worktree_busy".into();
                    } else if msg.starts_with("session closed") {
                        wire.code = "session_closed".into();
                    } else if msg.starts_with("outbox full") {
                        wire.code = "outbox_full".into();
                    } else if let Some(why) = msg.strip_prefix(crate::agents::UNAVAILABLE_PREFIX) {
                        wire.code = duraclaw_core::protocol::ERROR_AGENT_UNAVAILABLE.into();
                        wire.message = format!("agent unavailable: {why}");
                    }
                }
                CommandResult {
                    id,
                    ok: false,
                    error: Some(wire),
                }
            }
        }
    }

    /// Records command `id`; whether it was recorded before. A command
    /// that starts a turn is recorded with its envelope (`pending`) as the
    /// mark that its turn has not begun, which its turn's first event
    /// clears.
    async fn already_applied(
        &self,
        store: &DynSessionStore,
        id: &str,
        pending: Option<&Arc<str>>,
    ) -> Result<bool> {
        let out = store
            .append(AppendBatch {
                events: vec![],
                command: Some(RecordedCommand {
                    id: id.to_owned(),
                    forward: pending.cloned(),
                    at_ms: SystemClock.now_ms(),
                }),
            })
            .await?;
        Ok(out.duplicate_command)
    }

    /// Records a turn-starting command and, unless it is a duplicate,
    /// notes it as waiting for its turn's first event.
    async fn take_turn(
        &self,
        session: &GatewaySession,
        id: &str,
        pending: Option<&Arc<str>>,
    ) -> Result<bool> {
        let dup = self
            .already_applied(session.log.store(), id, pending)
            .await?;
        if !dup {
            session
                .unstarted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id.to_owned());
        }
        Ok(dup)
    }

    /// A turn-starting command failed after it was recorded: it starts no
    /// turn, so its mark goes (the orchestrator has the refusal).
    pub(super) async fn settle(
        &self,
        session: &GatewaySession,
        id: &str,
        result: Result<()>,
    ) -> Result<()> {
        if result.is_err() {
            session
                .unstarted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|x| x != id);
            if let Err(e) = session.log.store().mark_forwarded(id).await {
                tracing::warn!(session = %session.id, command = %id, error = %e, "cannot clear a turn mark");
            }
        }
        result
    }

    /// Refuses a new turn in a session that was closed.
    async fn check_open(&self, session: &GatewaySession) -> Result<()> {
        if session.log.store().meta().await?.state == SessionState::Terminated {
            return Err(Error::Invalid(format!(
                "session closed: {} was closed on this gateway; start a new session",
                session.id
            )));
        }
        Ok(())
    }

    async fn apply_inner(&self, env: CommandEnvelope) -> Result<()> {
        // What a turn-starting command leaves as its mark: itself, so that
        // a restart before its turn begins can run it (see `recover`).
        let pending: Option<Arc<str>> = match &env.command {
            Command::Execute(_) | Command::Message(_) => Some(encode_frame(&env)?.into()),
            Command::Resume(r) if r.prompt.is_some() => Some(encode_frame(&env)?.into()),
            _ => None,
        };
        let pending = pending.as_ref();
        let CommandEnvelope {
            id,
            session_id,
            command,
        } = env;
        match command {
            Command::Execute(x) => {
                let session = match self.inner.options.directory.open(&session_id).await {
                    Ok(store) => {
                        // The session exists: a resent execute is applied once.
                        if self.already_applied(&store, &id, pending).await? {
                            return Ok(());
                        }
                        if store.head().await?.last_seq > 0 {
                            store.mark_forwarded(&id).await?;
                            return Err(Error::AlreadyExists {
                                what: "session",
                                id: session_id,
                            });
                        }
                        // Created, then the gateway stopped before it took
                        // the command: this is that execute; start it now.
                        self.session(&session_id).await?
                    }
                    Err(Error::NotFound { .. }) => {
                        // An agent that cannot run makes nothing.
                        self.inner.agents.pick(x.agent.as_deref()).await?;
                        let requested = self.inner.options.worktrees.resolve(&x.worktree)?;
                        let (worktree, info) = match &x.new_worktree {
                            Some(new) => {
                                let made = self.new_worktree(&requested, new, &session_id)?;
                                let info = SessionWorktree {
                                    path: made.path.display().to_string(),
                                    branch: Some(made.branch.clone()),
                                    base: Some(made.base.clone()),
                                    created: true,
                                    origin: Some(requested.display().to_string()),
                                };
                                (made.path, info)
                            }
                            None => {
                                self.check_not_busy(&requested, &session_id).await?;
                                let info = crate::worktree::session_worktree(&requested);
                                (requested, info)
                            }
                        };
                        let mut meta =
                            SessionMeta::new(&session_id, GATEWAY_OWNER, SystemClock.now_ms());
                        meta.worktree = worktree.display().to_string();
                        meta.model.clone_from(&x.model);
                        meta.agent.clone_from(&x.agent);
                        meta.permission_mode = x
                            .permission_mode
                            .clone()
                            .filter(|m| duraclaw_core::protocol::check_permission_mode(m).is_ok());
                        meta.title = x
                            .prompt
                            .lines()
                            .next()
                            .unwrap_or("")
                            .chars()
                            .take(80)
                            .collect();
                        let store = match self.inner.options.directory.create(meta).await {
                            Ok(store) => store,
                            Err(e) => {
                                if info.created {
                                    self.drop_new_worktree(&info);
                                }
                                return Err(e);
                            }
                        };
                        self.already_applied(&store, &id, pending).await?;
                        // The session's first event: where it runs, from
                        // which commit (the base of its diff).
                        let notice = Notice {
                            worktree: Some(Box::new(info)),
                            ..Notice::new(NOTICE_WORKTREE, "the session's worktree")
                        };
                        let e = NewEvent::new(&Event::Notice(notice), None, SystemClock.now_ms())?;
                        store.append(AppendBatch::events(vec![e])).await?;
                        let session = self.wrap(store).await?;
                        self.inner
                            .sessions
                            .lock()
                            .await
                            .insert(session_id.clone(), session.clone());
                        session
                    }
                    Err(e) => return Err(e),
                };
                session
                    .unstarted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(id.clone());
                let started = self.execute(&session, session_id, x).await;
                self.settle(&session, &id, started).await
            }
            Command::Resume(r) => {
                let session = self.session(&session_id).await?;
                self.check_outbox(&session).await?;
                let dup = if pending.is_some() {
                    self.take_turn(&session, &id, pending).await?
                } else {
                    self.already_applied(session.log.store(), &id, None).await?
                };
                if dup {
                    return Ok(());
                }
                let started = match self.check_open(&session).await {
                    Ok(()) => self.resume(&session, session_id, r).await,
                    Err(e) => Err(e),
                };
                self.settle(&session, &id, started).await
            }
            Command::Message(turn) => {
                let session = self.session(&session_id).await?;
                self.check_outbox(&session).await?;
                if self.take_turn(&session, &id, pending).await? {
                    return Ok(());
                }
                let sent = match self.check_open(&session).await {
                    Ok(()) => self.message(&session, session_id, turn.text).await,
                    Err(e) => Err(e),
                };
                self.settle(&session, &id, sent).await
            }
            Command::Abort(_) => {
                let session = self.session(&session_id).await?;
                if self.already_applied(session.log.store(), &id, None).await? {
                    return Ok(());
                }
                let exec = session.exec.lock().await;
                match exec.as_ref().filter(|e| e.is_running()) {
                    Some(e) => e.interrupt().await,
                    // Nothing runs: nothing to interrupt, and that is fine.
                    None => Ok(()),
                }
            }
            Command::Close(_) => {
                let session = self.session(&session_id).await?;
                // Closed on disk before the close is recorded: a restart in
                // between must not run the session's pending turns (and the
                // resent close, not yet recorded, is applied again).
                mark_closed(&session).await?;
                if self.already_applied(session.log.store(), &id, None).await? {
                    return Ok(());
                }
                // Stopping withdraws its questions; the worktree is free.
                let exec = session.exec.lock().await.take();
                if let Some(e) = exec {
                    e.shutdown().await?;
                }
                Ok(())
            }
            Command::SetMode(set) => {
                let session = self.session(&session_id).await?;
                if self.already_applied(session.log.store(), &id, None).await? {
                    return Ok(());
                }
                let result = match duraclaw_core::protocol::check_permission_mode(&set.mode) {
                    Err(why) => Err(Error::Invalid(why)),
                    Ok(()) => {
                        let exec = session.exec.lock().await;
                        match exec.as_ref().filter(|e| e.is_running()) {
                            Some(e) => e.set_permission_mode(&set.mode).await,
                            None => Err(Error::Invalid(NOT_RUNNING.into())),
                        }
                    }
                };
                self.change_failed(&session, &id, "permission mode", result)
                    .await
            }
            Command::SetModel(set) => {
                let session = self.session(&session_id).await?;
                if self.already_applied(session.log.store(), &id, None).await? {
                    return Ok(());
                }
                let result = match duraclaw_core::protocol::check_model(&set.model) {
                    Err(why) => Err(Error::Invalid(why)),
                    Ok(()) => {
                        let exec = session.exec.lock().await;
                        match exec.as_ref().filter(|e| e.is_running()) {
                            Some(e) => e.set_model(&set.model).await,
                            None => Err(Error::Invalid(NOT_RUNNING.into())),
                        }
                    }
                };
                self.change_failed(&session, &id, "model", result).await
            }
            Command::Answer(a) => {
                let session = self.session(&session_id).await?;
                let by = a.by.unwrap_or_else(|| DecidedBy::new("orchestrator"));
                match session.gate.decide(&a.question_id, a.decision, by).await {
                    Ok(_) => Ok(()),
                    // The request is gone with an earlier process; the
                    // orchestrator has the decision on record.
                    Err(Error::NotFound { .. }) => Err(Error::NotFound {
                        what: "pending approval on the gateway",
                        id: a.question_id,
                    }),
                    Err(e) => Err(e),
                }
            }
            other => Err(Error::Invalid(format!(
                "the gateway does not handle `{}`",
                other.name()
            ))),
        }
    }

    /// A `set_mode`/`set_model` the executor refused (or could not take) is
    /// logged as a `change_failed` notice, so the person who asked sees why.
    async fn change_failed(
        &self,
        session: &Arc<GatewaySession>,
        command_id: &str,
        what: &str,
        result: Result<()>,
    ) -> Result<()> {
        if let Err(e) = &result {
            tracing::info!(session = %session.id, command = %command_id, error = %e, "{what} not changed");
            let notice = duraclaw_core::protocol::Notice::new(
                duraclaw_core::protocol::NOTICE_CHANGE_FAILED,
                format!("The {what} was not changed: {e}"),
            )
            .about_command(command_id);
            self.log_event(session, &Event::Notice(notice)).await?;
        }
        result
    }

    /// Puts the approval rules the host sent for `session_id` in force. A
    /// session put away is not loaded for it: the rules are kept with it
    /// on disk, in force when it is loaded. A session this gateway does
    /// not have is skipped: the host sends them again with its `execute`
    /// and on every link.
    pub async fn set_rules(&self, session_id: &str, rules: &[duraclaw_core::protocol::RuleEntry]) {
        match self.park_rules(session_id, rules).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(session = %session_id, error = %e, "rules for an unknown session");
                return;
            }
        }
        match self.session(session_id).await {
            Ok(session) => session.set_rules(rules),
            Err(e) => {
                tracing::debug!(session = %session_id, error = %e, "rules for an unknown session")
            }
        }
    }

    /// Sets the rules of session `session_id` in its metadata if it is put
    /// away (not in memory); whether it was. Holds the session map, so it
    /// is not loaded meanwhile.
    async fn park_rules(
        &self,
        session_id: &str,
        rules: &[duraclaw_core::protocol::RuleEntry],
    ) -> Result<bool> {
        let sessions = self.inner.sessions.lock().await;
        if sessions.contains_key(session_id) {
            return Ok(false);
        }
        let store = self.inner.options.directory.open(session_id).await?;
        let mut meta = store.meta().await?;
        let Some(parked) = meta.parked.as_mut() else {
            return Ok(false);
        };
        if parked.rules != rules {
            parked.rules = rules.to_vec();
            store.put_meta(&meta).await?;
            tracing::debug!(target: super::EVICT_TARGET, session = %session_id, rules = rules.len(), "approval rules kept for a session put away");
        }
        drop(sessions);
        Ok(true)
    }

    /// Runs a turn-starting command taken before a restart, as its first
    /// application would have (its id is recorded already).
    pub(super) async fn run_turn(
        &self,
        session: &Arc<GatewaySession>,
        env: CommandEnvelope,
    ) -> Result<()> {
        // The session it was recorded in, whatever the envelope says.
        let session_id = session.id.clone();
        match env.command {
            Command::Execute(x) => self.execute(session, session_id, x).await,
            Command::Message(turn) => self.message(session, session_id, turn.text).await,
            Command::Resume(r) => self.resume(session, session_id, r).await,
            other => Err(Error::Invalid(format!(
                "`{}` does not start a turn",
                other.name()
            ))),
        }
    }

    /// Starts a session's executor on its first prompt.
    async fn execute(
        &self,
        session: &Arc<GatewaySession>,
        session_id: String,
        x: duraclaw_core::protocol::Execute,
    ) -> Result<()> {
        if let Some(mode) = &x.permission_mode {
            duraclaw_core::protocol::check_permission_mode(mode).map_err(Error::Invalid)?;
        }
        if let Some(rules) = &x.rules {
            session.set_rules(rules);
        }
        // The session's own worktree (a new one it was made with, or the
        // requested one), still offered.
        let worktree = self
            .inner
            .options
            .worktrees
            .resolve(&session.worktree.display().to_string())?;
        let spec = StartSpec {
            session_id,
            worktree: worktree.display().to_string(),
            prompt: Some(x.prompt),
            model: x.model,
            permission_mode: x.permission_mode,
            system_prompt: x.system_prompt,
            // A fork resumes its parent's executor session at a message.
            resume: x.fork.as_ref().map(|f| f.executor_session_id.clone()),
            fork_at: x.fork.map(|f| f.at_message_uuid),
        };
        self.start(session, spec, x.agent.as_deref()).await
    }

    /// Resumes an executor session, with a prompt or without.
    async fn resume(
        &self,
        session: &Arc<GatewaySession>,
        session_id: String,
        r: duraclaw_core::protocol::Resume,
    ) -> Result<()> {
        let worktree = self.inner.options.worktrees.resolve(&r.worktree)?;
        self.check_not_busy(&worktree, &session_id).await?;
        let agent = match r.agent {
            Some(a) => Some(a),
            None => session.log.store().meta().await?.agent,
        };
        let in_force = session.in_force();
        let spec = StartSpec {
            session_id,
            worktree: worktree.display().to_string(),
            prompt: r.prompt,
            model: in_force.model.or(r.model),
            permission_mode: in_force.mode,
            system_prompt: None,
            resume: Some(r.executor_session_id),
            fork_at: None,
        };
        self.start(session, spec, agent.as_deref()).await
    }

    /// Hands a user turn to the running executor, or resumes the executor
    /// with it if it is gone (exited, killed, or the gateway restarted).
    async fn message(
        &self,
        session: &Arc<GatewaySession>,
        session_id: String,
        text: String,
    ) -> Result<()> {
        let mut exec = session.exec.lock().await;
        if let Some(e) = exec.as_ref().filter(|e| e.is_running()) {
            return e.send_message(&text).await;
        }
        drop(exec.take());
        drop(exec);
        let meta = session.log.store().meta().await?;
        let worktree = PathBuf::from(&meta.worktree);
        self.check_not_busy(&worktree, &session_id).await?;
        // A mode or model switched mid-session holds in the relaunched CLI.
        let in_force = session.in_force();
        let spec = StartSpec {
            session_id,
            worktree: meta.worktree.clone(),
            prompt: Some(text),
            model: in_force.model.or_else(|| meta.model.clone()),
            permission_mode: in_force.mode,
            system_prompt: None,
            resume: meta.executor_session_id.clone(),
            fork_at: None,
        };
        // The agent the session started with.
        self.start(session, spec, meta.agent.as_deref()).await
    }

    /// Refuses `worktree` while a session other than `session_id` runs in
    /// it. Reads no store and builds no map: it compares each session's
    /// worktree in memory and asks only those in `worktree` whether they
    /// run, stopping at the first that does.
    async fn check_not_busy(&self, worktree: &std::path::Path, session_id: &str) -> Result<()> {
        let others: Vec<Arc<GatewaySession>> = self
            .inner
            .sessions
            .lock()
            .await
            .values()
            .filter(|s| s.worktree == worktree && s.id != session_id)
            .cloned()
            .collect();
        for holder in others {
            if holder.is_running().await {
                return Err(Error::Invalid(duraclaw_core::backend::web::worktree_busy(
                    &worktree.display().to_string(),
                    &holder.id,
                )));
            }
        }
        Ok(())
    }

    /// Starts `spec` with agent `agent` (the built-in one when `None`).
    async fn start(
        &self,
        session: &Arc<GatewaySession>,
        spec: StartSpec,
        agent: Option<&str>,
    ) -> Result<()> {
        let executor = self.inner.agents.pick(agent).await?;
        let sink = Arc::new(GuardedSink {
            outbox: OutboxSink::with_turn_marks(session.log.clone(), session.unstarted.clone()),
            session: Arc::downgrade(session),
            audit: self.inner.audit.clone(),
        });
        let exec = executor.start(spec, session.policy.clone(), sink).await?;
        let old = session.exec.lock().await.replace(exec);
        if let Some(old) = old {
            old.shutdown().await?;
        }
        if session
            .unapproved
            .load(std::sync::atomic::Ordering::Acquire)
        {
            // It ran a tool unapproved before it was stored: stop it too.
            stop_unapproved(session).await;
        }
        Ok(())
    }
}
