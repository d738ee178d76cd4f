//! `RunExecutor`: the Durable Object that runs one admitted attempt. One object per
//! admission (`<run_id>:<token>`): the gate hands it the lease, it records it and wakes by
//! alarm, so the attempt runs outside any queue consumer and may last its whole
//! `maxDuration`. An alarm is retried by the runtime until it succeeds; the store's
//! compare-and-set start makes sure a retried alarm never runs the attempt twice
//! (DESIGN invariant 5): a restarted executor reports the attempt failed instead.

mod call;
pub mod client;

use worker::{
    console_error, console_log, durable_object, DurableObject, Env, Request, Response, Result,
    State,
};

use crate::gate::client::QueueGateClient;
use crate::gate::protocol::GateCommand;
use crate::store::client::RunStoreClient;
use crate::store::protocol::{AttemptOutcome, StoreCommand, StoreReply};
use client::Job;

const JOB: &str = "job";
/// The attempt's outcome, kept until the store has it, so that a retried alarm reports
/// the real result instead of calling the endpoint again.
const OUTCOME: &str = "outcome";

#[durable_object]
pub struct RunExecutor {
    state: State,
    env: Env,
}

impl DurableObject for RunExecutor {
    fn new(state: State, env: Env) -> Self {
        RunExecutor { state, env }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let job: Job = serde_json::from_slice(&req.bytes().await?)
            .map_err(|e| worker::Error::RustError(format!("bad job: {e}")))?;
        let storage = self.state.storage();
        storage.put(JOB, &job).await?;
        storage.set_alarm(0).await?;
        Response::from_json(&true)
    }

    async fn alarm(&self) -> Result<Response> {
        let storage = self.state.storage();
        let Some(job) = storage.get::<Job>(JOB).await? else {
            return Response::ok("");
        };
        self.run(&job).await.map_err(worker::Error::RustError)?;
        storage.delete_all().await?;
        Response::ok("")
    }
}

fn restarted_error() -> AttemptOutcome {
    call::failure(
        "ExecutorRestarted",
        "the executor restarted during the attempt; its result is unknown",
    )
}

impl RunExecutor {
    async fn run(&self, job: &Job) -> std::result::Result<(), String> {
        let ticket = &job.lease.ticket;
        let store = RunStoreClient::new(&self.env, &ticket.store).map_err(|e| e.detail)?;
        let start = StoreCommand::StartAttempt {
            run_id: ticket.run_id.clone(),
            token: job.lease.token,
        };
        let storage = self.state.storage();
        let kept: Option<(u32, String)> = storage.get(OUTCOME).await.map_err(|e| e.to_string())?;
        let finished = match kept {
            Some((attempt, outcome)) => {
                let outcome: AttemptOutcome =
                    serde_json::from_str(&outcome).map_err(|e| e.to_string())?;
                Some((attempt, outcome))
            }
            None => {
                let env_slug = crate::store::client::env_of_store(&ticket.store);
                self.attempt(&store, &start, env_slug).await?
            }
        };
        if let Some((attempt, outcome)) = finished {
            let finish = StoreCommand::FinishAttempt {
                run_id: ticket.run_id.clone(),
                attempt,
                outcome,
            };
            store.call(&finish).await.map_err(|e| e.detail)?;
        }
        let release = GateCommand::Release {
            run_id: ticket.run_id.clone(),
            token: job.lease.token,
        };
        let gate = QueueGateClient::new(&self.env, &job.gate).map_err(|e| e.detail)?;
        if let Err(e) = gate.call(&release).await {
            // The lease expires and the gate reclaims it; log and finish.
            console_error!(
                "executor: releasing {} at {} failed: {e}",
                ticket.run_id,
                job.gate
            );
        }
        Ok(())
    }

    /// Starts the attempt at the store and calls the endpoint. `None`: nothing to run.
    async fn attempt(
        &self,
        store: &RunStoreClient,
        start: &StoreCommand,
        env_slug: &str,
    ) -> std::result::Result<Option<(u32, AttemptOutcome)>, String> {
        Ok(match store.call(start).await.map_err(|e| e.detail)? {
            StoreReply::Started(mut attempt) => {
                let (payload, kind) = (&mut attempt.payload, &mut attempt.payload_type);
                let resolved = crate::packets::resolve(&self.env, env_slug, payload, kind).await;
                let outcome = match (resolved, crate::settings::config(&self.env)) {
                    (Err(e), _) => call::failure("PayloadUnavailable", e.to_string()),
                    (Ok(()), Ok(config)) => call::call_task(&self.env, &config, &attempt).await,
                    (Ok(()), Err(message)) => call::failure("Misconfigured", message),
                };
                console_log!(
                    "executor: {} attempt {} ended",
                    attempt.run_id,
                    attempt.attempt
                );
                let kept = serde_json::to_string(&outcome).map_err(|e| e.to_string())?;
                self.state
                    .storage()
                    .put(OUTCOME, (attempt.attempt, kept))
                    .await
                    .map_err(|e| e.to_string())?;
                Some((attempt.attempt, outcome))
            }
            StoreReply::AlreadyStarted { attempt } => Some((attempt, restarted_error())),
            _ => None, // cancelled, expired, finished: nothing to run
        })
    }
}
