//! Approval rules a user owns, the same on both hosts: reading and checking
//! a request, the rows stored (auth-schema table `approval_rules`, the same
//! SQL on both hosts), the rules in force for one session, and presets.
//! Matching and precedence are `duraclaw_approval::rules` (the gateway
//! evaluates); this module only stores and sends.

use duraclaw_approval::rules::{PRESETS, Rule, preset};
use duraclaw_core::protocol::{RuleAction, RuleEntry, RuleScope};
use duraclaw_core::store::SessionMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::HttpError;

/// Rules one user may hold.
pub const MAX_RULES_PER_USER: usize = 500;

/// A stored rule, as `GET /api/rules` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRule {
    /// Its id.
    pub id: String,
    /// Where it applies.
    pub scope: RuleScope,
    /// The worktree, for the worktree scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// The session, for the session scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The rule's text, e.g. `Bash(git status*)`.
    pub rule: String,
    /// What it does.
    pub action: RuleAction,
    /// When it was added (or last changed).
    pub created_at_ms: i64,
}

impl StoredRule {
    /// What the gateway is sent for it.
    pub fn entry(&self) -> RuleEntry {
        RuleEntry {
            id: Some(self.id.clone()),
            scope: self.scope,
            rule: self.rule.clone(),
            action: self.action,
        }
    }

    /// Whether it is in force for session `session_id` in `worktree`.
    pub fn applies_to(&self, worktree: &str, session_id: &str) -> bool {
        match self.scope {
            RuleScope::User => true,
            RuleScope::Worktree => self.worktree.as_deref() == Some(worktree),
            RuleScope::Session => self.session_id.as_deref() == Some(session_id),
        }
    }

    /// The row's columns in [`INSERT`]'s order (after the user): id, scope,
    /// worktree (`''` when none), session id (`''` when none), rule, action,
    /// created.
    pub fn columns(
        &self,
    ) -> (
        String,
        &'static str,
        String,
        String,
        String,
        &'static str,
        i64,
    ) {
        (
            self.id.clone(),
            self.scope.name(),
            self.worktree.clone().unwrap_or_default(),
            self.session_id.clone().unwrap_or_default(),
            self.rule.clone(),
            self.action.name(),
            self.created_at_ms,
        )
    }

    /// A row read back with [`SELECT_BY_USER`]'s columns; `None` for one
    /// this build cannot read (skipped).
    pub fn from_row(
        id: String,
        scope: &str,
        worktree: String,
        session_id: String,
        rule: String,
        action: &str,
        created_at_ms: i64,
    ) -> Option<StoredRule> {
        let scope = parse_scope(scope).ok()?;
        let action = parse_action(action).ok()?;
        Some(StoredRule {
            id,
            scope,
            worktree: (!worktree.is_empty()).then_some(worktree),
            session_id: (!session_id.is_empty()).then_some(session_id),
            rule,
            action,
            created_at_ms,
        })
    }
}

/// Adds (or, for the same user, scope, place and rule, updates the action
/// of) a rule: `?1` user, then [`StoredRule::columns`].
pub const INSERT: &str = "INSERT INTO approval_rules \
     (user_name, id, scope, worktree, session_id, rule, action, created_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (user_name, scope, worktree, session_id, rule) \
     DO UPDATE SET action = excluded.action, created_at_ms = excluded.created_at_ms";

/// A user's rules (`?1`), oldest first: id, scope, worktree, session id,
/// rule, action, created.
pub const SELECT_BY_USER: &str = "SELECT id, scope, worktree, session_id, rule, action, \
     created_at_ms FROM approval_rules WHERE user_name = ?1 ORDER BY created_at_ms, rowid";

/// The rule `?1` of user `?2` (with [`SELECT_BY_USER`]'s columns).
pub const SELECT_ONE: &str = "SELECT id, scope, worktree, session_id, rule, action, \
     created_at_ms FROM approval_rules WHERE id = ?1 AND user_name = ?2";

/// How many rules user `?1` holds.
pub const COUNT_BY_USER: &str = "SELECT COUNT(*) FROM approval_rules WHERE user_name = ?1";

/// Deletes rule `?1` of user `?2` (another user's is not touched).
pub const DELETE: &str = "DELETE FROM approval_rules WHERE id = ?1 AND user_name = ?2";

