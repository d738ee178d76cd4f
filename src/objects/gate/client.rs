//! `QueueGateClient`: the only code that sends commands to queue gates or reads their replies.

use worker::Env;

use super::protocol::{GateCommand, GateReply};
use crate::domain::api::auth::Environment;
use crate::platform::rpc;

/// The Durable Object namespace binding of `QueueGate`.
pub const QUEUE_GATE: &str = "QUEUE_GATE";

/// The gate of `queue` in the environment whose slug is `env`: `<env>:<queue>`.
pub fn gate_name(env: &str, queue: &str) -> String {
    format!("{env}:{queue}")
}

/// The gate of a queue in `environment`.
pub fn gate_name_in(environment: Environment, queue: &str) -> String {
    gate_name(environment.slug(), queue)
}

pub struct QueueGateClient {
    object: rpc::ObjectStub,
}

impl QueueGateClient {
    pub fn new(env: &Env, name: &str) -> Result<QueueGateClient, rpc::CallError> {
        Ok(QueueGateClient {
            object: rpc::object(env, QUEUE_GATE, name)?,
        })
    }

    pub async fn call(&self, command: &GateCommand) -> Result<GateReply, rpc::CallError> {
        rpc::call(&self.object, command).await
    }
}
