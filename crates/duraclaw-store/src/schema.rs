//! The schema every SQL session store uses (SQLite locally, DO SQL on
//! Cloudflare), as [`Migrations`]: each table keyed by `session_id`, so one
//! database can hold one session (a Durable Object) or every session (the
//! local SQLite file).
//!
//! Only what Durable Object SQLite accepts: no `PRAGMA`, no `BEGIN` or
//! `SAVEPOINT`, no temporary tables, no names starting with `_cf_`. Never
//! edit a released migration; add the next version instead.

use duraclaw_core::Result;
use duraclaw_core::backend::migrate::{Migration, Migrations};

/// The migrations of every SQL session store, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "sessions, events, questions, commands",
        sql: "
CREATE TABLE sessions (
    session_id TEXT NOT NULL PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    highest_gseq INTEGER NOT NULL DEFAULT 0,
    meta_json TEXT NOT NULL
);
CREATE INDEX sessions_by_owner ON sessions (owner, updated_at_ms DESC);

CREATE TABLE events (
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    seq INTEGER NOT NULL,
    gseq INTEGER,
    at_ms INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE questions (
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    question_id TEXT NOT NULL,
    asked_seq INTEGER NOT NULL,
    question_json TEXT NOT NULL,
    resolution_json TEXT,
    PRIMARY KEY (session_id, question_id)
);
CREATE INDEX questions_in_order ON questions (session_id, asked_seq);

CREATE TABLE commands (
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    command_id TEXT NOT NULL,
    forward TEXT,
    at_ms INTEGER NOT NULL,
    forwarded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, command_id)
);
CREATE INDEX commands_outbox ON commands (session_id)
    WHERE forward IS NOT NULL AND forwarded = 0;
",
    },
    Migration {
        version: 2,
        name: "the log's head in its last event, not in the sessions row",
        // The log's head (last seq, highest gseq) was in the sessions row,
        // updated by every append: three b-tree pages written per event
        // (the event's row, its key, the sessions row). Now each event
        // carries the highest gseq of the log up to it, so the head is the
        // session's last event and an append writes the event alone. The
        // table stays a rowid table: clustered by its key (`WITHOUT
        // ROWID`), the large tool results move with every split of the
        // key's b-tree and a burst of 100 sessions is a third slower.
        sql: "
CREATE TABLE events_v2 (
    session_id TEXT NOT NULL REFERENCES sessions (session_id),
    seq INTEGER NOT NULL,
    gseq INTEGER,
    highest_gseq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
INSERT INTO events_v2 (session_id, seq, gseq, highest_gseq, at_ms, json)
    SELECT session_id, seq, gseq,
           max(coalesce(gseq, 0)) OVER (PARTITION BY session_id ORDER BY seq),
           at_ms, json
    FROM events;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
ALTER TABLE sessions DROP COLUMN last_seq;
ALTER TABLE sessions DROP COLUMN highest_gseq;
",
    },
    Migration {
        version: 3,
        name: "the event each turn-starting command's turn began with",
        // A gateway restarted after an agent's `session.init` cannot tell
        // from the log whether that event began a turn (a command waited
        // for it) or an agent resumed without a prompt: the turn's command
        // now records it.
        sql: "
ALTER TABLE commands ADD COLUMN turn_seq INTEGER;
",
    },
];

/// The validated migrations.
pub fn migrations() -> Result<Migrations> {
    Migrations::new(MIGRATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statements Durable Object SQLite refuses must never reach it.
    #[test]
    fn uses_nothing_durable_objects_refuse() {
        for m in MIGRATIONS {
            let sql = m.sql.to_ascii_uppercase();
            for refused in ["PRAGMA", "BEGIN", "SAVEPOINT", "TEMP ", "TEMPORARY", "_CF_"] {
                assert!(
                    !sql.contains(refused),
                    "migration {} uses {refused}",
                    m.version
                );
            }
        }
        assert_eq!(migrations().map(|m| m.latest()).ok(), Some(3));
    }
}
