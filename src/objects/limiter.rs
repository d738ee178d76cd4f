//! `RateLimiter`: the Durable Object that holds one environment's rate-limit buckets
//! (`domain::api::rate_limit`), named by the environment's slug. The edge asks it for each API
//! request that its isolate's grant of tokens taken ahead does not cover; nothing else
//! does.
//!
//! The buckets live in memory only: an object evicted after a quiet spell comes back with
//! full buckets, which is what the quiet spell would have refilled anyway for any
//! interval shorter than the eviction delay. No request ever waits on storage here.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::domain::api::auth::Environment;
use crate::domain::api::rate_limit::{Ahead, Buckets, Verdict};
use crate::platform::rpc;
use crate::platform::runtime::{internal, now};

/// The Durable Object namespace binding of `RateLimiter`.
pub const RATE_LIMITER: &str = "RATE_LIMITER";

/// One request to admit: it costs one request token and `items` run tokens; `ahead`
/// more are granted when the buckets hold them.
#[derive(Serialize, Deserialize)]
struct Take {
    items: u64,
    ahead: Ahead,
}

#[durable_object(fetch)]
pub struct RateLimiter {
    env: Env,
    buckets: RefCell<Buckets>,
}

impl DurableObject for RateLimiter {
    fn new(_state: State, env: Env) -> Self {
        RateLimiter {
            env,
            buckets: RefCell::new(Buckets::default()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        rpc::fetched(self.handle(&req.bytes().await?).await)
    }
}

crate::export_command!(RateLimiter);

impl RateLimiter {
    /// Admits one request, or not (`rpc::call`).
    async fn handle(&self, command: &[u8]) -> Result<String> {
        let take: Take = rpc::command(command, "rate-limit request")?;
        let config = crate::platform::settings::config(&self.env).map_err(internal)?;
        let verdict =
            self.buckets
                .borrow_mut()
                .take(&config.rate_limits, now(), take.items, take.ahead);
        rpc::reply(&verdict)
    }
}

/// Asks `environment`'s limiter to admit one request costing `items` runs, and to grant
/// `ahead` more tokens if it can.
pub async fn take(
    env: &Env,
    environment: Environment,
    items: u64,
    ahead: Ahead,
) -> std::result::Result<Verdict, rpc::CallError> {
    let limiter = rpc::object(env, RATE_LIMITER, environment.slug())?;
    rpc::call(&limiter, &Take { items, ahead }).await
}
