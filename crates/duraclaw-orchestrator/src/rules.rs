//! Approval rules on the local host: where they are kept ([`RuleStore`]:
//! the bundled login's database, or memory for an app's own login), the
//! `/api/rules` routes, and sending each session the rules in force for it
//! (with its `execute`, on every change, and each time the gateway link
//! opens). Checks, presets and the rules in force are `duraclaw_host::rules`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use duraclaw_core::Result;
use duraclaw_core::protocol::{RuleEntry, ToGateway};
use duraclaw_core::state::SessionState;
use duraclaw_host::rules::{self as host_rules, MAX_RULES_PER_USER, StoredRule};

use crate::Orchestrator;
use crate::api::AppState;
use crate::authn::{AuthUser, BoxFuture};
use crate::error::ApiError;

/// Where a host keeps its users' approval rules.
pub trait RuleStore: Send + Sync + 'static {
    /// `user`'s rules, oldest first.
    fn list<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<StoredRule>>>;
    /// Adds `rules` for `user` (one already there for the same scope,
    /// place and text takes the new action).
    fn add<'a>(&'a self, user: &'a str, rules: Vec<StoredRule>) -> BoxFuture<'a, Result<()>>;
    /// Deletes `user`'s rule `id`; whether there was one.
    fn delete<'a>(&'a self, user: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool>>;
}

/// Rules in memory, lost with the process: the default when the app
/// brings its own login and no store.
#[derive(Debug, Default)]
pub struct MemoryRules(Mutex<HashMap<String, Vec<StoredRule>>>);

impl RuleStore for MemoryRules {
    fn list<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<StoredRule>>> {
        let rules = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(rules) })
    }

    fn add<'a>(&'a self, user: &'a str, rules: Vec<StoredRule>) -> BoxFuture<'a, Result<()>> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mine = all.entry(user.to_owned()).or_default();
        for rule in rules {
            match mine.iter_mut().find(|r| {
                (r.scope, &r.worktree, &r.session_id, &r.rule)
                    == (rule.scope, &rule.worktree, &rule.session_id, &rule.rule)
            }) {
                Some(old) => {
                    old.action = rule.action;
                    old.created_at_ms = rule.created_at_ms;
                }
                None => mine.push(rule),
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn delete<'a>(&'a self, user: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let found = all.get_mut(user).is_some_and(|mine| {
            let before = mine.len();
            mine.retain(|r| r.id != id);
            mine.len() != before
        });
        Box::pin(async move { Ok(found) })
    }
}

impl Orchestrator {
    /// Keeps approval rules in `store` from now on (the bundled login's
    /// database: `Arc<Auth>`).
    pub fn set_rule_store(&self, store: Arc<dyn RuleStore>) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = store;
    }

    /// The store approval rules are kept in.
    pub fn rule_store(&self) -> Arc<dyn RuleStore> {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The rules in force for `owner`'s session `session_id` whose rules'
    /// worktree is `worktree` ([`SessionMeta::rules_worktree`](duraclaw_core::store::SessionMeta::rules_worktree)).
    pub async fn rules_for(
        &self,
        owner: &str,
        worktree: &str,
        session_id: &str,
    ) -> Result<Vec<RuleEntry>> {
        let all = self.rule_store().list(owner).await?;
        Ok(host_rules::effective(&all, worktree, session_id))
    }

    /// The `rules` frame for session `session_id` of `owner` in `worktree`.
    pub async fn rules_frame(
        &self,
        owner: &str,
        worktree: &str,
        session_id: &str,
    ) -> Result<ToGateway> {
        Ok(ToGateway::Rules {
            session_id: session_id.to_owned(),
            rules: self.rules_for(owner, worktree, session_id).await?,
        })
    }

    /// Sends every live session of `user` the rules now in force for it (a
    /// link that is down gets them when it opens).
    pub async fn push_rules(&self, user: &str) -> Result<()> {
        let all = self.rule_store().list(user).await?;
        for meta in self.directory().list(user).await? {
            if meta.state == SessionState::Terminated {
                continue;
            }
            let frame = ToGateway::Rules {
                session_id: meta.session_id.clone(),
                rules: host_rules::effective_for(&all, &meta),
            };
            let _ = self.gateway().send(&frame);
        }
        Ok(())
    }

    /// Adds `rules` for `user`, audits each, and sends `user`'s sessions
    /// their new rules.
    pub async fn add_rules(&self, user: &str, rules: Vec<StoredRule>) -> Result<Vec<StoredRule>> {
        let store = self.rule_store();
        let held = store.list(user).await?.len();
        if held + rules.len() > MAX_RULES_PER_USER {
            return Err(duraclaw_core::Error::Invalid(format!(
                "too many rules: a user holds at most {MAX_RULES_PER_USER}; remove some first"
            )));
        }
        store.add(user, rules.clone()).await?;
        for r in &rules {
            host_rules::audit(user, "added", r);
        }
        self.push_rules(user).await?;
        // As stored (a rule that was there keeps its id).
        let now = store.list(user).await?;
        Ok(rules
            .iter()
            .filter_map(|r| {
                now.iter()
                    .find(|n| {
                        (n.scope, &n.worktree, &n.session_id, &n.rule)
                            == (r.scope, &r.worktree, &r.session_id, &r.rule)
                    })
                    .cloned()
            })
            .collect())
    }

    /// A fresh rule id.
    pub fn new_rule_id(&self) -> String {
        // The session id's form (time, then noise), marked as a rule's.
        format!("r{}", &self.new_session_id()[6..])
    }
}

/// The `/api/rules` routes.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/api/rules", get(list).post(add))
        .route("/api/rules/presets", get(presets))
        .route("/api/rules/preset", post(add_preset))
        .route("/api/rules/{id}", delete(remove))
}

async fn list(State(app): State<AppState>, user: AuthUser) -> Result<Response, ApiError> {
    let rules = app.orchestrator.rule_store().list(&user.name).await?;
    Ok(Json(rules).into_response())
}

async fn presets(_user: AuthUser) -> Json<serde_json::Value> {
    Json(host_rules::presets_json())
}

async fn add(
    State(app): State<AppState>,
    user: AuthUser,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let orch = &app.orchestrator;
    let rule = host_rules::read_request(&body, orch.new_rule_id(), orch.clock().now_ms())?;
    if let Some(session) = &rule.session_id {
        // Only the user's own sessions (another's is as if it did not exist).
        crate::api::owned_actor(&app, &user, session).await?;
    }
    let added = orch.add_rules(&user.name, vec![rule]).await?;
    Ok((StatusCode::CREATED, Json(added.into_iter().next())).into_response())
}

async fn add_preset(
    State(app): State<AppState>,
    user: AuthUser,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let orch = &app.orchestrator;
    let rules = host_rules::preset_rules(&body, orch.clock().now_ms(), || orch.new_rule_id())?;
    let added = orch.add_rules(&user.name, rules).await?;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

async fn remove(
    State(app): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let orch = &app.orchestrator;
    let store = orch.rule_store();
    let Some(rule) = store
        .list(&user.name)
        .await?
        .into_iter()
        .find(|r| r.id == id)
    else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such rule"));
    };
    if !store.delete(&user.name, &id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such rule"));
    }
    host_rules::audit(&user.name, "removed", &rule);
    orch.push_rules(&user.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
