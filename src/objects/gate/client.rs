//! `QueueGateClient`: the only code that sends commands to queue gates or reads their
//! replies, and the rule that names a gate.

use crate::domain::api::auth::Environment;
use crate::platform::rpc::Client;

use super::protocol::Gate;

/// A client of one queue gate (`protocol`).
pub type QueueGateClient = Client<Gate>;

/// The gate of `queue` in the environment whose slug is `env`: `<env>:<queue>`.
pub fn gate_name(env: &str, queue: &str) -> String {
    format!("{env}:{queue}")
}

/// The gate of a queue in `environment`.
pub fn gate_name_in(environment: Environment, queue: &str) -> String {
    gate_name(environment.slug(), queue)
}
