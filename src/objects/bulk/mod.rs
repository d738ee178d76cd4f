//! `BulkActions`: the Durable Object that holds one environment's bulk actions (named by
//! the environment's slug) and carries them out by its alarm, a page per store at a time.
//!
//! Each ring asks every store an action still has runs in for its next page
//! (`store::protocol::BulkStep`, up to `STEP_RUNS` runs), records the totals the store
//! answers, frees the cancelled runs' places at their gates (one call per gate and page),
//! and rings again at once while any action is pending. The stores keep each action's
//! cursor with the runs they changed, so a step asked for again after a restart acts on
//! nothing twice; the object only ever adds up their reports. 10,000 runs in one store
//! take 20 steps.

pub mod client;
pub mod protocol;
pub mod schema;

use std::cell::Cell;
use std::collections::BTreeMap;

use worker::{console_error, durable_object, DurableObject, Env, Request, Response, Result, State};

use crate::domain::api::bulk::{BulkAction, BulkStatus, STEP_RUNS};
use crate::domain::basics::names::GateName;
use crate::domain::basics::shards::gate_shard;
use crate::domain::basics::time::Millis;
use crate::domain::config::Config;
use crate::objects::gate::client::QueueGateClient;
use crate::objects::gate::protocol::RemoveRuns;
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::BulkStep;
use crate::platform::meter::{self, Activity, Object};
use crate::platform::rpc::{self, answer, CALL_LIMIT};
use crate::platform::runtime::{ensure_alarm, internal, now};
use crate::platform::sql::{rows, Migrated, Sql};
use protocol::{AbortBulk, Bulk, BulkCommand, CreateBulk, GetBulk, ListBulk};

/// How long after a failed step the alarm tries again.
const RETRY_MS: Millis = 5_000;

#[durable_object(alarm)]
pub struct BulkActions {
    state: State,
    env: Env,
    migrated: Migrated,
    alarm_at: Cell<Option<Millis>>,
    activity: Activity,
}

impl DurableObject for BulkActions {
    fn new(state: State, env: Env) -> Self {
        meter::configure(&env);
        let migrated = Migrated::start(&state.storage(), &schema::SCHEMA, Object::Bulk);
        BulkActions {
            state,
            env,
            migrated,
            alarm_at: Cell::new(None),
            activity: Activity::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        rpc::fetched(self.handle(&req.bytes().await?).await)
    }

    async fn alarm(&self) -> Result<Response> {
        let _active = meter::alarm(Object::Bulk, &self.activity, Some(&self.state));
        self.alarm_at.set(None);
        self.migrated.ready()?;
        let config = crate::platform::settings::config(&self.env).map_err(|e| internal(e.0))?;
        let mut failed = false;
        for mut action in self.pending()? {
            for part in action.pending_parts() {
                if let Err(e) = self.step(&config, &mut action, part).await {
                    console_error!("bulk action {}: {e}", action.id);
                    failed = true;
                }
                // Re-read: an abort that came while the store worked stops the rest.
                if self
                    .get(&action.id)?
                    .is_some_and(|a| a.status == BulkStatus::Aborted)
                {
                    break;
                }
            }
        }
        if self.has_pending()? {
            let at = now() + if failed { RETRY_MS } else { 0 };
            ensure_alarm(&self.state.storage(), &self.alarm_at, at).await?;
        }
        Response::ok("")
    }
}

crate::export_command!(BulkActions);

impl BulkActions {
    /// Answers one command from the edge (`rpc::call`).
    async fn handle(&self, command: &[u8]) -> Result<String> {
        let _active = meter::request(Object::Bulk, &self.activity, Some(&self.state));
        self.migrated.ready()?;
        let reply = match rpc::decode::<Bulk>(command)? {
            BulkCommand::CreateBulk(CreateBulk { action, .. }) => {
                self.save(&action)?;
                answer::<CreateBulk>(&*action)
            }
            BulkCommand::GetBulk(GetBulk { id, .. }) => answer::<GetBulk>(&self.get(&id)?),
            BulkCommand::ListBulk(ListBulk { limit, after, .. }) => {
                answer::<ListBulk>(&self.list(limit, after.as_deref())?)
            }
            BulkCommand::AbortBulk(AbortBulk { id, .. }) => {
                let action = self.get(&id)?.map(|mut action| {
                    action.abort(now());
                    action
                });
                if let Some(action) = &action {
                    self.save(action)?;
                }
                answer::<AbortBulk>(&action)
            }
        };
        // Every call makes sure a pending action's alarm is set.
        if self.has_pending()? {
            ensure_alarm(&self.state.storage(), &self.alarm_at, now()).await?;
        }
        reply
    }

