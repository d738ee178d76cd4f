//! The run executor's SQLite schema, as numbered migration steps (`domain::basics::schema`).
//! The current build keeps its jobs in memory and writes nothing here: the `jobs` table
//! is what the builds before it wrote (a job per admission, kept until reported), and
//! what they still read during a rolling deployment. Its rows are cleared by the alarm
//! those builds set; a later step drops the table once no build reads it.
//!
//! Step 1 is the schema of the last build before versioning; a change is a new step at
//! the end, never an edit of a released one (the test below pins them).

use crate::domain::basics::schema::{Schema, Statement, Step};
use Statement::Sql;

pub const SCHEMA: Schema = Schema {
    object: "run executor",
    steps: &[
        Step {
            version: 1,
            statements: &[
                // A job (the gate and the lease, as JSON) per admission, and the attempt's
                // outcome once it is known and not yet reported.
                Sql("CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, job TEXT NOT NULL, attempt INTEGER, outcome TEXT)"),
            ],
        },
        // The same table `WITHOUT ROWID`: a job's row lives in its key's tree, so writing
        // it costs one row written instead of two.
        Step {
            version: 2,
            statements: &[
                Sql("CREATE TABLE jobs_2 (
    key TEXT PRIMARY KEY, job TEXT NOT NULL, attempt INTEGER, outcome TEXT) WITHOUT ROWID"),
                Sql("INSERT INTO jobs_2 (key, job, attempt, outcome) SELECT key, job, attempt, outcome FROM jobs"),
                Sql("DROP TABLE jobs"),
                Sql("ALTER TABLE jobs_2 RENAME TO jobs"),
            ],
        },
    ],
};

#[cfg(test)]
mod tests {
    #[test]
    fn released_steps_are_unchanged() {
        crate::domain::basics::schema::assert_released(
            &super::SCHEMA,
            &["8ea54e0de7f63ec8", "9c1ac242f8e84554"],
        );
    }
}
