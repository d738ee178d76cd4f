//! The schedules API (docs/API.md section 8): create (or update by deduplication key),
//! list, retrieve, update, activate and deactivate, delete, and the time zones. Each call
//! is one command to the caller's environment's `Scheduler`; bodies, zones and tasks are
//! checked here first.

use super::{json_response, query_of, read_body, Ctx, Incoming, Response};
use crate::domain::api::error::ApiError;
use crate::domain::api::queues::parse_list_page;
use crate::domain::api::schedules::{
    exclude_utc, parse_create_body, parse_update_body, Pagination, ScheduleBody, ScheduleList,
    ScheduleObject, MAX_SCHEDULE_BODY_BYTES,
};
use crate::domain::schedule::Schedule;
use crate::objects::scheduler::client::SchedulerClient;
use crate::objects::scheduler::protocol::{
    Create, DeleteSchedule, GetSchedule, ListSchedules, ScheduleReply, SetActive, Update, Wake,
};
use crate::platform::zones::{names, Zone};

const NOT_FOUND: ApiError = ApiError::NotFound("Schedule not found");

fn scheduler(ctx: &Ctx<'_>) -> Result<SchedulerClient, ApiError> {
    Ok(SchedulerClient::new(ctx.env, ctx.environment.slug())?)
}

fn env(ctx: &Ctx<'_>) -> String {
    ctx.environment.slug().to_owned()
}

/// A body whose task is declared and whose zone the runtime knows.
async fn checked(ctx: &Ctx<'_>, req: Incoming, create: bool) -> Result<ScheduleBody, ApiError> {
    let body = read_body(&req, MAX_SCHEDULE_BODY_BYTES).await?;
    let parsed = match create {
        true => parse_create_body(&body)?,
        false => parse_update_body(&body)?,
    };
    if !ctx.config.tasks.contains_key(&parsed.spec.task) {
        return Err(ApiError::Unprocessable(format!(
            "Task not found: {}",
            parsed.spec.task
        )));
    }
    if Zone::named(&parsed.spec.timezone).is_none() {
        return Err(ApiError::Unprocessable(format!(
            "Invalid timezone: {} is not an IANA time zone (GET /api/v1/timezones lists them)",
            parsed.spec.timezone
        )));
    }
    Ok(parsed)
}

fn view(ctx: &Ctx<'_>, schedule: &Schedule) -> Result<Response, ApiError> {
    json_response(200, &ScheduleObject::new(schedule, ctx.environment))
}

/// The reply of a command about one schedule, as the API answers it.
fn answered(ctx: &Ctx<'_>, reply: ScheduleReply) -> Result<Response, ApiError> {
    match reply {
        ScheduleReply::Schedule(schedule) => view(ctx, &schedule),
        ScheduleReply::NotFound => Err(NOT_FOUND),
        ScheduleReply::Declared => Err(ApiError::Unprocessable(
            "Cannot update a declarative schedule: change the task's schedule in its declaration"
                .into(),
        )),
    }
}

/// `POST /api/v1/schedules`.
pub async fn create_schedule(ctx: &Ctx<'_>, req: Incoming) -> Result<Response, ApiError> {
    let body = checked(ctx, req, true).await?;
    let command = Create {
        env: env(ctx),
        dedup_key: body.dedup_key.ok_or(ApiError::Internal { retry: false })?,
        spec: body.spec,
    };
    answered(ctx, scheduler(ctx)?.send(command).await?)
}

/// `PUT /api/v1/schedules/{id}`.
pub async fn update_schedule(ctx: &Ctx<'_>, req: Incoming, id: &str) -> Result<Response, ApiError> {
    let body = checked(ctx, req, false).await?;
    let command = Update {
        env: env(ctx),
        id: id.to_owned(),
        spec: body.spec,
    };
    answered(ctx, scheduler(ctx)?.send(command).await?)
}

/// `GET /api/v1/schedules/{id}`.
pub async fn retrieve_schedule(ctx: &Ctx<'_>, id: &str) -> Result<Response, ApiError> {
    let command = GetSchedule {
        env: env(ctx),
        id: id.to_owned(),
    };
    answered(ctx, scheduler(ctx)?.send(command).await?)
}

/// `POST /api/v1/schedules/{id}/activate` or `…/deactivate`.
pub async fn activate_schedule(
    ctx: &Ctx<'_>,
    id: &str,
    active: bool,
) -> Result<Response, ApiError> {
    let command = SetActive {
        env: env(ctx),
        id: id.to_owned(),
        active,
    };
    answered(ctx, scheduler(ctx)?.send(command).await?)
}

/// `DELETE /api/v1/schedules/{id}`: `{"id"}` of the schedule deleted.
pub async fn delete_schedule(ctx: &Ctx<'_>, id: &str) -> Result<Response, ApiError> {
    let command = DeleteSchedule {
        env: env(ctx),
        id: id.to_owned(),
    };
    match scheduler(ctx)?.send(command).await? {
        ScheduleReply::Schedule(schedule) => {
            json_response(200, &serde_json::json!({ "id": schedule.id }))
        }
        ScheduleReply::Declared => Err(ApiError::Unprocessable(
            "Cannot delete a declarative schedule: remove the schedule from the task's declaration"
                .into(),
        )),
        ScheduleReply::NotFound => Err(NOT_FOUND),
    }
}

/// `GET /api/v1/schedules?page=&perPage=`: in the order they were made.
pub async fn list_schedules(ctx: &Ctx<'_>, req: &Incoming) -> Result<Response, ApiError> {
    let page = parse_list_page(query_of(req))?;
    let command = ListSchedules {
        env: env(ctx),
        page: page.page,
        per_page: page.per_page,
    };
    let list = scheduler(ctx)?.send(command).await?;
    json_response(
        200,
        &ScheduleList {
            data: list
                .schedules
                .iter()
                .map(|s| ScheduleObject::new(s, ctx.environment))
                .collect(),
            pagination: Pagination::new(page.page, page.per_page, list.count),
        },
    )
}

/// `GET /api/v1/timezones?excludeUtc=`: every zone the runtime knows (no API key needed,
/// as on Trigger.dev).
pub fn timezones(req: &Incoming) -> Result<Response, ApiError> {
    let zones = names(!exclude_utc(query_of(req)));
    json_response(200, &serde_json::json!({ "timezones": zones }))
}

/// Wakes the caller's environment's scheduler once per isolate when the configuration
/// declares schedules for it, after the response: under `wrangler dev`, which runs no
/// Cron Triggers, this is what starts declared schedules.
pub fn wake_once(ctx: &Ctx<'_>) {
    thread_local! {
        static WOKEN: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let slug = ctx.environment.slug();
    if WOKEN.with_borrow(|w| w.contains(&slug)) {
        return;
    }
    WOKEN.with_borrow_mut(|w| w.push(slug));
    if ctx.config.declared_schedules(ctx.environment).is_empty() {
        return;
    }
    let env = ctx.env.clone();
    ctx.context.wait_until(async move {
        wake(&env, slug).await;
    });
}

/// Sends [`Wake`] to one environment's scheduler, logging a failure.
pub async fn wake(env: &worker::Env, slug: &str) {
    let sent = match SchedulerClient::new(env, slug) {
        Ok(client) => client
            .send(Wake {
                env: slug.to_owned(),
            })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        worker::console_error!("waking the scheduler of {slug} failed: {e}");
    }
}
