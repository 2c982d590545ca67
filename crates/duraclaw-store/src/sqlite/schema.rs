//! The SQLite schema: the same migrations as every SQL session store (one
//! database here holds every session, each table keyed by `session_id`).

pub(crate) use duraclaw_core::backend::schema::{MIGRATIONS, migrations};
