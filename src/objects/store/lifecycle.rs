//! A run's life after it was accepted (docs/API.md section 3): starting an attempt (a
//! compare-and-set, so a repeated delivery never executes an attempt twice), recording
//! its outcome and the retry that may follow, lease expiry, and cancellation.
//!
//! Each decision reads and writes with no await in between, except a retry, which arms
//! the alarm first and then writes under a guard on the status it read.

use std::borrow::Cow;

use serde_json::value::RawValue;
use worker::Result;

use super::protocol::{
    AttemptOutcome, AttemptStart, CancelReply, FinishReply, LeaseExpiredReply, StartReply,
};
use super::read::raw;
use super::schema::{self, body_item, ATTEMPTS_APPENDED};
use super::{internal, jitter, now, RunStore};
use crate::domain::api::activity::Event;
use crate::domain::basics::time::Millis;
use crate::domain::config::{attempt_seconds, run_max_attempts, RetryPolicy};
use crate::domain::run::body::{RunBody, Span};
use crate::domain::run::delivery::RETRY_SLACK_MS;
use crate::domain::run::execution::{
    after_failure, start_decision, AfterFailure, StartDecision, StartState,
};
use crate::domain::run::status::RunStatus;
use crate::platform::meter;
use crate::platform::sql::rows;

struct StateRow {
    status: String,
    attempt_count: i64,
    lease_token: Option<i64>,
    expires_at: Option<Millis>,
    retry_at: Option<Millis>,
    max_attempts: Option<i64>,
    /// The retry policy as JSON (`retry`), or the run's body item that holds it (`body`,
    /// schema step 11).
    retry: Option<String>,
    body: Option<Span>,
    queue: String,
    concurrency_key: Option<String>,
}

struct CallRow {
    id: String,
    task: String,
    attempt_count: i64,
    payload: Option<String>,
    payload_chunks: i64,
    payload_type: String,
    context: Option<String>,
    context_chunks: i64,
    tags: String,
    batch_id: Option<String>,
    idempotency_key: Option<String>,
    queue: String,
    concurrency_key: Option<String>,
    created_at: Millis,
    max_duration: Option<i64>,
    max_attempts: Option<i64>,
    is_test: i64,
}

impl CallRow {
    /// The row with the options its body item holds (schema step 11).
    fn with_body(mut self, item: Option<&str>) -> Result<CallRow> {
        let Some(item) = item else {
            return Ok(self);
        };
        let body = RunBody::parse(item).map_err(internal)?;
        if self.payload_chunks == schema::PAYLOAD_IN_BODY {
            self.payload = body.payload.map(|p| p.get().to_owned());
            self.payload_chunks = 0;
            self.payload_type = body.payload_type.into_owned();
        }
        self.context = body.context.map(|c| c.get().to_owned());
        self.idempotency_key = body.idempotency_key.map(Cow::into_owned);
        self.batch_id = self.batch_id.or(body.batch_id.map(Cow::into_owned));
        Ok(self)
    }
}

/// What a final attempt leaves on its run.
struct Ended<'a> {
    output: Option<&'a str>,
    output_type: Option<&'a str>,
    error: Option<&'a str>,
}

fn status_of(row: &StateRow) -> Result<RunStatus> {
    RunStatus::parse(&row.status).ok_or_else(|| internal("unknown stored status"))
}

impl RunStore {
    fn state_of(&self, run_id: &str) -> Result<Option<StateRow>> {
        let query = "SELECT status, attempt_count, lease_token, expires_at, retry_at, max_attempts,
                 retry, body, body_at, body_len, queue, concurrency_key
             FROM runs WHERE id = ?";
        let Some(mut v) = rows(&self.sql(), query, vec![run_id.into()])?.pop() else {
            return Ok(None);
        };
        Ok(Some(StateRow {
            status: v.text()?,
            attempt_count: v.int()?,
            lease_token: v.opt_int()?,
            expires_at: v.opt_int()?,
            retry_at: v.opt_int()?,
            max_attempts: v.opt_int()?,
            retry: v.opt_text()?,
            body: match (v.opt_int()?, v.opt_int()?, v.opt_int()?) {
                (Some(seq), Some(at), Some(len)) => Some(Span { seq, at, len }),
                _ => None,
            },
            queue: v.text()?,
            concurrency_key: v.opt_text()?,
        }))
    }

