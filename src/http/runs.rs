//! Reading and managing runs and batches (docs/API.md sections 4 and 5): retrieve, list,
//! cancel, replay, reschedule, key resets, metadata and tags.

use futures_util::future::join_all;

use super::{
    json_response, origin_of, query_of, read_body, text_response, Ctx, Incoming, Response,
};
use crate::domain::api::activity::{buckets, parse_period};
use crate::domain::api::auth::Environment;
use crate::domain::api::error::ApiError;
use crate::domain::api::list::{merge_pages, parse_list_query, Cursor};
use crate::domain::api::view::{execution_result, BatchRecord, BatchView, RunRecord, RunView};
use crate::domain::basics::ids::{BatchId, RunId, StoreRoute};
use crate::domain::basics::names::GateName;
use crate::domain::basics::names::StoreName;
use crate::domain::basics::shards::{gate_shard, store_route};
use crate::domain::config::Config;
use crate::domain::intake::manage::{
    parse_key_reset_body, parse_reschedule_body, MAX_MANAGE_BODY_BYTES,
};
use crate::domain::intake::packets::{output_query, verify_output, OUTPUT_URL_TTL_MS};
use crate::domain::run::answer::SUPERJSON;
use crate::domain::run::metadata::{parse_tags_body, parse_update};
use crate::domain::run::status::StatusVocabulary;
use crate::objects::gate::client::QueueGateClient;
use crate::objects::gate::protocol::Remove;
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{
    AddTags, BatchReply, Cancel, CancelReply, GetActivity, GetBatch, GetMetadata, GetResults,
    GetRun, KeyReset, ListRuns, MetadataReply, Replay, ReplayReply, Reschedule, RescheduleReply,
    ResetIdempotencyKey, RunReply, TagsReply, UpdateMetadata,
};

pub async fn retrieve_run(
    ctx: &Ctx<'_>,
    req: &Incoming,
    run_id: &str,
) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found");
    // The id names its store; a malformed id names none.
    let (store, _) = owner(ctx, RunId::parse(run_id).map(|id| id.route()), NOT_FOUND)?;
    let command = GetRun {
        run_id: run_id.to_owned(),
    };
    match store.send(command).await? {
        RunReply::Run(mut run) => {
            let (payload, kind) = (&mut run.payload, &mut run.payload_type);
            if let Err(e) =
                crate::platform::packets::resolve(ctx.env, ctx.environment.slug(), payload, kind)
                    .await
            {
                worker::console_error!("resolving the payload of {run_id} failed: {e}");
            }
            let url = output_url(ctx, req, &run);
            json_response(
                200,
                &RunView::new(&run, vocabulary(req)).with_output_url(url),
            )
        }
        RunReply::NotFound => Err(NOT_FOUND),
    }
}

/// The signed URL of a run's superjson output on this worker (`GET /outputs/…`), which
/// the SDKs' `runs.retrieve` reads and decodes; none for a plain JSON output.
fn output_url(ctx: &Ctx<'_>, req: &Incoming, run: &RunRecord) -> Option<String> {
    (run.output_type.as_deref() == Some(SUPERJSON)).then(|| {
        let env = ctx.environment.slug();
        let expires = crate::platform::runtime::now() + OUTPUT_URL_TTL_MS;
        let query = output_query(ctx.config.signing_secret.as_bytes(), env, &run.id, expires);
        format!("{}/outputs/{env}/{}?{query}", origin_of(req), run.id)
    })
}

/// `GET /outputs/{env}/{runId}`: the output a run's `outputPresignedUrl` names, with its
/// content type, for the URL's signature instead of an API key.
pub async fn read_output(
    config: &Config,
    env: &worker::Env,
    req: &Incoming,
    env_slug: &str,
    run_id: &str,
) -> Result<Response, ApiError> {
    const REFUSED: &str = "Invalid or expired output URL";
    let now = crate::platform::runtime::now();
    let secret = config.signing_secret.as_bytes();
    if !verify_output(secret, env_slug, run_id, query_of(req), now) {
        return Err(ApiError::Unauthorized(REFUSED.into()));
    }
    let (Some(environment), Some(id)) = (Environment::from_slug(env_slug), RunId::parse(run_id))
    else {
        return Err(ApiError::Unauthorized(REFUSED.into()));
    };
    let store = StoreName::new(environment, id.route());
    let command = GetRun {
        run_id: run_id.to_owned(),
    };
    match RunStoreClient::new(env, store.as_str())?
        .send(command)
        .await?
    {
        RunReply::Run(run) if run.output_type.as_deref() == Some(SUPERJSON) => {
            let body = run.output.map_or_else(String::new, |o| o.get().to_owned());
            Ok(text_response(200, body, SUPERJSON))
        }
        RunReply::Run(_) | RunReply::NotFound => Err(ApiError::NotFound("Run not found")),
    }
}

