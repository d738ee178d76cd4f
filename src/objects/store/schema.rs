//! The run store's SQLite schema, as numbered migration steps (`domain::basics::schema`). Every
//! table is durable state: losing any row would lose an accepted run or break an
//! idempotency promise.
//!
//! Step 1 is the schema of the last build before versioning, which ran its statements on
//! every start; it adopts stores that build made. A change of schema is a new step at the
//! end of [`SCHEMA`], never an edit of a released one (the test below pins them).

use crate::domain::basics::schema::{Schema, Statement, Step};
use Statement::{AddColumnIfMissing, Sql};

/// Every step of the run store's schema, oldest first.
pub const SCHEMA: Schema = Schema {
    object: "run store",
    steps: &[
        Step {
            version: 1,
            statements: STEP_1,
        },
        Step {
            version: 2,
            statements: STEP_2,
        },
        Step {
            version: 3,
            statements: STEP_3,
        },
        Step {
            version: 4,
            statements: STEP_4,
        },
        Step {
            version: 5,
            statements: STEP_5,
        },
        Step {
            version: 6,
            statements: STEP_6,
        },
        Step {
            version: 7,
            statements: STEP_7,
        },
        Step {
            version: 8,
            statements: STEP_8,
        },
        Step {
            version: 9,
            statements: STEP_9,
        },
        Step {
            version: 10,
            statements: STEP_10,
        },
        Step {
            version: 11,
            statements: STEP_11,
        },
    ],
};

