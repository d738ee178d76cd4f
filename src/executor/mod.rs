//! `RunExecutor`: the Durable Object that runs one admitted attempt. One object per
//! admission (`<run_id>:<token>`): the gate hands it the lease, it records it and wakes by
//! alarm, so the attempt runs outside any queue consumer and may last its whole
//! `maxDuration`. An alarm is retried by the runtime until it succeeds; the store's
//! compare-and-set start makes sure a retried alarm never runs the attempt twice
//! (DESIGN invariant 5). An executor that restarts in the middle of its attempt cannot
//! know whether the endpoint is still working on it, so it steps aside and keeps the slot
//! taken: the lease expires at `maxDuration` plus a margin, and the gate then reclaims the
//! slot and the store fails (and retries) the attempt (invariants 4 and 6).

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

/// What became of the attempt an executor was given.
enum Attempt {
    /// It ran (now or before a restart, with its outcome kept): report it.
    Ended(u32, AttemptOutcome),
    /// Nothing to run: the run was cancelled, expired or already finished.
    NotRun,
    /// It started before this executor restarted; whether the endpoint is still working on
    /// it is unknown. Its lease keeps the slot until it expires.
    InDoubt(u32),
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
        let attempt = match kept {
            Some((attempt, outcome)) => {
                let outcome: AttemptOutcome =
                    serde_json::from_str(&outcome).map_err(|e| e.to_string())?;
                Attempt::Ended(attempt, outcome)
            }
            None => {
                let env_slug = crate::store::client::env_of_store(&ticket.store);
                self.attempt(&store, &start, env_slug).await?
            }
        };
        match attempt {
            Attempt::Ended(attempt, outcome) => {
                let finish = StoreCommand::FinishAttempt {
                    run_id: ticket.run_id.clone(),
                    attempt,
                    outcome,
                };
                store.call(&finish).await.map_err(|e| e.detail)?;
            }
            Attempt::NotRun => {}
            Attempt::InDoubt(attempt) => {
                console_log!(
                    "executor: {} attempt {attempt} was under way when its executor restarted; its lease decides",
                    ticket.run_id
                );
                return Ok(());
            }
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

    /// Starts the attempt at the store and calls the endpoint.
    async fn attempt(
        &self,
        store: &RunStoreClient,
        start: &StoreCommand,
        env_slug: &str,
    ) -> std::result::Result<Attempt, String> {
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
                Attempt::Ended(attempt.attempt, outcome)
            }
            StoreReply::AlreadyStarted { attempt } => Attempt::InDoubt(attempt),
            _ => Attempt::NotRun, // cancelled, expired, finished
        })
    }
}
