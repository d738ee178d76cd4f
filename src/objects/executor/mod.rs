//! `RunExecutor`: the Durable Object that runs admitted attempts. Each gate has a small
//! pool of them, `<gate>#<n>` (`n`: the lease token modulo the pool's size, one executor
//! per six slots of the limit, at most `EXECUTOR_POOL`), so objects are reused instead of
//! created per attempt. A gate hands an executor at most six leases per
//! call: the executor records the jobs in its SQLite table and starts their attempts at
//! once, in the background (`work_on`), so the gate's call returns as soon as the jobs
//! are durable. (Cloudflare lets an invocation wait on six connections at a
//! time: the endpoint calls of one hand never queue behind each other.) The attempts run
//! outside any queue consumer and may last their whole `maxDuration`. Starts and reports
//! go out together: while one is on its way to the stores and gates, those that come
//! meanwhile wait and go out in the next (group commit), so a busy executor makes one
//! store call and one gate call for many attempts. The runs a gate admits into the slots
//! a release frees come back in the release's reply, and this executor runs them as if
//! handed: a hand-over makes no call from the gate. Their calls start in the invocation
//! that reported, so it takes them only while its attempts stay within six in all
//! (`domain::scheduling::pool::room_to_take`); a busier executor gets hands.
//!
//! A recorded job is worked on until it is reported and released. A backstop alarm, due
//! `BACKSTOP_MS` after a job arrives and again while jobs remain, takes up every job this
//! instance is not working on: one whose instance was evicted or restarted, or whose
//! report failed. The attempt's outcome is kept with the job before it is reported, so a
//! job taken up again reports the real result instead of calling the endpoint again; and
//! the store's compare-and-set start makes sure an attempt never runs twice (invariant
//! 5, docs/ARCHITECTURE.md). A job taken up again after its attempt started but before its outcome was
//! kept cannot know whether the endpoint is still working on it, so it steps aside and
//! keeps the slot taken: the lease expires at `maxDuration` plus a margin, and the gate
//! then reclaims the slot and the store fails (and retries) the attempt (invariants 4, 6).

mod call;
pub mod client;
pub mod protocol;
pub mod schema;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::platform::meter::{self, Activity, Object};
use crate::platform::sql::{rows, Migrated, Sql};
use worker::wasm_bindgen_futures::spawn_local;
use worker::{
    console_error, console_log, durable_object, DurableObject, Env, Request, Response, Result,
    State,
};

use serde::{Deserialize, Serialize};

use crate::domain::api::auth::Environment;
use crate::domain::basics::names::StoreName;
use crate::domain::basics::time::Millis;
use crate::domain::scheduling::gate::Lease;
use crate::domain::scheduling::pool::room_to_take;
use crate::objects::gate::client::QueueGateClient;
use crate::objects::gate::protocol::Release;
use crate::objects::group_commit::GroupCommit;
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{
    AttemptOutcome, Finish, FinishAttempts, StartAttempts, StartReply,
};
use crate::platform::rpc::{self, answer, CallError, CALL_LIMIT};
use crate::platform::runtime::{ensure_alarm, internal, now};
use protocol::Hand;

/// How long a recorded job may go without an instance working on it.
const BACKSTOP_MS: Millis = 30_000;

/// What an executor is asked to do: run the attempt that `lease` allows, then release it
/// at `gate`. Kept in the `jobs` table until it is reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    gate: String,
    lease: Lease,
}

impl Job {
    /// Unique per admission: two admissions of one run (a retry) are two jobs.
    fn key(&self) -> String {
        format!("{}:{}", self.lease.ticket.run_id, self.lease.token)
    }
}

#[durable_object(alarm)]
pub struct RunExecutor {
    shared: Rc<Shared>,
}

/// What the object's background work shares with its handlers.
struct Shared {
    state: State,
    env: Env,
    /// Whether the schema migration succeeded when the object started.
    migrated: Migrated,
    /// Keys of the jobs this instance is working on; the alarm leaves them alone.
    active: RefCell<HashSet<String>>,
    /// The alarm time last set, if known (memory only).
    alarm_at: Cell<Option<Millis>>,
    /// Starts of attempts (store, run id, lease token), sent together.
    starts: GroupCommit<(String, String, u64), std::result::Result<StartReply, CallError>>,
    /// Ended attempts, reported together; the reply says whether the store recorded it.
    reports: GroupCommit<Report, bool>,
    /// Work under way (requests, alarms and attempts), for the operations account.
    activity: Activity,
}

/// An ended job to report: the attempt's outcome for the store (none when the run was not
/// started: cancelled, expired, finished) and the lease to free at the gate.
struct Report {
    job: Job,
    ended: Option<(u32, AttemptOutcome)>,
}

struct JobRow {
    key: String,
    job: String,
    attempt: Option<i64>,
    outcome: Option<String>,
}

