//! The count budget: fixed scenarios run on a worker of their own with metering on (under
//! Miniflare's API: `Worker::start_on_miniflare` says why), whose operations per run
//! (`GET /api/v1/meter`, counted inside the worker where each operation is made) must
//! stay within `bench/budget.json`. Counts are exact, not timings: a change
//! that adds a row written, an object request or a queue operation per run fails here,
//! and a change that saves some lowers the budget.
//!
//! Each scenario waits until its runs ended and the worker went quiet: nothing counted for
//! `QUIET` and every executor's backstop alarm (due 30 s after its jobs came) has run, so
//! the account holds everything the runs cost, late alarms included.
//!
//! The scenarios are counted on objects that already exist: a warm-up first sends each
//! scenario's task a few runs and waits until they are over, so that what an object does
//! once in its life (its schema steps, which read and write the schema's own tables) is
//! not counted as a cost per run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use serde_json::{json, Value};
use trigger_edge::domain::cost::{Account, PerRun};

use crate::execution::{declare_endpoint_task, Case};
use crate::harness::{get, request, Worker, DEV_KEY};
use crate::task_server::TaskServer;

/// The committed budget, per scenario.
const BUDGET: &str = "bench/budget.json";
/// How long nothing may be counted before a scenario is over.
const QUIET: Duration = Duration::from_secs(3);
/// How long after its last trigger a scenario is watched at least: past the executors'
/// backstop alarm (`BACKSTOP_MS`, 30 s), which every executor that took jobs runs once.
const SETTLE: Duration = Duration::from_secs(33);

const ACCEPT_ONLY: &str = "budget-accept";
const BATCHES: &str = "budget-batches";
const SINGLES: &str = "budget-singles";
const RETRIES: &str = "budget-retries";

pub fn configure(config: &mut toml::Table, server: &TaskServer) {
    config["vars"]
        .as_table_mut()
        .expect("[vars]")
        .insert("METERING".into(), "on".into());
    for task in [ACCEPT_ONLY, BATCHES, SINGLES, RETRIES] {
        declare_endpoint_task(config, task, &server.url(), 3, 30);
    }
}

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![operations_per_run_stay_within_the_committed_budget]
}

/// One scenario's work, and the runs it must end with.
struct Scenario {
    name: &'static str,
    /// Runs accepted, and how many of them reach COMPLETED.
    runs: u64,
    completed: u64,
    /// Sends this many runs, tagged.
    send: fn(&Worker, &str, u64) -> Result<(), Failed>,
    /// Runs the warm-up sends (completed when the scenario's runs complete).
    warm_runs: u64,
}

const SCENARIOS: [Scenario; 4] = [
    // Accepted only: a one-hour delay keeps every run waiting in its store.
    Scenario {
        name: "acceptOnlyBatch100",
        runs: 1000,
        completed: 0,
        send: |w, tag, runs| batches(w, ACCEPT_ONLY, tag, json!({ "delay": "1h" }), runs),
        warm_runs: 100,
    },
    Scenario {
        name: "endToEndBatch100",
        runs: 1000,
        completed: 1000,
        send: |w, tag, runs| batches(w, BATCHES, tag, json!({}), runs),
        warm_runs: 100,
    },
    Scenario {
        name: "endToEndSingle",
        runs: 100,
        completed: 100,
        send: singles,
        warm_runs: 1,
    },
    // Every run fails its first attempt and completes on the second.
    Scenario {
        name: "oneRetryBatch100",
        runs: 1000,
        completed: 1000,
        send: |w, tag, runs| batches(w, RETRIES, tag, json!({}), runs),
        warm_runs: 100,
    },
];

