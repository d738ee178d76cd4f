//! Execution end to end (docs/API.md section 3): runs reach the test task endpoint within their
//! queue's limits, retry, wait for their delay, expire, and stay cancelled.

use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::harness::{
    eventually, get, request, Worker, DEV_KEY, PREVIEW_KEY, PROD_KEY, SIGNING_SECRET, STG_KEY,
};
use crate::task_server::{epoch_ms, TaskServer};
use crate::{ensure, ensure_eq, unique};

/// The task the tests declare, pointing at the test task endpoint.
pub const TASK: &str = "e2e-task";
/// A second task on the same endpoint, whose runs live in another store.
const OTHER_TASK: &str = "e2e-task-b";

pub type Case = fn(&Worker, &TaskServer) -> Result<(), Failed>;

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        thirty_runs_on_a_limit_3_queue_all_complete_never_more_than_3_at_once,
        two_concurrency_keys_on_a_limit_2_queue_each_reach_2_never_more,
        two_tasks_sharing_a_limit_2_queue_all_complete_never_more_than_2_at_once,
        a_limit_0_queue_holds_its_runs_until_a_later_batch_raises_the_limit,
        a_run_failing_twice_then_succeeding_completes_on_attempt_3,
        a_run_always_failing_ends_failed_after_max_attempts_with_its_error,
        an_output_over_1_mib_fails_the_attempt_with_or_without_a_content_length,
        an_attempt_past_its_max_duration_fails_whether_its_answer_or_its_body_is_late,
        a_delayed_run_starts_no_earlier_than_its_time,
        a_run_whose_ttl_passes_behind_a_full_queue_expires_and_is_never_called,
        a_cancelled_delayed_run_is_never_called,
        a_cancelled_queued_run_behind_a_full_queue_is_never_called,
        the_example_hello_world_task_completes_with_its_greeting,
        a_task_call_carries_its_deadline_environment_test_flag_and_max_attempts,
        an_error_the_endpoint_reports_is_the_runs_error_and_retry_false_fails_the_run_at_once,
        a_superjson_output_is_kept_with_its_output_type,
        the_readme_verifier_accepts_real_calls_and_rejects_forged_ones,
        secrets_never_appear_in_responses_or_logs,
    ]
}

/// Adds the test task to a worker's configuration.
pub fn declare_task(config: &mut toml::Table, server: &TaskServer) {
    declare_endpoint_task(config, TASK, &server.url(), 3, 30);
    declare_endpoint_task(config, OTHER_TASK, &server.url(), 3, 30);
}

/// Declares task `name`, calling `endpoint`, with quick fixed retries (200 ms).
pub fn declare_endpoint_task(
    config: &mut toml::Table,
    name: &str,
    endpoint: &str,
    max_attempts: i64,
    max_duration_secs: i64,
) {
    let vars = config["vars"].as_table_mut().expect("[vars]");
    let tasks = vars["TASKS"].as_table_mut().expect("[vars.TASKS]");
    let mut task = toml::Table::new();
    task.insert("endpoint".into(), endpoint.into());
    task.insert("maxAttempts".into(), max_attempts.into());
    task.insert("maxDuration".into(), max_duration_secs.into());
    task.insert(
        "retry".into(),
        toml::Value::Table(
            toml::toml! { factor = 1 minTimeoutInMs = 200 maxTimeoutInMs = 200 randomize = false },
        ),
    );
    tasks.insert(name.into(), toml::Value::Table(task));
}

fn trigger(w: &Worker, items: Vec<Value>) -> Result<Vec<String>, Failed> {
    trigger_task(w, TASK, items)
}

pub fn trigger_task(w: &Worker, task: &str, items: Vec<Value>) -> Result<Vec<String>, Failed> {
    let body = json!({ "items": items }).to_string();
    let authorization = format!("Bearer {DEV_KEY}");
    let answer = request(
        "POST",
        &w.url(&format!("/api/v1/tasks/{task}/batch")),
        &[("authorization", &authorization)],
        body.as_bytes(),
    );
    ensure_eq(
        answer.status,
        200,
        &format!("batch status ({})", answer.body),
    )?;
    Ok(answer.json()["runs"]
        .as_array()
        .ok_or("runs")?
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect())
}

