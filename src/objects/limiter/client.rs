//! `RateLimiterClient`: the only code that asks an environment's rate limiter.

use crate::domain::api::auth::Environment;
use crate::platform::rpc::{CallError, Client};
use worker::Env;

use super::protocol::{Limiter, Take};
use crate::domain::api::rate_limit::{Ahead, Verdict};

/// A client of one environment's rate limiter (`protocol`), named by its slug.
pub type RateLimiterClient = Client<Limiter>;

/// Asks `environment`'s limiter to admit one request costing `items` runs, and to grant
/// `ahead` more tokens if it can.
pub async fn take(
    env: &Env,
    environment: Environment,
    items: u64,
    ahead: Ahead,
) -> Result<Verdict, CallError> {
    RateLimiterClient::new(env, environment.slug())?
        .send(Take { items, ahead })
        .await
}
