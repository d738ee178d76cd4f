//! The queues API and the gate's controls (docs/API.md section 7): pause and resume,
//! override and reset, priority, a total cap with keys taking turns; each proven on the
//! recording task endpoint.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::crash::Standalone;
use crate::execution::{declare_endpoint_task, trigger_task, wait_status, Case};
use crate::harness::{eventually, get, request, Worker, DEV_KEY};
use crate::task_server::{most_started_within, TaskServer};
use crate::{auth, ensure, ensure_eq};

/// A task on its own queue, `task/paused`.
const PAUSED: &str = "paused";
/// A task whose queue declares a limit of 1 per key.
const OVERRIDDEN: &str = "overridden";
/// A task whose queue declares a limit of 1: priority decides the order.
const PRIORITY: &str = "prioritised";
/// A task on the custom queue `tenants/fair`, a total cap of 2 over its keys.
const FAIR: &str = "fair";
const FAIR_QUEUE: &str = "tenants/fair";
/// A task whose queue lets each key start 5 runs a second.
const THROTTLED: &str = "throttled";
/// A task triggered with debounce keys.
const DEBOUNCED: &str = "debounced";

pub fn configure(config: &mut toml::Table, server: &TaskServer) {
    for task in [PAUSED, OVERRIDDEN, PRIORITY, FAIR, THROTTLED, DEBOUNCED] {
        declare_endpoint_task(config, task, &server.url(), 3, 30);
    }
    set_queue(config, OVERRIDDEN, toml::toml! { concurrencyLimit = 1 });
    set_queue(config, PRIORITY, toml::toml! { concurrencyLimit = 1 });
    set_queue(
        config,
        FAIR,
        toml::toml! { name = "tenants/fair" totalConcurrencyLimit = 2 },
    );
    set_queue(
        config,
        THROTTLED,
        toml::toml! { throttle = { limit = 5, period = "1s" } },
    );
}

fn set_queue(config: &mut toml::Table, task: &str, queue: toml::Table) {
    config["vars"]["TASKS"][task]
        .as_table_mut()
        .expect("a declared task")
        .insert("queue".into(), toml::Value::Table(queue));
}

/// Cases that start workers of their own.
pub fn standalone_cases() -> Vec<(&'static str, Standalone)> {
    crate::cases![a_pause_and_an_override_hold_across_a_kill_and_restart]
}

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        the_list_shows_every_declared_queue_before_its_first_run_and_every_queue_a_trigger_named,
        a_paused_queue_holds_new_runs_lets_the_running_one_finish_and_drains_on_resume,
        an_override_from_1_to_5_runs_5_at_once_and_reset_returns_to_1,
        runs_of_priority_60_start_before_20_runs_triggered_earlier,
        under_a_total_cap_of_2_a_late_key_with_5_runs_starts_before_the_20th_of_200,
        a_throttle_of_5_a_second_spreads_30_runs_of_a_key_over_5_seconds,
        debounced_triggers_execute_once_with_the_first_or_the_last_payload,
        a_busy_debounce_key_runs_by_its_max_delay_and_then_makes_a_new_run,
        unknown_queues_are_404_and_bad_bodies_are_400_naming_the_field,
    ]
}

fn queue_url(w: &Worker, name: &str, kind: &str, action: &str) -> String {
    // As the SDK encodes a name: `/` as `%2F`, then the whole.
    let encoded = name.replace('/', "%252F");
    match action {
        "" => w.url(&format!("/api/v1/queues/{encoded}?type={kind}")),
        action => w.url(&format!("/api/v1/queues/{encoded}/{action}")),
    }
}

fn retrieve(w: &Worker, name: &str, kind: &str) -> Result<Value, Failed> {
    let answer = get(&queue_url(w, name, kind, ""), Some(DEV_KEY));
    ensure_eq(
        answer.status,
        200,
        &format!("retrieve {name}: {}", answer.body),
    )?;
    Ok(answer.json())
}

