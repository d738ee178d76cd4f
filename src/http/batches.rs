//! Triggering: `POST /api/v1/tasks/{taskIdentifier}/batch` (docs/API.md section 2) and
//! `POST /api/v1/tasks/{taskIdentifier}/trigger` (section 5). Both validate everything at
//! the edge, then make one call to one store of the task (its home when the trigger
//! carries an idempotency key: `domain::basics::shards`).

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{json_response, read_body, Ctx, Incoming, Response, MAX_BODY_BYTES};
use crate::domain::api::error::ApiError;
use crate::domain::basics::duration::parse_key_ttl;
use crate::domain::basics::ids::{BatchId, RunId};
use crate::domain::basics::names::StoreName;
use crate::domain::basics::shards::trigger_route;
use crate::domain::intake::idempotency::{IdempotencyKey, KeyError};
use crate::domain::intake::trigger::{
    apply_task_defaults, parse_batch_body, parse_trigger_body, RunRequest, DEFAULT_KEY_TTL_MS,
};
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{BatchKey, TriggerBatch, TriggerReply};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchTriggered {
    batch_id: String,
    runs: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Triggered {
    id: String,
    is_cached: bool,
}

/// What the store made of a trigger: the batch id (if a batch), each item's run, and
/// whether each item reused an existing run.
struct Submitted {
    batch_id: Option<String>,
    runs: Vec<String>,
    cached: Vec<bool>,
}

pub async fn trigger_batch(ctx: &Ctx<'_>, req: Incoming, task: &str) -> Result<Response, ApiError> {
    let body = read_body(&req, MAX_BODY_BYTES).await?;
    let items = parse_batch_body(
        &body,
        ctx.config.max_batch_items,
        crate::platform::runtime::now(),
    )?;
    let batch_key = batch_key(&req, &body)?;
    let done = submit(ctx, task, items, true, batch_key).await?;
    let batch_id = done.batch_id.ok_or(ApiError::Internal { retry: false })?;
    json_response(
        200,
        &BatchTriggered {
            batch_id,
            runs: done.runs,
        },
    )
}

pub async fn trigger_task(ctx: &Ctx<'_>, req: Incoming, task: &str) -> Result<Response, ApiError> {
    let body = read_body(&req, MAX_BODY_BYTES).await?;
    let item = parse_trigger_body(&body, crate::platform::runtime::now())?;
    let done = submit(ctx, task, vec![item], false, None).await?;
    let (Some(id), Some(&is_cached)) = (done.runs.into_iter().next(), done.cached.first()) else {
        return Err(ApiError::Internal { retry: false });
    };
    json_response(200, &Triggered { id, is_cached })
}

/// Applies the task's defaults (404 for an undeclared task) and stores the runs.
async fn submit(
    ctx: &Ctx<'_>,
    task: &str,
    mut items: Vec<RunRequest>,
    as_batch: bool,
    batch_key: Option<BatchKey>,
) -> Result<Submitted, ApiError> {
    let settings = ctx
        .config
        .tasks
        .get(task)
        .ok_or(ApiError::NotFound("Task not found"))?;
    for item in &mut items {
        apply_task_defaults(item, task, settings);
    }
    ctx.admit(items.len() as u64).await?;
    // A key (idempotency or debounce) has one owner: the task's home store.
    let keyed = batch_key.is_some()
        || items
            .iter()
            .any(|i| i.idempotency_key.is_some() || i.debounce.is_some());
    let route = trigger_route(task, settings.shards, keyed);
    let store = String::from(StoreName::new(ctx.environment, route));
    let now = crate::platform::runtime::now();
    let command = TriggerBatch {
        store: store.clone(),
        task: task.to_owned(),
        batch_id: as_batch.then(|| BatchId::new(route, now).into()),
        batch_items: None,
        run_ids: items
            .iter()
            .map(|_| RunId::new(route, now).into())
            .collect(),
        items,
        retry: settings.retry.clone(),
        batch_key,
        trigger_function: if as_batch { "batchTrigger" } else { "trigger" }.into(),
    };
    match RunStoreClient::new(ctx.env, &store)?.send(command).await? {
        TriggerReply::Triggered {
            batch_id,
            runs,
            cached,
            ready,
        } => {
            ctx.offer_soon(&store, ready);
            Ok(Submitted {
                batch_id,
                runs,
                cached,
            })
        }
        TriggerReply::BatchKeyConflict => Err(ApiError::Unprocessable(
            "Idempotency key was already used for a different batch".into(),
        )),
    }
}

/// The optional `idempotency-key` and `idempotency-key-ttl` headers.
fn batch_key(req: &Incoming, body: &[u8]) -> Result<Option<BatchKey>, ApiError> {
    let Some(key) = req.header("idempotency-key") else {
        return Ok(None);
    };
    let key = IdempotencyKey::parse(key).map_err(|e| {
        let reason = match e {
            KeyError::Length => "expected 1 to 2048 characters",
            KeyError::ControlCharacters => e.reason(),
        };
        ApiError::validation("idempotency-key header", reason)
    })?;
    let ttl_ms = match req.header("idempotency-key-ttl") {
        None => DEFAULT_KEY_TTL_MS,
        Some(ttl) => parse_key_ttl(&ttl).ok_or_else(|| {
            ApiError::validation(
                "idempotency-key-ttl header",
                "expected digits and one unit of s, m, h or d, like 30d or 12h",
            )
        })?,
    };
    let body_hash = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(BatchKey {
        key,
        ttl_ms,
        body_hash,
    }))
}
