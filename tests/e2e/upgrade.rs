//! Upgrades keep every row (invariant 13): the current build starts on state written by an
//! earlier build and reads, executes and deduplicates all of it.
//!
//! `tests/fixtures/upgrade/<release>/` holds what an earlier build left in its
//! `--persist-to` folder (`state/`) after the scenario of [`record`], and what that build
//! answered about it (`manifest.json`). The test copies the state into a fresh worker
//! folder, starts the current build on it (its objects migrate on start), and checks every
//! run, batch, key and queue limit against the manifest, then that held and delayed runs
//! still execute, and that a second start applies no step twice.
//!
//! A fixture is made once per release whose schema later steps change, with that
//! release's build: `cargo test --test e2e -- --ignored record_upgrade_fixture` writes
//! `tests/fixtures/upgrade/new/` (rename it after the release). `unversioned` is the last
//! build before schema versioning (0f22f1b): every step applies to it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::harness::{eventually, get, request, Worker, DEV_KEY};
use crate::task_server::TaskServer;
use crate::{auth, ensure, ensure_eq};

pub type Standalone = crate::crash::Standalone;

pub fn cases() -> Vec<(&'static str, Standalone)> {
    crate::cases![
        the_current_build_reads_executes_and_deduplicates_what_an_earlier_build_stored,
        an_object_answers_a_caller_of_the_build_before_in_text_and_this_builds_in_bytes
    ]
}

/// Recording a fixture is run by hand (see the module's doc), never by the test command.
pub fn ignored_cases() -> Vec<(&'static str, Standalone)> {
    crate::cases![record_upgrade_fixture]
}

/// A fixed worker name: object ids (and so the SQLite files' names) derive from it.
const NAME: &str = "trigger-edge-upgrade";
const TASK: &str = "upgrade-task";
const TAG: &str = "upgrade";
/// The queue whose limit 0 holds its run across the upgrade.
const HELD_QUEUE: &str = "upgrade-held";
const BATCH_KEY: &str = "upgrade-batch-key";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

fn configure(config: &mut toml::Table, tasks: &str) {
    let own = config["name"].as_str().unwrap_or_default().to_owned();
    config.insert("name".into(), NAME.into());
    crate::harness::rename_service(config, &own, NAME);
    crate::execution::declare_endpoint_task(config, TASK, tasks, 2, 30);
}

/// The batch of the scenario: one run for each state a stored run can rest in.
fn batch_body() -> String {
    let item = |name: &str, payload: Value, options: Value| {
        let mut options = options;
        options["idempotencyKey"] = json!(format!("key-{name}"));
        options["tags"] = json!([TAG, name]);
        json!({"payload": payload, "options": options})
    };
    json!({"items": [
        item("completed", json!({"n": 1}), json!({})),
        item("failed", json!({"alwaysFail": true}), json!({})),
        item("held", json!({"n": 3}), json!({"queue": {"name": HELD_QUEUE, "concurrencyLimit": 0}})),
        item("delayed-due", json!({"n": 4}), json!({"delay": "30s", "ttl": "30d"})),
        item("delayed-decade", json!({"n": 5}), json!({"delay": "3650d"})),
    ]})
    .to_string()
}

const NAMES: [&str; 5] = [
    "completed",
    "failed",
    "held",
    "delayed-due",
    "delayed-decade",
];

