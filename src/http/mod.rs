//! The edge: the stateless fetch handler. It routes, loads the configuration, checks the
//! API key, and hands each request to its handler; every failure becomes one
//! `{"error"}` response through `ApiError::render`.

mod batches;
mod example;
mod incoming;
mod packets;
pub mod routes;
mod runs;
mod two_step;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde::Serialize;
use worker::{console_error, ByteStream, Context, Delay, Env, Response};

use crate::domain::auth::{AuthError, Environment};
use crate::domain::config::Config;
use crate::domain::error::{rate_limit_headers, ApiError};
use crate::domain::http_body::next_chunk_wait;
use crate::domain::rate_limit::{retry_after_secs, Ahead, Figures, Grant, Verdict};
use crate::domain::time::Millis;
pub use incoming::Incoming;
use routes::{route, NoRoute, Route};

/// The largest request body read (API.md section 2): 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub async fn handle(req: Incoming, env: Env, context: Context) -> Response {
    let result = dispatch(req, &env, &context).await;
    result.unwrap_or_else(|err| error_response(&err))
}

async fn dispatch(req: Incoming, env: &Env, context: &Context) -> Result<Response, ApiError> {
    let parts = req.url().ok_or(ApiError::NotFound("Not found"))?;
    let route = route(&req.method(), parts.path).map_err(|e| match e {
        NoRoute::NotFound => ApiError::NotFound("Not found"),
        NoRoute::MethodNotAllowed { allow } => ApiError::MethodNotAllowed { allow },
    })?;
    let config = crate::settings::config(env).map_err(ApiError::Misconfigured)?;
    match &route {
        // Called by this worker's executors, signed; it takes no API key.
        Route::ExampleTask { task } => return example::run_example(&config, req, task).await,
        // The SDK's upload to a URL this worker signed; it takes no API key.
        Route::UploadPacket { env: slug, path } => {
            return packets::upload_packet(&config, env, req, slug, path).await;
        }
        _ => {}
    }
    let environment = authenticate(&req, &config)?;
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
    let result = serve(&ctx, route, req).await;
    // Every admitted request shows its environment's request bucket, as Trigger.dev does.
    let Some(figures) = ctx.rate.get() else {
        return result;
    };
    let mut response = result.unwrap_or_else(|err| error_response(&err));
    for (name, value) in rate_limit_headers(&figures) {
        // Headers of a response built here are never immutable.
        let _ = response.headers_mut().set(name, &value);
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
        Route::ExampleTask { .. } | Route::UploadPacket { .. } => {
            unreachable!("served before authentication")
        }
    }
}

thread_local! {
    /// Rate-limit tokens this isolate holds per environment (`Ctx::admit`).
    static GRANTS: RefCell<HashMap<Environment, Grant>> = RefCell::default();
}

/// What every handler gets: bindings, configuration, and the caller's environment.
pub struct Ctx<'a> {
    pub env: &'a Env,
    pub config: &'a Config,
    pub environment: Environment,
    /// For work that may finish after the response (offering new runs to their gates).
    pub context: &'a Context,
    /// The request bucket's figures once the limiter admitted the request.
    rate: Cell<Option<Figures>>,
}

impl Ctx<'_> {
    /// Takes this request's tokens: one request, and `items` runs for a trigger (charged
    /// by the handler once it knows the count; the other routes are charged before their
    /// handler runs). From this isolate's grant when it covers them, otherwise from the
    /// environment's rate limiter, which also grants tokens ahead for what follows
    /// (`domain::rate_limit::Grant`). A limiter that cannot be reached admits the
    /// request: rate limiting protects the service, it must not be what stops it.
    pub async fn admit(&self, items: u64) -> Result<(), ApiError> {
        let limits = &self.config.rate_limits;
        if limits.is_off() {
            return Ok(());
        }
        let (env, now) = (self.environment, crate::runtime::now());
        let local = GRANTS.with(|grants| {
            let mut grants = grants.borrow_mut();
            let grant = grants.get_mut(&env)?;
            Some(
                grant
                    .spend(limits, now, items)
                    .ok_or_else(|| grant.next_ahead(limits)),
            )
        });
        let ahead = match local {
            Some(Ok(figures)) => {
                self.rate.set(figures);
                return Ok(());
            }
            Some(Err(ahead)) => ahead,
            None => Ahead::default(),
        };
        match crate::limiter::take(self.env, env, items, ahead).await {
            Ok(Verdict::Allowed { figures, ahead }) => {
                let grant = Grant::new(figures, ahead, items, now);
                GRANTS.with(|grants| grants.borrow_mut().insert(env, grant));
                self.rate.set(figures);
                Ok(())
            }
            Ok(Verdict::Limited { bucket, figures }) => Err(ApiError::RateLimited {
                bucket,
                figures,
                retry_after_secs: retry_after_secs(figures.reset, now),
            }),
            Err(e) => {
                console_error!("rate limiter unavailable, admitting the request: {e}");
                Ok(())
            }
        }
    }

    /// Offers runs a trigger just created to their gates, after the response: they can
    /// start without waiting for the queue, which delivers them anyway.
    pub fn offer_soon(&self, store: &str, ready: Vec<crate::store::protocol::ClaimedRun>) {
        if ready.is_empty() {
            return;
        }
        let mut offers = crate::offers::Offers::default();
        for run in ready {
            offers.add(store, run);
        }
        let env = self.env.clone();
        self.context.wait_until(async move {
            offers.send(&env).await;
        });
    }
}

