//! The example tasks served by Node's http server (`examples/node-tasks`, the task
//! package's Node adapter), called by a worker that declares them with an `endpoint`;
//! and calls the worker never made (a forged or stale signature) refused without running.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::harness::{eventually, get, request, Worker, DEV_KEY, SIGNING_SECRET};
use crate::task_server::{epoch_ms, TaskServer};
use crate::{auth, ensure, ensure_eq};

pub fn cases() -> Vec<(&'static str, crate::crash::Standalone)> {
    crate::cases![the_node_example_runs_the_example_tasks_and_refuses_calls_it_cannot_verify]
}

/// The Node server, stopped by its process group id when dropped.
struct NodeTasks {
    child: Child,
    url: String,
}

impl NodeTasks {
    fn start() -> NodeTasks {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(root.join("examples/node-tasks"))
            .env("TASK_SIGNING_SECRET", SIGNING_SECRET)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("node starts (run scripts/setup)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the server says where it listens");
        let url = line.split_whitespace().last().expect("a URL").to_owned();
        NodeTasks { child, url }
    }
}

impl Drop for NodeTasks {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn the_node_example_runs_the_example_tasks_and_refuses_calls_it_cannot_verify(
    _tasks: &TaskServer,
) -> Result<(), Failed> {
    let node = NodeTasks::start();
    let url = node.url.clone();
    let w = Worker::start("node-tasks", move |config| {
        for task in ["echo-types", "give-up"] {
            crate::execution::declare_endpoint_task(config, task, &url, 3, 30);
        }
    });
    // As SDK 4 sends an object: superjson text.
    let payload = r#"{"json":{"at":"2026-01-02T03:04:05.000Z","big":"10","n":1},"meta":{"values":{"at":["Date"],"big":["bigint"]}}}"#;
    let authorization = auth(DEV_KEY);
    let headers = [
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    let body = json!({"payload": payload, "options": {"payloadType": "application/super+json"}});
    let answer = request(
        "POST",
        &w.url("/api/v1/tasks/echo-types/trigger"),
        &headers,
        body.to_string().as_bytes(),
    );
    ensure_eq(answer.status, 200, &format!("trigger ({})", answer.body))?;
    let id = answer.json()["id"].as_str().unwrap_or_default().to_owned();
    let run = eventually(Duration::from_secs(60), "echo-types to complete", || {
        let run = get(&w.url(&format!("/api/v3/runs/{id}")), Some(DEV_KEY)).json();
        (run["status"] == "COMPLETED").then_some(run)
    });
    ensure_eq(
        run["output"]["json"]["types"].clone(),
        json!({"at": "Date", "big": "bigint", "n": "number"}),
        "the task saw a Date and a BigInt",
    )?;
    ensure_eq(
        run["outputType"].clone(),
        json!("application/super+json"),
        "its output is superjson",
    )?;

    let abort = request(
        "POST",
        &w.url("/api/v1/tasks/give-up/trigger"),
        &headers,
        json!({"payload": {"reason": "stop"}})
            .to_string()
            .as_bytes(),
    );
    let id = abort.json()["id"].as_str().unwrap_or_default().to_owned();
    let run = eventually(Duration::from_secs(60), "give-up to fail", || {
        let run = get(&w.url(&format!("/api/v3/runs/{id}")), Some(DEV_KEY)).json();
        (run["status"] == "FAILED").then_some(run)
    });
    ensure_eq(run["attemptCount"].clone(), json!(1), "one attempt")?;
    ensure_eq(
        run["error"]["message"].clone(),
        json!("stop"),
        "its message",
    )?;

    // Calls the worker did not sign never run a task.
    let call = json!({"id": "run_forged", "task": "echo-types", "attempt": 1, "payload": {"n": 1},
        "payloadType": "application/json", "queue": "q", "createdAt": "2026-12-01T10:00:00.000Z"})
    .to_string();
    let now = epoch_ms().to_string();
    let forged = request(
        "POST",
        &node.url,
        &[
            ("content-type", "application/json"),
            ("x-trigger-timestamp", &now),
            ("x-trigger-signature", &format!("v1={}", "0".repeat(64))),
        ],
        call.as_bytes(),
    );
    ensure_eq(forged.status, 401, "a forged signature")?;
    ensure_eq(
        forged.json(),
        json!({"error": "Invalid signature (mismatch)"}),
        "what a forged call is told",
    )?;
    let stale_at = (epoch_ms() - 10 * 60 * 1000) as i64;
    let stale_signature = trigger_edge::domain::run::execution::sign(
        SIGNING_SECRET.as_bytes(),
        stale_at,
        call.as_bytes(),
    );
    let stale = request(
        "POST",
        &node.url,
        &[
            ("content-type", "application/json"),
            ("x-trigger-timestamp", &stale_at.to_string()),
            ("x-trigger-signature", &stale_signature),
        ],
        call.as_bytes(),
    );
    ensure_eq(stale.status, 401, "a stale signature")?;
    let unsigned = request("POST", &node.url, &[], call.as_bytes());
    ensure_eq(unsigned.status, 401, "no signature")?;
    let output: Value = forged.json();
    ensure(output.get("output").is_none(), "nothing ran")
}