fn post(w: &Worker, path: &str, body: &str, extra: &[(&str, &str)]) -> crate::harness::Answer {
    let authorization = auth(DEV_KEY);
    let mut headers = vec![
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    request("POST", &w.url(path), &headers, body.as_bytes())
}

fn read(w: &Worker, path: &str) -> Value {
    get(&w.url(path), Some(DEV_KEY)).json()
}

fn run(w: &Worker, id: &str) -> Value {
    read(w, &format!("/api/v3/runs/{id}"))
}

fn wait_status(w: &Worker, id: &str, want: &str, limit: Duration) -> Value {
    eventually(limit, &format!("{id} to become {want}"), || {
        let run = run(w, id);
        (run["status"] == want).then_some(run)
    })
}

/// The ids `GET /api/v1/runs` lists for the scenario's tag, newest first.
fn listed(w: &Worker) -> Value {
    let page = read(w, &format!("/api/v1/runs?filter[tag]={TAG}&page[size]=100"));
    Value::Array(
        page["data"]
            .as_array()
            .map(|runs| runs.iter().map(|r| r["id"].clone()).collect())
            .unwrap_or_default(),
    )
}

/// Makes a fixture with the build in `build/` (see the module's doc).
fn record_upgrade_fixture(tasks: &TaskServer) -> Result<(), Failed> {
    let url = tasks.url();
    let w = Worker::start("upgrade-record", |c| configure(c, &url));
    let body = batch_body();
    let answer = post(
        &w,
        &format!("/api/v1/tasks/{TASK}/batch"),
        &body,
        &[("idempotency-key", BATCH_KEY)],
    );
    ensure_eq(answer.status, 200, &format!("batch ({})", answer.body))?;
    let batch = answer.json();
    let ids: Vec<String> = batch["runs"]
        .as_array()
        .ok_or("runs")?
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect();
    let runs: serde_json::Map<String, Value> = NAMES
        .iter()
        .zip(&ids)
        .map(|(n, id)| (n.to_string(), json!(id)))
        .collect();
    wait_status(&w, &ids[0], "COMPLETED", Duration::from_secs(60));
    wait_status(&w, &ids[1], "FAILED", Duration::from_secs(60));
    // The held run reaches its gate, and the stores' outboxes settle.
    thread::sleep(Duration::from_secs(5));
    let reads: serde_json::Map<String, Value> =
        ids.iter().map(|id| (id.clone(), run(&w, id))).collect();
    let batch_id = batch["batchId"].as_str().ok_or("batchId")?.to_owned();
    let manifest = json!({
        "batchBody": body,
        "batchKey": BATCH_KEY,
        "batchId": batch_id,
        "runs": runs,
        "reads": reads,
        "batch": read(&w, &format!("/api/v1/batches/{batch_id}")),
        "listed": listed(&w),
    });
    let state = w.state_dir();
    drop(w); // stopped, so that its SQLite files are complete
    let out = fixtures().join("new");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    copy_dir(&state, &out.join("state"))?;
    // SQLite rebuilds its shared-memory files from the write-ahead logs.
    let removed = Command::new("find")
        .arg(out.join("state"))
        .args(["-name", "*-shm", "-delete"])
        .status()?;
    ensure(removed.success(), "removing the -shm files")?;
    fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    println!("fixture written to {}", out.display());
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), Failed> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    ensure(status.success(), format!("copying {}", from.display()))
}

