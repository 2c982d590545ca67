//! The login tables, one shape on both hosts: `users` (name, password
//! hash) and `login_sessions` (the digest of a login's token, its user,
//! created, last used, expiry), as versioned migrations.
//!
//! Each host released its own first migration, and a released migration
//! is never edited, so each list keeps its first step as released and the
//! second, the same text on both ([`ONE_LOGIN_SHAPE`]), rebuilds
//! `login_sessions` into the one shape. [`LOCAL_MIGRATIONS`] is the local
//! host's auth database (run by core's
//! [`Migrations`](duraclaw_core::backend::migrate::Migrations)); [`D1_MIGRATIONS`]
//! is the Worker's D1 database, which also holds the login failures and
//! the session index, run statement by statement ([`statements`]) after
//! [`plan`] decides what a database needs. Never edit a released
//! migration: add one, to both lists where it concerns the login tables.

use duraclaw_core::backend::migrate::{Migration, checksum};

/// The key of the D1 schema row in `duraclaw_meta`.
pub const SCHEMA_KEY: &str = "auth_schema";

/// Creates the D1 bookkeeping tables when missing.
pub const BOOTSTRAP: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS duraclaw_meta (\
     key TEXT PRIMARY KEY, int_value INTEGER, text_value TEXT)",
    "CREATE TABLE IF NOT EXISTS duraclaw_migrations (\
     version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL)",
];

// The pieces both lists' steps are made of, so each is written once; the
// released steps keep their text to the byte (their checksums are tested).
macro_rules! users_table {
    () => {
        "CREATE TABLE users (
              name TEXT PRIMARY KEY COLLATE NOCASE,
              password_hash TEXT NOT NULL,
              created_at_ms INTEGER NOT NULL,
              updated_at_ms INTEGER NOT NULL
          );"
    };
}

macro_rules! login_times {
    () => {
        "
              created_at_ms INTEGER NOT NULL,
              last_used_at_ms INTEGER NOT NULL,
              expires_at_ms INTEGER NOT NULL
          );"
    };
}

macro_rules! login_indexes {
    () => {
        "
          CREATE INDEX login_sessions_by_user ON login_sessions (user_name);
          CREATE INDEX login_sessions_by_expiry ON login_sessions (expires_at_ms);"
    };
}

/// The second step of both lists: `login_sessions` rebuilt into the one
/// shape (the token's digest as `token_digest`, the user matched without
/// case and bound to `users`), keeping every login whose user exists.
pub const ONE_LOGIN_SHAPE: Migration = Migration {
    version: 2,
    name: "login sessions in the one shape of both hosts",
    sql: concat!(
        "CREATE TABLE login_sessions_new (
              token_digest TEXT PRIMARY KEY,
              user_name TEXT NOT NULL COLLATE NOCASE REFERENCES users (name)
                  ON DELETE CASCADE ON UPDATE CASCADE,",
        login_times!(),
        "
          INSERT INTO login_sessions_new
              (token_digest, user_name, created_at_ms, last_used_at_ms, expires_at_ms)
              SELECT * FROM login_sessions WHERE user_name IN (SELECT name FROM users);
          DROP TABLE login_sessions;
          ALTER TABLE login_sessions_new RENAME TO login_sessions;",
        login_indexes!()
    ),
};

