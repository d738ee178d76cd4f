//! `RunExecutor`: the Durable Object that runs admitted attempts. Each gate has a small
//! pool of them, `<gate>#<n>` (`n`: the lease token modulo the pool's size, one executor
//! per six slots of the limit, at most `EXECUTOR_POOL`), so objects are reused instead of
//! created per attempt. A gate hands an executor at most six leases per call: the
//! executor answers at once and works on each job in the background (`work_on`).
//! (Cloudflare lets an invocation wait on six connections at a time: the endpoint calls
//! of one hand never queue behind each other.) The attempts run outside any queue
//! consumer and may last their whole `maxDuration`. Starts and reports go out together:
//! while one is on its way to the stores and gates, those that come meanwhile wait and go
//! out in the next (group commit), so a busy executor makes one store call and one gate
//! call for many attempts. The runs a gate admits into the slots a release frees come back
//! in the release's reply, and this executor runs them as if handed: a hand-over makes no
//! call from the gate. Their calls start in the invocation that reported, so it takes them
//! only while its attempts stay within six in all
//! (`domain::scheduling::pool::room_to_take`); a busier executor gets hands.
//!
//! Jobs live in memory only: the gate's lease is the record that outlives an executor.
//! A start or report whose call fails is sent again, later and later, while the lease
//! lasts (`domain::scheduling::pool::retry_at`). If the executor stops (evicted, restarted,
//! or out of time), its leases expire at `maxDuration` plus a margin: the gate reclaims
//! the slots and the stores fail the attempts, which are retried as their policies allow.
//! The store's compare-and-set start makes sure an attempt never runs twice (invariant 5,
//! docs/ARCHITECTURE.md), and a reclaimed attempt is retried only after its lease ended
//! (invariants 4, 6). Writing nothing here saves three rows written per run: the job's
//! insert, its kept outcome and its delete.

mod call;
pub mod client;
pub mod protocol;
pub mod schema;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_util::future::select;
use worker::wasm_bindgen_futures::spawn_local;
use worker::{
    console_error, console_log, durable_object, Delay, DurableObject, Env, Request, Response,
    Result, State,
};

use crate::domain::api::auth::Environment;
use crate::domain::basics::names::StoreName;
use crate::domain::basics::time::Millis;
use crate::domain::scheduling::gate::Lease;
use crate::domain::scheduling::pool::{retry_at, room_to_take};
use crate::objects::gate::client::QueueGateClient;
use crate::objects::gate::protocol::Release;
use crate::objects::group_commit::GroupCommit;
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{
    AttemptOutcome, Finish, FinishAttempts, StartAttempts, StartReply,
};
use crate::platform::meter::{self, Activity, Object};
use crate::platform::rpc::{self, answer, CallError, CALL_LIMIT};
use crate::platform::runtime::now;
use crate::platform::sql::{Migrated, Sql};
use protocol::Hand;

/// How long a report waits at most for the executor's other calls under way to end before
/// it goes out, so that attempts that end close together are reported (and their slots
/// released) in one call each to their store and gate. It goes as soon as no call is
/// under way: a lone attempt's report goes at once.
const REPORT_LINGER_MS: u64 = 10;

/// What an executor is asked to do: run the attempt that `lease` allows, then release it
/// at `gate`. Held in memory until it is reported.
#[derive(Debug, Clone)]
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
    /// Keys of the jobs under way: a lease handed twice is worked on once.
    active: RefCell<HashSet<String>>,
    /// Attempts whose endpoint call is under way.
    calling: Cell<usize>,
    /// Told when the last call under way ends: the report lingering, if one is (one
    /// flush of reports runs at a time, so one lingers at most).
    idle: RefCell<Option<oneshot::Sender<()>>>,
    /// Starts of attempts (store, run id, lease token), sent together.
    starts: GroupCommit<(String, String, u64), std::result::Result<StartReply, CallError>>,
    /// Ended attempts, reported together; the reply says whether the store recorded it.
    reports: GroupCommit<Report, bool>,
    /// Work under way (requests, alarms and attempts), for the operations account.
    activity: Activity,
}

/// An ended job to report: the attempt's outcome for the store (none when the run was not
/// started: cancelled, expired, finished) and the lease to free at the gate.
#[derive(Clone)]
struct Report {
    job: Job,
    ended: Option<(u32, AttemptOutcome)>,
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
            calling: Cell::new(0),
            idle: RefCell::new(None),
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

    /// Only an executor of the build that kept its jobs in SQLite set alarms, to take up
    /// jobs left behind. Those jobs are not adopted (their leases expire, and the runs go
    /// on the same way): their rows are cleared, and no alarm is set again.
    async fn alarm(&self) -> Result<Response> {
        let shared = &self.shared;
        let _active = meter::alarm(Object::Executor, &shared.activity, Some(&shared.state));
        shared.migrated.ready()?;
        shared.sql().exec("DELETE FROM jobs", None)?;
        Response::ok("")
    }
}

crate::export_command!(RunExecutor);

impl RunExecutor {
    /// Takes a hand of leases from a gate (`rpc::call`).
    async fn handle(&self, command: &[u8]) -> Result<String> {
        let shared = &self.shared;
        let _active = meter::request(Object::Executor, &shared.activity, Some(&shared.state));
        let hand = rpc::decode::<protocol::Executor>(command)?;
        shared.take(hand);
        answer::<Hand>(&())
    }
}

/// What became of the attempt a job allowed.
enum Attempt {
    /// It ran: report it.
    Ended(u32, AttemptOutcome),
    /// Nothing to run: the run was cancelled, expired or already finished.
    NotRun,
    /// It had started already (a start sent again after a lost reply); whether the
    /// endpoint is working on it is unknown. Its lease keeps the slot until it expires.
    InDoubt(u32),
}

