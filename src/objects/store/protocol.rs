//! The run store's protocol: commands the edge, the consumer, the gates and the executors
//! send to a `RunStore` object, and its replies. Plain serde types, externally tagged so
//! raw JSON payloads pass through without being buffered into a tree.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::api::list::{Page, RunFilter};
use crate::domain::api::view::{BatchRecord, RunRecord};
use crate::domain::basics::time::Millis;
use crate::domain::intake::trigger::RunRequest;
use crate::domain::run::status::RunStatus;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreCommand {
    /// Create a batch and its runs atomically (docs/API.md section 2).
    TriggerBatch(TriggerBatch),
    GetRun {
        run_id: String,
    },
    GetBatch {
        batch_id: String,
    },
    /// The consumer received these runs: which of them should go to their queue's gate?
    Claim {
        run_ids: Vec<String>,
    },
    /// The gates hold these runs now: take them out of the outbox, the rows that were
    /// sent by `claimed_at` only (a row written since is a newer delivery of the run).
    Acknowledge {
        run_ids: Vec<String>,
        claimed_at: Millis,
    },
    /// Executors holding these leases (run id, token) want to start the runs' next
    /// attempts; one reply each (`Each`).
    StartAttempts {
        starts: Vec<(String, u64)>,
    },
    /// These attempts ended (one call for all an executor reports at once).
    FinishAttempts {
        finishes: Vec<Finish>,
    },
    /// A gate reclaimed lease `token`: its holder is presumed dead.
    LeaseExpired {
        run_id: String,
        token: u64,
    },
    /// `POST /api/v2/runs/{id}/cancel`.
    Cancel {
        run_id: String,
    },
    /// `POST /api/v1/runs/{id}/replay`: a new run `new_run_id` with the same task, payload,
    /// options and tags.
    Replay {
        run_id: String,
        new_run_id: String,
    },
    /// `POST /api/v1/runs/{id}/reschedule`: a delayed run's new time.
    Reschedule {
        run_id: String,
        delay_until: Millis,
    },
    /// `POST /api/v1/idempotencyKeys/{key}/reset`.
    ResetIdempotencyKey {
        task: String,
        key: String,
    },
    /// `POST /api/v3/batches`: a two-step batch of `run_count` items, recorded here.
    CreateBatch {
        batch_id: String,
        run_count: usize,
        key: Option<BatchKey>,
    },
    /// Items of a two-step batch were stored in their tasks' stores (or failed).
    RecordBatchItems {
        batch_id: String,
        entries: Vec<BatchEntry>,
    },
    /// This store's page of `GET /api/v1/runs`: at most `limit` runs, in the page's order.
    ListRuns {
        filter: RunFilter,
        page: Page,
        limit: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TriggerBatch {
    /// The object's own name, `<env>:<route>`, carried on queue messages.
    pub store: String,
    pub task: String,
    /// `None` for a single trigger (`POST /api/v1/tasks/{task}/trigger`): no batch record.
    pub batch_id: Option<String>,
    /// Items of a two-step batch recorded in another store: item i's index in that batch.
    /// A resent index gets the run it made first; no batch record is written here.
    pub batch_items: Option<Vec<u32>>,
    /// One fresh id per item, used by the items that create a run.
    pub run_ids: Vec<String>,
    pub items: Vec<RunRequest>,
    pub batch_key: Option<BatchKey>,
    /// `batchTrigger` or `trigger`.
    pub trigger_function: String,
}

/// A batch-level `idempotency-key` header.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchKey {
    pub key: String,
    pub ttl_ms: u64,
    /// SHA-256 of the request body, hex: a repeat with another body is a conflict.
    pub body_hash: String,
}

/// One received item of a two-step batch: the run it made, or why it made none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEntry {
    pub index: u32,
    pub task: String,
    pub run_id: Option<String>,
    pub error: Option<String>,
    pub error_code: Option<String>,
}

/// How an attempt ended, as the executor saw it.
/// Attempt `attempt` of run `run_id` ended with `outcome`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Finish {
    pub run_id: String,
    pub attempt: u32,
    pub outcome: AttemptOutcome,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The endpoint answered 2xx; its JSON body (absent when empty).
    Succeeded { output: Option<Box<RawValue>> },
    /// Anything else: `{"name", "message"}`.
    Failed { error: Box<RawValue> },
}

/// A run the consumer may offer to its queue's gate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedRun {
    pub run_id: String,
    pub queue: String,
    pub concurrency_key: Option<String>,
    /// The `concurrencyLimit` its trigger asked for, and when (the newest wins).
    pub queue_limit: Option<u32>,
    pub limit_set_at: Millis,
    /// When it (re-)entered the queue: FIFO order.
    pub queued_at: Millis,
    /// The end of its TTL, if any.
    pub expires_at: Option<Millis>,
    pub max_duration_secs: u32,
}

/// What an executor needs to make the call.
#[derive(Debug, Serialize, Deserialize)]
pub struct AttemptStart {
    pub run_id: String,
    pub task: String,
    pub attempt: u32,
    pub payload: Option<Box<RawValue>>,
    pub payload_type: String,
    pub context: Option<Box<RawValue>>,
    pub tags: Vec<String>,
    pub batch_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub queue: String,
    pub concurrency_key: Option<String>,
    pub created_at: Millis,
    pub max_duration_secs: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreReply {
    /// One id per item, and whether that item reused an existing run.
    Triggered {
        batch_id: Option<String>,
        runs: Vec<String>,
        cached: Vec<bool>,
        /// The runs this call created that may start now, for the edge to offer to their
        /// gates at once (the queue delivers them too: the fast path is only faster).
        ready: Vec<ClaimedRun>,
    },
    /// The batch key is held by a batch with another body.
    BatchKeyConflict,
    Run(Box<RunRecord>),
    Batch(BatchRecord),
    NotFound,
    Claimed {
        runs: Vec<ClaimedRun>,
        /// The store's clock at the claim, for the acknowledgement.
        at: Millis,
    },
    Acknowledged,
    Started(Box<AttemptStart>),
    /// The executor holding this lease already started attempt `attempt` and restarted.
    AlreadyStarted {
        attempt: u32,
    },
    /// The run may not start (cancelled, expired, finished, or not due).
    NotStartable {
        status: RunStatus,
    },
    /// The attempt's result was recorded; the run is now `status`.
    Finished {
        status: RunStatus,
    },
    /// One reply per item of a command on several runs, in order.
    Each(Vec<StoreReply>),
    /// The report was late (the run moved on): nothing changed.
    Ignored {
        status: RunStatus,
    },
    /// The lease ended before its run started: the gate should queue it again.
    Requeue,
    Canceled {
        previous: RunStatus,
        queue: String,
    },
    AlreadyFinal {
        status: RunStatus,
    },
    Replayed {
        id: String,
    },
    /// Reschedule of a run that is not `DELAYED`.
    NotDelayed,
    KeyReset {
        removed: bool,
    },
    Listed {
        runs: Vec<RunRecord>,
    },
    /// A two-step batch; `cached` when its idempotency key already named it.
    BatchCreated {
        batch_id: String,
        run_count: usize,
        cached: bool,
    },
    ItemsRecorded {
        accepted: usize,
        deduplicated: usize,
        sealed: bool,
    },
    /// The two-step batch was aborted: it was not sealed in time.
    BatchAborted,
}
