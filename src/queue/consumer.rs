//! The queue consumer. Each message carries the references of runs of one store
//! (`domain::run::delivery::RunRefs`). For a batch of messages the consumer
//! 1. asks each store which of its runs should wait for a slot (`Claim`),
//! 2. offers them to their queues' gates, one call per gate for the whole batch, and the
//!    gates start executors for the runs they admit,
//! 3. acknowledges the runs to their stores (out of the outbox) and acks the message.
//!
//! It never executes anything itself, so a batch takes milliseconds however long tasks
//! run. Every message is parsed on its own and gets an explicit ack or retry: one poison
//! message never fails the batch, and a message whose runs did not all reach their gates
//! is retried (a repeat is harmless: stores claim idempotently, gates ignore duplicates).

use std::collections::HashSet;

use worker::{console_error, console_log, Env, MessageBatch, MessageExt, RawMessage};

use crate::domain::basics::time::Millis;
use crate::domain::run::delivery::{message_size, RunRefs};
use crate::objects::store::client::RunStoreClient;
use crate::objects::store::protocol::{Acknowledge, Claim, Claimed, ClaimedRun};
use crate::platform::meter;
// Each object call (a claim, an offer, an acknowledgement, each of which may be sent
// again) is given up after `CALL_LIMIT` and its messages retried, so that no invocation
// waits forever: the local queue of `wrangler dev` delivers nothing while one goes on.
use crate::platform::rpc::{CallError, CALL_LIMIT};
use crate::queue::offers::Offers;

struct Delivery {
    message: RawMessage,
    refs: RunRefs,
    /// The gates this message's runs go to.
    gates: HashSet<String>,
    /// The store's clock when it answered the claim: what the acknowledgement covers.
    claimed_at: Millis,
    ok: bool,
}

pub async fn consume(batch: MessageBatch<serde_json::Value>, env: Env) {
    meter::configure(&env);
    meter::queue_invocation();
    let mut deliveries = Vec::new();
    for message in batch.raw_iter() {
        match serde_wasm_bindgen::from_value::<RunRefs>(message.body()) {
            Ok(refs) => {
                meter::message_received(message_size(&refs));
                deliveries.push(Delivery {
                    message,
                    refs,
                    gates: HashSet::new(),
                    claimed_at: 0,
                    ok: true,
                })
            }
            Err(e) => {
                meter::message_received(0);
                // Retrying cannot make it readable: set it aside for a person to look at.
                console_error!("queue: an unreadable message goes to the dead-letter queue: {e}");
                match dead_letter(&env, &message).await {
                    Ok(()) => {
                        meter::message_sent(0);
                        meter::message_acked(0);
                        message.ack();
                    }
                    Err(e) => {
                        console_error!("queue: dead-lettering failed, retrying: {e}");
                        meter::message_retried();
                        message.retry();
                    }
                }
            }
        }
    }

    // 1. Claims, per message (with the configuration: a queue's gates).
    let config = match crate::platform::settings::config(&env) {
        Ok(config) => config,
        Err(_) => {
            // Logged by `config`; nothing is claimed, the messages come back.
            for delivery in deliveries {
                meter::message_retried();
                delivery.message.retry();
            }
            return;
        }
    };
    let mut offers = Offers::new(config);
    for delivery in &mut deliveries {
        match claim(&env, &delivery.refs).await {
            Ok((runs, at)) => {
                delivery.claimed_at = at;
                for run in runs {
                    delivery.gates.extend(offers.add(&delivery.refs.store, run));
                }
            }
            Err(e) => {
                console_error!(
                    "queue: claiming runs of {} failed: {e}",
                    delivery.refs.store
                );
                delivery.ok = false;
            }
        }
    }

    // 2. One offer per gate.
    let failed_gates = offers.send(&env).await;

    // 3. Acknowledge and ack what fully reached its gates; retry the rest.
    for delivery in deliveries {
        let reached = delivery.ok && delivery.gates.is_disjoint(&failed_gates);
        let acknowledged = reached
            && match acknowledge(&env, &delivery.refs, delivery.claimed_at).await {
                Ok(()) => true,
                Err(e) => {
                    console_error!(
                        "queue: acknowledging at {} failed, the message is retried: {e}",
                        delivery.refs.store
                    );
                    false
                }
            };
        if acknowledged {
            // One line per message, not per run: a log line is an event to pay for.
            console_log!(
                "queue: delivered from {}: {}",
                delivery.refs.store,
                delivery.refs.runs.join(" ")
            );
            meter::message_acked(message_size(&delivery.refs));
            delivery.message.ack();
        } else {
            meter::message_retried();
            delivery.message.retry();
        }
    }
}

/// The queue binding where unreadable messages are set aside.
pub const DEAD_LETTERS: &str = "DEAD_LETTERS";

async fn dead_letter(env: &Env, message: &RawMessage) -> worker::Result<()> {
    let body = js_sys::JSON::stringify(&message.body())
        .map(String::from)
        .unwrap_or_else(|_| "unprintable".to_owned());
    env.queue(DEAD_LETTERS)?
        .send(serde_json::json!({ "unreadable": body }))
        .await
}

async fn claim(env: &Env, refs: &RunRefs) -> Result<(Vec<ClaimedRun>, Millis), CallError> {
    let command = Claim {
        run_ids: refs.runs.clone(),
    };
    let store = RunStoreClient::new(env, &refs.store)?;
    let Claimed { runs, at } = store.send_within(command, CALL_LIMIT).await?;
    Ok((runs, at))
}

async fn acknowledge(env: &Env, refs: &RunRefs, claimed_at: Millis) -> Result<(), CallError> {
    if refs.deliveries.is_empty() {
        // A message of an earlier build names no outbox row: nothing to delete (its runs'
        // rows are sent again and acknowledged then).
        return Ok(());
    }
    let command = Acknowledge {
        deliveries: refs.deliveries.clone(),
        claimed_at,
    };
    RunStoreClient::new(env, &refs.store)?
        .send_within(command, CALL_LIMIT)
        .await
}
