//! Delivery: the outbox (a row per delivery, `domain::run::delivery`), the queue sends of
//! a trigger's rows, the alarm's own offers of rows that came due or went undelivered,
//! and the consumer's claims and acknowledgements (invariant 1, docs/ARCHITECTURE.md).

use std::collections::HashSet;

use serde::Deserialize;
use worker::{console_error, Result};

use super::accept::{insert_delivery, Due};
use super::protocol::{Claimed, ClaimedRun};
use super::{internal, now, RunStore, ALARM_BATCH, RUNS_QUEUE};
use crate::domain::basics::time::Millis;
use crate::domain::config::attempt_seconds;
use crate::domain::run::delivery::{self, OutboxRow, REDELIVER_AFTER_MS, RETRY_SLACK_MS};
use crate::domain::run::status::RunStatus;
use crate::domain::scheduling::gate::priority_ms;
use crate::platform::meter;
use crate::platform::sql::{exec_in_chunks, exec_joined, rows};
use crate::queue::offers::Offers;

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
    priority: Option<f64>,
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

#[derive(Deserialize)]
struct NextRow {
    next: Option<Millis>,
}

impl RunStore {
    /// Sends a trigger's outbox rows (`(seq, runs)`, written as sent) to the queue, the
    /// at-least-once path behind the edge's fast offers. A failure is only logged: the
    /// alarm, armed for [`REDELIVER_AFTER_MS`] later, offers the rows' runs itself.
    pub(super) async fn send(&self, rows: Due) {
        if rows.is_empty() {
            return;
        }
        let store = match self.store_name() {
            Ok(name) => name,
            Err(e) => {
                console_error!("run store: name unknown: {e}");
                return;
            }
        };
        let queue = match self.env.queue(RUNS_QUEUE) {
            Ok(q) => q,
            Err(e) => {
                console_error!("run store: no queue binding {RUNS_QUEUE}: {e}");
                return;
            }
        };
        for call in delivery::pack(&store, rows) {
            let sizes: Vec<usize> = call.iter().map(delivery::message_size).collect();
            if let Err(e) = queue.send_batch(call).await {
                console_error!("run store {store}: queue send failed, the alarm offers: {e}");
                return;
            }
            sizes.into_iter().for_each(meter::message_sent);
        }
    }

