//! One environment's objects are invisible to another's key, on every endpoint: runs,
//! batches (both kinds), idempotency keys and queues made with the development key are
//! walked with the production key, and nothing there is seen, changed or shared.

use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::execution::Case;
use crate::harness::{eventually, get, request, Answer, Worker, DEV_KEY, PROD_KEY};
use crate::task_server::TaskServer;
use crate::{auth, ensure, ensure_eq, unique};

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![another_environments_key_sees_and_changes_nothing_on_any_endpoint]
}

fn call(w: &Worker, key: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
    let authorization = auth(key);
    let mut headers = vec![("authorization", authorization.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    if method == "GET" {
        return get(&w.url(path), Some(key));
    }
    request(method, &w.url(path), &headers, body.as_bytes())
}

fn ok(answer: Answer, what: &str) -> Result<Value, Failed> {
    ensure(
        (200..300).contains(&answer.status),
        format!("{what}: {} {}", answer.status, answer.body),
    )?;
    Ok(answer.json())
}

fn not_found(answer: Answer, what: &str) -> Result<(), Failed> {
    ensure_eq(
        answer.status,
        404,
        &format!("{what} with the other key ({})", answer.body),
    )?;
    ensure(
        !answer.error().is_empty(),
        format!("{what}: an {{\"error\"}} body"),
    )
}

fn another_environments_key_sees_and_changes_nothing_on_any_endpoint(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    let (tag, key, queue, batch_key) = (
        unique("iso"),
        unique("iso-key"),
        unique("iso-q"),
        unique("iso-batch"),
    );
    // Development objects: a delayed run with a key and a tag, a batch, a two-step batch,
    // and a held run on a queue whose limit is 0.
    let batch = ok(
        call(
            w,
            DEV_KEY,
            "POST",
            "/api/v1/tasks/hello-world/batch",
            Some(json!({"items": [
                {"payload": {"n": 1}, "options": {"tags": [tag], "idempotencyKey": key, "delay": "1h"}},
                {"payload": {"n": 2}, "options": {"queue": {"name": queue, "concurrencyLimit": 0}}},
            ]})),
        ),
        "the development batch",
    )?;
    let batch_id = batch["batchId"].as_str().unwrap_or_default().to_owned();
    let run = batch["runs"][0].as_str().unwrap_or_default().to_owned();
    let held = batch["runs"][1].as_str().unwrap_or_default().to_owned();
    let two_step = ok(
        call(
            w,
            DEV_KEY,
            "POST",
            "/api/v3/batches",
            Some(json!({"runCount": 1, "idempotencyKey": batch_key})),
        ),
        "the development two-step batch",
    )?;
    let two_step_id = two_step["id"].as_str().unwrap_or_default().to_owned();
    let before = ok(
        call(w, DEV_KEY, "GET", &format!("/api/v3/runs/{run}"), None),
        "the run",
    )?;

    // Reads.
    not_found(
        call(w, PROD_KEY, "GET", &format!("/api/v3/runs/{run}"), None),
        "GET run",
    )?;
    for path in [
        format!("/api/v1/batches/{batch_id}"),
        format!("/api/v2/batches/{batch_id}"),
        format!("/api/v1/batches/{two_step_id}"),
        format!("/api/v2/batches/{two_step_id}"),
        format!("/api/v1/batches/{batch_id}/results"),
        format!("/api/v1/runs/{run}/result"),
        format!("/api/v1/runs/{run}/metadata"),
    ] {
        not_found(call(w, PROD_KEY, "GET", &path, None), &path)?;
    }
    // Metadata and tags: not found, nothing written.
    not_found(
        call(
            w,
            PROD_KEY,
            "PUT",
            &format!("/api/v1/runs/{run}/metadata"),
            Some(json!({"metadata": {"theirs": true}})),
        ),
        "PUT metadata",
    )?;
    not_found(
        call(
            w,
            PROD_KEY,
            "POST",
            &format!("/api/v1/runs/{run}/tags"),
            Some(json!({"tags": ["theirs"]})),
        ),
        "POST tags",
    )?;
    for filter in [
        format!("filter[tag]={tag}"),
        format!("filter[batch]={batch_id}"),
        format!("filter[queue]={queue}"),
    ] {
        let listed = ok(
            call(w, PROD_KEY, "GET", &format!("/api/v1/runs?{filter}"), None),
            "list",
        )?;
        ensure_eq(
            listed["data"].as_array().map(Vec::len),
            Some(0),
            &format!("runs listed by {filter}"),
        )?;
    }

    // Changes.
    not_found(
        call(
            w,
            PROD_KEY,
            "POST",
            &format!("/api/v2/runs/{run}/cancel"),
            None,
        ),
        "cancel",
    )?;
    not_found(
        call(
            w,
            PROD_KEY,
            "POST",
            &format!("/api/v1/runs/{run}/replay"),
            None,
        ),
        "replay",
    )?;
    not_found(
        call(
            w,
            PROD_KEY,
            "POST",
            &format!("/api/v1/runs/{run}/reschedule"),
            Some(json!({"delay": "2h"})),
        ),
        "reschedule",
    )?;
    not_found(
        call(
            w,
            PROD_KEY,
            "POST",
            &format!("/api/v1/idempotencyKeys/{key}/reset"),
            Some(json!({"taskIdentifier": "hello-world"})),
        ),
        "reset the idempotency key",
    )?;
    let stream = request(
        "POST",
        &w.url(&format!("/api/v3/batches/{two_step_id}/items")),
        &[
            ("authorization", &auth(PROD_KEY)),
            ("content-type", "application/x-ndjson"),
        ],
        format!(
            "{}\n",
            json!({"index": 0, "task": "hello-world", "payload": {"from": "prod"}})
        )
        .as_bytes(),
    );
    not_found(stream, "stream items into the batch")?;

    // Keys are per environment: the same item key and batch key make new objects.
    let theirs = ok(
        call(
            w,
            PROD_KEY,
            "POST",
            "/api/v1/tasks/hello-world/trigger",
            Some(json!({"payload": 1, "options": {"idempotencyKey": key}})),
        ),
        "a production trigger with the same key",
    )?;
    ensure(
        theirs["id"] != json!(run) && theirs["isCached"] == json!(false),
        format!("the key is shared: {theirs}"),
    )?;
    let their_batch = ok(
        call(
            w,
            PROD_KEY,
            "POST",
            "/api/v3/batches",
            Some(json!({"runCount": 1, "idempotencyKey": batch_key})),
        ),
        "a production two-step batch with the same key",
    )?;
    ensure(
        their_batch["id"] != json!(two_step_id),
        "the batch key is shared",
    )?;

    // Queues are per environment: production's run on the same queue name is not held
    // by development's limit of 0.
    let theirs_on_queue = ok(
        call(
            w,
            PROD_KEY,
            "POST",
            "/api/v1/tasks/hello-world/trigger",
            Some(json!({"payload": {"name": "prod"}, "options": {"queue": {"name": queue}}})),
        ),
        "a production run on the same queue",
    )?;
    let their_run = theirs_on_queue["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eventually(
        Duration::from_secs(30),
        "the production run to complete",
        || {
            let status = call(
                w,
                PROD_KEY,
                "GET",
                &format!("/api/v3/runs/{their_run}"),
                None,
            )
            .json()["status"]
                .clone();
            (status == json!("COMPLETED")).then_some(())
        },
    );

    // Queues: production's queue of the same name is its own. It shows none of
    // development's limit or waiting run, and pausing or overriding it changes nothing
    // of development's.
    let queue_path = format!("/api/v1/queues/{queue}");
    let theirs = ok(
        call(
            w,
            PROD_KEY,
            "GET",
            &format!("{queue_path}?type=custom"),
            None,
        ),
        "production's queue",
    )?;
    ensure_eq(
        (&theirs["concurrencyLimit"], &theirs["queued"]),
        (&Value::Null, &json!(0)),
        "production's queue shows nothing of development's",
    )?;
    for (action, body) in [
        ("pause", json!({"type": "custom", "action": "pause"})),
        (
            "concurrency/override",
            json!({"type": "custom", "concurrencyLimit": 5}),
        ),
    ] {
        ok(
            call(
                w,
                PROD_KEY,
                "POST",
                &format!("{queue_path}/{action}"),
                Some(body),
            ),
            action,
        )?;
    }
    let dev_queue = ok(
        call(
            w,
            DEV_KEY,
            "GET",
            &format!("{queue_path}?type=custom"),
            None,
        ),
        "the development queue",
    )?;
    ensure_eq(
        (
            &dev_queue["paused"],
            &dev_queue["concurrencyLimit"],
            &dev_queue["queued"],
        ),
        (&json!(false), &json!(0), &json!(1)),
        "the development queue, untouched",
    )?;
    // A queue only development's runs reached is not found with production's key.
    let dev_only = unique("iso-dev-q");
    ok(
        call(
            w,
            DEV_KEY,
            "POST",
            "/api/v1/tasks/hello-world/trigger",
            Some(json!({"payload": {"name": "dev"}, "options": {"queue": {"name": dev_only}}})),
        ),
        "a development run on its own queue",
    )?;
    eventually(
        Duration::from_secs(30),
        "development's queue to be known",
        || {
            let answer = call(
                w,
                DEV_KEY,
                "GET",
                &format!("/api/v1/queues/{dev_only}?type=custom"),
                None,
            );
            (answer.status == 200).then_some(())
        },
    );
    not_found(
        call(
            w,
            PROD_KEY,
            "GET",
            &format!("/api/v1/queues/{dev_only}?type=custom"),
            None,
        ),
        "GET queue",
    )?;
    not_found(
        call(
            w,
            PROD_KEY,
            "POST",
            &format!("/api/v1/queues/{dev_only}/pause"),
            Some(json!({"type": "custom", "action": "pause"})),
        ),
        "pause queue",
    )?;

    // A development schedule: production neither sees nor changes it, and a production
    // create with the same deduplication key makes production's own.
    let dedup = unique("isolated");
    let schedule = ok(
        call(
            w,
            DEV_KEY,
            "POST",
            "/api/v1/schedules",
            Some(json!({"task": "hello-world", "cron": "0 0 1 1 *", "deduplicationKey": dedup})),
        ),
        "a development schedule",
    )?;
    let schedule_path = format!("/api/v1/schedules/{}", schedule["id"].as_str().ok_or("id")?);
    for (method, path, body) in [
        ("GET", schedule_path.clone(), None),
        (
            "PUT",
            schedule_path.clone(),
            Some(json!({"task": "hello-world", "cron": "* * * * *"})),
        ),
        ("POST", format!("{schedule_path}/deactivate"), None),
        ("DELETE", schedule_path.clone(), None),
    ] {
        not_found(
            call(w, PROD_KEY, method, &path, body),
            &format!("{method} {path}"),
        )?;
    }
    let listed = ok(
        call(w, PROD_KEY, "GET", "/api/v1/schedules?perPage=100", None),
        "prod's schedules",
    )?;
    ensure(
        !listed["data"]
            .as_array()
            .ok_or("data")?
            .iter()
            .any(|s| s["id"] == schedule["id"]),
        "production lists development's schedule",
    )?;
    let theirs = ok(
        call(
            w,
            PROD_KEY,
            "POST",
            "/api/v1/schedules",
            Some(json!({"task": "hello-world", "cron": "0 0 1 1 *", "deduplicationKey": dedup})),
        ),
        "production's schedule with the same key",
    )?;
    ensure(
        theirs["id"] != schedule["id"],
        "the same key made production its own",
    )?;
    ok(
        call(
            w,
            PROD_KEY,
            "DELETE",
            &format!("/api/v1/schedules/{}", theirs["id"].as_str().ok_or("id")?),
            None,
        ),
        "delete production's",
    )?;
    let mine = ok(
        call(w, DEV_KEY, "GET", &schedule_path, None),
        "development's schedule",
    )?;
    ensure_eq(
        (&mine["active"], &mine["generator"]["expression"]),
        (&json!(true), &json!("0 0 1 1 *")),
        "development's schedule unchanged",
    )?;
    ok(
        call(w, DEV_KEY, "DELETE", &schedule_path, None),
        "delete development's",
    )?;

    // Bulk actions: production's cancel by the development run's tag and by its id
    // reaches production's runs only; development's action is unseen.
    for body in [
        json!({"action": "cancel", "filter": {"tag": tag}}),
        json!({"action": "cancel", "runIds": [run]}),
    ] {
        let created = call(w, PROD_KEY, "POST", "/api/v1/bulk-actions", Some(body));
        ensure_eq(created.status, 202, &created.body)?;
        let id = created.json()["id"].as_str().ok_or("id")?.to_owned();
        let finished = eventually(Duration::from_secs(30), "production's bulk action", || {
            let a = call(
                w,
                PROD_KEY,
                "GET",
                &format!("/api/v1/bulk-actions/{id}"),
                None,
            )
            .json();
            (a["status"] == "COMPLETED").then_some(a)
        });
        ensure_eq(
            finished["counts"]["success"].as_u64(),
            Some(0),
            "production's bulk cancel cancelled nothing",
        )?;
    }
    let dev_bulk = call(
        w,
        DEV_KEY,
        "POST",
        "/api/v1/bulk-actions",
        Some(json!({"action": "cancel", "filter": {"tag": unique("iso-none")}})),
    );
    ensure_eq(dev_bulk.status, 202, &dev_bulk.body)?;
    let dev_bulk = dev_bulk.json()["id"].as_str().ok_or("id")?.to_owned();
    for (method, path) in [
        ("GET", format!("/api/v1/bulk-actions/{dev_bulk}")),
        ("POST", format!("/api/v1/bulk-actions/{dev_bulk}/abort")),
    ] {
        not_found(
            call(w, PROD_KEY, method, &path, None),
            &format!("{method} {path}"),
        )?;
    }
    let listed = ok(
        call(
            w,
            PROD_KEY,
            "GET",
            "/api/v1/bulk-actions?page[size]=100",
            None,
        ),
        "production's bulk actions",
    )?;
    ensure(
        !listed["data"]
            .as_array()
            .ok_or("data")?
            .iter()
            .any(|a| a["id"] == dev_bulk.as_str()),
        "production lists development's bulk action",
    )?;

    // And development's objects are as they were.
    let after = ok(
        call(w, DEV_KEY, "GET", &format!("/api/v3/runs/{run}"), None),
        "the run again",
    )?;
    ensure_eq(
        after["status"].clone(),
        json!("DELAYED"),
        "the development run's status",
    )?;
    ensure_eq(
        after["delayedUntil"].clone(),
        before["delayedUntil"].clone(),
        "its delayedUntil",
    )?;
    ensure_eq(after["tags"].clone(), before["tags"].clone(), "its tags")?;
    ensure_eq(
        after.get("metadata").cloned(),
        before.get("metadata").cloned(),
        "its metadata",
    )?;
    let again = ok(
        call(
            w,
            DEV_KEY,
            "POST",
            "/api/v1/tasks/hello-world/trigger",
            Some(json!({"payload": 1, "options": {"idempotencyKey": key}})),
        ),
        "the development key again",
    )?;
    ensure_eq(again["id"].clone(), json!(run), "the development key's run")?;
    let two = ok(
        call(
            w,
            DEV_KEY,
            "GET",
            &format!("/api/v2/batches/{two_step_id}"),
            None,
        ),
        "the two-step batch",
    )?;
    ensure_eq(
        two["runs"].as_array().map(Vec::len),
        Some(0),
        "items in the development two-step batch",
    )?;
    let held_now = ok(
        call(w, DEV_KEY, "GET", &format!("/api/v3/runs/{held}"), None),
        "the held run",
    )?;
    ensure_eq(
        held_now["status"].clone(),
        json!("QUEUED"),
        "the run held by the limit of 0",
    )?;
    // Tidy: the held run and the delayed one never need to execute.
    for id in [&held, &run] {
        ok(
            call(
                w,
                DEV_KEY,
                "POST",
                &format!("/api/v2/runs/{id}/cancel"),
                None,
            ),
            "cancel",
        )?;
    }
    Ok(())
}
