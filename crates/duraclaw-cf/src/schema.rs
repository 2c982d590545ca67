//! The DO-SQL schema: the same migrations as every SQL session store.

pub use duraclaw_core::backend::schema::{MIGRATIONS, migrations};
