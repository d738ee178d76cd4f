//! Per-environment rate limits (README "Rate limits"), against a worker whose buckets are
//! small: `requests` 4 per 3 s and `batchItems` 10 per 3 s. Each case uses an
//! environment of its own, so the cases never share a bucket.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::json;

use crate::execution::Case;
use crate::harness::{
    get, request, run_check, set_rate_limits, Answer, Worker, DEV_KEY, PREVIEW_KEY, PROD_KEY,
    STG_KEY,
};
use crate::task_server::{epoch_ms, TaskServer};
use crate::{auth, ensure, ensure_eq, unique};

/// Tokens per interval of the limited worker's buckets.
pub const REQUESTS: u64 = 4;
pub const ITEMS: u64 = 10;
const INTERVAL_MS: u64 = 3_000;

/// The task each SDK triggers: one per SDK, so that the worker's log tells their 429s
/// apart (both are copies of the example task).
const SDK_TASKS: [(&str, &str); 2] = [("sdk3", "limited-sdk3"), ("sdk4", "limited-sdk4")];

pub fn configure(config: &mut toml::Table) {
    set_rate_limits(config, (REQUESTS, "3s"), (ITEMS, "3s"));
    let tasks = config["vars"]["TASKS"].as_table_mut().unwrap();
    let example = tasks["hello-world"].clone();
    for (_, task) in SDK_TASKS {
        tasks.insert(task.into(), example.clone());
    }
}

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        requests_past_the_bucket_are_429_with_the_headers_the_sdk_reads_until_reset,
        runs_past_the_item_bucket_are_429_and_nothing_of_the_batch_is_stored,
        sdk_3_2_waits_for_the_reset_and_its_retry_succeeds,
        sdk_4_waits_for_the_reset_and_its_retry_succeeds,
    ]
}

fn number(answer: &Answer, header: &str) -> Result<u64, Failed> {
    answer
        .header(header)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{header} missing or not a number: {:?}", answer.headers).into())
}

/// Sleeps until the epoch millisecond `reset` (plus a little for clock reading).
fn sleep_until(reset: u64) {
    let wait = reset.saturating_sub(epoch_ms()) + 100;
    std::thread::sleep(Duration::from_millis(wait));
}

fn batch(w: &Worker, key: &str, tag: &str, count: usize) -> Answer {
    let items: Vec<_> = (0..count)
        .map(|i| json!({"payload": {"i": i}, "options": {"tags": [tag]}}))
        .collect();
    request(
        "POST",
        &w.url("/api/v1/tasks/hello-world/batch"),
        &[
            ("authorization", &auth(key)),
            ("content-type", "application/json"),
        ],
        json!({ "items": items }).to_string().as_bytes(),
    )
}

fn requests_past_the_bucket_are_429_with_the_headers_the_sdk_reads_until_reset(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    // Any authenticated request costs one token, whatever its answer (here a 404).
    let probe = || {
        get(
            &w.url("/api/v3/runs/run_123456789abcdefghijkm"),
            Some(DEV_KEY),
        )
    };
    for left in (0..REQUESTS).rev() {
        let answer = probe();
        ensure_eq(answer.status, 404, "an admitted request")?;
        ensure_eq(number(&answer, "x-ratelimit-limit")?, REQUESTS, "limit")?;
        ensure_eq(number(&answer, "x-ratelimit-remaining")?, left, "remaining")?;
    }
    let before = epoch_ms();
    let limited = probe();
    ensure_eq(limited.status, 429, "the request past the bucket")?;
    ensure_eq(
        limited.error(),
        format!(
            "Rate limit exceeded: 0/{REQUESTS} requests remaining. Retry in {} seconds.",
            limited.header("retry-after").unwrap_or("?")
        ),
        "the 429's message",
    )?;
    ensure_eq(number(&limited, "x-ratelimit-limit")?, REQUESTS, "limit")?;
    ensure_eq(number(&limited, "x-ratelimit-remaining")?, 0, "remaining")?;
    let reset = number(&limited, "x-ratelimit-reset")?;
    ensure(
        reset > before && reset <= before + INTERVAL_MS + 500,
        format!("x-ratelimit-reset {reset} is epoch ms within one interval of {before}"),
    )?;
    let retry_after = number(&limited, "retry-after")?;
    ensure(
        (1..=INTERVAL_MS / 1000).contains(&retry_after),
        format!("Retry-After {retry_after} is whole seconds within one interval"),
    )?;
    // Another environment's bucket is its own.
    let other = get(
        &w.url("/api/v3/runs/run_123456789abcdefghijkm"),
        Some(PREVIEW_KEY),
    );
    ensure_eq(other.status, 404, "another environment, meanwhile")?;
    sleep_until(reset);
    ensure_eq(probe().status, 404, "the first request after the reset")
}

fn runs_past_the_item_bucket_are_429_and_nothing_of_the_batch_is_stored(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    let (first, second) = (unique("items-a"), unique("items-b"));
    ensure_eq(batch(w, PROD_KEY, &first, 8).status, 200, "8 of 10 runs")?;
    let limited = batch(w, PROD_KEY, &second, 5);
    ensure_eq(limited.status, 429, "5 more runs with 2 left")?;
    ensure(
        limited.error().contains("2/10 batch items remaining"),
        format!("the 429 names the item bucket: {}", limited.body),
    )?;
    ensure_eq(
        number(&limited, "x-ratelimit-remaining")?,
        2,
        "items remaining",
    )?;
    sleep_until(number(&limited, "x-ratelimit-reset")?);
    let listed = get(
        &w.url(&format!("/api/v1/runs?filter[tag]={second}")),
        Some(PROD_KEY),
    );
    ensure_eq(listed.status, 200, "listing after the reset")?;
    ensure_eq(
        listed.json()["data"].as_array().map(Vec::len),
        Some(0),
        "runs stored by the refused batch",
    )?;
    ensure_eq(
        batch(w, PROD_KEY, &second, 5).status,
        200,
        "the same batch after the reset",
    )
}

/// Runs `tests/<folder>/rate_limited.mjs`: the SDK triggers more runs at once than the
/// bucket holds, and every trigger must still succeed through the SDK's own retries.
fn run_sdk(w: &Worker, folder: &str, key: &str) -> Result<(), Failed> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(folder);
    let task = SDK_TASKS.iter().find(|(f, _)| *f == folder).unwrap().1;
    let refused = format!("POST /api/v1/tasks/{task}/trigger 429");
    let mut node = Command::new("node");
    node.arg("rate_limited.mjs")
        .current_dir(&dir)
        .env("TRIGGER_API_URL", &w.base)
        .env("TRIGGER_SECRET_KEY", key)
        .env("TASK", task)
        .env("TRIGGERS", (REQUESTS * 2).to_string());
    run_check(&mut node, &format!("{folder}/rate_limited.mjs"), "ok ")?;
    // The worker did refuse some of them: the SDK's success came from waiting.
    ensure(
        w.log().contains(&refused),
        format!("the worker's log has no `{refused}`: the SDK never met the limit"),
    )
}

fn sdk_3_2_waits_for_the_reset_and_its_retry_succeeds(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    run_sdk(w, "sdk3", STG_KEY)
}

fn sdk_4_waits_for_the_reset_and_its_retry_succeeds(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    // SDK 3.2 and 4 run at once; their environments keep their buckets apart.
    run_sdk(w, "sdk4", PREVIEW_KEY)
}