/// The third step of both lists: Web Push (`crate::push`). Subscriptions
/// belong to a user and to the login that made them (a login that ends
/// takes its subscriptions with it); settings per user; one delivery
/// record per subscription and event, kept after its subscription goes.
pub const PUSH_TABLES: Migration = Migration {
    version: 3,
    name: "web push subscriptions, settings and deliveries",
    sql: "CREATE TABLE push_subscriptions (
              id TEXT PRIMARY KEY,
              user_name TEXT NOT NULL COLLATE NOCASE REFERENCES users (name)
                  ON DELETE CASCADE ON UPDATE CASCADE,
              login_digest TEXT NOT NULL REFERENCES login_sessions (token_digest)
                  ON DELETE CASCADE,
              endpoint TEXT NOT NULL UNIQUE,
              p256dh TEXT NOT NULL,
              auth TEXT NOT NULL,
              device TEXT NOT NULL,
              created_at_ms INTEGER NOT NULL,
              last_success_ms INTEGER,
              last_failure_ms INTEGER,
              last_failure TEXT
          );
          CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_name);
          CREATE INDEX push_subscriptions_by_login ON push_subscriptions (login_digest);
          CREATE TABLE push_settings (
              user_name TEXT PRIMARY KEY COLLATE NOCASE REFERENCES users (name)
                  ON DELETE CASCADE ON UPDATE CASCADE,
              settings TEXT NOT NULL,
              updated_at_ms INTEGER NOT NULL
          );
          CREATE TABLE push_deliveries (
              id TEXT PRIMARY KEY,
              user_name TEXT NOT NULL COLLATE NOCASE,
              subscription_id TEXT NOT NULL,
              device TEXT NOT NULL,
              kind TEXT NOT NULL,
              session_id TEXT NOT NULL,
              question_id TEXT,
              event_key TEXT NOT NULL,
              status TEXT NOT NULL,
              http_status INTEGER,
              error TEXT,
              attempts INTEGER NOT NULL,
              payload TEXT NOT NULL,
              ttl_secs INTEGER NOT NULL,
              next_attempt_ms INTEGER,
              created_at_ms INTEGER NOT NULL,
              updated_at_ms INTEGER NOT NULL,
              UNIQUE (subscription_id, event_key)
          );
          CREATE INDEX push_deliveries_by_user ON push_deliveries (user_name, created_at_ms);
          CREATE INDEX push_deliveries_due ON push_deliveries (next_attempt_ms)",
};

/// The fourth step of both lists: the approval rules users own (`duraclaw_host::rules`), the same step
/// on both hosts. `worktree` and `session_id` are `''` when the scope
/// names none, so the one-rule-per-place constraint holds.
pub const APPROVAL_RULES: Migration = Migration {
    version: 4,
    name: "approval rules",
    sql: "CREATE TABLE approval_rules (
              id TEXT PRIMARY KEY,
              user_name TEXT NOT NULL COLLATE NOCASE REFERENCES users (name)
                  ON DELETE CASCADE ON UPDATE CASCADE,
              scope TEXT NOT NULL,
              worktree TEXT NOT NULL DEFAULT '',
              session_id TEXT NOT NULL DEFAULT '',
              rule TEXT NOT NULL,
              action TEXT NOT NULL,
              created_at_ms INTEGER NOT NULL,
              UNIQUE (user_name, scope, worktree, session_id, rule)
          );
          CREATE INDEX approval_rules_by_user ON approval_rules (user_name, created_at_ms)",
};

