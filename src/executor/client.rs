//! Starting a `RunExecutor`: one object per admission, named `<run_id>:<token>`, so two
//! admissions of one run (a retry) never share an object.

use serde::{Deserialize, Serialize};
use worker::Env;

use crate::domain::gate::Lease;
use crate::rpc;

/// The Durable Object namespace binding of `RunExecutor`.
pub const RUN_EXECUTOR: &str = "RUN_EXECUTOR";

/// What an executor is asked to do: run the attempt that `lease` allows, then release it
/// at `gate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub gate: String,
    pub lease: Lease,
}

pub fn executor_name(lease: &Lease) -> String {
    format!("{}:{}", lease.ticket.run_id, lease.token)
}

/// Hands a lease to its executor, which records it and runs the attempt from its alarm.
pub async fn start_executor(env: &Env, gate: &str, lease: &Lease) -> Result<(), rpc::CallError> {
    let stub = env
        .durable_object(RUN_EXECUTOR)?
        .id_from_name(&executor_name(lease))?
        .get_stub()?;
    let job = Job {
        gate: gate.to_owned(),
        lease: lease.clone(),
    };
    let _: bool = rpc::call(&stub, &job).await?;
    Ok(())
}