    /// The retry policy a run was triggered with: in its row, or in its body item.
    fn retry_policy(&self, row: &StateRow) -> Result<RetryPolicy> {
        if let Some(span) = &row.body {
            if let Some((seq, policy)) = &*self.body_retry.borrow() {
                if *seq == span.seq {
                    return Ok(policy.clone());
                }
            }
            let mut v = rows(
                &self.sql(),
                "SELECT CAST(substr(items, ?, ?) AS TEXT) FROM run_bodies WHERE seq = ?",
                vec![span.at.into(), span.len.into(), span.seq.into()],
            )?
            .pop()
            .ok_or_else(|| internal("a run's body is missing"))?;
            let policy = RunBody::parse(&v.text()?).map_err(internal)?.retry;
            *self.body_retry.borrow_mut() = Some((span.seq, policy.clone()));
            return Ok(policy);
        }
        match &row.retry {
            Some(text) => serde_json::from_str(text).map_err(|e| internal(e.to_string())),
            None => Ok(RetryPolicy::default()),
        }
    }

    /// Starts attempt `attempt_count + 1` of `run_id` under lease `token` and reads what
    /// its call needs, in one statement (`RETURNING` reads the row as the update left it,
    /// and the run's body item).
    fn start_and_read(&self, run_id: &str, token: i64, now: Millis) -> Result<CallRow> {
        const QUERY: &str = concat!(
            "UPDATE runs SET status = 'EXECUTING', attempt_count = attempt_count + 1,
                 started_at = COALESCE(started_at, ?), expires_at = NULL, retry_at = NULL,
                 lease_token = ?, updated_at = ?, attempt_started_at = ?
             WHERE id = ?
             RETURNING id, task, attempt_count, payload, payload_chunks, payload_type, context,
                 context_chunks, tags, batch_id, idempotency_key, queue, concurrency_key,
                 created_at, max_duration, max_attempts, is_test, ",
            body_item!(),
            " AS body_item"
        );
        let params = vec![
            now.into(),
            token.into(),
            now.into(),
            now.into(),
            run_id.into(),
        ];
        let mut v = rows(&self.sql(), QUERY, params)?
            .pop()
            .ok_or_else(|| internal("the run vanished while starting"))?;
        let row = CallRow {
            id: v.text()?,
            task: v.text()?,
            attempt_count: v.int()?,
            payload: v.opt_text()?,
            payload_chunks: v.int()?,
            payload_type: v.text()?,
            context: v.opt_text()?,
            context_chunks: v.int()?,
            tags: v.text()?,
            batch_id: v.opt_text()?,
            idempotency_key: v.opt_text()?,
            queue: v.text()?,
            concurrency_key: v.opt_text()?,
            created_at: v.int()?,
            max_duration: v.opt_int()?,
            max_attempts: v.opt_int()?,
            is_test: v.int()?,
        };
        row.with_body(v.opt_text()?.as_deref())
    }

