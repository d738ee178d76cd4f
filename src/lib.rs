//! A Trigger.dev-compatible task-queue API on Cloudflare Workers.
//!
//! Map of the crate:
//! - [`domain`]: the functional core. Every rule (auth, validation, durations, ids,
//!   idempotency, statuses, delivery packing, response shapes) as plain Rust with no
//!   `worker` types, unit-tested on the host.
//! - [`http`]: the stateless edge. Routes a request, checks its key, parses and validates
//!   the body with the core, and calls the store that owns the task.
//! - [`store`]: the `RunStore` Durable Object (SQLite): runs, batches, idempotency keys,
//!   queue limits and the delivery outbox of one environment and route, with its typed
//!   client and protocol.
//! - [`consumer`]: the queue consumer that receives run references.
//!
//! `docs/ARCHITECTURE.md` explains the data flow and where each invariant is enforced.

pub mod consumer;
pub mod domain;
pub mod http;
pub mod store;

use worker::{event, Context, Env, MessageBatch, Request, Response};

pub use store::RunStore;

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    Ok(http::handle(req, env).await)
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