fn parse_scope(s: &str) -> Result<RuleScope, HttpError> {
    match s {
        "user" => Ok(RuleScope::User),
        "worktree" => Ok(RuleScope::Worktree),
        "session" => Ok(RuleScope::Session),
        other => Err(HttpError::new(
            400,
            format!("unknown scope {other:?}: use \"user\", \"worktree\" or \"session\""),
        )),
    }
}

fn parse_action(s: &str) -> Result<RuleAction, HttpError> {
    match s {
        "allow" => Ok(RuleAction::Allow),
        "ask" => Ok(RuleAction::Ask),
        "deny" => Ok(RuleAction::Deny),
        other => Err(HttpError::new(
            400,
            format!("unknown action {other:?}: use \"allow\", \"ask\" or \"deny\""),
        )),
    }
}

fn field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, HttpError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(HttpError::new(400, format!("`{name}` must be a string"))),
    }
}

/// Checks a rule's text: `Tool` or `Tool(pattern)` (400 with the reason).
pub fn check_rule_text(text: &str) -> Result<String, HttpError> {
    Rule::parse(text.trim())
        .map(|r| r.to_string())
        .map_err(|e| HttpError::new(400, e.to_string()))
}

/// Reads `POST /api/rules`'s body into the rule to store, as `id`, added
/// at `now_ms`: `{"scope","worktree"?,"session_id"?,"rule","action"}`.
/// The session, when named, must be the user's: the host checks that.
pub fn read_request(body: &Value, id: String, now_ms: i64) -> Result<StoredRule, HttpError> {
    if !body.is_object() {
        return Err(HttpError::new(400, "the body must be a JSON object"));
    }
    let scope = parse_scope(
        field(body, "scope")?.ok_or_else(|| HttpError::new(400, "a rule needs a `scope`"))?,
    )?;
    let action = parse_action(
        field(body, "action")?.ok_or_else(|| HttpError::new(400, "a rule needs an `action`"))?,
    )?;
    let rule = check_rule_text(
        field(body, "rule")?.ok_or_else(|| HttpError::new(400, "a rule needs its `rule` text"))?,
    )?;
    let worktree = field(body, "worktree")?.map(str::to_owned);
    let session_id = field(body, "session_id")?.map(str::to_owned);
    let (worktree, session_id) = match scope {
        RuleScope::User => {
            if worktree.is_some() || session_id.is_some() {
                return Err(HttpError::new(
                    400,
                    "a user-scope rule takes no `worktree` or `session_id`",
                ));
            }
            (None, None)
        }
        RuleScope::Worktree => {
            let Some(w) = worktree else {
                return Err(HttpError::new(
                    400,
                    "a worktree-scope rule needs `worktree`",
                ));
            };
            check_worktree(&w)?;
            if session_id.is_some() {
                return Err(HttpError::new(
                    400,
                    "a worktree-scope rule takes no `session_id`",
                ));
            }
            (Some(w), None)
        }
        RuleScope::Session => {
            let Some(s) = session_id else {
                return Err(HttpError::new(
                    400,
                    "a session-scope rule needs `session_id`",
                ));
            };
            if !crate::ids::is_session_id(&s) || worktree.is_some() {
                return Err(HttpError::new(
                    400,
                    "a session-scope rule needs a valid `session_id` and no `worktree`",
                ));
            }
            (None, Some(s))
        }
    };
    Ok(StoredRule {
        id,
        scope,
        worktree,
        session_id,
        rule,
        action,
        created_at_ms: now_ms,
    })
}

/// A worktree a rule may name: an absolute path of bounded length.
pub fn check_worktree(path: &str) -> Result<(), HttpError> {
    if !path.starts_with('/') || path.len() > 4096 || path.chars().any(char::is_control) {
        return Err(HttpError::new(
            400,
            "`worktree` must be the worktree's absolute path, as the session list shows it",
        ));
    }
    Ok(())
}

/// The rule "always allow for this worktree" adds from the approval prompt:
/// `rule` (as shown) allowed in `worktree`, as `id`.
pub fn worktree_allow(
    rule: &str,
    worktree: &str,
    id: String,
    now_ms: i64,
) -> Result<StoredRule, HttpError> {
    check_worktree(worktree)?;
    Ok(StoredRule {
        id,
        scope: RuleScope::Worktree,
        worktree: Some(worktree.to_owned()),
        session_id: None,
        rule: check_rule_text(rule)?,
        action: RuleAction::Allow,
        created_at_ms: now_ms,
    })
}