pub fn run(w: &Worker, id: &str) -> Value {
    get(&w.url(&format!("/api/v3/runs/{id}")), Some(DEV_KEY)).json()
}

fn status(w: &Worker, id: &str) -> String {
    run(w, id)["status"].as_str().unwrap_or_default().to_owned()
}

pub fn wait_status(w: &Worker, id: &str, want: &str, limit: Duration) -> Value {
    eventually(limit, &format!("{id} to become {want}"), || {
        let run = run(w, id);
        (run["status"] == want).then_some(run)
    })
}

pub fn cancel(w: &Worker, id: &str) -> Result<(), Failed> {
    let authorization = format!("Bearer {DEV_KEY}");
    // As the SDK sends it: a JSON content type and an empty body.
    let answer = request(
        "POST",
        &w.url(&format!("/api/v2/runs/{id}/cancel")),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        b"",
    );
    ensure_eq(
        answer.status,
        200,
        &format!("cancel status ({})", answer.body),
    )?;
    ensure_eq(
        answer.json()["id"].clone(),
        json!(id),
        "cancel answers the id",
    )
}

fn item(payload: Value, queue: &str, limit: u32) -> Value {
    json!({"payload": payload, "options": {"queue": {"name": queue, "concurrencyLimit": limit}}})
}

fn thirty_runs_on_a_limit_3_queue_all_complete_never_more_than_3_at_once(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let queue = unique("limit3");
    let runs = trigger(
        w,
        (0..30)
            .map(|_| item(json!({"sleepMs": 150}), &queue, 3))
            .collect(),
    )?;
    for id in &runs {
        wait_status(w, id, "COMPLETED", Duration::from_secs(90));
    }
    for id in &runs {
        ensure_eq(
            tasks.calls_of(id).len(),
            1,
            "each run is called exactly once",
        )?;
        let run = run(w, id);
        ensure_eq(
            run["output"]["ok"].clone(),
            json!(true),
            "the endpoint's answer is the output",
        )?;
        ensure_eq(run["attemptCount"].clone(), json!(1), "one attempt")?;
        ensure(
            run["startedAt"].is_string() && run["finishedAt"].is_string(),
            "start and finish times",
        )?;
    }
    ensure_eq(
        tasks.max_in_flight(&queue, None),
        3,
        "most calls of the queue in flight at once",
    )
}

/// A slot freed by one task's run may go to the other task's: that run starts at its own
/// store, not at the one the freed run reported to.
fn two_tasks_sharing_a_limit_2_queue_all_complete_never_more_than_2_at_once(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let queue = unique("shared");
    let batch = |task| {
        let items = (0..10)
            .map(|_| item(json!({"sleepMs": 100}), &queue, 2))
            .collect();
        trigger_task(w, task, items)
    };
    let (ours, theirs) = (batch(TASK)?, batch(OTHER_TASK)?);
    // Run ids begin with their store's route (`run_` and three characters).
    ensure(
        ours[0][..7] != theirs[0][..7],
        format!(
            "the two tasks' runs live in two stores: {} {}",
            ours[0], theirs[0]
        ),
    )?;
    for id in ours.iter().chain(&theirs) {
        wait_status(w, id, "COMPLETED", Duration::from_secs(90));
        ensure_eq(
            tasks.calls_of(id).len(),
            1,
            "each run is called exactly once",
        )?;
    }
    ensure_eq(
        tasks.max_in_flight(&queue, None),
        2,
        "most calls of the queue in flight at once",
    )
}

