//! The D1 schema of the auth, as versioned migrations, and the decision of
//! what a database at some version needs.
//!
//! The version and a digest of every applied migration live in the row
//! `auth_schema` of `duraclaw_meta`; each applied migration is listed in
//! `duraclaw_migrations` with its checksum. A database newer than the code
//! is refused with a message saying so; a database whose applied
//! migrations differ from the code's (an edited migration) is refused too.
//! Never edit a released migration: add one.
//!
//! Target-independent: the D1 side (`store`) runs what this decides.

use duraclaw_core::backend::migrate::{Migration, checksum};

/// The key of the schema row in `duraclaw_meta`.
pub const SCHEMA_KEY: &str = "auth_schema";

/// Creates the bookkeeping tables when missing.
pub const BOOTSTRAP: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS duraclaw_meta (\
     key TEXT PRIMARY KEY, int_value INTEGER, text_value TEXT)",
    "CREATE TABLE IF NOT EXISTS duraclaw_migrations (\
     version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL)",
];

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "users, login sessions, login failures and the session index",
    sql: "CREATE TABLE users (
              name TEXT PRIMARY KEY COLLATE NOCASE,
              password_hash TEXT NOT NULL,
              created_at_ms INTEGER NOT NULL,
              updated_at_ms INTEGER NOT NULL
          );
          CREATE TABLE login_sessions (
              token_digest TEXT PRIMARY KEY,
              user_name TEXT NOT NULL COLLATE NOCASE,
              created_at_ms INTEGER NOT NULL,
              last_used_at_ms INTEGER NOT NULL,
              expires_at_ms INTEGER NOT NULL
          );
          CREATE INDEX login_sessions_by_user ON login_sessions (user_name);
          CREATE INDEX login_sessions_by_expiry ON login_sessions (expires_at_ms);
          CREATE TABLE login_failures (
              key TEXT PRIMARY KEY,
              window_start_ms INTEGER NOT NULL,
              failures INTEGER NOT NULL,
              lockouts INTEGER NOT NULL,
              locked_until_ms INTEGER NOT NULL,
              last_failure_ms INTEGER NOT NULL,
              rev INTEGER NOT NULL
          );
          CREATE INDEX login_failures_by_last ON login_failures (last_failure_ms);
          CREATE TABLE session_index (
              session_id TEXT PRIMARY KEY,
              owner TEXT NOT NULL COLLATE NOCASE,
              updated_at_ms INTEGER NOT NULL,
              meta TEXT NOT NULL
          );
          CREATE INDEX session_index_by_owner ON session_index (owner, updated_at_ms DESC)",
}];

/// The statements of a migration's SQL (split at `;`; the migrations hold
/// no `;` inside a statement).
pub fn statements(sql: &str) -> Vec<String> {
    sql.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The digest recorded after the first `n` migrations of `list`.
pub fn digest_upto(list: &[Migration], n: usize) -> String {
    let sums: Vec<String> = list.iter().take(n).map(|m| checksum(m.sql)).collect();
    checksum(&sums.join(","))
}

/// What a database at `found` (version, digest) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: it is up to date.
    UpToDate,
    /// These migrations (by index into the list), in order.
    Apply(Vec<usize>),
}

/// Decides what a database whose schema row says `found` needs; `Err` is
/// the reason it cannot be used.
pub fn plan(list: &[Migration], found: Option<(i64, String)>) -> Result<Plan, String> {
    let latest = list.len();
    let (version, digest) = found.unwrap_or((0, digest_upto(list, 0)));
    let version = usize::try_from(version)
        .map_err(|_| format!("the auth schema version {version} in D1 is not a version"))?;
    if version > latest {
        return Err(format!(
            "the D1 database has auth schema version {version}, newer than this Worker knows \
             ({latest}): deploy the newer Worker, or restore a backup of the database"
        ));
    }
    if digest != digest_upto(list, version) {
        return Err(format!(
            "the D1 database's auth schema at version {version} does not match this Worker's \
             migrations (a released migration was edited)"
        ));
    }
    if version == latest {
        Ok(Plan::UpToDate)
    } else {
        Ok(Plan::Apply((version..latest).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_numbered_and_split() {
        assert!(duraclaw_core::backend::migrate::Migrations::new(MIGRATIONS).is_ok());
        let first = statements(MIGRATIONS[0].sql);
        assert_eq!(first.len(), 8);
        assert!(first.iter().all(|s| s.starts_with("CREATE ")));
        assert_eq!(statements(" ; a ;; b"), vec!["a", "b"]);
    }

    #[test]
    fn the_statements_run_on_sqlite_one_by_one() {
        use duraclaw_core::backend::migrate::SqlConn;
        // D1 is SQLite: every statement, run alone as a D1 batch runs them,
        // must be valid there, and the bookkeeping must be idempotent.
        let mut conn = duraclaw_store::SqliteConn::open_in_memory().unwrap();
        for _ in 0..2 {
            for sql in BOOTSTRAP {
                conn.execute(sql, &[]).unwrap();
            }
        }
        for m in MIGRATIONS {
            for sql in statements(m.sql) {
                conn.execute(&sql, &[]).unwrap();
            }
        }
        let rows = conn
            .query(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                &[],
            )
            .unwrap();
        let tables: Vec<&str> = rows.iter().filter_map(|r| r[0].as_str()).collect();
        assert_eq!(
            tables,
            [
                "duraclaw_meta",
                "duraclaw_migrations",
                "login_failures",
                "login_sessions",
                "session_index",
                "users"
            ]
        );
    }

    #[test]
    fn plans() {
        let m = MIGRATIONS;
        assert_eq!(plan(m, None), Ok(Plan::Apply(vec![0])));
        assert_eq!(
            plan(m, Some((0, digest_upto(m, 0)))),
            Ok(Plan::Apply(vec![0]))
        );
        assert_eq!(plan(m, Some((1, digest_upto(m, 1)))), Ok(Plan::UpToDate));
        let too_new = plan(m, Some((99, "x".into()))).unwrap_err();
        assert!(too_new.contains("version 99, newer"), "{too_new}");
        let edited = plan(m, Some((1, "other".into()))).unwrap_err();
        assert!(edited.contains("edited"), "{edited}");
        assert!(plan(m, Some((-1, String::new()))).is_err());
        assert_ne!(digest_upto(m, 0), digest_upto(m, 1));
    }
}
