//! The queue gate's protocol.

use serde::{Deserialize, Serialize};

use crate::domain::gate::{LimitUpdate, Ticket};

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
    /// These attempts ended (run id, lease token): free their slots.
    Release { ended: Vec<(String, u64)> },
    /// The run was cancelled: forget it, waiting or running.
    Remove { run_id: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateReply {
    /// How many runs this call admitted (they were handed to their executors).
    Admitted { count: usize },
}
