//! The queue gate's protocol: the commands the consumer, the edge and the executors send
//! to a `QueueGate`, each answered with [`Admitted`].

use serde::{Deserialize, Serialize};

use crate::domain::scheduling::gate::{Lease, LimitUpdate, Ticket};
use crate::platform::rpc;

/// Every command a gate takes; on the wire a variant is `{"<snake_case name>": {…}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateCommand {
    Offer(Offer),
    Release(Release),
    Remove(Remove),
}

/// The queue gate's side of the wire.
pub struct Gate;

impl rpc::Protocol for Gate {
    const BINDING: &'static str = "QUEUE_GATE";
    type Envelope = GateCommand;
}

crate::commands!(Gate => GateCommand {
    Offer => Admitted,
    Release => Admitted,
    Remove => Admitted,
});

/// Runs that should wait for a slot (one call per consumer batch and queue).
#[derive(Debug, Serialize, Deserialize)]
pub struct Offer {
    /// The gate's own name (`<env>:<queue>`), which executors call back.
    pub gate: String,
    pub tickets: Vec<Ticket>,
    pub limit: Option<LimitUpdate>,
}

/// These attempts ended (run id, lease token): free their slots. The releasing executor
/// takes up to `take` of the runs admitted into the freed slots from the reply
/// (`domain::scheduling::gate::split_for_releaser`) instead of in hands of their own.
#[derive(Debug, Serialize, Deserialize)]
pub struct Release {
    pub ended: Vec<(String, u64)>,
    #[serde(default)]
    pub take: usize,
}

/// The run was cancelled: forget it, waiting or running.
#[derive(Debug, Serialize, Deserialize)]
pub struct Remove {
    pub run_id: String,
}

/// The answer to every gate command: how many runs this call admitted. Those in `hand`
/// are the caller's to run (a release that takes some); the others were handed to their
/// executors.
#[derive(Debug, Serialize, Deserialize)]
pub struct Admitted {
    pub count: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hand: Vec<Lease>,
}