    /// `QUEUED` or due `REATTEMPTING` → `EXECUTING` with the next attempt number, for the
    /// holder of lease `token` only.
    pub(super) async fn start_attempt(&self, run_id: &str, token: u64) -> Result<StartReply> {
        let now = now();
        let Some(row) = self.state_of(run_id)? else {
            return Ok(StartReply::NotFound);
        };
        let status = status_of(&row)?;
        let state = StartState {
            status,
            attempt_count: row.attempt_count.max(0) as u32,
            lease_token: row.lease_token.map(|t| t as u64),
            expires_at: row.expires_at,
            retry_at: row.retry_at,
        };
        match start_decision(&state, token, now, RETRY_SLACK_MS) {
            StartDecision::Start => {}
            StartDecision::AlreadyStarted { attempt } => {
                return Ok(StartReply::AlreadyStarted { attempt });
            }
            StartDecision::Expire => {
                self.expire(&[run_id.to_owned()], now)?;
                return Ok(StartReply::NotStartable {
                    status: RunStatus::Expired,
                });
            }
            StartDecision::TooEarly { at } => {
                // Its outbox row is due again when the backoff ends, whatever became of
                // the earlier one.
                self.ensure_alarm(at).await?;
                self.deliver_again_at(run_id, at)?;
                return Ok(StartReply::NotStartable { status });
            }
            StartDecision::NotStartable => return Ok(StartReply::NotStartable { status }),
        }
        let call = self.start_and_read(run_id, token as i64, now)?;
        meter::attempt_started();
        let payload = self.stored_text(run_id, "payload", call.payload, call.payload_chunks)?;
        let context = self.stored_text(run_id, "context", call.context, call.context_chunks)?;
        Ok(StartReply::Started(Box::new(AttemptStart {
            run_id: call.id,
            task: call.task,
            attempt: call.attempt_count.max(1) as u32,
            payload: raw(payload)?,
            payload_type: call.payload_type,
            context: raw(context)?,
            tags: serde_json::from_str(&call.tags).map_err(|e| internal(e.to_string()))?,
            batch_id: call.batch_id,
            idempotency_key: call.idempotency_key,
            queue: call.queue,
            concurrency_key: call.concurrency_key,
            created_at: call.created_at,
            max_duration_secs: attempt_seconds(call.max_duration),
            max_attempts: run_max_attempts(call.max_attempts),
            is_test: call.is_test != 0,
        })))
    }

    /// Records attempt `attempt`'s outcome, unless the run moved on (cancelled, or a newer
    /// attempt): then the late report is ignored.
    pub(super) async fn finish_attempt(
        &self,
        run_id: &str,
        attempt: u32,
        outcome: AttemptOutcome,
    ) -> Result<FinishReply> {
        let now = now();
        let Some(row) = self.state_of(run_id)? else {
            return Ok(FinishReply::NotFound);
        };
        let status = status_of(&row)?;
        if status != RunStatus::Executing || row.attempt_count != i64::from(attempt) {
            return Ok(FinishReply::Ignored { status });
        }
        match outcome {
            AttemptOutcome::Succeeded {
                output,
                output_type,
            } => {
                let output = output.as_deref().map(RawValue::get);
                let ended = Ended {
                    output,
                    output_type: output_type.as_deref(),
                    error: None,
                };
                self.end_attempt(run_id, attempt, RunStatus::Completed, ended, now)?;
                Ok(FinishReply::Finished {
                    status: RunStatus::Completed,
                })
            }
            AttemptOutcome::Failed { error, retry } => {
                self.fail_attempt(run_id, attempt, &row, error.get(), retry, now)
                    .await
            }
        }
    }

    async fn fail_attempt(
        &self,
        run_id: &str,
        attempt: u32,
        row: &StateRow,
        error: &str,
        retry: bool,
        now: Millis,
    ) -> Result<FinishReply> {
        let policy = self.retry_policy(row)?;
        // A failure that says not to retry ends the run with this attempt.
        let max_attempts = if retry {
            run_max_attempts(row.max_attempts)
        } else {
            attempt
        };
        match after_failure(attempt, max_attempts, &policy, jitter(), now) {
            AfterFailure::Retry { at } => {
                // The outbox row sends the run back to its gate when the backoff ends; the
                // alarm must be armed before that row exists.
                self.ensure_alarm(at).await?;
                let sql = self.sql();
                let changed = sql
                    .exec(
                        &format!(
                            "UPDATE runs SET status = 'REATTEMPTING', error = ?, retry_at = ?,
                                 lease_token = NULL, updated_at = ?, attempts = {ATTEMPTS_APPENDED}
                             WHERE id = ? AND status = 'EXECUTING' AND attempt_count = ?"
                        ),
                        vec![
                            error.into(),
                            at.into(),
                            now.into(),
                            "FAILED".into(),
                            now.into(),
                            error.into(),
                            run_id.into(),
                            i64::from(attempt).into(),
                        ],
                    )?
                    .rows_written();
                if changed == 0 {
                    let status = self
                        .state_of(run_id)?
                        .map_or(Ok(RunStatus::Canceled), |r| status_of(&r))?;
                    return Ok(FinishReply::Ignored { status });
                }
                self.deliver_again_at(run_id, at)?;
                Ok(FinishReply::Finished {
                    status: RunStatus::Reattempting,
                })
            }
            AfterFailure::Fail => {
                let ended = Ended {
                    output: None,
                    output_type: None,
                    error: Some(error),
                };
                self.end_attempt(run_id, attempt, RunStatus::Failed, ended, now)?;
                Ok(FinishReply::Finished {
                    status: RunStatus::Failed,
                })
            }
        }
    }

