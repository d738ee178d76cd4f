//! The edge: the stateless fetch handler. It routes, loads the configuration, admits the
//! request (`admission`: the API key and the rate limits), and hands it to its handler
//! (`batches`, `two_step`, `runs`, `bulk`, `queues`, `schedules`, `packets`,
//! `example`), which reads its body (`body`)
//! and answers (`respond`); every failure becomes one `{"error"}` response through
//! `ApiError::render`.

mod admission;
mod batches;
mod body;
mod bulk;
mod example;
mod incoming;
mod packets;
mod queues;
mod respond;
pub mod routes;
mod runs;
pub mod schedules;
mod two_step;

use std::cell::Cell;
use std::rc::Rc;

use worker::{Context, Env};

use crate::domain::api::auth::Environment;
use crate::domain::api::error::{rate_limit_headers, ApiError};
use crate::domain::api::rate_limit::Figures;
use crate::domain::config::Config;
use admission::authenticate;
pub use body::{drain, read_body, BodyPace, BODY_TIME_MS, MAX_BODY_BYTES};
pub use incoming::Incoming;
use respond::error_response;
pub use respond::{json_response, origin_of, query_of, text_response, Response};
use routes::{route, NoRoute, Route};

pub async fn handle(req: Incoming, env: Env, context: Context) -> Response {
    let result = dispatch(req, &env, &context).await;
    result.unwrap_or_else(|err| error_response(&err))
}

async fn dispatch(req: Incoming, env: &Env, context: &Context) -> Result<Response, ApiError> {
    crate::platform::meter::configure(env);
    let parts = req.url().ok_or(ApiError::NotFound("Not found"))?;
    let route = route(&req.method(), parts.path);
    if !matches!(route, Ok(Route::Meter)) {
        crate::platform::meter::fetch_invocation();
    }
    let route = route.map_err(|e| match e {
        NoRoute::NotFound => ApiError::NotFound("Not found"),
        NoRoute::MethodNotAllowed { allow } => ApiError::MethodNotAllowed { allow },
    })?;
    let config = crate::platform::settings::config(env)?;
    match &route {
        // Called by this worker's executors, signed; it takes no API key.
        Route::ExampleTask { task } => return example::run_example(&config, req, task).await,
        // The SDK's upload to a URL this worker signed; it takes no API key.
        Route::UploadPacket { env: slug, path } => {
            return packets::upload_packet(&config, env, req, slug, path).await;
        }
        // The SDK's read of a URL this worker signed; it takes no API key.
        Route::RunOutput { env: slug, run_id } => {
            return runs::read_output(&config, env, &req, slug, run_id).await;
        }
        // A public list, as on Trigger.dev.
        Route::Timezones => return schedules::timezones(&req),
        _ => {}
    }
    let environment = authenticate(&req, &config)?;
    if let Route::Meter = route {
        return meter();
    }
    let ctx = Ctx {
        env,
        config: &config,
        environment,
        context,
        rate: Cell::new(None),
    };
    if !route.charges_items() {
        ctx.admit(0).await?;
    }
    schedules::wake_once(&ctx);
    let result = serve(&ctx, route, req).await;
    // Every admitted request shows its environment's request bucket, as Trigger.dev does.
    let Some(figures) = ctx.rate.get() else {
        return result;
    };
    let mut response = result.unwrap_or_else(|err| error_response(&err));
    for (name, value) in rate_limit_headers(&figures) {
        response.set_header(name, value);
    }
    Ok(response)
}