/// The worktree rule an `answer` carries ("always allow for this
/// worktree"), for session `meta`: it names the session's
/// [`rules_worktree`](SessionMeta::rules_worktree) (the repository a new
/// worktree was made from, so the next new worktree from there is not
/// asked); `None` when it carries none; refused (400) with any decision
/// but allow, or a rule that does not parse.
pub fn answer_rule(
    answer: &duraclaw_core::protocol::Answer,
    meta: &SessionMeta,
    id: String,
    now_ms: i64,
) -> Result<Option<StoredRule>, HttpError> {
    let Some(rule) = &answer.allow_worktree_rule else {
        return Ok(None);
    };
    if !matches!(
        answer.decision,
        duraclaw_core::protocol::Decision::Allow { .. }
    ) {
        return Err(HttpError::new(
            400,
            "\"always allow for this worktree\" goes with an allow",
        ));
    }
    worktree_allow(rule, meta.rules_worktree(), id, now_ms).map(Some)
}

/// The user-scope rules preset `name` adds (`POST /api/rules/preset`
/// `{"preset"}`), with ids from `next_id`.
pub fn preset_rules(
    body: &Value,
    now_ms: i64,
    mut next_id: impl FnMut() -> String,
) -> Result<Vec<StoredRule>, HttpError> {
    let name = field(body, "preset")?.ok_or_else(|| HttpError::new(400, "name a `preset`"))?;
    let Some(p) = preset(name) else {
        let known: Vec<&str> = PRESETS.iter().map(|p| p.id).collect();
        return Err(HttpError::new(
            400,
            format!("unknown preset {name:?}: one of {}", known.join(", ")),
        ));
    };
    Ok(p.rules
        .iter()
        .map(|(rule, action)| StoredRule {
            id: next_id(),
            scope: RuleScope::User,
            worktree: None,
            session_id: None,
            rule: (*rule).to_owned(),
            action: *action,
            created_at_ms: now_ms,
        })
        .collect())
}

