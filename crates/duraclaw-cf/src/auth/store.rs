//! The auth's D1 queries. Every function answers `Err(reason)` on a D1
//! failure; the reason names what failed and never holds a token, a
//! password or a hash. Numbers cross into JavaScript as f64: every integer
//! bound here is clamped to ±2^53.

use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, D1Result};

use duraclaw_host::auth::limits::{self, FailureRecord, LoginLimits};
use duraclaw_host::auth::schema::{self, BOOTSTRAP, D1_MIGRATIONS as MIGRATIONS, Plan, SCHEMA_KEY};

/// The largest integer that survives a round trip through f64.
const MAX_SAFE: i64 = (1 << 53) - 1;

/// How many sessions a list answers at most.
pub(super) const MAX_LISTED: u32 = 1000;

pub(super) fn int(n: i64) -> JsValue {
    JsValue::from_f64(n.clamp(-MAX_SAFE, MAX_SAFE) as f64)
}

pub(super) fn text(s: &str) -> JsValue {
    JsValue::from_str(s)
}

/// An f64 read from D1 as an integer (0 for anything odd).
fn to_i64(x: f64) -> i64 {
    if x.is_finite() {
        x.clamp(-(MAX_SAFE as f64), MAX_SAFE as f64) as i64
    } else {
        0
    }
}

fn to_u32(x: f64) -> u32 {
    u32::try_from(to_i64(x).max(0)).unwrap_or(u32::MAX)
}

fn failed(what: &str) -> impl FnOnce(worker::Error) -> String + '_ {
    move |e| format!("D1: cannot {what}: {e}")
}

fn stmt(db: &D1Database, sql: &str, params: &[JsValue]) -> Result<D1PreparedStatement, String> {
    db.prepare(sql)
        .bind(params)
        .map_err(|e| format!("D1: cannot bind a statement: {e}"))
}

async fn run(
    db: &D1Database,
    what: &str,
    sql: &str,
    params: &[JsValue],
) -> Result<D1Result, String> {
    stmt(db, sql, params)?.run().await.map_err(failed(what))
}

async fn first<T: for<'a> Deserialize<'a>>(
    db: &D1Database,
    what: &str,
    sql: &str,
    params: &[JsValue],
) -> Result<Option<T>, String> {
    stmt(db, sql, params)?
        .first::<T>(None)
        .await
        .map_err(failed(what))
}

async fn all<T: for<'a> Deserialize<'a>>(
    db: &D1Database,
    what: &str,
    sql: &str,
    params: &[JsValue],
) -> Result<Vec<T>, String> {
    // A failed query rejects its promise, so `all` answers Err.
    let result = stmt(db, sql, params)?.all().await.map_err(failed(what))?;
    result.results::<T>().map_err(failed(what))
}

/// Rows a statement changed (0 when D1 does not say).
fn changes(result: &D1Result) -> usize {
    result
        .meta()
        .ok()
        .flatten()
        .and_then(|m| m.changes)
        .unwrap_or(0)
}

// ---- schema ---------------------------------------------------------------

#[derive(Deserialize)]
struct HeadRow {
    int_value: Option<f64>,
    text_value: Option<String>,
}

