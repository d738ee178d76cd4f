//! The queue gate's protocol: the commands the consumer, the edge and the executors send
//! to a `QueueGate`, each answered with [`Admitted`].

use serde::{Deserialize, Serialize};

use crate::domain::scheduling::gate::{Control, Controls, Lease, LimitUpdate, Throttle, Ticket};
use crate::platform::rpc;

/// Every command a gate takes; on the wire a variant is `{"<snake_case name>": {…}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateCommand {
    Offer(Offer),
    Release(Release),
    Remove(Remove),
    RemoveRuns(RemoveRuns),
    Steer(Steer),
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
    RemoveRuns => Admitted,
    Steer => GateView,
});

/// Runs that should wait for a slot (one call per consumer batch and queue).
#[derive(Debug, Serialize, Deserialize)]
pub struct Offer {
    /// The gate's own name (`<env>:<queue>`), which executors call back.
    pub gate: String,
    pub tickets: Vec<Ticket>,
    pub limit: Option<LimitUpdate>,
    /// The total cap the queue declares (`totalConcurrencyLimit`); `None`: no cap.
    #[serde(default)]
    pub total_limit: Option<u32>,
    /// The rate per concurrency key the queue declares (`throttle`); `None`: none.
    #[serde(default)]
    pub throttle: Option<Throttle>,
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

/// These runs were cancelled together (a bulk action's page): forget each.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveRuns {
    pub run_ids: Vec<String>,
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

/// An operator's change through the queues API (pause, resume, override, reset), or a
/// look at the gate; answered with the gate as it is afterwards.
#[derive(Debug, Serialize, Deserialize)]
pub struct Steer {
    /// The gate's own name (`<env>:<queue>`): a queue may be steered before its first run.
    pub gate: String,
    pub control: Control,
}

/// A gate as the queues API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct GateView {
    /// Whether the gate was ever offered a run or steered: a queue no task declares
    /// exists once its gate is known.
    pub known: bool,
    /// The limit per key its runs set (declared or trigger-set), if any reached it.
    pub limit: Option<u32>,
    pub controls: Controls,
    pub running: u32,
    pub queued: u64,
}