    /// Offers the runs of outbox rows to their gates from the store itself, as the
    /// consumer would offer a message's (claim, offer, acknowledge): rows that came due
    /// (delayed runs, retries), and rows of triggers the queue has not delivered within
    /// [`REDELIVER_AFTER_MS`] (a killed local queue loses what it held, and the local
    /// queue can stall: docs/PERFORMANCE.md, "The local queue stall"). Rows whose runs
    /// reached their gates leave the outbox; the others are marked and offered again
    /// after [`REDELIVER_AFTER_MS`].
    async fn offer_due(&self, rows: Due, now: Millis) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let store = self.store_name()?;
        let config = crate::platform::settings::config(&self.env).map_err(|e| internal(e.0))?;
        let mut offers = Offers::new(config);
        let mut gates_of: Vec<(i64, HashSet<String>)> = Vec::with_capacity(rows.len());
        for (seq, runs) in rows {
            let claimed = self.claim(&runs)?.runs;
            let gates = claimed
                .into_iter()
                .flat_map(|run| offers.add(&store, run))
                .collect();
            gates_of.push((seq, gates));
        }
        let failed = offers.send(&self.env).await;
        let (reached, missed): (Vec<_>, Vec<_>) = gates_of
            .into_iter()
            .partition(|(_, gates)| gates.is_disjoint(&failed));
        let seqs = |rows: Vec<(i64, HashSet<String>)>| -> Vec<String> {
            rows.into_iter().map(|(seq, _)| seq.to_string()).collect()
        };
        let sql = self.sql();
        exec_in_chunks(
            &sql,
            "DELETE FROM deliveries WHERE seq IN ({list})",
            &[],
            &seqs(reached),
            |_| Ok(()),
        )?;
        exec_in_chunks(
            &sql,
            "UPDATE deliveries SET sent_at = ? WHERE seq IN ({list})",
            &[now.into()],
            &seqs(missed),
            |_| Ok(()),
        )
    }

    /// The alarm: release due delayed runs, offer what is due or undelivered, re-arm.
    pub(super) async fn deliver_due(&self) -> Result<()> {
        let now = now();
        let sql = self.sql();
        self.expire_due(now)?;
        self.abort_unsealed(now)?;
        let mut due: Due = Vec::new();
        let mut due_runs: Vec<String> = Vec::new();
        for mut row in rows(
            &sql,
            "SELECT seq, due_at, sent_at, runs FROM deliveries
             WHERE (sent_at IS NULL AND due_at <= ?) OR (sent_at IS NOT NULL AND sent_at <= ?)
             ORDER BY due_at LIMIT ?",
            vec![
                now.into(),
                (now - REDELIVER_AFTER_MS).into(),
                (ALARM_BATCH as i64).into(),
            ],
        )? {
            let (seq, due_at, sent_at) = (row.int()?, row.int()?, row.opt_int()?);
            let runs: Vec<String> =
                serde_json::from_str(&row.text()?).map_err(|e| internal(e.to_string()))?;
            if (OutboxRow { due_at, sent_at }).is_due(now) {
                due_runs.extend(runs.iter().cloned());
                due.push((seq, runs));
            }
        }
        // Delayed runs whose time came are queued. Only those: a delivery made for an
        // earlier `delayedUntil` (the run was rescheduled since) leaves its run waiting.
        exec_in_chunks(
            &sql,
            "UPDATE runs SET status = 'QUEUED', queued_at = ?, updated_at = ?,
                 expires_at = CASE WHEN ttl_ms IS NULL THEN NULL ELSE ? + ttl_ms END
             WHERE status = 'DELAYED' AND delayed_until <= ? AND id IN ({list})",
            &[now.into(), now.into(), now.into(), now.into()],
            &due_runs,
            |_| Ok(()),
        )?;
        self.offer_due(due, now).await?;
        let next_send = sql
            .exec(
                "SELECT MIN(CASE WHEN sent_at IS NULL THEN due_at ELSE sent_at + ? END) AS next
                 FROM deliveries",
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

    /// Writes an outbox row for `run_id` alone, due at `at`: the run is to be delivered
    /// again then (the alarm must already be armed for `at`). An earlier row that still
    /// names it delivers nothing for it before its time: a store claims only runs that
    /// should wait for a slot now.
    pub(super) fn deliver_again_at(&self, run_id: &str, at: Millis) -> Result<()> {
        insert_delivery(&self.sql(), at, None, &[run_id.to_owned()])?;
        Ok(())
    }

    /// The gates hold the runs of the outbox rows `seqs` now: the rows leave the outbox
    /// (acknowledging twice is harmless), those that had been sent when the consumer
    /// claimed them. A row sent again since (the sweep re-sent it) stays until that
    /// delivery is acknowledged: deleting it would lose its runs if that one were dropped.
    /// A message of an earlier build names no row: its runs' rows are sent again after
    /// `REDELIVER_AFTER_MS` and acknowledged then.
    pub(super) fn acknowledge(&self, seqs: &[i64], claimed_at: Millis) -> Result<()> {
        let seqs: Vec<String> = seqs.iter().map(i64::to_string).collect();
        exec_in_chunks(
            &self.sql(),
            "DELETE FROM deliveries WHERE sent_at IS NOT NULL AND sent_at <= ? AND seq IN ({list})",
            &[claimed_at.into()],
            &seqs,
            |_| Ok(()),
        )
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

    /// Marks `QUEUED` runs `EXPIRED`. Their outbox rows stay: delivered, they claim
    /// nothing for these runs, and other runs may share them.
    pub(super) fn expire(&self, run_ids: &[String], now: Millis) -> Result<()> {
        exec_in_chunks(
            &self.sql(),
            "UPDATE runs SET status = 'EXPIRED', expired_at = ?, finished_at = ?, updated_at = ?,
                 expires_at = NULL
             WHERE status = 'QUEUED' AND id IN ({list})",
            &[now.into(), now.into(), now.into()],
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
        // Each run once, in the order of its id, as `id IN (…)` would give them.
        let mut ids: Vec<&str> = run_ids.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        exec_joined(
            &self.sql(),
            "SELECT r.id AS id, r.status AS status, r.queue AS queue,
                 r.concurrency_key AS concurrency_key, r.queue_limit AS queue_limit,
                 r.created_at AS created_at, r.queued_at AS queued_at, r.retry_at AS retry_at,
                 r.expires_at AS expires_at, r.max_duration AS max_duration, r.priority AS priority
             FROM {keys} AS w CROSS JOIN runs r ON r.id = w.value",
            &[],
            &ids,
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
                priority_ms: priority_ms(row.priority),
            });
        }
        self.expire(&expired, now)?;
        Ok(Claimed { runs, at: now })
    }
}
