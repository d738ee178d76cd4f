//! Offering runs to their queues' gates: grouped so that each gate gets one call, with
//! the newest `concurrencyLimit` any of its runs asked for. A run goes to its concurrency
//! key's gate among its queue's (`gateShards`, `domain::basics::shards`). Used by the
//! queue consumer (the at-least-once path), by the edge right after a trigger (the fast
//! path: the runs start without waiting for the queue; the queue's delivery then finds
//! them started and offers nothing, or offers again and the gate ignores the duplicate),
//! and by a store whose outbox row the queue did not deliver.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use worker::{console_error, Env};

use crate::domain::basics::names::GateName;
use crate::domain::basics::shards::gate_shard;
use crate::domain::config::Config;
use crate::domain::run::execution::LEASE_MARGIN_MS;
use crate::domain::scheduling::gate::{LimitUpdate, Throttle, Ticket};
use crate::objects::gate::client::QueueGateClient;
use crate::objects::gate::protocol::Offer;
use crate::objects::store::protocol::ClaimedRun;
use crate::platform::rpc::CALL_LIMIT;

pub struct Offers {
    config: Rc<Config>,
    by_gate: BTreeMap<String, GateOffer>,
}

/// What one gate is offered: runs, the newest limit they set, and the queue's total cap
/// and throttle.
#[derive(Default)]
struct GateOffer {
    tickets: Vec<Ticket>,
    limit: Option<LimitUpdate>,
    total_limit: Option<u32>,
    throttle: Option<Throttle>,
}

impl Offers {
    /// No offers yet; the configuration says how many gates each queue has.
    pub fn new(config: Rc<Config>) -> Offers {
        Offers {
            config,
            by_gate: BTreeMap::new(),
        }
    }

    /// Adds a run of `store`; returns the gates its offer must reach: its own, and when
    /// it sets its queue's `concurrencyLimit` and the queue has several gates, every one
    /// of them (a limit is the queue's, whichever keys come later).
    pub fn add(&mut self, store: &str, run: ClaimedRun) -> Vec<String> {
        let shards = self.config.gate_shards(&run.queue);
        let gate_of = |shard| String::from(GateName::for_store(store, &run.queue, shard));
        let key = run.concurrency_key.as_deref().unwrap_or_default();
        let own = gate_of(gate_shard(key, shards));
        let gates: Vec<String> = match run.queue_limit {
            None => vec![own.clone()],
            Some(limit) => {
                let update = LimitUpdate {
                    limit,
                    set_at: run.limit_set_at,
                };
                let all: Vec<String> = (0..shards).map(gate_of).collect();
                for gate in &all {
                    let offer = self.by_gate.entry(gate.clone()).or_default();
                    if offer.limit.is_none_or(|u| u.set_at <= update.set_at) {
                        offer.limit = Some(update);
                    }
                }
                all
            }
        };
        let total_limit = self.config.total_limit(&run.queue);
        let throttle = self.config.throttle(&run.queue);
        for gate in &gates {
            let offer = self.by_gate.entry(gate.clone()).or_default();
            offer.total_limit = total_limit;
            offer.throttle = throttle;
        }
        let offer = self.by_gate.entry(own).or_default();
        offer.tickets.push(ticket(store, run));
        gates
    }

    pub fn is_empty(&self) -> bool {
        self.by_gate.is_empty()
    }

    /// Makes one call per gate; returns the gates that could not be reached.
    pub async fn send(self, env: &Env) -> HashSet<String> {
        let mut failed = HashSet::new();
        for (gate, offer) in self.by_gate {
            let command = Offer {
                gate: gate.clone(),
                tickets: offer.tickets,
                limit: offer.limit,
                total_limit: offer.total_limit,
                throttle: offer.throttle,
            };
            let result = match QueueGateClient::new(env, &gate) {
                Ok(client) => client.send_within(command, CALL_LIMIT).await.map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                console_error!("offering runs to {gate} failed: {e}");
                failed.insert(gate);
            }
        }
        failed
    }
}

/// A run's place at its gate: its place in line is when it became `QUEUED`, less its
/// priority (Trigger.dev's meaning: priority P orders it as if queued P seconds earlier). The lease lasts the run's `maxDuration` (fixed when it was
/// accepted) plus a margin.
fn ticket(store: &str, run: ClaimedRun) -> Ticket {
    Ticket {
        run_id: run.run_id,
        store: store.to_owned(),
        concurrency_key: run.concurrency_key.unwrap_or_default(),
        queued_at: run
            .queued_at
            .saturating_sub(run.priority_ms.min(i64::MAX as u64) as i64),
        expires_at: run.expires_at,
        lease_ms: u64::from(run.max_duration_secs) * 1000 + LEASE_MARGIN_MS,
    }
}