impl DurableObject for RunExecutor {
    fn new(state: State, env: Env) -> Self {
        meter::configure(&env);
        let migrated = Migrated::start(&state.storage(), &schema::SCHEMA, Object::Executor);
        let shared = Shared {
            state,
            env,
            migrated,
            active: RefCell::new(HashSet::new()),
            alarm_at: Cell::new(None),
            starts: GroupCommit::default(),
            reports: GroupCommit::default(),
            activity: Activity::default(),
        };
        RunExecutor {
            shared: Rc::new(shared),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        rpc::fetched(self.handle(&req.bytes().await?).await)
    }

    async fn alarm(&self) -> Result<Response> {
        let shared = &self.shared;
        let _active = meter::alarm(Object::Executor, &shared.activity, Some(&shared.state));
        shared.alarm_at.set(None);
        shared.migrated.ready()?;
        let keys = rows(&shared.sql(), "SELECT key FROM jobs", vec![])?
            .into_iter()
            .map(|mut row| row.text())
            .collect::<Result<Vec<String>>>()?;
        for key in &keys {
            if let Some(row) = shared.take_up(key)? {
                shared.work_on(row);
            }
        }
        if !keys.is_empty() {
            shared.backstop().await?; // again, while jobs remain
        }
        Response::ok("")
    }
}

crate::export_command!(RunExecutor);

impl RunExecutor {
    /// Takes a hand of leases from a gate (`rpc::call`).
    async fn handle(&self, command: &[u8]) -> Result<String> {
        let shared = &self.shared;
        let _active = meter::request(Object::Executor, &shared.activity, Some(&shared.state));
        self.shared.migrated.ready()?;
        let hand = rpc::decode::<protocol::Executor>(command)?;
        self.shared.take(hand).await?;
        answer::<Hand>(&())
    }
}

/// What became of the attempt a job allowed.
enum Attempt {
    /// It ran (now or before a restart, with its outcome kept): report it.
    Ended(u32, AttemptOutcome),
    /// Nothing to run: the run was cancelled, expired or already finished.
    NotRun,
    /// It started before this job was taken up again; whether the endpoint is still
    /// working on it is unknown. Its lease keeps the slot until it expires.
    InDoubt(u32),
}

impl Shared {
    fn sql(&self) -> Sql {
        Sql::new(&self.state.storage(), Object::Executor)
    }

    /// Arms the backstop alarm unless one is already due sooner.
    async fn backstop(&self) -> Result<()> {
        ensure_alarm(&self.state.storage(), &self.alarm_at, now() + BACKSTOP_MS).await
    }

    /// Records the jobs of a hand (from a gate's call, or from a release's reply) and
    /// works on each.
    async fn take(self: &Rc<Self>, hand: Hand) -> Result<()> {
        // Armed first: every job recorded below is then sure to be taken up.
        self.backstop().await?;
        for lease in hand.leases {
            let job = Job {
                gate: hand.gate.clone(),
                lease,
            };
            if let Some(row) = self.record(job)? {
                self.work_on(row);
            }
        }
        Ok(())
    }

    /// Records a handed job; its row to work on, unless this instance already works on it.
    fn record(&self, job: Job) -> Result<Option<JobRow>> {
        let key = job.key();
        let text = serde_json::to_string(&job).map_err(|e| internal(e.to_string()))?;
        let new = self
            .sql()
            .exec(
                "INSERT OR IGNORE INTO jobs (key, job) VALUES (?, ?)",
                vec![key.as_str().into(), text.as_str().into()],
            )?
            .rows_written()
            > 0;
        if !new {
            return self.take_up(&key); // handed again: it may have ended already
        }
        self.active.borrow_mut().insert(key.clone());
        Ok(Some(JobRow {
            key,
            job: text,
            attempt: None,
            outcome: None,
        }))
    }

    /// The job's row, marked as worked on by this instance; `None` if it already is (or
    /// is gone).
    fn take_up(&self, key: &str) -> Result<Option<JobRow>> {
        if self.active.borrow().contains(key) {
            return Ok(None);
        }
        let query = "SELECT key, job, attempt, outcome FROM jobs WHERE key = ?";
        let Some(mut v) = rows(&self.sql(), query, vec![key.into()])?.pop() else {
            return Ok(None);
        };
        let row = JobRow {
            key: v.text()?,
            job: v.text()?,
            attempt: v.opt_int()?,
            outcome: v.opt_text()?,
        };
        self.active.borrow_mut().insert(key.to_owned());
        Ok(Some(row))
    }