    fn sql(&self) -> Sql {
        Sql::new(&self.state.storage(), Object::Bulk)
    }

    fn save(&self, action: &BulkAction) -> Result<()> {
        let json = serde_json::to_string(action).map_err(|e| internal(e.to_string()))?;
        let status = serde_json::to_value(action.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.sql().exec(
            "INSERT OR REPLACE INTO bulk_actions (id, created_at, status, action) VALUES (?, ?, ?, ?)",
            vec![
                action.id.as_str().into(),
                action.created_at.into(),
                status.into(),
                json.into(),
            ],
        )?;
        Ok(())
    }

    fn read(&self, query: &str, bindings: Vec<worker::SqlStorageValue>) -> Result<Vec<BulkAction>> {
        rows(&self.sql(), query, bindings)?
            .into_iter()
            .map(|mut row| {
                let text = row.text()?;
                serde_json::from_str(&text).map_err(|e| internal(e.to_string()))
            })
            .collect()
    }

    fn get(&self, id: &str) -> Result<Option<BulkAction>> {
        Ok(self
            .read(
                "SELECT action FROM bulk_actions WHERE id = ?",
                vec![id.into()],
            )?
            .pop())
    }

    fn pending(&self) -> Result<Vec<BulkAction>> {
        self.read(
            "SELECT action FROM bulk_actions WHERE status = 'PENDING' ORDER BY created_at, id",
            vec![],
        )
    }

    /// Whether an action is still pending (its alarm must be set): the scan stops at the
    /// first one, and no action's JSON is parsed.
    fn has_pending(&self) -> Result<bool> {
        Ok(!rows(
            &self.sql(),
            "SELECT 1 FROM bulk_actions WHERE status = 'PENDING' LIMIT 1",
            vec![],
        )?
        .is_empty())
    }

    fn list(&self, limit: usize, after: Option<&str>) -> Result<Vec<BulkAction>> {
        let limit = limit as i64;
        match after.map(|id| self.get(id)).transpose()?.flatten() {
            Some(cursor) => self.read(
                "SELECT action FROM bulk_actions WHERE created_at < ? OR (created_at = ? AND id < ?)
                 ORDER BY created_at DESC, id DESC LIMIT ?",
                vec![
                    cursor.created_at.into(),
                    cursor.created_at.into(),
                    cursor.id.as_str().into(),
                    limit.into(),
                ],
            ),
            None => self.read(
                "SELECT action FROM bulk_actions ORDER BY created_at DESC, id DESC LIMIT ?",
                vec![limit.into()],
            ),
        }
    }

    /// One step of `action` in the store of its part `part`: the store acts on its next
    /// page, the cancelled runs are freed at their gates, and the totals are recorded.
    async fn step(
        &self,
        config: &Config,
        action: &mut BulkAction,
        part: usize,
    ) -> std::result::Result<(), String> {
        let store = action.parts[part].store.clone();
        let command = BulkStep {
            bulk_id: action.id.clone(),
            kind: action.kind,
            filter: action.filter.clone(),
            run_ids: action.parts[part].run_ids.clone(),
            limit: STEP_RUNS,
        };
        let client = RunStoreClient::new(&self.env, &store).map_err(|e| e.to_string())?;
        let reply = client
            .send_within(command, CALL_LIMIT)
            .await
            .map_err(|e| e.to_string())?;
        // The store has already refused to start them; this frees their places now.
        let mut by_gate: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (queue, key, run_id) in reply.removals {
            let shard = gate_shard(
                key.as_deref().unwrap_or_default(),
                config.gate_shards(&queue),
            );
            let gate = String::from(GateName::for_store(&store, &queue, shard));
            by_gate.entry(gate).or_default().push(run_id);
        }
        for (gate, run_ids) in by_gate {
            let removed = match QueueGateClient::new(&self.env, &gate) {
                Ok(client) => client
                    .send_within(RemoveRuns { run_ids }, CALL_LIMIT)
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                console_error!(
                    "bulk action {}: freeing runs at {gate} failed (their leases will expire): {e}",
                    action.id
                );
            }
        }
        // Recorded on the stored action, which an abort may have changed meanwhile.
        let mut stored = self
            .get(&action.id)
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| action.clone());
        stored.record(part, reply.counts, now());
        self.save(&stored).map_err(|e| e.to_string())?;
        *action = stored;
        Ok(())
    }
}
