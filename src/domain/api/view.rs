//! Stored records and the JSON shapes the read endpoints answer with (docs/API.md section 4).
//!
//! The run store returns records; the edge renders them for the caller's status
//! vocabulary. Every field the SDKs require is always present (docs/API.md section 4).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::api::auth::Environment;
use crate::domain::basics::time::{format_iso, Millis};
use crate::domain::run::status::{RunStatus, StatusVocabulary};

/// A run as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub task: String,
    pub status: RunStatus,
    pub batch_id: Option<String>,
    pub idempotency_key: Option<String>,
    /// Until when the key holds for this run (read with the run alone, not in lists).
    #[serde(default)]
    pub idempotency_key_expires_at: Option<Millis>,
    pub payload: Option<Box<RawValue>>,
    pub payload_type: String,
    pub queue: String,
    pub concurrency_key: Option<String>,
    pub tags: Vec<String>,
    pub ttl: Option<String>,
    pub delayed_until: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub expired_at: Option<Millis>,
    pub metadata: Option<Box<RawValue>>,
    pub is_test: bool,
    pub trigger_function: String,
    pub attempt_count: u32,
    /// Each attempt, oldest first (empty in list answers).
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    pub output: Option<Box<RawValue>>,
    /// `application/super+json` when the output is a superjson document; absent for JSON.
    #[serde(default)]
    pub output_type: Option<String>,
    pub error: Option<Box<RawValue>>,
}

/// One attempt of a run, as the store records it when the attempt ends (and the one
/// under way, `EXECUTING`, with no end).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    pub n: u32,
    /// `EXECUTING`, `COMPLETED`, `FAILED` or `CANCELED` (Trigger.dev's attempt statuses).
    pub status: String,
    pub started_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    #[serde(default)]
    pub error: Option<Box<RawValue>>,
}

/// A batch as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: String,
    pub task: String,
    pub status: String,
    pub idempotency_key: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub runs: Vec<String>,
    /// Items the batch was created for (two-step batches may still be receiving them).
    pub run_count: usize,
    /// When every item had been received and processed.
    pub completed_at: Option<Millis>,
    /// Items that could not become runs.
    pub errors: Vec<ItemError>,
    /// Created by `POST /api/v3/batches` (items streamed separately).
    pub two_step: bool,
}

/// An item of a two-step batch that could not become a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemError {
    pub index: u32,
    pub task_identifier: String,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// `GET /api/v3/runs/{runId}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView<'a> {
    id: &'a str,
    status: &'static str,
    task_identifier: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    /// Beyond Trigger.dev: until when the key holds (absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key_expires_at: Option<String>,
    is_test: bool,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delayed_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired_at: Option<String>,
    tags: &'a [String],
    cost_in_cents: u8,
    base_cost_in_cents: u8,
    duration_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a RawValue>,
    depth: u8,
    trigger_function: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    payload_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_type: Option<&'a str>,
    /// Where the SDKs read a superjson output from (and decode it: Dates as Dates).
    #[serde(skip_serializing_if = "Option::is_none")]
    output_presigned_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RawValue>,
    related_runs: Empty,
    attempt_count: u32,
    attempts: Vec<AttemptView<'a>>,
    queue: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<&'a str>,
    is_queued: bool,
    is_executing: bool,
    is_waiting: bool,
    is_completed: bool,
    is_success: bool,
    is_failed: bool,
    is_cancelled: bool,
    /// List items carry their environment (`GET /api/v1/runs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<EnvView>,
}

#[derive(Serialize)]
struct Empty {}

/// Trigger.dev 3.x's attempt: `attempt_<run id without its prefix>_<n>`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptView<'a> {
    id: String,
    status: &'a str,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RawValue>,
}

impl<'a> AttemptView<'a> {
    fn new(run_id: &str, attempt: &'a AttemptRecord) -> AttemptView<'a> {
        let started = attempt.started_at.map(format_iso);
        let ended = attempt.ended_at.map(format_iso);
        AttemptView {
            id: format!(
                "attempt_{}_{}",
                run_id.strip_prefix("run_").unwrap_or(run_id),
                attempt.n
            ),
            status: &attempt.status,
            created_at: started.clone().unwrap_or_default(),
            updated_at: ended
                .clone()
                .or_else(|| started.clone())
                .unwrap_or_default(),
            started_at: started,
            completed_at: ended,
            // A stored `null` is no error.
            error: attempt.error.as_deref().filter(|e| e.get() != "null"),
        }
    }
}

#[derive(Serialize)]
struct EnvView {
    id: &'static str,
    name: &'static str,
}

impl<'a> RunView<'a> {
    /// The view with the signed URL of its superjson output.
    pub fn with_output_url(mut self, url: Option<String>) -> RunView<'a> {
        self.output_presigned_url = url;
        self
    }

