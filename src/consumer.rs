//! The queue consumer. Each message carries the references of runs of one store
//! (`domain::delivery::RunRefs`). For now a delivery is logged and acknowledged to its
//! store, which takes the runs out of its outbox; executing them is the next step.
//!
//! Every message is parsed on its own and gets an explicit ack or retry: one poison
//! message never fails the batch.

use worker::{console_error, console_log, MessageBatch, MessageExt};

use crate::domain::delivery::RunRefs;
use crate::store::client::RunStoreClient;
use crate::store::protocol::{StoreCommand, StoreReply};

pub async fn consume(batch: MessageBatch<serde_json::Value>, env: worker::Env) {
    for message in batch.raw_iter() {
        let refs: RunRefs = match serde_wasm_bindgen::from_value(message.body()) {
            Ok(refs) => refs,
            Err(e) => {
                // Retrying cannot make it readable: log it and let it go.
                console_error!("queue: dropping an unreadable message: {e}");
                message.ack();
                continue;
            }
        };
        match acknowledge(&env, &refs).await {
            Ok(removed) => {
                for run in &refs.runs {
                    console_log!("queue: delivered {run} from {}", refs.store);
                }
                console_log!(
                    "queue: acknowledged {} runs of {} ({removed} left the outbox)",
                    refs.runs.len(),
                    refs.store
                );
                message.ack();
            }
            Err(e) => {
                console_error!(
                    "queue: acknowledging to {} failed, retrying: {e}",
                    refs.store
                );
                message.retry();
            }
        }
    }
}

async fn acknowledge(env: &worker::Env, refs: &RunRefs) -> Result<usize, String> {
    let client = RunStoreClient::new(env, &refs.store).map_err(|e| e.detail)?;
    let command = StoreCommand::Acknowledge {
        run_ids: refs.runs.clone(),
    };
    match client.call(&command).await.map_err(|e| e.detail)? {
        StoreReply::Acknowledged { removed } => Ok(removed),
        other => Err(format!("unexpected reply {other:?}")),
    }
}