/// The presets, for the UI: `[{"id","title","rules":[{"rule","action"}]}]`.
pub fn presets_json() -> Value {
    Value::Array(
        PRESETS
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id,
                    "title": p.title,
                    "rules": p.rules.iter().map(|(r, a)| serde_json::json!({"rule": r, "action": a.name()})).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The rules in force for session `meta`, from all of its owner's rules:
/// what the gateway is sent. Worktree-scope rules are those of its
/// [`rules_worktree`](SessionMeta::rules_worktree).
pub fn effective_for(rules: &[StoredRule], meta: &SessionMeta) -> Vec<RuleEntry> {
    effective(rules, meta.rules_worktree(), &meta.session_id)
}

/// The rules in force for session `session_id` whose rules' worktree is
/// `worktree` (a session not created yet: the worktree it asks for), from
/// all of its owner's rules.
pub fn effective(rules: &[StoredRule], worktree: &str, session_id: &str) -> Vec<RuleEntry> {
    rules
        .iter()
        .filter(|r| r.applies_to(worktree, session_id))
        .map(StoredRule::entry)
        .collect()
}

/// A rule id: `r` and 20 characters of Crockford base32 (time, then
/// `noise` the host brings).
pub fn rule_id(now_ms: i64, noise: u128) -> String {
    format!("r{}", &crate::ids::session_id(now_ms, noise)[6..])
}

/// The audit line of a change: who changed which rule how.
pub fn audit(user: &str, what: &str, rule: &StoredRule) {
    tracing::info!(
        target: "duraclaw::audit",
        user = %user,
        change = what,
        rule_id = %rule.id,
        scope = rule.scope.name(),
        worktree = rule.worktree.as_deref().unwrap_or(""),
        session = rule.session_id.as_deref().unwrap_or(""),
        rule = %rule.rule,
        action = rule.action.name(),
        "approval rule changed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_checked_with_clear_messages() {
        let ok = read_request(
            &json!({"scope": "worktree", "worktree": "/w/a", "rule": " Bash(git status*) ", "action": "allow"}),
            "r1".into(),
            5,
        )
        .unwrap();
        assert_eq!(
            (ok.scope, ok.worktree.as_deref(), ok.rule.as_str()),
            (RuleScope::Worktree, Some("/w/a"), "Bash(git status*)")
        );
        let msg = |b: Value| read_request(&b, "r".into(), 0).unwrap_err();
        let e = msg(json!({"scope": "user", "rule": "Bash(git status", "action": "allow"}));
        assert_eq!(e.status, 400);
        assert!(e.message.contains("must end with `)`"), "{}", e.message);
        assert!(
            msg(json!({"scope": "everywhere", "rule": "Read", "action": "allow"}))
                .message
                .contains("unknown scope")
        );
        assert!(
            msg(json!({"scope": "user", "rule": "Read", "action": "maybe"}))
                .message
                .contains("unknown action")
        );
        assert!(
            msg(json!({"scope": "worktree", "rule": "Read", "action": "allow"}))
                .message
                .contains("needs `worktree`")
        );
        assert!(
            msg(json!({"scope": "worktree", "worktree": "rel", "rule": "Read", "action": "allow"}))
                .message
                .contains("absolute path")
        );
        assert!(
            msg(json!({"scope": "session", "rule": "Read", "action": "allow"}))
                .message
                .contains("needs `session_id`")
        );
        assert!(
            msg(json!({"scope": "user", "session_id": "s", "rule": "Read", "action": "allow"}))
                .message
                .contains("takes no")
        );
        assert!(
            msg(json!({"scope": "user", "rule": 5, "action": "allow"}))
                .message
                .contains("must be a string")
        );
        assert!(msg(json!([])).message.contains("JSON object"));
    }

    #[test]
    fn a_session_gets_the_rules_of_its_scopes_only() {
        let rule = |id: &str, scope, w: Option<&str>, s: Option<&str>| StoredRule {
            id: id.into(),
            scope,
            worktree: w.map(str::to_owned),
            session_id: s.map(str::to_owned),
            rule: "Read".into(),
            action: RuleAction::Allow,
            created_at_ms: 0,
        };
        let all = [
            rule("u", RuleScope::User, None, None),
            rule("w1", RuleScope::Worktree, Some("/w/a"), None),
            rule("w2", RuleScope::Worktree, Some("/w/b"), None),
            rule("s1", RuleScope::Session, None, Some("S1")),
            rule("s2", RuleScope::Session, None, Some("S2")),
        ];
        let ids: Vec<String> = effective(&all, "/w/a", "S1")
            .into_iter()
            .filter_map(|e| e.id)
            .collect();
        assert_eq!(ids, ["u", "w1", "s1"]);
        // A session in a new worktree made from /w/a has /w/a's rules, and
        // "always allow for this worktree" names /w/a.
        let mut meta = SessionMeta::new("S1", "alice", 0);
        meta.worktree = "/data/worktrees/a-1".into();
        meta.origin = Some("/w/a".into());
        let ids: Vec<String> = effective_for(&all, &meta)
            .into_iter()
            .filter_map(|e| e.id)
            .collect();
        assert_eq!(ids, ["u", "w1", "s1"]);
        let answer: duraclaw_core::protocol::Answer = serde_json::from_value(json!({
            "question_id": "q", "decision": "allow", "allow_worktree_rule": "Bash(make)"
        }))
        .unwrap();
        let added = answer_rule(&answer, &meta, "r".into(), 1).unwrap().unwrap();
        assert_eq!(added.worktree.as_deref(), Some("/w/a"));
        meta.origin = None;
        let ids: Vec<String> = effective_for(&all, &meta)
            .into_iter()
            .filter_map(|e| e.id)
            .collect();
        assert_eq!(ids, ["u", "s1"]);
        let row = all[1].columns();
        let back = StoredRule::from_row(row.0, row.1, row.2, row.3, row.4, row.5, row.6).unwrap();
        assert_eq!(back, all[1]);
    }

    #[test]
    fn presets_and_worktree_allows() {
        let mut n = 0;
        let rules = preset_rules(&json!({"preset": "reads_free"}), 1, || {
            n += 1;
            format!("r{n}")
        })
        .unwrap();
        let texts: Vec<&str> = rules.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(texts, ["Read", "Glob", "Grep", "LS"]);
        assert!(
            rules
                .iter()
                .all(|r| r.scope == RuleScope::User && r.action == RuleAction::Allow)
        );
        let e = preset_rules(&json!({"preset": "yolo"}), 1, || "x".into()).unwrap_err();
        assert!(e.message.contains("unknown preset") && e.message.contains("reads_free"));
        let w = worktree_allow("Bash(git status)", "/w/a", "r9".into(), 2).unwrap();
        assert_eq!(
            (w.scope, w.action),
            (RuleScope::Worktree, RuleAction::Allow)
        );
        assert_eq!(
            worktree_allow("Bash(", "/w/a", "r".into(), 2)
                .unwrap_err()
                .status,
            400
        );
        assert!(rule_id(1, 2).starts_with('r') && rule_id(1, 2).len() == 21);
    }
}
