//! The rate limiter's protocol: one command, a request to admit.

use serde::{Deserialize, Serialize};

use crate::domain::api::rate_limit::{Ahead, Verdict};
use crate::platform::rpc;

/// One request to admit: it costs one request token and `items` run tokens; `ahead`
/// more are granted when the buckets hold them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Take {
    pub items: u64,
    pub ahead: Ahead,
}

/// The rate limiter's side of the wire.
pub struct Limiter;

impl rpc::Protocol for Limiter {
    const BINDING: &'static str = "RATE_LIMITER";
    type Envelope = Take;
}

impl rpc::Command for Take {
    type Protocol = Limiter;
    type Reply = Verdict;
}
