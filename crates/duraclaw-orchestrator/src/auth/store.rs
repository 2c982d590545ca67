//! The auth database: users with their password hashes and login sessions
//! by the SHA-256 of their token, in the login tables' one shape
//! (`duraclaw_host::auth::schema`). Blocking rusqlite calls, made off the
//! async executor by [`Auth`](super::Auth).

use std::path::Path;

use duraclaw_core::backend::migrate::Migrations;
use duraclaw_core::{Error, Result};
use duraclaw_host::auth::schema::LOCAL_MIGRATIONS;
use duraclaw_store::SqliteConn;
use rusqlite::{Connection, OptionalExtension, params};

fn sql_error(what: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::storage_from("sqlite", format_args!("auth database: cannot {what}"), e)
}

/// Opens (creating if needed, readable by the owner only) and migrates the
/// auth database; refuses one whose schema is newer than this build's.
pub(super) fn open(path: &Path) -> Result<Connection> {
    let existed = path.exists();
    let mut conn = SqliteConn::open(path)?;
    if !existed {
        restrict_to_owner(path)?;
    }
    if let Err(e) = Migrations::new(LOCAL_MIGRATIONS)?.apply(&mut conn) {
        // The error does not say which of the data directory's databases.
        tracing::error!(path = %path.display(), error = %e, "cannot use the auth database");
        return Err(e);
    }
    Ok(conn.into_inner())
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        Error::storage_from(
            "sqlite",
            format_args!("cannot make {} private", path.display()),
            e,
        )
    })
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<()> {
    Ok(())
}

/// Adds a user; [`Error::AlreadyExists`] if the name is taken in any case.
pub(super) fn insert_user(conn: &Connection, name: &str, hash: &str, now_ms: i64) -> Result<()> {
    let added = conn
        .execute(
            "INSERT INTO users (name, password_hash, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO NOTHING",
            params![name, hash, now_ms],
        )
        .map_err(sql_error("add a user"))?;
    if added == 0 {
        return Err(Error::AlreadyExists {
            what: "user",
            id: name.to_owned(),
        });
    }
    Ok(())
}

/// Replaces a user's password hash and ends all their login sessions.
pub(super) fn update_password(
    conn: &mut Connection,
    name: &str,
    hash: &str,
    now_ms: i64,
) -> Result<()> {
    let tx = conn
        .transaction()
        .map_err(sql_error("begin a transaction"))?;
    let changed = tx
        .execute(
            "UPDATE users SET password_hash = ?2, updated_at_ms = ?3 WHERE name = ?1",
            params![name, hash, now_ms],
        )
        .map_err(sql_error("change a password"))?;
    if changed == 0 {
        return Err(Error::NotFound {
            what: "user",
            id: name.to_owned(),
        });
    }
    tx.execute(
        "DELETE FROM login_sessions WHERE user_name IN (SELECT name FROM users WHERE name = ?1)",
        params![name],
    )
    .map_err(sql_error("end a user's sessions"))?;
    tx.commit().map_err(sql_error("commit a password change"))
}

/// Deletes a user and all their login sessions.
pub(super) fn delete_user(conn: &mut Connection, name: &str) -> Result<()> {
    let tx = conn
        .transaction()
        .map_err(sql_error("begin a transaction"))?;
    tx.execute(
        "DELETE FROM login_sessions WHERE user_name IN (SELECT name FROM users WHERE name = ?1)",
        params![name],
    )
    .map_err(sql_error("end a user's sessions"))?;
    let removed = tx
        .execute("DELETE FROM users WHERE name = ?1", params![name])
        .map_err(sql_error("remove a user"))?;
    if removed == 0 {
        return Err(Error::NotFound {
            what: "user",
            id: name.to_owned(),
        });
    }
    tx.commit().map_err(sql_error("commit a user's removal"))
}

