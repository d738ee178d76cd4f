//! Managing runs after the trigger (docs/API.md sections 4 and 5): metadata, replaced and
//! changed by operations while the run executes, tags added after the fact, and the
//! execution results of finished runs and batches.

use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::execution::{trigger_task, wait_status, Case, TASK};
use crate::harness::{eventually, get, request, Answer, Worker, DEV_KEY};
use crate::task_server::TaskServer;
use crate::{auth, ensure, ensure_eq, unique};

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        metadata_changed_while_a_run_executes_is_read_mid_run_and_kept,
        tags_added_after_the_trigger_are_filtered_at_once_within_five,
        results_of_finished_runs_and_of_a_batchs_finished_runs,
        a_batchs_options_kept_in_one_body_reach_the_call_every_read_and_a_replay,
    ]
}

fn send(w: &Worker, method: &str, path: &str, body: &Value) -> Answer {
    let authorization = auth(DEV_KEY);
    request(
        method,
        &w.url(path),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
}

/// `field` of each run `GET /api/v1/runs?{query}` lists, sorted.
fn listed(w: &Worker, query: &str, field: &str) -> Result<Vec<String>, Failed> {
    let list = get(&w.url(&format!("/api/v1/runs?{query}")), Some(DEV_KEY)).json();
    let mut values: Vec<String> = list["data"]
        .as_array()
        .ok_or("data")?
        .iter()
        .filter_map(|r| r[field].as_str().map(str::to_owned))
        .collect();
    values.sort_unstable();
    Ok(values)
}

fn metadata_changed_while_a_run_executes_is_read_mid_run_and_kept(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let run = trigger_task(
        w,
        TASK,
        vec![json!({"payload": {"sleepMs": 3000}, "options": {"metadata": {"step": "queued"}}})],
    )?
    .remove(0);
    eventually(Duration::from_secs(20), "the run to start", || {
        (!server.calls_of(&run).is_empty()).then_some(())
    });
    let path = format!("/api/v1/runs/{run}/metadata");
    // As a task reporting progress would: operations, in order.
    let changed = send(
        w,
        "PUT",
        &path,
        &json!({"operations": [
            {"type": "set", "key": "step", "value": "working"},
            {"type": "set", "key": "$.progress.percent", "value": 40},
            {"type": "increment", "key": "$.progress.percent", "value": 10},
            {"type": "append", "key": "log", "value": "started"},
        ]}),
    );
    ensure_eq(changed.status, 200, &changed.body)?;
    let want = json!({"step": "working", "progress": {"percent": 50}, "log": ["started"]});
    ensure_eq(&changed.json()["metadata"], &want, "the answer")?;
    let mid = get(&w.url(&path), Some(DEV_KEY));
    ensure_eq(
        &mid.json()["metadata"],
        &want,
        "read while the run executes",
    )?;
    let read = crate::execution::run(w, &run);
    ensure_eq(
        read["status"].as_str(),
        Some("EXECUTING"),
        "still executing",
    )?;
    ensure_eq(&read["metadata"], &want, "the run's own view")?;
    // A bad operation changes nothing and names itself.
    let bad = send(
        w,
        "PUT",
        &path,
        &json!({"operations": [{"type": "set", "key": "ok", "value": 1}, {"type": "increment", "key": "step", "value": 1}]}),
    );
    ensure_eq(
        (bad.status, bad.error()),
        (
            400,
            "Validation error: operations[1].key: the value there is not a number".to_owned(),
        ),
        "a refused change",
    )?;
    let too_big = send(
        w,
        "PUT",
        &path,
        &json!({"metadata": {"blob": "x".repeat(262_144)}}),
    );
    ensure_eq(
        (too_big.status, too_big.error()),
        (
            400,
            "Validation error: metadata: at most 262144 bytes of JSON".to_owned(),
        ),
        "over the cap",
    )?;
    let done = wait_status(w, &run, "COMPLETED", Duration::from_secs(30));
    ensure_eq(&done["metadata"], &want, "kept after the run ends")?;
    // Replaced whole.
    let replaced = send(w, "PUT", &path, &json!({"metadata": {"done": true}}));
    ensure_eq(
        &replaced.json()["metadata"],
        &json!({"done": true}),
        "replaced",
    )?;
    let missing = get(
        &w.url("/api/v1/runs/run_zzzzzzzzzzzzzzzzzzzzz/metadata"),
        Some(DEV_KEY),
    );
    ensure_eq(missing.status, 404, "an unknown run")
}

fn tags_added_after_the_trigger_are_filtered_at_once_within_five(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let (first, later) = (unique("tag-a"), unique("tag-b"));
    let run = trigger_task(
        w,
        TASK,
        vec![json!({"payload": {}, "options": {"delay": "1h", "tags": [first]}})],
    )?
    .remove(0);
    let path = format!("/api/v1/runs/{run}/tags");
    let added = send(w, "POST", &path, &json!({"tags": [later, first]}));
    ensure_eq(added.status, 200, &added.body)?;
    ensure_eq(
        &added.json()["message"],
        &json!("Successfully set 1 new tags."),
        "one new tag",
    )?;
    let listed = get(
        &w.url(&format!("/api/v1/runs?filter[tag]={later}")),
        Some(DEV_KEY),
    )
    .json();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .ok_or("data")?
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    ensure_eq(ids, vec![run.as_str()], "the list filtered by the new tag")?;
    ensure_eq(
        &crate::execution::run(w, &run)["tags"],
        &json!([first, later]),
        "the run's tags",
    )?;
    let over = send(w, "POST", &path, &json!({"tags": ["c", "d", "e", "f"]}));
    ensure_eq(
        (over.status, over.error()),
        (
            400,
            "Validation error: tags: at most 5 tags per run: it has 2, and 4 more would make 6"
                .to_owned(),
        ),
        "past five",
    )?;
    ensure(
        send(w, "POST", &path, &json!({"tags": [""]})).status == 400,
        "an empty tag",
    )?;
    crate::execution::cancel(w, &run)
}

fn results_of_finished_runs_and_of_a_batchs_finished_runs(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let authorization = auth(DEV_KEY);
    let answer = request(
        "POST",
        &w.url(&format!("/api/v1/tasks/{TASK}/batch")),
        &[("authorization", &authorization)],
        json!({"items": [
            {"payload": {}},
            {"payload": {"alwaysFail": true}, "options": {"maxAttempts": 1}},
            {"payload": {}, "options": {"delay": "1h"}},
        ]})
        .to_string()
        .as_bytes(),
    );
    ensure_eq(answer.status, 200, &answer.body)?;
    let batch = answer.json();
    let batch_id = batch["batchId"].as_str().ok_or("a batch id")?.to_owned();
    let runs: Vec<String> = batch["runs"]
        .as_array()
        .ok_or("runs")?
        .iter()
        .filter_map(|r| r["id"].as_str().or(r.as_str()).map(str::to_owned))
        .collect();
    wait_status(w, &runs[0], "COMPLETED", Duration::from_secs(30));
    wait_status(w, &runs[1], "FAILED", Duration::from_secs(30));
    let ok = get(
        &w.url(&format!("/api/v1/runs/{}/result", runs[0])),
        Some(DEV_KEY),
    );
    ensure_eq(ok.status, 200, &ok.body)?;
    let ok = ok.json();
    ensure_eq(
        (&ok["ok"], &ok["id"], &ok["outputType"]),
        (&json!(true), &json!(runs[0]), &json!("application/json")),
        "a completed run's result",
    )?;
    let output: Value = serde_json::from_str(ok["output"].as_str().ok_or("output text")?)?;
    ensure_eq(&output["ok"], &json!(true), "its output, as JSON text")?;
    let failed = get(
        &w.url(&format!("/api/v1/runs/{}/result", runs[1])),
        Some(DEV_KEY),
    )
    .json();
    ensure_eq(
        (&failed["ok"], &failed["error"]["type"]),
        (&json!(false), &json!("BUILT_IN_ERROR")),
        "a failed run's result",
    )?;
    let waiting = get(
        &w.url(&format!("/api/v1/runs/{}/result", runs[2])),
        Some(DEV_KEY),
    );
    ensure_eq(waiting.status, 404, "no result before the run finishes")?;
    let results = get(
        &w.url(&format!("/api/v1/batches/{batch_id}/results")),
        Some(DEV_KEY),
    );
    ensure_eq(results.status, 200, &results.body)?;
    let results = results.json();
    let ids: Vec<&str> = results["items"]
        .as_array()
        .ok_or("items")?
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    ensure_eq(
        ids,
        vec![runs[0].as_str(), runs[1].as_str()],
        "the finished runs, in order",
    )?;
    crate::execution::cancel(w, &runs[2])?;
    let cancelled = get(
        &w.url(&format!("/api/v1/runs/{}/result", runs[2])),
        Some(DEV_KEY),
    )
    .json();
    ensure_eq(
        &cancelled["error"]["code"],
        &json!("TASK_RUN_CANCELLED"),
        "a cancelled run",
    )
}

/// A batch's runs keep their write-once options in one stored body (store schema step 11),
/// an item too large for it in its own row: the endpoint's call, a retry's backoff, the
/// run's answer, the list and a replay all see each run's own options.
fn a_batchs_options_kept_in_one_body_reach_the_call_every_read_and_a_replay(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("body");
    let big = "é".repeat(40 * 1024); // 80 KiB of UTF-8: over a body item's 64 KiB
    let payloads = [
        json!({"n": 0, "text": "déjà vu", "failTimes": 1}),
        json!({"n": 1, "text": "\"quoted\"\n"}),
        json!({"n": 2, "big": big}),
    ];
    let items: Vec<Value> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            json!({"payload": payload, "options": {
                "idempotencyKey": format!("{tag}-{i}"), "ttl": "1h", "tags": [tag],
            }})
        })
        .collect();
    let batch = send(
        w,
        "POST",
        &format!("/api/v1/tasks/{TASK}/batch"),
        &json!({ "items": items }),
    );
    ensure_eq(batch.status, 200, &batch.body)?;
    let (batch_id, runs) = (
        batch.json()["batchId"].clone(),
        batch.json()["runs"].clone(),
    );
    let runs: Vec<String> = serde_json::from_value(runs)?;
    for (i, run) in runs.iter().enumerate() {
        let done = wait_status(w, run, "COMPLETED", Duration::from_secs(60));
        ensure_eq(
            (&done["payload"], &done["payloadType"], &done["ttl"]),
            (&payloads[i], &json!("application/json"), &json!("1h")),
            &format!("run {i}'s payload, its type and TTL"),
        )?;
        ensure_eq(&done["batchId"], &batch_id, &format!("run {i}'s batch"))?;
        ensure_eq(
            (&done["idempotencyKey"], &done["triggerFunction"]),
            (&json!(format!("{tag}-{i}")), &json!("batchTrigger")),
            &format!("run {i}'s key and trigger function"),
        )?;
        let calls = server.calls_of(run);
        let call: Value = serde_json::from_slice(&calls.last().ok_or("a call")?.body)?;
        ensure_eq(
            (&call["payload"], &call["idempotencyKey"], &call["batchId"]),
            (&payloads[i], &json!(format!("{tag}-{i}")), &batch_id),
            &format!("run {i}'s call"),
        )?;
    }
    ensure_eq(
        server.calls_of(&runs[0]).len(),
        2,
        "the first run retried once, with its task's backoff",
    )?;
    let expected: Vec<String> = (0..3).map(|i| format!("{tag}-{i}")).collect();
    ensure_eq(
        listed(w, &format!("filter[tag]={tag}"), "idempotencyKey")?,
        expected,
        "listed keys",
    )?;
    // The batch filter finds runs whose batch is in a body and the one whose is in its row.
    let batch_id = batch_id.as_str().ok_or("the batch id")?;
    let mut expected = runs.clone();
    expected.sort_unstable();
    ensure_eq(
        listed(w, &format!("filter[batch]={batch_id}"), "id")?,
        expected,
        "the runs the batch filter lists",
    )?;
    // A replay has the same payload and options, without the key or the batch.
    let replayed = send(
        w,
        "POST",
        &format!("/api/v1/runs/{}/replay", runs[1]),
        &json!({}),
    );
    ensure_eq(replayed.status, 200, &replayed.body)?;
    let copy = replayed.json()["id"]
        .as_str()
        .ok_or("the replay's id")?
        .to_owned();
    let copy = wait_status(w, &copy, "COMPLETED", Duration::from_secs(60));
    ensure_eq(
        (&copy["payload"], &copy["ttl"], &copy["triggerFunction"]),
        (&payloads[1], &json!("1h"), &json!("trigger")),
        "the replay",
    )?;
    ensure(
        copy.get("idempotencyKey").is_none() && copy["batchId"].is_null(),
        format!("the replay has no key and no batch: {copy}"),
    )
}
