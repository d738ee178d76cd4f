//! Reading runs and batches back (docs/API.md section 4).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use worker::Result;

use super::protocol::{BatchReply, RunReply};
use super::schema::{self, BODY_ITEM};
use super::{internal, RunStore};
use crate::domain::api::list::{Page, RunFilter};
use crate::domain::api::view::{AttemptRecord, BatchRecord, ItemError, RunRecord};
use crate::domain::basics::time::Millis;
use crate::domain::run::body::RunBody;
use crate::domain::run::execution::{batch_status, processing_status};
use crate::domain::run::status::RunStatus;
use crate::platform::sql::{exec_in_chunks, rows};
use worker::SqlStorageValue;

#[derive(Deserialize)]
struct BatchRow {
    id: String,
    task: String,
    idempotency_key: Option<String>,
    runs: String,
    created_at: Millis,
    updated_at: Millis,
    version: i64,
    run_count: Option<i64>,
    sealed_at: Option<Millis>,
    aborted_at: Option<Millis>,
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
    /// Absent from list queries, which leave outputs out.
    #[serde(default)]
    output_type: Option<String>,
    /// When the current attempt started, and the ended attempts (JSON): absent from
    /// list queries.
    #[serde(default)]
    attempt_started_at: Option<Millis>,
    #[serde(default)]
    attempts: Option<String>,
    /// The run's body item (schema step 11), when its options are there.
    #[serde(default)]
    body_item: Option<String>,
}

impl RunRow {
    /// The row with the options its body item holds; the payload too when `payload`.
    fn with_body(mut self, payload: bool) -> Result<RunRow> {
        let Some(item) = self.body_item.take() else {
            return Ok(self);
        };
        let body = RunBody::parse(&item).map_err(internal)?;
        if self.payload_chunks == schema::PAYLOAD_IN_BODY {
            self.payload = body.payload.filter(|_| payload).map(|p| p.get().to_owned());
            self.payload_chunks = 0;
            self.payload_type = body.payload_type.into_owned();
        }
        self.idempotency_key = body.idempotency_key.map(Cow::into_owned);
        self.ttl = body.ttl.map(Cow::into_owned);
        self.batch_id = self.batch_id.or(body.batch_id.map(Cow::into_owned));
        self.trigger_function = body.trigger_function.into_owned();
        Ok(self)
    }
}

#[derive(Deserialize)]
struct ChunkRow {
    data: String,
}

impl RunStore {
    /// The queues this store's runs were triggered on, by name.
    pub(super) fn queue_names(&self) -> Result<Vec<String>> {
        rows(&self.sql(), "SELECT name FROM queues ORDER BY name", vec![])?
            .into_iter()
            .map(|mut v| v.text())
            .collect()
    }

    pub(super) fn load_batch(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        let sql = self.sql();
        let Some(r) = sql
            .exec(
                "SELECT id, task, status, idempotency_key, runs, created_at, updated_at, version,
                     run_count, sealed_at, aborted_at
                 FROM batches WHERE id = ?",
                vec![batch_id.into()],
            )?
            .to_array::<BatchRow>()?
            .pop()
        else {
            return Ok(None);
        };
        if r.version != 3 {
            let runs: Vec<String> =
                serde_json::from_str(&r.runs).map_err(|e| internal(e.to_string()))?;
            // Derived on read from the runs, so finishing a run never writes to its batch.
            let status = batch_status(&self.statuses(&runs)?).to_owned();
            return Ok(Some(BatchRecord {
                run_count: runs.len(),
                runs,
                id: r.id,
                task: r.task,
                status,
                idempotency_key: r.idempotency_key,
                created_at: r.created_at,
                updated_at: r.updated_at,
                // Processed in the request that created it.
                completed_at: Some(r.created_at),
                errors: Vec::new(),
                two_step: false,
            }));
        }
        #[derive(Deserialize)]
        struct ItemRow {
            idx: i64,
            task: String,
            run_id: Option<String>,
            error: Option<String>,
            error_code: Option<String>,
        }
        let items = sql
            .exec(
                "SELECT idx, task, run_id, error, error_code FROM batch_items WHERE batch_id = ? ORDER BY idx",
                vec![batch_id.into()],
            )?
            .to_array::<ItemRow>()?;
        let received = items.len();
        let mut runs = Vec::with_capacity(received);
        let mut errors = Vec::new();
        for item in items {
            match (item.run_id, item.error) {
                (Some(run), _) => runs.push(run),
                (None, error) => errors.push(ItemError {
                    index: item.idx.max(0) as u32,
                    task_identifier: item.task,
                    error: error.unwrap_or_default(),
                    error_code: item.error_code,
                }),
            }
        }
        let run_count = r.run_count.unwrap_or(0).max(0) as usize;
        let status = processing_status(received, run_count, errors.len(), r.aborted_at.is_some());
        Ok(Some(BatchRecord {
            id: r.id,
            task: r.task,
            status: status.to_owned(),
            idempotency_key: r.idempotency_key,
            created_at: r.created_at,
            updated_at: r.updated_at,
            runs,
            run_count,
            completed_at: r.sealed_at,
            errors,
            two_step: true,
        }))
    }