/// The tables, the columns added to them after their first release, and the indexes.
const STEP_1: &[Statement] = &[
    // `name`: the object's own name, which queue messages carry back to it.
    Sql("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
    // One row per run. `payload`/`context` hold the caller's JSON text, or NULL with
    // `*_chunks > 0` when the text is split over `run_chunks` (rows are capped at 2 MB).
    Sql("CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        batch_id TEXT,
        idempotency_key TEXT,
        payload TEXT,
        payload_chunks INTEGER NOT NULL DEFAULT 0,
        payload_type TEXT NOT NULL,
        context TEXT,
        context_chunks INTEGER NOT NULL DEFAULT 0,
        queue TEXT NOT NULL,
        queue_limit INTEGER,
        concurrency_key TEXT,
        tags TEXT NOT NULL,
        ttl TEXT,
        ttl_ms INTEGER,
        delayed_until INTEGER,
        max_attempts INTEGER,
        metadata TEXT,
        machine TEXT,
        priority REAL,
        max_duration INTEGER,
        is_test INTEGER NOT NULL,
        trigger_function TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        queued_at INTEGER,
        started_at INTEGER,
        finished_at INTEGER,
        expired_at INTEGER,
        attempt_count INTEGER NOT NULL DEFAULT 0,
        output TEXT,
        error TEXT,
        expires_at INTEGER,
        retry_at INTEGER,
        lease_token INTEGER,
        retry TEXT
    )"),
    Sql("CREATE TABLE IF NOT EXISTS run_chunks (
        run_id TEXT NOT NULL,
        part TEXT NOT NULL,
        seq INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (run_id, part, seq)
    )"),
    // (task, key) → the run holding it. Whether it still holds depends on `expires_at`
    // and on the run's status (see domain::intake::idempotency).
    Sql("CREATE TABLE IF NOT EXISTS idempotency_keys (
        task TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (task, key)
    )"),
    // `version` 1: a seed-endpoint batch, its runs listed in `runs`. `version` 3: a
    // two-step batch of `run_count` items, received into `batch_items`; sealed when all
    // arrived, aborted when not sealed in time.
    Sql("CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        idempotency_key TEXT,
        runs TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        run_count INTEGER,
        sealed_at INTEGER,
        aborted_at INTEGER
    )"),
    // The items a two-step batch received (in the batch's own store): the run each made,
    // or why it made none.
    Sql("CREATE TABLE IF NOT EXISTS batch_items (
        batch_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        task TEXT NOT NULL,
        run_id TEXT,
        error TEXT,
        error_code TEXT,
        PRIMARY KEY (batch_id, idx)
    )"),
    // In the store of an item's task: the run each (batch, index) made, so a resent item
    // gets the same run.
    Sql("CREATE TABLE IF NOT EXISTS batch_runs (
        batch_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        run_id TEXT NOT NULL,
        PRIMARY KEY (batch_id, idx)
    )"),
    Sql("CREATE TABLE IF NOT EXISTS batch_keys (
        task TEXT NOT NULL,
        key TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        body_hash TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (task, key)
    )"),
    // The latest concurrencyLimit a trigger asked for, per queue (v3: create or update).
    Sql("CREATE TABLE IF NOT EXISTS queues (
        name TEXT PRIMARY KEY,
        concurrency_limit INTEGER,
        updated_at INTEGER NOT NULL
    )"),
    // Runs not yet acknowledged by the queue consumer. The alarm sends rows that are due
    // and never sent, and re-sends rows sent long ago without an acknowledgement.
    Sql("CREATE TABLE IF NOT EXISTS outbox (
        run_id TEXT PRIMARY KEY,
        due_at INTEGER NOT NULL,
        sent_at INTEGER
    )"),
    // Columns added after the tables' first release, for stores created before them.
    AddColumnIfMissing("ALTER TABLE runs ADD COLUMN expires_at INTEGER"),
    AddColumnIfMissing("ALTER TABLE runs ADD COLUMN retry_at INTEGER"),
    AddColumnIfMissing("ALTER TABLE runs ADD COLUMN lease_token INTEGER"),
    AddColumnIfMissing("ALTER TABLE runs ADD COLUMN retry TEXT"),
    AddColumnIfMissing("ALTER TABLE batches ADD COLUMN version INTEGER NOT NULL DEFAULT 1"),
    AddColumnIfMissing("ALTER TABLE batches ADD COLUMN run_count INTEGER"),
    AddColumnIfMissing("ALTER TABLE batches ADD COLUMN sealed_at INTEGER"),
    AddColumnIfMissing("ALTER TABLE batches ADD COLUMN aborted_at INTEGER"),
    // Indexes, created after the columns they cover exist.
    // Newest-first listing (GET /api/v1/runs) and its cursors.
    Sql("CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, id)"),
    // QUEUED runs with a TTL, for the expiry sweep.
    Sql("CREATE INDEX IF NOT EXISTS runs_expiry ON runs (expires_at) WHERE status = 'QUEUED' AND expires_at IS NOT NULL"),
];

/// The type of a run's output when it is not plain JSON (`application/super+json`: a
/// superjson document the SDKs decode).
const STEP_2: &[Statement] = &[Sql("ALTER TABLE runs ADD COLUMN output_type TEXT")];

/// The outbox holds deliveries instead of runs (`domain::run::delivery`): a row per group
/// of runs due together (their ids as a JSON array), sent as one message that names the
/// row by `seq`. A rowid table with no index: writing a row costs one row written. Rows of
/// the per-run outbox move over as deliveries of one run each.
const STEP_3: &[Statement] = &[
    Sql("CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY,
        due_at INTEGER NOT NULL,
        sent_at INTEGER,
        runs TEXT NOT NULL
    )"),
    Sql("INSERT INTO deliveries (due_at, sent_at, runs)
        SELECT due_at, sent_at, json_array(run_id) FROM outbox ORDER BY due_at"),
    Sql("DROP TABLE outbox"),
];

/// Idempotency keys `WITHOUT ROWID`: a key's row lives in its `(task, key)` tree, so a
/// keyed run costs one row written for its key instead of two.
const STEP_4: &[Statement] = &[
    Sql("CREATE TABLE idempotency_keys_2 (
        task TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (task, key)
    ) WITHOUT ROWID"),
    Sql(
        "INSERT INTO idempotency_keys_2 (task, key, run_id, expires_at)
        SELECT task, key, run_id, expires_at FROM idempotency_keys",
    ),
    Sql("DROP TABLE idempotency_keys"),
    Sql("ALTER TABLE idempotency_keys_2 RENAME TO idempotency_keys"),
];

/// Runs `WITHOUT ROWID`: a run's row lives in its id's tree instead of a rowid table
/// beside a separate index of ids, so accepting a run costs two rows written (the row and
/// the listing index) instead of three. Ids are led by the clock after their route
/// (`domain::basics::ids`), so a store's new rows land in one narrow range of the tree.
/// The copy is done once per store; the indexes are made again on the new table.
const STEP_5: &[Statement] = &[
    Sql("CREATE TABLE runs_5 (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        batch_id TEXT,
        idempotency_key TEXT,
        payload TEXT,
        payload_chunks INTEGER NOT NULL DEFAULT 0,
        payload_type TEXT NOT NULL,
        context TEXT,
        context_chunks INTEGER NOT NULL DEFAULT 0,
        queue TEXT NOT NULL,
        queue_limit INTEGER,
        concurrency_key TEXT,
        tags TEXT NOT NULL,
        ttl TEXT,
        ttl_ms INTEGER,
        delayed_until INTEGER,
        max_attempts INTEGER,
        metadata TEXT,
        machine TEXT,
        priority REAL,
        max_duration INTEGER,
        is_test INTEGER NOT NULL,
        trigger_function TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        queued_at INTEGER,
        started_at INTEGER,
        finished_at INTEGER,
        expired_at INTEGER,
        attempt_count INTEGER NOT NULL DEFAULT 0,
        output TEXT,
        error TEXT,
        expires_at INTEGER,
        retry_at INTEGER,
        lease_token INTEGER,
        retry TEXT,
        output_type TEXT
    ) WITHOUT ROWID"),
    Sql("INSERT INTO runs_5 (id, task, status, batch_id, idempotency_key, payload,
        payload_chunks, payload_type, context, context_chunks, queue, queue_limit,
        concurrency_key, tags, ttl, ttl_ms, delayed_until, max_attempts, metadata, machine,
        priority, max_duration, is_test, trigger_function, created_at, updated_at,
        queued_at, started_at, finished_at, expired_at, attempt_count, output, error,
        expires_at, retry_at, lease_token, retry, output_type)
    SELECT id, task, status, batch_id, idempotency_key, payload,
        payload_chunks, payload_type, context, context_chunks, queue, queue_limit,
        concurrency_key, tags, ttl, ttl_ms, delayed_until, max_attempts, metadata, machine,
        priority, max_duration, is_test, trigger_function, created_at, updated_at,
        queued_at, started_at, finished_at, expired_at, attempt_count, output, error,
        expires_at, retry_at, lease_token, retry, output_type FROM runs"),
    Sql("DROP TABLE runs"),
    Sql("ALTER TABLE runs_5 RENAME TO runs"),
    Sql("CREATE INDEX runs_created ON runs (created_at, id)"),
    Sql("CREATE INDEX runs_expiry ON runs (expires_at) WHERE status = 'QUEUED' AND expires_at IS NOT NULL"),
];

/// The listing (`GET /api/v1/runs`, newest first) reads a row per accept instead of an
/// index entry per run: the runs an accept created share their `created_at`, so a row
/// `(at, first, ids)` (the time, the least id as a tie-break, the ids as a JSON array)
/// lists them all, and a batch of 100 costs one row written for its listing instead of
/// 100. The list walks these rows newest first and sorts each one's runs by id
/// (`RunStore::list`). Existing runs get their rows here, and the index goes.
const STEP_6: &[Statement] = &[
    Sql("CREATE TABLE listing (
        at INTEGER NOT NULL,
        first TEXT NOT NULL,
        ids TEXT NOT NULL,
        PRIMARY KEY (at, first)
    ) WITHOUT ROWID"),
    Sql("INSERT INTO listing (at, first, ids)
        SELECT created_at, min(id), json_group_array(id) FROM runs GROUP BY created_at"),
    Sql("DROP INDEX runs_created"),
];

/// Debounce keys (`domain::intake::debounce`): a key's run, and the latest its start may
/// be pushed to. Written only by debounced triggers (one row when a key makes a run);
/// a key whose run left `DELAYED` is replaced by the next run it makes.
const STEP_7: &[Statement] = &[Sql("CREATE TABLE debounce_keys (
        task TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        latest INTEGER NOT NULL,
        PRIMARY KEY (task, key)
    ) WITHOUT ROWID")];

/// Bulk actions' progress in this store (`domain::api::bulk`): where the action's walk
/// over its runs here got to, and its counts, written in the transaction that acts on a
/// page. One row per action that reached the store.
const STEP_8: &[Statement] = &[Sql("CREATE TABLE bulk_progress (
        bulk_id TEXT PRIMARY KEY,
        cursor TEXT,
        total INTEGER NOT NULL,
        success INTEGER NOT NULL,
        failure INTEGER NOT NULL,
        done INTEGER NOT NULL
    ) WITHOUT ROWID")];

/// Each attempt's own record, for the run's timeline (`attempts` in the run's answer):
/// when the current attempt started, and the ended attempts as a JSON array, each
/// appended by the statement that ends the attempt. Columns of the run's row, written
/// by statements that write it anyway: no row written more per run.
const STEP_9: &[Statement] = &[
    Sql("ALTER TABLE runs ADD COLUMN attempt_started_at INTEGER"),
    Sql("ALTER TABLE runs ADD COLUMN attempts TEXT"),
];

/// Runs created, completed and failed per minute (`domain::api::activity`): a row per
/// minute that had any, written when the minute is over from the store's tally in
/// memory; kept a day.
const STEP_10: &[Statement] = &[Sql("CREATE TABLE activity (
        minute INTEGER PRIMARY KEY,
        created INTEGER NOT NULL,
        completed INTEGER NOT NULL,
        failed INTEGER NOT NULL
    )")];

/// Runs' write-once options in one row per accept (`domain::run::body`): a run made since
/// names its item's byte range in a `run_bodies` row (a rowid table with no index, so an
/// accept writes one row for all its runs' options), and its own row leaves those columns
/// empty: `NULL`, or `''` where step 1 made them `NOT NULL` (`payload_type`,
/// `trigger_function`), and `payload_chunks` -1 while the payload is in the body. Earlier
/// runs, a single trigger's run and runs whose options are too large for a body keep them
/// in their row.
const STEP_11: &[Statement] = &[
    Sql("CREATE TABLE run_bodies (seq INTEGER PRIMARY KEY, items BLOB NOT NULL)"),
    Sql("ALTER TABLE runs ADD COLUMN body INTEGER"),
    Sql("ALTER TABLE runs ADD COLUMN body_at INTEGER"),
    Sql("ALTER TABLE runs ADD COLUMN body_len INTEGER"),
];

/// A run's body item as text, or `NULL` when its options are in its row: an expression
/// over `runs` (schema step 11).
macro_rules! body_item {
    () => {
        "(SELECT CAST(substr(b.items, runs.body_at, runs.body_len) AS TEXT)
            FROM run_bodies b WHERE b.seq = runs.body)"
    };
}
pub(super) use body_item;
pub const BODY_ITEM: &str = body_item!();

/// `payload_chunks` of a run whose payload is in its body item.
pub const PAYLOAD_IN_BODY: i64 = -1;

/// `attempts` with the attempt ending in this statement appended: its number, the status
/// it ended with (first `?`), its start, its end (second `?`, bound as a JavaScript
/// number: cast, or JSON would write it as `1.0`) and its error as JSON (third `?`, or
/// `NULL`). Statements assign it: `attempts = {ATTEMPTS_APPENDED}`.
pub const ATTEMPTS_APPENDED: &str = "json_insert(COALESCE(attempts, '[]'), '$[#]',
    json_object('n', attempt_count, 'status', ?, 'startedAt', attempt_started_at,
        'endedAt', CAST(? AS INTEGER), 'error', json(?)))";

/// Rows of `payload`/`context` text beyond this size are split into `run_chunks`.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The start of a (multi-row) `INSERT INTO runs`, its columns in the order `RunStore`
/// binds them; `RUN_COLUMNS` values per row follow.
pub const INSERT_RUN_INTO: &str = "INSERT INTO runs (
    id, task, status, batch_id, idempotency_key, payload, payload_chunks, payload_type,
    context, context_chunks, queue, queue_limit, concurrency_key, tags, ttl, ttl_ms,
    delayed_until, max_attempts, metadata, machine, priority, max_duration, is_test,
    trigger_function, created_at, updated_at, queued_at, expires_at, retry, body, body_at, body_len
)";
pub const RUN_COLUMNS: usize = 32;
const _: () = assert!(
    RUN_COLUMNS <= 100,
    "SQL statements take at most 100 parameters"
);

pub const SELECT_RUN: &str = concat!(
    "SELECT id, task, status, batch_id, idempotency_key, payload,
    payload_chunks, payload_type, queue, concurrency_key, tags, ttl, delayed_until,
    created_at, updated_at, started_at, finished_at, expired_at, metadata, is_test,
    trigger_function, attempt_count, output, error, output_type, attempt_started_at, attempts, ",
    body_item!(),
    " AS body_item FROM runs WHERE id = ?"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_row_binds_one_parameter_per_column_within_the_limit() {
        let columns = INSERT_RUN_INTO
            .split('(')
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        assert_eq!(columns.split(',').count(), RUN_COLUMNS);
    }

    #[test]
    fn released_steps_are_unchanged() {
        crate::domain::basics::schema::assert_released(
            &SCHEMA,
            &[
                "002e7b9a9d16d24e",
                "2ec380c9ef23121c",
                "9bade3280e0fdb3d",
                "43f2d197b7fe9b08",
                "6e798e06cb1866a6",
                "64c8470e29e9e43c",
                "545563e2b927c656",
                "166dfc6e7f3ce422",
                "51fee0ea9fa6dc10",
                "bc37a2d04ba17c8f",
                "6fc7a6065c427b69",
            ],
        );
    }
}