fn authenticate(req: &Incoming, config: &Config) -> Result<Environment, ApiError> {
    let header = req.header("authorization");
    config
        .keys
        .authenticate(header.as_deref())
        .map_err(|e| match e {
            AuthError::Missing => ApiError::MissingApiKey,
            AuthError::Unknown => ApiError::InvalidApiKey,
        })
}

/// Reads the body, refusing more than `limit` bytes by `content-length` or while
/// streaming, so an oversized body is never buffered; a body sent too slowly is a 408.
pub async fn read_body(req: &Incoming, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = crate::runtime::content_length(req.headers());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let Some(mut stream) = req.body() else {
        return Ok(body); // no body at all
    };
    let pace = BodyPace::start(BODY_TIME_MS);
    while let Some(chunk) = pace.next(&mut stream).await? {
        if body.len() + chunk.len() > limit {
            drain(&mut stream).await;
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn unreadable(e: worker::Error) -> ApiError {
    console_error!("reading the request body failed: {e}");
    ApiError::BadRequest("Could not read the request body".into())
}

/// Reads (and drops) a little of what a client is still sending before it is refused, so
/// that the connection is not left half-read (wrangler's dev proxy then fails, or fails
/// the next request). Bounded in bytes and time: a client cannot keep us reading.
pub async fn drain(stream: &mut ByteStream) {
    const DRAIN_BYTES: usize = 4 * 1024 * 1024;
    const DRAIN_MS: Millis = 2_000;
    let (mut drained, pace) = (0, BodyPace::start(DRAIN_MS));
    while drained < DRAIN_BYTES {
        match pace.next(stream).await {
            Ok(Some(chunk)) => drained += chunk.len(),
            _ => break,
        }
    }
}

/// The longest a whole body (3 MiB at most) may take to arrive.
pub const BODY_TIME_MS: Millis = 60_000;

/// How slowly a client may send a body (a slowloris defence): each chunk must come within
/// [`BODY_IDLE_MS`](crate::domain::http_body::BODY_IDLE_MS) of the previous one, and the
/// body must end by a deadline; otherwise the read ends with `408`.
pub struct BodyPace {
    deadline: Millis,
}

impl BodyPace {
    pub fn start(total_ms: Millis) -> BodyPace {
        BodyPace {
            deadline: crate::runtime::now() + total_ms,
        }
    }

    /// The next chunk, `None` at the end of the body.
    pub async fn next(&self, stream: &mut ByteStream) -> Result<Option<Vec<u8>>, ApiError> {
        let wait = next_chunk_wait(crate::runtime::now(), self.deadline)
            .ok_or(ApiError::RequestTimeout)?;
        let timer = Delay::from(std::time::Duration::from_millis(wait as u64));
        match select(stream.next(), timer).await {
            Either::Left((Some(Ok(chunk)), _)) => Ok(Some(chunk)),
            Either::Left((None, _)) => Ok(None),
            Either::Left((Some(Err(e)), _)) => Err(unreadable(e)),
            Either::Right(_) => Err(ApiError::RequestTimeout),
        }
    }
}

/// The query of the request's URL (without `?`), empty when there is none.
pub fn query_of(req: &Incoming) -> &str {
    req.url().map_or("", |p| p.query)
}

/// The request's origin (`scheme://host[:port]`), to build URLs on this worker.
pub fn origin_of(req: &Incoming) -> &str {
    req.url().map_or("", |p| p.origin)
}

/// A JSON response with any status (202 for a created two-step batch).
pub fn json_response(status: u16, value: &impl Serialize) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        console_error!("encoding a response failed: {e}");
        ApiError::Internal { retry: false }
    })?;
    bytes_response(status, body, &[])
}

fn bytes_response(
    status: u16,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<Response, ApiError> {
    let build = || -> worker::Result<Response> {
        let response = Response::from_bytes(body)?.with_status(status);
        let h = response.headers();
        h.set("content-type", "application/json")?;
        for (name, value) in headers {
            h.set(name, value)?;
        }
        Ok(response)
    };
    build().map_err(|e| {
        console_error!("building a response failed: {e}");
        ApiError::Internal { retry: false }
    })
}

fn error_response(err: &ApiError) -> Response {
    let rendered = err.render();
    bytes_response(
        rendered.status,
        rendered.body.into_bytes(),
        &rendered.headers,
    )
    .or_else(|_| Response::error("Internal server error", 500))
    .unwrap_or_else(|_| Response::empty().expect("an empty response can always be built"))
}