async fn serve(ctx: &Ctx<'_>, route: Route, req: Incoming) -> Result<Response, ApiError> {
    match route {
        Route::TriggerBatch { task } => batches::trigger_batch(ctx, req, &task).await,
        Route::TriggerTask { task } => batches::trigger_task(ctx, req, &task).await,
        Route::ListRuns => runs::list_runs(ctx, &req).await,
        Route::RetrieveBatchV2 { batch_id } => runs::retrieve_batch_v2(ctx, &batch_id).await,
        Route::ReplayRun { run_id } => runs::replay_run(ctx, &run_id).await,
        Route::RescheduleRun { run_id } => runs::reschedule_run(ctx, req, &run_id).await,
        Route::ResetIdempotencyKey { key } => runs::reset_idempotency_key(ctx, req, &key).await,
        Route::CreateBatch => two_step::create_batch(ctx, req).await,
        Route::CreatePacketUrl { filename } => {
            packets::create_packet_url(ctx, &req, &filename).await
        }
        Route::StreamBatchItems { batch_id } => two_step::stream_items(ctx, req, &batch_id).await,
        Route::RetrieveRun { run_id } => runs::retrieve_run(ctx, &req, &run_id).await,
        Route::RetrieveBatch { batch_id } => runs::retrieve_batch(ctx, &batch_id).await,
        Route::CancelRun { run_id } => runs::cancel_run(ctx, &run_id).await,
        Route::RunResult { run_id } => runs::run_result(ctx, &run_id).await,
        Route::BatchResults { batch_id } => runs::batch_results(ctx, &batch_id).await,
        Route::GetMetadata { run_id } => runs::get_metadata(ctx, &run_id).await,
        Route::UpdateMetadata { run_id } => runs::update_metadata(ctx, req, &run_id).await,
        Route::AddTags { run_id } => runs::add_tags(ctx, req, &run_id).await,
        Route::ListQueues => queues::list_queues(ctx, &req).await,
        Route::RetrieveQueue { queue } => queues::retrieve_queue(ctx, &req, &queue).await,
        Route::PauseQueue { queue } => queues::pause_queue(ctx, req, &queue).await,
        Route::OverrideQueue { queue } => queues::override_queue(ctx, req, &queue).await,
        Route::ResetQueue { queue } => queues::reset_queue(ctx, req, &queue).await,
        Route::Activity => runs::activity(ctx, &req).await,
        Route::CreateBulkAction => bulk::create_bulk_action(ctx, req).await,
        Route::ListBulkActions => bulk::list_bulk_actions(ctx, &req).await,
        Route::RetrieveBulkAction { id } => bulk::retrieve_bulk_action(ctx, &id).await,
        Route::AbortBulkAction { id } => bulk::abort_bulk_action(ctx, &id).await,
        Route::CreateSchedule => schedules::create_schedule(ctx, req).await,
        Route::ListSchedules => schedules::list_schedules(ctx, &req).await,
        Route::RetrieveSchedule { id } => schedules::retrieve_schedule(ctx, &id).await,
        Route::UpdateSchedule { id } => schedules::update_schedule(ctx, req, &id).await,
        Route::DeleteSchedule { id } => schedules::delete_schedule(ctx, &id).await,
        Route::ActivateSchedule { id, active } => {
            schedules::activate_schedule(ctx, &id, active).await
        }
        Route::ExampleTask { .. }
        | Route::UploadPacket { .. }
        | Route::RunOutput { .. }
        | Route::Timezones
        | Route::Meter => {
            unreachable!("served before admission")
        }
    }
}

/// `GET /api/v1/meter`: the operations account of this isolate (`platform::meter`).
fn meter() -> Result<Response, ApiError> {
    if !crate::platform::meter::on() {
        return Err(ApiError::NotFound(
            "Metering is off: set the METERING var to \"on\"",
        ));
    }
    let account = crate::platform::meter::snapshot();
    json_response(200, &crate::domain::cost::Statement::of(&account))
}

/// What every handler gets: bindings, configuration, and the caller's environment.
pub struct Ctx<'a> {
    pub env: &'a Env,
    pub config: &'a Rc<Config>,
    pub environment: Environment,
    /// For work that may finish after the response (offering new runs to their gates).
    pub context: &'a Context,
    /// The request bucket's figures once the limiter admitted the request.
    rate: Cell<Option<Figures>>,
}

impl Ctx<'_> {
    /// Offers runs a trigger just created to their gates, after the response: they can
    /// start without waiting for the queue, which delivers them anyway.
    pub fn offer_soon(&self, store: &str, ready: Vec<crate::objects::store::protocol::ClaimedRun>) {
        if ready.is_empty() {
            return;
        }
        let mut offers = crate::queue::offers::Offers::new(self.config.clone());
        for run in ready {
            offers.add(store, run);
        }
        let env = self.env.clone();
        self.context.wait_until(async move {
            offers.send(&env).await;
        });
    }
}
