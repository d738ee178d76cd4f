//! The queue gate's protocol.

use serde::{Deserialize, Serialize};

use crate::domain::scheduling::gate::{Lease, LimitUpdate, Ticket};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateCommand {
    /// Runs that should wait for a slot (one call per consumer batch and queue).
    Offer {
        /// The gate's own name (`<env>:<queue>`), which executors call back.
        gate: String,
        tickets: Vec<Ticket>,
        limit: Option<LimitUpdate>,
    },
    /// These attempts ended (run id, lease token): free their slots. The releasing
    /// executor takes up to `take` of the runs admitted into the freed slots from the
    /// reply (`executor::client::split_for_releaser`) instead of in hands of their own.
    Release {
        ended: Vec<(String, u64)>,
        #[serde(default)]
        take: usize,
    },
    /// The run was cancelled: forget it, waiting or running.
    Remove { run_id: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateReply {
    /// How many runs this call admitted. Those in `hand` are the caller's to run (a
    /// release that takes some); the others were handed to their executors.
    Admitted {
        count: usize,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hand: Vec<Lease>,
    },
}