    /// Ends attempt `attempt` with a final status, if it is still the run's current one.
    fn end_attempt(
        &self,
        run_id: &str,
        attempt: u32,
        status: RunStatus,
        ended: Ended,
        now: Millis,
    ) -> Result<()> {
        let attempt_status = match status {
            RunStatus::Completed => "COMPLETED",
            _ => "FAILED",
        };
        let ended_now = self.sql().exec(
            &format!(
                "UPDATE runs SET status = ?, output = ?, output_type = ?, error = ?, finished_at = ?,
                     updated_at = ?, lease_token = NULL, attempts = {ATTEMPTS_APPENDED}
                 WHERE id = ? AND status = 'EXECUTING' AND attempt_count = ?"
            ),
            vec![
                status.as_str().into(),
                ended.output.into(),
                ended.output_type.into(),
                ended.error.into(),
                now.into(),
                now.into(),
                attempt_status.into(),
                now.into(),
                ended.error.into(),
                run_id.into(),
                i64::from(attempt).into(),
            ],
        )?;
        if ended_now.rows_written() > 0 {
            meter::run_ended(status == RunStatus::Completed);
            self.tally(Some(match status {
                RunStatus::Completed => Event::Completed,
                _ => Event::Failed,
            }))?;
        }
        Ok(())
    }

    /// A gate reclaimed a lease whose holder went silent. If the holder had started an
    /// attempt, that attempt failed; if it never started one, the run goes back to its gate.
    pub(super) async fn lease_expired(
        &self,
        run_id: &str,
        token: u64,
    ) -> Result<LeaseExpiredReply> {
        let now = now();
        let Some(row) = self.state_of(run_id)? else {
            return Ok(LeaseExpiredReply::Attempt(FinishReply::NotFound));
        };
        let status = status_of(&row)?;
        match status {
            RunStatus::Executing if row.lease_token == Some(token as i64) => {
                let error = serde_json::json!({
                    "name": "LeaseExpired",
                    "message": "the attempt outlived its lease (maxDuration plus margin): its executor stopped answering",
                })
                .to_string();
                let attempt = row.attempt_count.max(0) as u32;
                let failed = self
                    .fail_attempt(run_id, attempt, &row, &error, true, now)
                    .await?;
                Ok(LeaseExpiredReply::Attempt(failed))
            }
            RunStatus::Queued => Ok(LeaseExpiredReply::Requeue),
            RunStatus::Reattempting if row.retry_at.is_none_or(|at| at <= now) => {
                Ok(LeaseExpiredReply::Requeue)
            }
            _ => Ok(LeaseExpiredReply::Attempt(FinishReply::Ignored { status })),
        }
    }

    /// Any non-final run becomes `CANCELED`: it never executes afterwards, and a result of
    /// an attempt under way is ignored. A final run is left as it is.
    pub(super) fn cancel(&self, run_id: &str) -> Result<CancelReply> {
        let now = now();
        let Some(row) = self.state_of(run_id)? else {
            return Ok(CancelReply::NotFound);
        };
        let status = status_of(&row)?;
        if !status.can_become(RunStatus::Canceled) {
            return Ok(CancelReply::AlreadyFinal { status });
        }
        let sql = self.sql();
        // An attempt under way ends here, cancelled.
        sql.exec(
            &format!(
                "UPDATE runs SET status = 'CANCELED', finished_at = ?, updated_at = ?, lease_token = NULL,
                     expires_at = NULL,
                     attempts = CASE WHEN status = 'EXECUTING' THEN {ATTEMPTS_APPENDED} ELSE attempts END
                 WHERE id = ?"
            ),
            vec![
                now.into(),
                now.into(),
                "CANCELED".into(),
                now.into(),
                None::<&str>.into(),
                run_id.into(),
            ],
        )?;
        Ok(CancelReply::Canceled {
            previous: status,
            queue: row.queue,
            concurrency_key: row.concurrency_key,
        })
    }
}
