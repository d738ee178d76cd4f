//! Shards (docs/ARCHITECTURE.md, "Shards"): a task's runs over several stores
//! (`shards`), a queue's concurrency keys over several gates (`gateShards`), both changed
//! on a live deployment; and a worker whose queue never delivers.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::thread;
use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::crash::{outbox_rows, Standalone};
use crate::execution::{cancel, declare_endpoint_task, run, trigger_task, wait_status, Case};
use crate::harness::{get, rename_service, request, Worker, DEV_KEY};
use crate::task_server::TaskServer;
use crate::two_step;
use crate::{auth, ensure, ensure_eq, unique};

/// A task of four stores.
const SHARDED: &str = "sharded";
/// A task whose queue (`GATED_QUEUE`, limit 2 per key) has four gates.
const GATED: &str = "gated";
const GATED_QUEUE: &str = "gated";
/// A task whose queue has four gates and no declared limit: triggers set it.
const FREE: &str = "gated-free";
const FREE_QUEUE: &str = "gated-free";
/// The standalone cases' tasks and queue (their calls reach the same task server).
const LIVE: &str = "live";
const LIVE_GATED: &str = "live-gated";
const LIVE_QUEUE: &str = "live-gated";

/// Declares `task` on the test endpoint with `shards` stores.
fn declare_sharded(config: &mut toml::Table, server: &TaskServer, task: &str, shards: i64) {
    declare_endpoint_task(config, task, &server.url(), 3, 30);
    task_table(config, task).insert("shards".into(), shards.into());
}

/// Declares `task` on the test endpoint, its queue `queue` limited to 2 per key over
/// `gates` gates.
fn declare_gated(
    config: &mut toml::Table,
    server: &TaskServer,
    task: &str,
    queue: &str,
    gates: i64,
) {
    declare_queue(config, server, task, queue, gates, Some(2));
}

/// Declares `task` on the test endpoint, its queue `queue` over `gates` gates, limited to
/// `limit` per key if given.
fn declare_queue(
    config: &mut toml::Table,
    server: &TaskServer,
    task: &str,
    queue: &str,
    gates: i64,
    limit: Option<i64>,
) {
    declare_endpoint_task(config, task, &server.url(), 3, 30);
    let mut q = toml::Table::new();
    q.insert("name".into(), queue.into());
    if let Some(limit) = limit {
        q.insert("concurrencyLimit".into(), limit.into());
    }
    q.insert("gateShards".into(), gates.into());
    task_table(config, task).insert("queue".into(), toml::Value::Table(q));
}

fn task_table<'a>(config: &'a mut toml::Table, task: &str) -> &'a mut toml::Table {
    config["vars"]["TASKS"][task]
        .as_table_mut()
        .expect("a declared task")
}

pub fn configure(config: &mut toml::Table, server: &TaskServer) {
    declare_sharded(config, server, SHARDED, 4);
    declare_gated(config, server, GATED, GATED_QUEUE, 4);
    declare_queue(config, server, FREE, FREE_QUEUE, 4, None);
}

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        a_task_of_4_shards_takes_40_batches_each_run_readable_listed_once_and_cancellable,
        twenty_racing_requests_on_one_key_of_a_sharded_task_make_one_run,
        a_two_step_batch_of_a_sharded_task_keeps_its_keys_at_home,
        a_queue_of_4_gates_keeps_each_of_8_keys_to_its_limit,
        a_limit_one_trigger_sets_holds_at_every_gate_of_the_queue,
    ]
}

/// Cases that start workers of their own.
pub fn standalone_cases() -> Vec<(&'static str, Standalone)> {
    crate::cases![
        raising_shards_and_gate_shards_from_1_to_4_on_live_state_loses_nothing,
        a_queue_of_4_gates_keeps_its_keys_to_their_limit_across_a_kill_and_restart,
        delayed_and_retried_runs_execute_though_the_queue_never_delivers,
    ]
}

/// The route of a run id: the three characters after `run_`, naming its store.
fn route(id: &str) -> &str {
    &id[4..7]
}

