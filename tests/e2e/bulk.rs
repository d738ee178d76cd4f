//! Bulk actions (docs/API.md section 5): a cancel of 1,000 delayed runs by tag, counted
//! exactly and in a handful of store calls; a replay by ids, each run once; an abort; a
//! kill in the middle of a cancel; and the errors.

use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};
use trigger_edge::domain::cost::Account;

use crate::execution::{declare_endpoint_task, trigger_task, wait_status};
use crate::harness::{eventually, get, send, Worker, DEV_KEY};
use crate::task_server::TaskServer;
use crate::{ensure, ensure_eq, unique};

/// A task whose runs the cases act on.
const TARGET: &str = "bulk-target";

pub fn configure(config: &mut toml::Table, server: &TaskServer) {
    declare_endpoint_task(config, TARGET, &server.url(), 3, 30);
    config["vars"]
        .as_table_mut()
        .expect("[vars]")
        .insert("METERING".into(), "on".into());
}

pub fn cases() -> Vec<(&'static str, crate::execution::Case)> {
    crate::cases![
        a_bulk_cancel_of_1000_delayed_runs_by_tag_cancels_each_in_a_few_store_calls,
        a_bulk_replay_by_ids_replays_each_run_once_and_counts_an_unknown_id_as_failed,
        an_aborted_bulk_action_stops_and_its_counts_match_the_runs_it_cancelled,
        bad_bulk_actions_are_400_and_unknown_ones_404,
    ]
}

/// Cases that start workers of their own.
pub fn standalone_cases() -> Vec<(&'static str, crate::crash::Standalone)> {
    crate::cases![a_bulk_cancel_killed_in_the_middle_finishes_with_exact_counts]
}

/// Creates a bulk action; its id.
fn create(w: &Worker, body: Value) -> Result<String, Failed> {
    let answer = send(w, "POST", "/api/v1/bulk-actions", Some(body));
    ensure_eq(answer.status, 202, &answer.body)?;
    Ok(answer.json()["id"].as_str().ok_or("id")?.to_owned())
}

fn retrieve(w: &Worker, id: &str) -> Value {
    send(w, "GET", &format!("/api/v1/bulk-actions/{id}"), None).json()
}

fn wait_finished(w: &Worker, id: &str) -> Value {
    eventually(Duration::from_secs(120), &format!("{id} to finish"), || {
        let action = retrieve(w, id);
        (action["status"] != "PENDING").then_some(action)
    })
}

/// `count` delayed runs of `TARGET` tagged `tag`, in batches of 100.
fn delayed_runs(w: &Worker, tag: &str, count: usize) -> Result<Vec<String>, Failed> {
    let mut runs = Vec::with_capacity(count);
    while runs.len() < count {
        let items = (runs.len()..count.min(runs.len() + 100))
            .map(|i| json!({"payload": {"i": i}, "options": {"delay": "1h", "tags": [tag]}}))
            .collect();
        runs.extend(trigger_task(w, TARGET, items)?);
    }
    Ok(runs)
}

/// How many runs tagged `tag` are in `status`, through the list's pages.
fn count_with(w: &Worker, tag: &str, status: &str) -> Result<usize, Failed> {
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let mut path =
            format!("/api/v1/runs?filter[tag]={tag}&filter[status]={status}&page[size]=100");
        if let Some(cursor) = &after {
            path.push_str(&format!("&page[after]={cursor}"));
        }
        let page = get(&w.url(&path), Some(DEV_KEY)).json();
        count += page["data"].as_array().ok_or("data")?.len();
        match page["pagination"]["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(count),
        }
    }
}

fn meter(w: &Worker) -> Result<Account, Failed> {
    let answer = get(&w.url("/api/v1/meter"), Some(DEV_KEY));
    ensure_eq(answer.status, 200, &answer.body)?;
    Ok(serde_json::from_str(&answer.body)?)
}

fn a_bulk_cancel_of_1000_delayed_runs_by_tag_cancels_each_in_a_few_store_calls(
    w: &Worker,
    _server: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("bulk");
    let other = unique("kept");
    delayed_runs(w, &tag, 1000)?;
    let kept = delayed_runs(w, &other, 20)?;
    let before = meter(w)?;
    let id = create(
        w,
        json!({"action": "cancel", "name": "cleanup", "filter": {"tag": tag, "status": "DELAYED"}}),
    )?;
    ensure(id.starts_with("bulk_"), format!("id {id}"))?;
    let done = wait_finished(w, &id);
    let spent = meter(w)?.since(&before);
    ensure_eq(
        (&done["status"], &done["type"], &done["name"]),
        (&json!("COMPLETED"), &json!("CANCEL"), &json!("cleanup")),
        "the action",
    )?;
    ensure_eq(
        &done["counts"],
        &json!({"total": 1000, "success": 1000, "failure": 0}),
        "counts",
    )?;
    ensure(done["completedAt"].is_string(), "completedAt")?;
    ensure_eq(count_with(w, &tag, "CANCELED")?, 1000, "cancelled runs")?;
    ensure_eq(count_with(w, &tag, "DELAYED")?, 0, "runs left delayed")?;
    for run in &kept {
        ensure_eq(
            crate::execution::run(w, run)["status"].as_str(),
            Some("DELAYED"),
            "a run the filter did not select",
        )?;
    }
    // A page of 500 per store call, not a call per run: here the task has one store.
    let store_calls = spent.store.requests;
    println!(
        "bulk: 1,000 runs cancelled with {store_calls} store requests, {} bulk-object requests and {} alarms",
        spent.bulk.requests, spent.bulk.alarms
    );
    ensure(
        store_calls <= 10,
        format!("{store_calls} store requests to cancel 1,000 runs"),
    )?;
    // Listed, newest first.
    let list = send(w, "GET", "/api/v1/bulk-actions?page[size]=100", None).json();
    ensure(
        list["data"]
            .as_array()
            .ok_or("data")?
            .iter()
            .any(|a| a["id"] == id.as_str()),
        "listed",
    )
}

