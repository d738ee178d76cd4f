//! The bulk actions object's SQLite schema, as numbered migration steps
//! (`domain::basics::schema`). A change is a new step at the end, never an edit of a
//! released one (the test below pins them).

use crate::domain::basics::schema::{Schema, Statement, Step};
use Statement::Sql;

pub const SCHEMA: Schema = Schema {
    object: "bulk actions",
    steps: &[Step {
        version: 1,
        statements: &[
            // `env`: the environment's slug.
            Sql("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"),
            // One row per action: its state as JSON (`domain::api::bulk::BulkAction`),
            // rewritten after each step; `status` and `created_at` beside it for the list.
            Sql("CREATE TABLE bulk_actions (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, status TEXT NOT NULL, action TEXT NOT NULL
) WITHOUT ROWID"),
        ],
    }],
};

#[cfg(test)]
mod tests {
    #[test]
    fn released_steps_are_unchanged() {
        crate::domain::basics::schema::assert_released(&super::SCHEMA, &["c54b69f4d1096352"]);
    }
}