/// The newest schema step of each object kind, as the current build knows them.
fn latest_steps() -> [(&'static str, u32); 3] {
    [
        (
            "RunStore",
            trigger_edge::objects::store::schema::SCHEMA.latest(),
        ),
        (
            "QueueGate",
            trigger_edge::objects::gate::schema::SCHEMA.latest(),
        ),
        (
            "RunExecutor",
            trigger_edge::objects::executor::schema::SCHEMA.latest(),
        ),
    ]
}

/// Every object's applied steps, from its SQLite file: `kind version count` lines, one
/// per (object kind, step), `count` the objects that applied it; and `kind none count`
/// for objects with no record.
fn applied_steps(state: &Path) -> Result<String, Failed> {
    let script = r#"
import collections, glob, sqlite3, sys
counts = collections.Counter()
for path in sorted(glob.glob(sys.argv[1] + "/v3/do/*/*.sqlite")):
    if path.endswith("/metadata.sqlite"):
        continue  # the runtime's own, not an object's
    kind = path.split("/")[-2].rsplit("-", 1)[-1]
    db = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if "schema_steps" not in tables:
        counts[(kind, "none")] += 1
        continue
    versions = [r[0] for r in db.execute("SELECT version FROM schema_steps ORDER BY version")]
    for v in versions:
        counts[(kind, str(v))] += 1
    if len(set(versions)) != len(versions):
        print("duplicate", kind, path)
for (kind, version), n in sorted(counts.items()):
    print(kind, version, n)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(state)
        .output()?;
    ensure(
        out.status.success(),
        format!(
            "reading the objects' schema steps: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every object of `kinds` (the kinds that keep tables) has recorded each step of its
/// schema once. An object migrates when it starts, so only kinds whose every object was
/// used since the upgrade are checked.
fn ensure_migrated(state: &Path, kinds: &[&str]) -> Result<(), Failed> {
    let applied = applied_steps(state)?;
    ensure(
        !applied.contains("duplicate"),
        format!("a step applied twice:\n{applied}"),
    )?;
    let checked = latest_steps()
        .into_iter()
        .filter(|(kind, _)| kinds.contains(kind));
    for (kind, latest) in checked {
        let mut objects: Vec<(u32, u32)> = applied
            .lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                (parts.next() == Some(kind)).then_some(())?;
                let version = parts.next()?.parse().ok()?;
                Some((version, parts.next()?.parse().ok()?))
            })
            .collect();
        // By version as a number (the listing sorts them as text: 10 before 2).
        objects.sort_unstable();
        ensure(
            !applied.contains(&format!("{kind} none")),
            format!("a {kind} without schema steps:\n{applied}"),
        )?;
        let count = objects.first().map(|(_, n)| *n).unwrap_or(0);
        ensure(
            count > 0,
            format!("no {kind} object in the state:\n{applied}"),
        )?;
        ensure_eq(
            objects,
            (1..=latest).map(|v| (v, count)).collect(),
            &format!("the {kind} objects' steps ({applied})"),
        )?;
    }
    Ok(())
}

/// During a deploy a caller of the earlier build may still send its commands as text:
/// `tests/rpc_compat.mjs` sends one command to a store both ways and prints the replies.
fn an_object_answers_a_caller_of_the_build_before_in_text_and_this_builds_in_bytes(
    _: &TaskServer,
) -> Result<(), Failed> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rpc_compat.mjs");
    let out = Command::new("node").arg(script).output()?;
    let printed: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "rpc_compat.mjs printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    ensure_eq(
        printed,
        json!({
            "text": ["string", "\"not_found\""],
            "bytes": ["Uint8Array", "\"not_found\""],
        }),
        "the store's replies to the same command as text and as bytes",
    )
}

