//! `RunStore`: the Durable Object that owns the runs, batches, idempotency keys, queue
//! limits and delivery outbox of one environment's tasks on one route
//! (`<env>:<route>`, see `domain::ids::Route`).
//!
//! Invariants kept here:
//! - A batch commits in one `transactionSync`: all its runs, keys and outbox rows, or
//!   nothing (DESIGN invariants 1 and 2).
//! - Idempotency decisions read and write with no await in between, so the object's input
//!   gate serialises racing requests for a key (invariant 3).
//! - Every accepted run has an outbox row until the consumer acknowledges it, and an alarm
//!   is armed whenever the outbox is not empty (invariant 1).

pub mod client;
pub mod protocol;
pub mod schema;
mod sql;

use std::cell::Cell;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use worker::{
    console_error, durable_object, DurableObject, Env, Request, Response, Result, SqlStorage,
    SqlStorageValue, State,
};

use crate::domain::delivery::{self, OutboxRow, REDELIVER_AFTER_MS};
use crate::domain::idempotency::{
    decide_batch_key, plan_items, BatchKeyDecision, HeldBatchKey, HeldKey, ItemOutcome,
};
use crate::domain::status::RunStatus;
use crate::domain::time::Millis;
use crate::domain::trigger::RunRequest;
use crate::domain::view::{BatchRecord, RunRecord};
use protocol::{StoreCommand, StoreReply, TriggerBatch};
use sql::{exec_in_chunks, opt_i64, transaction};

/// The queue binding that carries run references to the consumer.
pub const RUNS_QUEUE: &str = "RUNS";

/// Outbox rows the alarm handles per wake-up; it re-arms at once when more remain.
const ALARM_BATCH: usize = 5000;

#[durable_object]
pub struct RunStore {
    state: State,
    env: Env,
    /// The alarm time this object last set, if known. Memory only: after a restart it is
    /// unknown and the next write sets the alarm again.
    alarm_at: Cell<Option<Millis>>,
}

fn now() -> Millis {
    worker::Date::now().as_millis() as Millis
}

impl DurableObject for RunStore {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        for statement in schema::MIGRATIONS {
            if let Err(e) = sql.exec(statement, None) {
                console_error!("run store: migration failed: {e}");
            }
        }
        RunStore {
            state,
            env,
            alarm_at: Cell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let body = req.bytes().await?;
        let command: StoreCommand = serde_json::from_slice(&body)
            .map_err(|e| worker::Error::RustError(format!("bad store command: {e}")))?;
        let reply = match command {
            StoreCommand::TriggerBatch(cmd) => self.trigger_batch(cmd).await?,
            StoreCommand::GetRun { run_id } => self.get_run(&run_id)?,
            StoreCommand::GetBatch { batch_id } => self.get_batch(&batch_id)?,
            StoreCommand::Acknowledge { run_ids } => self.acknowledge(&run_ids)?,
        };
        let bytes =
            serde_json::to_vec(&reply).map_err(|e| worker::Error::RustError(e.to_string()))?;
        Response::from_bytes(bytes)
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm_at.set(None);
        self.deliver_due().await?;
        Response::ok("")
    }
}

#[derive(Deserialize)]
struct HeldKeyRow {
    key: String,
    run_id: String,
    expires_at: Millis,
    status: Option<String>,
}

#[derive(Deserialize)]
struct HeldBatchKeyRow {
    batch_id: String,
    body_hash: String,
    expires_at: Millis,
}

#[derive(Deserialize)]
struct BatchRow {
    id: String,
    task: String,
    status: String,
    idempotency_key: Option<String>,
    runs: String,
    created_at: Millis,
    updated_at: Millis,
}

