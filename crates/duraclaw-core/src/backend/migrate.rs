//! Versioned, checksummed schema migrations for every SQL backend.
//!
//! The schema version lives in a meta table, not `PRAGMA user_version`,
//! which Durable Object SQLite refuses: one code path for rusqlite and DO
//! SQL. On every wake, [`Migrations::apply`] reads one row (version and a
//! digest of every applied migration); when both match the code it returns
//! at once. Otherwise it refuses a database newer than the code, detects an
//! applied migration that was edited since, and applies each missing
//! migration together with its version bump in one transaction.

use crate::error::{Error, Result};

/// A value bound to or read from SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer (DO SQL returns numbers as f64: keep them within 2^53).
    Integer(i64),
    /// Text.
    Text(String),
}

impl SqlValue {
    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            SqlValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// A synchronous SQL connection, as both rusqlite and DO SQL are.
pub trait SqlConn {
    /// Runs one statement with bound parameters.
    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<()>;

    /// Runs several statements separated by `;`, without parameters.
    fn execute_batch(&mut self, sql: &str) -> Result<()>;

    /// Runs a query and returns every row.
    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>>;

    /// Runs `body` in one transaction: committed if it returns `Ok`, rolled
    /// back if it returns `Err`.
    fn transaction(&mut self, body: &mut dyn FnMut(&mut dyn SqlConn) -> Result<()>) -> Result<()>;
}

/// One schema step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// 1, 2, 3, … with no gaps.
    pub version: u32,
    /// A short name, shown in errors.
    pub name: &'static str,
    /// The SQL; never edit it once released, add a new migration instead.
    pub sql: &'static str,
}

/// What [`Migrations::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Version found.
    pub from: u32,
    /// Version now.
    pub to: u32,
    /// Versions applied by this call.
    pub applied: Vec<u32>,
}

/// A validated list of migrations with their checksums.
#[derive(Debug, Clone)]
pub struct Migrations {
    steps: Vec<(Migration, String)>,
    /// `digests[i]` is the digest after applying the first `i` migrations.
    digests: Vec<String>,
}

const BOOTSTRAP: &str = "CREATE TABLE IF NOT EXISTS duraclaw_meta (\
     key TEXT PRIMARY KEY, int_value INTEGER, text_value TEXT);\
     CREATE TABLE IF NOT EXISTS duraclaw_migrations (\
     version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL)";
const READ_HEAD: &str = "SELECT int_value, text_value FROM duraclaw_meta WHERE key = 'schema'";

impl Migrations {
    /// Validates that versions run 1, 2, 3, … and computes checksums.
    pub fn new(list: &[Migration]) -> Result<Self> {
        let mut steps = Vec::with_capacity(list.len());
        let mut digests = vec![chain_digest("", "")];
        for (i, m) in list.iter().enumerate() {
            let want =
                u32::try_from(i + 1).map_err(|_| Error::Invalid("too many migrations".into()))?;
            if m.version != want {
                return Err(Error::Invalid(format!(
                    "migration {:?} has version {}, expected {} (versions run 1, 2, 3, … with no gaps)",
                    m.name, m.version, want
                )));
            }
            let sum = checksum(m.sql);
            let prev = digests.last().cloned().unwrap_or_default();
            digests.push(chain_digest(&prev, &sum));
            steps.push((*m, sum));
        }
        Ok(Migrations { steps, digests })
    }

    /// The newest version the code knows.
    pub fn latest(&self) -> u32 {
        self.steps.len() as u32
    }