pub async fn retrieve_batch(ctx: &Ctx<'_>, batch_id: &str) -> Result<Response, ApiError> {
    let batch = load_batch(ctx, batch_id).await?;
    json_response(200, &BatchView::new(&batch))
}

#[derive(serde::Serialize)]
struct Id<'a> {
    id: &'a str,
}

/// `POST /api/v2/runs/{runId}/cancel` (section 5): a run that has not finished never
/// executes afterwards (an attempt under way is abandoned and its result ignored, its slot
/// freed at once); a finished run is left as it is.
pub async fn cancel_run(ctx: &Ctx<'_>, run_id: &str) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found");
    let (store, _) = owner(ctx, RunId::parse(run_id).map(|id| id.route()), NOT_FOUND)?;
    let command = Cancel {
        run_id: run_id.to_owned(),
    };
    match store.send(command).await? {
        CancelReply::Canceled {
            previous,
            queue,
            concurrency_key,
        } => {
            if previous.has_gate_place() {
                // The store already refuses to start it; this frees its place or slot now.
                let key = concurrency_key.as_deref().unwrap_or_default();
                let shard = gate_shard(key, ctx.config.gate_shards(&queue));
                let gate = GateName::in_environment(ctx.environment, &queue, shard);
                let remove = Remove {
                    run_id: run_id.to_owned(),
                };
                let removed = match QueueGateClient::new(ctx.env, gate.as_str()) {
                    Ok(client) => client.send(remove).await.map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = removed {
                    worker::console_error!(
                        "cancel: freeing {run_id} at {gate} failed (its lease will expire): {e}"
                    );
                }
            }
            json_response(200, &Id { id: run_id })
        }
        CancelReply::AlreadyFinal { .. } => json_response(200, &Id { id: run_id }),
        CancelReply::NotFound => Err(NOT_FOUND),
    }
}

/// `GET /api/v2/batches/{batchId}`: the v1 shape plus `processing`.
pub async fn retrieve_batch_v2(ctx: &Ctx<'_>, batch_id: &str) -> Result<Response, ApiError> {
    let batch = load_batch(ctx, batch_id).await?;
    json_response(200, &BatchView::v2(&batch))
}

async fn load_batch(ctx: &Ctx<'_>, batch_id: &str) -> Result<BatchRecord, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Batch not found");
    let (store, _) = owner(
        ctx,
        BatchId::parse(batch_id).map(|id| id.route()),
        NOT_FOUND,
    )?;
    let command = GetBatch {
        batch_id: batch_id.to_owned(),
    };
    match store.send(command).await? {
        BatchReply::Batch(batch) => Ok(batch),
        BatchReply::NotFound => Err(NOT_FOUND),
    }
}

fn vocabulary(req: &Incoming) -> StatusVocabulary {
    let version = req.header("x-trigger-api-version");
    StatusVocabulary::from_api_version(version.as_deref())
}

/// `GET /api/v1/runs` (section 4): every store that holds runs of a declared task (or of
/// the filtered tasks), each of its shards, answers its own newest page; the edge merges
/// them.
pub async fn list_runs(ctx: &Ctx<'_>, req: &Incoming) -> Result<Response, ApiError> {
    let query = parse_list_query(query_of(req), crate::platform::runtime::now())?;
    let stores = ctx
        .config
        .stores(ctx.environment, |task| query.filter.wants_task(task));
    let command = || ListRuns {
        filter: query.filter.clone(),
        page: query.page.clone(),
        limit: query.size + 1,
    };
    let calls = stores.iter().map(|store| async {
        Ok::<_, ApiError>(
            RunStoreClient::new(ctx.env, store.as_str())?
                .send(command())
                .await?,
        )
    });
    let mut pages = Vec::with_capacity(stores.len());
    for page in join_all(calls).await {
        let page: Vec<RunRecord> = page?;
        pages.push(
            page.into_iter()
                .map(|run| {
                    (
                        Cursor {
                            created_at: run.created_at,
                            id: run.id.clone(),
                        },
                        run,
                    )
                })
                .collect(),
        );
    }
    let merged = merge_pages(pages, &query.page, query.size);
    let vocabulary = vocabulary(req);
    let data: Vec<RunView> = merged
        .items
        .iter()
        .map(|run| RunView::list_item(run, vocabulary, ctx.environment))
        .collect();
    #[derive(serde::Serialize)]
    struct Pagination {
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
    }
    json_response(
        200,
        &serde_json::json!({
            "data": data,
            "pagination": Pagination { next: merged.next, previous: merged.previous },
        }),
    )
}

/// `POST /api/v1/runs/{runId}/replay` (section 5): a new run of the same task with the
/// same payload, options and tags.
pub async fn replay_run(ctx: &Ctx<'_>, run_id: &str) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found");
    let (store, route) = owner(ctx, RunId::parse(run_id).map(|id| id.route()), NOT_FOUND)?;
    let command = Replay {
        run_id: run_id.to_owned(),
        new_run_id: RunId::new(route, crate::platform::runtime::now()).into(),
    };
    match store.send(command).await? {
        ReplayReply::Replayed { id } => json_response(200, &Id { id: &id }),
        ReplayReply::NotFound => Err(NOT_FOUND),
    }
}

/// `POST /api/v1/runs/{runId}/reschedule` (section 5), body `{"delay": duration | date}`.
pub async fn reschedule_run(
    ctx: &Ctx<'_>,
    req: Incoming,
    run_id: &str,
) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found");
    let body = read_body(&req, MAX_MANAGE_BODY_BYTES).await?;
    let delay_until = parse_reschedule_body(&body, crate::platform::runtime::now())?;
    let (store, _) = owner(ctx, RunId::parse(run_id).map(|id| id.route()), NOT_FOUND)?;
    let command = Reschedule {
        run_id: run_id.to_owned(),
        delay_until,
    };
    match store.send(command).await? {
        RescheduleReply::Run(run) => json_response(200, &RunView::new(&run, vocabulary(&req))),
        RescheduleReply::NotDelayed => Err(ApiError::Unprocessable(
            "Cannot reschedule a run that is not delayed".into(),
        )),
        RescheduleReply::NotFound => Err(NOT_FOUND),
    }
}