fn two_concurrency_keys_on_a_limit_2_queue_each_reach_2_never_more(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let queue = unique("keys");
    let items = (0..10)
        .map(|i| {
            let key = if i % 2 == 0 { "tenant-a" } else { "tenant-b" };
            json!({"payload": {"sleepMs": 400}, "options": {"queue": {"name": queue, "concurrencyLimit": 2}, "concurrencyKey": key}})
        })
        .collect();
    let runs = trigger(w, items)?;
    for id in &runs {
        wait_status(w, id, "COMPLETED", Duration::from_secs(90));
    }
    ensure_eq(
        tasks.max_in_flight(&queue, Some("tenant-a")),
        2,
        "tenant-a at once",
    )?;
    ensure_eq(
        tasks.max_in_flight(&queue, Some("tenant-b")),
        2,
        "tenant-b at once",
    )?;
    ensure(
        tasks.max_in_flight(&queue, None) > 2,
        "the keys run side by side, not one limit shared",
    )
}

fn a_limit_0_queue_holds_its_runs_until_a_later_batch_raises_the_limit(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let queue = unique("paused");
    let held = trigger(
        w,
        (0..4)
            .map(|_| item(json!({"sleepMs": 300}), &queue, 0))
            .collect(),
    )?;
    std::thread::sleep(Duration::from_secs(3));
    for id in &held {
        ensure_eq(
            status(w, id),
            "QUEUED".into(),
            "a paused queue holds its runs",
        )?;
        ensure_eq(tasks.calls_of(id).len(), 0, "no call while paused")?;
    }
    let raised = trigger(w, vec![item(json!({"sleepMs": 300}), &queue, 2)])?;
    for id in held.iter().chain(&raised) {
        wait_status(w, id, "COMPLETED", Duration::from_secs(60));
    }
    ensure_eq(
        tasks.max_in_flight(&queue, None),
        2,
        "the raised limit applies to the waiting runs",
    )
}

fn a_run_failing_twice_then_succeeding_completes_on_attempt_3(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let runs = trigger(w, vec![json!({"payload": {"failTimes": 2}})])?;
    let done = wait_status(w, &runs[0], "COMPLETED", Duration::from_secs(60));
    ensure_eq(done["attemptCount"].clone(), json!(3), "attemptCount")?;
    let attempts: Vec<u64> = tasks.calls_of(&runs[0]).iter().map(|c| c.attempt).collect();
    ensure_eq(
        attempts,
        vec![1, 2, 3],
        "the attempt numbers the endpoint saw",
    )
}

fn a_run_always_failing_ends_failed_after_max_attempts_with_its_error(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let runs = trigger(w, vec![json!({"payload": {"alwaysFail": true}})])?;
    let failed = wait_status(w, &runs[0], "FAILED", Duration::from_secs(60));
    ensure_eq(
        failed["attemptCount"].clone(),
        json!(3),
        "maxAttempts of the task",
    )?;
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    ensure(
        message.contains("answered 500") && message.contains("failing attempt 3"),
        format!("error: {message}"),
    )?;
    ensure_eq(tasks.calls_of(&runs[0]).len(), 3, "three calls")?;
    ensure_eq(failed["isFailed"].clone(), json!(true), "isFailed")
}

fn an_attempt_past_its_max_duration_fails_whether_its_answer_or_its_body_is_late(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let within = |secs: u32| json!({"maxDuration": secs, "maxAttempts": 1});
    let runs = trigger(
        w,
        vec![
            json!({"payload": {"sleepMs": 3000}, "options": within(1)}),
            json!({"payload": {"slowBodyMs": 3000}, "options": within(1)}),
            json!({"payload": {"slowBodyMs": 300}, "options": within(2)}),
        ],
    )?;
    for (run, late) in [(&runs[0], "the answer"), (&runs[1], "the answer's body")] {
        let failed = wait_status(w, run, "FAILED", Duration::from_secs(60));
        ensure_eq(
            failed["error"]["name"].clone(),
            json!("MaxDurationExceeded"),
            &format!("the error when {late} comes after maxDuration ({failed})"),
        )?;
        let message = failed["error"]["message"].as_str().unwrap_or_default();
        ensure(
            message.contains("maxDuration of 1s"),
            format!("error: {message}"),
        )?;
        ensure_eq(tasks.calls_of(run).len(), 1, "one call (maxAttempts 1)")?;
    }
    let done = wait_status(w, &runs[2], "COMPLETED", Duration::from_secs(60));
    ensure_eq(
        done["output"].clone(),
        json!({"ok": true, "attempt": 1}),
        "a body that ends within maxDuration",
    )
}

