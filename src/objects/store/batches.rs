//! Two-step batches (docs/API.md section 6), as recorded in the batch's own store: creation
//! (with the batch-level idempotency key), the items as they arrive, sealing when all
//! `run_count` are in, and aborting a batch that is not sealed in time. The runs
//! themselves live in their tasks' stores (see `accept`).

use serde::Deserialize;
use worker::Result;

use super::protocol::{BatchCreated, BatchEntry, BatchKey, RecordReply};
use super::{now, RunStore};
use crate::domain::basics::time::Millis;

/// How long a two-step batch may stay unsealed. Then it is `ABORTED`; the runs its
/// received items made are kept and run as usual.
pub const SEAL_TIMEOUT_MS: Millis = 10 * 60 * 1000;

#[derive(Deserialize)]
struct HeldRow {
    batch_id: String,
    expires_at: Millis,
}

#[derive(Deserialize)]
struct StateRow {
    run_count: Option<i64>,
    sealed_at: Option<Millis>,
    aborted_at: Option<Millis>,
}

#[derive(Deserialize)]
struct CountRow {
    n: i64,
}

impl RunStore {
    pub(super) async fn create_batch(
        &self,
        batch_id: &str,
        run_count: usize,
        key: Option<BatchKey>,
    ) -> Result<BatchCreated> {
        let now = now();
        self.ensure_alarm(now + SEAL_TIMEOUT_MS).await?;
        let sql = self.sql();
        if let Some(key) = &key {
            // Two-step batch keys belong to the environment, not to a task: task "".
            let held = sql
                .exec(
                    "SELECT batch_id, expires_at FROM batch_keys WHERE task = '' AND key = ?",
                    vec![key.key.as_str().into()],
                )?
                .to_array::<HeldRow>()?
                .pop()
                .filter(|h| h.expires_at > now);
            if let Some(held) = held {
                let count = sql
                    .exec(
                        "SELECT COALESCE(run_count, 0) AS n FROM batches WHERE id = ?",
                        vec![held.batch_id.as_str().into()],
                    )?
                    .to_array::<CountRow>()?
                    .pop()
                    .map_or(0, |r| r.n.max(0) as usize);
                return Ok(BatchCreated {
                    batch_id: held.batch_id,
                    run_count: count,
                    cached: true,
                });
            }
        }
        sql.exec(
            "INSERT INTO batches (id, task, status, idempotency_key, runs, created_at, updated_at, version, run_count)
             VALUES (?, '', 'PENDING', ?, '[]', ?, ?, 3, ?)",
            vec![
                batch_id.into(),
                key.as_ref().map(|k| k.key.as_str()).into(),
                now.into(),
                now.into(),
                (run_count as i64).into(),
            ],
        )?;
        if let Some(key) = &key {
            sql.exec(
                "INSERT OR REPLACE INTO batch_keys (task, key, batch_id, body_hash, expires_at) VALUES ('', ?, ?, '', ?)",
                vec![
                    key.key.as_str().into(),
                    batch_id.into(),
                    now.saturating_add(key.ttl_ms.min(i64::MAX as u64) as i64).into(),
                ],
            )?;
        }
        Ok(BatchCreated {
            batch_id: batch_id.to_owned(),
            run_count,
            cached: false,
        })
    }

    /// Records received items; an index already recorded is a duplicate (a resent stream).
    /// The batch is sealed when all its items are in.
    pub(super) fn record_batch_items(
        &self,
        batch_id: &str,
        entries: &[BatchEntry],
    ) -> Result<RecordReply> {
        let now = now();
        let sql = self.sql();
        let Some(state) = sql
            .exec(
                "SELECT run_count, sealed_at, aborted_at FROM batches WHERE id = ? AND version = 3",
                vec![batch_id.into()],
            )?
            .to_array::<StateRow>()?
            .pop()
        else {
            return Ok(RecordReply::NotFound);
        };
        if state.aborted_at.is_some() {
            return Ok(RecordReply::BatchAborted);
        }
        let count = || -> Result<i64> {
            Ok(sql
                .exec(
                    "SELECT COUNT(*) AS n FROM batch_items WHERE batch_id = ?",
                    vec![batch_id.into()],
                )?
                .one::<CountRow>()?
                .n
                .max(0))
        };
        let before = count()?;
        for entry in entries {
            sql.exec(
                "INSERT OR IGNORE INTO batch_items (batch_id, idx, task, run_id, error, error_code)
                 VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    batch_id.into(),
                    i64::from(entry.index).into(),
                    entry.task.as_str().into(),
                    entry.run_id.as_deref().into(),
                    entry.error.as_deref().into(),
                    entry.error_code.as_deref().into(),
                ],
            )?;
        }
        let received = count()?;
        let accepted = (received - before) as usize;
        let sealed = received >= state.run_count.unwrap_or(0);
        if sealed && state.sealed_at.is_none() {
            sql.exec(
                "UPDATE batches SET sealed_at = ?, updated_at = ? WHERE id = ?",
                vec![now.into(), now.into(), batch_id.into()],
            )?;
        }
        Ok(RecordReply::ItemsRecorded {
            accepted,
            deduplicated: entries.len().saturating_sub(accepted),
            sealed,
        })
    }

    /// The alarm: two-step batches unsealed past their time are aborted.
    pub(super) fn abort_unsealed(&self, now: Millis) -> Result<()> {
        self.sql().exec(
            "UPDATE batches SET aborted_at = ?, updated_at = ?
             WHERE version = 3 AND sealed_at IS NULL AND aborted_at IS NULL AND created_at <= ?",
            vec![now.into(), now.into(), (now - SEAL_TIMEOUT_MS).into()],
        )?;
        Ok(())
    }

    /// When the next unsealed two-step batch times out.
    pub(super) fn next_abort(&self) -> Result<Option<Millis>> {
        #[derive(Deserialize)]
        struct Row {
            next: Option<Millis>,
        }
        Ok(self
            .sql()
            .exec(
                "SELECT MIN(created_at) + ? AS next FROM batches
                 WHERE version = 3 AND sealed_at IS NULL AND aborted_at IS NULL",
                vec![SEAL_TIMEOUT_MS.into()],
            )?
            .one::<Row>()?
            .next)
    }
}