/// `POST /api/v1/idempotencyKeys/{key}/reset` (section 5), body `{"taskIdentifier"}`.
pub async fn reset_idempotency_key(
    ctx: &Ctx<'_>,
    req: Incoming,
    key: &str,
) -> Result<Response, ApiError> {
    let body = read_body(&req, MAX_MANAGE_BODY_BYTES).await?;
    let task = parse_key_reset_body(&body)?;
    if !ctx.config.tasks.contains_key(&task) {
        return Err(ApiError::NotFound("Task not found"));
    }
    // Keys live in the task's home store, whatever its shards (`domain::basics::shards`).
    let store = StoreName::new(ctx.environment, store_route(&task, 0));
    let command = ResetIdempotencyKey {
        task,
        key: key.to_owned(),
    };
    match RunStoreClient::new(ctx.env, store.as_str())?
        .send(command)
        .await?
    {
        KeyReset { removed: true } => json_response(200, &Id { id: key }),
        KeyReset { removed: false } => Err(ApiError::NotFound("Idempotency key not found")),
    }
}

/// `GET /api/v1/runs/{runId}/result` (section 4): the run's execution result once it has
/// finished; 404 before (the SDK reads that as "no result yet").
pub async fn run_result(ctx: &Ctx<'_>, run_id: &str) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found or not finished");
    let (store, _) = owner(ctx, RunId::parse(run_id).map(|id| id.route()), NOT_FOUND)?;
    let runs = store
        .send(GetResults {
            run_ids: vec![run_id.to_owned()],
        })
        .await?;
    let result = runs.first().and_then(execution_result).ok_or(NOT_FOUND)?;
    json_response(200, &result)
}

/// `GET /api/v1/batches/{batchId}/results` (section 4): `{id, items}`, the execution
/// results of the batch's finished runs in batch order, one call per store that holds
/// some of them.
pub async fn batch_results(ctx: &Ctx<'_>, batch_id: &str) -> Result<Response, ApiError> {
    let batch = load_batch(ctx, batch_id).await?;
    let mut by_store: std::collections::BTreeMap<StoreName, Vec<String>> = Default::default();
    for run in &batch.runs {
        if let Some(id) = RunId::parse(run) {
            let store = StoreName::new(ctx.environment, id.route());
            by_store.entry(store).or_default().push(run.clone());
        }
    }
    let asks = by_store.iter().map(|(store, run_ids)| async move {
        Ok::<_, ApiError>(
            RunStoreClient::new(ctx.env, store.as_str())?
                .send(GetResults {
                    run_ids: run_ids.clone(),
                })
                .await?,
        )
    });
    let mut finished = std::collections::HashMap::new();
    for runs in join_all(asks).await {
        for run in runs? {
            finished.insert(run.id.clone(), run);
        }
    }
    let mut seen = std::collections::HashSet::new();
    let items: Vec<serde_json::Value> = batch
        .runs
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .filter_map(|id| finished.get(id).and_then(execution_result))
        .collect();
    json_response(200, &serde_json::json!({ "id": batch.id, "items": items }))
}

