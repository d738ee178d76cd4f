//! Acting on runs by request (docs/API.md section 5): replay, reschedule, and resetting an
//! idempotency key.

use serde::Deserialize;
use worker::Result;

use super::accept::insert_body;
use super::protocol::{KeyReset, MetadataReply, ReplayReply, RescheduleReply, RunReply, TagsReply};
use super::schema::BODY_ITEM;
use super::{internal, now, RunStore};
use crate::domain::api::error::ApiError;
use crate::domain::basics::time::Millis;
use crate::domain::run::body::RunBody;
use crate::domain::run::delivery::REDELIVER_AFTER_MS;
use crate::domain::run::metadata::{merged_tags, updated, Update};
use crate::domain::run::status::RunStatus;
use crate::platform::sql::rows;

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
        let Some(expires_at) = self.copy_run(run_id, new_run_id, now)? else {
            return Ok(ReplayReply::NotFound);
        };
        self.ensure_alarm(redelivery_alarm(expires_at, now)).await?;
        let sql = self.sql();
        let runs = vec![new_run_id.to_owned()];
        super::accept::insert_listing(&sql, now, &runs)?;
        let seq = super::accept::insert_delivery(&sql, now, Some(now), &runs)?;
        self.tally(Some(crate::domain::api::activity::Event::Created(1)))?;
        self.send(vec![(seq, runs)]).await;
        Ok(ReplayReply::Replayed {
            id: new_run_id.to_owned(),
        })
    }

    /// Writes `new_run_id`, a fresh `QUEUED` copy of `run_id` (see [`RunStore::replay`]),
    /// without listing or delivering it; `None` when `run_id` is not here, else when the
    /// copy expires (its TTL counted from `now`).
    pub(super) fn copy_run(
        &self,
        run_id: &str,
        new_run_id: &str,
        now: Millis,
    ) -> Result<Option<Option<Millis>>> {
        let Some(row) = self.status_and_ttl(run_id)? else {
            return Ok(None);
        };
        let expires_at = row.ttl_ms.map(|ttl| now.saturating_add(ttl));
        let sql = self.sql();
        // A body item of its own: the copy's options without the key or the batch, made by
        // `trigger`.
        let item = rows(
            &sql,
            &format!("SELECT {BODY_ITEM} FROM runs WHERE id = ?"),
            vec![run_id.into()],
        )?
        .pop()
        .map(|mut v| v.opt_text())
        .transpose()?
        .flatten();
        let (body, body_len) = match item {
            Some(text) => {
                let mut item = RunBody::parse(&text).map_err(internal)?;
                item.idempotency_key = None;
                item.batch_id = None;
                item.trigger_function = "trigger".into();
                let text = item.to_json().map_err(internal)?;
                let len = text.len() as i64;
                (Some(insert_body(&sql, text)?), Some(len))
            }
            None => (None, None),
        };
        sql.exec(
            "INSERT INTO runs (id, task, status, payload, payload_chunks, payload_type, context,
                 context_chunks, queue, queue_limit, concurrency_key, tags, ttl, ttl_ms, max_attempts,
                 metadata, machine, priority, max_duration, is_test, trigger_function, created_at,
                 updated_at, queued_at, expires_at, retry, body, body_at, body_len)
             SELECT ?, task, 'QUEUED', payload, payload_chunks, payload_type, context, context_chunks,
                 queue, queue_limit, concurrency_key, tags, ttl, ttl_ms, max_attempts, metadata, machine,
                 priority, max_duration, is_test, 'trigger', ?, ?, ?, ?, retry, ?, ?, ?
             FROM runs WHERE id = ?",
            vec![
                new_run_id.into(),
                now.into(),
                now.into(),
                now.into(),
                expires_at.into(),
                body.into(),
                body.map(|_| 1i64).into(),
                body_len.into(),
                run_id.into(),
            ],
        )?;
        sql.exec(
            "INSERT INTO run_chunks (run_id, part, seq, data)
             SELECT ?, part, seq, data FROM run_chunks WHERE run_id = ?",
            vec![new_run_id.into(), run_id.into()],
        )?;
        Ok(Some(expires_at))
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

    /// The run's metadata as stored.
    pub(super) fn metadata(&self, run_id: &str) -> Result<MetadataReply> {
        #[derive(Deserialize)]
        struct Row {
            metadata: Option<String>,
        }
        let row = self
            .sql()
            .exec(
                "SELECT metadata FROM runs WHERE id = ?",
                vec![run_id.into()],
            )?
            .to_array::<Row>()?
            .pop();
        Ok(match row {
            Some(row) => MetadataReply::Metadata(row.metadata),
            None => MetadataReply::NotFound,
        })
    }

    /// Applies `update` to the run's metadata: read, changed and written with no await
    /// between, so concurrent updates apply one after the other, none lost. Any status:
    /// a task reports progress while it executes.
    pub(super) fn update_metadata(&self, run_id: &str, update: &Update) -> Result<MetadataReply> {
        let current = match self.metadata(run_id)? {
            MetadataReply::Metadata(current) => current,
            other => return Ok(other),
        };
        let next = match updated(current.as_deref(), update) {
            Ok(next) => next,
            Err(e) => return Ok(refused_metadata(e)),
        };
        self.sql().exec(
            "UPDATE runs SET metadata = ?, updated_at = ? WHERE id = ?",
            vec![next.as_str().into(), now().into(), run_id.into()],
        )?;
        Ok(MetadataReply::Metadata(Some(next)))
    }

    /// Adds `tags` to the run's, each once, within the per-run limit.
    pub(super) fn add_tags(&self, run_id: &str, tags: &[String]) -> Result<TagsReply> {
        #[derive(Deserialize)]
        struct Row {
            tags: String,
        }
        let Some(row) = self
            .sql()
            .exec("SELECT tags FROM runs WHERE id = ?", vec![run_id.into()])?
            .to_array::<Row>()?
            .pop()
        else {
            return Ok(TagsReply::NotFound);
        };
        let current: Vec<String> = serde_json::from_str(&row.tags).unwrap_or_default();
        let merged = match merged_tags(&current, tags) {
            Ok(merged) => merged,
            Err(ApiError::Validation { path, reason }) => {
                return Ok(TagsReply::Refused { path, reason })
            }
            Err(e) => {
                return Ok(TagsReply::Refused {
                    path: "tags".into(),
                    reason: e.message(),
                })
            }
        };
        let added = merged.len() - current.len();
        if added > 0 {
            let text =
                serde_json::to_string(&merged).map_err(|e| super::internal(e.to_string()))?;
            self.sql().exec(
                "UPDATE runs SET tags = ?, updated_at = ? WHERE id = ?",
                vec![text.into(), now().into(), run_id.into()],
            )?;
        }
        Ok(TagsReply::Tags {
            tags: merged,
            added,
        })
    }
}

fn refused_metadata(e: ApiError) -> MetadataReply {
    match e {
        ApiError::Validation { path, reason } => MetadataReply::Refused { path, reason },
        other => MetadataReply::Refused {
            path: "metadata".into(),
            reason: other.message(),
        },
    }
}

/// When a store that just made queued runs (expiring at `expires_at`, if ever) must wake:
/// by their expiry, and by the redelivery check if the queue does not deliver them.
pub(super) fn redelivery_alarm(expires_at: Option<Millis>, now: Millis) -> Millis {
    expires_at.map_or(now + REDELIVER_AFTER_MS, |e| {
        e.min(now + REDELIVER_AFTER_MS)
    })
}