    /// The statuses of `run_ids` (a batch's runs), for its derived status.
    fn statuses(&self, run_ids: &[String]) -> Result<Vec<RunStatus>> {
        #[derive(Deserialize)]
        struct Row {
            status: String,
        }
        let mut unique = run_ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let mut statuses = Vec::with_capacity(unique.len());
        exec_in_chunks(
            &self.sql(),
            "SELECT status FROM runs WHERE id IN ({list})",
            &[],
            &unique,
            |cursor| {
                for row in cursor.to_array::<Row>()? {
                    statuses.push(
                        RunStatus::parse(&row.status)
                            .ok_or_else(|| internal("unknown stored status"))?,
                    );
                }
                Ok(())
            },
        )?;
        Ok(statuses)
    }

    pub(super) fn get_batch(&self, batch_id: &str) -> Result<BatchReply> {
        Ok(self
            .load_batch(batch_id)?
            .map_or(BatchReply::NotFound, BatchReply::Batch))
    }

    /// The finished runs among `run_ids`, in their order, without their payloads.
    pub(super) fn finished_runs(&self, run_ids: &[String]) -> Result<Vec<RunRecord>> {
        let sql = self.sql();
        let mut runs = Vec::new();
        for run_id in run_ids {
            let row = sql
                .exec(schema::SELECT_RUN, vec![run_id.as_str().into()])?
                .to_array::<RunRow>()?
                .into_iter()
                .next()
                .map(|row| row.with_body(false))
                .transpose()?;
            if let Some(record) = row.map(|row| self.record(row, None)).transpose()? {
                if record.status.is_final() {
                    runs.push(record);
                }
            }
        }
        Ok(runs)
    }

    pub(super) fn get_run(&self, run_id: &str) -> Result<RunReply> {
        let sql = self.sql();
        let Some(row) = sql
            .exec(schema::SELECT_RUN, vec![run_id.into()])?
            .to_array::<RunRow>()?
            .into_iter()
            .next()
        else {
            return Ok(RunReply::NotFound);
        };
        let row = row.with_body(true)?;
        let payload =
            self.stored_text(run_id, "payload", row.payload.clone(), row.payload_chunks)?;
        let mut record = self.record(row, payload)?;
        if let Some(key) = &record.idempotency_key {
            // Until when the key still holds for this run (none once reset or expired).
            record.idempotency_key_expires_at = rows(
                &sql,
                "SELECT expires_at FROM idempotency_keys WHERE task = ? AND key = ? AND run_id = ?",
                vec![
                    record.task.as_str().into(),
                    key.as_str().into(),
                    record.id.as_str().into(),
                ],
            )?
            .pop()
            .map(|mut r| r.int())
            .transpose()?;
        }
        Ok(RunReply::Run(Box::new(record)))
    }

    /// A stored row as a record, with its payload text.
    fn record(&self, row: RunRow, payload: Option<String>) -> Result<RunRecord> {
        let status =
            RunStatus::parse(&row.status).ok_or_else(|| internal("unknown stored status"))?;
        Ok(RunRecord {
            id: row.id,
            task: row.task,
            status,
            batch_id: row.batch_id,
            idempotency_key: row.idempotency_key,
            idempotency_key_expires_at: None,
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
            attempts: attempts_of(
                status,
                row.attempt_count,
                row.attempt_started_at,
                row.attempts.as_deref(),
            )?,
            output: raw(row.output)?,
            output_type: row.output_type,
            error: raw(row.error)?,
        })
    }

    /// A stored `payload` or `context`: the column's text, or its chunks joined.
    pub(super) fn stored_text(
        &self,
        run_id: &str,
        part: &str,
        inline: Option<String>,
        chunks: i64,
    ) -> Result<Option<String>> {
        if chunks == 0 {
            return Ok(inline);
        }
        let rows = self
            .sql()
            .exec(
                "SELECT data FROM run_chunks WHERE run_id = ? AND part = ? ORDER BY seq",
                vec![run_id.into(), part.into()],
            )?
            .to_array::<ChunkRow>()?;
        Ok(Some(rows.into_iter().map(|r| r.data).collect()))
    }

