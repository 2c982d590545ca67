//! Approval rules on the Cloudflare host: the `/api/rules` routes over D1
//! (table `approval_rules`, the same migration as the local host's), and
//! telling each live session object of the user the rules now in force for
//! it ([`RULES_PATH`]); the object keeps them and sends them to the gateway
//! now and each time its link opens. Checks, presets and the rules in force
//! are `duraclaw_host::rules`.

use duraclaw_core::protocol::RuleEntry;
use duraclaw_core::state::SessionState;
use duraclaw_host::http::HttpError;
use duraclaw_host::rules::{self as host_rules, MAX_RULES_PER_USER, StoredRule};
use worker::js_sys::Math;
use worker::{Env, Headers, Method, Request, RequestInit, Response};

use crate::auth::{AuthUser, CfAuth, http_error, json_error};
use crate::clock::now_ms;
use crate::session::{SESSION_HEADER, USER_HEADER};

/// The session object route that takes the rules in force for it
/// (`{"rules": [RuleEntry]}`).
pub const RULES_PATH: &str = "/rules";

/// A fresh rule id ([`host_rules::rule_id`]); not a secret.
pub fn new_rule_id() -> String {
    let mut noise: u128 = 0;
    for _ in 0..4 {
        noise = (noise << 20) | ((Math::random() * f64::from(1u32 << 20)) as u128);
    }
    host_rules::rule_id(now_ms(), noise)
}

/// Adds `rules` for `user` (bounded per user), audits each, and tells the
/// user's live sessions (but `except`, which takes its own) their rules.
pub async fn add(
    env: &Env,
    auth: &CfAuth,
    user: &str,
    rules: Vec<StoredRule>,
    except: Option<&str>,
) -> worker::Result<Result<Vec<StoredRule>, HttpError>> {
    let held = auth.rules(user).await?.len();
    if held + rules.len() > MAX_RULES_PER_USER {
        return Ok(Err(HttpError::new(
            400,
            format!("too many rules: a user holds at most {MAX_RULES_PER_USER}; remove some first"),
        )));
    }
    auth.add_rules(user, &rules).await?;
    for r in &rules {
        host_rules::audit(user, "added", r);
    }
    let now = auth.rules(user).await?;
    push(env, auth, user, &now, except).await;
    Ok(Ok(rules
        .iter()
        .filter_map(|r| {
            now.iter()
                .find(|n| {
                    (n.scope, &n.worktree, &n.session_id, &n.rule)
                        == (r.scope, &r.worktree, &r.session_id, &r.rule)
                })
                .cloned()
        })
        .collect()))
}

/// Tells each live session object of `user` (but `except`) the rules in
/// force for it, from `all` of the user's rules. A failure is logged: the
/// object still has its older rules, and the next change sends them again.
pub async fn push(env: &Env, auth: &CfAuth, user: &str, all: &[StoredRule], except: Option<&str>) {
    let sessions = match auth.list_sessions(user).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(user, error = %e, "cannot list the sessions to send rules to");
            return;
        }
    };
    let calls = sessions
        .iter()
        .filter(|m| m.state != SessionState::Terminated && Some(m.session_id.as_str()) != except)
        .take(crate::router::MAX_LOGIN_ENDED_NOTICES)
        .map(|meta| async move {
            let rules = host_rules::effective_for(all, meta);
            let result = async {
                let headers = Headers::new();
                headers.set("Content-Type", "application/json")?;
                headers.set(USER_HEADER, &meta.owner)?;
                headers.set(SESSION_HEADER, &meta.session_id)?;
                let mut init = RequestInit::new();
                init.with_method(Method::Post)
                    .with_headers(headers)
                    .with_body(Some(
                        serde_json::to_string(&serde_json::json!({ "rules": rules }))?.into(),
                    ));
                let inner = Request::new_with_init(&format!("https://session{RULES_PATH}"), &init)?;
                crate::router::stub(env, &meta.session_id)?
                    .fetch_with_request(inner)
                    .await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(session = %meta.session_id, error = %e, "cannot send a session its rules");
            }
        });
    futures::future::join_all(calls).await;
}

/// The rules in force for a new session `session_id` of `user` in
/// `worktree`.
pub async fn for_new_session(
    auth: &CfAuth,
    user: &str,
    worktree: &str,
    session_id: &str,
) -> worker::Result<Vec<RuleEntry>> {
    let all = auth.rules(user).await?;
    Ok(host_rules::effective(&all, worktree, session_id))
}

/// `GET /api/rules`, `POST /api/rules`, `GET /api/rules/presets`,
/// `POST /api/rules/preset`, `DELETE /api/rules/{id}`.
pub async fn route(
    req: &mut Request,
    env: &Env,
    auth: &CfAuth,
    user: &AuthUser,
    rest: &[&str],
) -> worker::Result<Response> {
    match (req.method(), rest) {
        (Method::Get, []) => Response::from_json(&auth.rules(&user.name).await?),
        (Method::Get, ["presets"]) => Response::from_json(&host_rules::presets_json()),
        (Method::Post, []) => {
            let body: serde_json::Value = match crate::router::json_body(req).await? {
                Ok(b) => b,
                Err(refused) => return Ok(refused),
            };
            let rule = match host_rules::read_request(&body, new_rule_id(), now_ms()) {
                Ok(r) => r,
                Err(e) => return http_error(&e),
            };
            if let Some(session) = &rule.session_id {
                match auth.session_owner(session).await? {
                    Some(owner) if owner == user.name => {}
                    _ => return json_error(404, "no such session"),
                }
            }
            match add(env, auth, &user.name, vec![rule], None).await? {
                Ok(added) => Ok(Response::from_json(&added.into_iter().next())?.with_status(201)),
                Err(e) => http_error(&e),
            }
        }
        (Method::Post, ["preset"]) => {
            let body: serde_json::Value = match crate::router::json_body(req).await? {
                Ok(b) => b,
                Err(refused) => return Ok(refused),
            };
            let rules = match host_rules::preset_rules(&body, now_ms(), new_rule_id) {
                Ok(r) => r,
                Err(e) => return http_error(&e),
            };
            match add(env, auth, &user.name, rules, None).await? {
                Ok(added) => Ok(Response::from_json(&added)?.with_status(201)),
                Err(e) => http_error(&e),
            }
        }
        (Method::Delete, [id]) => {
            let all = auth.rules(&user.name).await?;
            let Some(rule) = all.iter().find(|r| r.id == *id).cloned() else {
                return json_error(404, "no such rule");
            };
            if !auth.delete_rule(&user.name, id).await? {
                return json_error(404, "no such rule");
            }
            host_rules::audit(&user.name, "removed", &rule);
            let now = auth.rules(&user.name).await?;
            push(env, auth, &user.name, &now, None).await;
            Ok(Response::empty()?.with_status(204))
        }
        _ => json_error(405, "method not allowed"),
    }
}
