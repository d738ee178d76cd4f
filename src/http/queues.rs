//! The queues API (docs/API.md section 7): list, retrieve, pause and resume, override and
//! reset a queue's limits. A queue is its gates (`gateShards` of them): a look asks each,
//! a change goes to each, and the view sums their counts (`domain::api::queues`).

use std::collections::BTreeSet;

use futures_util::future::join_all;

use super::{json_response, query_of, read_body, Ctx, Incoming, Response};
use crate::domain::api::error::ApiError;
use crate::domain::api::queues::{
    parse_list_page, parse_override_body, parse_pause_body, parse_reset_body, resolve, type_param,
    GateFigures, QueueItem, MAX_QUEUE_BODY_BYTES,
};
use crate::domain::basics::names::GateName;
use crate::domain::scheduling::gate::Control;
use crate::objects::gate::client::QueueGateClient;
use crate::objects::gate::protocol::Steer;
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::ListQueues;

const NOT_FOUND: ApiError = ApiError::NotFound("Queue not found");

/// `GET /api/v1/queues?page=&perPage=`: the queues of the declared tasks and every queue a
/// run was triggered on (each store of each declared task names its own), by name, each
/// with its gates' live counts.
pub async fn list_queues(ctx: &Ctx<'_>, req: &Incoming) -> Result<Response, ApiError> {
    let page = parse_list_page(query_of(req))?;
    let mut names: BTreeSet<String> = ctx.config.queues.keys().cloned().collect();
    names.extend(triggered_queues(ctx).await?);
    let count = names.len();
    let shown = names
        .into_iter()
        .skip((page.page - 1).saturating_mul(page.per_page))
        .take(page.per_page);
    let looks = shown.map(|name| async move {
        let name = name.as_str();
        let gates = steer(ctx, name, Control::Look).await?;
        Ok::<_, ApiError>(item(ctx, name, &gates))
    });
    let data = join_all(looks)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    json_response(
        200,
        &serde_json::json!({
            "data": data,
            "pagination": {
                "currentPage": page.page,
                "totalPages": count.div_ceil(page.per_page),
                "count": count,
            },
        }),
    )
}

/// `GET /api/v1/queues/{queue}?type=id|task|custom`.
pub async fn retrieve_queue(
    ctx: &Ctx<'_>,
    req: &Incoming,
    queue: &str,
) -> Result<Response, ApiError> {
    let name = named(queue, type_param(query_of(req)).as_deref())?;
    let gates = existing(ctx, &name).await?;
    json_response(200, &item(ctx, &name, &gates))
}

/// `POST /api/v1/queues/{queue}/pause`, `{"type", "action": "pause" | "resume"}`.
pub async fn pause_queue(ctx: &Ctx<'_>, req: Incoming, queue: &str) -> Result<Response, ApiError> {
    let body = read_body(&req, MAX_QUEUE_BODY_BYTES).await?;
    let (kind, control) = parse_pause_body(&body)?;
    change(ctx, queue, kind.as_deref(), control).await
}

/// `POST /api/v1/queues/{queue}/concurrency/override`, `{"type", "concurrencyLimit"}`
/// (and `totalConcurrencyLimit`, a queue's total cap: at one gate only).
pub async fn override_queue(
    ctx: &Ctx<'_>,
    req: Incoming,
    queue: &str,
) -> Result<Response, ApiError> {
    let body = read_body(&req, MAX_QUEUE_BODY_BYTES).await?;
    let (kind, control) = parse_override_body(&body)?;
    change(ctx, queue, kind.as_deref(), control).await
}

/// `POST /api/v1/queues/{queue}/concurrency/reset`, `{"type"}`.
pub async fn reset_queue(ctx: &Ctx<'_>, req: Incoming, queue: &str) -> Result<Response, ApiError> {
    let body = read_body(&req, MAX_QUEUE_BODY_BYTES).await?;
    let kind = parse_reset_body(&body)?;
    change(ctx, queue, kind.as_deref(), Control::Reset).await
}

/// Applies a change at every gate of an existing queue, and shows the queue after it.
async fn change(
    ctx: &Ctx<'_>,
    queue: &str,
    kind: Option<&str>,
    control: Control,
) -> Result<Response, ApiError> {
    let name = named(queue, kind)?;
    existing(ctx, &name).await?;
    if matches!(control, Control::Override { total: Some(_), .. })
        && ctx.config.gate_shards(&name) > 1
    {
        return Err(ApiError::validation(
            "totalConcurrencyLimit",
            "a total cap needs the queue at one gate (this queue has gateShards > 1)",
        ));
    }
    let gates = steer(ctx, &name, control).await?;
    json_response(200, &item(ctx, &name, &gates))
}

/// Every queue a run of a declared task was triggered on: each store of each declared
/// task names its own.
async fn triggered_queues(ctx: &Ctx<'_>) -> Result<BTreeSet<String>, ApiError> {
    let stores = ctx.config.stores(ctx.environment, |_| true);
    let asks = stores.iter().map(|store| async move {
        Ok::<_, ApiError>(
            RunStoreClient::new(ctx.env, store.as_str())?
                .send(ListQueues {})
                .await?,
        )
    });
    let mut names = BTreeSet::new();
    for listed in join_all(asks).await {
        names.extend(listed?);
    }
    Ok(names)
}

fn named(queue: &str, kind: Option<&str>) -> Result<String, ApiError> {
    resolve(queue, kind)?.ok_or(NOT_FOUND)
}

/// The gates of a queue that exists: declared by a task, known to its gates (a run was
/// offered to it, or it was steered), or named by a trigger (a delayed run's queue, say,
/// before its gate sees a run).
async fn existing(ctx: &Ctx<'_>, name: &str) -> Result<Vec<(bool, GateFigures)>, ApiError> {
    let gates = steer(ctx, name, Control::Look).await?;
    if ctx.config.queues.contains_key(name)
        || gates.iter().any(|(known, _)| *known)
        || triggered_queues(ctx).await?.contains(name)
    {
        Ok(gates)
    } else {
        Err(NOT_FOUND)
    }
}

/// Sends `control` to every gate of the queue: (known, figures) per gate.
async fn steer(
    ctx: &Ctx<'_>,
    name: &str,
    control: Control,
) -> Result<Vec<(bool, GateFigures)>, ApiError> {
    let calls = (0..ctx.config.gate_shards(name)).map(|shard| {
        let gate = String::from(GateName::in_environment(ctx.environment, name, shard));
        let control = control.clone();
        async move {
            let view = QueueGateClient::new(ctx.env, &gate)?
                .send(Steer { gate, control })
                .await?;
            let figures = GateFigures {
                limit: view.limit,
                controls: view.controls,
                running: view.running,
                queued: view.queued,
            };
            Ok::<_, ApiError>((view.known, figures))
        }
    });
    join_all(calls).await.into_iter().collect()
}

fn item(ctx: &Ctx<'_>, name: &str, gates: &[(bool, GateFigures)]) -> QueueItem {
    let declared = ctx.config.queues.get(name);
    let figures: Vec<GateFigures> = gates.iter().map(|(_, f)| f.clone()).collect();
    QueueItem::new(
        name,
        declared.and_then(|q| q.concurrency_limit),
        declared.and_then(|q| q.total_limit),
        &figures,
    )
}