impl Shared {
    fn sql(&self) -> Sql {
        Sql::new(&self.state.storage(), Object::Executor)
    }

    /// Works on each job of a hand (from a gate's call, or from a release's reply) that is
    /// not under way already.
    fn take(self: &Rc<Self>, hand: Hand) {
        for lease in hand.leases {
            let job = Job {
                gate: hand.gate.clone(),
                lease,
            };
            if self.active.borrow_mut().insert(job.key()) {
                self.work_on(job);
            }
        }
    }

    /// Works on a job in the background. Not through `waitUntil`, which an object does not
    /// need (it lives while it has work under way) and which registers the task with
    /// whatever invocation the runtime counts as current: under `wrangler dev`, where one
    /// isolate runs the edge, the consumer and every object, that could be a queue
    /// consumer's, whose batch then did not end until the job did.
    fn work_on(self: &Rc<Self>, job: Job) {
        let worker = Rc::clone(self);
        spawn_local(async move {
            let _active = worker.activity.enter(Object::Executor);
            let key = job.key();
            Rc::clone(&worker).work(job).await;
            worker.active.borrow_mut().remove(&key);
        });
    }

    /// Waits until no endpoint call of this executor is under way, `REPORT_LINGER_MS` at
    /// most.
    async fn linger(&self) {
        if self.calling.get() == 0 {
            return;
        }
        let (tell, idle) = oneshot::channel();
        *self.idle.borrow_mut() = Some(tell);
        let limit = Delay::from(Duration::from_millis(REPORT_LINGER_MS));
        select(idle, limit).await;
        self.idle.borrow_mut().take(); // told, or timed out
    }

    /// Works a job to its end: runs its attempt and reports it, each sent again while the
    /// lease lasts if its call fails.
    async fn work(self: Rc<Self>, job: Job) {
        let run_id = job.lease.ticket.run_id.clone();
        let ended = match self.attempt(&job).await {
            Ok(Attempt::Ended(attempt, outcome)) => Some((attempt, outcome)),
            Ok(Attempt::NotRun) => None,
            Ok(Attempt::InDoubt(attempt)) => {
                console_log!(
                    "executor: {run_id} attempt {attempt} was already under way when its start was sent again; its lease decides"
                );
                return;
            }
            Err(e) => {
                console_error!("executor: {run_id} was not started, its lease decides: {e}");
                return;
            }
        };
        let lease_until = job.lease.lease_until;
        let report = Report { job, ended };
        let reported = while_leased(lease_until, || async {
            let (reply, lead) = self.reports.add(report.clone());
            if lead {
                let shared = Rc::clone(&self);
                spawn_local(async move {
                    // Calls of one hand end close together: waiting a moment for them
                    // makes one report of several.
                    shared.linger().await;
                    let batches = |batch| shared.report(batch);
                    shared.reports.flush_all(batches).await;
                });
            }
            match reply.await {
                Ok(true) => Ok(()),
                _ => Err(()),
            }
        })
        .await;
        if reported.is_err() {
            console_error!("executor: {run_id} was not reported, its lease decides");
        }
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
    /// per report: whether it was recorded. A job whose store could not be told is reported
    /// again (`work`); a slot that could not be freed is reclaimed
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
                console_error!("executor: reporting to {store} failed, to be sent again: {e}");
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
            self.take(hand);
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

    /// Starts the attempt at the store (sent again while the lease lasts if the call
    /// fails), and calls the endpoint.
    async fn attempt(self: &Rc<Self>, job: &Job) -> std::result::Result<Attempt, CallError> {
        let ticket = &job.lease.ticket;
        let started = while_leased(job.lease.lease_until, || self.start(job)).await?;
        Ok(match started {
            StartReply::Started(mut attempt) => {
                let env_slug = StoreName::env_slug_of(&ticket.store);
                let (payload, kind) = (&mut attempt.payload, &mut attempt.payload_type);
                let resolved =
                    crate::platform::packets::resolve(&self.env, env_slug, payload, kind).await;
                let outcome = match (resolved, crate::platform::settings::config(&self.env)) {
                    (Err(e), _) => call::failure("PayloadUnavailable", e.to_string()),
                    (Ok(()), Ok(config)) => {
                        let environment = Environment::from_slug(env_slug);
                        self.calling.set(self.calling.get() + 1);
                        let outcome =
                            call::call_task(&self.env, &config, &attempt, environment).await;
                        self.calling.set(self.calling.get() - 1);
                        if self.calling.get() == 0 {
                            if let Some(idle) = self.idle.borrow_mut().take() {
                                let _ = idle.send(());
                            }
                        }
                        outcome
                    }
                    (Ok(()), Err(e)) => call::failure("Misconfigured", e.0),
                };
                Attempt::Ended(attempt.attempt, outcome)
            }
            StartReply::AlreadyStarted { attempt } => Attempt::InDoubt(attempt),
            // Cancelled, expired, finished, or gone.
            StartReply::NotStartable { .. } | StartReply::NotFound => Attempt::NotRun,
        })
    }
}

/// Sends with `send` until it succeeds, again later and later while the lease lasts
/// (`retry_at`); the last error once it ends.
async fn while_leased<T, E, Fut>(
    lease_until: Millis,
    mut send: impl FnMut() -> Fut,
) -> std::result::Result<T, E>
where
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut failures = 0;
    loop {
        let error = match send().await {
            Ok(sent) => return Ok(sent),
            Err(e) => e,
        };
        failures += 1;
        let Some(at) = retry_at(failures, now(), lease_until) else {
            return Err(error);
        };
        let wait = u64::try_from(at - now()).unwrap_or(0);
        Delay::from(Duration::from_millis(wait)).await;
    }
}
