//! Schedules (docs/API.md section 8): the API's life of a schedule, its errors, the time
//! zones, a declared schedule, and ticks: one run per minute with Trigger.dev's payload,
//! none once deactivated, and exactly one per tick across a kill and restart.

use std::collections::BTreeSet;
use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::execution::{declare_endpoint_task, run};
use crate::harness::{eventually, get, send, Answer, Worker, DEV_KEY};
use crate::task_server::TaskServer;
use crate::{ensure, ensure_eq, unique};

/// A task schedules are made for through the API.
const REPORT: &str = "report";
/// A task whose runs come from a minutely schedule made by a case.
const MINUTELY: &str = "minutely";
/// A task that declares a schedule (minutely, in London).
const DECLARED: &str = "declared-minutely";

pub fn configure(config: &mut toml::Table, server: &TaskServer) {
    for task in [REPORT, MINUTELY, DECLARED] {
        declare_endpoint_task(config, task, &server.url(), 3, 30);
    }
    config["vars"]["TASKS"][DECLARED]
        .as_table_mut()
        .expect("a declared task")
        .insert(
            "schedule".into(),
            toml::Value::Table(toml::toml! { cron = "* * * * *" timezone = "Europe/London" }),
        );
}

pub fn cases() -> Vec<(&'static str, crate::execution::Case)> {
    crate::cases![
        a_schedule_is_created_updated_by_its_key_listed_deactivated_activated_and_deleted,
        bad_schedules_are_400_or_422_and_unknown_ones_404,
        the_time_zones_are_listed_utc_first_without_a_key,
        a_declared_schedule_is_listed_and_cannot_be_changed_through_the_api,
        a_minutely_schedule_triggers_one_run_per_tick_with_trigger_devs_payload_until_deactivated,
    ]
}

/// Cases that start workers of their own.
pub fn standalone_cases() -> Vec<(&'static str, crate::crash::Standalone)> {
    crate::cases![a_declared_schedule_fires_once_per_tick_across_a_kill_and_restart]
}

fn ok(answer: Answer, what: &str) -> Result<Value, Failed> {
    ensure_eq(answer.status, 200, &format!("{what}: {}", answer.body))?;
    Ok(answer.json())
}

fn create(w: &Worker, body: Value) -> Result<Value, Failed> {
    ok(send(w, "POST", "/api/v1/schedules", Some(body)), "create")
}

/// Every schedule of the environment, through the list's pages.
fn list_all(w: &Worker) -> Result<Vec<Value>, Failed> {
    let mut all = Vec::new();
    for page in 1.. {
        let answer = ok(
            send(
                w,
                "GET",
                &format!("/api/v1/schedules?page={page}&perPage=2"),
                None,
            ),
            "list",
        )?;
        all.extend(answer["data"].as_array().ok_or("data")?.iter().cloned());
        if page
            >= answer["pagination"]["totalPages"]
                .as_u64()
                .ok_or("totalPages")?
        {
            break;
        }
    }
    Ok(all)
}

