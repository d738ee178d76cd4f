//! Handing a lease to a `RunExecutor`. A gate's executors are a pool of `EXECUTOR_POOL`
//! objects, `<gate>#<n>` with `n` the lease token modulo the pool's size: objects are
//! reused across attempts, and a gate's attempts spread over several of them.

use serde::{Deserialize, Serialize};
use worker::Env;

use crate::domain::gate::Lease;
use crate::rpc;

/// The Durable Object namespace binding of `RunExecutor`.
pub const RUN_EXECUTOR: &str = "RUN_EXECUTOR";

/// Executors per gate.
pub const EXECUTOR_POOL: u64 = 8;

/// What an executor is asked to do: run the attempt that `lease` allows, then release it
/// at `gate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub gate: String,
    pub lease: Lease,
}

impl Job {
    /// Unique per admission: two admissions of one run (a retry) are two jobs.
    pub fn key(&self) -> String {
        format!("{}:{}", self.lease.ticket.run_id, self.lease.token)
    }
}

pub fn executor_name(gate: &str, lease: &Lease) -> String {
    format!("{gate}#{}", lease.token % EXECUTOR_POOL)
}

/// Hands a lease to its executor, which records it and starts the attempt.
pub async fn start_executor(env: &Env, gate: &str, lease: &Lease) -> Result<(), rpc::CallError> {
    let stub = env
        .durable_object(RUN_EXECUTOR)?
        .id_from_name(&executor_name(gate, lease))?
        .get_stub()?;
    let job = Job {
        gate: gate.to_owned(),
        lease: lease.clone(),
    };
    let _: bool = rpc::call(&stub, &job).await?;
    Ok(())
}
