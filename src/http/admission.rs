//! Admitting a request: its API key names its environment, and the environment's rate
//! limits take its tokens (docs/API.md section 1).

use std::cell::RefCell;
use std::collections::HashMap;

use worker::console_error;

use super::{Ctx, Incoming};
use crate::domain::api::auth::{AuthError, Environment};
use crate::domain::api::error::ApiError;
use crate::domain::api::rate_limit::{retry_after_secs, Ahead, Grant, Verdict};
use crate::domain::config::Config;

thread_local! {
    /// Rate-limit tokens this isolate holds per environment (`Ctx::admit`).
    static GRANTS: RefCell<HashMap<Environment, Grant>> = RefCell::default();
}

impl Ctx<'_> {
    /// Takes this request's tokens: one request, and `items` runs for a trigger (charged
    /// by the handler once it knows the count; the other routes are charged before their
    /// handler runs). From this isolate's grant when it covers them, otherwise from the
    /// environment's rate limiter, which also grants tokens ahead for what follows
    /// (`domain::api::rate_limit::Grant`). A limiter that cannot be reached admits the
    /// request: rate limiting protects the service, it must not be what stops it.
    pub async fn admit(&self, items: u64) -> Result<(), ApiError> {
        let limits = &self.config.rate_limits;
        if limits.is_off() {
            return Ok(());
        }
        let (env, now) = (self.environment, crate::platform::runtime::now());
        let mut renewing = false;
        let local = GRANTS.with(|grants| {
            let mut grants = grants.borrow_mut();
            let grant = grants.get_mut(&env)?;
            if let Some(ahead) = grant.renew(limits, now) {
                renewing = true; // this request asks for the next grant
                return Some(Err(ahead));
            }
            Some(
                grant
                    .spend(limits, now, items)
                    .ok_or_else(|| grant.next_ahead(limits, now)),
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
        let verdict = crate::objects::limiter::client::take(self.env, env, items, ahead).await;
        // A renewal that failed leaves the grant it would have replaced, to a later request.
        let spend_after_failed_renewal = || {
            GRANTS.with(|grants| {
                let mut grants = grants.borrow_mut();
                let grant = grants.get_mut(&env).filter(|_| renewing)?;
                grant.renewal_failed();
                Some(grant.spend(limits, now, items))
            })
        };
        match verdict {
            Ok(Verdict::Allowed { figures, ahead }) => {
                let grant = Grant::new(figures, ahead, items, now);
                GRANTS.with(|grants| grants.borrow_mut().insert(env, grant));
                self.rate.set(figures);
                Ok(())
            }
            Ok(Verdict::Limited { bucket, figures }) => {
                match spend_after_failed_renewal().flatten() {
                    // The grant still covers the request: its tokens left the buckets already.
                    Some(shown) => {
                        self.rate.set(shown);
                        Ok(())
                    }
                    None => Err(ApiError::RateLimited {
                        bucket,
                        figures,
                        retry_after_secs: retry_after_secs(figures.reset, now),
                    }),
                }
            }
            Err(e) => {
                spend_after_failed_renewal();
                console_error!("rate limiter unavailable, admitting the request: {e}");
                Ok(())
            }
        }
    }
}

pub(super) fn authenticate(req: &Incoming, config: &Config) -> Result<Environment, ApiError> {
    let header = req.header("authorization");
    config
        .keys
        .authenticate(header.as_deref())
        .map_err(|e| match e {
            AuthError::Missing => ApiError::MissingApiKey,
            AuthError::Unknown => ApiError::InvalidApiKey,
        })
}
