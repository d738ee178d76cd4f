//! A Trigger.dev-compatible task-queue API on Cloudflare Workers.
//!
//! Map of the crate:
//! - [`domain`]: the functional core. Every rule (auth, configuration, validation,
//!   durations, ids, idempotency, statuses and transitions, the gate's admission state
//!   machine, retry backoff, signatures, delivery packing, response shapes) as plain Rust
//!   with no `worker` types, unit-tested on the host.
//! - [`http`]: the stateless edge. Routes a request, checks its key, parses and validates
//!   the body with the core, and calls the object that owns it.
//! - [`store`]: the `RunStore` Durable Object (SQLite): runs, batches, idempotency keys and
//!   the delivery outbox of one environment and route; every status change of a run.
//! - [`gate`]: the `QueueGate` Durable Object: one queue's limit, waiting runs and leases.
//! - [`executor`]: the `RunExecutor` Durable Object, a small pool per gate: admitted
//!   attempts, started and reported in groups, and the signed call to the task's endpoint.
//! - [`group_commit`]: callers' items sent together, one flush at a time.
//! - [`consumer`]: the queue consumer that takes delivered runs to their gates.
//! - [`limiter`]: the `RateLimiter` Durable Object: one environment's rate-limit buckets.
//! - [`rpc`] and [`settings`]: the Durable Object call and the cached configuration.
//!
//! `docs/ARCHITECTURE.md` explains the data flow and where each invariant is enforced.

pub mod consumer;
pub mod domain;
pub mod executor;
pub mod gate;
pub mod group_commit;
pub mod http;
pub mod limiter;
pub mod offers;
pub mod packets;
pub mod rpc;
pub mod runtime;
pub mod settings;
pub mod store;

use worker::{event, web_sys, Context, Env, MessageBatch, Response};

pub use executor::RunExecutor;
pub use gate::QueueGate;
pub use limiter::RateLimiter;
pub use store::RunStore;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<Response> {
    Ok(http::handle(http::Incoming::new(req), env, ctx).await)
}

#[event(queue)]
async fn queue(
    batch: MessageBatch<serde_json::Value>,
    env: Env,
    _ctx: Context,
) -> worker::Result<()> {
    consumer::consume(batch, env).await;
    Ok(())
}
