//! `RateLimiter`: the Durable Object that holds one environment's rate-limit buckets
//! (`domain::api::rate_limit`), named by the environment's slug. The edge asks it for each API
//! request that its isolate's grant of tokens taken ahead does not cover; nothing else
//! does.
//!
//! The buckets live in memory only: an object evicted after a quiet spell comes back with
//! full buckets, which is what the quiet spell would have refilled anyway for any
//! interval shorter than the eviction delay. No request ever waits on storage here, and
//! the object keeps no table, so it has no schema steps (one that starts keeping state
//! gets a `schema.rs` like the other objects).

pub mod client;
pub mod protocol;

use std::cell::RefCell;

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::domain::api::rate_limit::Buckets;
use crate::platform::meter::{self, Activity, Object};
use crate::platform::rpc::{self, answer};
use crate::platform::runtime::{internal, now};
use protocol::Take;

#[durable_object(fetch)]
pub struct RateLimiter {
    env: Env,
    buckets: RefCell<Buckets>,
    /// Work under way, for the operations account.
    activity: Activity,
}

impl DurableObject for RateLimiter {
    fn new(_state: State, env: Env) -> Self {
        meter::configure(&env);
        RateLimiter {
            env,
            buckets: RefCell::new(Buckets::default()),
            activity: Activity::default(),
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
        let _active = meter::request(Object::Limiter, &self.activity, None);
        let take = rpc::decode::<protocol::Limiter>(command)?;
        let config = crate::platform::settings::config(&self.env).map_err(|e| internal(e.0))?;
        let verdict =
            self.buckets
                .borrow_mut()
                .take(&config.rate_limits, now(), take.items, take.ahead);
        answer::<Take>(&verdict)
    }
}
