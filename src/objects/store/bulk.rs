//! A bulk action's steps in this store (`domain::api::bulk`): the next page of the runs it
//! selects here, acted on (cancelled, or replayed as new runs) in one transaction with the
//! action's cursor and counts in `bulk_progress`. A step asked for again after a lost
//! reply continues from the stored cursor, so no run is acted on twice, and the counts it
//! answers are the totals so far.

use serde::{Deserialize, Serialize};
use worker::Result;

use super::manage::redelivery_alarm;
use super::protocol::{BulkStep, BulkStepReply, CancelReply};
use super::{now, RunStore};
use crate::domain::api::bulk::{BulkKind, StepCounts};
use crate::domain::api::list::{Cursor, Page};
use crate::domain::basics::ids::RunId;
use crate::domain::basics::time::Millis;
use crate::platform::sql::{rows, transaction};

/// Where a walk got to: the last run of a filter's page, or the index into the ids.
#[derive(Serialize, Deserialize)]
enum Position {
    Start,
    After(Cursor),
    Index(usize),
}

struct Progress {
    position: Position,
    counts: StepCounts,
}

impl RunStore {
    fn progress(&self, bulk_id: &str) -> Result<Option<Progress>> {
        let row = rows(
            &self.sql(),
            "SELECT cursor, total, success, failure, done FROM bulk_progress WHERE bulk_id = ?",
            vec![bulk_id.into()],
        )?
        .pop();
        let Some(mut row) = row else {
            return Ok(None);
        };
        let position = match row.opt_text()? {
            Some(text) => serde_json::from_str(&text).unwrap_or(Position::Start),
            None => Position::Start,
        };
        let mut int = || row.int().map(|n| n.max(0) as u64);
        let counts = StepCounts {
            total: int()?,
            success: int()?,
            failure: int()?,
            done: int()? != 0,
        };
        Ok(Some(Progress { position, counts }))
    }

    pub(super) async fn bulk_step(&self, step: BulkStep) -> Result<BulkStepReply> {
        let now = now();
        let mut replayed: Vec<String> = Vec::new();
        let mut expiry: Option<Millis> = None;
        let mut removals = Vec::new();
        let mut delivery = None;
        if step.kind == BulkKind::Replay {
            // Armed first: if the object stops after the step commits, the alarm finds the
            // new runs' delivery row and sends it.
            self.ensure_alarm(redelivery_alarm(None, now)).await?;
        }
        let counts = transaction(&self.state.storage(), || {
            let mut progress = match self.progress(&step.bulk_id)? {
                Some(p) => p,
                None => Progress {
                    position: Position::Start,
                    counts: StepCounts {
                        total: match &step.filter {
                            Some(filter) => self.count_runs(filter)?,
                            None => step.run_ids.len() as u64,
                        },
                        success: 0,
                        failure: 0,
                        done: false,
                    },
                },
            };
            if progress.counts.done {
                return Ok(progress.counts);
            }
            let limit = step.limit.max(1);
            let page: Vec<String> = match (&step.filter, &progress.position) {
                (Some(filter), position) => {
                    let page = match position {
                        Position::After(c) => Page::After(c.clone()),
                        _ => Page::First,
                    };
                    let runs = self.list_runs(filter, &page, limit)?;
                    if let Some(last) = runs.last() {
                        progress.position = Position::After(Cursor {
                            created_at: last.created_at,
                            id: last.id.clone(),
                        });
                    }
                    progress.counts.done = runs.len() < limit;
                    runs.into_iter().map(|r| r.id).collect()
                }
                (None, position) => {
                    let from = match position {
                        Position::Index(i) => *i,
                        _ => 0,
                    };
                    let to = (from + limit).min(step.run_ids.len());
                    progress.position = Position::Index(to);
                    progress.counts.done = to == step.run_ids.len();
                    step.run_ids.get(from..to).unwrap_or_default().to_vec()
                }
            };
            for run_id in page {
                let acted = match step.kind {
                    BulkKind::Cancel => match self.cancel(&run_id)? {
                        CancelReply::Canceled {
                            previous,
                            queue,
                            concurrency_key,
                        } => {
                            if previous.has_gate_place() {
                                removals.push((queue, concurrency_key, run_id));
                            }
                            true
                        }
                        CancelReply::AlreadyFinal { .. } | CancelReply::NotFound => false,
                    },
                    BulkKind::Replay => {
                        let copy = RunId::parse(&run_id).map(|id| RunId::new(id.route(), now));
                        match copy {
                            Some(new_id) => {
                                let new_id = String::from(new_id);
                                match self.copy_run(&run_id, &new_id, now)? {
                                    Some(expires_at) => {
                                        expiry = match (expiry, expires_at) {
                                            (Some(a), Some(b)) => Some(a.min(b)),
                                            (a, b) => a.or(b),
                                        };
                                        replayed.push(new_id);
                                        true
                                    }
                                    None => false,
                                }
                            }
                            None => false,
                        }
                    }
                };
                match acted {
                    true => progress.counts.success += 1,
                    false => progress.counts.failure += 1,
                }
            }
            if !replayed.is_empty() {
                // Listed and delivered as a trigger's runs are: one row each.
                super::accept::insert_listing(&self.sql(), now, &replayed)?;
                delivery = Some(super::accept::insert_delivery(
                    &self.sql(),
                    now,
                    Some(now),
                    &replayed,
                )?);
            }
            let position = serde_json::to_string(&progress.position)
                .map_err(|e| worker::Error::RustError(e.to_string()))?;
            let c = progress.counts;
            self.sql().exec(
                "INSERT OR REPLACE INTO bulk_progress (bulk_id, cursor, total, success, failure, done)
                 VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    step.bulk_id.as_str().into(),
                    position.into(),
                    (c.total as i64).into(),
                    (c.success as i64).into(),
                    (c.failure as i64).into(),
                    i64::from(c.done).into(),
                ],
            )?;
            Ok(c)
        })?;
        if let Some(seq) = delivery {
            let made = crate::domain::api::activity::Event::Created(replayed.len() as u64);
            self.tally(Some(made))?;
            self.ensure_alarm(redelivery_alarm(expiry, now)).await?;
            self.send(vec![(seq, replayed)]).await;
        }
        Ok(BulkStepReply { counts, removals })
    }
}
