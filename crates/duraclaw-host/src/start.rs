//! Starting a session, the same on both hosts, as a plan the host follows
//! with its own I/O between the steps:
//!
//! 1. [`read_request`]: read and check the body; nothing exists yet, so a
//!    refusal leaves nothing behind.
//! 2. The host asks the gateway for its worktrees; [`check_worktree`]
//!    refuses one the gateway does not offer (400) or another session
//!    holds (409).
//! 3. [`StartPlan::new`] with a fresh [`session_id`](crate::ids::session_id):
//!    the host creates the session from [`StartPlan::meta`], then logs
//!    [`StartPlan::execute`] through its actor and sends it.
//! 4. [`StartPlan::answer`] turns the gateway's answer into the HTTP one:
//!    started (201 with the metadata), or refused (the status of its code).
//!    On any failure after step 3 the host removes the session again: a
//!    start is all or nothing.

use duraclaw_core::backend::actor::Person;
use duraclaw_core::backend::web::{NewSession, worktree_busy};
use duraclaw_core::protocol::{CommandResult, Execute, WireError, Worktree};
use duraclaw_core::store::SessionMeta;

use crate::http::HttpError;
use crate::ids::execute_command_id;

/// Step 1: the request of `owner`, read from its JSON body and checked
/// before anything is created.
pub fn read_request(body: serde_json::Value, owner: &str) -> Result<NewSession, HttpError> {
    let request = NewSession::from_value(body)?;
    request.check(owner)?;
    Ok(request)
}

/// Step 2: refuses a worktree the gateway does not list, or one a session
/// runs in.
pub fn check_worktree(request: &NewSession, worktrees: &[Worktree]) -> Result<(), HttpError> {
    let Some(wt) = worktrees.iter().find(|w| w.path == request.worktree) else {
        return Err(HttpError::new(
            400,
            format!("{} is not a worktree the gateway offers", request.worktree),
        ));
    };
    if request.new_worktree.is_some() {
        // A new worktree is made from it: another session there is no bar.
        return if wt.new_worktree {
            Ok(())
        } else {
            Err(HttpError::new(
                400,
                "the gateway makes no new worktrees; pick an existing worktree",
            ))
        };
    }
    match &wt.busy_session {
        Some(holder) => Err(HttpError::new(409, worktree_busy(&wt.path, holder))),
        None => Ok(()),
    }
}

/// Steps 3 and 4: one session being started.
#[derive(Debug, Clone)]
pub struct StartPlan {
    session_id: String,
    owner: String,
    request: NewSession,
    now_ms: i64,
    fork: Option<(
        duraclaw_core::store::ForkedFrom,
        duraclaw_core::protocol::ForkFrom,
    )>,
    /// The repository a new worktree was made from, for a fork that runs
    /// in its parent's new worktree.
    origin: Option<String>,
}

impl StartPlan {
    /// The start of `request` as session `session_id` of `owner`, created
    /// at `now_ms` (the host reads its clock; the plan only takes the time).
    pub fn new(request: NewSession, owner: &str, session_id: String, now_ms: i64) -> Self {
        StartPlan {
            session_id,
            owner: owner.to_owned(),
            request,
            now_ms,
            fork: None,
            origin: None,
        }
    }

    /// Runs in a new worktree made from `origin` (a fork in its parent's
    /// new worktree): its worktree-scope rules are `origin`'s.
    #[must_use]
    pub fn with_origin(mut self, origin: Option<String>) -> Self {
        self.origin = origin;
        self
    }

    /// The worktree its worktree-scope rules name
    /// ([`SessionMeta::rules_worktree`]).
    pub fn rules_worktree(&self) -> &str {
        self.origin.as_deref().unwrap_or(&self.request.worktree)
    }

    /// A fork of `parent` from its `user.message` at `seq`: the metadata
    /// records the lineage, the `execute` carries where to resume.
    #[must_use]
    pub fn with_fork(
        mut self,
        parent: &str,
        seq: u64,
        from: duraclaw_core::protocol::ForkFrom,
    ) -> Self {
        let lineage = duraclaw_core::store::ForkedFrom {
            session_id: parent.to_owned(),
            seq,
        };
        self.fork = Some((lineage, from));
        self
    }

    /// The new session's id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Its owner.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The metadata to create the session with.
    pub fn meta(&self) -> SessionMeta {
        let mut meta = self
            .request
            .meta(&self.session_id, &self.owner, self.now_ms);
        meta.forked_from = self.fork.as_ref().map(|(lineage, _)| lineage.clone());
        meta.origin.clone_from(&self.origin);
        meta
    }

    /// What the actor logs and sends: the command's id, the `execute` and
    /// who asked (the actor stamps it with its clock).
    pub fn execute(&self) -> (String, Execute, Person) {
        let who = Person {
            user: self.owner.clone(),
            client: Some("web".into()),
        };
        let mut execute = self.request.clone().into_execute();
        execute.fork = self.fork.as_ref().map(|(_, from)| Box::new(from.clone()));
        (execute_command_id(&self.session_id), execute, who)
    }