fn a_schedule_is_created_updated_by_its_key_listed_deactivated_activated_and_deleted(
    w: &Worker,
    _server: &TaskServer,
) -> Result<(), Failed> {
    let key = unique("key");
    // 09:00 in New York: 14:00Z in winter, 13:00Z in summer.
    let created = create(
        w,
        json!({"task": REPORT, "cron": "0 9 * * *", "deduplicationKey": key, "externalId": "user_7", "timezone": "America/New_York"}),
    )?;
    let id = created["id"].as_str().ok_or("id")?.to_owned();
    ensure(id.starts_with("sched_"), format!("id {id}"))?;
    ensure_eq(
        (&created["type"], &created["active"], &created["task"]),
        (&json!("IMPERATIVE"), &json!(true), &json!(REPORT)),
        "created",
    )?;
    ensure_eq(&created["generator"]["type"], &json!("CRON"), "generator")?;
    ensure_eq(&created["externalId"], &json!("user_7"), "externalId")?;
    ensure_eq(
        &created["deduplicationKey"],
        &json!(key),
        "deduplicationKey",
    )?;
    let next = created["nextRun"].as_str().ok_or("nextRun")?;
    ensure(
        next.ends_with("T13:00:00.000Z") || next.ends_with("T14:00:00.000Z"),
        format!("09:00 in New York is 13:00Z or 14:00Z, not {next}"),
    )?;
    ensure_eq(
        &created["environments"],
        &json!([{"id": "env_dev", "type": "DEVELOPMENT"}]),
        "environments",
    )?;
    // The same key again updates that schedule.
    let again = create(
        w,
        json!({"task": REPORT, "cron": "30 6 * * 1", "deduplicationKey": key, "timezone": "UTC"}),
    )?;
    ensure_eq(
        again["id"].as_str(),
        Some(id.as_str()),
        "same key, same schedule",
    )?;
    ensure_eq(
        &again["generator"]["expression"],
        &json!("30 6 * * 1"),
        "updated cron",
    )?;
    ensure(
        list_all(w)?
            .iter()
            .filter(|s| s["id"] == id.as_str())
            .count()
            == 1,
        "listed once",
    )?;
    let path = format!("/api/v1/schedules/{id}");
    let updated = ok(
        send(
            w,
            "PUT",
            &path,
            Some(json!({"task": REPORT, "cron": "0 0 1 * *", "timezone": "Asia/Tokyo"})),
        ),
        "update",
    )?;
    // Midnight on the 1st in Tokyo is 15:00Z on the last day of the month before.
    let next = updated["nextRun"].as_str().ok_or("nextRun")?;
    ensure(next.ends_with("T15:00:00.000Z"), format!("nextRun {next}"))?;
    ensure_eq(
        &ok(send(w, "GET", &path, None), "retrieve")?["timezone"],
        &json!("Asia/Tokyo"),
        "retrieved",
    )?;
    let off = ok(
        send(w, "POST", &format!("{path}/deactivate"), None),
        "deactivate",
    )?;
    ensure_eq(
        (&off["active"], &off["nextRun"]),
        (&json!(false), &Value::Null),
        "deactivated",
    )?;
    let on = ok(
        send(w, "POST", &format!("{path}/activate"), None),
        "activate",
    )?;
    ensure_eq(
        (&on["active"], on["nextRun"].is_string()),
        (&json!(true), true),
        "activated",
    )?;
    let deleted = ok(send(w, "DELETE", &path, None), "delete")?;
    ensure_eq(deleted, json!({"id": id}), "deleted")?;
    ensure_eq(send(w, "GET", &path, None).status, 404, "gone")?;
    ensure_eq(send(w, "DELETE", &path, None).status, 404, "deleted twice")?;
    ensure(
        !list_all(w)?.iter().any(|s| s["id"] == id.as_str()),
        "no longer listed",
    )
}

fn bad_schedules_are_400_or_422_and_unknown_ones_404(
    w: &Worker,
    _server: &TaskServer,
) -> Result<(), Failed> {
    let key = unique("bad");
    let cases = [
        (
            json!({"task": REPORT, "cron": "* * * * *"}),
            400,
            "deduplicationKey: required",
        ),
        (
            json!({"task": REPORT, "cron": 5, "deduplicationKey": key}),
            400,
            "cron: expected a string",
        ),
        (
            json!({"task": REPORT, "cron": "* * * * *", "deduplicationKey": key, "window": "30m"}),
            400,
            "window",
        ),
        (
            json!({"task": REPORT, "cron": "* * * * * *", "deduplicationKey": key}),
            422,
            "seconds are not allowed",
        ),
        (
            json!({"task": REPORT, "cron": "61 * * * *", "deduplicationKey": key}),
            422,
            "Invalid CRON expression",
        ),
        (
            json!({"task": "nope", "cron": "* * * * *", "deduplicationKey": key}),
            422,
            "Task not found: nope",
        ),
        (
            json!({"task": REPORT, "cron": "* * * * *", "deduplicationKey": key, "timezone": "Mars/Olympus"}),
            422,
            "Invalid timezone: Mars/Olympus",
        ),
    ];
    for (body, status, message) in cases {
        let answer = send(w, "POST", "/api/v1/schedules", Some(body.clone()));
        ensure_eq(answer.status, status, &format!("{body}: {}", answer.body))?;
        ensure(
            answer.error().contains(message),
            format!("{body}: {} should say {message}", answer.body),
        )?;
    }
    // Nothing was made of them.
    ensure(
        !list_all(w)?
            .iter()
            .any(|s| s["deduplicationKey"] == key.as_str()),
        "a refused create made a schedule",
    )?;
    let unknown = "/api/v1/schedules/sched_unknown";
    ensure_eq(send(w, "GET", unknown, None).status, 404, "get")?;
    let body = json!({"task": REPORT, "cron": "* * * * *"});
    ensure_eq(send(w, "PUT", unknown, Some(body)).status, 404, "put")?;
    ensure_eq(
        send(w, "POST", &format!("{unknown}/activate"), None).status,
        404,
        "activate",
    )?;
    ensure_eq(
        send(w, "PATCH", "/api/v1/schedules", None).status,
        405,
        "an undocumented method",
    )
}