/// Delayed items (nothing executes), tagged `tag`, keyed by `keys` (`None`: no key).
fn delayed_items(tag: &str, keys: &[Option<String>]) -> Vec<Value> {
    keys.iter()
        .map(|key| {
            let mut options = json!({"delay": "1h", "tags": [tag]});
            if let Some(key) = key {
                options["idempotencyKey"] = json!(key);
            }
            json!({"payload": {"n": 1}, "options": options})
        })
        .collect()
}

/// Every run of `task` tagged `tag`, from the list, page by page (5 at a time).
fn listed(w: &Worker, task: &str, tag: &str) -> Result<Vec<String>, Failed> {
    let mut ids = Vec::new();
    let mut after = String::new();
    loop {
        let url = format!(
            "/api/v1/runs?filter[taskIdentifier]={task}&filter[tag]={tag}&page[size]=5{after}"
        );
        let answer = get(&w.url(&url), Some(DEV_KEY));
        ensure_eq(answer.status, 200, &format!("GET {url}: {}", answer.body))?;
        let page = answer.json();
        for run in page["data"].as_array().ok_or("data")? {
            ids.push(run["id"].as_str().ok_or("an id")?.to_owned());
        }
        match page["pagination"]["next"].as_str() {
            Some(next) => after = format!("&page[after]={next}"),
            None => return Ok(ids),
        }
    }
}

/// Each id listed once, and the list is exactly `runs`.
fn listed_once(w: &Worker, task: &str, tag: &str, runs: &HashSet<String>) -> Result<(), Failed> {
    let ids = listed(w, task, tag)?;
    let distinct: HashSet<String> = ids.iter().cloned().collect();
    ensure_eq(distinct.len(), ids.len(), "runs listed more than once")?;
    ensure(
        &distinct == runs,
        format!(
            "the list is every run: {} listed, {} made, missing {:?}",
            distinct.len(),
            runs.len(),
            runs.difference(&distinct).collect::<Vec<_>>()
        ),
    )
}

fn a_task_of_4_shards_takes_40_batches_each_run_readable_listed_once_and_cancellable(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("shards");
    let key = |n: usize| Some(format!("{tag}-key-{}", n % 10));
    let mut keyed_batches = 0;
    let (mut keyed, mut unkeyed) = (HashMap::new(), HashSet::new());
    for batch in 0..40 {
        if batch % 2 == 0 {
            let runs = trigger_task(
                w,
                SHARDED,
                delayed_items(&tag, &[None, None, None, None, None]),
            )?;
            unkeyed.extend(runs);
        } else {
            // Ten keys over twenty batches: each key comes back in later batches.
            let keys: Vec<Option<String>> = (0..5).map(|i| key(keyed_batches * 5 + i)).collect();
            keyed_batches += 1;
            let runs = trigger_task(w, SHARDED, delayed_items(&tag, &keys))?;
            for (key, run) in keys.into_iter().zip(runs) {
                let first = keyed.entry(key.unwrap()).or_insert_with(|| run.clone());
                ensure_eq(&run, first, "a key's run in a later batch")?;
            }
        }
    }
    ensure_eq(keyed.len(), 10, "runs of the ten keys")?;
    ensure_eq(unkeyed.len(), 100, "runs without keys")?;
    let home: HashSet<&str> = keyed.values().map(|id| route(id)).collect();
    ensure_eq(
        home.len(),
        1,
        "every keyed run lives in the task's home store",
    )?;
    let routes: HashSet<&str> = unkeyed.iter().map(|id| route(id)).collect();
    // Twenty batches over four stores all in one: 4 × 4^-20.
    ensure(
        (2..=4).contains(&routes.len()),
        format!("batches without keys spread over the shards: {routes:?}"),
    )?;

    let all: HashSet<String> = unkeyed.iter().chain(keyed.values()).cloned().collect();
    for id in &all {
        ensure_eq(
            run(w, id)["status"].clone(),
            json!("DELAYED"),
            &format!("{id} read"),
        )?;
    }
    listed_once(w, SHARDED, &tag, &all)?;
    // Every run is cancelled through its id, at whichever store holds it.
    for id in &all {
        cancel(w, id)?;
        ensure_eq(
            run(w, id)["status"].clone(),
            json!("CANCELED"),
            &format!("{id} cancelled"),
        )?;
    }
    Ok(())
}

