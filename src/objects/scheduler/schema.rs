//! The scheduler's SQLite schema, as numbered migration steps (`domain::basics::schema`).
//! A change is a new step at the end, never an edit of a released one (the test below
//! pins them).

use crate::domain::basics::schema::{Schema, Statement, Step};
use Statement::Sql;

pub const SCHEMA: Schema = Schema {
    object: "scheduler",
    steps: &[Step {
        version: 1,
        statements: &[
            // `env` (the environment's slug), `declared` (the declarations last applied).
            Sql("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"),
            // One row per schedule. `next_tick` is kept while active; the alarm is the
            // earliest of them. No index on it: a tick reads every schedule of the
            // environment, and writes one row per schedule that fired.
            Sql("CREATE TABLE schedules (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, task TEXT NOT NULL, cron TEXT NOT NULL,
    timezone TEXT NOT NULL, dedup_key TEXT, external_id TEXT, active INTEGER NOT NULL,
    created_at INTEGER NOT NULL, last_tick INTEGER, next_tick INTEGER) WITHOUT ROWID"),
            // One imperative schedule per deduplication key.
            Sql("CREATE UNIQUE INDEX schedules_by_key ON schedules (dedup_key) WHERE dedup_key IS NOT NULL"),
        ],
    }],
};

#[cfg(test)]
mod tests {
    #[test]
    fn released_steps_are_unchanged() {
        crate::domain::basics::schema::assert_released(&super::SCHEMA, &["dc3e85903f501246"]);
    }
}
