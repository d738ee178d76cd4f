//! SDK 4.x two-step batches (docs/API.md section 6): `POST /api/v3/batches` creates the batch,
//! `POST /api/v3/batches/{batchId}/items` streams its items as NDJSON.
//!
//! The stream is read chunk by chunk and split into lines as it arrives; items are stored
//! in groups (at most 100 items or 3 MiB at a time): each group's runs are created in
//! their tasks' stores, deduplicated by (batch, index), and then recorded in the batch's
//! own store, which seals the batch when all `runCount` items are in. A resent stream is
//! therefore safe, and after a 200 every item it carried is stored. A bad line answers
//! 400 with its line number; the items before it stay stored (a resend dedupes them).

use std::collections::BTreeMap;

use crate::domain::basics::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{drain, json_response, read_body, BodyPace, Ctx, Incoming, Response, MAX_BODY_BYTES};
use crate::domain::api::error::ApiError;
use crate::domain::basics::ids::{BatchId, RunId, StoreRoute};
use crate::domain::basics::names::StoreName;
use crate::domain::basics::shards::trigger_route;
use crate::domain::intake::batch_items::{ItemStream, PendingItem};
use crate::domain::intake::idempotency::{IdempotencyKey, KeyError};
use crate::domain::intake::ndjson::{Line, LineSplitter};
use crate::domain::intake::trigger::{parse_top_object, DEFAULT_KEY_TTL_MS};
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{
    BatchCreated, BatchEntry, BatchKey, BatchReply, CreateBatch, GetBatch, RecordBatchItems,
    RecordReply, TriggerBatch, TriggerReply,
};

/// The most items a two-step batch may have.
pub const MAX_RUN_COUNT: u64 = 1000;
/// The largest create body.
const MAX_CREATE_BYTES: usize = 128 * 1024;

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
        Some(Value::String(key)) => Some(
            IdempotencyKey::parse(key)
                .map_err(|e| ApiError::validation("idempotencyKey", e.reason()))?,
        ),
        Some(_) => {
            return Err(ApiError::validation(
                "idempotencyKey",
                KeyError::Length.reason(),
            ));
        }
    };
    ctx.admit(run_count).await?;
    let route = StoreRoute::for_batch(key.as_deref());
    let store = String::from(StoreName::new(ctx.environment, route));
    let command = CreateBatch {
        batch_id: BatchId::new(route, crate::platform::runtime::now()).into(),
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

/// The state of one `/items` request: the items it brought (`ItemStream`) and what the
/// batch's store answered so far.
struct Stream<'c, 'e> {
    ctx: &'c Ctx<'e>,
    batch_id: String,
    home: String,
    items: ItemStream,
    accepted: usize,
    /// Items the store had already recorded (a resent stream).
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
    let route = BatchId::parse(batch_id).ok_or(NOT_FOUND)?.route();
    let home = String::from(StoreName::new(ctx.environment, route));
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
        items: ItemStream::new(batch.run_count as u64, MAX_BODY_BYTES),
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
                if stream.items.group_full() {
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
            items_deduplicated: stream.items.deduplicated() + stream.deduplicated,
            sealed: stream.sealed,
        },
    )
}

fn aborted() -> ApiError {
    ApiError::Unprocessable("Batch was aborted: it was not sealed within 10 minutes".into())
}

impl Stream<'_, '_> {
    fn take(&mut self, line: Line) -> Result<(), ApiError> {
        let now = crate::platform::runtime::now();
        self.items.take(line, &self.ctx.config.tasks, now)
    }

    /// Stores the queued items in their tasks' stores, then records them in the batch.
    async fn flush(&mut self) -> Result<(), ApiError> {
        let (pending, failed) = self.items.take_group();
        if pending.is_empty() && failed.is_empty() {
            return Ok(());
        }
        let mut by_task: BTreeMap<String, Vec<PendingItem>> = BTreeMap::new();
        for p in pending {
            by_task.entry(p.task.clone()).or_default().push(p);
        }
        let mut entries: Vec<BatchEntry> = failed
            .into_iter()
            .map(|f| BatchEntry {
                index: f.index,
                task: f.task,
                run_id: None,
                error: Some(f.error),
                error_code: Some(f.code.to_owned()),
            })
            .collect();
        for (task, group) in by_task {
            // Items of undeclared tasks failed as they came: every task here is declared.
            let Some(settings) = self.ctx.config.tasks.get(&task) else {
                return Err(ApiError::Internal { retry: false });
            };
            let keyed = group
                .iter()
                .any(|p| p.item.idempotency_key.is_some() || p.item.debounce.is_some());
            let route = trigger_route(&task, settings.shards, keyed);
            let store = String::from(StoreName::new(self.ctx.environment, route));
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
                        .map(|_| RunId::new(route, now).into())
                        .collect()
                },
                items: group.into_iter().map(|p| p.item).collect(),
                retry: settings.retry.clone(),
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