/// The schema row: `None` when there is none; `Err` when the table is
/// missing or D1 fails.
async fn read_head(db: &D1Database) -> Result<Option<(i64, String)>, String> {
    let row: Option<HeadRow> = first(
        db,
        "read the auth schema version",
        "SELECT int_value, text_value FROM duraclaw_meta WHERE key = ?1",
        &[text(SCHEMA_KEY)],
    )
    .await?;
    Ok(row.map(|r| {
        (
            r.int_value.map_or(-1, to_i64),
            r.text_value.unwrap_or_default(),
        )
    }))
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Migrated {
    /// The version found.
    pub from: i64,
    /// The versions applied.
    pub applied: Vec<u32>,
}

/// Brings the schema up to date; `Err` is the reason it cannot be.
pub(super) async fn migrate(db: &D1Database) -> Result<Migrated, String> {
    let head = match read_head(db).await {
        Ok(head) => head,
        Err(_) => {
            let boot = BOOTSTRAP
                .iter()
                .map(|sql| stmt(db, sql, &[]))
                .collect::<Result<Vec<_>, _>>()?;
            db.batch(boot)
                .await
                .map_err(failed("create the schema bookkeeping tables"))?;
            read_head(db).await?
        }
    };
    let from = head.as_ref().map_or(0, |(v, _)| *v);
    let steps = match schema::plan(MIGRATIONS, head)? {
        Plan::UpToDate => Vec::new(),
        Plan::Apply(steps) => steps,
    };
    let mut applied = Vec::new();
    for i in steps {
        let Some(m) = MIGRATIONS.get(i) else { break };
        let mut batch = schema::statements(m.sql)
            .iter()
            .map(|sql| stmt(db, sql, &[]))
            .collect::<Result<Vec<_>, _>>()?;
        batch.push(stmt(
            db,
            "INSERT INTO duraclaw_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
            &[
                int(i64::from(m.version)),
                text(m.name),
                text(&duraclaw_core::backend::migrate::checksum(m.sql)),
            ],
        )?);
        batch.push(stmt(
            db,
            "INSERT INTO duraclaw_meta (key, int_value, text_value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO UPDATE SET int_value = excluded.int_value, \
             text_value = excluded.text_value",
            &[
                text(SCHEMA_KEY),
                int(i64::from(m.version)),
                text(&schema::digest_upto(MIGRATIONS, i + 1)),
            ],
        )?);
        // A batch is one transaction: the step and its version bump land
        // together or not at all.
        if let Err(e) = db.batch(batch).await {
            // Another isolate may have applied it at the same moment.
            let now = read_head(db).await.ok().flatten().map_or(0, |(v, _)| v);
            if now >= i64::from(m.version) {
                continue;
            }
            return Err(format!(
                "auth schema migration {} ({}) failed: {e}",
                m.version, m.name
            ));
        }
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied an auth schema migration"
        );
        applied.push(m.version);
    }
    Ok(Migrated { from, applied })
}

// ---- users ----------------------------------------------------------------

#[derive(Deserialize)]
struct UserRow {
    name: String,
    password_hash: String,
}

/// The user's name as stored and their password hash.
pub(super) async fn password_hash(
    db: &D1Database,
    name: &str,
) -> Result<Option<(String, String)>, String> {
    let row: Option<UserRow> = first(
        db,
        "look up a user",
        "SELECT name, password_hash FROM users WHERE name = ?1",
        &[text(name)],
    )
    .await?;
    Ok(row.map(|r| (r.name, r.password_hash)))
}

/// Adds a user; `Ok(false)` when the name is taken in any case.
pub(super) async fn insert_user(
    db: &D1Database,
    name: &str,
    hash: &str,
    now_ms: i64,
) -> Result<bool, String> {
    let result = run(
        db,
        "add a user",
        "INSERT INTO users (name, password_hash, created_at_ms, updated_at_ms) \
         VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO NOTHING",
        &[text(name), text(hash), int(now_ms)],
    )
    .await?;
    Ok(changes(&result) > 0)
}

/// Replaces a user's password hash; with `revoke`, also ends all their
/// login sessions, in the same transaction. `Ok(false)`: no such user.
pub(super) async fn set_password_hash(
    db: &D1Database,
    name: &str,
    hash: &str,
    now_ms: i64,
    revoke: bool,
) -> Result<bool, String> {
    let mut batch = vec![stmt(
        db,
        "UPDATE users SET password_hash = ?2, updated_at_ms = ?3 WHERE name = ?1",
        &[text(name), text(hash), int(now_ms)],
    )?];
    if revoke {
        batch.push(stmt(
            db,
            "DELETE FROM login_sessions WHERE user_name = ?1",
            &[text(name)],
        )?);
    }
    let results = db.batch(batch).await.map_err(failed("change a password"))?;
    Ok(results.first().is_some_and(|r| changes(r) > 0))
}

