//! Bulk actions (docs/API.md section 5): create, list, retrieve and abort. The edge works
//! out which stores an action reaches (every store of the tasks a filter may match, or the
//! stores the ids name) and hands it to the environment's `BulkActions` object, which
//! carries it out in the background.

use std::collections::BTreeMap;

use super::{json_response, query_of, read_body, Ctx, Incoming, Response};
use crate::domain::api::bulk::{
    parse_create_body, parse_list_page, BulkAction, BulkActionObject, Selection,
    MAX_BULK_BODY_BYTES,
};
use crate::domain::api::error::ApiError;
use crate::domain::basics::ids::{bulk_id, RunId};
use crate::domain::basics::names::StoreName;
use crate::objects::bulk::client::BulkActionsClient;
use crate::objects::bulk::protocol::{AbortBulk, CreateBulk, GetBulk, ListBulk};

const NOT_FOUND: ApiError = ApiError::NotFound("Bulk action not found");

fn client(ctx: &Ctx<'_>) -> Result<BulkActionsClient, ApiError> {
    Ok(BulkActionsClient::new(ctx.env, ctx.environment.slug())?)
}

fn env(ctx: &Ctx<'_>) -> String {
    ctx.environment.slug().to_owned()
}

/// `POST /api/v1/bulk-actions` → 202 `{"id"}`.
pub async fn create_bulk_action(ctx: &Ctx<'_>, req: Incoming) -> Result<Response, ApiError> {
    let body = read_body(&req, MAX_BULK_BODY_BYTES).await?;
    let now = crate::platform::runtime::now();
    let request = parse_create_body(&body, now)?;
    // Each store the action reaches, with the ids it holds (none for a filter).
    let mut stores: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unknown = 0;
    match &request.selection {
        Selection::Filter(filter) => {
            for store in ctx.config.stores(ctx.environment, |t| filter.wants_task(t)) {
                stores.entry(String::from(store)).or_default();
            }
        }
        Selection::Ids(ids) => {
            for id in ids {
                match RunId::parse(id) {
                    Some(run) => {
                        let name = String::from(StoreName::new(ctx.environment, run.route()));
                        stores.entry(name).or_default().push(id.clone());
                    }
                    None => unknown += 1,
                }
            }
        }
    }
    let action = BulkAction::new(
        bulk_id(),
        request,
        now,
        stores.into_iter().collect(),
        unknown,
    );
    let command = CreateBulk {
        env: env(ctx),
        action: Box::new(action),
    };
    let created = client(ctx)?.send(command).await?;
    json_response(202, &serde_json::json!({ "id": created.id }))
}

/// `GET /api/v1/bulk-actions/{id}`.
pub async fn retrieve_bulk_action(ctx: &Ctx<'_>, id: &str) -> Result<Response, ApiError> {
    let command = GetBulk {
        env: env(ctx),
        id: id.to_owned(),
    };
    let action = client(ctx)?.send(command).await?.ok_or(NOT_FOUND)?;
    json_response(200, &BulkActionObject::new(&action))
}

/// `POST /api/v1/bulk-actions/{id}/abort` → `{"id"}`. A finished action stays as it is.
pub async fn abort_bulk_action(ctx: &Ctx<'_>, id: &str) -> Result<Response, ApiError> {
    let command = AbortBulk {
        env: env(ctx),
        id: id.to_owned(),
    };
    let action = client(ctx)?.send(command).await?.ok_or(NOT_FOUND)?;
    json_response(200, &serde_json::json!({ "id": action.id }))
}

/// `GET /api/v1/bulk-actions?page[size]=&page[after]=`: newest first.
pub async fn list_bulk_actions(ctx: &Ctx<'_>, req: &Incoming) -> Result<Response, ApiError> {
    let page = parse_list_page(query_of(req))?;
    let command = ListBulk {
        env: env(ctx),
        limit: page.size + 1,
        after: page.after,
    };
    let mut actions = client(ctx)?.send(command).await?;
    let more = actions.len() > page.size;
    actions.truncate(page.size);
    let next = more.then(|| actions.last().map(|a| a.id.clone())).flatten();
    let data: Vec<BulkActionObject> = actions.iter().map(BulkActionObject::new).collect();
    // `next` only when there is a next page: the SDK reads a `null` as malformed.
    let pagination = match next {
        Some(next) => serde_json::json!({ "next": next }),
        None => serde_json::json!({}),
    };
    json_response(
        200,
        &serde_json::json!({ "data": data, "pagination": pagination }),
    )
}
