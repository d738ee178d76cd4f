//! Faults: `wrangler dev` killed with SIGKILL (wrangler, workerd and all) in the middle of
//! the work and started again on the same `--persist-to` storage.
//!
//! - Crash without loss: batches keep arriving while the worker is killed during
//!   acceptance and again during dispatch. Every run ever answered with a 200 must exist
//!   and reach a final status, no attempt may reach the task endpoint twice, and the
//!   stores' outboxes must end empty (read straight from their SQLite files).
//! - Concurrency under stress: 500 runs over 5 queues with small limits and 3 keys each,
//!   on an endpoint that sometimes fails and sometimes answers slowly, with a kill in the
//!   middle: the calls in flight never exceed a limit, and every run ends.
//!
//! Each case starts its own worker, so the kills touch nothing else.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::harness::{get, request, Worker, DEV_KEY};
use crate::task_server::{most_started_within, TaskServer};
use crate::{auth, ensure, ensure_eq, unique};

pub type Standalone = fn(&TaskServer) -> Result<(), Failed>;

pub fn cases() -> Vec<(&'static str, Standalone)> {
    crate::cases![
        every_run_answered_200_survives_kills_during_accept_and_dispatch,
        limits_hold_under_stress_failures_slow_answers_and_a_kill,
    ]
}

const TASK: &str = "crash-task";
/// A task on a queue with a total cap of 2 over its keys and a throttle per key of 5 a
/// second with a burst of 1.
const CAPPED: &str = "crash-capped";
const CAPPED_QUEUE: &str = "stress-capped";
const FINAL: [&str; 7] = [
    "COMPLETED",
    "CANCELED",
    "FAILED",
    "CRASHED",
    "SYSTEM_FAILURE",
    "EXPIRED",
    "TIMED_OUT",
];

/// A worker whose task calls the test endpoint: short attempts (a lost attempt's lease
/// ends 33 s after it started), enough attempts to survive two kills, quick retries.
fn start_worker(name: &str, tasks: &TaskServer) -> Worker {
    let url = tasks.url();
    Worker::start(name, move |config| {
        crate::execution::declare_endpoint_task(config, TASK, &url, 5, 3);
        crate::execution::declare_endpoint_task(config, CAPPED, &url, 5, 3);
        config["vars"]["TASKS"][CAPPED]
            .as_table_mut()
            .expect("declared")
            .insert(
                "queue".into(),
                toml::Value::Table(toml::toml! {
                    name = "stress-capped"
                    totalConcurrencyLimit = 2
                    throttle = { limit = 5, period = "1s", burst = 1 }
                }),
            );
    })
}

/// Triggers `items`; the run ids when the answer is a 200, `None` otherwise (a refused
/// connection while the worker is down, or any other answer).
fn trigger(base: &str, items: &[Value]) -> Option<Vec<String>> {
    trigger_with_key(base, items, None).ok()
}

/// Triggers `items` as a client that retries would: with a batch key, sent again (up to
/// three times in all) when the answer is a 503, which wrangler dev's proxy gives when its
/// own call to the worker fails under load. The key makes a retry replay, never run twice.
fn trigger_retrying(base: &str, items: &[Value]) -> Option<Vec<String>> {
    trigger_task_retrying(base, TASK, items)
}

fn trigger_task_retrying(base: &str, task: &str, items: &[Value]) -> Option<Vec<String>> {
    let key = unique("stress-batch");
    for attempt in 1..=3 {
        match trigger_task_with_key(base, task, items, Some(&key)) {
            Ok(runs) => return Some(runs),
            Err(503) if attempt < 3 => thread::sleep(Duration::from_millis(300 * attempt)),
            Err(_) => return None,
        }
    }
    None
}

/// The run ids of a 200, else the answer's status.
fn trigger_with_key(base: &str, items: &[Value], key: Option<&str>) -> Result<Vec<String>, u16> {
    trigger_task_with_key(base, TASK, items, key)
}