/// The local host's auth database (its own SQLite file).
pub const LOCAL_MIGRATIONS: &[Migration] = &[
    // As released; the next step brings it to the one shape.
    Migration {
        version: 1,
        name: "users and login sessions",
        sql: concat!(
            users_table!(),
            "
          CREATE TABLE login_sessions (
              token_sha256 TEXT PRIMARY KEY,
              user_name TEXT NOT NULL REFERENCES users (name)
                  ON DELETE CASCADE ON UPDATE CASCADE,",
            login_times!(),
            login_indexes!()
        ),
    },
    ONE_LOGIN_SHAPE,
    PUSH_TABLES,
    APPROVAL_RULES,
];

/// The Worker's D1 database: the login tables, the login failures and the
/// session index.
pub const D1_MIGRATIONS: &[Migration] = &[
    // As released; the next step brings `login_sessions` to the one shape.
    Migration {
        version: 1,
        name: "users, login sessions, login failures and the session index",
        sql: concat!(
            users_table!(),
            "
          CREATE TABLE login_sessions (
              token_digest TEXT PRIMARY KEY,
              user_name TEXT NOT NULL COLLATE NOCASE,",
            login_times!(),
            login_indexes!(),
            "
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
          CREATE INDEX session_index_by_owner ON session_index (owner, updated_at_ms DESC)"
        ),
    },
    ONE_LOGIN_SHAPE,
    PUSH_TABLES,
    APPROVAL_RULES,
];

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
    use duraclaw_core::backend::migrate::{Migrations, SqlConn, SqlValue};
    use duraclaw_store::SqliteConn;

    /// The login tables' and indexes' SQL as SQLite stored it.
    fn login_shape(conn: &mut SqliteConn) -> Vec<String> {
        conn.query(
            "SELECT name, sql FROM sqlite_master WHERE (tbl_name IN ('users', 'login_sessions')) \
             AND sql IS NOT NULL ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| format!("{}: {}", r[0].as_str().unwrap(), r[1].as_str().unwrap()))
        .collect()
    }

    /// Runs a D1 list as the Worker does: bookkeeping, then each statement.
    fn d1_apply(conn: &mut SqliteConn, upto: usize) {
        for _ in 0..2 {
            for sql in BOOTSTRAP {
                conn.execute(sql, &[]).unwrap();
            }
        }
        for m in &D1_MIGRATIONS[..upto] {
            for sql in statements(m.sql) {
                conn.execute(&sql, &[]).unwrap();
            }
        }
    }

    #[test]
    fn both_hosts_end_with_the_same_login_tables() {
        let mut local = SqliteConn::open_in_memory().unwrap();
        Migrations::new(LOCAL_MIGRATIONS)
            .unwrap()
            .apply(&mut local)
            .unwrap();
        let mut d1 = SqliteConn::open_in_memory().unwrap();
        d1_apply(&mut d1, D1_MIGRATIONS.len());
        let shape = login_shape(&mut local);
        assert_eq!(shape, login_shape(&mut d1));
        assert!(
            shape
                .iter()
                .any(|s| s.contains("token_digest TEXT PRIMARY KEY")),
            "{shape:?}"
        );
        assert_eq!(LOCAL_MIGRATIONS[1], D1_MIGRATIONS[1]);
    }

    #[test]
    fn a_released_database_keeps_its_logins_through_the_new_shape() {
        let rows = |conn: &mut SqliteConn| {
            conn.query(
                "SELECT token_digest, user_name, expires_at_ms FROM login_sessions ORDER BY 1",
                &[],
            )
            .unwrap()
        };
        let seed = |conn: &mut SqliteConn, token_column: &str| {
            conn.execute_batch(&format!(
                "INSERT INTO users VALUES ('Alice', 'h', 1, 1);
                 INSERT INTO login_sessions ({token_column}, user_name, created_at_ms,
                     last_used_at_ms, expires_at_ms) VALUES ('d1', 'Alice', 1, 2, 3);"
            ))
            .unwrap();
        };
        // The local database as released, then opened by this build.
        let mut local = SqliteConn::open_in_memory().unwrap();
        Migrations::new(&LOCAL_MIGRATIONS[..1])
            .unwrap()
            .apply(&mut local)
            .unwrap();
        seed(&mut local, "token_sha256");
        let report = Migrations::new(LOCAL_MIGRATIONS)
            .unwrap()
            .apply(&mut local)
            .unwrap();
        let after_v1: Vec<u32> = (2..=LOCAL_MIGRATIONS.len() as u32).collect();
        assert_eq!(report.applied, after_v1);
        // The D1 database as released, with a login whose user is gone.
        let mut d1 = SqliteConn::open_in_memory().unwrap();
        d1_apply(&mut d1, 1);
        seed(&mut d1, "token_digest");
        d1.execute(
            "INSERT INTO login_sessions VALUES ('d2', 'ghost', 1, 2, 3)",
            &[],
        )
        .unwrap();
        for sql in statements(D1_MIGRATIONS[1].sql) {
            d1.execute(&sql, &[]).unwrap();
        }
        let want = vec![vec![
            SqlValue::Text("d1".into()),
            SqlValue::Text("Alice".into()),
            SqlValue::Integer(3),
        ]];
        assert_eq!(rows(&mut local), want);
        assert_eq!(rows(&mut d1), want);
        // Removing a user ends their logins on both.
        for conn in [&mut local, &mut d1] {
            conn.execute("PRAGMA foreign_keys = ON", &[]).unwrap();
            conn.execute("DELETE FROM users WHERE name = 'alice'", &[])
                .unwrap();
            assert!(rows(conn).is_empty());
        }
    }

    /// The rules table on both hosts: one rule per user, scope, place and
    /// text (a second add changes its action), gone with its user.
    #[test]
    fn approval_rules_are_stored_the_same_on_both_hosts() {
        use crate::rules::{INSERT, SELECT_BY_USER, StoredRule};
        let mut local = SqliteConn::open_in_memory().unwrap();
        Migrations::new(LOCAL_MIGRATIONS)
            .unwrap()
            .apply(&mut local)
            .unwrap();
        let mut d1 = SqliteConn::open_in_memory().unwrap();
        d1_apply(&mut d1, D1_MIGRATIONS.len());
        for conn in [&mut local, &mut d1] {
            conn.execute("PRAGMA foreign_keys = ON", &[]).unwrap();
            conn.execute("INSERT INTO users VALUES ('alice', 'h', 1, 1)", &[])
                .unwrap();
            for (id, action) in [("r1", "allow"), ("r2", "deny")] {
                let args = [
                    SqlValue::Text("Alice".into()),
                    SqlValue::Text(id.into()),
                    SqlValue::Text("worktree".into()),
                    SqlValue::Text("/w/a".into()),
                    SqlValue::Text(String::new()),
                    SqlValue::Text("Bash(git status*)".into()),
                    SqlValue::Text(action.into()),
                    SqlValue::Integer(5),
                ];
                conn.execute(INSERT, &args).unwrap();
            }
            let rows = conn
                .query(SELECT_BY_USER, &[SqlValue::Text("alice".into())])
                .unwrap();
            assert_eq!(rows.len(), 1, "the second add updated the first");
            let text = |v: &SqlValue| match v {
                SqlValue::Text(t) => t.clone(),
                other => panic!("{other:?}"),
            };
            let r = &rows[0];
            let stored = StoredRule::from_row(
                text(&r[0]),
                &text(&r[1]),
                text(&r[2]),
                text(&r[3]),
                text(&r[4]),
                &text(&r[5]),
                5,
            )
            .unwrap();
            assert_eq!((stored.id.as_str(), stored.action.name()), ("r1", "deny"));
            conn.execute("DELETE FROM users WHERE name = 'alice'", &[])
                .unwrap();
            assert!(
                conn.query(SELECT_BY_USER, &[SqlValue::Text("alice".into())])
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[test]
    fn the_migrations_are_numbered_and_split() {
        assert!(Migrations::new(D1_MIGRATIONS).is_ok());
        assert!(Migrations::new(LOCAL_MIGRATIONS).is_ok());
        let first = statements(D1_MIGRATIONS[0].sql);
        assert_eq!(first.len(), 8);
        assert!(first.iter().all(|s| s.starts_with("CREATE ")));
        assert_eq!(statements(ONE_LOGIN_SHAPE.sql).len(), 6);
        assert!(
            statements(LOCAL_MIGRATIONS[0].sql)
                .iter()
                .all(|s| s.starts_with("CREATE "))
        );
        assert_eq!(statements(" ; a ;; b"), vec!["a", "b"]);
    }

    #[test]
    fn released_migrations_keep_their_checksums() {
        // What databases in the field recorded: never change these.
        assert_eq!(checksum(LOCAL_MIGRATIONS[0].sql), RELEASED_LOCAL_V1);
        assert_eq!(checksum(D1_MIGRATIONS[0].sql), RELEASED_D1_V1);
        assert_eq!(checksum(ONE_LOGIN_SHAPE.sql), RELEASED_V2);
    }

    const RELEASED_V2: &str = "97f3c5da7ba1aa52";

    #[test]
    fn a_login_that_ends_takes_its_push_subscriptions_on_both_hosts() {
        let mut local = SqliteConn::open_in_memory().unwrap();
        Migrations::new(LOCAL_MIGRATIONS)
            .unwrap()
            .apply(&mut local)
            .unwrap();
        let mut d1 = SqliteConn::open_in_memory().unwrap();
        d1_apply(&mut d1, D1_MIGRATIONS.len());
        assert_eq!(LOCAL_MIGRATIONS[2], D1_MIGRATIONS[2]);
        let subs = |conn: &mut SqliteConn| {
            conn.query("SELECT id FROM push_subscriptions ORDER BY id", &[])
                .unwrap()
                .len()
        };
        for conn in [&mut local, &mut d1] {
            conn.execute("PRAGMA foreign_keys = ON", &[]).unwrap();
            conn.execute_batch(
                "INSERT INTO users VALUES ('alice', 'h', 1, 1);
                 INSERT INTO users VALUES ('bob', 'h', 1, 1);
                 INSERT INTO login_sessions VALUES ('la', 'alice', 1, 1, 9);
                 INSERT INTO login_sessions VALUES ('lb', 'bob', 1, 1, 9);
                 INSERT INTO push_subscriptions (id, user_name, login_digest, endpoint, p256dh,
                     auth, device, created_at_ms) VALUES ('s1', 'alice', 'la', 'https://p/1',
                     'k', 'a', 'phone', 1);
                 INSERT INTO push_subscriptions (id, user_name, login_digest, endpoint, p256dh,
                     auth, device, created_at_ms) VALUES ('s2', 'bob', 'lb', 'https://p/2',
                     'k', 'a', 'phone', 1);
                 INSERT INTO push_settings VALUES ('bob', '{}', 1);",
            )
            .unwrap();
            assert_eq!(subs(conn), 2);
            // Logout: alice's login row goes, and her subscription with it.
            conn.execute("DELETE FROM login_sessions WHERE token_digest = 'la'", &[])
                .unwrap();
            assert_eq!(subs(conn), 1);
            // Removing a user ends their logins and subscriptions.
            conn.execute("DELETE FROM users WHERE name = 'BOB'", &[])
                .unwrap();
            assert_eq!(subs(conn), 0);
            let settings = conn.query("SELECT * FROM push_settings", &[]).unwrap();
            assert!(settings.is_empty());
        }
    }

    const RELEASED_LOCAL_V1: &str = "d65e7407fb6ace62";
    const RELEASED_D1_V1: &str = "d27b53038f273592";

    #[test]
    fn plans() {
        let m = D1_MIGRATIONS;
        let n = m.len();
        assert_eq!(plan(m, None), Ok(Plan::Apply((0..n).collect())));
        for at in 0..n {
            assert_eq!(
                plan(m, Some((at as i64, digest_upto(m, at)))),
                Ok(Plan::Apply((at..n).collect())),
                "at version {at}"
            );
        }
        assert_eq!(
            plan(m, Some((n as i64, digest_upto(m, n)))),
            Ok(Plan::UpToDate)
        );
        let too_new = plan(m, Some((99, "x".into()))).unwrap_err();
        assert!(too_new.contains("version 99, newer"), "{too_new}");
        let edited = plan(m, Some((1, "other".into()))).unwrap_err();
        assert!(edited.contains("edited"), "{edited}");
        assert!(plan(m, Some((-1, String::new()))).is_err());
        assert_ne!(digest_upto(m, 0), digest_upto(m, 1));
    }
}
