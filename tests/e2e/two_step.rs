//! The 4.x two-step batch protocol spoken directly (docs/API.md section 6): create, stream
//! NDJSON items (chunked, no content-length), resend safely, seal, and fail one oversized
//! item without failing the stream.

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::execution::Case;
use crate::harness::{get, request, request_chunked, Answer, Worker, DEV_KEY};
use crate::task_server::TaskServer;
use crate::{ensure, ensure_eq, unique};

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        a_two_step_batch_dedupes_a_resent_stream_and_seals_when_complete,
        an_item_over_3_mib_fails_alone_and_the_stream_goes_on,
    ]
}

/// Cases that answer before reading the whole body: they run on the worker kept for
/// abusive requests, since wrangler's dev proxy may fail the next request after one.
pub fn hostile_cases() -> Vec<(&'static str, Case)> {
    crate::cases![items_need_ndjson_and_a_bad_line_is_named_by_number]
}

fn auth() -> String {
    format!("Bearer {DEV_KEY}")
}

pub fn create(w: &Worker, body: Value) -> Answer {
    let authorization = auth();
    request(
        "POST",
        &w.url("/api/v3/batches"),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// A new two-step batch of `run_count` items, by id.
fn created_id(w: &Worker, run_count: u32) -> String {
    create(w, json!({ "runCount": run_count })).json()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub fn stream(w: &Worker, batch_id: &str, lines: &[Value]) -> Answer {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    stream_raw(w, batch_id, body.into_bytes())
}

fn stream_raw(w: &Worker, batch_id: &str, body: Vec<u8>) -> Answer {
    let authorization = auth();
    request_chunked(
        &w.url(&format!("/api/v3/batches/{batch_id}/items")),
        &[
            ("authorization", &authorization),
            ("content-type", "application/x-ndjson"),
        ],
        std::io::Cursor::new(body),
    )
}

fn item(index: u32) -> Value {
    json!({"index": index, "task": "hello-world", "payload": {"name": format!("item {index}")}, "options": {"delay": "1h"}})
}

pub fn batch_v2(w: &Worker, id: &str) -> Value {
    get(&w.url(&format!("/api/v2/batches/{id}")), Some(DEV_KEY)).json()
}

fn a_two_step_batch_dedupes_a_resent_stream_and_seals_when_complete(
    w: &Worker,
    _t: &TaskServer,
) -> Result<(), Failed> {
    let key = unique("two-step");
    let created = create(
        w,
        json!({"runCount": 3, "taskIdentifiers": ["hello-world"], "idempotencyKey": key}),
    );
    ensure_eq(created.status, 202, &format!("create ({})", created.body))?;
    let id = created.json()["id"].as_str().unwrap_or_default().to_owned();
    ensure_eq(created.json()["isCached"].clone(), json!(false), "isCached")?;

    let partial = stream(w, &id, &[item(0), item(1)]);
    ensure_eq(
        partial.status,
        200,
        &format!("first stream ({})", partial.body),
    )?;
    ensure_eq(
        partial.json(),
        json!({"id": id, "itemsAccepted": 2, "itemsDeduplicated": 0, "sealed": false}),
        "first stream",
    )?;
    ensure_eq(
        batch_v2(w, &id)["status"].clone(),
        json!("PROCESSING"),
        "status while items are missing",
    )?;

    let resent = stream(w, &id, &[item(0), item(1), item(2)]);
    ensure_eq(
        resent.json(),
        json!({"id": id, "itemsAccepted": 1, "itemsDeduplicated": 2, "sealed": true}),
        "resent stream",
    )?;

    let batch = batch_v2(w, &id);
    ensure_eq(batch["status"].clone(), json!("COMPLETED"), "status")?;
    ensure_eq(batch["runCount"].clone(), json!(3), "runCount")?;
    let runs = batch["runs"].as_array().cloned().unwrap_or_default();
    ensure_eq(runs.len(), 3, "one run per item")?;
    ensure(
        batch["processing"]["completedAt"].is_string(),
        "processing.completedAt",
    )?;
    for (i, run) in runs.iter().enumerate() {
        let run = get(
            &w.url(&format!(
                "/api/v3/runs/{}",
                run.as_str().unwrap_or_default()
            )),
            Some(DEV_KEY),
        )
        .json();
        ensure_eq(
            run["payload"]["name"].clone(),
            json!(format!("item {i}")),
            "runs in item order",
        )?;
        ensure_eq(run["batchId"].clone(), json!(id), "the run names its batch")?;
    }

    let again = create(w, json!({"runCount": 3, "idempotencyKey": key}));
    ensure_eq(again.status, 200, "a repeated key")?;
    ensure_eq(
        again.json(),
        json!({"id": id, "runCount": 3, "isCached": true}),
        "cached answer",
    )
}

fn items_need_ndjson_and_a_bad_line_is_named_by_number(
    w: &Worker,
    _t: &TaskServer,
) -> Result<(), Failed> {
    let id = created_id(w, 2);
    let authorization = auth();
    let wrong_type = request(
        "POST",
        &w.url(&format!("/api/v3/batches/{id}/items")),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        b"{}",
    );
    ensure_eq(wrong_type.status, 415, "wrong content type")?;
    let bad = stream_raw(w, &id, format!("{}\r\n\nnot json\n", item(0)).into_bytes());
    ensure_eq(bad.status, 400, "a bad line")?;
    ensure_eq(
        bad.error(),
        "Validation error: line 3: not a JSON object".into(),
        "message",
    )?;
    let out_of_range = stream(w, &id, &[item(5)]);
    ensure_eq(
        out_of_range.error(),
        "Validation error: line 1.index: expected an integer from 0 to 1".into(),
        "index",
    )?;
    ensure_eq(
        create(w, json!({"runCount": 1001})).status,
        400,
        "runCount over 1000",
    )?;
    ensure_eq(
        create(w, json!({"runCount": 1, "taskIdentifiers": ["nope"]})).status,
        404,
        "undeclared task",
    )
}

fn an_item_over_3_mib_fails_alone_and_the_stream_goes_on(
    w: &Worker,
    _t: &TaskServer,
) -> Result<(), Failed> {
    let id = created_id(w, 2);
    // In the SDK's field order: index and task first, then the payload.
    let huge = format!(
        r#"{{"index":1,"task":"hello-world","payload":"{}"}}"#,
        "x".repeat(3_500_000)
    );
    let answer = stream_raw(w, &id, format!("{}\n{huge}\n", item(0)).into_bytes());
    ensure_eq(
        answer.status,
        200,
        &format!("stream ({})", &answer.body[..answer.body.len().min(300)]),
    )?;
    ensure_eq(answer.json()["sealed"].clone(), json!(true), "sealed")?;
    let batch = batch_v2(w, &id);
    ensure_eq(batch["status"].clone(), json!("PARTIAL_FAILED"), "status")?;
    ensure_eq(
        batch["runs"].as_array().map(Vec::len),
        Some(1),
        "the other item's run",
    )?;
    let error = &batch["processing"]["errors"][0];
    ensure_eq(error["index"].clone(), json!(1), "error index")?;
    ensure_eq(
        error["errorCode"].clone(),
        json!("PAYLOAD_TOO_LARGE"),
        "error code",
    )?;
    ensure_eq(
        error["taskIdentifier"].clone(),
        json!("hello-world"),
        "error task",
    )
}
