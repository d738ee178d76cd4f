//! SDK 4.x two-step batches (docs/API.md section 6): `POST /api/v3/batches` creates the batch,
//! `POST /api/v3/batches/{batchId}/items` streams its items as NDJSON.
//!
//! The stream is read chunk by chunk and split into lines as it arrives; items are stored
//! in groups (at most 100 items or 3 MiB at a time): each group's runs are created in
//! their tasks' stores, deduplicated by (batch, index), and then recorded in the batch's
//! own store, which seals the batch when all `runCount` items are in. A resent stream is
//! therefore safe, and after a 200 every item it carried is stored. A bad line answers
//! 400 with its line number; the items before it stay stored (a resend dedupes them).

use std::collections::{BTreeMap, HashSet};

use crate::domain::basics::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use worker::Response;

use super::{drain, json_response, read_body, BodyPace, Ctx, Incoming, MAX_BODY_BYTES};
use crate::domain::api::error::ApiError;
use crate::domain::basics::ids::{new_id, parse_id, IdKind, StoreRoute};
use crate::domain::intake::ndjson::{identify, Line, LineSplitter};
use crate::domain::intake::trigger::{
    apply_task_defaults, has_control_characters, parse_item, parse_top_object, RunRequest,
    DEFAULT_KEY_TTL_MS, MAX_IDEMPOTENCY_KEY_CHARS, NO_CONTROL_CHARACTERS,
};
use crate::objects::store::client::{store_name, RunStoreClient};
use crate::objects::store::protocol::{
    BatchCreated, BatchEntry, BatchKey, BatchReply, CreateBatch, GetBatch, RecordBatchItems,
    RecordReply, TriggerBatch, TriggerReply,
};

/// The most items a two-step batch may have.
pub const MAX_RUN_COUNT: u64 = 1000;
/// The largest create body.
const MAX_CREATE_BYTES: usize = 128 * 1024;
/// Items stored per group.
const GROUP_ITEMS: usize = 100;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    id: String,
    run_count: usize,
    is_cached: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Streamed {
    id: String,
    items_accepted: usize,
    items_deduplicated: usize,
    sealed: bool,
}

/// `POST /api/v3/batches`.
pub async fn create_batch(ctx: &Ctx<'_>, req: Incoming) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        run_count: Option<Value>,
        task_identifiers: Option<Value>,
        idempotency_key: Option<Value>,
    }
    let body = read_body(&req, MAX_CREATE_BYTES).await?;
    if body.is_empty() {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    let parsed: Body = parse_top_object(&body)?;
    let run_count = parsed
        .run_count
        .as_ref()
        .and_then(Value::as_u64)
        .filter(|n| (1..=MAX_RUN_COUNT).contains(n))
        .ok_or_else(|| ApiError::validation("runCount", "must be an integer from 1 to 1000"))?;
    if let Some(tasks) = parsed.task_identifiers {
        let Value::Array(tasks) = tasks else {
            return Err(ApiError::validation(
                "taskIdentifiers",
                "expected an array of strings",
            ));
        };
        for (i, task) in tasks.iter().enumerate() {
            let task = task.as_str().ok_or_else(|| {
                ApiError::validation(format!("taskIdentifiers[{i}]"), "expected a string")
            })?;
            if !ctx.config.tasks.contains_key(task) {
                return Err(ApiError::NotFound("Task not found"));
            }
        }
    }
    let key = match parsed.idempotency_key {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if has_control_characters(&key) => {
            return Err(ApiError::validation(
                "idempotencyKey",
                NO_CONTROL_CHARACTERS,
            ));
        }
        Some(Value::String(key))
            if (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&key.chars().count()) =>
        {
            Some(key)
        }
        Some(_) => {
            return Err(ApiError::validation(
                "idempotencyKey",
                "expected a string of 1 to 2048 characters",
            ));
        }
    };
    ctx.admit(run_count).await?;
    let route = StoreRoute::for_batch(key.as_deref());
    let store = store_name(ctx.environment, route);
    let command = CreateBatch {
        batch_id: new_id(IdKind::Batch, route, crate::platform::runtime::now()),
        run_count: run_count as usize,
        key: key.map(|key| BatchKey {
            key,
            ttl_ms: DEFAULT_KEY_TTL_MS,
            body_hash: String::new(),
        }),
    };
    let BatchCreated {
        batch_id,
        run_count,
        cached,
    } = RunStoreClient::new(ctx.env, &store)?.send(command).await?;
    json_response(
        if cached { 200 } else { 202 },
        &Created {
            id: batch_id,
            run_count,
            is_cached: cached,
        },
    )
}