fn twenty_racing_requests_on_one_key_of_a_sharded_task_make_one_run(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("race");
    let key = format!("{tag}-key");
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let (url, body) = (
                w.url(&format!("/api/v1/tasks/{SHARDED}/batch")),
                json!({"items": delayed_items(&tag, &[Some(key.clone())])}).to_string(),
            );
            thread::spawn(move || {
                let authorization = auth(DEV_KEY);
                request(
                    "POST",
                    &url,
                    &[("authorization", &authorization)],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    let mut runs = HashSet::new();
    for racer in racers {
        let answer = racer.join().expect("a racing request");
        ensure_eq(
            answer.status,
            200,
            &format!("a racing trigger ({})", answer.body),
        )?;
        runs.insert(
            answer.json()["runs"][0]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    ensure_eq(runs.len(), 1, "runs made by twenty requests with one key")?;
    listed_once(w, SHARDED, &tag, &runs)
}

fn a_two_step_batch_of_a_sharded_task_keeps_its_keys_at_home(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("two-step");
    let key = |i: u32| format!("{tag}-key-{i}");
    let created = two_step::create(w, json!({"runCount": 20}));
    ensure_eq(created.status, 202, &format!("create ({})", created.body))?;
    let id = created.json()["id"].as_str().unwrap_or_default().to_owned();
    let item = |i: u32, keyed: bool| {
        let mut options = json!({"delay": "1h", "tags": [tag]});
        if keyed {
            options["idempotencyKey"] = json!(key(i));
        }
        json!({"index": i, "task": SHARDED, "payload": {"n": i}, "options": options})
    };
    // Two streams: ten items without keys, then ten with.
    let keyless: Vec<Value> = (0..10).map(|i| item(i, false)).collect();
    let keyed: Vec<Value> = (10..20).map(|i| item(i, true)).collect();
    for (lines, accepted) in [(keyless, 10), (keyed, 10)] {
        let answer = two_step::stream(w, &id, &lines);
        ensure_eq(answer.status, 200, &format!("stream ({})", answer.body))?;
        ensure_eq(
            answer.json()["itemsAccepted"].clone(),
            json!(accepted),
            "items accepted",
        )?;
    }
    let runs: Vec<String> = two_step::batch_v2(w, &id)["runs"]
        .as_array()
        .ok_or("the batch's runs")?
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect();
    ensure_eq(runs.len(), 20, "runs of the batch")?;
    // The seed endpoint finds each key's run: both protocols commit keys at the home store.
    for i in [10, 15, 19] {
        let again = trigger_task(
            w,
            SHARDED,
            vec![
                json!({"payload": {"n": i}, "options": {"idempotencyKey": key(i), "delay": "1h"}}),
            ],
        )?;
        ensure_eq(
            &again[0],
            &runs[i as usize],
            &format!("the run of {}", key(i)),
        )?;
    }
    let homes: HashSet<&str> = runs[10..].iter().map(|id| route(id)).collect();
    ensure_eq(homes.len(), 1, "keyed items at one store")?;
    listed_once(w, SHARDED, &tag, &runs.iter().cloned().collect())
}

/// `per_key` runs of 300 ms for each of `keys` on `task`, tagged `tag`.
fn keyed_runs(
    w: &Worker,
    task: &str,
    keys: &[String],
    per_key: usize,
) -> Result<Vec<String>, Failed> {
    let items = keys
        .iter()
        .flat_map(|key| {
            (0..per_key).map(
                move |_| json!({"payload": {"sleepMs": 300}, "options": {"concurrencyKey": key}}),
            )
        })
        .collect();
    trigger_task(w, task, items)
}

/// Every key of `queue` reached its limit of 2 and never passed it.
fn each_key_at_two(tasks: &TaskServer, queue: &str, keys: &[String]) -> Result<(), Failed> {
    for key in keys {
        ensure_eq(
            tasks.max_in_flight(queue, Some(key)),
            2,
            &format!("{key}'s calls at once"),
        )?;
    }
    Ok(())
}

fn a_queue_of_4_gates_keeps_each_of_8_keys_to_its_limit(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let keys: Vec<String> = (0..8).map(|i| unique(&format!("tenant{i}"))).collect();
    let runs = keyed_runs(w, GATED, &keys, 4)?;
    for id in &runs {
        wait_status(w, id, "COMPLETED", Duration::from_secs(90));
        ensure_eq(tasks.calls_of(id).len(), 1, "calls of each run")?;
    }
    each_key_at_two(tasks, GATED_QUEUE, &keys)
}

fn a_limit_one_trigger_sets_holds_at_every_gate_of_the_queue(
    w: &Worker,
    tasks: &TaskServer,
) -> Result<(), Failed> {
    // tenant-0 and tenant-1 meet different gates (shards 0 and 3 of 4).
    let first = trigger_task(
        w,
        FREE,
        vec![
            json!({"payload": {"sleepMs": 10}, "options": {"concurrencyKey": "tenant-0", "queue": {"name": FREE_QUEUE, "concurrencyLimit": 1}}}),
        ],
    )?;
    wait_status(w, &first[0], "COMPLETED", Duration::from_secs(60));
    // Runs that set no limit, at another gate: the limit of 1 is the queue's there too.
    let runs = keyed_runs(w, FREE, &["tenant-1".to_owned()], 6)?;
    for id in &runs {
        wait_status(w, id, "COMPLETED", Duration::from_secs(60));
    }
    ensure_eq(
        tasks.max_in_flight(FREE_QUEUE, Some("tenant-1")),
        1,
        "tenant-1's calls at once",
    )
}

/// The gate objects a worker's storage holds.
fn gate_objects(state: &Path) -> Result<usize, Failed> {
    let mut count = 0;
    for entry in std::fs::read_dir(state.join("v3/do"))? {
        let dir = entry?.path();
        if dir.to_string_lossy().ends_with("-QueueGate") {
            for file in std::fs::read_dir(&dir)? {
                let name = file?.file_name().to_string_lossy().into_owned();
                count += usize::from(name.ends_with(".sqlite") && name != "metadata.sqlite");
            }
        }
    }
    Ok(count)
}

fn a_queue_of_4_gates_keeps_its_keys_to_their_limit_across_a_kill_and_restart(
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let queue = unique(LIVE_QUEUE);
    let mut w = Worker::start("gate-shards", |c| {
        declare_gated(c, tasks, LIVE_GATED, &queue, 4)
    });
    // Fixed keys: which gate each goes to is fixed too (these cover all four).
    let keys: Vec<String> = (0..8).map(|i| format!("tenant-{i}")).collect();
    let mut runs = keyed_runs(&w, LIVE_GATED, &keys, 4)?;
    thread::sleep(Duration::from_millis(700));
    w.kill_hard();
    w.restart();
    runs.extend(keyed_runs(&w, LIVE_GATED, &keys, 2)?);
    for id in &runs {
        // A lease lost with the kill ends after maxDuration (30 s) and its margin.
        wait_status(&w, id, "COMPLETED", Duration::from_secs(150));
    }
    each_key_at_two(tasks, &queue, &keys)?;
    ensure_eq(gate_objects(&w.state_dir())?, 4, "gates of the queue")
}

fn raising_shards_and_gate_shards_from_1_to_4_on_live_state_loses_nothing(
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("live");
    let queue = unique(LIVE_QUEUE);
    // One worker name before and after: object ids (and so their files) derive from it.
    let name = format!("trigger-edge-shards-live-{}", std::process::id());
    let configure = |shards: i64| {
        let (queue, name) = (queue.clone(), name.clone());
        move |c: &mut toml::Table| {
            let own = c["name"].as_str().unwrap_or_default().to_owned();
            c.insert("name".into(), name.clone().into());
            rename_service(c, &own, &name);
            declare_sharded(c, tasks, LIVE, shards);
            declare_gated(c, tasks, LIVE_GATED, &queue, shards);
        }
    };
    let mut before = Worker::start("shards-before", configure(1));
    let keys: Vec<Option<String>> = (0..5).map(|i| Some(format!("{tag}-key-{i}"))).collect();
    let held = trigger_task(&before, LIVE, delayed_items(&tag, &keys))?;
    let plain = trigger_task(&before, LIVE, delayed_items(&tag, &[None, None, None]))?;
    // Runs waiting at the one gate when the deployment changes, and runs due later.
    let tenants: Vec<String> = (0..8).map(|i| format!("tenant-{i}")).collect();
    let mut executing = keyed_runs(&before, LIVE_GATED, &tenants, 3)?;
    let later = trigger_task(
        &before,
        LIVE_GATED,
        vec![
            json!({"payload": {"sleepMs": 10}, "options": {"delay": "4s", "concurrencyKey": "tenant-3"}}),
        ],
    )?;
    executing.extend(later);
    before.kill_hard();

    let after = Worker::start_on_state("shards-after", &before.state_dir(), configure(4));
    let again = trigger_task(&after, LIVE, delayed_items(&tag, &keys))?;
    ensure_eq(&again, &held, "keys held before still name their runs")?;
    let mut spread = HashSet::new();
    for _ in 0..12 {
        spread.extend(trigger_task(&after, LIVE, delayed_items(&tag, &[None]))?);
    }
    let routes: HashSet<&str> = spread.iter().map(|id| route(id)).collect();
    ensure(
        routes.len() >= 2,
        format!("new runs spread over the shards: {routes:?}"),
    )?;
    let all: HashSet<String> = held.iter().chain(&plain).chain(&spread).cloned().collect();
    for id in held.iter().chain(&plain) {
        ensure_eq(
            run(&after, id)["status"].clone(),
            json!("DELAYED"),
            &format!("{id} read after"),
        )?;
    }
    listed_once(&after, LIVE, &tag, &all)?;
    executing.extend(keyed_runs(&after, LIVE_GATED, &tenants, 2)?);
    for id in &executing {
        wait_status(&after, id, "COMPLETED", Duration::from_secs(150));
        ensure(!tasks.calls_of(id).is_empty(), format!("{id} was called"))?;
    }
    Ok(())
}

fn delayed_and_retried_runs_execute_though_the_queue_never_delivers(
    tasks: &TaskServer,
) -> Result<(), Failed> {
    // No consumer: what the store sends to the queue is never delivered.
    let w = Worker::start("queue-less", |c| {
        c["queues"]
            .as_table_mut()
            .expect("[queues]")
            .remove("consumers");
        declare_endpoint_task(c, LIVE, &tasks.url(), 3, 30);
    });
    let runs = trigger_task(
        &w,
        LIVE,
        vec![
            json!({"payload": {"sleepMs": 10}, "options": {"delay": "1s"}}),
            json!({"payload": {"failTimes": 1}}),
            json!({"payload": {"sleepMs": 10}}),
        ],
    )?;
    // The delayed run and the retry are offered by their store's alarm when due, not by
    // the queue: well before the 60 s after which an undelivered row is offered again.
    for id in &runs {
        wait_status(&w, id, "COMPLETED", Duration::from_secs(30));
    }
    ensure_eq(
        tasks.calls_of(&runs[0]).len(),
        1,
        "calls of the delayed run",
    )?;
    ensure_eq(
        tasks.calls_of(&runs[1]).len(),
        2,
        "calls of the retried run",
    )?;
    // The trigger's own row went to the queue, which never acknowledges it: the store
    // offers it again after 60 s (its run started already) and it leaves the outbox.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while outbox_rows(&w)? > 0 {
        ensure(
            std::time::Instant::now() < deadline,
            "rows left in the outbox after 120 s",
        )?;
        thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}