fn the_time_zones_are_listed_utc_first_without_a_key(
    w: &Worker,
    _server: &TaskServer,
) -> Result<(), Failed> {
    let all = get(&w.url("/api/v1/timezones"), None);
    ensure_eq(all.status, 200, &all.body)?;
    let zones: Vec<String> = serde_json::from_value(all.json()["timezones"].clone())?;
    ensure_eq(zones.first().map(String::as_str), Some("UTC"), "UTC first")?;
    for zone in [
        "Europe/London",
        "America/New_York",
        "Asia/Tokyo",
        "Pacific/Chatham",
    ] {
        ensure(zones.iter().any(|z| z == zone), format!("{zone} listed"))?;
    }
    let mut sorted = zones[1..].to_vec();
    sorted.sort();
    ensure_eq(&sorted, &zones[1..].to_vec(), "sorted after UTC")?;
    let without = get(&w.url("/api/v1/timezones?excludeUtc=true"), None).json();
    ensure(
        !without["timezones"]
            .as_array()
            .ok_or("timezones")?
            .contains(&json!("UTC")),
        "excludeUtc=true leaves UTC out",
    )?;
    // The list has the runtime's canonical names; a schedule takes any IANA name it knows.
    for zone in ["Asia/Kolkata", "Etc/UTC"] {
        let made = create(
            w,
            json!({"task": REPORT, "cron": "0 0 * * *", "deduplicationKey": unique("zone"), "timezone": zone}),
        )?;
        ensure_eq(&made["timezone"], &json!(zone), "an alias accepted")?;
        let path = format!("/api/v1/schedules/{}", made["id"].as_str().ok_or("id")?);
        ok(send(w, "DELETE", &path, None), "delete")?;
    }
    Ok(())
}

fn declared_schedule(w: &Worker) -> Result<Value, Failed> {
    list_all(w)?
        .into_iter()
        .find(|s| s["task"] == DECLARED)
        .ok_or_else(|| "the declared schedule is not listed".into())
}

fn a_declared_schedule_is_listed_and_cannot_be_changed_through_the_api(
    w: &Worker,
    _server: &TaskServer,
) -> Result<(), Failed> {
    let declared = declared_schedule(w)?;
    ensure_eq(
        (
            &declared["type"],
            &declared["generator"]["expression"],
            &declared["timezone"],
        ),
        (
            &json!("DECLARATIVE"),
            &json!("* * * * *"),
            &json!("Europe/London"),
        ),
        "declared",
    )?;
    ensure(declared.get("deduplicationKey").is_none(), "no key")?;
    let path = format!("/api/v1/schedules/{}", declared["id"].as_str().ok_or("id")?);
    let put = send(
        w,
        "PUT",
        &path,
        Some(json!({"task": DECLARED, "cron": "0 * * * *"})),
    );
    ensure_eq(put.status, 422, &put.body)?;
    ensure(put.error().contains("declarative"), put.body.clone())?;
    ensure_eq(send(w, "DELETE", &path, None).status, 422, "delete")?;
    ensure_eq(
        &ok(send(w, "GET", &path, None), "still there")?["generator"]["expression"],
        &json!("* * * * *"),
        "unchanged",
    )
}

/// The runs of `task`, newest first, each as the API reads it.
fn runs_of(w: &Worker, task: &str) -> Vec<Value> {
    let list = get(
        &w.url(&format!(
            "/api/v1/runs?filter[taskIdentifier]={task}&page[size]=100"
        )),
        Some(DEV_KEY),
    )
    .json();
    list["data"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter_map(|r| r["id"].as_str())
                .map(|id| run(w, id))
                .collect()
        })
        .unwrap_or_default()
}

/// A scheduled run's payload: the superjson document's `json`, after checking that its
/// dates are marked as dates.
fn scheduled_payload(run: &Value) -> Result<Value, Failed> {
    ensure_eq(
        run["payloadType"].as_str(),
        Some("application/super+json"),
        "payload type",
    )?;
    let doc: Value = serde_json::from_str(run["payload"].as_str().ok_or("payload text")?)?;
    ensure_eq(
        &doc["meta"]["values"]["timestamp"],
        &json!(["Date"]),
        "a Date",
    )?;
    Ok(doc["json"].clone())
}

