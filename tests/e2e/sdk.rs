//! The official Trigger.dev SDKs, unchanged, against the worker: `tests/sdk3/run.mjs`
//! (SDK 3.2.1) and `tests/sdk4/run.mjs` (SDK 4.x) run their checks with node and print
//! `ok <check>` or `FAILED <check>: <why>` for each; so does `tests/dashboard/run.mjs`,
//! the dashboard in Chromium.

use std::path::Path;
use std::process::Command;

use libtest_mimic::Failed;

use crate::execution::Case;
use crate::harness::{run_check, Worker, DEV_KEY};
use crate::task_server::TaskServer;

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        sdk_3_2_triggers_reads_lists_and_manages_runs,
        sdk_4_batches_in_two_steps_offloads_large_payloads_and_manages_runs,
        the_dashboard_in_chromium_signs_in_lists_filters_and_steers_runs_queues_and_schedules,
    ]
}

fn run_script(w: &Worker, folder: &str) -> Result<(), Failed> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(folder);
    let mut node = Command::new("node");
    node.arg("run.mjs")
        .current_dir(&dir)
        .env("TRIGGER_API_URL", &w.base)
        .env("TRIGGER_SECRET_KEY", DEV_KEY);
    Ok(run_check(&mut node, &format!("{folder}/run.mjs"), "ok ")?)
}

fn sdk_3_2_triggers_reads_lists_and_manages_runs(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    run_script(w, "sdk3")
}

fn sdk_4_batches_in_two_steps_offloads_large_payloads_and_manages_runs(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    run_script(w, "sdk4")?;
    // The 200 KiB payload went through the offload: a signed URL, then the upload.
    let log = w.log();
    if log.contains("PUT /api/v2/packets/") && log.contains("PUT /packets/dev/") {
        Ok(())
    } else {
        Err("the SDK never offloaded a payload through /api/v2/packets".into())
    }
}

fn the_dashboard_in_chromium_signs_in_lists_filters_and_steers_runs_queues_and_schedules(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    run_script(w, "dashboard")
}
