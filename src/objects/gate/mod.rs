//! `QueueGate`: the Durable Object that holds one (environment, queue)'s concurrency
//! limit, the runs waiting for a slot, and the leases of the runs executing
//! (invariants 4 and 6, docs/ARCHITECTURE.md). Named `<env>:<queue>`.
//!
//! The decisions are `domain::scheduling::gate::GateState`'s; this object keeps that state in memory
//! (its leases, and a window of its waiting runs: the rest are read from SQLite a page at
//! a time, through `SqlWaiting`), writes every change through to SQLite in the same
//! synchronous step (so memory and storage never disagree across an await), hands every
//! admitted run to an executor, and wakes by alarm to reclaim expired leases and forget
//! waiting runs past their TTL.

pub mod client;
pub mod protocol;
pub mod schema;

use std::cell::{Cell, RefCell};

use futures_util::stream::{self, StreamExt};
use worker::{console_error, durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::domain::basics::time::Millis;
use crate::domain::scheduling::gate::{
    Changes, Control, GateState, Lease, Place, StoredWaiting, Waiting,
};
use crate::domain::scheduling::lease_rows::{LeaseRows, RowWrite};
use crate::domain::scheduling::pool::{hands, pool_size, split_for_releaser, EXECUTOR_POOL};
use crate::objects::executor::client::RunExecutorClient;
use crate::objects::executor::protocol::Hand;
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{LeaseExpired, LeaseExpiredReply};
use crate::platform::meter::{self, Activity, Object};
use crate::platform::rpc;
use crate::platform::rpc::{answer, CallError, CALL_LIMIT};
use crate::platform::runtime::{ensure_alarm, internal, now};
use crate::platform::sql::{rows, transaction, Migrated, Sql, Values};
use protocol::{Admitted, Gate, GateCommand, GateView, Offer, Release, Remove, RemoveRuns, Steer};

/// Hands to executors a gate keeps in flight at once.
const LAUNCH_CONCURRENCY: usize = 32;

#[durable_object(alarm)]
pub struct QueueGate {
    state: State,
    env: Env,
    /// Whether the schema migration succeeded when the object started.
    migrated: Migrated,
    /// The gate's state and its leases' rows, loaded from storage on first use; every
    /// change is written through.
    gate: RefCell<Option<Loaded>>,
    /// The alarm time last set, if known (memory only).
    alarm_at: Cell<Option<Millis>>,
    /// The gate's own name, once read (it never changes).
    name: RefCell<Option<String>>,
    /// Work under way, for the operations account.
    activity: Activity,
}

/// The gate's state, and where its leases are stored.
struct Loaded {
    state: GateState,
    rows: LeaseRows,
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
        // Runs past their TTL are forgotten; runs a throttle held may start now.
        let mut admitted = self.apply(0, |g, stored| g.wake(now, stored))?.admitted;
        let expired = self.with_gate(|g| g.expired_leases(now))?;
        for lease in expired {
            match self.reclaim(&lease).await {
                Ok(requeue) => {
                    let changes = self.apply(0, |g, stored| {
                        let run = &lease.ticket.run_id;
                        let mut changes = g.release(run, Some(lease.token), now, stored);
                        if requeue {
                            let again = g.offer(vec![lease.ticket.clone()], None, now, stored);
                            changes.merge(again);
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
                total_limit,
                throttle,
            }) => {
                self.remember_name(&gate)?;
                let changes = self.apply(0, |g, stored| {
                    let mut changes = g.declare(total_limit, throttle);
                    changes.merge(g.offer(tickets, limit, now, stored));
                    changes
                })?;
                (gate, changes, 0)
            }
            GateCommand::Steer(Steer { gate, control }) => {
                // A look leaves a gate that never saw its queue as it was: unnamed.
                let known = if control == Control::Look {
                    self.known()?
                } else {
                    self.remember_name(&gate)?;
                    true
                };
                let changes = self.apply(0, |g, stored| g.control(control, now, stored))?;
                self.rearm().await?;
                self.launch(&gate, changes.admitted).await;
                let view = self.with_gate(|g| GateView {
                    known,
                    limit: g.limit(),
                    controls: g.controls().clone(),
                    running: g.running_total(),
                    queued: g.waiting_count(),
                })?;
                return answer::<Steer>(&view);
            }
            GateCommand::Release(Release { ended, take }) => {
                let returns = take.min(ended.len());
                let changes =
                    self.apply(returns, |g, stored| g.release_all(&ended, now, stored))?;
                (self.name()?, changes, returns)
            }
            GateCommand::Remove(Remove { run_id }) => {
                let changes = self.apply(0, |g, stored| g.remove(&run_id, now, stored))?;
                (self.name()?, changes, 0)
            }
            GateCommand::RemoveRuns(RemoveRuns { run_ids }) => {
                let changes = self.apply(0, |g, stored| {
                    let mut changes = Changes::default();
                    for run_id in &run_ids {
                        changes.merge(g.remove(run_id, now, stored));
                    }
                    changes
                })?;
                (self.name()?, changes, 0)
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

    /// Whether this gate was ever offered a run or steered (it then knows its name).
    fn known(&self) -> Result<bool> {
        Ok(self.name.borrow().is_some() || self.settings()?.iter().any(|r| r.key == "name"))
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

    fn load(&self) -> Result<Loaded> {
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
        let controls = setting("controls")
            .map(json)
            .transpose()?
            .unwrap_or_default();
        let arrivals = setting("arrivals")
            .map(json)
            .transpose()?
            .unwrap_or_default();
        let sql = self.sql();
        // Rows a build before gate step 3 wrote (after a rollback) have no place in line
        // yet: they are put in theirs, from their tickets.
        sql.exec(
            "UPDATE waiting SET key = json_extract(ticket, '$.concurrency_key'),
                queued_at = json_extract(ticket, '$.queued_at')
            WHERE key = '' AND queued_at = 0",
            vec![],
        )?;
        // How many runs wait per key (they are read a page at a time when needed), and
        // the highest `seq` given: new runs line up after it.
        let mut max_seq = None;
        let mut waiting_per_key = Vec::new();
        let query = "SELECT key, count(*), max(seq) FROM waiting GROUP BY key";
        for mut v in rows(&sql, query, vec![])? {
            let (key, count, seq) = (v.text()?, v.int()?, v.int()?);
            waiting_per_key.push((key, count.max(0) as u64));
            max_seq = max_seq.max(Some(seq.max(0) as u64));
        }
        // Leases: a group per row, and those of the builds before grouping, one per row.
        let singles = rows(&sql, "SELECT lease FROM running", vec![])?
            .into_iter()
            .map(|mut v| json(v.text()?))
            .collect::<Result<Vec<Lease>>>()?;
        let groups = rows(&sql, "SELECT id, leases FROM leases", vec![])?
            .into_iter()
            .map(|mut v| Ok((v.int()?, json(v.text()?)?)))
            .collect::<Result<Vec<(i64, Vec<Lease>)>>>()?;
        let running = singles
            .iter()
            .chain(groups.iter().flat_map(|(_, leases)| leases))
            .cloned()
            .collect();
        Ok(Loaded {
            state: GateState::restore(
                limit,
                limit_set_at,
                waiting_per_key,
                max_seq,
                running,
                controls,
                arrivals,
            ),
            rows: LeaseRows::restore(groups, &singles),
        })
    }

    fn with_gate<T>(&self, read: impl FnOnce(&GateState) -> T) -> Result<T> {
        let mut slot = self.gate.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.load()?);
        }
        Ok(read(&slot.as_ref().expect("loaded above").state))
    }

    /// Runs one state-machine operation and writes its changes in one transaction. If a
    /// read of stored waiting runs or the write fails, the in-memory state is dropped and
    /// reloaded from storage next time, and nothing is written. The admitted leases are
    /// stored a row per group that goes out together: the `returns` first ones, which the
    /// caller takes back, then each hand (`pool::hands`).
    fn apply(
        &self,
        returns: usize,
        operation: impl FnOnce(&mut GateState, &mut SqlWaiting) -> Changes,
    ) -> Result<Changes> {
        let mut slot = self.gate.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.load()?);
        }
        let Loaded { state: gate, rows } = slot.as_mut().expect("loaded above");
        let mut stored = SqlWaiting {
            sql: self.sql(),
            failed: None,
        };
        let changes = operation(gate, &mut stored);
        if let Some(e) = stored.failed {
            *slot = None;
            return Err(e);
        }
        let (limit, limit_set_at) = (gate.limit(), gate.limit_set_at());
        let mut settings = Vec::new();
        if changes.controls_changed {
            settings.push(("controls", to_json(gate.controls())?));
        }
        if changes.throttle_changed {
            settings.push(("arrivals", to_json(gate.arrivals())?));
        }
        let (taken, handed) = split_for_releaser(changes.admitted.clone(), returns);
        let mut groups = vec![taken];
        groups.extend(
            hands("", handed, pool_size(gate.effective_limit()))
                .into_iter()
                .map(|(_, leases)| leases),
        );
        let lease_writes = rows.apply(&changes.running_removed, groups);
        let sql = self.sql();
        let written = changes.clone();
        let result = transaction(&self.state.storage(), move || {
            persist(&sql, &written, &lease_writes, limit, limit_set_at)?;
            for (key, value) in settings {
                sql.exec(
                    "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                    vec![key.into(), value.into()],
                )?;
            }
            Ok(())
        });
        if let Err(e) = result {
            *slot = None;
            return Err(e);
        }
        Ok(changes)
    }

    /// Sets the alarm for the gate's next deadline, if it moved earlier.
    async fn rearm(&self) -> Result<()> {
        match self.with_gate(|g| g.next_wake(now()))? {
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
        Ok(match store.send_within(command, CALL_LIMIT).await? {
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
        let pool = match self.with_gate(GateState::effective_limit) {
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
                    Ok(client) => client.send_within(hand, CALL_LIMIT).await,
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

fn persist(
    sql: &Sql,
    changes: &Changes,
    lease_writes: &[RowWrite],
    limit: Option<u32>,
    limit_set_at: Millis,
) -> Result<()> {
    for w in &changes.waiting_removed {
        let (key, queued_at, seq) = place_of(w);
        sql.exec(
            "DELETE FROM waiting WHERE key = ? AND queued_at = ? AND seq = ?",
            vec![key.into(), queued_at.into(), seq.into()],
        )?;
    }
    for w in &changes.waiting_added {
        let (key, queued_at, seq) = place_of(w);
        sql.exec(
            "INSERT OR REPLACE INTO waiting (key, queued_at, seq, run_id, ticket) VALUES (?, ?, ?, ?, ?)",
            vec![
                key.into(),
                queued_at.into(),
                seq.into(),
                w.ticket.run_id.as_str().into(),
                to_json(&w.ticket)?.into(),
            ],
        )?;
    }
    for write in lease_writes {
        match write {
            RowWrite::Insert { id, leases } => sql.exec(
                "INSERT INTO leases (id, leases) VALUES (?, ?)",
                vec![(*id).into(), to_json(leases)?.into()],
            )?,
            RowWrite::Update { id, leases } => sql.exec(
                "UPDATE leases SET leases = ? WHERE id = ?",
                vec![to_json(leases)?.into(), (*id).into()],
            )?,
            RowWrite::Delete { id } => {
                sql.exec("DELETE FROM leases WHERE id = ?", vec![(*id).into()])?
            }
            RowWrite::DeleteSingle { run_id } => sql.exec(
                "DELETE FROM running WHERE run_id = ?",
                vec![run_id.as_str().into()],
            )?,
        };
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

/// A waiting row's key: (concurrency key, `queued_at`, `seq`).
fn place_of(w: &Waiting) -> (&str, i64, i64) {
    let seq = w.seq.min(i64::MAX as u64) as i64;
    (w.ticket.concurrency_key.as_str(), w.ticket.queued_at, seq)
}

fn json<T: serde::de::DeserializeOwned>(text: String) -> Result<T> {
    serde_json::from_str(&text).map_err(|e| internal(e.to_string()))
}

/// The `waiting` table as the gate's state reads it. A failed read is kept in `failed`
/// (and answered as if nothing were stored): `QueueGate::apply` then throws the whole
/// operation away.
struct SqlWaiting {
    sql: Sql,
    failed: Option<worker::Error>,
}

impl SqlWaiting {
    fn read<T: Default>(&mut self, read: impl FnOnce(&Sql) -> Result<T>) -> T {
        if self.failed.is_some() {
            return T::default();
        }
        read(&self.sql).unwrap_or_else(|e| {
            self.failed = Some(e);
            T::default()
        })
    }
}

fn waiting_row(mut v: Values) -> Result<Waiting> {
    let seq = v.int()?.max(0) as u64;
    Ok(Waiting {
        seq,
        ticket: json(v.text()?)?,
    })
}

impl StoredWaiting for SqlWaiting {
    fn runs_at(&mut self, key: &str, queued_at: Millis) -> Vec<String> {
        self.read(|sql| {
            let query = "SELECT run_id FROM waiting WHERE key = ? AND queued_at = ?";
            rows(sql, query, vec![key.into(), queued_at.into()])?
                .into_iter()
                .map(|mut v| v.text())
                .collect()
        })
    }

    fn page(&mut self, key: &str, (queued_at, seq): Place, count: usize) -> Vec<Waiting> {
        self.read(|sql| {
            let query =
                "SELECT seq, ticket FROM waiting WHERE key = ? AND (queued_at, seq) > (?, ?)
                ORDER BY queued_at, seq LIMIT ?";
            let bindings = vec![
                key.into(),
                queued_at.into(),
                (seq.min(i64::MAX as u64) as i64).into(),
                (count as i64).into(),
            ];
            rows(sql, query, bindings)?
                .into_iter()
                .map(waiting_row)
                .collect()
        })
    }

    fn find(&mut self, run_id: &str) -> Option<Waiting> {
        self.read(|sql| {
            // No index by run: a scan, for a cancel of a run beyond every window.
            let query = "SELECT seq, ticket FROM waiting WHERE run_id = ? LIMIT 1";
            let found = rows(sql, query, vec![run_id.into()])?.pop();
            found.map(waiting_row).transpose()
        })
    }
}
