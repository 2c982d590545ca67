//! A session's worktree: making a new one at the start, removing it, and
//! the session's diff (the `request` frames).

use std::path::Path;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_core::protocol::{
    ERROR_WORKTREE_DIRTY, ERROR_WORKTREE_NOT_CREATED, Event, GatewayRequest, NOTICE_WORKTREE,
    NewWorktree, SessionWorktree, WireError, WorktreeRemoved,
};

use super::guard::mark_closed;
use super::{Gateway, GatewaySession};
use crate::diff::{DiffLimits, session_diff};
use crate::fresh;

impl Gateway {
    /// Makes a new worktree for `session_id` from `from`'s repository.
    pub(super) fn new_worktree(
        &self,
        from: &Path,
        new: &NewWorktree,
        session_id: &str,
    ) -> Result<fresh::Created> {
        let root = self
            .inner
            .options
            .worktrees
            .new_worktree_root()
            .ok_or_else(|| {
                Error::Invalid(
                    "this gateway makes no new worktrees (it has no worktree root); \
                     pick an existing worktree"
                        .into(),
                )
            })?;
        let made = fresh::create(from, new.base.as_deref(), root, session_id)?;
        // Discovery lists it (a linked worktree of an offered repository);
        // refuse and undo if it somehow does not.
        if let Err(e) = self
            .inner
            .options
            .worktrees
            .resolve(&made.path.display().to_string())
        {
            self.drop_new_worktree(&SessionWorktree {
                path: made.path.display().to_string(),
                branch: Some(made.branch),
                base: Some(made.base),
                created: true,
                origin: None,
            });
            return Err(e);
        }
        Ok(made)
    }

    /// Undoes a new worktree whose session could not be created.
    pub(super) fn drop_new_worktree(&self, info: &SessionWorktree) {
        if let (Some(branch), Some(base)) = (&info.branch, &info.base)
            && let Err(e) = fresh::remove(Path::new(&info.path), branch, base, true)
        {
            tracing::warn!(path = %info.path, error = %e, "cannot remove a new worktree");
        }
    }

    /// The worktree a session's first event records.
    async fn recorded_worktree(&self, session: &GatewaySession) -> Result<SessionWorktree> {
        for e in session.log().store().read_after(0, 8).await? {
            if let Ok(Event::Notice(n)) = e.event()
                && n.code == NOTICE_WORKTREE
                && let Some(w) = n.worktree
            {
                return Ok(*w);
            }
        }
        Err(Error::Invalid(format!(
            "session {} records no worktree (it started before this gateway version)",
            session.id()
        )))
    }

    /// Answers a `request` frame: the reply's value, or why not.
    pub async fn request(
        &self,
        request: GatewayRequest,
    ) -> std::result::Result<serde_json::Value, WireError> {
        let out = match request {
            GatewayRequest::RemoveWorktree { session_id, force } => {
                self.remove_worktree(&session_id, force).await
            }
            GatewayRequest::Diff { session_id } => self.diff(&session_id).await,
            GatewayRequest::Agents {} => serde_json::to_value(self.agents().await)
                .map_err(|e| Error::other("cannot encode the agents", e)),
            _ => Err(Error::Invalid(
                "request kind not handled by this gateway".into(),
            )),
        };
        out.map_err(|e| {
            let mut wire = WireError::from(&e);
            if fresh::is_dirty_refusal(&e) {
                wire.code = ERROR_WORKTREE_DIRTY.into();
            } else if matches!(&e, Error::Invalid(m) if m.starts_with("worktree not created")) {
                wire.code = ERROR_WORKTREE_NOT_CREATED.into();
            }
            tracing::info!(code = %wire.code, error = %e, "request refused");
            wire
        })
    }

    /// Stops the session and removes the worktree the gateway made for it.
    async fn remove_worktree(&self, session_id: &str, force: bool) -> Result<serde_json::Value> {
        let session = self.session(session_id).await?;
        let info = self.recorded_worktree(&session).await?;
        let (Some(branch), Some(base), true) = (&info.branch, &info.base, info.created) else {
            return Err(Error::Invalid(format!(
                "worktree not created by Duraclaw: {} was not made for this session, so it is \
                 not removed; close the session keeping it",
                info.path
            )));
        };
        let path = Path::new(&info.path);
        let removed = |branch_deleted| WorktreeRemoved {
            path: info.path.clone(),
            branch: branch.clone(),
            branch_deleted,
        };
        if std::fs::symlink_metadata(path).is_err() {
            // Removed already (a retried request).
            return serde_json::to_value(removed(false))
                .map_err(|e| Error::other("cannot encode the reply", e));
        }
        if !force {
            // Refused before the session is touched.
            let dirty = fresh::uncommitted(path)?;
            if !dirty.is_empty() {
                return fresh::remove(path, branch, base, false).map(|_| serde_json::Value::Null);
            }
        }
        mark_closed(&session).await?;
        let exec = session.exec.lock().await.take();
        if let Some(e) = exec {
            e.shutdown().await?;
        }
        let out = fresh::remove(path, branch, base, force)?;
        serde_json::to_value(removed(out.branch_deleted))
            .map_err(|e| Error::other("cannot encode the reply", e))
    }

    /// The session's changes since its base commit.
    async fn diff(&self, session_id: &str) -> Result<serde_json::Value> {
        let session = self.session(session_id).await?;
        let info = self.recorded_worktree(&session).await?;
        let path = std::path::PathBuf::from(&info.path);
        let base = info.base.clone();
        let diff = tokio::task::spawn_blocking(move || {
            session_diff(&path, base.as_deref(), DiffLimits::default())
        })
        .await
        .map_err(|e| Error::other("the diff task failed", e))??;
        serde_json::to_value(diff).map_err(|e| Error::other("cannot encode the diff", e))
    }
}
