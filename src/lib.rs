//! A Trigger.dev-compatible task-queue API on Cloudflare Workers.
//!
//! Map of the crate:
//! - [`domain`]: the functional core. Every rule (trigger parsing and idempotency, a run's
//!   life, queue scheduling, what callers see and may do, and platform-free basics) as
//!   plain Rust with no `worker` types, unit-tested on the host.
//! - [`http`]: the stateless edge. Routes a request, admits it (API key, rate limits),
//!   reads and validates the body with the core, and calls the object that owns it.
//! - [`objects`]: the Durable Objects (`RunStore`, `QueueGate`, `RunExecutor`,
//!   `RateLimiter`, `Scheduler`, `BulkActions`), each with its protocol, typed client and schema.
//! - [`queue`]: the queue stage, from a store's outbox to a gate: the consumer and the
//!   grouped offers.
//! - [`platform`]: glue every adapter shares: calls between objects, the runtime's clock
//!   and alarms, the configuration, SQLite helpers and migrations, offloaded payloads.
//!
//! `docs/ARCHITECTURE.md` explains the data flow and where each invariant is enforced;
//! `docs/API.md` is the contract.

pub mod domain;
pub mod http;
pub mod objects;
pub mod platform;
pub mod queue;

use worker::{event, web_sys, Context, Env, MessageBatch, ScheduleContext, ScheduledEvent};

pub use objects::bulk::BulkActions;
pub use objects::executor::RunExecutor;
pub use objects::gate::QueueGate;
pub use objects::limiter::RateLimiter;
pub use objects::scheduler::Scheduler;
pub use objects::store::RunStore;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    http::handle(http::Incoming::new(req), env, ctx)
        .await
        .into_raw()
}

#[event(queue)]
async fn queue(
    batch: MessageBatch<serde_json::Value>,
    env: Env,
    _ctx: Context,
) -> worker::Result<()> {
    queue::consumer::consume(batch, env).await;
    Ok(())
}

/// The Cron Trigger (`[triggers] crons` in wrangler.toml, every minute once deployed):
/// wakes the scheduler of each environment with declared schedules, so that they start
/// after a deploy without waiting for a request. The schedules' own timing is their
/// scheduler's alarm, to the second.
#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let Ok(config) = platform::settings::config(&env) else {
        return;
    };
    for environment in config.keys.environments() {
        if !config.declared_schedules(environment).is_empty() {
            http::schedules::wake(&env, environment.slug()).await;
        }
    }
}