/// Removes a user and their login sessions. `Ok(false)`: no such user.
pub(super) async fn delete_user(db: &D1Database, name: &str) -> Result<bool, String> {
    let batch = vec![
        stmt(db, "DELETE FROM users WHERE name = ?1", &[text(name)])?,
        stmt(
            db,
            "DELETE FROM login_sessions WHERE user_name = ?1",
            &[text(name)],
        )?,
    ];
    let results = db.batch(batch).await.map_err(failed("remove a user"))?;
    Ok(results.first().is_some_and(|r| changes(r) > 0))
}

#[derive(Deserialize, serde::Serialize)]
pub(super) struct UserListRow {
    pub name: String,
    pub created_at_ms: f64,
}

/// Every user's name and creation time, by name.
pub(super) async fn list_users(db: &D1Database) -> Result<Vec<UserListRow>, String> {
    all(
        db,
        "list users",
        "SELECT name, created_at_ms FROM users ORDER BY name",
        &[],
    )
    .await
}

// ---- login sessions -------------------------------------------------------

/// Records a new login session.
pub(super) async fn insert_session(
    db: &D1Database,
    digest: &str,
    user: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<(), String> {
    let batch = vec![
        // Expired ones go whenever someone logs in.
        stmt(
            db,
            "DELETE FROM login_sessions WHERE expires_at_ms <= ?1",
            &[int(now_ms)],
        )?,
        stmt(
            db,
            "INSERT INTO login_sessions \
             (token_digest, user_name, created_at_ms, last_used_at_ms, expires_at_ms) \
             VALUES (?1, ?2, ?3, ?3, ?4)",
            &[
                text(digest),
                text(user),
                int(now_ms),
                int(now_ms.saturating_add(ttl_ms)),
            ],
        )?,
    ];
    db.batch(batch)
        .await
        .map_err(failed("record a login session"))?;
    Ok(())
}

#[derive(Deserialize)]
struct SessionRow {
    user_name: String,
    last_used_at_ms: f64,
    expires_at_ms: f64,
}

/// The user of a live login session. Slides its expiry to `now + ttl`,
/// writing at most once per `touch_every_ms`; deletes it if it expired.
pub(super) async fn session_user(
    db: &D1Database,
    digest: &str,
    now_ms: i64,
    ttl_ms: i64,
    touch_every_ms: i64,
) -> Result<Option<String>, String> {
    let row: Option<SessionRow> = first(
        db,
        "look up a login session",
        "SELECT user_name, last_used_at_ms, expires_at_ms FROM login_sessions \
         WHERE token_digest = ?1",
        &[text(digest)],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    if to_i64(row.expires_at_ms) <= now_ms {
        delete_session(db, digest).await?;
        return Ok(None);
    }
    if now_ms.saturating_sub(to_i64(row.last_used_at_ms)) >= touch_every_ms {
        run(
            db,
            "extend a login session",
            "UPDATE login_sessions SET last_used_at_ms = ?2, expires_at_ms = ?3 \
             WHERE token_digest = ?1",
            &[
                text(digest),
                int(now_ms),
                int(now_ms.saturating_add(ttl_ms)),
            ],
        )
        .await?;
    }
    Ok(Some(row.user_name))
}

#[derive(Deserialize)]
struct AliveRow {
    #[allow(dead_code, reason = "only whether a row exists matters")]
    alive: f64,
}

/// Whether a login session is live (a read: its expiry is not slid).
pub(super) async fn session_alive(
    db: &D1Database,
    digest: &str,
    now_ms: i64,
) -> Result<bool, String> {
    let row: Option<AliveRow> = first(
        db,
        "look up a login session",
        "SELECT 1 AS alive FROM login_sessions WHERE token_digest = ?1 AND expires_at_ms > ?2",
        &[text(digest), int(now_ms)],
    )
    .await?;
    Ok(row.is_some())
}

/// Deletes a login session; whether there was one.
pub(super) async fn delete_session(db: &D1Database, digest: &str) -> Result<bool, String> {
    let result = run(
        db,
        "end a login session",
        "DELETE FROM login_sessions WHERE token_digest = ?1",
        &[text(digest)],
    )
    .await?;
    Ok(changes(&result) > 0)
}

// ---- login failures -------------------------------------------------------

#[derive(Deserialize)]
struct FailureRow {
    key: String,
    window_start_ms: f64,
    failures: f64,
    lockouts: f64,
    locked_until_ms: f64,
    last_failure_ms: f64,
    rev: f64,
}

impl FailureRow {
    fn record(&self) -> FailureRecord {
        FailureRecord {
            window_start_ms: to_i64(self.window_start_ms),
            failures: to_u32(self.failures),
            lockouts: to_u32(self.lockouts),
            locked_until_ms: to_i64(self.locked_until_ms),
            last_failure_ms: to_i64(self.last_failure_ms),
        }
    }
}

async fn failure_row(db: &D1Database, key: &str) -> Result<Option<FailureRow>, String> {
    first(
        db,
        "read login failures",
        "SELECT key, window_start_ms, failures, lockouts, locked_until_ms, last_failure_ms, rev \
         FROM login_failures WHERE key = ?1",
        &[text(key)],
    )
    .await
}

/// How long (ms) the longest lockout among `keys` still lasts, if any.
pub(super) async fn locked_for_ms(
    db: &D1Database,
    keys: &[String],
    now_ms: i64,
) -> Result<Option<i64>, String> {
    let mut longest = None;
    for key in keys {
        if let Some(row) = failure_row(db, key).await? {
            debug_assert_eq!(&row.key, key);
            longest = longest.max(row.record().locked_for_ms(now_ms));
        }
    }
    Ok(longest)
}

/// Counts a failed login against every key; the lockout (ms) it started,
/// if one did. Each row is written back only if unchanged since it was
/// read (its `rev`), else re-read and counted again, so concurrent
/// failures from many isolates all count.
pub(super) async fn record_failure(
    db: &D1Database,
    keys: &[String],
    now_ms: i64,
    limits: &LoginLimits,
) -> Result<Option<i64>, String> {
    let mut started = None;
    for key in keys {
        for _attempt in 0..8 {
            let row = failure_row(db, key).await?;
            let (next, lockout) =
                limits::after_failure(row.as_ref().map(FailureRow::record), now_ms, limits);
            let values = [
                text(key),
                int(next.window_start_ms),
                int(i64::from(next.failures)),
                int(i64::from(next.lockouts)),
                int(next.locked_until_ms),
                int(next.last_failure_ms),
            ];
            let result = match &row {
                None => {
                    run(
                        db,
                        "record a login failure",
                        "INSERT INTO login_failures (key, window_start_ms, failures, lockouts, \
                         locked_until_ms, last_failure_ms, rev) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1) \
                         ON CONFLICT (key) DO NOTHING",
                        &values,
                    )
                    .await?
                }
                Some(old) => {
                    let mut params = values.to_vec();
                    params.push(int(to_i64(old.rev)));
                    run(
                        db,
                        "record a login failure",
                        "UPDATE login_failures SET window_start_ms = ?2, failures = ?3, \
                         lockouts = ?4, locked_until_ms = ?5, last_failure_ms = ?6, \
                         rev = rev + 1 WHERE key = ?1 AND rev = ?7",
                        &params,
                    )
                    .await?
                }
            };
            if changes(&result) > 0 {
                started = started.max(lockout);
                break;
            }
        }
    }
    // Keys without failures for a day, and not locked, are forgotten.
    run(
        db,
        "forget old login failures",
        "DELETE FROM login_failures WHERE last_failure_ms <= ?1 AND locked_until_ms <= ?2",
        &[
            int(now_ms.saturating_sub(limits.forget_after_ms)),
            int(now_ms),
        ],
    )
    .await?;
    Ok(started)
}

/// Forgets the failures of `key` (after a successful login).
pub(super) async fn clear_failures(db: &D1Database, key: &str) -> Result<(), String> {
    run(
        db,
        "clear login failures",
        "DELETE FROM login_failures WHERE key = ?1",
        &[text(key)],
    )
    .await?;
    Ok(())
}

// ---- session index --------------------------------------------------------

/// Records or updates a session: its owner never changes, and an update
/// older than the stored one is ignored. `Ok(false)`: the session is
/// recorded with another owner, and nothing changed.
pub(super) async fn index_session(
    db: &D1Database,
    id: &str,
    owner: &str,
    updated_at_ms: i64,
    meta_json: &str,
) -> Result<bool, String> {
    let result = run(
        db,
        "index a session",
        "INSERT INTO session_index (session_id, owner, updated_at_ms, meta) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (session_id) DO UPDATE SET updated_at_ms = excluded.updated_at_ms, \
         meta = excluded.meta WHERE session_index.owner = excluded.owner \
         AND excluded.updated_at_ms >= session_index.updated_at_ms",
        &[text(id), text(owner), int(updated_at_ms), text(meta_json)],
    )
    .await?;
    if changes(&result) > 0 {
        return Ok(true);
    }
    // Nothing changed: a stale update, or another owner's session.
    Ok(session_owner(db, id)
        .await?
        .is_none_or(|stored| stored.eq_ignore_ascii_case(owner)))
}

/// Forgets session `id` of `owner` (a start that was undone).
pub(super) async fn unindex_session(db: &D1Database, id: &str, owner: &str) -> Result<(), String> {
    run(
        db,
        "unindex a session",
        "DELETE FROM session_index WHERE session_id = ?1 AND owner = ?2",
        &[text(id), text(owner)],
    )
    .await?;
    Ok(())
}

#[derive(Deserialize)]
struct MetaRow {
    meta: String,
}

/// The metadata JSON of `owner`'s sessions, most recently active first.
pub(super) async fn list_sessions(db: &D1Database, owner: &str) -> Result<Vec<String>, String> {
    let rows: Vec<MetaRow> = all(
        db,
        "list sessions",
        "SELECT meta FROM session_index WHERE owner = ?1 \
         ORDER BY updated_at_ms DESC, session_id LIMIT ?2",
        &[text(owner), int(i64::from(MAX_LISTED))],
    )
    .await?;
    Ok(rows.into_iter().map(|r| r.meta).collect())
}

#[derive(Deserialize)]
struct OwnerRow {
    owner: String,
}

/// Who owns session `id`.
pub(super) async fn session_owner(db: &D1Database, id: &str) -> Result<Option<String>, String> {
    let row: Option<OwnerRow> = first(
        db,
        "look up a session's owner",
        "SELECT owner FROM session_index WHERE session_id = ?1",
        &[text(id)],
    )
    .await?;
    Ok(row.map(|r| r.owner))
}

// ---- approval rules -------------------------------------------------------

#[derive(Deserialize)]
struct RuleRow {
    id: String,
    scope: String,
    worktree: String,
    session_id: String,
    rule: String,
    action: String,
    created_at_ms: f64,
}

/// `user`'s approval rules, oldest first (rows this build cannot read are
/// skipped).
pub(super) async fn rules(
    db: &D1Database,
    user: &str,
) -> Result<Vec<duraclaw_host::rules::StoredRule>, String> {
    let rows: Vec<RuleRow> = all(
        db,
        "read rules",
        duraclaw_host::rules::SELECT_BY_USER,
        &[text(user)],
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            duraclaw_host::rules::StoredRule::from_row(
                r.id,
                &r.scope,
                r.worktree,
                r.session_id,
                r.rule,
                &r.action,
                to_i64(r.created_at_ms),
            )
        })
        .collect())
}

/// Adds (or updates) `user`'s approval rules in one batch.
pub(super) async fn add_rules(
    db: &D1Database,
    user: &str,
    rules: &[duraclaw_host::rules::StoredRule],
) -> Result<(), String> {
    let mut batch = Vec::with_capacity(rules.len());
    for r in rules {
        let (id, scope, worktree, session, rule, action, at) = r.columns();
        batch.push(stmt(
            db,
            duraclaw_host::rules::INSERT,
            &[
                text(user),
                text(&id),
                text(scope),
                text(&worktree),
                text(&session),
                text(&rule),
                text(action),
                int(at),
            ],
        )?);
    }
    db.batch(batch).await.map_err(failed("add rules"))?;
    Ok(())
}

/// Deletes `user`'s rule `id`; whether there was one.
pub(super) async fn delete_rule(db: &D1Database, user: &str, id: &str) -> Result<bool, String> {
    let result = run(
        db,
        "delete a rule",
        duraclaw_host::rules::DELETE,
        &[text(id), text(user)],
    )
    .await?;
    Ok(changes(&result) > 0)
}
