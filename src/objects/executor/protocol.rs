//! The run executor's protocol: one command, a hand of leases from a gate.

use serde::{Deserialize, Serialize};

use crate::domain::scheduling::gate::Lease;
use crate::platform::rpc;

/// The leases handed to an executor in one call: it answers at once, and starts their
/// attempts in the background.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hand {
    pub gate: String,
    pub leases: Vec<Lease>,
}

/// The run executor's side of the wire.
pub struct Executor;

impl rpc::Protocol for Executor {
    const BINDING: &'static str = "RUN_EXECUTOR";
    type Envelope = Hand;
}

impl rpc::Command for Hand {
    type Protocol = Executor;
    /// The hand's jobs are taken.
    type Reply = ();
}
