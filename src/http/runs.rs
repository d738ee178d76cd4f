//! `GET /api/v3/runs/{runId}` and `GET /api/v1/batches/{batchId}` (API.md section 4).

use worker::{Request, Response};

use super::{json_response, Ctx};
use crate::domain::error::ApiError;
use crate::domain::ids::{parse_id, IdKind};
use crate::domain::status::{RunStatus, StatusVocabulary};
use crate::domain::view::{BatchView, RunView};
use crate::gate::client::{gate_name_in, QueueGateClient};
use crate::gate::protocol::GateCommand;
use crate::store::client::{store_name, RunStoreClient};
use crate::store::protocol::{StoreCommand, StoreReply};

pub async fn retrieve_run(
    ctx: &Ctx<'_>,
    req: &Request,
    run_id: &str,
) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Run not found");
    // The id names its store; a malformed id names none.
    let route = parse_id(IdKind::Run, run_id).ok_or(NOT_FOUND)?;
    let store = store_name(ctx.environment, route);
    let command = StoreCommand::GetRun {
        run_id: run_id.to_owned(),
    };
    match RunStoreClient::new(ctx.env, &store)?.call(&command).await? {
        StoreReply::Run(run) => {
            let version = req.headers().get("x-trigger-api-version").ok().flatten();
            let vocabulary = StatusVocabulary::from_api_version(version.as_deref());
            json_response(200, &RunView::new(&run, vocabulary))
        }
        _ => Err(NOT_FOUND),
    }
}

pub async fn retrieve_batch(ctx: &Ctx<'_>, batch_id: &str) -> Result<Response, ApiError> {
    const NOT_FOUND: ApiError = ApiError::NotFound("Batch not found");
    let route = parse_id(IdKind::Batch, batch_id).ok_or(NOT_FOUND)?;
    let store = store_name(ctx.environment, route);
    let command = StoreCommand::GetBatch {
        batch_id: batch_id.to_owned(),
    };
    match RunStoreClient::new(ctx.env, &store)?.call(&command).await? {
        StoreReply::Batch(batch) => json_response(200, &BatchView::new(&batch)),
        _ => Err(NOT_FOUND),
    }
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
    let route = parse_id(IdKind::Run, run_id).ok_or(NOT_FOUND)?;
    let store = store_name(ctx.environment, route);
    let command = StoreCommand::Cancel {
        run_id: run_id.to_owned(),
    };
    match RunStoreClient::new(ctx.env, &store)?.call(&command).await? {
        StoreReply::Canceled { previous, queue } => {
            if matches!(
                previous,
                RunStatus::Queued | RunStatus::Executing | RunStatus::Reattempting
            ) {
                // The store already refuses to start it; this frees its place or slot now.
                let gate = gate_name_in(ctx.environment, &queue);
                let remove = GateCommand::Remove {
                    run_id: run_id.to_owned(),
                };
                let removed = match QueueGateClient::new(ctx.env, &gate) {
                    Ok(client) => client.call(&remove).await.map(|_| ()),
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
        StoreReply::AlreadyFinal { .. } => json_response(200, &Id { id: run_id }),
        _ => Err(NOT_FOUND),
    }
}