fn an_output_over_1_mib_fails_the_attempt_with_or_without_a_content_length(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    const MIB: u64 = 1024 * 1024;
    let runs = trigger(
        w,
        vec![
            json!({"payload": {"outputBytes": MIB}}),
            json!({"payload": {"outputBytes": MIB + 1}}),
            json!({"payload": {"outputBytes": MIB + 1, "chunked": true}}),
            json!({"payload": {"outputBytes": 10, "chunked": true}}),
        ],
    )?;
    let exact = wait_status(w, &runs[0], "COMPLETED", Duration::from_secs(60));
    ensure_eq(
        exact["output"].as_str().map(str::len),
        Some(MIB as usize - 2),
        "an output of exactly 1 MiB is kept",
    )?;
    for (run, how) in [(&runs[1], "declared"), (&runs[2], "chunked")] {
        let failed = wait_status(w, run, "FAILED", Duration::from_secs(60));
        ensure_eq(
            failed["error"]["name"].clone(),
            json!("OutputTooLarge"),
            &format!("a {how} output of 1 MiB + 1 byte"),
        )?;
    }
    let small = wait_status(w, &runs[3], "COMPLETED", Duration::from_secs(60));
    ensure_eq(
        small["output"].clone(),
        json!("xxxxxxxx"),
        "a small chunked output",
    )
}

fn a_delayed_run_starts_no_earlier_than_its_time(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let runs = trigger(
        w,
        vec![json!({"payload": {"n": 1}, "options": {"delay": "3s"}})],
    )?;
    let delayed = run(w, &runs[0]);
    ensure_eq(
        delayed["status"].clone(),
        json!("DELAYED"),
        "status before its time",
    )?;
    let until = delayed["delayedUntil"]
        .as_str()
        .ok_or("delayedUntil")?
        .to_owned();
    wait_status(w, &runs[0], "COMPLETED", Duration::from_secs(30));
    let call = tasks.calls_of(&runs[0]).first().cloned().ok_or("called")?;
    let due = parse_ms(&until);
    ensure(
        call.started_ms >= due,
        format!("called at {} before its time {due}", call.started_ms),
    )
}

