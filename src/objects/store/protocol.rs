//! The run store's protocol: commands the edge, the consumer, the gates and the executors
//! send to a `RunStore` object, and its replies. Plain serde types, externally tagged so
//! raw JSON payloads pass through without being buffered into a tree.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::api::activity::Counts;
use crate::domain::api::bulk::{BulkKind, StepCounts};
use crate::domain::api::list::{Page, RunFilter};
use crate::domain::api::view::{BatchRecord, RunRecord};
use crate::domain::basics::time::Millis;
use crate::domain::config::RetryPolicy;
use crate::domain::intake::idempotency::IdempotencyKey;
use crate::domain::intake::trigger::RunRequest;
use crate::domain::run::metadata::Update;
use crate::domain::run::status::RunStatus;
use crate::platform::rpc;

/// Every command a store takes. Each variant holds its command's struct, which names the
/// reply it gets (`rpc::Command`, declared by `commands!`); on the wire a variant is `{"<snake_case name>": {…}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreCommand {
    TriggerBatch(TriggerBatch),
    GetRun(GetRun),
    GetBatch(GetBatch),
    Claim(Claim),
    Acknowledge(Acknowledge),
    StartAttempts(StartAttempts),
    FinishAttempts(FinishAttempts),
    LeaseExpired(LeaseExpired),
    Cancel(Cancel),
    Replay(Replay),
    Reschedule(Reschedule),
    ResetIdempotencyKey(ResetIdempotencyKey),
    CreateBatch(CreateBatch),
    RecordBatchItems(RecordBatchItems),
    ListRuns(ListRuns),
    ListQueues(ListQueues),
    GetMetadata(GetMetadata),
    UpdateMetadata(UpdateMetadata),
    AddTags(AddTags),
    GetResults(GetResults),
    BulkStep(BulkStep),
    GetActivity(GetActivity),
}

/// The run store's side of the wire.
pub struct Store;

impl rpc::Protocol for Store {
    const BINDING: &'static str = "RUN_STORE";
    type Envelope = StoreCommand;
}

crate::commands!(Store => StoreCommand {
    TriggerBatch => TriggerReply,
    GetRun => RunReply,
    GetBatch => BatchReply,
    Claim => Claimed,
    Acknowledge => (),
    StartAttempts => Vec<StartReply>,
    FinishAttempts => Vec<FinishReply>,
    LeaseExpired => LeaseExpiredReply,
    Cancel => CancelReply,
    Replay => ReplayReply,
    Reschedule => RescheduleReply,
    ResetIdempotencyKey => KeyReset,
    CreateBatch => BatchCreated,
    RecordBatchItems => RecordReply,
    ListRuns => Vec<RunRecord>,
    ListQueues => Vec<String>,
    GetMetadata => MetadataReply,
    UpdateMetadata => MetadataReply,
    AddTags => TagsReply,
    GetResults => Vec<RunRecord>,
    BulkStep => BulkStepReply,
    GetActivity => Vec<(Millis, Counts)>,
});

/// This store's runs created, completed and failed per minute, from `since` on.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetActivity {
    pub since: Millis,
}

/// The next page of a bulk action's runs in this store (`domain::api::bulk`): acted on,
/// with the store's own cursor and counts for the action, in one transaction.
#[derive(Debug, Serialize, Deserialize)]
pub struct BulkStep {
    pub bulk_id: String,
    pub kind: BulkKind,
    /// The runs a filter selects here, or (`None`) the ids given.
    pub filter: Option<RunFilter>,
    #[serde(default)]
    pub run_ids: Vec<String>,
    /// Runs to act on in this step, at most.
    pub limit: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BulkStepReply {
    pub counts: StepCounts,
    /// Runs cancelled while they waited at a gate or held a slot there: (queue,
    /// concurrency key, run id), for the caller to free at their gates.
    #[serde(default)]
    pub removals: Vec<(String, Option<String>, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetRun {
    pub run_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetBatch {
    pub batch_id: String,
}

/// The consumer received these runs: which of them should go to their queue's gate?
#[derive(Debug, Serialize, Deserialize)]
pub struct Claim {
    pub run_ids: Vec<String>,
}

/// The gates hold these runs now: take their delivery out of the outbox, if it was sent by
/// `claimed_at` (a row sent again since is a newer delivery of them).
#[derive(Debug, Serialize, Deserialize)]
pub struct Acknowledge {
    /// The outbox rows the message delivered (none in a message of an earlier build).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<i64>,
    pub claimed_at: Millis,
}

/// Executors holding these leases (run id, token) want to start the runs' next
/// attempts; one reply each, in order.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartAttempts {
    pub starts: Vec<(String, u64)>,
}

/// These attempts ended (one call for all an executor reports at once); one reply each.
#[derive(Debug, Serialize, Deserialize)]
pub struct FinishAttempts {
    pub finishes: Vec<Finish>,
}

/// A gate reclaimed lease `token`: its holder is presumed dead.
#[derive(Debug, Serialize, Deserialize)]
pub struct LeaseExpired {
    pub run_id: String,
    pub token: u64,
}

/// `POST /api/v2/runs/{id}/cancel`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cancel {
    pub run_id: String,
}

/// `POST /api/v1/runs/{id}/replay`: a new run `new_run_id` with the same task, payload,
/// options and tags.
#[derive(Debug, Serialize, Deserialize)]
pub struct Replay {
    pub run_id: String,
    pub new_run_id: String,
}

/// `POST /api/v1/runs/{id}/reschedule`: a delayed run's new time.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reschedule {
    pub run_id: String,
    pub delay_until: Millis,
}

/// `POST /api/v1/idempotencyKeys/{key}/reset`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResetIdempotencyKey {
    pub task: String,
    pub key: String,
}