    /// Works on a job in the background. Not through `waitUntil`, which an object does not
    /// need (it lives while it has work under way) and which registers the task with
    /// whatever invocation the runtime counts as current: under `wrangler dev`, where one
    /// isolate runs the edge, the consumer and every object, that could be a queue
    /// consumer's, whose batch then did not end until the job did.
    fn work_on(self: &Rc<Self>, row: JobRow) {
        let worker = Rc::clone(self);
        spawn_local(async move {
            let _active = worker.activity.enter(Object::Executor);
            Rc::clone(&worker).work(row).await
        });
    }

    /// Works a job to its end. On an error the job stays recorded for the backstop alarm.
    async fn work(self: Rc<Self>, row: JobRow) {
        let key = row.key.clone();
        let reported = match self.conclude(row).await {
            Ok(Some(report)) => {
                let (reply, lead) = self.reports.add(report);
                if lead {
                    let shared = Rc::clone(&self);
                    spawn_local(async move {
                        let batches = |batch| shared.report(batch);
                        shared.reports.flush_all(batches).await;
                    });
                }
                reply.await.unwrap_or(false)
            }
            Ok(None) => true, // in doubt: its lease decides, nothing to report
            Err(e) => {
                console_error!("executor: job {key} is left for the backstop: {e}");
                false
            }
        };
        if reported {
            self.forget(&key);
        }
        self.active.borrow_mut().remove(&key);
    }

    /// Runs the job's attempt, unless it already ran: what to report, or `None` when the
    /// attempt is in doubt and its lease decides.
    async fn conclude(
        self: &Rc<Self>,
        row: JobRow,
    ) -> std::result::Result<Option<Report>, CallError> {
        let job: Job = serde_json::from_str(&row.job).map_err(unreadable)?;
        let attempt = match (row.attempt, row.outcome) {
            (Some(attempt), Some(outcome)) => {
                let outcome = serde_json::from_str(&outcome).map_err(unreadable)?;
                Attempt::Ended(attempt.clamp(0, i64::from(u32::MAX)) as u32, outcome)
            }
            _ => self.attempt(&row.key, &job).await?,
        };
        let ended = match attempt {
            Attempt::Ended(attempt, outcome) => Some((attempt, outcome)),
            Attempt::NotRun => None,
            Attempt::InDoubt(attempt) => {
                console_log!(
                    "executor: {} attempt {attempt} was under way when its job was taken up again; its lease decides",
                    job.lease.ticket.run_id
                );
                return Ok(None);
            }
        };
        Ok(Some(Report { job, ended }))
    }

    /// Asks the store to start the job's attempt (a compare-and-set on the lease). Starts
    /// of attempts that begin together go to each store in one call.
    async fn start(self: &Rc<Self>, job: &Job) -> std::result::Result<StartReply, CallError> {
        let ticket = &job.lease.ticket;
        let item = (ticket.store.clone(), ticket.run_id.clone(), job.lease.token);
        let (reply, lead) = self.starts.add(item);
        if lead {
            let shared = Rc::clone(self);
            spawn_local(async move {
                let batches = |batch| shared.start_batch(batch);
                shared.starts.flush_all(batches).await;
            });
        }
        reply
            .await
            .map_err(|_| CallError::other("the start was never answered"))?
    }

    /// One `StartAttempts` call per store; one reply per start, in order.
    async fn start_batch(
        &self,
        batch: Vec<(String, String, u64)>,
    ) -> Vec<std::result::Result<StartReply, CallError>> {
        let mut by_store: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (store, _, _)) in batch.iter().enumerate() {
            by_store.entry(store).or_default().push(i);
        }
        let mut replies: Vec<std::result::Result<StartReply, CallError>> = batch
            .iter()
            .map(|_| Err(CallError::other("not sent")))
            .collect();
        for (store, indexes) in by_store {
            let starts = indexes
                .iter()
                .map(|&i| (batch[i].1.clone(), batch[i].2))
                .collect();
            let answer = match RunStoreClient::new(&self.env, store) {
                Ok(client) => {
                    client
                        .send_within(StartAttempts { starts }, CALL_LIMIT)
                        .await
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok(each) if each.len() == indexes.len() => {
                    for (i, reply) in indexes.into_iter().zip(each) {
                        replies[i] = Ok(reply);
                    }
                }
                Ok(_) => indexes.into_iter().for_each(|i| {
                    replies[i] = Err(CallError::other("StartAttempts answered amiss"))
                }),
                Err(e) => indexes
                    .into_iter()
                    .for_each(|i| replies[i] = Err(e.clone())),
            }
        }
        replies
    }

