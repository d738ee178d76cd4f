//! Acting on runs by request (docs/API.md section 5): replay, reschedule, and resetting an
//! idempotency key.

use serde::Deserialize;
use worker::Result;

use super::protocol::{KeyReset, ReplayReply, RescheduleReply, RunReply};
use super::{now, RunStore};
use crate::domain::basics::time::Millis;
use crate::domain::run::delivery::REDELIVER_AFTER_MS;
use crate::domain::run::status::RunStatus;

#[derive(Deserialize)]
struct StatusRow {
    status: String,
    ttl_ms: Option<Millis>,
}

impl RunStore {
    fn status_and_ttl(&self, run_id: &str) -> Result<Option<StatusRow>> {
        Ok(self
            .sql()
            .exec(
                "SELECT status, ttl_ms FROM runs WHERE id = ?",
                vec![run_id.into()],
            )?
            .to_array::<StatusRow>()?
            .pop())
    }

    /// A new `QUEUED` run with the same task, payload, context, options and tags as
    /// `run_id`; it has no idempotency key and belongs to no batch.
    pub(super) async fn replay(&self, run_id: &str, new_run_id: &str) -> Result<ReplayReply> {
        let now = now();
        let Some(row) = self.status_and_ttl(run_id)? else {
            return Ok(ReplayReply::NotFound);
        };
        let expires_at = row.ttl_ms.map(|ttl| now.saturating_add(ttl));
        self.ensure_alarm(expires_at.map_or(now + REDELIVER_AFTER_MS, |e| {
            e.min(now + REDELIVER_AFTER_MS)
        }))
        .await?;
        let sql = self.sql();
        sql.exec(
            "INSERT INTO runs (id, task, status, payload, payload_chunks, payload_type, context,
                 context_chunks, queue, queue_limit, concurrency_key, tags, ttl, ttl_ms, max_attempts,
                 metadata, machine, priority, max_duration, is_test, trigger_function, created_at,
                 updated_at, queued_at, expires_at, retry)
             SELECT ?, task, 'QUEUED', payload, payload_chunks, payload_type, context, context_chunks,
                 queue, queue_limit, concurrency_key, tags, ttl, ttl_ms, max_attempts, metadata, machine,
                 priority, max_duration, is_test, 'trigger', ?, ?, ?, ?, retry
             FROM runs WHERE id = ?",
            vec![
                new_run_id.into(),
                now.into(),
                now.into(),
                now.into(),
                expires_at.into(),
                run_id.into(),
            ],
        )?;
        sql.exec(
            "INSERT INTO run_chunks (run_id, part, seq, data)
             SELECT ?, part, seq, data FROM run_chunks WHERE run_id = ?",
            vec![new_run_id.into(), run_id.into()],
        )?;
        let runs = vec![new_run_id.to_owned()];
        super::accept::insert_listing(&sql, now, &runs)?;
        let seq = super::accept::insert_delivery(&sql, now, Some(now), &runs)?;
        self.send(vec![(seq, runs)]).await;
        Ok(ReplayReply::Replayed {
            id: new_run_id.to_owned(),
        })
    }

    /// Moves a `DELAYED` run to `delay_until` (now or later).
    pub(super) async fn reschedule(
        &self,
        run_id: &str,
        delay_until: Millis,
    ) -> Result<RescheduleReply> {
        let Some(row) = self.status_and_ttl(run_id)? else {
            return Ok(RescheduleReply::NotFound);
        };
        if RunStatus::parse(&row.status) != Some(RunStatus::Delayed) {
            return Ok(RescheduleReply::NotDelayed);
        }
        let now = now();
        let due = delay_until.max(now);
        self.ensure_alarm(due).await?;
        let sql = self.sql();
        let changed = sql
            .exec(
                "UPDATE runs SET delayed_until = ?, updated_at = ? WHERE id = ? AND status = 'DELAYED'",
                vec![due.into(), now.into(), run_id.into()],
            )?
            .rows_written();
        if changed == 0 {
            return Ok(RescheduleReply::NotDelayed); // it became due while the alarm was armed
        }
        // A delivery for the new time; the one made for the old time leaves the run
        // waiting when it comes (the alarm queues only runs whose `delayedUntil` passed).
        self.deliver_again_at(run_id, due)?;
        Ok(match self.get_run(run_id)? {
            RunReply::Run(run) => RescheduleReply::Run(run),
            RunReply::NotFound => RescheduleReply::NotFound,
        })
    }

    /// Forgets `key` of `task`: the next trigger with it creates a new run.
    pub(super) fn reset_idempotency_key(&self, task: &str, key: &str) -> Result<KeyReset> {
        let removed = self
            .sql()
            .exec(
                "DELETE FROM idempotency_keys WHERE task = ? AND key = ?",
                vec![task.into(), key.into()],
            )?
            .rows_written();
        Ok(KeyReset {
            removed: removed > 0,
        })
    }
}