/// `POST /api/v3/batches`: a two-step batch of `run_count` items, recorded here.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateBatch {
    pub batch_id: String,
    pub run_count: usize,
    pub key: Option<BatchKey>,
}

/// Items of a two-step batch were stored in their tasks' stores (or failed).
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordBatchItems {
    pub batch_id: String,
    pub entries: Vec<BatchEntry>,
}

/// This store's page of `GET /api/v1/runs`: at most `limit` runs, in the page's order.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListRuns {
    pub filter: RunFilter,
    pub page: Page,
    pub limit: usize,
}

/// The names of the queues this store's runs were triggered on (`GET /api/v1/queues`
/// lists them beside the declared ones).
#[derive(Debug, Serialize, Deserialize)]
pub struct ListQueues {}

/// The finished runs among `run_ids`, in their order, without payloads: their execution
/// results (docs/API.md section 4).
#[derive(Debug, Serialize, Deserialize)]
pub struct GetResults {
    pub run_ids: Vec<String>,
}

/// A run's metadata (docs/API.md section 5).
#[derive(Debug, Serialize, Deserialize)]
pub struct GetMetadata {
    pub run_id: String,
}

/// Changes a run's metadata, in one step of its store (`domain::run::metadata`).
#[derive(Debug, Serialize, Deserialize)]
pub struct UpdateMetadata {
    pub run_id: String,
    pub update: Update,
}

/// The run's metadata as stored (JSON text; `None`: none), or why not.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataReply {
    Metadata(Option<String>),
    NotFound,
    /// The change cannot apply: a validation error's field and reason.
    Refused {
        path: String,
        reason: String,
    },
}

/// Adds tags to a run (docs/API.md section 5).
#[derive(Debug, Serialize, Deserialize)]
pub struct AddTags {
    pub run_id: String,
    pub tags: Vec<String>,
}

/// The run's tags afterwards and how many were new, or why not.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagsReply {
    Tags { tags: Vec<String>, added: usize },
    NotFound,
    Refused { path: String, reason: String },
}

/// Create a batch and its runs atomically (docs/API.md section 2).
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
    /// The task's backoff, which every run this command creates keeps (a command from a
    /// build before this field gets the default, as its runs' empty column did).
    #[serde(default)]
    pub retry: RetryPolicy,
    pub batch_key: Option<BatchKey>,
    /// `batchTrigger` or `trigger`.
    pub trigger_function: String,
}

/// A batch-level `idempotency-key` header.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchKey {
    pub key: IdempotencyKey,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The endpoint answered 2xx; its JSON body (absent when empty), and its type when it
    /// is not plain JSON (`application/super+json`).
    Succeeded {
        output: Option<Box<RawValue>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_type: Option<String>,
    },
    /// Anything else: `{"name", "message", "stack"?}`; `retry: false` ends the run now.
    Failed {
        error: Box<RawValue>,
        #[serde(default = "retry_by_default")]
        retry: bool,
    },
}

/// Outcomes kept by builds before `retry` existed leave it to the retry policy.
fn retry_by_default() -> bool {
    true
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
    /// Its priority (`options.priority`, seconds) in milliseconds: it waits as if queued
    /// that much earlier.
    #[serde(default)]
    pub priority_ms: u64,
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
    /// Attempts it may make in all (its `maxAttempts`).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub is_test: bool,
}

fn default_max_attempts() -> u32 {
    crate::domain::config::DEFAULT_MAX_ATTEMPTS
}

// Replies, one type per command. Variants keep the names the single reply enum of
// earlier builds gave them, so a call between builds during a deploy still reads.

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerReply {
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
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunReply {
    Run(Box<RunRecord>),
    NotFound,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchReply {
    Batch(BatchRecord),
    NotFound,
}

/// The claimed runs, and the store's clock at the claim (for the acknowledgement).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claimed {
    pub runs: Vec<ClaimedRun>,
    pub at: Millis,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartReply {
    Started(Box<AttemptStart>),
    /// The executor holding this lease already started attempt `attempt` and restarted.
    AlreadyStarted {
        attempt: u32,
    },
    /// The run may not start (cancelled, expired, finished, or not due).
    NotStartable {
        status: RunStatus,
    },
    NotFound,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReply {
    /// The attempt's result was recorded; the run is now `status`.
    Finished {
        status: RunStatus,
    },
    /// The report was late (the run moved on): nothing changed.
    Ignored {
        status: RunStatus,
    },
    NotFound,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseExpiredReply {
    /// The lease ended before its run started: the gate should queue it again.
    Requeue,
    /// What became of the attempt it held, as for a reported failure: failed (and
    /// retried, or the run ended), or nothing, the run having moved on or gone.
    Attempt(FinishReply),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReply {
    Canceled {
        previous: RunStatus,
        queue: String,
        /// Which of the queue's gates holds the run (absent from stores of builds
        /// before gate shards: they had one gate per queue).
        #[serde(default)]
        concurrency_key: Option<String>,
    },
    AlreadyFinal {
        status: RunStatus,
    },
    NotFound,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayReply {
    Replayed { id: String },
    NotFound,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RescheduleReply {
    /// The run, moved.
    Run(Box<RunRecord>),
    /// It is not `DELAYED`.
    NotDelayed,
    NotFound,
}

/// Whether a run held the key (and no longer does).
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyReset {
    pub removed: bool,
}

/// A two-step batch; `cached` when its idempotency key already named it.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchCreated {
    pub batch_id: String,
    pub run_count: usize,
    pub cached: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordReply {
    ItemsRecorded {
        accepted: usize,
        deduplicated: usize,
        sealed: bool,
    },
    /// The two-step batch was aborted: it was not sealed in time.
    BatchAborted,
    NotFound,
}
