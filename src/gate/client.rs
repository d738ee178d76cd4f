//! `QueueGateClient`: the only code that builds queue-gate URLs or reads their replies.

use worker::{Env, Stub};

use super::protocol::{GateCommand, GateReply};
use crate::domain::auth::Environment;
use crate::rpc;

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
    stub: Stub,
}

impl QueueGateClient {
    pub fn new(env: &Env, name: &str) -> Result<QueueGateClient, rpc::CallError> {
        let stub = env
            .durable_object(QUEUE_GATE)?
            .id_from_name(name)?
            .get_stub()?;
        Ok(QueueGateClient { stub })
    }

    pub async fn call(&self, command: &GateCommand) -> Result<GateReply, rpc::CallError> {
        rpc::call(&self.stub, command).await
    }
}