/// How many live login sessions a user has.
pub(super) fn count_sessions(conn: &Connection, name: &str) -> Result<u64> {
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM login_sessions WHERE user_name = ?1 COLLATE NOCASE",
            params![name],
            |row| row.get(0),
        )
        .map_err(sql_error("count a user's sessions"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The user's name as stored and their password hash.
pub(super) fn password_hash(conn: &Connection, name: &str) -> Result<Option<(String, String)>> {
    conn.prepare_cached("SELECT name, password_hash FROM users WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![name], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(sql_error("look up a user"))
}

/// How many users there are.
pub(super) fn count_users(conn: &Connection) -> Result<u64> {
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))
        .map_err(sql_error("count users"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Records a new login session.
pub(super) fn insert_session(
    conn: &Connection,
    token_digest: &str,
    user: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO login_sessions
             (token_digest, user_name, created_at_ms, last_used_at_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?3, ?4)",
        params![token_digest, user, now_ms, expires_at_ms],
    )
    .map_err(sql_error("record a login session"))?;
    Ok(())
}

/// The user of a live login session. Slides its expiry to `now + ttl`,
/// writing at most once per `touch_every_ms`; deletes it if it expired.
pub(super) fn session_user(
    conn: &Connection,
    token_digest: &str,
    now_ms: i64,
    ttl_ms: i64,
    touch_every_ms: i64,
) -> Result<Option<String>> {
    let row: Option<(String, i64, i64)> = conn
        .prepare_cached(
            "SELECT user_name, last_used_at_ms, expires_at_ms
             FROM login_sessions WHERE token_digest = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![token_digest], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
        })
        .map_err(sql_error("look up a login session"))?;
    let Some((user, last_used_ms, expires_at_ms)) = row else {
        return Ok(None);
    };
    if expires_at_ms <= now_ms {
        delete_session(conn, token_digest)?;
        return Ok(None);
    }
    if now_ms.saturating_sub(last_used_ms) >= touch_every_ms {
        conn.execute(
            "UPDATE login_sessions SET last_used_at_ms = ?2, expires_at_ms = ?3
             WHERE token_digest = ?1",
            params![token_digest, now_ms, now_ms.saturating_add(ttl_ms)],
        )
        .map_err(sql_error("extend a login session"))?;
    }
    Ok(Some(user))
}

/// Whether a login session is live (a read: its expiry is not slid).
pub(super) fn session_alive(conn: &Connection, token_digest: &str, now_ms: i64) -> Result<bool> {
    conn.prepare_cached(
        "SELECT 1 FROM login_sessions WHERE token_digest = ?1 AND expires_at_ms > ?2",
    )
    .and_then(|mut stmt| stmt.exists(params![token_digest, now_ms]))
    .map_err(sql_error("look up a login session"))
}

/// SQLite's `data_version`: it changes when another connection (another
/// process) commits to the database.
pub(super) fn data_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
        .map_err(sql_error("read the data version"))
}

/// Deletes a login session; whether there was one.
pub(super) fn delete_session(conn: &Connection, token_digest: &str) -> Result<bool> {
    conn.execute(
        "DELETE FROM login_sessions WHERE token_digest = ?1",
        params![token_digest],
    )
    .map(|n| n > 0)
    .map_err(sql_error("end a login session"))
}

/// Deletes every expired login session; how many.
pub(super) fn purge_expired(conn: &Connection, now_ms: i64) -> Result<usize> {
    conn.execute(
        "DELETE FROM login_sessions WHERE expires_at_ms <= ?1",
        params![now_ms],
    )
    .map_err(sql_error("delete expired login sessions"))
}

/// `user`'s approval rules, oldest first (rows this build cannot read are
/// skipped).
pub(super) fn rules(
    conn: &Connection,
    user: &str,
) -> Result<Vec<duraclaw_host::rules::StoredRule>> {
    use duraclaw_host::rules::{SELECT_BY_USER, StoredRule};
    let mut stmt = conn
        .prepare_cached(SELECT_BY_USER)
        .map_err(sql_error("read rules"))?;
    let rows = stmt
        .query_map(params![user], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })
        .map_err(sql_error("read rules"))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, scope, worktree, session, rule, action, at) =
            row.map_err(sql_error("read rules"))?;
        match StoredRule::from_row(id, &scope, worktree, session, rule, &action, at) {
            Some(r) => out.push(r),
            None => tracing::warn!(user, scope, action, "unreadable approval rule skipped"),
        }
    }
    Ok(out)
}

/// Adds (or updates) `user`'s approval rules in one transaction.
pub(super) fn add_rules(
    conn: &mut Connection,
    user: &str,
    rules: &[duraclaw_host::rules::StoredRule],
) -> Result<()> {
    let tx = conn
        .transaction()
        .map_err(sql_error("begin a transaction"))?;
    for r in rules {
        let (id, scope, worktree, session, rule, action, at) = r.columns();
        tx.execute(
            duraclaw_host::rules::INSERT,
            params![user, id, scope, worktree, session, rule, action, at],
        )
        .map_err(sql_error("add a rule"))?;
    }
    tx.commit().map_err(sql_error("add rules"))
}

/// Deletes `user`'s rule `id`; whether there was one.
pub(super) fn delete_rule(conn: &Connection, user: &str, id: &str) -> Result<bool> {
    let n = conn
        .execute(duraclaw_host::rules::DELETE, params![id, user])
        .map_err(sql_error("delete a rule"))?;
    Ok(n > 0)
}