fn a_run_whose_ttl_passes_behind_a_full_queue_expires_and_is_never_called(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let queue = unique("ttl");
    let blocker = trigger(w, vec![item(json!({"sleepMs": 5000}), &queue, 1)])?;
    wait_status(w, &blocker[0], "EXECUTING", Duration::from_secs(30));
    let late = trigger(
        w,
        vec![json!({"payload": {"n": 2}, "options": {"queue": {"name": queue}, "ttl": "2s"}})],
    )?;
    let expired = wait_status(w, &late[0], "EXPIRED", Duration::from_secs(20));
    ensure(expired["expiredAt"].is_string(), "expiredAt is set")?;
    wait_status(w, &blocker[0], "COMPLETED", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    ensure_eq(
        tasks.calls_of(&late[0]).len(),
        0,
        "calls of the expired run",
    )?;
    ensure_eq(status(w, &late[0]), "EXPIRED".into(), "still expired")
}

fn a_cancelled_delayed_run_is_never_called(w: &Worker, tasks: &TaskServer) -> Result<(), Failed> {
    let runs = trigger(
        w,
        vec![json!({"payload": {"n": 3}, "options": {"delay": "2s"}})],
    )?;
    cancel(w, &runs[0])?;
    ensure_eq(status(w, &runs[0]), "CANCELED".into(), "status")?;
    std::thread::sleep(Duration::from_secs(4));
    ensure_eq(
        tasks.calls_of(&runs[0]).len(),
        0,
        "calls of the cancelled run",
    )?;
    cancel(w, &runs[0])?; // cancelling a final run changes nothing
    ensure_eq(status(w, &runs[0]), "CANCELED".into(), "still cancelled")
}

fn a_cancelled_queued_run_behind_a_full_queue_is_never_called(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let queue = unique("cancel");
    let blocker = trigger(w, vec![item(json!({"sleepMs": 3000}), &queue, 1)])?;
    wait_status(w, &blocker[0], "EXECUTING", Duration::from_secs(30));
    let runs = trigger(
        w,
        vec![
            item(json!({"n": 4}), &queue, 1),
            item(json!({"n": 5}), &queue, 1),
        ],
    )?;
    // Give the consumer time to park both behind the blocker.
    std::thread::sleep(Duration::from_millis(1500));
    ensure_eq(
        status(w, &runs[0]),
        "QUEUED".into(),
        "waiting behind the blocker",
    )?;
    cancel(w, &runs[0])?;
    wait_status(w, &runs[1], "COMPLETED", Duration::from_secs(30));
    ensure_eq(
        tasks.calls_of(&runs[0]).len(),
        0,
        "calls of the cancelled run",
    )?;
    ensure_eq(status(w, &runs[0]), "CANCELED".into(), "status")?;
    let unknown = request(
        "POST",
        &w.url("/api/v2/runs/run_123456789abcdefghijkm/cancel"),
        &[("authorization", &format!("Bearer {DEV_KEY}"))],
        b"",
    );
    ensure_eq(unknown.status, 404, "cancelling an unknown run")
}

/// The call's headers and body as the task package reads them (README, "Task calls").
fn a_task_call_carries_its_deadline_environment_test_flag_and_max_attempts(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let queue = unique("call-shape");
    let mut test_item = item(json!({"n": 1}), &queue, 5);
    test_item["options"]["test"] = json!(true);
    let runs = trigger(w, vec![item(json!({"n": 0}), &queue, 5), test_item])?;
    for (id, is_test) in runs.iter().zip([false, true]) {
        wait_status(w, id, "COMPLETED", Duration::from_secs(60));
        let calls = tasks.calls_of(id);
        let call = calls.first().ok_or("the run was called")?;
        let header = |name: &str| {
            call.headers
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        let (timestamp, deadline) = (header("x-trigger-timestamp"), header("x-trigger-deadline"));
        ensure_eq(
            deadline.zip(timestamp).map(|(d, t)| d - t),
            Some(30_000),
            "the deadline is the call's time plus the task's maxDuration of 30 s",
        )?;
        let body: Value = serde_json::from_slice(&call.body)?;
        ensure_eq(
            body["environment"].clone(),
            json!({"type": "DEVELOPMENT"}),
            "environment",
        )?;
        ensure_eq(body["isTest"].clone(), json!(is_test), "isTest")?;
        ensure_eq(body["maxAttempts"].clone(), json!(3), "maxAttempts")?;
    }
    Ok(())
}

/// As the task package fails an attempt: `{"error": {name, message, stack}}`, and
/// `x-trigger-retry: false` for an `AbortTaskRunError`.
fn an_error_the_endpoint_reports_is_the_runs_error_and_retry_false_fails_the_run_at_once(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let runs = trigger(w, vec![item(json!({"abort": true}), &unique("abort"), 5)])?;
    let run = wait_status(w, &runs[0], "FAILED", Duration::from_secs(60));
    ensure_eq(run["attemptCount"].clone(), json!(1), "one attempt")?;
    ensure_eq(
        tasks.calls_of(&runs[0]).len(),
        1,
        "called once, never retried",
    )?;
    ensure_eq(
        run["error"]["name"].clone(),
        json!("AbortTaskRunError"),
        "the error's name",
    )?;
    ensure_eq(
        run["error"]["message"].clone(),
        json!("no point trying again"),
        "the error's message",
    )?;
    ensure(
        run["error"]["stackTrace"]
            .as_str()
            .is_some_and(|s| s.contains("at run (task.js:1:1)")),
        format!("the error's stack: {}", run["error"]),
    )
}

fn a_superjson_output_is_kept_with_its_output_type(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    let runs = trigger(
        w,
        vec![item(json!({"superjsonOutput": true}), &unique("sj"), 5)],
    )?;
    let run = wait_status(w, &runs[0], "COMPLETED", Duration::from_secs(60));
    ensure_eq(
        run["outputType"].clone(),
        json!("application/super+json"),
        "the output's type",
    )?;
    ensure_eq(
        run["output"]["meta"]["values"]["at"].clone(),
        json!(["Date"]),
        "the superjson document is kept as sent",
    )?;
    // Its signed URL serves it, with its type, to a reader without a key (the SDKs).
    let url = run["outputPresignedUrl"]
        .as_str()
        .ok_or("an outputPresignedUrl")?;
    let served = get(url, None);
    ensure_eq(served.status, 200, "reading the output URL")?;
    ensure_eq(
        served.header("content-type"),
        Some("application/super+json"),
        "its content type",
    )?;
    ensure_eq(
        serde_json::from_str::<Value>(&served.body)?,
        run["output"].clone(),
        "the URL serves the output",
    )?;
    let forged = url.replace("signature=", "signature=0");
    ensure_eq(get(&forged, None).status, 401, "a forged output URL")?;
    let elsewhere = url.replace("/outputs/dev/", "/outputs/prod/");
    ensure_eq(
        get(&elsewhere, None).status,
        401,
        "another environment's URL",
    )?;
    // A plain JSON output has no type.
    let plain = trigger(w, vec![item(json!({"n": 1}), &unique("plain"), 5)])?;
    let run = wait_status(w, &plain[0], "COMPLETED", Duration::from_secs(60));
    ensure(
        run.get("outputType").is_none() && run.get("outputPresignedUrl").is_none(),
        "no outputType or URL for JSON",
    )
}

fn the_example_hello_world_task_completes_with_its_greeting(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    let body = json!({"items": [
        {"payload": {"name": "Ada"}},
        {"payload": "{\"json\":{\"name\":\"Grace\"}}", "options": {"payloadType": "application/super+json"}}
    ]})
    .to_string();
    let answer = request(
        "POST",
        &w.url("/api/v1/tasks/hello-world/batch"),
        &[("authorization", &format!("Bearer {DEV_KEY}"))],
        body.as_bytes(),
    );
    ensure_eq(answer.status, 200, "batch")?;
    let runs = answer.json()["runs"].clone();
    let ada = wait_status(
        w,
        runs[0].as_str().unwrap_or_default(),
        "COMPLETED",
        Duration::from_secs(30),
    );
    ensure_eq(
        ada["output"].clone(),
        json!({"message": "Hello, Ada!"}),
        "output",
    )?;
    let grace = wait_status(
        w,
        runs[1].as_str().unwrap_or_default(),
        "COMPLETED",
        Duration::from_secs(30),
    );
    ensure_eq(
        grace["output"].clone(),
        json!({"message": "Hello, Grace!"}),
        "superjson output",
    )?;
    // The example endpoint checks signatures like any task endpoint should.
    let forged = request(
        "POST",
        &w.url("/examples/hello-world"),
        &[
            ("x-trigger-timestamp", &epoch_ms().to_string()),
            ("x-trigger-signature", "v1=00"),
        ],
        br#"{"payload":{"name":"Mallory"}}"#,
    );
    ensure_eq(forged.status, 401, "an unsigned call to the example task")
}

fn the_readme_verifier_accepts_real_calls_and_rejects_forged_ones(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let runs = trigger(w, vec![json!({"payload": {"verify": "me"}})])?;
    wait_status(w, &runs[0], "COMPLETED", Duration::from_secs(30));
    let call = tasks.calls_of(&runs[0]).first().cloned().ok_or("called")?;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let start = readme
        .find("<!-- verifier:start -->")
        .ok_or("README has the verifier")?;
    let end = readme
        .find("<!-- verifier:end -->")
        .ok_or("README has the verifier's end")?;
    let block = &readme[start..end];
    let code_start = block.find("```js\n").ok_or("a js block")? + 6;
    let code_end = block[code_start..].find("```").ok_or("the block ends")? + code_start;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/e2e/verifier-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("verifier.mjs"), &block[code_start..code_end])?;
    let header = |name: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let headers = json!({
        "x-trigger-timestamp": header("x-trigger-timestamp"),
        "x-trigger-signature": header("x-trigger-signature"),
    });
    let body = String::from_utf8(call.body.clone())?;
    let driver = format!(
        r#"import {{ verifyTriggerSignature }} from "./verifier.mjs";
const secret = {secret};
const headers = {headers};
const body = {body};
const results = [
  verifyTriggerSignature(secret, headers, body),
  verifyTriggerSignature(secret, headers, body.replace("me", "you")),
  verifyTriggerSignature(secret, {{ ...headers, "x-trigger-signature": "v1=" + "0".repeat(64) }}, body),
  verifyTriggerSignature("another-secret-entirely", headers, body),
  verifyTriggerSignature(secret, {{ ...headers, "x-trigger-timestamp": String(Date.now() - 3600000) }}, body),
];
console.log(JSON.stringify(results));
"#,
        secret = json!(SIGNING_SECRET),
        headers = headers,
        body = json!(body),
    );
    std::fs::write(dir.join("driver.mjs"), driver)?;
    let out = std::process::Command::new("node")
        .arg(dir.join("driver.mjs"))
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure_eq(
        printed,
        "[true,false,false,false,false]".into(),
        &format!(
            "verifier results (stderr: {})",
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn secrets_never_appear_in_responses_or_logs(w: &Worker, tasks: &TaskServer) -> Result<(), Failed> {
    // Exercise the paths that touch secrets: good and bad keys, a signed call. The whole
    // run is checked again at its end (`secrets_leaked` over every worker's log).
    let _ = get(
        &w.url("/api/v3/runs/run_123456789abcdefghijkm"),
        Some("tr_dev_wrong_key"),
    );
    let runs = trigger(w, vec![json!({"payload": {"secret": "check"}})])?;
    wait_status(w, &runs[0], "COMPLETED", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    match secrets_leaked(&[w.log()], tasks) {
        None => Ok(()),
        Some(leak) => Err(leak.into()),
    }
}

/// Where a configured key or the signing secret shows, if anywhere: in `logs`, in any
/// answer the tests received, or in any call the task endpoint recorded.
pub fn secrets_leaked(logs: &[String], tasks: &TaskServer) -> Option<String> {
    let answers = crate::harness::answers();
    let calls = tasks.all_calls();
    for secret in [DEV_KEY, PROD_KEY, STG_KEY, PREVIEW_KEY, SIGNING_SECRET] {
        if logs.iter().any(|log| log.contains(secret)) {
            return Some(format!("a worker's log shows {secret}"));
        }
        if let Some(answer) = answers.iter().find(|a| a.contains(secret)) {
            return Some(format!("a response shows {secret}: {answer}"));
        }
        if calls
            .iter()
            .any(|c| String::from_utf8_lossy(&c.body).contains(secret))
        {
            return Some(format!("a task call carries {secret}"));
        }
    }
    None
}

fn parse_ms(iso: &str) -> u64 {
    // YYYY-MM-DDTHH:MM:SS.mmmZ, via the crate's own parser.
    trigger_edge::domain::basics::time::parse_iso(iso).unwrap_or(i64::MAX) as u64
}
