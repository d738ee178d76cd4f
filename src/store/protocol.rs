//! The run store's protocol: commands the edge sends to a `RunStore` object and its
//! replies. Plain serde types (externally tagged, so raw JSON payloads pass through
//! without being buffered into a tree).

use serde::{Deserialize, Serialize};

use crate::domain::trigger::RunRequest;
use crate::domain::view::{BatchRecord, RunRecord};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreCommand {
    /// Create a batch and its runs atomically (API.md section 2).
    TriggerBatch(TriggerBatch),
    GetRun {
        run_id: String,
    },
    GetBatch {
        batch_id: String,
    },
    /// The queue consumer has received these runs: take them out of the outbox.
    Acknowledge {
        run_ids: Vec<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TriggerBatch {
    /// The object's own name, `<env>:<route>`, carried on queue messages.
    pub store: String,
    pub task: String,
    pub batch_id: String,
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

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreReply {
    Triggered {
        batch_id: String,
        runs: Vec<String>,
    },
    /// The batch key is held by a batch with another body.
    BatchKeyConflict,
    Run(Box<RunRecord>),
    Batch(BatchRecord),
    NotFound,
    Acknowledged {
        removed: usize,
    },
}