#[derive(Deserialize)]
struct RunRow {
    id: String,
    task: String,
    status: String,
    batch_id: Option<String>,
    idempotency_key: Option<String>,
    payload: Option<String>,
    payload_chunks: i64,
    payload_type: String,
    queue: String,
    concurrency_key: Option<String>,
    tags: String,
    ttl: Option<String>,
    delayed_until: Option<Millis>,
    created_at: Millis,
    updated_at: Millis,
    started_at: Option<Millis>,
    finished_at: Option<Millis>,
    expired_at: Option<Millis>,
    metadata: Option<String>,
    is_test: i64,
    trigger_function: String,
    attempt_count: i64,
    output: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct OutboxDbRow {
    run_id: String,
    due_at: Millis,
    sent_at: Option<Millis>,
}

#[derive(Deserialize)]
struct ChunkRow {
    data: String,
}

#[derive(Deserialize)]
struct NextRow {
    next: Option<Millis>,
}

fn internal(message: impl Into<String>) -> worker::Error {
    worker::Error::RustError(message.into())
}

impl RunStore {
    fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    /// API.md section 2: create the batch, or replay it for a repeated batch key.
    async fn trigger_batch(&self, cmd: TriggerBatch) -> Result<StoreReply> {
        let now = now();
        let sql = self.sql();
        // Arm the alarm first, for the earliest moment any item could need it: if the
        // commit below fails, a spare wake-up is harmless. After this await, the batch-key
        // check, the key reads, the plan and the write run with no await at all, so no
        // other request can interleave with an idempotency decision.
        let earliest = cmd
            .items
            .iter()
            .map(|item| item.delay_until.unwrap_or(now + REDELIVER_AFTER_MS))
            .min();
        if let Some(at) = earliest {
            self.ensure_alarm(at).await?;
        }

        if let Some(key) = &cmd.batch_key {
            let held = sql
                .exec(
                    "SELECT batch_id, body_hash, expires_at FROM batch_keys WHERE task = ? AND key = ?",
                    vec![cmd.task.as_str().into(), key.key.as_str().into()],
                )?
                .to_array::<HeldBatchKeyRow>()?
                .into_iter()
                .next()
                .map(|r| HeldBatchKey {
                    batch_id: r.batch_id,
                    body_hash: r.body_hash,
                    expires_at: r.expires_at,
                });
            match decide_batch_key(held.as_ref(), &key.body_hash, now) {
                BatchKeyDecision::Replay { batch_id } => {
                    let batch = self
                        .load_batch(&batch_id)?
                        .ok_or_else(|| internal("batch key without batch"))?;
                    return Ok(StoreReply::Triggered {
                        batch_id,
                        runs: batch.runs,
                    });
                }
                BatchKeyDecision::Conflict => return Ok(StoreReply::BatchKeyConflict),
                BatchKeyDecision::Fresh => {}
            }
        }

        let keys: Vec<Option<&str>> = cmd
            .items
            .iter()
            .map(|i| i.idempotency_key.as_deref())
            .collect();
        let held = self.held_keys(&cmd.task, &keys)?;
        let outcomes = plan_items(&keys, &cmd.run_ids, &held, now);

        let runs: Vec<String> = outcomes.iter().map(|o| o.run_id.clone()).collect();
        let send_now: Vec<String> = cmd
            .items
            .iter()
            .zip(&outcomes)
            .filter(|(item, o)| o.created && item.delay_until.is_none())
            .map(|(_, o)| o.run_id.clone())
            .collect();
        let batch_id = cmd.batch_id.clone();
        let write_sql = sql.clone();
        let reply_runs = runs.clone();
        transaction(&self.state.storage(), move || {
            write_batch(&write_sql, &cmd, &outcomes, &reply_runs, now)
        })?;

        self.send(&send_now, now).await;
        Ok(StoreReply::Triggered { batch_id, runs })
    }