/// Each tick's run: its timestamp, in order, checking that no tick has two runs and that
/// each run's `lastTimestamp` is the tick before it.
fn ticks(runs: &[Value]) -> Result<Vec<String>, Failed> {
    let mut payloads = runs
        .iter()
        .map(scheduled_payload)
        .collect::<Result<Vec<_>, _>>()?;
    payloads.sort_by_key(|p| p["timestamp"].as_str().unwrap_or_default().to_owned());
    let stamps: Vec<String> = payloads
        .iter()
        .map(|p| p["timestamp"].as_str().unwrap_or_default().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = stamps.iter().collect();
    ensure_eq(
        distinct.len(),
        stamps.len(),
        &format!("one run per tick: {stamps:?}"),
    )?;
    for pair in payloads.windows(2) {
        ensure_eq(
            &pair[1]["lastTimestamp"],
            &pair[0]["timestamp"],
            "lastTimestamp is the tick before",
        )?;
    }
    for stamp in &stamps {
        ensure(
            stamp.ends_with(":00.000Z"),
            format!("a whole minute: {stamp}"),
        )?;
    }
    Ok(stamps)
}

fn a_minutely_schedule_triggers_one_run_per_tick_with_trigger_devs_payload_until_deactivated(
    w: &Worker,
    _server: &TaskServer,
) -> Result<(), Failed> {
    let created = create(
        w,
        json!({"task": MINUTELY, "cron": "* * * * *", "deduplicationKey": unique("minutely"), "externalId": "tenant_1"}),
    )?;
    let id = created["id"].as_str().ok_or("id")?.to_owned();
    let runs = eventually(Duration::from_secs(150), "two ticks' runs", || {
        let runs = runs_of(w, MINUTELY);
        (runs.len() >= 2).then_some(runs)
    });
    let stamps = ticks(&runs)?;
    let newest = runs
        .iter()
        .map(scheduled_payload)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max_by_key(|p| p["timestamp"].as_str().unwrap_or_default().to_owned())
        .ok_or("a payload")?;
    ensure_eq(
        (
            &newest["scheduleId"],
            &newest["type"],
            &newest["externalId"],
            &newest["timezone"],
        ),
        (
            &json!(id),
            &json!("IMPERATIVE"),
            &json!("tenant_1"),
            &json!("UTC"),
        ),
        "the payload",
    )?;
    let upcoming = newest["upcoming"].as_array().ok_or("upcoming")?;
    ensure_eq(upcoming.len(), 10, "ten upcoming ticks")?;
    ensure(
        upcoming[0].as_str() > stamps.last().map(String::as_str),
        "upcoming starts after the tick",
    )?;
    for run in &runs {
        ensure_eq(run["status"].as_str().is_some(), true, "readable")?;
    }
    // Deactivated: the next minute makes no run.
    ok(
        send(
            w,
            "POST",
            &format!("/api/v1/schedules/{id}/deactivate"),
            None,
        ),
        "deactivate",
    )?;
    let before = runs_of(w, MINUTELY).len();
    std::thread::sleep(Duration::from_secs(65));
    ensure_eq(
        runs_of(w, MINUTELY).len(),
        before,
        "runs after deactivating",
    )?;
    ok(
        send(w, "DELETE", &format!("/api/v1/schedules/{id}"), None),
        "delete",
    )?;
    Ok(())
}

fn a_declared_schedule_fires_once_per_tick_across_a_kill_and_restart(
    server: &TaskServer,
) -> Result<(), Failed> {
    let mut w = Worker::start("schedules-restart", |c| configure(c, server));
    // Under `wrangler dev` an environment's first request wakes its scheduler.
    let declared = declared_schedule(&w)?;
    ensure(
        declared["nextRun"].is_string(),
        "the declared schedule is armed",
    )?;
    let before = eventually(Duration::from_secs(90), "the first tick's run", || {
        let seen = runs_of(&w, DECLARED).len();
        (seen > 0).then_some(seen)
    });
    // Killed right after a tick fired: its bookkeeping may not have been written, and the
    // tick is fired again after the restart, which must find its run.
    w.kill_hard();
    w.restart();
    let runs = eventually(Duration::from_secs(150), "a tick after the restart", || {
        let runs = runs_of(&w, DECLARED);
        (runs.len() > before).then_some(runs)
    });
    let stamps = ticks(&runs)?;
    for run in &runs {
        let payload = scheduled_payload(run)?;
        ensure_eq(
            (&payload["type"], &payload["timezone"]),
            (&json!("DECLARATIVE"), &json!("Europe/London")),
            "the declared schedule's payload",
        )?;
    }
    ensure(stamps.len() >= 2, format!("ticks {stamps:?}"))?;
    Ok(())
}