    pub fn new(run: &'a RunRecord, vocabulary: StatusVocabulary) -> RunView<'a> {
        let status = run.status;
        RunView {
            id: &run.id,
            status: status.name_for(vocabulary),
            task_identifier: &run.task,
            idempotency_key: run.idempotency_key.as_deref(),
            idempotency_key_expires_at: run.idempotency_key_expires_at.map(format_iso),
            is_test: run.is_test,
            created_at: format_iso(run.created_at),
            updated_at: format_iso(run.updated_at),
            started_at: run.started_at.map(format_iso),
            finished_at: run.finished_at.map(format_iso),
            delayed_until: run.delayed_until.map(format_iso),
            ttl: run.ttl.as_deref(),
            expired_at: run.expired_at.map(format_iso),
            tags: &run.tags,
            cost_in_cents: 0,
            base_cost_in_cents: 0,
            duration_ms: match (run.started_at, run.finished_at) {
                (Some(start), Some(end)) => (end - start).max(0),
                _ => 0,
            },
            metadata: run.metadata.as_deref(),
            depth: 0,
            trigger_function: &run.trigger_function,
            batch_id: run.batch_id.as_deref(),
            payload: run.payload.as_deref(),
            payload_type: &run.payload_type,
            output: run.output.as_deref(),
            output_type: run.output_type.as_deref(),
            output_presigned_url: None,
            error: run.error.as_deref(),
            related_runs: Empty {},
            attempt_count: run.attempt_count,
            attempts: run
                .attempts
                .iter()
                .map(|a| AttemptView::new(&run.id, a))
                .collect(),
            queue: &run.queue,
            concurrency_key: run.concurrency_key.as_deref(),
            is_queued: matches!(status, RunStatus::Queued | RunStatus::Delayed),
            is_executing: matches!(status, RunStatus::Executing | RunStatus::Reattempting),
            is_waiting: false,
            is_completed: status.is_final(),
            is_success: status.is_success(),
            is_failed: status.is_failed(),
            is_cancelled: status == RunStatus::Canceled,
            env: None,
        }
    }

    /// The run as an item of `GET /api/v1/runs`, which names its environment.
    pub fn list_item(
        run: &'a RunRecord,
        vocabulary: StatusVocabulary,
        env: Environment,
    ) -> RunView<'a> {
        RunView {
            env: Some(EnvView {
                id: env.slug(),
                name: env.name(),
            }),
            ..RunView::new(run, vocabulary)
        }
    }
}

/// `GET /api/v1/batches/{batchId}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchView<'a> {
    id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    created_at: String,
    updated_at: String,
    run_count: usize,
    runs: &'a [String],
    /// Only in `GET /api/v2/batches/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    processing: Option<Processing<'a>>,
}

/// How a batch's items were processed (v2). Seed-endpoint batches are processed in the
/// request that creates them, so they are complete at creation and have no errors.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Processing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
    errors: &'a [ItemError],
}