    /// Brings the database up to [`Migrations::latest`]; see the module docs.
    pub fn apply(&self, conn: &mut dyn SqlConn) -> Result<MigrationReport> {
        let (found, digest) = match read_head(conn) {
            Ok(head) => head,
            Err(_) => {
                conn.execute_batch(BOOTSTRAP)?;
                read_head(conn)?
            }
        };
        let latest = self.latest();
        if found > latest {
            return Err(Error::SchemaTooNew {
                found,
                known: latest,
            });
        }
        let expected = &self.digests[found as usize];
        if &digest != expected {
            self.find_edited(conn, found)?;
            // No single row differs: the head itself is damaged.
            return Err(Error::storage(
                "sql",
                format!(
                    "schema digest {digest:?} at version {found} does not match the recorded migrations"
                ),
            ));
        }
        let mut applied = Vec::new();
        for (m, sum) in &self.steps[found as usize..] {
            let digest = &self.digests[m.version as usize];
            let mut step = |tx: &mut dyn SqlConn| -> Result<()> {
                tx.execute_batch(m.sql)?;
                tx.execute(
                    "INSERT INTO duraclaw_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                    &[
                        SqlValue::Integer(i64::from(m.version)),
                        SqlValue::Text(m.name.to_owned()),
                        SqlValue::Text(sum.clone()),
                    ],
                )?;
                tx.execute(
                    "INSERT INTO duraclaw_meta (key, int_value, text_value) VALUES ('schema', ?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET int_value = excluded.int_value, text_value = excluded.text_value",
                    &[SqlValue::Integer(i64::from(m.version)), SqlValue::Text(digest.clone())],
                )
            };
            conn.transaction(&mut step)
                .map_err(|e| Error::MigrationFailed {
                    version: m.version,
                    name: m.name.to_owned(),
                    reason: e.to_string(),
                    source: Some(e.into()),
                })?;
            tracing::info!(version = m.version, name = m.name, "applied migration");
            applied.push(m.version);
        }
        Ok(MigrationReport {
            from: found,
            to: latest,
            applied,
        })
    }

    fn find_edited(&self, conn: &mut dyn SqlConn, upto: u32) -> Result<()> {
        let rows = conn.query(
            "SELECT version, name, checksum FROM duraclaw_migrations WHERE version <= ?1 ORDER BY version",
            &[SqlValue::Integer(i64::from(upto))],
        )?;
        for row in rows {
            let version = row.first().and_then(SqlValue::as_i64).unwrap_or(0);
            let applied = row
                .get(2)
                .and_then(SqlValue::as_str)
                .unwrap_or("")
                .to_owned();
            let Some((m, current)) = usize::try_from(version)
                .ok()
                .and_then(|v| v.checked_sub(1))
                .and_then(|i| self.steps.get(i))
            else {
                continue;
            };
            if *current != applied {
                return Err(Error::MigrationEdited {
                    version: m.version,
                    name: m.name.to_owned(),
                    applied,
                    current: current.clone(),
                });
            }
        }
        Ok(())
    }
}

fn read_head(conn: &mut dyn SqlConn) -> Result<(u32, String)> {
    let rows = conn.query(READ_HEAD, &[])?;
    let Some(row) = rows.first() else {
        return Ok((0, chain_digest("", "")));
    };
    let version = row.first().and_then(SqlValue::as_i64).unwrap_or(-1);
    let version = u32::try_from(version).map_err(|_| {
        Error::storage(
            "sql",
            format!("schema version {version} in duraclaw_meta is not a valid version"),
        )
    })?;
    let digest = row
        .get(1)
        .and_then(SqlValue::as_str)
        .unwrap_or("")
        .to_owned();
    Ok((version, digest))
}

/// FNV-1a, 64 bits: detects an edited migration; not a security boundary.
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The checksum of a migration's SQL, as recorded.
pub fn checksum(sql: &str) -> String {
    format!("{:016x}", fnv1a(sql.as_bytes(), FNV_OFFSET))
}

fn chain_digest(prev: &str, sum: &str) -> String {
    let h = fnv1a(prev.as_bytes(), FNV_OFFSET);
    format!("{:016x}", fnv1a(sum.as_bytes(), h))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Migration = Migration {
        version: 1,
        name: "a",
        sql: "CREATE TABLE a (x)",
    };
    const B: Migration = Migration {
        version: 2,
        name: "b",
        sql: "CREATE TABLE b (x)",
    };

    #[test]
    fn versions_must_run_without_gaps() {
        assert!(Migrations::new(&[A, B]).is_ok());
        let err = Migrations::new(&[B]).unwrap_err();
        assert!(err.to_string().contains("expected 1"), "{err}");
        let err = Migrations::new(&[A, A]).unwrap_err();
        assert!(err.to_string().contains("expected 2"), "{err}");
    }

    #[test]
    fn digests_depend_on_every_step_and_its_order() {
        let ab = Migrations::new(&[A, B]).unwrap();
        let b_edited = Migration {
            sql: "CREATE TABLE b (y)",
            ..B
        };
        let ab2 = Migrations::new(&[A, b_edited]).unwrap();
        assert_eq!(ab.digests[1], ab2.digests[1]);
        assert_ne!(ab.digests[2], ab2.digests[2]);
        assert_ne!(checksum("x"), checksum("y"));
        assert_eq!(checksum(""), format!("{FNV_OFFSET:016x}"));
    }
}