/// POSTs `body` to the queue's `action`, expects 200, returns the queue.
fn steer(w: &Worker, name: &str, action: &str, body: Value) -> Result<Value, Failed> {
    let answer = post(&queue_url(w, name, "", action), &body.to_string());
    ensure_eq(
        answer.status,
        200,
        &format!("{action} {name}: {}", answer.body),
    )?;
    Ok(answer.json())
}

fn post(url: &str, body: &str) -> crate::harness::Answer {
    let authorization = auth(DEV_KEY);
    request(
        "POST",
        url,
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    )
}

fn items(count: usize, payload: Value, options: Value) -> Vec<Value> {
    (0..count)
        .map(|_| json!({"payload": payload, "options": options}))
        .collect()
}

/// When each run's first call started, by run id.
fn first_starts(server: &TaskServer, runs: &[String]) -> HashMap<String, u64> {
    runs.iter()
        .filter_map(|run| {
            let started = server.calls_of(run).first()?.started_ms;
            Some((run.clone(), started))
        })
        .collect()
}

fn wait_all(w: &Worker, runs: &[String], status: &str, limit: Duration) {
    for run in runs {
        wait_status(w, run, status, limit);
    }
}

fn the_list_shows_every_declared_queue_before_its_first_run_and_every_queue_a_trigger_named(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    // A queue only a trigger names, whose run is delayed: no gate has seen it yet.
    let named = crate::unique("named-by-a-trigger");
    let delayed = trigger_task(
        w,
        PRIORITY,
        items(
            1,
            json!({}),
            json!({"queue": {"name": named}, "delay": "1h"}),
        ),
    )?;
    let answer = get(&w.url("/api/v1/queues?perPage=100"), Some(DEV_KEY));
    ensure_eq(answer.status, 200, &answer.body)?;
    let list = answer.json();
    let data = list["data"].as_array().ok_or("data")?;
    let names: Vec<(&str, &str)> = data
        .iter()
        .map(|q| {
            (
                q["name"].as_str().unwrap_or(""),
                q["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for want in [
        (PAUSED, "task"),
        (OVERRIDDEN, "task"),
        (PRIORITY, "task"),
        (FAIR_QUEUE, "custom"),
        (named.as_str(), "custom"),
    ] {
        ensure(
            names.contains(&want),
            format!("{want:?} listed in {names:?}"),
        )?;
    }
    let found = retrieve(w, &named, "custom")?;
    ensure_eq(
        &found["queued"],
        &json!(0),
        "a delayed run waits at no gate yet",
    )?;
    crate::execution::cancel(w, &delayed[0])?;
    let count = list["pagination"]["count"].as_u64().ok_or("count")?;
    ensure_eq(count as usize, data.len(), "count")?;
    let fair = data
        .iter()
        .find(|q| q["name"] == FAIR_QUEUE)
        .ok_or("the fair queue")?;
    ensure_eq(
        &fair["totalConcurrencyLimit"],
        &json!(2),
        "declared total cap",
    )?;
    ensure_eq(&fair["concurrencyLimit"], &Value::Null, "no limit per key")?;
    // One per page: the second page is the second name, and the page count is the count.
    let second = get(&w.url("/api/v1/queues?page=2&perPage=1"), Some(DEV_KEY)).json();
    ensure_eq(&second["data"][0]["name"], &data[1]["name"], "page 2 of 1")?;
    ensure_eq(&second["pagination"]["totalPages"], &json!(count), "pages")?;
    ensure_eq(
        &second["pagination"]["currentPage"],
        &json!(2),
        "current page",
    )?;
    // Retrieved by id, the same queue.
    let id = fair["id"].as_str().ok_or("an id")?;
    let by_id = get(
        &w.url(&format!("/api/v1/queues/{id}?type=id")),
        Some(DEV_KEY),
    );
    ensure_eq(by_id.status, 200, &by_id.body)?;
    ensure_eq(&by_id.json()["name"], &json!(FAIR_QUEUE), "by id")
}

fn a_paused_queue_holds_new_runs_lets_the_running_one_finish_and_drains_on_resume(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let long = trigger_task(w, PAUSED, items(1, json!({"sleepMs": 2000}), json!({})))?;
    eventually(Duration::from_secs(20), "the long run to start", || {
        (!server.calls_of(&long[0]).is_empty()).then_some(())
    });
    let paused = steer(
        w,
        PAUSED,
        "pause",
        json!({"type": "task", "action": "pause"}),
    )?;
    ensure_eq(&paused["paused"], &json!(true), "paused")?;
    let held = trigger_task(w, PAUSED, items(5, json!({}), json!({})))?;
    wait_status(w, &long[0], "COMPLETED", Duration::from_secs(20));
    thread::sleep(Duration::from_secs(2));
    for run in &held {
        ensure(
            server.calls_of(run).is_empty(),
            format!("{run} was called while paused"),
        )?;
        ensure_eq(
            crate::execution::run(w, run)["status"].as_str(),
            Some("QUEUED"),
            "a held run",
        )?;
    }
    let seen = retrieve(w, PAUSED, "task")?;
    ensure_eq(
        (&seen["paused"], &seen["queued"], &seen["running"]),
        (&json!(true), &json!(5), &json!(0)),
        "paused, 5 waiting, none running",
    )?;
    let resumed = steer(
        w,
        PAUSED,
        "pause",
        json!({"type": "task", "action": "resume"}),
    )?;
    ensure_eq(&resumed["paused"], &json!(false), "resumed")?;
    wait_all(w, &held, "COMPLETED", Duration::from_secs(30));
    ensure_eq(
        &retrieve(w, PAUSED, "task")?["queued"],
        &json!(0),
        "drained",
    )
}

fn an_override_from_1_to_5_runs_5_at_once_and_reset_returns_to_1(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let queue = format!("task/{OVERRIDDEN}");
    let before = retrieve(w, OVERRIDDEN, "task")?;
    ensure_eq(&before["concurrencyLimit"], &json!(1), "the declared limit")?;
    let raised = steer(
        w,
        &queue,
        "concurrency/override",
        json!({"type": "custom", "concurrencyLimit": 5}),
    )?;
    ensure_eq(
        (
            &raised["concurrencyLimit"],
            &raised["concurrency"]["base"],
            &raised["concurrency"]["override"],
        ),
        (&json!(5), &json!(1), &json!(5)),
        "current, base, override",
    )?;
    ensure(
        raised["concurrency"]["overriddenAt"].is_string(),
        "overriddenAt",
    )?;
    let wide = trigger_task(
        w,
        OVERRIDDEN,
        items(10, json!({"sleepMs": 1000}), json!({"concurrencyKey": "a"})),
    )?;
    wait_all(w, &wide, "COMPLETED", Duration::from_secs(60));
    ensure_eq(
        server.max_in_flight(&queue, Some("a")),
        5,
        "in flight at once under the override",
    )?;
    let reset = steer(w, &queue, "concurrency/reset", json!({"type": "custom"}))?;
    ensure_eq(
        (
            &reset["concurrencyLimit"],
            &reset["concurrency"]["override"],
        ),
        (&json!(1), &Value::Null),
        "back to the base",
    )?;
    let narrow = trigger_task(
        w,
        OVERRIDDEN,
        items(4, json!({"sleepMs": 300}), json!({"concurrencyKey": "b"})),
    )?;
    wait_all(w, &narrow, "COMPLETED", Duration::from_secs(60));
    ensure_eq(
        server.max_in_flight(&queue, Some("b")),
        1,
        "in flight at once after the reset",
    )
}

fn runs_of_priority_60_start_before_20_runs_triggered_earlier(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let blocker = trigger_task(w, PRIORITY, items(1, json!({"sleepMs": 3000}), json!({})))?;
    eventually(Duration::from_secs(20), "the blocker to start", || {
        (!server.calls_of(&blocker[0]).is_empty()).then_some(())
    });
    let plain = trigger_task(w, PRIORITY, items(20, json!({}), json!({})))?;
    let urgent = trigger_task(w, PRIORITY, items(2, json!({}), json!({"priority": 60})))?;
    let mut all = plain.clone();
    all.extend(urgent.iter().cloned());
    wait_all(w, &all, "COMPLETED", Duration::from_secs(60));
    let starts = first_starts(server, &all);
    let first_plain = plain.iter().map(|r| starts[r]).min().ok_or("plain runs")?;
    for run in &urgent {
        ensure(
            starts[run] <= first_plain,
            format!(
                "{run} (priority 60) started at {}, a plain run at {first_plain}",
                starts[run]
            ),
        )?;
    }
    Ok(())
}

fn under_a_total_cap_of_2_a_late_key_with_5_runs_starts_before_the_20th_of_200(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let a_options = json!({"concurrencyKey": "a"});
    let mut a = trigger_task(
        w,
        FAIR,
        items(100, json!({"sleepMs": 100}), a_options.clone()),
    )?;
    a.extend(trigger_task(
        w,
        FAIR,
        items(100, json!({"sleepMs": 100}), a_options),
    )?);
    let b = trigger_task(
        w,
        FAIR,
        items(5, json!({"sleepMs": 100}), json!({"concurrencyKey": "b"})),
    )?;
    let mut all = a.clone();
    all.extend(b.iter().cloned());
    wait_all(w, &all, "COMPLETED", Duration::from_secs(120));
    ensure(
        server.max_in_flight(FAIR_QUEUE, None) <= 2,
        format!(
            "the total cap: {} at once",
            server.max_in_flight(FAIR_QUEUE, None)
        ),
    )?;
    let starts = first_starts(server, &all);
    let mut a_starts: Vec<u64> = a.iter().map(|r| starts[r]).collect();
    a_starts.sort_unstable();
    let b_last = b.iter().map(|r| starts[r]).max().ok_or("b's runs")?;
    ensure(
        b_last <= a_starts[19],
        format!(
            "b's last run started at {b_last}, a's 20th at {}",
            a_starts[19]
        ),
    )
}

fn unknown_queues_are_404_and_bad_bodies_are_400_naming_the_field(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    for url in [
        queue_url(w, "no-such-queue", "custom", ""),
        queue_url(w, "no-such-task", "task", ""),
        w.url("/api/v1/queues/queue_zz?type=id"),
    ] {
        let answer = get(&url, Some(DEV_KEY));
        ensure_eq(
            (answer.status, answer.error()),
            (404, "Queue not found".to_owned()),
            &url,
        )?;
    }
    let pause = queue_url(w, PAUSED, "", "pause");
    let missing = post(
        &queue_url(w, "no-such-queue", "", "pause"),
        r#"{"type":"custom","action":"pause"}"#,
    );
    ensure_eq(missing.status, 404, "pausing an unknown queue")?;
    for (url, body, message) in [
        (
            &pause,
            r#"{"type":"task","action":"stop"}"#,
            "Validation error: action: expected pause or resume",
        ),
        (
            &pause,
            r#"{"type":"task"}"#,
            "Validation error: action: required",
        ),
        (&pause, "", "Request body is empty"),
        (
            &queue_url(w, OVERRIDDEN, "", "concurrency/override"),
            r#"{"type":"task","concurrencyLimit":-1}"#,
            "Validation error: concurrencyLimit: expected an integer from 0 to 100000",
        ),
    ] {
        let answer = post(url, body);
        ensure_eq(
            (answer.status, answer.error()),
            (400, message.to_owned()),
            body,
        )?;
    }
    let bad_type = get(&queue_url(w, PAUSED, "queue", ""), Some(DEV_KEY));
    ensure_eq(bad_type.status, 400, "type=queue")?;
    let unkeyed = get(&w.url("/api/v1/queues"), None);
    ensure_eq(unkeyed.status, 401, "no key")
}

fn a_throttle_of_5_a_second_spreads_30_runs_of_a_key_over_5_seconds(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let keyed = |key: &str| json!({"concurrencyKey": key});
    let a = trigger_task(w, THROTTLED, items(30, json!({}), keyed("a")))?;
    // Another key has its own rate: its runs are not held behind a's.
    let b = trigger_task(w, THROTTLED, items(3, json!({}), keyed("b")))?;
    let mut all = a.clone();
    all.extend(b.iter().cloned());
    wait_all(w, &all, "COMPLETED", Duration::from_secs(60));
    let starts = first_starts(server, &all);
    let mut a_starts: Vec<u64> = a.iter().map(|r| starts[r]).collect();
    a_starts.sort_unstable();
    let spread = a_starts[29] - a_starts[0];
    ensure(
        spread >= 5000,
        format!("30 runs at 5 a second started within {spread} ms"),
    )?;
    // The gate admits a key's runs at least 200 ms apart (its unit and property tests hold
    // it to that exactly), so 5 of them span 800 ms: no 5 calls within 500 ms.
    let (most, from) = most_started_within(&a_starts, 500);
    ensure(
        most < 5,
        format!("{most} runs started within 500 ms of {from}"),
    )?;
    let b_last = b.iter().map(|r| starts[r]).max().ok_or("b's runs")?;
    ensure(
        b_last < a_starts[10],
        format!(
            "key b's runs waited behind key a's: {b_last} ≥ {}",
            a_starts[10]
        ),
    )
}

/// `POST /api/v1/tasks/{task}/trigger`: (id, isCached).
fn trigger_one(w: &Worker, task: &str, body: Value) -> Result<(String, bool), Failed> {
    let answer = post(
        &w.url(&format!("/api/v1/tasks/{task}/trigger")),
        &body.to_string(),
    );
    ensure_eq(
        answer.status,
        200,
        &format!("trigger {task}: {}", answer.body),
    )?;
    let json = answer.json();
    Ok((
        json["id"].as_str().ok_or("an id")?.to_owned(),
        json["isCached"].as_bool().ok_or("isCached")?,
    ))
}

/// The payload of a task call (the recorded request body's `payload`).
fn called_payload(server: &TaskServer, run: &str) -> Result<Value, Failed> {
    let calls = server.calls_of(run);
    let call = calls.first().ok_or("no call")?;
    let body: Value = serde_json::from_slice(&call.body)?;
    Ok(body["payload"].clone())
}

fn debounced_triggers_execute_once_with_the_first_or_the_last_payload(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    for (mode, kept) in [("leading", 1), ("trailing", 3)] {
        let key = crate::unique(mode);
        let debounce = json!({"key": key, "delay": "2s", "mode": mode});
        let mut ids = Vec::new();
        for n in 1..=3 {
            let body = json!({"payload": {"n": n}, "options": {"debounce": debounce, "tags": [format!("n{n}")]}});
            let (id, cached) = trigger_one(w, DEBOUNCED, body)?;
            ensure_eq(cached, n > 1, "a later trigger answers the key's run")?;
            ids.push(id);
            thread::sleep(Duration::from_millis(300));
        }
        ensure(
            ids.iter().all(|id| *id == ids[0]),
            format!("one run for the key: {ids:?}"),
        )?;
        let delayed = crate::execution::run(w, &ids[0]);
        ensure_eq(
            delayed["status"].as_str(),
            Some("DELAYED"),
            "waiting out its delay",
        )?;
        let done = wait_status(w, &ids[0], "COMPLETED", Duration::from_secs(30));
        ensure_eq(server.calls_of(&ids[0]).len(), 1, "executed once")?;
        ensure_eq(called_payload(server, &ids[0])?, json!({"n": kept}), mode)?;
        ensure_eq(
            &done["tags"],
            &json!([format!("n{kept}")]),
            "the tags of that trigger",
        )?;
    }
    // An idempotency key is checked first: its run answers, debounce or not.
    let idem = crate::unique("idem");
    let (first, _) = trigger_one(
        w,
        DEBOUNCED,
        json!({"payload": {}, "options": {"idempotencyKey": idem}}),
    )?;
    let with_debounce = json!({"payload": {}, "options": {"idempotencyKey": idem, "debounce": {"key": idem, "delay": "1s"}}});
    ensure_eq(
        trigger_one(w, DEBOUNCED, with_debounce)?,
        (first, true),
        "the idempotent run",
    )
}

fn a_busy_debounce_key_runs_by_its_max_delay_and_then_makes_a_new_run(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let key = crate::unique("busy");
    let debounce = json!({"key": key, "delay": "2s", "maxDelay": "4s"});
    let started = crate::task_server::epoch_ms();
    let mut ids = Vec::new();
    // A trigger every 500 ms for 8 s: the delay alone would never end.
    while crate::task_server::epoch_ms() - started < 8000 {
        let (id, _) = trigger_one(
            w,
            DEBOUNCED,
            json!({"payload": {}, "options": {"debounce": debounce}}),
        )?;
        ids.push(id);
        thread::sleep(Duration::from_millis(500));
    }
    let first = ids[0].clone();
    let done = wait_status(w, &first, "COMPLETED", Duration::from_secs(30));
    let call = server
        .calls_of(&first)
        .first()
        .ok_or("the first run's call")?
        .started_ms;
    ensure(
        call - started < 7000,
        format!(
            "the first run started {} ms after its first trigger: its maxDelay is 4 s",
            call - started
        ),
    )?;
    ensure(done["status"] == "COMPLETED", "completed")?;
    let later: std::collections::HashSet<&String> = ids.iter().filter(|id| **id != first).collect();
    ensure(
        !later.is_empty() && later.len() <= 2,
        format!("triggers after it started made a new run for the key: {later:?}"),
    )
}

fn a_pause_and_an_override_hold_across_a_kill_and_restart(
    server: &TaskServer,
) -> Result<(), Failed> {
    let mut w = Worker::start("queues-restart", |c| configure(c, server));
    let overridden = steer(
        &w,
        OVERRIDDEN,
        "concurrency/override",
        json!({"type": "task", "concurrencyLimit": 3}),
    )?;
    ensure_eq(&overridden["concurrencyLimit"], &json!(3), "overridden")?;
    steer(
        &w,
        PAUSED,
        "pause",
        json!({"type": "task", "action": "pause"}),
    )?;
    let held = trigger_task(&w, PAUSED, items(3, json!({}), json!({})))?;
    thread::sleep(Duration::from_millis(500));
    w.kill_hard();
    w.restart();
    thread::sleep(Duration::from_secs(2));
    for run in &held {
        ensure(
            server.calls_of(run).is_empty(),
            format!("{run} ran while paused"),
        )?;
    }
    let paused = retrieve(&w, PAUSED, "task")?;
    ensure_eq(
        (&paused["paused"], &paused["queued"]),
        (&json!(true), &json!(3)),
        "still paused after the restart, its runs waiting",
    )?;
    let limit = retrieve(&w, OVERRIDDEN, "task")?;
    ensure_eq(
        (
            &limit["concurrencyLimit"],
            &limit["concurrency"]["override"],
        ),
        (&json!(3), &json!(3)),
        "still overridden after the restart",
    )?;
    steer(
        &w,
        PAUSED,
        "pause",
        json!({"type": "task", "action": "resume"}),
    )?;
    wait_all(&w, &held, "COMPLETED", Duration::from_secs(60));
    Ok(())
}