/// A received item, not yet stored.
struct Pending {
    index: u32,
    task: String,
    item: RunRequest,
}

/// The state of one `/items` request.
struct Stream<'c, 'e> {
    ctx: &'c Ctx<'e>,
    batch_id: String,
    home: String,
    run_count: u64,
    seen: HashSet<u32>,
    pending: Vec<Pending>,
    pending_bytes: usize,
    errors: Vec<BatchEntry>,
    accepted: usize,
    deduplicated: usize,
    sealed: bool,
}

/// `POST /api/v3/batches/{batchId}/items`.
pub async fn stream_items(
    ctx: &Ctx<'_>,
    req: Incoming,
    batch_id: &str,
) -> Result<Response, ApiError> {
    let Some(mut body) = req.body() else {
        return items(ctx, &req, None, batch_id).await;
    };
    let result = items(ctx, &req, Some(&mut body), batch_id).await;
    if result.is_err() {
        drain(&mut body).await;
    }
    result
}

/// The longest an item stream may take (1,000 items of up to 3 MiB each); a pause of
/// more than the idle allowance between chunks ends it sooner (408).
const STREAM_TIME_MS: Millis = 300_000;

async fn items(
    ctx: &Ctx<'_>,
    req: &Incoming,
    body: Option<&mut worker::ByteStream>,
    batch_id: &str,
) -> Result<Response, ApiError> {
    let content_type = req.header("content-type").unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-ndjson")
    {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/x-ndjson",
        ));
    }
    const NOT_FOUND: ApiError = ApiError::NotFound("Batch not found");
    let route = parse_id(IdKind::Batch, batch_id).ok_or(NOT_FOUND)?;
    let home = store_name(ctx.environment, route);
    let batch = match RunStoreClient::new(ctx.env, &home)?
        .send(GetBatch {
            batch_id: batch_id.to_owned(),
        })
        .await?
    {
        BatchReply::Batch(batch) if batch.two_step => batch,
        // A seed-endpoint batch takes no items.
        BatchReply::Batch(_) | BatchReply::NotFound => return Err(NOT_FOUND),
    };
    if batch.status == "ABORTED" {
        return Err(aborted());
    }
    let mut stream = Stream {
        ctx,
        batch_id: batch_id.to_owned(),
        home,
        run_count: batch.run_count as u64,
        seen: HashSet::new(),
        pending: Vec::new(),
        pending_bytes: 0,
        errors: Vec::new(),
        accepted: 0,
        deduplicated: 0,
        sealed: batch.completed_at.is_some(),
    };
    let mut lines = LineSplitter::new(MAX_BODY_BYTES);
    if let Some(body) = body {
        let pace = BodyPace::start(STREAM_TIME_MS);
        while let Some(chunk) = pace.next(body).await? {
            for line in lines.push(&chunk) {
                stream.take(line)?;
                if stream.pending.len() >= GROUP_ITEMS || stream.pending_bytes >= MAX_BODY_BYTES {
                    stream.flush().await?;
                }
            }
        }
    }
    if let Some(line) = lines.finish() {
        stream.take(line)?;
    }
    stream.flush().await?;
    json_response(
        200,
        &Streamed {
            id: stream.batch_id,
            items_accepted: stream.accepted,
            items_deduplicated: stream.deduplicated,
            sealed: stream.sealed,
        },
    )
}

fn aborted() -> ApiError {
    ApiError::Unprocessable("Batch was aborted: it was not sealed within 10 minutes".into())
}

impl Stream<'_, '_> {
    fn index(&self, raw: Option<&RawValue>, number: usize) -> Result<u32, ApiError> {
        raw.and_then(|r| serde_json::from_str::<u64>(r.get()).ok())
            .filter(|i| *i < self.run_count)
            .map(|i| i as u32)
            .ok_or_else(|| {
                ApiError::validation(
                    format!("line {number}.index"),
                    format!(
                        "expected an integer from 0 to {}",
                        self.run_count.saturating_sub(1)
                    ),
                )
            })
    }