fn operations_per_run_stay_within_the_committed_budget(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let text = std::fs::read_to_string(crate::harness::root().join(BUDGET))
        .map_err(|e| format!("{BUDGET}: {e}"))?;
    let budget: BTreeMap<String, PerRun> =
        serde_json::from_str(&text).map_err(|e| format!("{BUDGET}: {e}"))?;
    warm_up(w)?;
    let mut failures = Vec::new();
    for scenario in &SCENARIOS {
        let limit = budget
            .get(scenario.name)
            .ok_or_else(|| format!("{BUDGET} has no scenario {}", scenario.name))?;
        let spent = run(w, scenario)?;
        let per_run = spent.per_run(scenario.runs);
        println!(
            "budget {}: {} | {:.2} statements, {:.2} rows written ({}), {:.2} rows read, {:.3} object requests ({}), {:.3} queue operations, {:.3} Worker requests per run; ${:.3} per million runs",
            scenario.name,
            serde_json::to_string(&per_run).unwrap_or_default(),
            spent.statements() as f64 / scenario.runs as f64,
            per_run.rows_written_per_run,
            by_object(&spent, |o| o.rows_written, scenario.runs),
            per_run.rows_read_per_run,
            per_run.do_requests_per_run,
            by_object(&spent, |o| o.requests + o.alarms, scenario.runs),
            per_run.queue_ops_per_run,
            spent.worker_requests() as f64 / scenario.runs as f64,
            per_run.dollars_per_million_runs,
        );
        for (figure, measured, budgeted) in per_run.over(limit) {
            failures.push(format!(
                "{}: {figure} is {measured:.4}, over its budget of {budgeted}",
                scenario.name
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "over {BUDGET} (a change that costs more per run must say why and raise it there):\n{}",
            failures.join("\n")
        )
        .into())
    }
}

/// Sends every scenario's warm-up together and waits until all it caused is over.
fn warm_up(w: &Worker) -> Result<(), Failed> {
    let before = meter(w)?;
    let tag = format!("warm-{}", crate::task_server::epoch_ms());
    for scenario in &SCENARIOS {
        (scenario.send)(w, &tag, scenario.warm_runs)?;
    }
    let completed = SCENARIOS
        .iter()
        .filter(|s| s.completed > 0)
        .map(|s| s.warm_runs)
        .sum();
    over(w, "the warm-up", &before, completed)?;
    Ok(())
}

/// Runs a scenario and returns what it spent once everything it caused is over.
fn run(w: &Worker, scenario: &Scenario) -> Result<Account, Failed> {
    let before = meter(w)?;
    let tag = format!("{}-{}", scenario.name, crate::task_server::epoch_ms());
    (scenario.send)(w, &tag, scenario.runs)?;
    let spent = over(w, scenario.name, &before, scenario.completed)?;
    check_runs(scenario, &spent)?;
    Ok(spent)
}

/// Waits until `completed` runs completed since `before` and the worker went quiet, past
/// the executors' backstop; returns what was spent since `before`.
fn over(w: &Worker, what: &str, before: &Account, completed: u64) -> Result<Account, Failed> {
    let sent = Instant::now();
    let deadline = sent + Duration::from_secs(180);
    let (mut last, mut quiet_since) = (meter(w)?, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = meter(w)?;
        let spent = now.since(before);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if spent.runs.completed >= completed
            && quiet_since.elapsed() >= QUIET
            && sent.elapsed() >= SETTLE
        {
            return Ok(spent);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what}: not over after 180 s: {}",
                serde_json::to_string(&spent.runs).unwrap_or_default()
            )
            .into());
        }
    }
}

/// The account must have seen the scenario's runs, and every object kind they went
/// through: a meter that missed an object would make any budget pass.
fn check_runs(scenario: &Scenario, spent: &Account) -> Result<(), Failed> {
    let runs = &spent.runs;
    if runs.accepted != scenario.runs || runs.completed != scenario.completed || runs.failed != 0 {
        return Err(format!(
            "{}: expected {} runs accepted and {} completed, counted {}",
            scenario.name,
            scenario.runs,
            scenario.completed,
            serde_json::to_string(runs).unwrap_or_default()
        )
        .into());
    }
    let executed = scenario.completed > 0;
    let seen = [
        (
            "store",
            spent.store.requests > 0 && spent.store.rows_written > 0,
        ),
        ("gate", !executed || spent.gate.rows_written > 0),
        ("executor", !executed || spent.executor.requests > 0),
        ("queue", !executed || spent.queue.operations > 0),
        ("edge", spent.worker.fetches > 0),
        (
            "task calls",
            !executed || spent.worker.task_fetches >= scenario.completed,
        ),
    ];
    match seen.iter().find(|(_, ok)| !ok) {
        Some((what, _)) => Err(format!("{}: the account shows no {what}", scenario.name).into()),
        None => Ok(()),
    }
}

fn by_object(
    spent: &Account,
    f: fn(&trigger_edge::domain::cost::ObjectOps) -> u64,
    runs: u64,
) -> String {
    spent
        .objects()
        .iter()
        .map(|(name, ops)| format!("{name} {:.2}", f(ops) as f64 / runs as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn meter(w: &Worker) -> Result<Account, Failed> {
    let answer = get(&w.url("/api/v1/meter"), Some(DEV_KEY));
    if answer.status != 200 {
        return Err(format!("GET /api/v1/meter: {} {}", answer.status, answer.body).into());
    }
    serde_json::from_str(&answer.body).map_err(|e| format!("the account: {e}").into())
}

fn item(tag: &str, i: usize, options: &Value, task: &str) -> Value {
    let payload = if task == RETRIES {
        json!({ "tag": tag, "i": i, "failTimes": 1 })
    } else {
        json!({ "tag": tag, "i": i })
    };
    json!({ "payload": payload, "options": options })
}

/// `runs` runs in batches of 100, one after another.
fn batches(w: &Worker, task: &str, tag: &str, options: Value, runs: u64) -> Result<(), Failed> {
    for b in 0..(runs / 100) as usize {
        let items: Vec<Value> = (0..100)
            .map(|i| item(tag, b * 100 + i, &options, task))
            .collect();
        post(
            w,
            &format!("/api/v1/tasks/{task}/batch"),
            json!({ "items": items }),
        )?;
    }
    Ok(())
}

/// `runs` single triggers, one after another.
fn singles(w: &Worker, tag: &str, runs: u64) -> Result<(), Failed> {
    for i in 0..runs as usize {
        post(
            w,
            &format!("/api/v1/tasks/{SINGLES}/trigger"),
            item(tag, i, &json!({}), SINGLES),
        )?;
    }
    Ok(())
}

fn post(w: &Worker, path: &str, body: Value) -> Result<(), Failed> {
    let authorization = format!("Bearer {DEV_KEY}");
    let answer = request(
        "POST",
        &w.url(path),
        &[("authorization", &authorization)],
        body.to_string().as_bytes(),
    );
    if answer.status != 200 {
        return Err(format!("POST {path}: {} {}", answer.status, answer.body).into());
    }
    Ok(())
}
