//! Delivery: the outbox, the queue sends, the alarm, and the consumer's claims and
//! acknowledgements (invariant 1, docs/ARCHITECTURE.md).

use serde::Deserialize;
use worker::{console_error, Result};

use super::protocol::{Claimed, ClaimedRun};
use super::{internal, now, RunStore, ALARM_BATCH, RUNS_QUEUE};
use crate::domain::basics::time::Millis;
use crate::domain::config::attempt_seconds;
use crate::domain::run::delivery::{self, OutboxRow, REDELIVER_AFTER_MS, RETRY_SLACK_MS};
use crate::domain::run::status::RunStatus;
use crate::platform::meter;
use crate::platform::sql::exec_in_chunks;

#[derive(Deserialize)]
struct ClaimRow {
    id: String,
    status: String,
    queue: String,
    concurrency_key: Option<String>,
    queue_limit: Option<i64>,
    created_at: Millis,
    queued_at: Option<Millis>,
    retry_at: Option<Millis>,
    expires_at: Option<Millis>,
    max_duration: Option<i64>,
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

#[derive(Deserialize)]
struct OutboxDbRow {
    run_id: String,
    due_at: Millis,
    sent_at: Option<Millis>,
}

#[derive(Deserialize)]
struct NextRow {
    next: Option<Millis>,
}

impl RunStore {
    /// Sends run references to the queue and records when. A failure is only logged:
    /// the rows stay unsent and the armed alarm sends them.
    pub(super) async fn send(&self, runs: &[String], now: Millis) -> bool {
        if runs.is_empty() {
            return true;
        }
        let store = match self.store_name() {
            Ok(name) => name,
            Err(e) => {
                console_error!("run store: name unknown: {e}");
                return false;
            }
        };
        let queue = match self.env.queue(RUNS_QUEUE) {
            Ok(q) => q,
            Err(e) => {
                console_error!("run store: no queue binding {RUNS_QUEUE}: {e}");
                return false;
            }
        };
        for call in delivery::pack(&store, runs) {
            let ids: Vec<String> = call.iter().flat_map(|m| m.runs.iter().cloned()).collect();
            let sizes: Vec<usize> = call.iter().map(delivery::message_size).collect();
            if let Err(e) = queue.send_batch(call).await {
                console_error!("run store {store}: queue send failed, the alarm will retry: {e}");
                return false;
            }
            sizes.into_iter().for_each(meter::message_sent);
            // Only rows that were due: a row replaced while the send was under way (a
            // retry due later) is a delivery still to make.
            let marked = exec_in_chunks(
                &self.sql(),
                "UPDATE outbox SET sent_at = ? WHERE due_at <= ? AND run_id IN ({list})",
                &[now.into(), now.into()],
                &ids,
                |_| Ok(()),
            );
            if let Err(e) = marked {
                console_error!("run store {store}: could not mark sent rows: {e}");
            }
        }
        true
    }

    /// The alarm: release due delayed runs, send what is due or unacknowledged, re-arm.
    pub(super) async fn deliver_due(&self) -> Result<()> {
        let now = now();
        let sql = self.sql();
        self.expire_due(now)?;
        self.abort_unsealed(now)?;
        let rows = sql
            .exec(
                "SELECT run_id, due_at, sent_at FROM outbox
                 WHERE (sent_at IS NULL AND due_at <= ?) OR (sent_at IS NOT NULL AND sent_at <= ?)
                 ORDER BY due_at LIMIT ?",
                vec![
                    now.into(),
                    (now - REDELIVER_AFTER_MS).into(),
                    (ALARM_BATCH as i64).into(),
                ],
            )?
            .to_array::<OutboxDbRow>()?;
        let due: Vec<String> = rows
            .iter()
            .filter(|r| {
                OutboxRow {
                    due_at: r.due_at,
                    sent_at: r.sent_at,
                }
                .is_sendable(now)
            })
            .map(|r| r.run_id.clone())
            .collect();
        exec_in_chunks(
            &sql,
            "UPDATE runs SET status = 'QUEUED', queued_at = ?, updated_at = ?,
                 expires_at = CASE WHEN ttl_ms IS NULL THEN NULL ELSE ? + ttl_ms END
             WHERE status = 'DELAYED' AND id IN ({list})",
            &[now.into(), now.into(), now.into()],
            &due,
            |_| Ok(()),
        )?;
        if !self.send(&due, now).await {
            return Err(internal("queue send failed; the alarm retries"));
        }
        let next_send = sql
            .exec(
                "SELECT MIN(CASE WHEN sent_at IS NULL THEN due_at ELSE sent_at + ? END) AS next FROM outbox",
                vec![REDELIVER_AFTER_MS.into()],
            )?
            .one::<NextRow>()?
            .next;
        let next_expiry = sql
            .exec(
                "SELECT MIN(expires_at) AS next FROM runs WHERE status = 'QUEUED' AND expires_at IS NOT NULL",
                None,
            )?
            .one::<NextRow>()?
            .next;
        let next = [next_send, next_expiry, self.next_abort()?]
            .into_iter()
            .flatten()
            .min();
        if let Some(at) = next {
            self.ensure_alarm(at.max(now + 1)).await?;
        }
        Ok(())
    }

