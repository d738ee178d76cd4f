//! `RunStore`: the Durable Object that owns the runs, batches, idempotency keys, queue
//! limits and delivery outbox of one environment's tasks on one route
//! (`<env>:<route>`, see `domain::basics::ids::StoreRoute`).
//!
//! Invariants kept here:
//! - A batch commits in one `transactionSync`: all its runs, keys and outbox rows, or
//!   nothing (invariants 1 and 2, docs/ARCHITECTURE.md).
//! - Idempotency decisions read and write with no await in between, so the object's input
//!   gate serialises racing requests for a key (invariant 3).
//! - Every accepted run has an outbox row until the consumer acknowledges it, and an alarm
//!   is armed whenever the outbox is not empty (invariant 1).

mod accept;
mod batches;
pub mod client;
mod delivery;
mod lifecycle;
mod manage;
pub mod protocol;
mod read;
pub mod schema;

use std::cell::Cell;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use crate::domain::basics::time::Millis;
use crate::objects::group_commit::GroupCommit;
use crate::platform::rpc;
use crate::platform::runtime::{ensure_alarm, internal, now};
use crate::platform::sql::Migrated;
use protocol::{StoreCommand, StoreReply, TriggerBatch};

/// The queue binding that carries run references to the consumer.
pub const RUNS_QUEUE: &str = "RUNS";

/// Outbox rows the alarm handles per wake-up; it re-arms at once when more remain.
const ALARM_BATCH: usize = 5000;

#[durable_object(alarm)]
pub struct RunStore {
    state: State,
    env: Env,
    /// The alarm time this object last set, if known. Memory only: after a restart it is
    /// unknown and the next write sets the alarm again.
    alarm_at: Cell<Option<Millis>>,
    /// Whether the schema migration succeeded when the object started.
    migrated: Migrated,
    /// Triggers waiting to be accepted with their group (see `trigger_batch`).
    triggers: GroupCommit<TriggerBatch, std::result::Result<StoreReply, String>>,
}

/// A uniform random number in [0, 1), for retry jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_or(0.5, |_| {
        (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
    })
}

impl DurableObject for RunStore {
    fn new(state: State, env: Env) -> Self {
        let migrated = Migrated::start(&state.storage(), &schema::SCHEMA);
        RunStore {
            state,
            env,
            migrated,
            alarm_at: Cell::new(None),
            triggers: GroupCommit::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        rpc::fetched(self.handle(&req.bytes().await?).await)
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm_at.set(None);
        self.migrated.ready()?;
        self.deliver_due().await?;
        Response::ok("")
    }
}

crate::export_command!(RunStore);

impl RunStore {
    /// Answers one command from a caller (`rpc::call`).
    async fn handle(&self, command: &[u8]) -> Result<String> {
        self.migrated.ready()?;
        let reply = match rpc::command::<StoreCommand>(command, "store command")? {
            StoreCommand::TriggerBatch(cmd) => self.trigger_batch(cmd).await?,
            StoreCommand::GetRun { run_id } => self.get_run(&run_id)?,
            StoreCommand::GetBatch { batch_id } => self.get_batch(&batch_id)?,
            StoreCommand::Claim { run_ids } => self.claim(&run_ids)?,
            StoreCommand::Acknowledge {
                run_ids,
                claimed_at,
            } => self.acknowledge(&run_ids, claimed_at)?,
            StoreCommand::StartAttempts { starts } => {
                let mut replies = Vec::with_capacity(starts.len());
                for (run_id, token) in starts {
                    replies.push(self.start_attempt(&run_id, token).await?);
                }
                StoreReply::Each(replies)
            }
            StoreCommand::FinishAttempts { finishes } => {
                let mut replies = Vec::with_capacity(finishes.len());
                for f in finishes {
                    replies.push(self.finish_attempt(&f.run_id, f.attempt, f.outcome).await?);
                }
                StoreReply::Each(replies)
            }
            StoreCommand::LeaseExpired { run_id, token } => {
                self.lease_expired(&run_id, token).await?
            }
            StoreCommand::Cancel { run_id } => self.cancel(&run_id)?,
            StoreCommand::Replay { run_id, new_run_id } => {
                self.replay(&run_id, &new_run_id).await?
            }
            StoreCommand::Reschedule {
                run_id,
                delay_until,
            } => self.reschedule(&run_id, delay_until).await?,
            StoreCommand::ResetIdempotencyKey { task, key } => {
                self.reset_idempotency_key(&task, &key)?
            }
            StoreCommand::CreateBatch {
                batch_id,
                run_count,
                key,
            } => self.create_batch(&batch_id, run_count, key).await?,
            StoreCommand::RecordBatchItems { batch_id, entries } => {
                self.record_batch_items(&batch_id, &entries)?
            }
            StoreCommand::ListRuns {
                filter,
                page,
                limit,
            } => self.list_runs(&filter, &page, limit)?,
        };
        rpc::reply(&reply)
    }

    pub(super) fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    /// Sets the alarm to `at` unless one is already due no later.
    pub(super) async fn ensure_alarm(&self, at: Millis) -> Result<()> {
        ensure_alarm(&self.state.storage(), &self.alarm_at, at).await
    }

    /// This object's name (`<env>:<route>`), recorded by its first batch.
    pub(super) fn store_name(&self) -> Result<String> {
        #[derive(Deserialize)]
        struct Row {
            value: String,
        }
        self.sql()
            .exec("SELECT value FROM meta WHERE key = 'name'", None)?
            .to_array::<Row>()?
            .pop()
            .map(|r| r.value)
            .ok_or_else(|| internal("no batch has named this store yet"))
    }
}
