//! End-to-end tests against the real Workers runtime: `wrangler dev` running the built
//! worker with its SQLite Durable Objects and local Queue. Each test speaks HTTP only,
//! isolates itself with unique task payloads and keys, and polls with a deadline for
//! effects of the queue consumer.

mod budget;
mod bulk;
mod crash;
mod execution;
mod harness;
mod hostile;
mod isolation;
mod limits;
mod node_tasks;
mod queues;
mod run_manage;
mod schedules;
mod schema;
mod sdk;
mod shards;
mod task_server;
mod two_step;
mod upgrade;

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{json, Value};

use execution::Case;
use harness::{eventually, get, get_with, request, request_chunked, Answer, Worker, DEV_KEY};
use task_server::TaskServer;

/// `(name, function)` pairs: a test is named after its function.
#[macro_export]
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        vec![$((stringify!($case), $case as _)),*]
    };
}

fn main() {
    let args = Arguments::from_args();
    let tasks = TaskServer::start();
    let main_cases = cases![
        batch_of_100_items_returns_100_distinct_ids_in_order_each_readable,
        batch_with_101_items_is_rejected_with_400,
        missing_malformed_and_unknown_keys_are_401,
        undeclared_task_is_404,
        invalid_json_empty_body_and_wrong_types_are_400,
        same_key_twice_in_one_batch_is_one_run_with_its_id_twice,
        same_key_in_a_later_batch_returns_the_same_run,
        texts_of_any_script_round_trip_and_their_keys_find_their_runs_again,
        twenty_concurrent_requests_racing_on_one_key_create_one_run,
        repeated_batch_key_header_replays_and_a_different_body_is_422,
        ten_concurrent_batches_with_one_batch_key_make_one_batch,
        delayed_and_ttl_runs_show_delayed_until_and_ttl,
        every_accepted_run_is_delivered_to_the_queue_consumer,
        payload_of_2_5_mib_round_trips_byte_for_byte,
        status_names_follow_the_api_version_header,
        wrong_method_is_405_and_unknown_path_is_404,
        the_operations_account_is_keyed_and_off_unless_metering_is_on,
        the_list_pages_newest_first_across_batches_and_back_with_its_cursors,
    ]
    .into_iter()
    .chain(execution::cases())
    .chain(two_step::cases())
    .chain(isolation::cases())
    .chain(sdk::cases())
    .chain(run_manage::cases())
    .collect();
    let endpoint = tasks.clone();
    let budget_endpoint = tasks.clone();
    let shards_endpoint = tasks.clone();
    let queues_endpoint = tasks.clone();
    let schedules_endpoint = tasks.clone();
    let bulk_endpoint = tasks.clone();
    let groups = vec![
        Group::new("main", main_cases, move |c| {
            execution::declare_task(c, &endpoint)
        })
        .with_example_tasks(),
        Group::new(
            "broken-config",
            cases![malformed_task_declaration_fails_loudly_with_500_naming_task_and_field],
            declare_a_malformed_task,
        ),
        // Abusive requests: an upload cut short can upset wrangler's dev proxy for the
        // next request, so these run one at a time on a worker of their own.
        Group::new(
            "hostile",
            cases![body_over_3_mib_is_413_with_or_without_content_length]
                .into_iter()
                .chain(two_step::hostile_cases())
                .chain(hostile::cases())
                .collect(),
            |_| {},
        )
        .one_at_a_time(),
        Group::new("rate-limited", limits::cases(), limits::configure),
        Group::new("fuzzed", schema::cases(), schema::configure),
        Group::new("shards", shards::cases(), move |c| {
            shards::configure(c, &shards_endpoint)
        }),
        Group::new("queues", queues::cases(), move |c| {
            queues::configure(c, &queues_endpoint)
        }),
        // Counts: nothing but the budget's scenarios may run on this worker.
        Group::new("schedules", schedules::cases(), move |c| {
            schedules::configure(c, &schedules_endpoint)
        }),
        Group::new("bulk", bulk::cases(), move |c| {
            bulk::configure(c, &bulk_endpoint)
        })
        .one_at_a_time(),
        Group::new("budget", budget::cases(), move |c| {
            budget::configure(c, &budget_endpoint)
        })
        .on_miniflare(),
    ];

    // Every worker starts at once; none builds (the test command built the worker).
    let started: Vec<Option<Arc<Worker>>> = groups
        .iter()
        .map(|g| {
            let (name, configure, examples) = (g.name, g.configure.clone(), g.example_tasks);
            let miniflare = g.miniflare;
            (!args.list).then(|| {
                thread::spawn(move || {
                    if examples {
                        Worker::start_with_examples(name, |c| configure(c))
                    } else if miniflare {
                        Worker::start_on_miniflare(name, |c| configure(c))
                    } else {
                        Worker::start(name, |c| configure(c))
                    }
                })
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.map(|h| Arc::new(h.join().expect("a test worker starts"))))
        .collect();

    let mut trials = Vec::new();
    for (group, worker) in groups.into_iter().zip(&started) {
        let lock = group
            .one_at_a_time
            .then(|| Arc::new(std::sync::Mutex::new(())));
        for (name, case) in group.cases {
            let (worker, tasks, lock) = (worker.clone(), tasks.clone(), lock.clone());
            trials.push(Trial::test(name, move || {
                let _turn = lock
                    .as_ref()
                    .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
                case(worker.as_deref().expect("worker started"), &tasks)
            }));
        }
    }

    // Cases that start (and kill) workers of their own.
    for (name, case) in crash::cases()
        .into_iter()
        .chain(upgrade::cases())
        .chain(node_tasks::cases())
        .chain(shards::standalone_cases())
        .chain(queues::standalone_cases())
        .chain(schedules::standalone_cases())
        .chain(bulk::standalone_cases())
    {
        let tasks = tasks.clone();
        trials.push(Trial::test(name, move || case(&tasks)));
    }
    for (name, case) in upgrade::ignored_cases() {
        let tasks = tasks.clone();
        trials.push(Trial::test(name, move || case(&tasks)).with_ignored_flag(true));
    }

    let conclusion = libtest_mimic::run(&args, trials);
    // Last, over everything the run produced: the logs of every worker, every answer
    // received, every call made to the task endpoint.
    if !args.list && args.filter.is_none() {
        let logs: Vec<String> = started.iter().flatten().map(|w| w.log()).collect();
        match execution::secrets_leaked(&logs, &tasks) {
            None => println!(
                "secrets: no key or signing secret in {} worker logs, any answer or task call",
                logs.len()
            ),
            Some(leak) => {
                eprintln!("secrets: {leak}");
                std::process::exit(101);
            }
        }
    }
    drop(started);
    conclusion.exit();
}

/// A worker the suite starts (named, with its configuration changed by `configure`) and
/// the cases that run against it.
struct Group {
    name: &'static str,
    configure: Arc<dyn Fn(&mut toml::Table) + Send + Sync>,
    cases: Vec<(&'static str, Case)>,
    one_at_a_time: bool,
    /// Runs the example tasks Worker beside the worker (`Worker::start_with_examples`).
    example_tasks: bool,
    /// Runs the worker under Miniflare's API, not `wrangler dev`
    /// (`Worker::start_on_miniflare`).
    miniflare: bool,
}

impl Group {
    fn new(
        name: &'static str,
        cases: Vec<(&'static str, Case)>,
        configure: impl Fn(&mut toml::Table) + Send + Sync + 'static,
    ) -> Group {
        Group {
            name,
            configure: Arc::new(configure),
            cases,
            one_at_a_time: false,
            example_tasks: false,
            miniflare: false,
        }
    }

    fn on_miniflare(self) -> Group {
        Group {
            miniflare: true,
            ..self
        }
    }

    fn with_example_tasks(self) -> Group {
        Group {
            example_tasks: true,
            ..self
        }
    }

    fn one_at_a_time(self) -> Group {
        Group {
            one_at_a_time: true,
            ..self
        }
    }
}

fn declare_a_malformed_task(config: &mut toml::Table) {
    let tasks = config["vars"]["TASKS"].as_table_mut().unwrap();
    tasks.insert(
        "broken".into(),
        toml::Value::Table(toml::toml! { endpoint = "https://example.com" maxAttempts = 0 }),
    );
}

// ---------------------------------------------------------------------------------------
// Helpers

fn ensure(condition: bool, message: impl Into<String>) -> Result<(), Failed> {
    if condition {
        Ok(())
    } else {
        Err(message.into().into())
    }
}

fn ensure_eq<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), Failed> {
    ensure(got == want, format!("{what}: got {got:?}, want {want:?}"))
}

fn auth(key: &str) -> String {
    format!("Bearer {key}")
}

fn trigger_raw(w: &Worker, task: &str, body: &[u8], extra: &[(&str, &str)]) -> Answer {
    let authorization = auth(DEV_KEY);
    let mut headers = vec![
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    request(
        "POST",
        &w.url(&format!("/api/v1/tasks/{task}/batch")),
        &headers,
        body,
    )
}

fn trigger(w: &Worker, body: &Value) -> Answer {
    trigger_raw(w, "hello-world", body.to_string().as_bytes(), &[])
}

/// Triggers and expects a 200; returns the run ids.
fn trigger_ok(w: &Worker, body: &Value) -> Result<(String, Vec<String>), Failed> {
    let answer = trigger(w, body);
    ensure_eq(
        answer.status,
        200,
        &format!("status of a batch ({})", answer.body),
    )?;
    let json = answer.json();
    let runs = json["runs"].as_array().ok_or("runs is an array")?;
    let runs = runs
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect();
    Ok((
        json["batchId"].as_str().unwrap_or_default().to_owned(),
        runs,
    ))
}

fn read_run(w: &Worker, id: &str) -> Answer {
    get(&w.url(&format!("/api/v3/runs/{id}")), Some(DEV_KEY))
}

/// A name no other test uses, made of characters that survive queue-name cleaning.
fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{nanos}-{n}")
}

fn is_run_id(id: &str) -> bool {
    id.len() == 25
        && id.starts_with("run_")
        && id[4..]
            .bytes()
            .all(|c| b"123456789abcdefghijkmnopqrstuvwxyz".contains(&c))
}

// ---------------------------------------------------------------------------------------
// The batch endpoint (docs/API.md section 2)

fn batch_of_100_items_returns_100_distinct_ids_in_order_each_readable(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("hundred");
    let items: Vec<Value> = (0..100)
        .map(|i| json!({"payload": {"i": i}, "options": {"tags": [tag]}}))
        .collect();
    let (batch_id, runs) = trigger_ok(w, &json!({ "items": items }))?;
    ensure_eq(runs.len(), 100, "run count")?;
    ensure_eq(
        runs.iter().collect::<HashSet<_>>().len(),
        100,
        "distinct ids",
    )?;
    ensure(
        runs.iter().all(|r| is_run_id(r)),
        format!("run id format: {runs:?}"),
    )?;
    ensure(
        batch_id.starts_with("batch_") && batch_id.len() == 27,
        format!("batch id {batch_id}"),
    )?;
    for (i, id) in runs.iter().enumerate() {
        let run = read_run(w, id);
        ensure_eq(run.status, 200, "read status")?;
        let run = run.json();
        ensure_eq(&run["payload"], &json!({"i": i}), "payload in item order")?;
        // Not delayed: queued, or already on its way through the example task.
        let status = run["status"].as_str().unwrap_or_default();
        ensure(
            ["QUEUED", "EXECUTING", "COMPLETED"].contains(&status),
            format!("status {status}"),
        )?;
        ensure_eq(&run["batchId"], &json!(batch_id), "batchId")?;
        ensure_eq(&run["taskIdentifier"], &json!("hello-world"), "task")?;
        ensure_eq(&run["tags"], &json!([tag]), "tags")?;
    }
    let batch = get(
        &w.url(&format!("/api/v1/batches/{batch_id}")),
        Some(DEV_KEY),
    )
    .json();
    ensure_eq(&batch["runCount"], &json!(100), "batch runCount")?;
    ensure_eq(&batch["runs"], &json!(runs), "batch runs")
}

fn batch_with_101_items_is_rejected_with_400(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let items: Vec<Value> = (0..101).map(|i| json!({"payload": i})).collect();
    let answer = trigger(w, &json!({ "items": items }));
    ensure_eq(answer.status, 400, "status")?;
    ensure_eq(
        answer.error(),
        "Too many items. Maximum allowed batch size is 100.".into(),
        "message",
    )
}

fn missing_malformed_and_unknown_keys_are_401(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let url = w.url("/api/v1/tasks/hello-world/batch");
    let body = br#"{"items":[{}]}"#;
    for (headers, message) in [
        (vec![], "Invalid or Missing API key"),
        (
            vec![("authorization", "Basic abc")],
            "Invalid or Missing API key",
        ),
        (
            vec![("authorization", "Bearer")],
            "Invalid or Missing API key",
        ),
        (
            vec![("authorization", "Bearer tr_dev_not_a_configured_key")],
            "Invalid API key",
        ),
    ] {
        let answer = request("POST", &url, &headers, body);
        ensure_eq(answer.status, 401, &format!("status for {headers:?}"))?;
        ensure_eq(answer.error(), message.to_owned(), "message")?;
    }
    let read = get(
        &w.url("/api/v3/runs/run_123456789abcdefghijkm"),
        Some("tr_dev_wrong"),
    );
    ensure_eq(read.status, 401, "reads need a key too")
}

fn undeclared_task_is_404(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let answer = trigger_raw(w, "no-such-task", br#"{"items":[{"payload":1}]}"#, &[]);
    ensure_eq(answer.status, 404, "status")?;
    ensure_eq(answer.error(), "Task not found".into(), "message")
}

fn body_over_3_mib_is_413_with_or_without_content_length(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let big = format!(r#"{{"items":[{{"payload":"{}"}}]}}"#, "x".repeat(4 << 20));
    let answer = trigger_raw(w, "hello-world", big.as_bytes(), &[]);
    ensure_eq(answer.status, 413, "status with content-length")?;
    ensure_eq(answer.error(), "Request body too large".into(), "message")?;

    let authorization = auth(DEV_KEY);
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    let answer = request_chunked(
        &w.url("/api/v1/tasks/hello-world/batch"),
        &headers,
        big.as_bytes(),
    );
    // The worker stops reading at 3 MiB; the client may see the 413 or a closed socket.
    ensure(
        answer.status == 413 || answer.status == 0,
        format!("chunked status {}", answer.status),
    )?;
    if answer.status == 413 {
        ensure_eq(
            answer.error(),
            "Request body too large".into(),
            "chunked message",
        )?;
    }
    // After an upload cut short, wrangler's dev proxy may answer the next request with
    // "Your worker restarted mid-request" (a local-only artefact): absorb it here.
    let _ = get(&w.url("/"), None);
    Ok(())
}

fn invalid_json_empty_body_and_wrong_types_are_400(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    for (body, message) in [
        (&b""[..], "Request body is empty"),
        (b"{\"items\": [", "Invalid JSON"),
        (b"not json", "Invalid JSON"),
        (br#"{"items": []}"#, "No items to trigger"),
        (br#"{"items": "abc"}"#, "Validation error: items: expected an array"),
        (br#"{"items": [{"options": {"tags": 5}}]}"#, "Validation error: items[0].options.tags: expected a string or an array of strings"),
        (br#"{"items": [{}, {}, {}, {"options": {"tags": ["a","b","c","d","e","f"]}}]}"#, "Validation error: items[3].options.tags: at most 5 tags per run"),
        (br#"{"items": [{"options": {"delay": "1.5h"}}]}"#, "Validation error: items[0].options.delay: expected a duration like 1h42m (units w, d, h or hr, m, s) or an ISO-8601 date-time like 2030-01-01T00:00:00Z"),
        (br#"{"items": [{"options": {"queue": {"concurrencyLimit": 5000}}}]}"#, "Validation error: items[0].options.queue.concurrencyLimit: must be an integer from 0 to 1000"),
    ] {
        let answer = trigger_raw(w, "hello-world", body, &[]);
        ensure_eq(answer.status, 400, &format!("status for {:?}: {answer:?}", String::from_utf8_lossy(body)))?;
        ensure_eq(answer.error(), message.to_owned(), "message")?;
    }
    Ok(())
}

fn same_key_twice_in_one_batch_is_one_run_with_its_id_twice(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let key = unique("in-batch");
    let (batch_id, runs) = trigger_ok(
        w,
        &json!({"items": [
            {"payload": "first", "options": {"idempotencyKey": key}},
            {"payload": "other"},
            {"payload": "second", "options": {"idempotencyKey": key}}
        ]}),
    )?;
    ensure_eq(
        runs[0].clone(),
        runs[2].clone(),
        "both positions carry one id",
    )?;
    ensure(runs[0] != runs[1], "the unkeyed item is its own run")?;
    let run = read_run(w, &runs[0]).json();
    ensure_eq(
        &run["payload"],
        &json!("first"),
        "the first item made the run",
    )?;
    ensure_eq(&run["idempotencyKey"], &json!(key), "the key is on the run")?;
    let batch = get(
        &w.url(&format!("/api/v1/batches/{batch_id}")),
        Some(DEV_KEY),
    )
    .json();
    ensure_eq(&batch["runs"], &json!(runs), "the batch lists the id twice")
}

fn same_key_in_a_later_batch_returns_the_same_run(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let key = unique("later");
    let (_, first) = trigger_ok(
        w,
        &json!({"items": [{"payload": 1, "options": {"idempotencyKey": key}}]}),
    )?;
    let (_, second) = trigger_ok(
        w,
        &json!({"items": [{"payload": 2, "options": {"idempotencyKey": key}}, {"payload": 3}]}),
    )?;
    ensure_eq(
        second[0].clone(),
        first[0].clone(),
        "the later batch gets the existing run",
    )?;
    ensure_eq(
        &read_run(w, &first[0]).json()["payload"],
        &json!(1),
        "the run is unchanged",
    )
}

/// A batch's rows and keys are written as texts cut by byte from one blob, and keys are
/// looked up the same way (`platform::packed`): multi-byte characters in keys,
/// concurrency keys, tags and payloads come back exactly, and each key finds its run
/// again whatever its position.
fn texts_of_any_script_round_trip_and_their_keys_find_their_runs_again(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let keys = [unique("clé-✓"), unique("鍵"), unique("ключ-🙂")];
    let item = |i: usize, key: &str| {
        json!({"payload": {"text": format!("é{i}✓🙂")}, "options": {
            "idempotencyKey": key,
            "concurrencyKey": format!("clé-{i}-✓"),
            "tags": [format!("étiquette-{i}"), "ascii"],
        }})
    };
    let mut items: Vec<Value> = keys.iter().enumerate().map(|(i, k)| item(i, k)).collect();
    items.push(json!({"payload": "no key"}));
    let (_, first) = trigger_ok(w, &json!({ "items": items }))?;
    for (i, key) in keys.iter().enumerate() {
        let run = read_run(w, &first[i]).json();
        ensure_eq(&run["idempotencyKey"], &json!(key), "the key")?;
        ensure_eq(
            &run["concurrencyKey"],
            &json!(format!("clé-{i}-✓")),
            "the concurrency key",
        )?;
        ensure_eq(
            &run["tags"],
            &json!([format!("étiquette-{i}"), "ascii"]),
            "the tags",
        )?;
        ensure_eq(
            &run["payload"],
            &json!({"text": format!("é{i}✓🙂")}),
            "the payload",
        )?;
    }
    let fresh = unique("nøkkel");
    let (_, second) = trigger_ok(
        w,
        &json!({"items": [item(9, &keys[2]), item(9, &fresh), item(9, &keys[0])]}),
    )?;
    ensure_eq(&second[0], &first[2], "the third key's run")?;
    ensure_eq(&second[2], &first[0], "the first key's run")?;
    ensure(!first.contains(&second[1]), "a new key makes a new run")?;
    ensure_eq(
        &read_run(w, &second[1]).json()["idempotencyKey"],
        &json!(fresh),
        "the new key",
    )
}

fn twenty_concurrent_requests_racing_on_one_key_create_one_run(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let key = unique("race");
    let ids: Vec<Result<Vec<String>, String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let key = key.clone();
                s.spawn(move || {
                    trigger_ok(
                        w,
                        &json!({"items": [{"payload": i, "options": {"idempotencyKey": key}}]}),
                    )
                    .map(|(_, runs)| runs)
                    .map_err(|e| format!("{e:?}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut distinct = HashSet::new();
    for result in ids {
        distinct.insert(result.map_err(Failed::from)?[0].clone());
    }
    ensure_eq(distinct.len(), 1, "distinct runs across 20 racing requests")
}

fn repeated_batch_key_header_replays_and_a_different_body_is_422(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let key = unique("batch-key");
    let body = json!({"items": [{"payload": 1}, {"payload": 2}]}).to_string();
    let headers = [
        ("idempotency-key", key.as_str()),
        ("idempotency-key-ttl", "1h"),
    ];
    let first = trigger_raw(w, "hello-world", body.as_bytes(), &headers);
    ensure_eq(first.status, 200, "first status")?;
    let again = trigger_raw(w, "hello-world", body.as_bytes(), &headers);
    ensure_eq(again.status, 200, "repeat status")?;
    ensure_eq(again.json(), first.json(), "identical response")?;
    let batch_id = first.json()["batchId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let batch = get(
        &w.url(&format!("/api/v1/batches/{batch_id}")),
        Some(DEV_KEY),
    )
    .json();
    ensure_eq(&batch["idempotencyKey"], &json!(key), "key on the batch")?;

    let other = json!({"items": [{"payload": 3}]}).to_string();
    let conflict = trigger_raw(w, "hello-world", other.as_bytes(), &headers);
    ensure_eq(conflict.status, 422, "different body")?;
    ensure_eq(
        conflict.error(),
        "Idempotency key was already used for a different batch".into(),
        "message",
    )
}

/// Ten identical batches with one batch key at once: a store takes triggers that arrive
/// together as one group, and within it the first writes the key and the others replay it.
fn ten_concurrent_batches_with_one_batch_key_make_one_batch(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let key = unique("batch-key-race");
    let body = json!({"items": [{"payload": 1}, {"payload": 2}, {"payload": 3}]}).to_string();
    let answers: Vec<Answer> = thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    trigger_raw(
                        w,
                        "hello-world",
                        body.as_bytes(),
                        &[("idempotency-key", key.as_str())],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answer in &answers {
        ensure_eq(answer.status, 200, "every racing batch is answered 200")?;
    }
    let distinct: HashSet<String> = answers.iter().map(|a| a.json().to_string()).collect();
    ensure_eq(
        distinct.len(),
        1,
        "one batch and one set of runs for all ten",
    )?;
    let runs = answers[0].json()["runs"].as_array().map_or(0, Vec::len);
    ensure_eq(runs, 3, "runs in the batch")
}

fn delayed_and_ttl_runs_show_delayed_until_and_ttl(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let (_, runs) = trigger_ok(
        w,
        &json!({"items": [
            {"payload": 1, "options": {"delay": "1h", "ttl": "10m"}},
            {"payload": 2, "options": {"delay": "2030-01-01T00:00:00.000Z", "ttl": 3600}},
            {"payload": 3, "options": {"delay": "2001-01-01T00:00:00Z"}}
        ]}),
    )?;
    let hour = read_run(w, &runs[0]).json();
    ensure_eq(&hour["status"], &json!("DELAYED"), "delay 1h")?;
    ensure_eq(&hour["ttl"], &json!("10m"), "ttl string")?;
    let until = hour["delayedUntil"].as_str().ok_or("delayedUntil is set")?;
    ensure(
        until.ends_with('Z') && until.len() == 24,
        format!("delayedUntil is ISO with ms: {until}"),
    )?;
    let date = read_run(w, &runs[1]).json();
    ensure_eq(
        &date["delayedUntil"],
        &json!("2030-01-01T00:00:00.000Z"),
        "delay date",
    )?;
    ensure_eq(&date["ttl"], &json!("3600s"), "ttl seconds")?;
    let past = read_run(w, &runs[2]).json();
    let status = past["status"].as_str().unwrap_or_default();
    ensure(
        ["QUEUED", "EXECUTING", "COMPLETED"].contains(&status),
        format!("a past date runs now, not {status}"),
    )?;
    ensure(
        past.get("delayedUntil").is_none(),
        "no delayedUntil for a past date",
    )
}

fn every_accepted_run_is_delivered_to_the_queue_consumer(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let mut all = Vec::new();
    for round in 0..3 {
        let items: Vec<Value> = (0..50).map(|i| json!({"payload": [round, i]})).collect();
        all.extend(trigger_ok(w, &json!({ "items": items }))?.1);
    }
    eventually(
        Duration::from_secs(60),
        "every run delivered to the consumer",
        || {
            let log = w.log();
            let delivered: HashSet<&str> = log
                .lines()
                .filter_map(|line| line.split_once("queue: delivered from "))
                .flat_map(|(_, rest)| rest.split_whitespace().skip(1))
                .collect();
            all.iter()
                .all(|id| delivered.contains(id.as_str()))
                .then_some(())
        },
    );
    Ok(())
}

fn payload_of_2_5_mib_round_trips_byte_for_byte(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    // Larger than a SQLite row may hold: the store splits and rejoins it.
    let text: String = (0..(2_621_440 / 10))
        .map(|i| format!("{:09}é", i % 1_000_000_000))
        .collect();
    let payload = format!(r#"{{"blob" : "{text}", "n": 1.50}}"#);
    let body = format!(
        r#"{{"items":[{{"payload":{payload},"options":{{"payloadType":"application/json"}}}}]}}"#
    );
    let answer = trigger_raw(w, "hello-world", body.as_bytes(), &[]);
    ensure_eq(
        answer.status,
        200,
        &format!("status ({})", &answer.body[..answer.body.len().min(200)]),
    )?;
    let id = answer.json()["runs"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let run = read_run(w, &id);
    ensure_eq(run.status, 200, "read")?;
    ensure(
        run.body.contains(&format!(r#""payload":{payload}"#)),
        "the payload comes back exactly as sent",
    )
}

// ---------------------------------------------------------------------------------------
// Reads and the rest of section 1

fn status_names_follow_the_api_version_header(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let (_, runs) = trigger_ok(
        w,
        &json!({"items": [{"payload": 1, "options": {"delay": "1h"}}]}),
    )?;
    let url = w.url(&format!("/api/v3/runs/{}", runs[0]));
    let v4 = get_with(
        &url,
        Some(DEV_KEY),
        &[("x-trigger-api-version", "2025-07-16")],
    )
    .json();
    ensure_eq(&v4["status"], &json!("DELAYED"), "4.x name")?;
    ensure_eq(&v4["isWaiting"], &json!(false), "isWaiting present")?;
    let malformed = get(&w.url("/api/v3/runs/run_not-an-id"), Some(DEV_KEY));
    ensure_eq(malformed.status, 404, "malformed id")?;
    ensure_eq(malformed.error(), "Run not found".into(), "message")
}

fn wrong_method_is_405_and_unknown_path_is_404(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let answer = get(&w.url("/api/v1/tasks/hello-world/batch"), Some(DEV_KEY));
    ensure_eq(answer.status, 405, "GET on the batch endpoint")?;
    ensure_eq(answer.header("allow"), Some("POST"), "Allow header")?;
    // A method the API does not use is not taken for a GET.
    let auth = auth(DEV_KEY);
    let unknown = request(
        "PROPFIND",
        &w.url("/api/v1/runs"),
        &[("authorization", &auth)],
        b"",
    );
    ensure_eq(unknown.status, 405, "PROPFIND on the run list")?;
    ensure_eq(unknown.header("allow"), Some("GET"), "its Allow header")?;
    let missing = get(&w.url("/api/v9/nothing"), Some(DEV_KEY));
    ensure_eq(missing.status, 404, "unknown path")?;
    ensure_eq(missing.error(), "Not found".into(), "message")
}

/// `GET /api/v1/meter` takes a key, and this worker (like a deployed one by default) does
/// not count: the budget test shows it counting.
fn the_operations_account_is_keyed_and_off_unless_metering_is_on(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let unkeyed = get(&w.url("/api/v1/meter"), None);
    ensure_eq(unkeyed.status, 401, "without a key")?;
    let off = get(&w.url("/api/v1/meter"), Some(DEV_KEY));
    ensure_eq(off.status, 404, "metering off")?;
    ensure_eq(
        off.error(),
        "Metering is off: set the METERING var to \"on\"".into(),
        "message",
    )
}

/// The list of runs across several accepts (each a listing row of its own, store step 6):
/// pages of 5 over 12 runs in three batches, newest first (the later batch first, each
/// batch's runs by id, descending), every run once; a page's `previous` cursor gives the
/// page before it again.
fn the_list_pages_newest_first_across_batches_and_back_with_its_cursors(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("pages");
    let mut expected = Vec::new();
    for batch in 0..3 {
        let items: Vec<Value> = (0..4)
            .map(|i| json!({"payload": {"batch": batch, "i": i}, "options": {"tags": [tag]}}))
            .collect();
        let (_, mut runs) = trigger_ok(w, &json!({ "items": items }))?;
        runs.sort();
        runs.reverse();
        expected.splice(0..0, runs); // a later batch is newer: it comes first
    }
    let page = |cursor: &str| -> Result<(Vec<String>, Value), Failed> {
        let url = format!("/api/v1/runs?filter[tag]={tag}&page[size]=5{cursor}");
        let answer = get(&w.url(&url), Some(DEV_KEY));
        ensure_eq(answer.status, 200, &format!("GET {url}: {}", answer.body))?;
        let json = answer.json();
        let ids = json["data"]
            .as_array()
            .ok_or("data is an array")?
            .iter()
            .map(|run| run["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        Ok((ids, json["pagination"].clone()))
    };
    let cursor = |pagination: &Value, which: &str| -> Result<String, Failed> {
        Ok(pagination[which]
            .as_str()
            .ok_or_else(|| format!("no {which} cursor in {pagination}"))?
            .to_owned())
    };
    let (first, pagination) = page("")?;
    let (second, pagination) = page(&format!("&page[after]={}", cursor(&pagination, "next")?))?;
    let (third, last) = page(&format!("&page[after]={}", cursor(&pagination, "next")?))?;
    let listed: Vec<String> = [first.clone(), second.clone(), third.clone()].concat();
    ensure_eq(listed, expected, "the runs, newest first, each once")?;
    ensure_eq(last["next"].clone(), Value::Null, "no page after the last")?;
    let (again, _) = page(&format!("&page[before]={}", cursor(&last, "previous")?))?;
    ensure_eq(again, second, "the page before the last, from its cursor")?;
    let (again, _) = page(&format!(
        "&page[before]={}",
        cursor(&pagination, "previous")?
    ))?;
    ensure_eq(again, first, "the first page, from the second's cursor")
}

fn malformed_task_declaration_fails_loudly_with_500_naming_task_and_field(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let answer = request(
        "POST",
        &w.url("/api/v1/tasks/hello-world/batch"),
        &[("authorization", &auth(DEV_KEY))],
        br#"{"items":[{}]}"#,
    );
    ensure_eq(answer.status, 500, "status")?;
    let message = answer.error();
    ensure(
        message.contains(r#"TASKS["broken"].maxAttempts"#) && message.contains("1 to 100"),
        format!("the message names the task and the field: {message}"),
    )?;
    ensure_eq(
        answer.header("x-should-retry"),
        Some("false"),
        "not retryable",
    )?;
    eventually(Duration::from_secs(10), "the error in the log", || {
        w.log()
            .contains(r#"TASKS["broken"].maxAttempts"#)
            .then_some(())
    });
    Ok(())
}