    /// Records the outcomes at their stores, then frees the slots at their gates: a run's
    /// outcome is recorded before its slot goes to the next run. Runs the gates admit into
    /// the freed slots come back in their replies, and this executor runs them. One reply
    /// per report: whether it was recorded. A job whose store could not be told stays
    /// recorded (the backstop reports it); a slot that could not be freed is reclaimed
    /// when its lease expires.
    async fn report(self: &Rc<Self>, batch: Vec<Report>) -> Vec<bool> {
        let mut finishes: HashMap<String, Vec<Finish>> = HashMap::new();
        let mut leases = Vec::with_capacity(batch.len());
        for Report { job, ended } in batch {
            let Job { gate, lease } = job;
            if let Some((attempt, outcome)) = ended {
                finishes
                    .entry(lease.ticket.store.clone())
                    .or_default()
                    .push(Finish {
                        run_id: lease.ticket.run_id.clone(),
                        attempt,
                        outcome,
                    });
            }
            leases.push((gate, lease));
        }
        let mut failed = HashSet::new();
        for (store, finishes) in finishes {
            let command = FinishAttempts { finishes };
            let recorded = match RunStoreClient::new(&self.env, &store) {
                Ok(client) => client.send_within(command, CALL_LIMIT).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = recorded {
                console_error!("executor: reporting to {store} failed, the backstop retries: {e}");
                failed.insert(store);
            }
        }
        let recorded: Vec<bool> = leases
            .iter()
            .map(|(_, lease)| !failed.contains(&lease.ticket.store))
            .collect();
        let mut releases: HashMap<&str, Vec<(String, u64)>> = HashMap::new();
        for ((gate, lease), _) in leases.iter().zip(&recorded).filter(|(_, r)| **r) {
            releases
                .entry(gate)
                .or_default()
                .push((lease.ticket.run_id.clone(), lease.token));
        }
        // Attempts of this executor that go on (the reported ones are still counted
        // active until their reply).
        let running = self.active.borrow().len().saturating_sub(leases.len());
        let mut room = room_to_take(running);
        for (gate, ended) in releases {
            let next = match self.release(gate, ended, room).await {
                Ok(next) => next,
                Err(e) => {
                    console_error!("executor: releasing at {gate} failed, its leases expire: {e}");
                    continue;
                }
            };
            let count = next.len();
            room = room.saturating_sub(count);
            let hand = Hand {
                gate: gate.to_owned(),
                leases: next,
            };
            if let Err(e) = self.take(hand).await {
                console_error!(
                    "executor: taking {count} runs from {gate} failed, their leases expire: {e}"
                );
            }
        }
        recorded
    }

    /// Frees the slots of ended attempts; up to `take` of the runs admitted into them, for
    /// this executor.
    async fn release(
        &self,
        gate: &str,
        ended: Vec<(String, u64)>,
        take: usize,
    ) -> std::result::Result<Vec<Lease>, CallError> {
        let client = QueueGateClient::new(&self.env, gate)?;
        let release = Release { ended, take };
        Ok(client.send_within(release, CALL_LIMIT).await?.hand)
    }

    /// Drops a job that is done with.
    fn forget(&self, key: &str) {
        if let Err(e) = self
            .sql()
            .exec("DELETE FROM jobs WHERE key = ?", vec![key.into()])
        {
            console_error!("executor: forgetting job {key} failed: {e}");
        }
    }

    /// Starts the attempt at the store, calls the endpoint, and keeps the outcome.
    async fn attempt(
        self: &Rc<Self>,
        key: &str,
        job: &Job,
    ) -> std::result::Result<Attempt, CallError> {
        let ticket = &job.lease.ticket;
        Ok(match self.start(job).await? {
            StartReply::Started(mut attempt) => {
                let env_slug = StoreName::env_slug_of(&ticket.store);
                let (payload, kind) = (&mut attempt.payload, &mut attempt.payload_type);
                let resolved =
                    crate::platform::packets::resolve(&self.env, env_slug, payload, kind).await;
                let outcome = match (resolved, crate::platform::settings::config(&self.env)) {
                    (Err(e), _) => call::failure("PayloadUnavailable", e.to_string()),
                    (Ok(()), Ok(config)) => {
                        let environment = Environment::from_slug(env_slug);
                        call::call_task(&self.env, &config, &attempt, environment).await
                    }
                    (Ok(()), Err(e)) => call::failure("Misconfigured", e.0),
                };
                let kept = serde_json::to_string(&outcome).map_err(unreadable)?;
                self.sql().exec(
                    "UPDATE jobs SET attempt = ?, outcome = ? WHERE key = ?",
                    vec![i64::from(attempt.attempt).into(), kept.into(), key.into()],
                )?;
                Attempt::Ended(attempt.attempt, outcome)
            }
            StartReply::AlreadyStarted { attempt } => Attempt::InDoubt(attempt),
            // Cancelled, expired, finished, or gone.
            StartReply::NotStartable { .. } | StartReply::NotFound => Attempt::NotRun,
        })
    }
}

/// A job or outcome this executor wrote and cannot read back.
fn unreadable(e: serde_json::Error) -> CallError {
    CallError::other(format!("executor: unreadable job state: {e}"))
}
