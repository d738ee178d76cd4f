//! A Trigger.dev-compatible task-queue API on Cloudflare Workers.
//!
//! Map of the crate:
//! - [`domain`]: the functional core. Every rule (trigger parsing and idempotency, a run's
//!   life, queue scheduling, what callers see and may do, and platform-free basics) as
//!   plain Rust with no `worker` types, unit-tested on the host.
//! - [`http`]: the stateless edge. Routes a request, admits it (API key, rate limits),
//!   reads and validates the body with the core, and calls the object that owns it.
//! - [`objects`]: the Durable Objects (`RunStore`, `QueueGate`, `RunExecutor`,
//!   `RateLimiter`), each with its protocol, typed client and schema.
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

use worker::{event, web_sys, Context, Env, MessageBatch, Response};

pub use objects::executor::RunExecutor;
pub use objects::gate::QueueGate;
pub use objects::limiter::RateLimiter;
pub use objects::store::RunStore;

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
    queue::consumer::consume(batch, env).await;
    Ok(())
}