    /// Checks one line and queues its item (or its error).
    fn take(&mut self, line: Line) -> Result<(), ApiError> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            index: Option<&'a RawValue>,
            #[serde(borrow)]
            task: Option<&'a RawValue>,
        }
        match line {
            Line::Full { number, text } => {
                let raw: &RawValue = serde_json::from_slice(&text).map_err(|_| {
                    ApiError::validation(format!("line {number}"), "not a JSON object")
                })?;
                if !raw.get().starts_with('{') {
                    return Err(ApiError::validation(
                        format!("line {number}"),
                        "not a JSON object",
                    ));
                }
                let head: Head = serde_json::from_str(raw.get())
                    .map_err(|e| ApiError::validation(format!("line {number}"), e.to_string()))?;
                let index = self.index(head.index, number)?;
                let task: String = head
                    .task
                    .and_then(|t| serde_json::from_str(t.get()).ok())
                    .ok_or_else(|| {
                        ApiError::validation(
                            format!("line {number}.task"),
                            "expected a task identifier",
                        )
                    })?;
                let mut item = parse_item(
                    raw,
                    &format!("line {number}"),
                    crate::platform::runtime::now(),
                )?;
                if !self.seen.insert(index) {
                    self.deduplicated += 1; // the same index twice in one stream
                    return Ok(());
                }
                match self.ctx.config.tasks.get(&task) {
                    Some(settings) => {
                        apply_task_defaults(&mut item, &task, settings);
                        self.pending_bytes += text.len();
                        self.pending.push(Pending { index, task, item });
                    }
                    None => self.errors.push(BatchEntry {
                        index,
                        task,
                        run_id: None,
                        error: Some("Task not found".into()),
                        error_code: Some("TASK_NOT_FOUND".into()),
                    }),
                }
            }
            Line::TooLong {
                number,
                prefix,
                length,
            } => {
                let (index, task) = identify(&prefix);
                let index = index
                    .filter(|i| *i < self.run_count)
                    .map(|i| i as u32)
                    .ok_or_else(|| {
                        ApiError::validation(
                            format!("line {number}"),
                            "longer than 3 MiB, and its index cannot be read",
                        )
                    })?;
                if self.seen.insert(index) {
                    self.errors.push(BatchEntry {
                        index,
                        task: task.unwrap_or_default(),
                        run_id: None,
                        error: Some(format!(
                            "the item is {length} bytes; at most {MAX_BODY_BYTES} are accepted"
                        )),
                        error_code: Some("PAYLOAD_TOO_LARGE".into()),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stores the queued items in their tasks' stores, then records them in the batch.
    async fn flush(&mut self) -> Result<(), ApiError> {
        if self.pending.is_empty() && self.errors.is_empty() {
            return Ok(());
        }
        let mut by_task: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for p in self.pending.drain(..) {
            by_task.entry(p.task.clone()).or_default().push(p);
        }
        self.pending_bytes = 0;
        let mut entries = std::mem::take(&mut self.errors);
        for (task, group) in by_task {
            let route = StoreRoute::for_task(&task);
            let store = store_name(self.ctx.environment, route);
            let indexes: Vec<u32> = group.iter().map(|p| p.index).collect();
            let command = TriggerBatch {
                store: store.clone(),
                task: task.clone(),
                batch_id: Some(self.batch_id.clone()),
                batch_items: Some(indexes.clone()),
                run_ids: {
                    let now = crate::platform::runtime::now(); // once per group, not per run
                    group
                        .iter()
                        .map(|_| new_id(IdKind::Run, route, now))
                        .collect()
                },
                items: group.into_iter().map(|p| p.item).collect(),
                batch_key: None,
                trigger_function: "batchTrigger".into(),
            };
            let runs = match RunStoreClient::new(self.ctx.env, &store)?
                .send(command)
                .await?
            {
                TriggerReply::Triggered { runs, ready, .. } => {
                    self.ctx.offer_soon(&store, ready);
                    runs
                }
                // Only a batch key can conflict, and items carry none.
                TriggerReply::BatchKeyConflict => {
                    worker::console_error!("batch items without a batch key met a conflict");
                    return Err(ApiError::Internal { retry: false });
                }
            };
            entries.extend(
                indexes
                    .into_iter()
                    .zip(runs)
                    .map(|(index, run_id)| BatchEntry {
                        index,
                        task: task.clone(),
                        run_id: Some(run_id),
                        error: None,
                        error_code: None,
                    }),
            );
        }
        let record = RecordBatchItems {
            batch_id: self.batch_id.clone(),
            entries,
        };
        match RunStoreClient::new(self.ctx.env, &self.home)?
            .send(record)
            .await?
        {
            RecordReply::ItemsRecorded {
                accepted,
                deduplicated,
                sealed,
            } => {
                self.accepted += accepted;
                self.deduplicated += deduplicated;
                self.sealed = sealed;
                Ok(())
            }
            RecordReply::BatchAborted => Err(aborted()),
            RecordReply::NotFound => Err(ApiError::NotFound("Batch not found")),
        }
    }
}
