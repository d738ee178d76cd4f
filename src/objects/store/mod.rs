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
mod activity;
mod batches;
mod bulk;
pub mod client;
mod delivery;
mod lifecycle;
mod manage;
pub mod protocol;
mod read;
pub mod schema;

use std::cell::{Cell, RefCell};

use crate::domain::api::activity::Tally;

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::domain::basics::time::Millis;
use crate::domain::config::RetryPolicy;
use crate::objects::group_commit::GroupCommit;
use crate::platform::meter::{self, Activity, Object};
use crate::platform::rpc;
use crate::platform::rpc::{answer, CallError};
use crate::platform::runtime::{ensure_alarm, internal, now};
use crate::platform::sql::{Migrated, Sql};
use protocol::{
    Acknowledge, AddTags, BulkStep, Cancel, Claim, CreateBatch, FinishAttempts, GetActivity,
    GetBatch, GetMetadata, GetResults, GetRun, LeaseExpired, ListQueues, ListRuns,
    RecordBatchItems, Replay, Reschedule, ResetIdempotencyKey, StartAttempts, Store, StoreCommand,
    TriggerBatch, TriggerReply, UpdateMetadata,
};

/// The queue binding that carries run references to the consumer.
pub const RUNS_QUEUE: &str = "RUNS";

/// Outbox rows (deliveries of up to `MAX_RUNS_PER_MESSAGE` runs) the alarm handles per
/// wake-up; it re-arms at once when more remain.
const ALARM_BATCH: usize = 500;

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
    triggers: GroupCommit<TriggerBatch, std::result::Result<TriggerReply, CallError>>,
    /// Work under way, for the operations account.
    activity: Activity,
    /// Runs created, completed and failed in minutes not yet written (`tally`).
    tally: RefCell<Tally>,
    /// The retry policy in the body read last for a failed attempt, by the body's `seq`.
    /// A body never changes and its items share their trigger's policy; a batch's runs
    /// tend to fail together, so most failures read no body.
    body_retry: RefCell<Option<(i64, RetryPolicy)>>,
    /// What accepts have committed that no later one changes (`accept::Written`).
    written: RefCell<accept::Written>,
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
        meter::configure(&env);
        let migrated = Migrated::start(&state.storage(), &schema::SCHEMA, Object::Store);
        RunStore {
            state,
            env,
            migrated,
            alarm_at: Cell::new(None),
            triggers: GroupCommit::default(),
            activity: Activity::default(),
            tally: RefCell::new(Tally::default()),
            body_retry: RefCell::new(None),
            written: RefCell::new(accept::Written::default()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        rpc::fetched(self.handle(&req.bytes().await?).await)
    }

    async fn alarm(&self) -> Result<Response> {
        let _active = meter::alarm(Object::Store, &self.activity, Some(&self.state));
        self.alarm_at.set(None);
        self.migrated.ready()?;
        self.deliver_due().await?;
        self.tally(None)?;
        Response::ok("")
    }
}

crate::export_command!(RunStore);

impl RunStore {
    /// Answers one command from a caller (`rpc::call`).
    async fn handle(&self, command: &[u8]) -> Result<String> {
        let _active = meter::request(Object::Store, &self.activity, Some(&self.state));
        self.migrated.ready()?;
        match rpc::decode::<Store>(command)? {
            StoreCommand::TriggerBatch(c) => answer::<TriggerBatch>(&self.trigger_batch(c).await?),
            StoreCommand::GetRun(c) => answer::<GetRun>(&self.get_run(&c.run_id)?),
            StoreCommand::GetBatch(c) => answer::<GetBatch>(&self.get_batch(&c.batch_id)?),
            StoreCommand::Claim(c) => answer::<Claim>(&self.claim(&c.run_ids)?),
            StoreCommand::Acknowledge(c) => {
                answer::<Acknowledge>(&self.acknowledge(&c.deliveries, c.claimed_at)?)
            }
            StoreCommand::StartAttempts(c) => {
                let mut replies = Vec::with_capacity(c.starts.len());
                for (run_id, token) in c.starts {
                    replies.push(self.start_attempt(&run_id, token).await?);
                }
                answer::<StartAttempts>(&replies)
            }
            StoreCommand::FinishAttempts(c) => {
                let mut replies = Vec::with_capacity(c.finishes.len());
                for f in c.finishes {
                    replies.push(self.finish_attempt(&f.run_id, f.attempt, f.outcome).await?);
                }
                answer::<FinishAttempts>(&replies)
            }
            StoreCommand::LeaseExpired(c) => {
                answer::<LeaseExpired>(&self.lease_expired(&c.run_id, c.token).await?)
            }
            StoreCommand::Cancel(c) => answer::<Cancel>(&self.cancel(&c.run_id)?),
            StoreCommand::Replay(c) => {
                answer::<Replay>(&self.replay(&c.run_id, &c.new_run_id).await?)
            }
            StoreCommand::Reschedule(c) => {
                answer::<Reschedule>(&self.reschedule(&c.run_id, c.delay_until).await?)
            }
            StoreCommand::ResetIdempotencyKey(c) => {
                answer::<ResetIdempotencyKey>(&self.reset_idempotency_key(&c.task, &c.key)?)
            }
            StoreCommand::CreateBatch(c) => {
                answer::<CreateBatch>(&self.create_batch(&c.batch_id, c.run_count, c.key).await?)
            }
            StoreCommand::RecordBatchItems(c) => {
                answer::<RecordBatchItems>(&self.record_batch_items(&c.batch_id, &c.entries)?)
            }
            StoreCommand::ListRuns(c) => {
                answer::<ListRuns>(&self.list_runs(&c.filter, &c.page, c.limit)?)
            }
            StoreCommand::ListQueues(ListQueues {}) => answer::<ListQueues>(&self.queue_names()?),
            StoreCommand::GetMetadata(c) => answer::<GetMetadata>(&self.metadata(&c.run_id)?),
            StoreCommand::UpdateMetadata(c) => {
                answer::<UpdateMetadata>(&self.update_metadata(&c.run_id, &c.update)?)
            }
            StoreCommand::AddTags(c) => answer::<AddTags>(&self.add_tags(&c.run_id, &c.tags)?),
            StoreCommand::GetResults(c) => answer::<GetResults>(&self.finished_runs(&c.run_ids)?),
            StoreCommand::BulkStep(c) => answer::<BulkStep>(&self.bulk_step(c).await?),
            StoreCommand::GetActivity(c) => answer::<GetActivity>(&self.activity_since(c.since)?),
        }
    }

    pub(super) fn sql(&self) -> Sql {
        Sql::new(&self.state.storage(), Object::Store)
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