    /// The stored keys among `keys`, with their runs' statuses.
    fn held_keys(&self, task: &str, keys: &[Option<&str>]) -> Result<HashMap<String, HeldKey>> {
        let mut wanted: Vec<String> = keys.iter().flatten().map(|k| (*k).to_owned()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut held = HashMap::with_capacity(wanted.len());
        exec_in_chunks(
            &self.sql(),
            "SELECT k.key AS key, k.run_id AS run_id, k.expires_at AS expires_at, r.status AS status
             FROM idempotency_keys k LEFT JOIN runs r ON r.id = k.run_id
             WHERE k.task = ? AND k.key IN ({list})",
            &[task.into()],
            &wanted,
            |cursor| {
                for row in cursor.to_array::<HeldKeyRow>()? {
                    // A key whose run is gone holds nothing.
                    let Some(status) = row.status.as_deref().and_then(RunStatus::parse) else {
                        continue;
                    };
                    held.insert(
                        row.key,
                        HeldKey {
                            run_id: row.run_id,
                            expires_at: row.expires_at,
                            run_status: status,
                        },
                    );
                }
                Ok(())
            },
        )?;
        Ok(held)
    }

    /// Sets the alarm to `at` unless one is already due no later.
    async fn ensure_alarm(&self, at: Millis) -> Result<()> {
        let storage = self.state.storage();
        let current = match self.alarm_at.get() {
            Some(known) => Some(known),
            None => storage.get_alarm().await?,
        };
        if current.is_none_or(|c| c > at) {
            storage
                .set_alarm(worker::ScheduledTime::new(js_sys::Date::new(
                    &(at as f64).into(),
                )))
                .await?;
            self.alarm_at.set(Some(at));
        } else {
            self.alarm_at.set(current);
        }
        Ok(())
    }

    /// Sends run references to the queue and records when. A failure is only logged:
    /// the rows stay unsent and the armed alarm sends them.
    async fn send(&self, runs: &[String], now: Millis) -> bool {
        if runs.is_empty() {
            return true;
        }
        let store = match self.store_name() {
            Ok(name) => name,
            Err(e) => {
                console_error!("run store: name unknown: {e}");
                return false;
            }
        };
        let queue = match self.env.queue(RUNS_QUEUE) {
            Ok(q) => q,
            Err(e) => {
                console_error!("run store: no queue binding {RUNS_QUEUE}: {e}");
                return false;
            }
        };
        for call in delivery::pack(&store, runs) {
            let ids: Vec<String> = call.iter().flat_map(|m| m.runs.iter().cloned()).collect();
            if let Err(e) = queue.send_batch(call).await {
                console_error!("run store {store}: queue send failed, the alarm will retry: {e}");
                return false;
            }
            let marked = exec_in_chunks(
                &self.sql(),
                "UPDATE outbox SET sent_at = ? WHERE run_id IN ({list})",
                &[now.into()],
                &ids,
                |_| Ok(()),
            );
            if let Err(e) = marked {
                console_error!("run store {store}: could not mark sent rows: {e}");
            }
        }
        true
    }

    /// The alarm: release due delayed runs, send what is due or unacknowledged, re-arm.
    async fn deliver_due(&self) -> Result<()> {
        let now = now();
        let sql = self.sql();
        let rows = sql
            .exec(
                "SELECT run_id, due_at, sent_at FROM outbox
                 WHERE (sent_at IS NULL AND due_at <= ?) OR (sent_at IS NOT NULL AND sent_at <= ?)
                 ORDER BY due_at LIMIT ?",
                vec![
                    now.into(),
                    (now - REDELIVER_AFTER_MS).into(),
                    (ALARM_BATCH as i64).into(),
                ],
            )?
            .to_array::<OutboxDbRow>()?;
        let due: Vec<String> = rows
            .iter()
            .filter(|r| {
                OutboxRow {
                    due_at: r.due_at,
                    sent_at: r.sent_at,
                }
                .is_sendable(now)
            })
            .map(|r| r.run_id.clone())
            .collect();
        exec_in_chunks(
            &sql,
            "UPDATE runs SET status = 'QUEUED', queued_at = ?, updated_at = ?
             WHERE status = 'DELAYED' AND id IN ({list})",
            &[now.into(), now.into()],
            &due,
            |_| Ok(()),
        )?;
        if !self.send(&due, now).await {
            return Err(internal("queue send failed; the alarm retries"));
        }
        let next = sql
            .exec(
                "SELECT MIN(CASE WHEN sent_at IS NULL THEN due_at ELSE sent_at + ? END) AS next FROM outbox",
                vec![REDELIVER_AFTER_MS.into()],
            )?
            .one::<NextRow>()?
            .next;
        if let Some(at) = next {
            self.ensure_alarm(at.max(now + 1)).await?;
        }
        Ok(())
    }

    /// This object's name (`<env>:<route>`), recorded by its first batch.
    fn store_name(&self) -> Result<String> {
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

    fn acknowledge(&self, run_ids: &[String]) -> Result<StoreReply> {
        let mut removed = 0;
        exec_in_chunks(
            &self.sql(),
            "DELETE FROM outbox WHERE run_id IN ({list})",
            &[],
            run_ids,
            |cursor| {
                removed += cursor.rows_written();
                Ok(())
            },
        )?;
        Ok(StoreReply::Acknowledged { removed })
    }

    fn load_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        let row = self
            .sql()
            .exec(
                "SELECT id, task, status, idempotency_key, runs, created_at, updated_at FROM batches WHERE id = ?",
                vec![batch_id.into()],
            )?
            .to_array::<BatchRow>()?
            .into_iter()
            .next();
        row.map(|r| {
            Ok(BatchRecord {
                runs: serde_json::from_str(&r.runs).map_err(|e| internal(e.to_string()))?,
                id: r.id,
                task: r.task,
                status: r.status,
                idempotency_key: r.idempotency_key,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
        })
        .transpose()
    }

    fn get_batch(&self, batch_id: &str) -> Result<StoreReply> {
        Ok(self
            .load_batch(batch_id)?
            .map_or(StoreReply::NotFound, StoreReply::Batch))
    }

    fn get_run(&self, run_id: &str) -> Result<StoreReply> {
        let sql = self.sql();
        let Some(row) = sql
            .exec(schema::SELECT_RUN, vec![run_id.into()])?
            .to_array::<RunRow>()?
            .into_iter()
            .next()
        else {
            return Ok(StoreReply::NotFound);
        };
        let payload = if row.payload_chunks > 0 {
            Some(self.read_chunks(run_id, "payload")?)
        } else {
            row.payload
        };
        let raw = |text: Option<String>| -> Result<Option<Box<RawValue>>> {
            text.map(|t| {
                RawValue::from_string(t).map_err(|e| internal(format!("stored JSON: {e}")))
            })
            .transpose()
        };
        let status =
            RunStatus::parse(&row.status).ok_or_else(|| internal("unknown stored status"))?;
        Ok(StoreReply::Run(Box::new(RunRecord {
            id: row.id,
            task: row.task,
            status,
            batch_id: row.batch_id,
            idempotency_key: row.idempotency_key,
            payload: raw(payload)?,
            payload_type: row.payload_type,
            queue: row.queue,
            concurrency_key: row.concurrency_key,
            tags: serde_json::from_str(&row.tags).map_err(|e| internal(e.to_string()))?,
            ttl: row.ttl,
            delayed_until: row.delayed_until,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            expired_at: row.expired_at,
            metadata: raw(row.metadata)?,
            is_test: row.is_test != 0,
            trigger_function: row.trigger_function,
            attempt_count: row.attempt_count.max(0) as u32,
            output: raw(row.output)?,
            error: raw(row.error)?,
        })))
    }

    fn read_chunks(&self, run_id: &str, part: &str) -> Result<String> {
        let rows = self
            .sql()
            .exec(
                "SELECT data FROM run_chunks WHERE run_id = ? AND part = ? ORDER BY seq",
                vec![run_id.into(), part.into()],
            )?
            .to_array::<ChunkRow>()?;
        Ok(rows.into_iter().map(|r| r.data).collect())
    }
}

/// Writes a planned batch. Runs inside `transactionSync`; any error rolls it all back.
fn write_batch(
    sql: &SqlStorage,
    cmd: &TriggerBatch,
    outcomes: &[ItemOutcome],
    runs: &[String],
    now: Millis,
) -> Result<()> {
    for (item, outcome) in cmd.items.iter().zip(outcomes) {
        if !outcome.created {
            continue;
        }
        insert_run(sql, cmd, item, &outcome.run_id, now)?;
        if let Some(key) = &item.idempotency_key {
            let expires_at =
                now.saturating_add(item.idempotency_key_ttl_ms.min(i64::MAX as u64) as i64);
            sql.exec(
                "INSERT OR REPLACE INTO idempotency_keys (task, key, run_id, expires_at) VALUES (?, ?, ?, ?)",
                vec![cmd.task.as_str().into(), key.as_str().into(), outcome.run_id.as_str().into(), expires_at.into()],
            )?;
        }
        if let Some(limit) = item.queue_limit {
            sql.exec(
                "INSERT INTO queues (name, concurrency_limit, updated_at) VALUES (?, ?, ?)
                 ON CONFLICT (name) DO UPDATE SET concurrency_limit = excluded.concurrency_limit,
                 updated_at = excluded.updated_at",
                vec![
                    item.queue.as_deref().unwrap_or_default().into(),
                    i64::from(limit).into(),
                    now.into(),
                ],
            )?;
        }
        sql.exec(
            "INSERT INTO outbox (run_id, due_at, sent_at) VALUES (?, ?, NULL)",
            vec![
                outcome.run_id.as_str().into(),
                item.delay_until.unwrap_or(now).into(),
            ],
        )?;
    }
    sql.exec(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('name', ?)",
        vec![cmd.store.as_str().into()],
    )?;
    let runs_json = serde_json::to_string(runs).map_err(|e| internal(e.to_string()))?;
    let batch_key = cmd.batch_key.as_ref();
    sql.exec(
        "INSERT INTO batches (id, task, status, idempotency_key, runs, created_at, updated_at)
         VALUES (?, ?, 'PENDING', ?, ?, ?, ?)",
        vec![
            cmd.batch_id.as_str().into(),
            cmd.task.as_str().into(),
            batch_key.map(|k| k.key.as_str()).into(),
            runs_json.into(),
            now.into(),
            now.into(),
        ],
    )?;
    if let Some(key) = batch_key {
        let expires_at = now.saturating_add(key.ttl_ms.min(i64::MAX as u64) as i64);
        sql.exec(
            "INSERT OR REPLACE INTO batch_keys (task, key, batch_id, body_hash, expires_at) VALUES (?, ?, ?, ?, ?)",
            vec![
                cmd.task.as_str().into(),
                key.key.as_str().into(),
                cmd.batch_id.as_str().into(),
                key.body_hash.as_str().into(),
                expires_at.into(),
            ],
        )?;
    }
    Ok(())
}

/// Stores text in the column when it is small, else in `run_chunks`; returns the column
/// value and the number of chunks.
fn store_text(
    sql: &SqlStorage,
    run_id: &str,
    part: &str,
    text: Option<&str>,
) -> Result<(SqlStorageValue, i64)> {
    match text {
        None => Ok((SqlStorageValue::Null, 0)),
        Some(t) if t.len() <= schema::CHUNK_BYTES => Ok((t.into(), 0)),
        Some(t) => {
            let pieces = delivery::split_utf8(t, schema::CHUNK_BYTES);
            for (seq, piece) in pieces.iter().enumerate() {
                sql.exec(
                    "INSERT INTO run_chunks (run_id, part, seq, data) VALUES (?, ?, ?, ?)",
                    vec![
                        run_id.into(),
                        part.into(),
                        (seq as i64).into(),
                        (*piece).into(),
                    ],
                )?;
            }
            Ok((SqlStorageValue::Null, pieces.len() as i64))
        }
    }
}

fn insert_run(
    sql: &SqlStorage,
    cmd: &TriggerBatch,
    item: &RunRequest,
    run_id: &str,
    now: Millis,
) -> Result<()> {
    let (payload, payload_chunks) = store_text(
        sql,
        run_id,
        "payload",
        item.payload.as_deref().map(RawValue::get),
    )?;
    let (context, context_chunks) = store_text(
        sql,
        run_id,
        "context",
        item.context.as_deref().map(RawValue::get),
    )?;
    let (status, queued_at) = match item.delay_until {
        Some(_) => (RunStatus::Delayed, None),
        None => (RunStatus::Queued, Some(now)),
    };
    let ttl = item.ttl.clone().flatten();
    let tags = serde_json::to_string(&item.tags).map_err(|e| internal(e.to_string()))?;
    let params: Vec<SqlStorageValue> = vec![
        run_id.into(),
        cmd.task.as_str().into(),
        status.as_str().into(),
        cmd.batch_id.as_str().into(),
        item.idempotency_key.as_deref().into(),
        payload,
        payload_chunks.into(),
        item.payload_type.as_str().into(),
        context,
        context_chunks.into(),
        item.queue.as_deref().unwrap_or_default().into(),
        opt_i64(item.queue_limit),
        item.concurrency_key.as_deref().into(),
        tags.into(),
        ttl.as_ref().map(|t| t.text.as_str()).into(),
        ttl.as_ref()
            .map(|t| t.ms.min(i64::MAX as u64) as i64)
            .into(),
        item.delay_until.into(),
        opt_i64(item.max_attempts),
        item.metadata.as_deref().map(RawValue::get).into(),
        item.machine.as_deref().map(RawValue::get).into(),
        item.priority.into(),
        opt_i64(item.max_duration),
        i64::from(item.is_test).into(),
        cmd.trigger_function.as_str().into(),
        now.into(),
        now.into(),
        queued_at.into(),
    ];
    sql.exec(schema::INSERT_RUN, params)?;
    Ok(())
}