    /// The answer to the create request, from the gateway's answer to the
    /// `execute` (`None`: none came in time; the outbox resends it, so the
    /// session counts as started). `Err` is a refusal: the host removes the
    /// session and answers it.
    pub fn answer(&self, result: Option<&CommandResult>) -> Result<(), HttpError> {
        match result {
            Some(result) if !result.ok => {
                let fallback = WireError::new("gateway", "refused");
                let err = result.error.as_ref().unwrap_or(&fallback);
                tracing::info!(session = %self.session_id, code = %err.code,
                    "the gateway refused to start the session");
                Err(HttpError::from(err))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn worktree(path: &str, busy: Option<&str>) -> Worktree {
        Worktree {
            path: path.into(),
            repo: "/src".into(),
            branch: None,
            head: None,
            dirty: false,
            busy_session: busy.map(str::to_owned),
            new_worktree: false,
        }
    }

    #[test]
    fn a_bad_request_is_refused_before_anything_exists() {
        let refused = read_request(json!({"worktree": "/wt"}), "alice").unwrap_err();
        assert_eq!(refused.status, 400);
        let blank = read_request(json!({"worktree": "/wt", "prompt": " "}), "alice").unwrap_err();
        assert_eq!(
            (blank.status, blank.message.as_str()),
            (400, "a session needs a first prompt")
        );
        let huge = "x".repeat(2 * duraclaw_core::protocol::MAX_FRAME_BYTES);
        let too_large = read_request(json!({"worktree": "/wt", "prompt": huge}), "a").unwrap_err();
        assert_eq!(too_large.status, 413);
    }

    #[test]
    fn the_worktree_must_be_offered_and_free() {
        let request = read_request(json!({"worktree": "/wt/a", "prompt": "go"}), "alice").unwrap();
        let free = [worktree("/wt/a", None)];
        assert_eq!(check_worktree(&request, &free), Ok(()));
        let missing = check_worktree(&request, &[worktree("/wt/b", None)]).unwrap_err();
        assert_eq!(missing.status, 400);
        assert!(missing.message.contains("/wt/a is not a worktree"));
        let busy = check_worktree(&request, &[worktree("/wt/a", Some("01S"))]).unwrap_err();
        // A new worktree from a busy one is fine, when the gateway offers it.
        let fresh = read_request(
            json!({"worktree": "/wt/a", "prompt": "go", "new_worktree": {"base": "main"}}),
            "alice",
        )
        .unwrap();
        let mut offered = worktree("/wt/a", Some("01S"));
        assert_eq!(
            check_worktree(&fresh, std::slice::from_ref(&offered))
                .unwrap_err()
                .status,
            400
        );
        offered.new_worktree = true;
        assert_eq!(check_worktree(&fresh, &[offered]), Ok(()));
        assert_eq!(busy.status, 409);
        assert!(
            busy.message
                .starts_with("worktree busy: /wt/a is in use by session 01S")
        );
    }

    #[test]
    fn the_plan_creates_executes_and_answers() {
        let request = read_request(
            json!({"worktree": "/wt/a", "prompt": "fix it", "model": "opus"}),
            "alice",
        )
        .unwrap();
        let plan = StartPlan::new(request, "alice", "01S".into(), 42);
        let meta = plan.meta();
        assert_eq!(
            (
                meta.session_id.as_str(),
                meta.owner.as_str(),
                meta.title.as_str()
            ),
            ("01S", "alice", "fix it")
        );
        assert_eq!(meta.created_at_ms, 42);
        let (id, execute, who) = plan.execute();
        assert_eq!(id, "execute-01S");
        assert_eq!(
            (execute.prompt.as_str(), execute.model.as_deref()),
            ("fix it", Some("opus"))
        );
        assert_eq!(
            (who.user.as_str(), who.client.as_deref()),
            ("alice", Some("web"))
        );

        let ok = CommandResult {
            id: id.clone(),
            ok: true,
            error: None,
        };
        assert_eq!(plan.answer(Some(&ok)), Ok(()));
        assert_eq!(plan.answer(None), Ok(()));
        let refused = CommandResult {
            id: id.clone(),
            ok: false,
            error: Some(WireError::new(
                "executor_unsupported",
                "claude 1.0 is too old",
            )),
        };
        let answer = plan.answer(Some(&refused)).unwrap_err();
        assert_eq!(
            (answer.status, answer.message.as_str()),
            (503, "claude 1.0 is too old")
        );
        let bare = CommandResult {
            id,
            ok: false,
            error: None,
        };
        assert_eq!(plan.answer(Some(&bare)).unwrap_err().status, 502);
    }

    #[test]
    fn a_fork_in_a_new_worktree_keeps_its_parents_origin() {
        let request = read_request(
            json!({"worktree": "/data/worktrees/app-1", "prompt": "go"}),
            "alice",
        )
        .unwrap();
        let plan = StartPlan::new(request.clone(), "alice", "S1".into(), 1);
        assert_eq!(plan.rules_worktree(), "/data/worktrees/app-1");
        assert_eq!(plan.meta().origin, None);
        let plan = plan.with_origin(Some("/w/app".into()));
        assert_eq!(plan.rules_worktree(), "/w/app");
        assert_eq!(plan.meta().origin.as_deref(), Some("/w/app"));
        assert_eq!(plan.meta().rules_worktree(), "/w/app");
    }
}
