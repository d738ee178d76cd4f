//! The queue gate's SQLite schema, as numbered migration steps (`domain::basics::schema`).
//! Durable: a lost `running` row would let a slot be given twice (invariant 4), a lost
//! `waiting` row would leave a delivered run waiting for nothing.
//!
//! Step 1 is the schema of the last build before versioning; a change is a new step at
//! the end, never an edit of a released one (the test below pins them).

use crate::domain::basics::schema::{Schema, Statement, Step};
use Statement::Sql;

pub const SCHEMA: Schema = Schema {
    object: "queue gate",
    steps: &[Step {
        version: 1,
        statements: &[
            // `limit` (absent: unlimited), `limit_set_at`, `name`.
            Sql("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
            // Runs waiting for a slot: the ticket as JSON, and the arrival order.
            Sql("CREATE TABLE IF NOT EXISTS waiting (run_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ticket TEXT NOT NULL)"),
            // Runs holding a slot: the lease as JSON.
            Sql("CREATE TABLE IF NOT EXISTS running (run_id TEXT PRIMARY KEY, lease TEXT NOT NULL)"),
        ],
    }],
};

#[cfg(test)]
mod tests {
    #[test]
    fn released_steps_are_unchanged() {
        crate::domain::basics::schema::assert_released(&super::SCHEMA, &["d2627a6cad7d21f8"]);
    }
}