    /// This store's part of `GET /api/v1/runs`: the runs matching `filter` on `page`, at
    /// most `limit`, newest first (`Before`: oldest first). Payloads and outputs are left
    /// out of lists. The runs are found through the `listing` rows (`schema` step 6), read
    /// in order of their time by primary key, each row's runs sorted by id: a run's
    /// `created_at` is its listing row's `at`.
    pub(super) fn list_runs(
        &self,
        filter: &RunFilter,
        page: &Page,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let (mut clauses, mut params) = filter_clauses(filter);
        let order = match page {
            Page::First => "DESC",
            Page::After(c) => {
                // The first clause lets the walk start at the cursor's row.
                clauses.push("listing.at <= ? AND (listing.at < ? OR runs.id < ?)".into());
                params.extend([
                    c.created_at.into(),
                    c.created_at.into(),
                    c.id.as_str().into(),
                ]);
                "DESC"
            }
            Page::Before(c) => {
                clauses.push("listing.at >= ? AND (listing.at > ? OR runs.id > ?)".into());
                params.extend([
                    c.created_at.into(),
                    c.created_at.into(),
                    c.id.as_str().into(),
                ]);
                "ASC"
            }
        };
        let condition = if clauses.is_empty() {
            "1 = 1".to_owned()
        } else {
            clauses.join(" AND ")
        };
        params.push((limit as i64).into());
        let query = format!(
            "SELECT runs.id, task, status, batch_id, idempotency_key, NULL AS payload,
                 payload_chunks, payload_type, queue, concurrency_key, tags, ttl, delayed_until,
                 created_at, updated_at, started_at, finished_at, expired_at, metadata, is_test,
                 trigger_function, attempt_count, NULL AS output, NULL AS error,
                 NULL AS attempt_started_at, NULL AS attempts, {BODY_ITEM} AS body_item
             FROM listing, json_each(listing.ids) AS listed, runs
             WHERE runs.id = listed.value AND {condition}
             ORDER BY listing.at {order}, runs.id {order} LIMIT ?"
        );
        let rows = self.sql().exec(&query, params)?.to_array::<RunRow>()?;
        let runs = rows
            .into_iter()
            .map(|row| self.record(row.with_body(false)?, None))
            .collect::<Result<Vec<_>>>()?;
        Ok(runs)
    }
}

/// Stored JSON text back as raw JSON.
/// The `WHERE` clauses (over `listing`, `json_each(listing.ids) AS listed` and `runs`)
/// and their parameters that select the runs `filter` matches.
fn filter_clauses(filter: &RunFilter) -> (Vec<String>, Vec<SqlStorageValue>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<SqlStorageValue> = Vec::new();
    let mut any_of = |template: &str, values: &[String], clauses: &mut Vec<String>| {
        if !values.is_empty() {
            let list = crate::platform::sql::placeholders(values.len());
            clauses.push(template.replace("{list}", &list));
            params.extend(values.iter().map(|v| SqlStorageValue::from(v.as_str())));
        }
    };
    let statuses: Vec<String> = filter
        .statuses
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    any_of("status IN ({list})", &statuses, &mut clauses);
    any_of("task IN ({list})", &filter.tasks, &mut clauses);
    any_of("queue IN ({list})", &filter.queues, &mut clauses);
    any_of(
        "EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE json_each.value IN ({list}))",
        &filter.tags,
        &mut clauses,
    );
    if let Some(batch) = &filter.batch {
        // A run whose options are in a body has its batch there (`domain::run::body`).
        clauses.push(format!(
            "COALESCE(batch_id, json_extract({BODY_ITEM}, '$.batchId')) = ?"
        ));
        params.push(batch.as_str().into());
    }
    if let Some(from) = filter.created_from {
        clauses.push("listing.at >= ?".into());
        params.push(from.into());
    }
    if let Some(to) = filter.created_to {
        clauses.push("listing.at <= ?".into());
        params.push(to.into());
    }
    (clauses, params)
}

impl RunStore {
    /// How many runs `filter` matches here.
    pub(super) fn count_runs(&self, filter: &RunFilter) -> Result<u64> {
        let (clauses, params) = filter_clauses(filter);
        let condition = if clauses.is_empty() {
            "1 = 1".to_owned()
        } else {
            clauses.join(" AND ")
        };
        let query = format!(
            "SELECT COUNT(*) FROM listing, json_each(listing.ids) AS listed, runs
             WHERE runs.id = listed.value AND {condition}"
        );
        let count = rows(&self.sql(), &query, params)?
            .pop()
            .map(|mut r| r.int())
            .transpose()?
            .unwrap_or(0);
        Ok(count as u64)
    }
}

/// A run's attempts: the ended ones as stored, then the one under way, if any.
fn attempts_of(
    status: RunStatus,
    attempt_count: i64,
    current_started_at: Option<Millis>,
    ended: Option<&str>,
) -> Result<Vec<AttemptRecord>> {
    let mut attempts: Vec<AttemptRecord> = match ended {
        Some(text) => serde_json::from_str(text).map_err(|e| internal(e.to_string()))?,
        None => Vec::new(),
    };
    if status == RunStatus::Executing {
        if let Some(started_at) = current_started_at {
            attempts.push(AttemptRecord {
                n: attempt_count.max(0) as u32,
                status: "EXECUTING".into(),
                started_at: Some(started_at),
                ended_at: None,
                error: None,
            });
        }
    }
    Ok(attempts)
}

pub(super) fn raw(text: Option<String>) -> Result<Option<Box<RawValue>>> {
    text.map(|t| RawValue::from_string(t).map_err(|e| internal(format!("stored JSON: {e}"))))
        .transpose()
}