fn the_current_build_reads_executes_and_deduplicates_what_an_earlier_build_stored(
    tasks: &TaskServer,
) -> Result<(), Failed> {
    let fixture = fixtures().join("unversioned");
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(fixture.join("manifest.json"))?)?;
    let id = |name: &str| {
        manifest["runs"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let url = tasks.url();
    let mut w = Worker::start_on_state("upgrade", &fixture.join("state"), |c| configure(c, &url));

    // Every run reads back as the earlier build answered, but the one whose 30 s delay
    // has passed since (it may be executing already). Fields added to the answer since
    // (`idempotencyKeyExpiresAt`) are not part of what the earlier build answered.
    for name in ["completed", "failed", "held", "delayed-decade"] {
        let run_id = id(name);
        let recorded = manifest["reads"][&run_id].clone();
        ensure_eq(
            fields_of(run(&w, &run_id), &recorded),
            recorded,
            &format!("the {name} run reads back the same"),
        )?;
    }
    let batch_id = manifest["batchId"].as_str().unwrap_or_default();
    let batch = read(&w, &format!("/api/v1/batches/{batch_id}"));
    for field in ["id", "runs", "runCount", "idempotencyKey", "createdAt"] {
        ensure_eq(
            batch[field].clone(),
            manifest["batch"][field].clone(),
            &format!("the batch's {field}"),
        )?;
    }
    ensure_eq(
        listed(&w),
        manifest["listed"].clone(),
        "the runs listed by tag",
    )?;
    // Each read reached a store, so every store has migrated.
    ensure_migrated(&w.state_dir(), &["RunStore"])?;

    // Keys: the batch key replays; a completed or queued run keeps its key; a failed run
    // does not.
    let body = manifest["batchBody"].as_str().unwrap_or_default();
    let replay = post(
        &w,
        &format!("/api/v1/tasks/{TASK}/batch"),
        body,
        &[("idempotency-key", BATCH_KEY)],
    );
    ensure_eq(replay.status, 200, &format!("replay ({})", replay.body))?;
    ensure_eq(
        replay.json()["batchId"].clone(),
        json!(batch_id),
        "the batch key replays",
    )?;
    let trigger = |key: &str, options: Value| -> Result<String, Failed> {
        let mut options = options;
        options["idempotencyKey"] = json!(key);
        let answer = post(
            &w,
            &format!("/api/v1/tasks/{TASK}/trigger"),
            &json!({"payload": {"n": 9}, "options": options}).to_string(),
            &[],
        );
        ensure_eq(answer.status, 200, &format!("trigger ({})", answer.body))?;
        Ok(answer.json()["id"].as_str().unwrap_or_default().to_owned())
    };
    ensure_eq(
        trigger("key-completed", json!({}))?,
        id("completed"),
        "a completed run keeps its key",
    )?;
    ensure_eq(
        trigger("key-held", json!({}))?,
        id("held"),
        "a queued run keeps its key",
    )?;
    let retried = trigger("key-failed", json!({}))?;
    ensure(
        retried != id("failed"),
        "a failed run's key no longer holds",
    )?;
    wait_status(&w, &retried, "COMPLETED", Duration::from_secs(60));

    // The held queue's limit of 0 still holds, for old and new runs alike, until a trigger
    // raises it.
    let queue = |limit: Option<u32>| {
        let mut q = json!({"name": HELD_QUEUE});
        if let Some(limit) = limit {
            q["concurrencyLimit"] = json!(limit);
        }
        json!({ "queue": q })
    };
    let waiting = trigger("held-after-upgrade", queue(None))?;
    thread::sleep(Duration::from_secs(3));
    for run_id in [id("held"), waiting.clone()] {
        ensure_eq(
            run(&w, &run_id)["status"].clone(),
            json!("QUEUED"),
            "held behind limit 0",
        )?;
        ensure(
            tasks.calls_of(&run_id).is_empty(),
            "a held run is never called",
        )?;
    }
    let raiser = trigger("raise-held-limit", queue(Some(5)))?;
    for run_id in [id("held"), waiting, raiser] {
        wait_status(&w, &run_id, "COMPLETED", Duration::from_secs(60));
    }

    // Delayed runs still execute: the one whose delay passed while no build ran, and the
    // decade-long one once rescheduled.
    wait_status(&w, &id("delayed-due"), "COMPLETED", Duration::from_secs(60));
    let decade = id("delayed-decade");
    let moved = post(
        &w,
        &format!("/api/v1/runs/{decade}/reschedule"),
        &json!({"delay": "1s"}).to_string(),
        &[],
    );
    ensure_eq(moved.status, 200, &format!("reschedule ({})", moved.body))?;
    wait_status(&w, &decade, "COMPLETED", Duration::from_secs(60));
    for name in ["completed", "failed"] {
        ensure(
            tasks.calls_of(&id(name)).is_empty(),
            format!("the {name} run is never called again"),
        )?;
    }
    for name in NAMES {
        let calls = tasks.calls_of(&id(name));
        let attempts: std::collections::HashSet<u64> = calls.iter().map(|c| c.attempt).collect();
        ensure_eq(
            attempts.len(),
            calls.len(),
            &format!("no attempt of {name} twice"),
        )?;
    }

    // Every object has been used by now. A second start finds every step applied and
    // applies none again.
    let every_kind = ["RunStore", "QueueGate", "RunExecutor"];
    ensure_migrated(&w.state_dir(), &every_kind)?;
    w.kill_hard();
    w.restart();
    let recorded = manifest["reads"][&id("completed")].clone();
    ensure_eq(
        fields_of(run(&w, &id("completed")), &recorded),
        recorded,
        "the completed run after a second start",
    )?;
    ensure_migrated(&w.state_dir(), &every_kind)
}

/// `answer` with only the fields `recorded` has: what an earlier build answered, read
/// again, whatever the answer gained since.
fn fields_of(answer: Value, recorded: &Value) -> Value {
    match (answer, recorded.as_object()) {
        (Value::Object(mut fields), Some(keys)) => {
            fields.retain(|key, _| keys.contains_key(key));
            Value::Object(fields)
        }
        (answer, _) => answer,
    }
}