fn a_bulk_replay_by_ids_replays_each_run_once_and_counts_an_unknown_id_as_failed(
    w: &Worker,
    server: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("replay");
    let items = (0..3)
        .map(|i| json!({"payload": {"i": i}, "options": {"tags": [tag]}}))
        .collect();
    let runs = trigger_task(w, TARGET, items)?;
    for run in &runs {
        wait_status(w, run, "COMPLETED", Duration::from_secs(30));
    }
    let mut ids: Vec<Value> = runs.iter().map(|r| json!(r)).collect();
    ids.push(json!("not-a-run"));
    ids.push(json!(runs[0])); // twice: acted on once
    let id = create(w, json!({"action": "replay", "runIds": ids}))?;
    let done = wait_finished(w, &id);
    ensure_eq(
        (&done["status"], &done["type"]),
        (&json!("COMPLETED"), &json!("REPLAY")),
        "the action",
    )?;
    ensure_eq(
        &done["counts"],
        &json!({"total": 4, "success": 3, "failure": 1}),
        "counts",
    )?;
    // Each replay is a new run with the same payload and tags, which executes: six
    // completed runs, not seven, though one id was given twice.
    eventually(Duration::from_secs(30), "the replays to complete", || {
        (count_with(w, &tag, "COMPLETED").ok()? == 6).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    ensure_eq(count_with(w, &tag, "COMPLETED")?, 6, "runs with the tag")?;
    let calls: usize = runs.iter().map(|r| server.calls_of(r).len()).sum();
    ensure_eq(calls, 3, "the originals ran once each")
}

fn an_aborted_bulk_action_stops_and_its_counts_match_the_runs_it_cancelled(
    w: &Worker,
    _server: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("abort");
    delayed_runs(w, &tag, 1200)?;
    let id = create(w, json!({"action": "cancel", "filter": {"tag": tag}}))?;
    let aborted = send(w, "POST", &format!("/api/v1/bulk-actions/{id}/abort"), None);
    ensure_eq(aborted.status, 200, &aborted.body)?;
    ensure_eq(aborted.json(), json!({"id": id}), "abort's answer")?;
    // A step under way when the abort came may still finish; none starts after it.
    std::thread::sleep(Duration::from_secs(3));
    let action = retrieve(w, &id);
    ensure_eq(&action["status"], &json!("ABORTED"), "status")?;
    let cancelled = count_with(w, &tag, "CANCELED")?;
    ensure_eq(
        action["counts"]["success"].as_u64(),
        Some(cancelled as u64),
        "success counts the runs cancelled",
    )?;
    ensure(cancelled < 1200, format!("{cancelled} of 1200 cancelled"))?;
    ensure_eq(
        count_with(w, &tag, "DELAYED")?,
        1200 - cancelled,
        "left delayed",
    )?;
    // Aborting again changes nothing.
    let again = send(w, "POST", &format!("/api/v1/bulk-actions/{id}/abort"), None);
    ensure_eq(again.status, 200, &again.body)?;
    ensure_eq(
        &retrieve(w, &id)["status"],
        &json!("ABORTED"),
        "still aborted",
    )
}

fn bad_bulk_actions_are_400_and_unknown_ones_404(
    w: &Worker,
    _server: &TaskServer,
) -> Result<(), Failed> {
    let cases = [
        (
            json!({"action": "cancel"}),
            "exactly one of filter or runIds",
        ),
        (
            json!({"action": "pause", "runIds": ["run_x"]}),
            "action: expected cancel or replay",
        ),
        (
            json!({"action": "cancel", "filter": {}}),
            "At least one filter must be provided",
        ),
        (
            json!({"action": "cancel", "filter": {"status": "SLEEPY"}}),
            "filter.status: unknown status SLEEPY",
        ),
    ];
    for (body, message) in cases {
        let answer = send(w, "POST", "/api/v1/bulk-actions", Some(body.clone()));
        ensure_eq(answer.status, 400, &format!("{body}: {}", answer.body))?;
        ensure(
            answer.error().contains(message),
            format!("{body}: {} should say {message}", answer.body),
        )?;
    }
    ensure_eq(
        send(w, "GET", "/api/v1/bulk-actions/bulk_unknown", None).status,
        404,
        "retrieve",
    )?;
    ensure_eq(
        send(w, "POST", "/api/v1/bulk-actions/bulk_unknown/abort", None).status,
        404,
        "abort",
    )
}

fn a_bulk_cancel_killed_in_the_middle_finishes_with_exact_counts(
    server: &TaskServer,
) -> Result<(), Failed> {
    let mut w = Worker::start("bulk-restart", |c| configure(c, server));
    let tag = unique("killed");
    delayed_runs(&w, &tag, 1000)?;
    let id = create(&w, json!({"action": "cancel", "filter": {"tag": tag}}))?;
    // Killed once the first page is done, the second perhaps under way.
    eventually(Duration::from_secs(60), "a first page", || {
        (retrieve(&w, &id)["counts"]["success"].as_u64()? > 0).then_some(())
    });
    w.kill_hard();
    w.restart();
    let done = wait_finished(&w, &id);
    ensure_eq(&done["status"], &json!("COMPLETED"), "status")?;
    ensure_eq(
        &done["counts"],
        &json!({"total": 1000, "success": 1000, "failure": 0}),
        "counts: each run once",
    )?;
    ensure_eq(count_with(&w, &tag, "CANCELED")?, 1000, "cancelled runs")
}