impl<'a> BatchView<'a> {
    pub fn new(batch: &'a BatchRecord) -> BatchView<'a> {
        BatchView {
            id: &batch.id,
            status: &batch.status,
            idempotency_key: batch.idempotency_key.as_deref(),
            created_at: format_iso(batch.created_at),
            updated_at: format_iso(batch.updated_at),
            run_count: batch.run_count,
            runs: &batch.runs,
            processing: None,
        }
    }

    /// The v2 shape, with `processing`.
    pub fn v2(batch: &'a BatchRecord) -> BatchView<'a> {
        BatchView {
            processing: Some(Processing {
                completed_at: batch.completed_at.map(format_iso),
                errors: &batch.errors,
            }),
            ..BatchView::new(batch)
        }
    }
}

/// `GET /api/v1/runs/{runId}/result` (section 4): Trigger.dev's execution result of a
/// finished run, `None` while it has not finished. A completed run's `output` is its JSON
/// (or superjson document) as text; a failed one's error is a `BUILT_IN_ERROR` of its
/// reported name, message and stack; a cancelled one is `TASK_RUN_CANCELLED`; an expired
/// one never started (`UNSPECIFIED_ERROR`, saying so).
pub fn execution_result(run: &RunRecord) -> Option<serde_json::Value> {
    use serde_json::json;
    if !run.status.is_final() {
        return None;
    }
    let mut result = match run.status {
        RunStatus::Completed => {
            let mut ok = json!({
                "ok": true,
                "outputType": run.output_type.as_deref().unwrap_or("application/json"),
            });
            if let Some(output) = &run.output {
                ok["output"] = json!(output.get());
            }
            ok
        }
        RunStatus::Canceled => json!({
            "ok": false,
            "error": {"type": "INTERNAL_ERROR", "code": "TASK_RUN_CANCELLED", "message": "The run was cancelled"},
        }),
        RunStatus::Expired => json!({
            "ok": false,
            "error": {"type": "INTERNAL_ERROR", "code": "UNSPECIFIED_ERROR", "message": "The run expired: its TTL passed before it started"},
        }),
        _ => {
            let reported: serde_json::Value = run
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str(e.get()).ok())
                .unwrap_or_default();
            let text = |field: &str| reported[field].as_str().unwrap_or_default().to_owned();
            json!({
                "ok": false,
                "error": {
                    "type": "BUILT_IN_ERROR",
                    "name": if text("name").is_empty() { "Error".to_owned() } else { text("name") },
                    "message": text("message"),
                    "stackTrace": text("stackTrace"),
                },
            })
        }
    };
    result["id"] = json!(run.id);
    result["taskIdentifier"] = json!(run.task);
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn record(status: RunStatus) -> RunRecord {
        RunRecord {
            id: "run_abc".into(),
            task: "hello-world".into(),
            status,
            batch_id: Some("batch_x".into()),
            idempotency_key: None,
            idempotency_key_expires_at: None,
            payload: Some(RawValue::from_string(r#"{"n": 1}"#.into()).unwrap()),
            payload_type: "application/json".into(),
            queue: "task/hello-world".into(),
            concurrency_key: None,
            tags: vec!["a".into()],
            ttl: Some("10m".into()),
            delayed_until: None,
            created_at: 0,
            updated_at: 1,
            started_at: None,
            finished_at: None,
            expired_at: None,
            metadata: None,
            is_test: false,
            trigger_function: "batchTrigger".into(),
            attempt_count: 0,
            attempts: Vec::new(),
            output: None,
            output_type: None,
            error: None,
        }
    }

    fn view(run: &RunRecord, v: StatusVocabulary) -> Value {
        serde_json::to_value(RunView::new(run, v)).unwrap()
    }

    #[test]
    fn a_run_has_every_field_both_sdks_require() {
        let json = view(&record(RunStatus::Queued), StatusVocabulary::V3);
        for field in [
            "id",
            "status",
            "taskIdentifier",
            "isQueued",
            "isExecuting",
            "isCompleted",
            "isSuccess",
            "isFailed",
            "isCancelled",
            "isTest",
            "createdAt",
            "updatedAt",
            "tags",
            "costInCents",
            "baseCostInCents",
            "durationMs",
            "depth",
            "triggerFunction",
            "relatedRuns",
            "attempts",
            "isWaiting",
            "attemptCount",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["status"], "QUEUED");
        assert_eq!(json["createdAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["relatedRuns"], json!({}));
        assert_eq!(json["attempts"], json!([]));
        assert_eq!(json["payload"], json!({"n": 1}));
        assert_eq!(json["ttl"], "10m");
        assert_eq!(json["isQueued"], true);
        assert!(
            json.get("idempotencyKey").is_none(),
            "absent optionals are omitted, not null"
        );
    }

    #[test]
    fn attempts_are_trigger_devs_attempts_oldest_first() {
        let mut run = record(RunStatus::Executing);
        run.attempt_count = 2;
        run.attempts = vec![
            AttemptRecord {
                n: 1,
                status: "FAILED".into(),
                started_at: Some(1000),
                ended_at: Some(1500),
                error: Some(RawValue::from_string(r#"{"message":"boom"}"#.into()).unwrap()),
            },
            AttemptRecord {
                n: 2,
                status: "EXECUTING".into(),
                started_at: Some(2000),
                ended_at: None,
                error: Some(RawValue::from_string("null".into()).unwrap()),
            },
        ];
        let json = view(&run, StatusVocabulary::V3);
        assert_eq!(
            json["attempts"],
            json!([
                {"id": "attempt_abc_1", "status": "FAILED", "createdAt": "1970-01-01T00:00:01.000Z",
                 "updatedAt": "1970-01-01T00:00:01.500Z", "startedAt": "1970-01-01T00:00:01.000Z",
                 "completedAt": "1970-01-01T00:00:01.500Z", "error": {"message": "boom"}},
                {"id": "attempt_abc_2", "status": "EXECUTING", "createdAt": "1970-01-01T00:00:02.000Z",
                 "updatedAt": "1970-01-01T00:00:02.000Z", "startedAt": "1970-01-01T00:00:02.000Z"},
            ])
        );
    }

    #[test]
    fn a_keys_expiry_shows_only_when_known() {
        let mut run = record(RunStatus::Queued);
        assert!(view(&run, StatusVocabulary::V3)
            .get("idempotencyKeyExpiresAt")
            .is_none());
        run.idempotency_key = Some("k".into());
        run.idempotency_key_expires_at = Some(86_400_000);
        assert_eq!(
            view(&run, StatusVocabulary::V3)["idempotencyKeyExpiresAt"],
            "1970-01-02T00:00:00.000Z"
        );
    }

    #[test]
    fn list_items_name_their_environment() {
        let run = record(RunStatus::Queued);
        let item = serde_json::to_value(RunView::list_item(
            &run,
            StatusVocabulary::V4,
            Environment::Production,
        ))
        .unwrap();
        assert_eq!(item["env"], json!({"id": "prod", "name": "Production"}));
        assert!(view(&run, StatusVocabulary::V3).get("env").is_none());
    }

    #[test]
    fn status_names_follow_the_vocabulary() {
        let run = record(RunStatus::Reattempting);
        assert_eq!(view(&run, StatusVocabulary::V3)["status"], "REATTEMPTING");
        assert_eq!(view(&run, StatusVocabulary::V4)["status"], "EXECUTING");
    }

    #[test]
    fn flags_follow_the_status() {
        let done = RunRecord {
            started_at: Some(1000),
            finished_at: Some(1500),
            ..record(RunStatus::Completed)
        };
        let json = view(&done, StatusVocabulary::V3);
        assert_eq!(
            (json["isCompleted"].as_bool(), json["isSuccess"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(json["durationMs"], 500);
        let failed = view(&record(RunStatus::Expired), StatusVocabulary::V3);
        assert_eq!(
            (failed["isFailed"].as_bool(), failed["isQueued"].as_bool()),
            (Some(true), Some(false))
        );
        assert_eq!(
            view(&record(RunStatus::Canceled), StatusVocabulary::V3)["isCancelled"],
            true
        );
    }

    #[test]
    fn a_batch_counts_its_runs() {
        let batch = BatchRecord {
            id: "batch_1".into(),
            task: "t".into(),
            status: "PENDING".into(),
            idempotency_key: Some("k".into()),
            created_at: 0,
            updated_at: 0,
            runs: vec!["run_a".into(), "run_a".into()],
            run_count: 2,
            completed_at: Some(0),
            errors: vec![],
            two_step: false,
        };
        let json = serde_json::to_value(BatchView::new(&batch)).unwrap();
        assert!(json.get("processing").is_none());
        let v2 = serde_json::to_value(BatchView::v2(&batch)).unwrap();
        assert_eq!(
            v2["processing"],
            json!({"completedAt": "1970-01-01T00:00:00.000Z", "errors": []})
        );
        assert_eq!(json["runCount"], 2);
        assert_eq!(json["runs"], json!(["run_a", "run_a"]));
        assert_eq!(json["idempotencyKey"], "k");
    }

    #[test]
    fn a_finished_run_has_an_execution_result_and_an_unfinished_one_none() {
        let mut run = record(RunStatus::Executing);
        assert_eq!(execution_result(&run), None);
        run.status = RunStatus::Completed;
        run.output = Some(RawValue::from_string(r#"{"a": 1}"#.into()).unwrap());
        let ok = execution_result(&run).unwrap();
        assert_eq!(ok["ok"], true);
        assert_eq!(ok["output"], r#"{"a": 1}"#);
        assert_eq!(ok["outputType"], "application/json");
        assert_eq!(ok["taskIdentifier"], run.task.as_str());
        run.status = RunStatus::Failed;
        run.error =
            Some(RawValue::from_string(r#"{"name":"TypeError","message":"boom"}"#.into()).unwrap());
        let failed = execution_result(&run).unwrap();
        assert_eq!(
            failed["error"],
            serde_json::json!({"type": "BUILT_IN_ERROR", "name": "TypeError", "message": "boom", "stackTrace": ""})
        );
        run.status = RunStatus::Canceled;
        assert_eq!(
            execution_result(&run).unwrap()["error"]["code"],
            "TASK_RUN_CANCELLED"
        );
    }
}