    /// Makes `run_id`'s outbox row due at `at` and unsent, replacing any earlier row: the
    /// run is to be delivered again then (the alarm must already be armed for `at`).
    pub(super) fn deliver_again_at(&self, run_id: &str, at: Millis) -> Result<()> {
        self.sql().exec(
            "INSERT OR REPLACE INTO outbox (run_id, due_at, sent_at) VALUES (?, ?, NULL)",
            vec![run_id.into(), at.into()],
        )?;
        Ok(())
    }

    /// The gates hold these runs now: they leave the outbox (acknowledging twice is harmless).
    /// Deletes the outbox rows of `run_ids` that had been sent when the consumer claimed
    /// them. A row written since (an attempt failed and its retry is due, or the sweep
    /// re-sent it) belongs to a later delivery and stays until that one is acknowledged:
    /// deleting it would lose the run if that delivery were dropped.
    pub(super) fn acknowledge(&self, run_ids: &[String], claimed_at: Millis) -> Result<()> {
        exec_in_chunks(
            &self.sql(),
            "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at <= ? AND run_id IN ({list})",
            &[claimed_at.into()],
            run_ids,
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// `QUEUED` runs whose TTL has passed become `EXPIRED`; they never execute.
    fn expire_due(&self, now: Millis) -> Result<()> {
        let ids: Vec<String> = self
            .sql()
            .exec(
                "SELECT id FROM runs WHERE status = 'QUEUED' AND expires_at IS NOT NULL AND expires_at <= ?",
                vec![now.into()],
            )?
            .to_array::<IdRow>()?
            .into_iter()
            .map(|r| r.id)
            .collect();
        self.expire(&ids, now)
    }

    /// Marks `QUEUED` runs `EXPIRED` and forgets their outbox rows.
    pub(super) fn expire(&self, run_ids: &[String], now: Millis) -> Result<()> {
        let sql = self.sql();
        exec_in_chunks(
            &sql,
            "UPDATE runs SET status = 'EXPIRED', expired_at = ?, finished_at = ?, updated_at = ?,
                 expires_at = NULL
             WHERE status = 'QUEUED' AND id IN ({list})",
            &[now.into(), now.into(), now.into()],
            run_ids,
            |_| Ok(()),
        )?;
        exec_in_chunks(
            &sql,
            "DELETE FROM outbox WHERE run_id IN ({list})",
            &[],
            run_ids,
            |_| Ok(()),
        )
    }

    /// The runs of a delivery that should wait at their queue's gate now: `QUEUED` ones
    /// within their TTL, and `REATTEMPTING` ones whose backoff has ended. The others
    /// (delayed, started, finished, cancelled) are left out: a repeated delivery is harmless.
    pub(super) fn claim(&self, run_ids: &[String]) -> Result<Claimed> {
        let now = now();
        let mut rows = Vec::new();
        exec_in_chunks(
            &self.sql(),
            "SELECT id, status, queue, concurrency_key, queue_limit, created_at, queued_at, retry_at,
                 expires_at, max_duration
             FROM runs WHERE id IN ({list})",
            &[],
            run_ids,
            |cursor| {
                rows.extend(cursor.to_array::<ClaimRow>()?);
                Ok(())
            },
        )?;
        let mut expired = Vec::new();
        let mut runs = Vec::new();
        for row in rows {
            let queued_at = match RunStatus::parse(&row.status) {
                Some(RunStatus::Queued) if row.expires_at.is_some_and(|at| at <= now) => {
                    expired.push(row.id);
                    continue;
                }
                Some(RunStatus::Queued) => row.queued_at.unwrap_or(row.created_at),
                Some(RunStatus::Reattempting)
                    if row.retry_at.is_none_or(|at| at <= now + RETRY_SLACK_MS) =>
                {
                    row.retry_at.unwrap_or(now)
                }
                _ => continue,
            };
            runs.push(ClaimedRun {
                run_id: row.id,
                queue: row.queue,
                concurrency_key: row.concurrency_key,
                queue_limit: row.queue_limit.map(|n| n.clamp(0, 1000) as u32),
                limit_set_at: row.created_at,
                queued_at,
                expires_at: row.expires_at,
                max_duration_secs: attempt_seconds(row.max_duration),
            });
        }
        self.expire(&expired, now)?;
        Ok(Claimed { runs, at: now })
    }
}