fn trigger_task_with_key(
    base: &str,
    task: &str,
    items: &[Value],
    key: Option<&str>,
) -> Result<Vec<String>, u16> {
    let authorization = auth(DEV_KEY);
    let mut headers = vec![
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend(key.map(|k| ("idempotency-key", k)));
    let answer = request(
        "POST",
        &format!("{base}/api/v1/tasks/{task}/batch"),
        &headers,
        json!({ "items": items }).to_string().as_bytes(),
    );
    if answer.status != 200 {
        if answer.status == 503 {
            eprintln!("a batch answered 503: {}", answer.body);
        }
        return Err(answer.status);
    }
    Ok(answer.json()["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Waits until every run in `ids` has a final status; returns the statuses.
fn wait_final(
    w: &Worker,
    ids: &[String],
    limit: Duration,
) -> Result<HashMap<String, String>, Failed> {
    let deadline = Instant::now() + limit;
    let mut statuses: HashMap<String, String> = HashMap::new();
    loop {
        for id in ids {
            if statuses
                .get(id)
                .is_some_and(|s| FINAL.contains(&s.as_str()))
            {
                continue;
            }
            let answer = get(&w.url(&format!("/api/v3/runs/{id}")), Some(DEV_KEY));
            let status = match answer.status {
                200 => answer.json()["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                404 => return Err(format!("{id} was answered with a 200 and is gone").into()),
                other => format!("HTTP {other}"),
            };
            statuses.insert(id.clone(), status);
        }
        let open: Vec<_> = statuses
            .iter()
            .filter(|(_, s)| !FINAL.contains(&s.as_str()))
            .collect();
        if open.is_empty() {
            return Ok(statuses);
        }
        if Instant::now() > deadline {
            let sample: Vec<_> = open.iter().take(5).collect();
            return Err(format!(
                "{} runs never reached a final status, e.g. {sample:?}",
                open.len()
            )
            .into());
        }
        thread::sleep(Duration::from_millis(1000));
    }
}

/// No (run, attempt) reached the endpoint twice.
fn no_attempt_twice(tasks: &TaskServer, ids: &HashSet<&String>) -> Result<usize, Failed> {
    let mut seen = HashSet::new();
    let mut calls = 0;
    for call in tasks
        .all_calls()
        .into_iter()
        .filter(|c| ids.contains(&c.run_id))
    {
        calls += 1;
        ensure(
            seen.insert((call.run_id.clone(), call.attempt)),
            format!(
                "{} attempt {} reached the endpoint twice",
                call.run_id, call.attempt
            ),
        )?;
    }
    Ok(calls)
}

/// Rows left in the outboxes of every run store, read from their SQLite files.
pub fn outbox_rows(w: &Worker) -> Result<u64, Failed> {
    let script = r#"
import glob, sqlite3, sys
total = 0
for path in glob.glob(sys.argv[1] + "/v3/do/*-RunStore/*.sqlite"):
    db = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
    try:
        total += db.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    except sqlite3.OperationalError:
        pass  # a store that never held a run
print(total)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(w.state_dir())
        .output()?;
    ensure(
        out.status.success(),
        format!(
            "reading the outboxes: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn every_run_answered_200_survives_kills_during_accept_and_dispatch(
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let mut w = start_worker("crash", tasks);
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let drivers: Vec<_> = (0..2)
        .map(|driver| {
            let (base, accepted, stop) = (w.base.clone(), accepted.clone(), stop.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let items: Vec<Value> = (0..10)
                        .map(|i| json!({"payload": {"sleepMs": 20 + (n * 7 + i * 13 + driver * 5) % 180}}))
                        .collect();
                    match trigger(&base, &items) {
                        Some(ids) => accepted.lock().unwrap().extend(ids),
                        None => thread::sleep(Duration::from_millis(100)),
                    }
                    n += 1;
                    thread::sleep(Duration::from_millis(40));
                }
            })
        })
        .collect();

    // Killed while batches are being accepted...
    thread::sleep(Duration::from_secs(2));
    w.kill_hard();
    let at_first_kill = accepted.lock().unwrap().len();
    w.restart();
    // ... and again while the runs accepted so far are being dispatched and executed.
    thread::sleep(Duration::from_secs(3));
    w.kill_hard();
    let at_second_kill = accepted.lock().unwrap().len();
    w.restart();
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for driver in drivers {
        driver.join().expect("a driver thread");
    }
    let ids = accepted.lock().unwrap().clone();
    ensure(
        at_first_kill > 0 && at_second_kill > at_first_kill && ids.len() > at_second_kill,
        format!("batches were accepted before, between and after the kills ({at_first_kill}, {at_second_kill}, {})", ids.len()),
    )?;

    // Lost queue messages come back after the redelivery delay (60 s), lost attempts
    // after their lease (33 s).
    let statuses = wait_final(&w, &ids, Duration::from_secs(240))?;
    let unique_ids: HashSet<&String> = ids.iter().collect();
    ensure_eq(unique_ids.len(), ids.len(), "distinct run ids answered")?;
    let completed = statuses.values().filter(|s| *s == "COMPLETED").count();
    ensure(
        completed * 10 >= ids.len() * 9,
        format!(
            "most runs complete: {completed} of {} ({statuses:?})",
            ids.len()
        ),
    )?;
    let calls = no_attempt_twice(tasks, &unique_ids)?;
    ensure(
        calls >= completed,
        "every completed run reached the endpoint",
    )?;
    let mut rows = outbox_rows(&w)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while rows > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_secs(2));
        rows = outbox_rows(&w)?;
    }
    ensure_eq(rows, 0, "rows left in the outboxes")?;
    println!(
        "crash: {} runs answered 200 (kills at {at_first_kill} and {at_second_kill}), {completed} completed, {calls} calls, no attempt twice, outboxes empty",
        ids.len()
    );
    Ok(())
}

fn limits_hold_under_stress_failures_slow_answers_and_a_kill(
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let mut w = start_worker("stress", tasks);
    let queues: Vec<(String, u64)> = [1, 2, 3, 2, 1]
        .into_iter()
        .map(|limit| (unique(&format!("stress-limit-{limit}")), limit))
        .collect();
    let keys = ["key-a", "key-b", "key-c"];
    let items: Vec<Value> = (0..500u64)
        .map(|i| {
            let (queue, limit) = &queues[(i % 5) as usize];
            let key = keys[((i / 5) % 3) as usize];
            let payload = match i % 10 {
                0 | 1 => json!({"failTimes": 1, "sleepMs": 10}),
                2 | 3 => json!({"sleepMs": 800 + (i * 37) % 700}),
                _ => json!({"sleepMs": 10 + (i * 13) % 90}),
            };
            json!({"payload": payload, "options": {
                "queue": {"name": queue, "concurrencyLimit": limit},
                "concurrencyKey": key,
            }})
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in items.chunks(100) {
        ids.extend(trigger_retrying(&w.base, chunk).ok_or("a stress batch was refused")?);
    }
    // 60 runs on the capped, throttled queue, over 3 keys, some failing once.
    let capped_items: Vec<Value> = (0..60u64)
        .map(|i| {
            let payload = match i % 6 {
                0 => json!({"failTimes": 1, "sleepMs": 10}),
                _ => json!({"sleepMs": 50 + (i * 17) % 150}),
            };
            json!({"payload": payload, "options": {"concurrencyKey": keys[(i % 3) as usize]}})
        })
        .collect();
    let capped = trigger_task_retrying(&w.base, CAPPED, &capped_items)
        .ok_or("the capped batch was refused")?;
    ids.extend(capped.iter().cloned());
    thread::sleep(Duration::from_secs(4));
    w.kill_hard();
    w.restart();
    let statuses = wait_final(&w, &ids, Duration::from_secs(300))?;
    for (queue, limit) in &queues {
        for key in keys {
            let most = tasks.max_in_flight(queue, Some(key));
            ensure(
                most as u64 <= *limit && most > 0,
                format!("{queue} key {key}: {most} calls in flight at once, limit {limit}"),
            )?;
        }
    }
    let most = tasks.max_in_flight(CAPPED_QUEUE, None);
    ensure(
        (1..=2).contains(&most),
        format!("{CAPPED_QUEUE}: {most} calls in flight at once, total cap 2"),
    )?;
    throttle_held(tasks, &capped, 6)?;
    let unique_ids: HashSet<&String> = ids.iter().collect();
    let calls = no_attempt_twice(tasks, &unique_ids)?;
    let completed = statuses.values().filter(|s| *s == "COMPLETED").count();
    println!(
        "stress: 560 runs, {completed} completed, {calls} calls, limits held on 15 (queue, key) pairs, a total cap and a throttle held"
    );
    Ok(())
}

/// No key of `runs` had more than `most` calls start within 500 ms, across retries and
/// the kill. A throttle of 5 a second with a burst of 1 admits 2 at once and the rest
/// 200 ms apart, so at most 4 within 500 ms; `most` leaves room for the calls' jitter.
fn throttle_held(tasks: &TaskServer, runs: &[String], most: usize) -> Result<(), Failed> {
    let mut by_key: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for run in runs {
        for call in tasks.calls_of(run) {
            let body: Value = serde_json::from_slice(&call.body)?;
            let key = body["concurrencyKey"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            by_key.entry(key).or_default().push(call.started_ms);
        }
    }
    for (key, starts) in by_key {
        let (within, from) = most_started_within(&starts, 500);
        ensure(
            within <= most,
            format!("key {key}: {within} calls started within 500 ms of {from}, throttle 5/s + 1"),
        )?;
    }
    Ok(())
}
