//! Fuzzing the API with its specifications: Schemathesis (PyPI, installed by
//! scripts/setup) generates requests from the seed's OpenAPI document
//! (`tests/schemathesis/seed-openapi.yaml`, Trigger.dev's "Batch trigger" page) and from ours (`public/api/openapi.json`, read back from
//! the worker at `GET /api/openapi.json`), and checks every answer: no 5xx, only
//! documented status codes, content types and headers, bodies that match their schemas.
//!
//! Each run uses a fresh seed (printed on failure, to replay it) and a bounded number of
//! examples per operation, so that it fits the test command.

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::Failed;

use crate::execution::Case;
use crate::harness::{get, run_check, Worker, DEV_KEY};
use crate::task_server::TaskServer;
use crate::{ensure, ensure_eq};

/// The seed document's example task (`my-task`), declared on the fuzzed worker so that
/// generated batches can succeed too.
pub fn configure(config: &mut toml::Table) {
    let tasks = config["vars"]["TASKS"].as_table_mut().unwrap();
    let example = tasks["hello-world"].clone();
    tasks.insert("my-task".into(), example);
}

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        schemathesis_on_the_seed_document_finds_no_5xx_and_only_documented_answers,
        schemathesis_on_our_document_finds_no_5xx_and_only_documented_answers,
    ]
}

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `st run <location>` against the worker with `examples` cases per operation.
fn schemathesis(w: &Worker, location: &str, examples: u32) -> Result<(), Failed> {
    let st = std::env::var("SCHEMATHESIS_BIN").map_err(|_| {
        "SCHEMATHESIS_BIN is not set: run the tests through scripts/test (scripts/setup installs it)"
    })?;
    let scratch = root().join("target/e2e/schemathesis");
    std::fs::create_dir_all(&scratch)?;
    let mut run = Command::new(st);
    run.current_dir(&scratch)
        .args(["run", location, "--url", &w.base])
        .args(["--header", &format!("Authorization: Bearer {DEV_KEY}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--generation-database", "none", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", root().join("tests/schemathesis"));
    Ok(run_check(
        &mut run,
        &format!("schemathesis on {location}"),
        " passed",
    )?)
}

/// The seed specification's OpenAPI document (Trigger.dev's "Batch trigger" page), kept
/// in the repository. Where the specification itself is beside the project (as in CI),
/// the copy must be exactly its YAML block, so that it never drifts.
fn seed_document() -> Result<PathBuf, Failed> {
    let copy = root().join("tests/schemathesis/seed-openapi.yaml");
    let yaml = std::fs::read_to_string(&copy)?;
    ensure(
        yaml.starts_with("openapi:"),
        "tests/schemathesis/seed-openapi.yaml holds an OpenAPI document",
    )?;
    let page = root().join("../shared/spec/seed-batch-trigger.md");
    if let Ok(page) = std::fs::read_to_string(page) {
        let block: String = page
            .lines()
            .skip_while(|l| !l.starts_with("````yaml"))
            .skip(1)
            .take_while(|l| *l != "````")
            .map(|l| format!("{l}\n"))
            .collect();
        ensure(
            block == yaml,
            "tests/schemathesis/seed-openapi.yaml is the seed specification's OpenAPI block",
        )?;
    }
    Ok(copy)
}

fn schemathesis_on_the_seed_document_finds_no_5xx_and_only_documented_answers(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    let seed = seed_document()?;
    schemathesis(w, &seed.to_string_lossy(), 300)
}

fn schemathesis_on_our_document_finds_no_5xx_and_only_documented_answers(
    w: &Worker,
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    // The worker serves exactly the document in the repository.
    let served = get(&w.url("/api/openapi.json"), None);
    ensure_eq(served.status, 200, "GET /api/openapi.json")?;
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root().join("public/api/openapi.json"),
    )?)?;
    ensure(
        served.json() == file,
        "the served document is public/api/openapi.json",
    )?;
    schemathesis(w, &w.url("/api/openapi.json"), 60)
}
