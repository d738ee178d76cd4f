//! The queue gate's SQLite schema, as numbered migration steps (`domain::basics::schema`).
//! Durable: a lost lease row would let a slot be given twice (invariant 4), a lost
//! `waiting` row would leave a delivered run waiting for nothing.
//!
//! Step 1 is the schema of the last build before versioning; a change is a new step at
//! the end, never an edit of a released one (the test below pins them).

use crate::domain::basics::schema::{Schema, Statement, Step};
use Statement::Sql;

pub const SCHEMA: Schema = Schema {
    object: "queue gate",
    steps: &[
        Step {
            version: 1,
            statements: &[
                // `limit` (absent: unlimited), `limit_set_at`, `name`.
                Sql("CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
                // Runs waiting for a slot: the ticket as JSON, and the arrival order.
                Sql("CREATE TABLE IF NOT EXISTS waiting (run_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ticket TEXT NOT NULL)"),
                // Runs holding a slot: the lease as JSON.
                Sql("CREATE TABLE IF NOT EXISTS running (run_id TEXT PRIMARY KEY, lease TEXT NOT NULL)"),
            ],
        },
        // The same tables `WITHOUT ROWID`: each row lives in its key's tree, so writing one
        // costs one row written instead of two (the row, and its `TEXT PRIMARY KEY`'s
        // index).
        Step {
            version: 2,
            statements: &[
                Sql("CREATE TABLE waiting_2 (run_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ticket TEXT NOT NULL) WITHOUT ROWID"),
                Sql("INSERT INTO waiting_2 (run_id, seq, ticket) SELECT run_id, seq, ticket FROM waiting"),
                Sql("DROP TABLE waiting"),
                Sql("ALTER TABLE waiting_2 RENAME TO waiting"),
                Sql("CREATE TABLE running_2 (run_id TEXT PRIMARY KEY, lease TEXT NOT NULL) WITHOUT ROWID"),
                Sql("INSERT INTO running_2 (run_id, lease) SELECT run_id, lease FROM running"),
                Sql("DROP TABLE running"),
                Sql("ALTER TABLE running_2 RENAME TO running"),
            ],
        },
        // Waiting runs in line: keyed by (concurrency key, queued_at, seq), the order the
        // gate admits them in, so it reads a key's next runs a page at a time instead of
        // holding a whole backlog in memory. Still one row written per run that waits.
        // `key` and `queued_at` have defaults so that the build before, which writes only
        // (run_id, seq, ticket), still can (a rollback); its rows land at ('', 0, seq),
        // where `QueueGate::load` puts them in their places.
        Step {
            version: 3,
            statements: &[
                Sql("CREATE TABLE waiting_3 (
    key TEXT NOT NULL DEFAULT '', queued_at INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL,
    run_id TEXT NOT NULL, ticket TEXT NOT NULL,
    PRIMARY KEY (key, queued_at, seq)) WITHOUT ROWID"),
                Sql("INSERT INTO waiting_3 (key, queued_at, seq, run_id, ticket)
    SELECT json_extract(ticket, '$.concurrency_key'), json_extract(ticket, '$.queued_at'),
        seq, run_id, ticket FROM waiting"),
                Sql("DROP TABLE waiting"),
                Sql("ALTER TABLE waiting_3 RENAME TO waiting"),
            ],
        },
        // Leases a group per row (`domain::scheduling::lease_rows`): the leases admitted
        // together, as a JSON array, in a rowid table with no index. A hand of six costs one
        // row written to admit and one per release call, not one per run each. Rows of
        // `running` stay where they are and are deleted from there when their leases end.
        Step {
            version: 4,
            statements: &[Sql("CREATE TABLE leases (id INTEGER PRIMARY KEY, leases TEXT NOT NULL)")],
        },
    ],
};

#[cfg(test)]
mod tests {
    #[test]
    fn released_steps_are_unchanged() {
        crate::domain::basics::schema::assert_released(
            &super::SCHEMA,
            &[
                "d2627a6cad7d21f8",
                "e73d3b59e32aefb7",
                "5ecb77a544ef417e",
                "8b4d4c5ac998bf7c",
            ],
        );
    }
}
