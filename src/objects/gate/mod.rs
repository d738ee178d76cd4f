//! `QueueGate`: the Durable Object that holds one (environment, queue)'s concurrency
//! limit, the runs waiting for a slot, and the leases of the runs executing
//! (invariants 4 and 6, docs/ARCHITECTURE.md). Named `<env>:<queue>`.
//!
//! The decisions are `domain::scheduling::gate::GateState`'s; this object keeps that state in memory,
//! writes every change through to SQLite in the same synchronous step (so memory and
//! storage never disagree across an await), hands every admitted run to an executor,
//! and wakes by alarm to reclaim expired leases and forget waiting runs past their TTL.

pub mod client;
pub mod protocol;
pub mod schema;

use std::cell::{Cell, RefCell};

use futures_util::stream::{self, StreamExt};
use worker::{console_error, durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::domain::basics::time::Millis;
use crate::domain::scheduling::gate::{Changes, GateState, Lease, Waiting};
use crate::domain::scheduling::pool::{hands, pool_size, split_for_releaser, EXECUTOR_POOL};
use crate::objects::executor::client::RunExecutorClient;
use crate::objects::executor::protocol::Hand;
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{LeaseExpired, LeaseExpiredReply};
use crate::platform::meter::{self, Activity, Object};
use crate::platform::rpc;
use crate::platform::rpc::{answer, CallError};
use crate::platform::runtime::{ensure_alarm, internal, now};
use crate::platform::sql::{rows, transaction, Migrated, Sql};
use protocol::{Admitted, Gate, GateCommand, Offer, Release, Remove};

/// Hands to executors a gate keeps in flight at once.
const LAUNCH_CONCURRENCY: usize = 32;

#[durable_object(alarm)]
pub struct QueueGate {
    state: State,
    env: Env,
    /// Whether the schema migration succeeded when the object started.
    migrated: Migrated,
    /// The gate's state, loaded from storage on first use; every change is written through.
    gate: RefCell<Option<GateState>>,
    /// The alarm time last set, if known (memory only).
    alarm_at: Cell<Option<Millis>>,
    /// The gate's own name, once read (it never changes).
    name: RefCell<Option<String>>,
    /// Work under way, for the operations account.
    activity: Activity,
}

struct SettingRow {
    key: String,
    value: String,
}

impl DurableObject for QueueGate {
    fn new(state: State, env: Env) -> Self {
        meter::configure(&env);
        let migrated = Migrated::start(&state.storage(), &schema::SCHEMA, Object::Gate);
        QueueGate {
            state,
            env,
            migrated,
            gate: RefCell::new(None),
            alarm_at: Cell::new(None),
            name: RefCell::new(None),
            activity: Activity::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        rpc::fetched(self.handle(&req.bytes().await?).await)
    }

    async fn alarm(&self) -> Result<Response> {
        let _active = meter::alarm(Object::Gate, &self.activity, Some(&self.state));
        self.alarm_at.set(None);
        self.migrated.ready()?;
        let now = now();
        let name = self.name()?;
        self.apply(|g| g.drop_expired_waiting(now))?;
        let expired = self.with_gate(|g| g.expired_leases(now))?;
        let mut admitted = Vec::new();
        for lease in expired {
            match self.reclaim(&lease).await {
                Ok(requeue) => {
                    let changes = self.apply(|g| {
                        let mut changes = g.release(&lease.ticket.run_id, Some(lease.token), now);
                        if requeue {
                            let again = g.offer(vec![lease.ticket.clone()], None, now);
                            merge(&mut changes, again);
                        }
                        changes
                    })?;
                    admitted.extend(changes.admitted);
                }
                Err(e) => console_error!(
                    "queue gate {name}: reclaiming {} failed, retrying later: {e}",
                    lease.ticket.run_id
                ),
            }
        }
        self.rearm().await?;
        self.launch(&name, admitted).await;
        Response::ok("")
    }
}

/// Folds the changes of a second operation into the first.
fn merge(into: &mut Changes, other: Changes) {
    into.waiting_added.extend(other.waiting_added);
    into.waiting_removed.extend(other.waiting_removed);
    into.admitted.extend(other.admitted);
    into.running_removed.extend(other.running_removed);
    into.limit_changed |= other.limit_changed;
}

crate::export_command!(QueueGate);

impl QueueGate {
    /// Answers one command from a caller (`rpc::call`).
    async fn handle(&self, command: &[u8]) -> Result<String> {
        let _active = meter::request(Object::Gate, &self.activity, Some(&self.state));
        self.migrated.ready()?;
        let now = now();
        // `returns`: how many of the admitted runs the caller takes back in the reply.
        let (name, changes, returns) = match rpc::decode::<Gate>(command)? {
            GateCommand::Offer(Offer {
                gate,
                tickets,
                limit,
            }) => {
                self.remember_name(&gate)?;
                (gate, self.apply(|g| g.offer(tickets, limit, now))?, 0)
            }
            GateCommand::Release(Release { ended, take }) => {
                let returns = take.min(ended.len());
                let changes = self.apply(|g| g.release_all(&ended, now))?;
                (self.name()?, changes, returns)
            }
            GateCommand::Remove(Remove { run_id }) => {
                (self.name()?, self.apply(|g| g.remove(&run_id, now))?, 0)
            }
        };
        let count = changes.admitted.len();
        self.rearm().await?;
        let (hand, others) = split_for_releaser(changes.admitted, returns);
        self.launch(&name, others).await;
        // Every gate command is answered with `Admitted`.
        answer::<Offer>(&Admitted { count, hand })
    }

    fn sql(&self) -> Sql {
        Sql::new(&self.state.storage(), Object::Gate)
    }

    fn remember_name(&self, name: &str) -> Result<()> {
        if self.name.borrow().is_some() {
            return Ok(());
        }
        self.sql().exec(
            "INSERT OR IGNORE INTO settings (key, value) VALUES ('name', ?)",
            vec![name.into()],
        )?;
        *self.name.borrow_mut() = Some(name.to_owned());
        Ok(())
    }

    fn name(&self) -> Result<String> {
        if let Some(name) = self.name.borrow().as_ref() {
            return Ok(name.clone());
        }
        let name = self
            .settings()?
            .into_iter()
            .find(|r| r.key == "name")
            .map(|r| r.value)
            .ok_or_else(|| internal("this gate was never offered a run"))?;
        *self.name.borrow_mut() = Some(name.clone());
        Ok(name)
    }

    fn settings(&self) -> Result<Vec<SettingRow>> {
        rows(&self.sql(), "SELECT key, value FROM settings", vec![])?
            .into_iter()
            .map(|mut v| {
                Ok(SettingRow {
                    key: v.text()?,
                    value: v.text()?,
                })
            })
            .collect()
    }

    fn load(&self) -> Result<GateState> {
        let settings = self.settings()?;
        let setting = |key: &str| {
            settings
                .iter()
                .find(|r| r.key == key)
                .map(|r| r.value.clone())
        };
        let limit = setting("limit").and_then(|v| v.parse().ok());
        let limit_set_at = setting("limit_set_at")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let sql = self.sql();
        fn json<T: serde::de::DeserializeOwned>(text: String) -> Result<T> {
            serde_json::from_str(&text).map_err(|e| internal(e.to_string()))
        }
        let waiting = rows(&sql, "SELECT seq, ticket FROM waiting", vec![])?
            .into_iter()
            .map(|mut v| {
                let seq = v.int()?.max(0) as u64;
                Ok(Waiting {
                    ticket: json(v.text()?)?,
                    seq,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let running = rows(&sql, "SELECT lease FROM running", vec![])?
            .into_iter()
            .map(|mut v| json(v.text()?))
            .collect::<Result<Vec<Lease>>>()?;
        Ok(GateState::restore(limit, limit_set_at, waiting, running))
    }

    fn with_gate<T>(&self, read: impl FnOnce(&GateState) -> T) -> Result<T> {
        let mut slot = self.gate.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.load()?);
        }
        Ok(read(slot.as_ref().expect("loaded above")))
    }

    /// Runs one state-machine operation and writes its changes in one transaction. If the
    /// write fails, the in-memory state is dropped and reloaded from storage next time.
    fn apply(&self, operation: impl FnOnce(&mut GateState) -> Changes) -> Result<Changes> {
        let mut slot = self.gate.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.load()?);
        }
        let gate = slot.as_mut().expect("loaded above");
        let changes = operation(gate);
        let (limit, limit_set_at) = (gate.limit(), gate.limit_set_at());
        let sql = self.sql();
        let written = changes.clone();
        let result = transaction(&self.state.storage(), move || {
            persist(&sql, &written, limit, limit_set_at)
        });
        if let Err(e) = result {
            *slot = None;
            return Err(e);
        }
        Ok(changes)
    }

    /// Sets the alarm for the gate's next deadline, if it moved earlier.
    async fn rearm(&self) -> Result<()> {
        match self.with_gate(GateState::next_wake)? {
            Some(at) => ensure_alarm(&self.state.storage(), &self.alarm_at, at).await,
            None => Ok(()),
        }
    }

    /// Tells the store that owns a run its lease expired. `true`: the run never started
    /// and should wait for a slot again.
    async fn reclaim(&self, lease: &Lease) -> std::result::Result<bool, CallError> {
        let store = RunStoreClient::new(&self.env, &lease.ticket.store)?;
        let command = LeaseExpired {
            run_id: lease.ticket.run_id.clone(),
            token: lease.token,
        };
        Ok(match store.send(command).await? {
            LeaseExpiredReply::Requeue => true,
            // The attempt it held failed (and was retried), the run had moved on, or it
            // is gone: the slot is free and nothing waits again.
            LeaseExpiredReply::Attempt(_) => false,
        })
    }

    /// Hands every admitted run to its executor. A lease that cannot be handed stays until
    /// it expires; the alarm then gives the run back its place. The caller waits for the
    /// hands (they could go in the background, the leases being stored, but that measured
    /// no faster), which holds back a caller offering faster than executors start.
    async fn launch(&self, gate: &str, admitted: Vec<Lease>) {
        let pool = match self.with_gate(GateState::limit) {
            Ok(limit) => pool_size(limit),
            Err(_) => EXECUTOR_POOL,
        };
        // At most LAUNCH_CONCURRENCY calls in flight: a queue with a high limit may admit a
        // thousand runs in one step, and that many simultaneous calls strain the runtime.
        stream::iter(hands(gate, admitted, pool))
            .for_each_concurrent(LAUNCH_CONCURRENCY, |(executor, leases)| async move {
                let count = leases.len();
                let hand = Hand {
                    gate: gate.to_owned(),
                    leases,
                };
                let handed = match RunExecutorClient::new(&self.env, &executor) {
                    Ok(client) => client.send(hand).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = handed {
                    console_error!(
                        "queue gate {gate}: handing {count} runs to {executor} failed: {e}"
                    );
                }
            })
            .await;
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| internal(e.to_string()))
}

fn persist(sql: &Sql, changes: &Changes, limit: Option<u32>, limit_set_at: Millis) -> Result<()> {
    for run_id in &changes.waiting_removed {
        sql.exec(
            "DELETE FROM waiting WHERE run_id = ?",
            vec![run_id.as_str().into()],
        )?;
    }
    for run_id in &changes.running_removed {
        sql.exec(
            "DELETE FROM running WHERE run_id = ?",
            vec![run_id.as_str().into()],
        )?;
    }
    for waiting in &changes.waiting_added {
        // A run admitted in the same step was added and removed: keep it out.
        if changes
            .admitted
            .iter()
            .any(|l| l.ticket.run_id == waiting.ticket.run_id)
        {
            continue;
        }
        sql.exec(
            "INSERT OR REPLACE INTO waiting (run_id, seq, ticket) VALUES (?, ?, ?)",
            vec![
                waiting.ticket.run_id.as_str().into(),
                (waiting.seq as i64).into(),
                to_json(&waiting.ticket)?.into(),
            ],
        )?;
    }
    for lease in &changes.admitted {
        sql.exec(
            "DELETE FROM waiting WHERE run_id = ?",
            vec![lease.ticket.run_id.as_str().into()],
        )?;
        sql.exec(
            "INSERT OR REPLACE INTO running (run_id, lease) VALUES (?, ?)",
            vec![lease.ticket.run_id.as_str().into(), to_json(lease)?.into()],
        )?;
    }
    if changes.limit_changed {
        let limit = limit.map_or(String::new(), |n| n.to_string());
        sql.exec(
            "INSERT OR REPLACE INTO settings (key, value) VALUES ('limit', ?), ('limit_set_at', ?)",
            vec![limit.into(), limit_set_at.to_string().into()],
        )?;
    }
    Ok(())
}