/// `GET /api/v1/runs/{runId}/metadata` (section 5) → `{"metadata": {…}}`.
pub async fn get_metadata(ctx: &Ctx<'_>, run_id: &str) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found");
    let (store, _) = owner(ctx, RunId::parse(run_id).map(|id| id.route()), NOT_FOUND)?;
    let reply = store
        .send(GetMetadata {
            run_id: run_id.to_owned(),
        })
        .await?;
    metadata_answer(reply, NOT_FOUND)
}

/// `PUT /api/v1/runs/{runId}/metadata` (section 5), `{metadata?, operations?}` →
/// `{"metadata": {…}}` as it is after the change.
pub async fn update_metadata(
    ctx: &Ctx<'_>,
    req: Incoming,
    run_id: &str,
) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found");
    let body = read_body(&req, MAX_METADATA_BODY_BYTES).await?;
    let update = parse_update(&body)?;
    let (store, _) = owner(ctx, RunId::parse(run_id).map(|id| id.route()), NOT_FOUND)?;
    let reply = store
        .send(UpdateMetadata {
            run_id: run_id.to_owned(),
            update,
        })
        .await?;
    metadata_answer(reply, NOT_FOUND)
}

fn metadata_answer(reply: MetadataReply, not_found: ApiError) -> Result<Response, ApiError> {
    match reply {
        MetadataReply::Metadata(text) => {
            let metadata: serde_json::Value = text
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .filter(serde_json::Value::is_object)
                .unwrap_or_else(|| serde_json::json!({}));
            json_response(200, &serde_json::json!({ "metadata": metadata }))
        }
        MetadataReply::NotFound => Err(not_found),
        MetadataReply::Refused { path, reason } => Err(ApiError::Validation { path, reason }),
    }
}

/// `POST /api/v1/runs/{runId}/tags` (section 5), `{"tags": string | string[]}` →
/// `{"message": "Successfully set N new tags."}`.
pub async fn add_tags(ctx: &Ctx<'_>, req: Incoming, run_id: &str) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found");
    let body = read_body(&req, MAX_MANAGE_BODY_BYTES).await?;
    let tags = parse_tags_body(&body)?;
    let (store, _) = owner(ctx, RunId::parse(run_id).map(|id| id.route()), NOT_FOUND)?;
    let reply = store
        .send(AddTags {
            run_id: run_id.to_owned(),
            tags,
        })
        .await?;
    match reply {
        TagsReply::Tags { added, .. } => json_response(
            200,
            &serde_json::json!({ "message": format!("Successfully set {added} new tags.") }),
        ),
        TagsReply::NotFound => Err(NOT_FOUND),
        TagsReply::Refused { path, reason } => Err(ApiError::Validation { path, reason }),
    }
}

/// The largest metadata body read: the metadata's own limit and room for operations.
const MAX_METADATA_BODY_BYTES: usize = 2 * crate::domain::run::metadata::MAX_METADATA_BYTES;

/// The store that owns an id in the caller's environment (an id names its store's
/// route), or `not_found` for a malformed id (`None`).
fn owner(
    ctx: &Ctx<'_>,
    route: Option<StoreRoute>,
    not_found: ApiError,
) -> Result<(RunStoreClient, StoreRoute), ApiError> {
    let route = route.ok_or(not_found)?;
    Ok((
        RunStoreClient::new(ctx.env, StoreName::new(ctx.environment, route).as_str())?,
        route,
    ))
}

/// `GET /api/v1/activity?period=1h|1d`: runs created, completed and failed in the last
/// hour by minute (or day by hour), summed over every store of the declared tasks.
pub async fn activity(ctx: &Ctx<'_>, req: &Incoming) -> Result<Response, ApiError> {
    let period = parse_period(query_of(req))?;
    let now = crate::platform::runtime::now();
    let since = now - period.span_ms();
    let stores = ctx.config.stores(ctx.environment, |_| true);
    let asks = stores.iter().map(|store| async move {
        RunStoreClient::new(ctx.env, store.as_str())?
            .send(GetActivity { since })
            .await
    });
    let mut minutes = Vec::new();
    for answer in join_all(asks).await {
        minutes.extend(answer?);
    }
    json_response(200, &buckets(&minutes, now, period))
}
