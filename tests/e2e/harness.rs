//! Starts the built worker under `wrangler dev` and speaks HTTP to it.
//!
//! Each `Worker` runs the shipped `wrangler.toml` (minus its `[build]` step: the test
//! command builds once beforehand) from a fresh folder under `target/e2e`, with its own
//! `.dev.vars`, free ports and an empty `--persist-to` state. It is stopped by process
//! group id when dropped, never by name. The budget's worker runs the same configuration
//! under Miniflare's API instead (`Worker::start_on_miniflare`).

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// API keys the test workers accept.
pub const DEV_KEY: &str = "tr_dev_e2e_test_key";
pub const PROD_KEY: &str = "tr_prod_e2e_test_key";
pub const STG_KEY: &str = "tr_stg_e2e_test_key";
pub const PREVIEW_KEY: &str = "tr_preview_e2e_test_key";
pub const SIGNING_SECRET: &str = "e2e-signing-secret-0123456789";

pub struct Worker {
    child: Child,
    pub base: String,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    runtime: Runtime,
}

/// What runs a worker.
#[derive(Clone)]
enum Runtime {
    /// `wrangler dev` on the folder's `wrangler.toml` and `.dev.vars`.
    Wrangler,
    /// `bench/miniflare.mjs` (Miniflare's API, the way the benchmark loads the worker),
    /// given the configuration's `[vars]` and secrets as JSON.
    Miniflare { vars: String },
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Removes the worker folders (`<name>-<pid>`) of earlier test runs whose process is gone,
/// so that their storage does not pile up.
fn remove_folders_of_finished_runs() {
    let Ok(entries) = fs::read_dir(root().join("target/e2e")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .rsplit_once('-')
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The configuration of the example tasks Worker, when a worker runs it beside itself.
const EXAMPLES_CONFIG: &str = "example-tasks.toml";

/// Starts the worker folder `dir` under `runtime`, appending its output to `log`.
fn spawn(runtime: &Runtime, dir: &Path, port: u16, log: &Path) -> Child {
    match runtime {
        Runtime::Wrangler => spawn_wrangler(dir, port, log),
        Runtime::Miniflare { vars } => spawn_miniflare(vars, dir, port, log),
    }
}

fn log_file(log: &Path) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap()
}

/// Starts `bench/miniflare.mjs` for the worker folder `dir` (its `state`), with `vars`
/// (JSON) as the worker's variables and secrets.
fn spawn_miniflare(vars: &str, dir: &Path, port: u16, log: &Path) -> Child {
    let parsed: Value = serde_json::from_str(vars).expect("vars are JSON");
    let mut command = Command::new("node");
    command
        .current_dir(root())
        .arg(root().join("bench/miniflare.mjs"))
        .arg("worker")
        .arg(port.to_string())
        .arg(dir.join("state"))
        .arg(parsed["TASKS"].to_string())
        .arg(parsed["RATE_LIMITS"].to_string())
        .env("MINIFLARE_VARS", vars);
    spawn_logged(
        &mut command,
        log,
        "node runs bench/miniflare.mjs (run scripts/setup)",
    )
}

/// Spawns `command` in a process group of its own (stopped as one), its output appended
/// to `log`.
fn spawn_logged(command: &mut Command, log: &Path, expect: &str) -> Child {
    let out = log_file(log);
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect(expect)
}

/// Starts `wrangler dev` for the worker folder `dir` (and the example tasks Worker, when
/// its configuration is there), appending its output to `log`.
fn spawn_wrangler(dir: &Path, port: u16, log: &Path) -> Child {
    let mut command = Command::new(root().join("node_modules/.bin/wrangler"));
    command
        .current_dir(root())
        .args(["dev", "--config"])
        .arg(dir.join("wrangler.toml"));
    if dir.join(EXAMPLES_CONFIG).exists() {
        command.arg("--config").arg(dir.join(EXAMPLES_CONFIG));
    }
    command
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--inspector-port", &free_port().to_string()])
        .arg("--persist-to")
        .arg(dir.join("state"))
        .arg("--show-interactive-dev-session=false")
        .env("WRANGLER_SEND_METRICS", "false")
        .env("NO_COLOR", "1");
    spawn_logged(&mut command, log, "wrangler starts (run scripts/setup)")
}

enum Ready {
    Serving,
    PortTaken,
}

fn log_len(log: &Path) -> usize {
    fs::metadata(log).map_or(0, |m| m.len() as usize)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Worker {
    /// Starts a worker named `name`; `tweak` edits its configuration first.
    pub fn start(name: &str, tweak: impl FnOnce(&mut toml::Table)) -> Worker {
        Worker::start_with(name, None, false, tweak)
    }

    /// Starts a worker that runs the example tasks Worker (`examples/tasks-worker`) beside
    /// itself in the same `wrangler dev`, reached through its `EXAMPLE_TASKS` binding.
    pub fn start_with_examples(name: &str, tweak: impl FnOnce(&mut toml::Table)) -> Worker {
        Worker::start_with(name, None, true, tweak)
    }

    /// Starts a worker under Miniflare's API (`bench/miniflare.mjs`) instead of `wrangler
    /// dev`: the same build, configuration and secrets, without wrangler's dev proxy and
    /// inspector. For the budget's scenarios, whose load stalled `wrangler dev`'s local
    /// queue (see docs/PERFORMANCE.md); they count operations, which are the worker's own.
    pub fn start_on_miniflare(name: &str, tweak: impl FnOnce(&mut toml::Table)) -> Worker {
        Worker::launch(name, None, false, true, tweak)
    }

    /// Starts a worker on a copy of the `--persist-to` folder `state` (another build's).
    pub fn start_on_state(
        name: &str,
        state: &Path,
        tweak: impl FnOnce(&mut toml::Table),
    ) -> Worker {
        Worker::start_with(name, Some(state), false, tweak)
    }

    fn start_with(
        name: &str,
        state: Option<&Path>,
        examples: bool,
        tweak: impl FnOnce(&mut toml::Table),
    ) -> Worker {
        Worker::launch(name, state, examples, false, tweak)
    }

    fn launch(
        name: &str,
        state: Option<&Path>,
        examples: bool,
        miniflare: bool,
        tweak: impl FnOnce(&mut toml::Table),
    ) -> Worker {
        let built = root().join("build/index.js");
        assert!(
            built.exists(),
            "build the worker first: worker-build --release (scripts/test does)"
        );
        static TIDY: std::sync::Once = std::sync::Once::new();
        TIDY.call_once(remove_folders_of_finished_runs);
        let dir = root()
            .join("target/e2e")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        if let Some(state) = state {
            let copied = Command::new("cp")
                .arg("-a")
                .arg(state)
                .arg(dir.join("state"))
                .status();
            assert!(
                copied.is_ok_and(|s| s.success()),
                "copying {}",
                state.display()
            );
        }

        let text = fs::read_to_string(root().join("wrangler.toml")).unwrap();
        let mut config: toml::Table = text.parse().expect("wrangler.toml parses");
        config.remove("build");
        let entry = root().join("src/entry.js"); // it imports build/index.js
        config.insert("main".into(), entry.to_string_lossy().into_owned().into());
        // Paths in the configuration are relative to its file, which moves: make them
        // absolute.
        if let Some(assets) = config.get_mut("assets").and_then(|a| a.as_table_mut()) {
            let folder = assets["directory"].as_str().unwrap_or("public");
            let absolute = root().join(folder).to_string_lossy().into_owned();
            assets.insert("directory".into(), absolute.into());
        }
        // A name of its own, so that its SELF binding (and wrangler's dev registry) never
        // reaches another worker started by these tests or by `scripts/dev`.
        let shipped = config["name"].as_str().unwrap_or_default().to_owned();
        let own = format!("{shipped}-e2e-{name}-{}", std::process::id());
        config.insert("name".into(), own.clone().into());
        rename_service(&mut config, &shipped, &own);
        if examples {
            // Its own name too, which the EXAMPLE_TASKS binding names. Both configurations
            // sit in `dir`, so both read its `.dev.vars` (the signing secret).
            let examples_dir = root().join("examples/tasks-worker");
            let text = fs::read_to_string(examples_dir.join("wrangler.toml")).unwrap();
            let mut tasks: toml::Table = text.parse().expect("the example's wrangler.toml parses");
            let tasks_name = format!("{own}-tasks");
            tasks.insert("name".into(), tasks_name.clone().into());
            let main = examples_dir.join(tasks["main"].as_str().unwrap_or("src/index.ts"));
            tasks.insert("main".into(), main.to_string_lossy().into_owned().into());
            fs::write(dir.join(EXAMPLES_CONFIG), toml::to_string(&tasks).unwrap()).unwrap();
            rename_service(&mut config, "trigger-edge-example-tasks", &tasks_name);
        }
        // Rate limits stay in the path, high enough that only the tests about them meet
        // them (they set their own).
        set_rate_limits(&mut config, (1_000_000, "1s"), (1_000_000, "1s"));
        tweak(&mut config);
        fs::write(dir.join("wrangler.toml"), toml::to_string(&config).unwrap()).unwrap();
        fs::write(
            dir.join(".dev.vars"),
            format!(
                "TRIGGER_SECRET_KEYS={DEV_KEY},{PROD_KEY},{STG_KEY},{PREVIEW_KEY}\nTASK_SIGNING_SECRET={SIGNING_SECRET}\n"
            ),
        )
        .unwrap();

        let (runtime, log) = if miniflare {
            let mut vars = config["vars"].as_table().cloned().unwrap_or_default();
            vars.insert(
                "TRIGGER_SECRET_KEYS".into(),
                format!("{DEV_KEY},{PROD_KEY},{STG_KEY},{PREVIEW_KEY}").into(),
            );
            vars.insert("TASK_SIGNING_SECRET".into(), SIGNING_SECRET.into());
            let vars = serde_json::to_string(&vars).expect("vars encode as JSON");
            (Runtime::Miniflare { vars }, dir.join("miniflare.log"))
        } else {
            (Runtime::Wrangler, dir.join("wrangler.log"))
        };
        for _ in 0..5 {
            // A port found free can be taken before wrangler binds it (other workers open
            // loopback ports of their own): then try another.
            let port = free_port();
            let from = log_len(&log);
            let mut worker = Worker {
                child: spawn(&runtime, &dir, port, &log),
                base: format!("http://127.0.0.1:{port}"),
                port,
                dir: dir.clone(),
                log: log.clone(),
                runtime: runtime.clone(),
            };
            match worker.wait_ready(from) {
                Ready::Serving => return worker,
                Ready::PortTaken => drop(worker),
            }
        }
        panic!("no free port for wrangler after 5 tries");
    }

    /// Kills wrangler and workerd at once (SIGKILL to the whole process group), as a
    /// crash or a power cut would: nothing gets to flush or finish.
    pub fn kill_hard(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }

    /// Starts the worker again on the same port and the same `--persist-to` storage.
    pub fn restart(&mut self) {
        let from = log_len(&self.log);
        self.child = spawn(&self.runtime, &self.dir, self.port, &self.log);
        if let Ready::PortTaken = self.wait_ready(from) {
            panic!("port {} was taken while the worker was down", self.port);
        }
    }

    /// The worker's storage folder (`--persist-to`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Waits until wrangler says it serves on its port (the log past byte `from`) and the
    /// port answers. Any answer on the port is not enough: another process may hold it.
    fn wait_ready(&mut self, from: usize) -> Ready {
        let deadline = Instant::now() + Duration::from_secs(180);
        let ready_line = match self.runtime {
            Runtime::Wrangler => format!("Ready on {}", self.base),
            Runtime::Miniflare { .. } => format!("ready {}", self.base),
        };
        while Instant::now() < deadline {
            let log = self.log();
            let new = log.get(from..).unwrap_or_default();
            if new.contains("Address already in use") {
                return Ready::PortTaken;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the worker's runtime exited with {status}:\n{log}");
            }
            if new.contains(&ready_line) && get(&format!("{}/", self.base), None).status > 0 {
                return Ready::Serving;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("the worker did not become ready in time:\n{}", self.log());
    }

    /// Everything wrangler and the worker printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Points the service bindings to `from` at `to` instead.
pub fn rename_service(config: &mut toml::Table, from: &str, to: &str) {
    if let Some(services) = config.get_mut("services").and_then(|s| s.as_array_mut()) {
        for service in services.iter_mut().filter_map(|s| s.as_table_mut()) {
            if service.get("service").and_then(|v| v.as_str()) == Some(from) {
                service.insert("service".into(), to.into());
            }
        }
    }
}

/// Sets the `RATE_LIMITS` var: (tokens per interval, interval) for requests and for
/// batch items; each bucket holds one interval's tokens.
pub fn set_rate_limits(config: &mut toml::Table, requests: (u64, &str), items: (u64, &str)) {
    let bucket = |(tokens, interval): (u64, &str)| {
        let mut t = toml::Table::new();
        t.insert("maxTokens".into(), (tokens as i64).into());
        t.insert("refillRate".into(), (tokens as i64).into());
        t.insert("interval".into(), interval.into());
        toml::Value::Table(t)
    };
    let mut limits = toml::Table::new();
    limits.insert("requests".into(), bucket(requests));
    limits.insert("batchItems".into(), bucket(items));
    config["vars"]
        .as_table_mut()
        .unwrap()
        .insert("RATE_LIMITS".into(), toml::Value::Table(limits));
}

impl Drop for Worker {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// An HTTP answer. `status` is 0 when no answer came (connection refused, reset, or the
/// answer cut off before its end).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} (status {})", self.body, self.status))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// What `wrangler dev`'s proxy answers when its pooled connection to the worker fails
    /// under a request that is not a GET or HEAD: the connection had idled 5 s, and both
    /// its ends closed it as the request was written (workers-sdk issue 14641), so the
    /// worker never read it. The proxy resends only bodyless requests; [`request`] resends
    /// the others once, as a browser resends a request a keep-alive connection closed
    /// under. The worker never answers this (its errors are JSON), nor does a deployed one.
    fn dropped_by_wrangler(&self) -> bool {
        self.status == 503
            && self.body.starts_with("Your worker restarted mid-request.")
            && self
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// Every response body and header the tests received, for the secrets check.
static ANSWERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub fn answers() -> Vec<String> {
    ANSWERS.lock().unwrap().clone()
}

fn finish(result: Result<ureq::Response, ureq::Error>) -> Answer {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(_)) => {
            return Answer {
                status: 0,
                body: String::new(),
                headers: Vec::new(),
            };
        }
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|name| response.header(&name).map(|v| (name.clone(), v.to_owned())))
        .collect();
    let mut body = Vec::new();
    let read = response.into_reader().take(64 << 20).read_to_end(&mut body);
    Answer {
        // An answer cut off after its head (the server killed while it was being sent)
        // is no answer: a client has nothing it said.
        status: if read.is_ok() { status } else { 0 },
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
    }
}

/// `method path` on `w` with the development key, and a JSON body if given.
pub fn send(w: &Worker, method: &str, path: &str, body: Option<serde_json::Value>) -> Answer {
    let authorization = crate::auth(DEV_KEY);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request(
        method,
        &w.url(path),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    )
}

pub fn get(url: &str, key: Option<&str>) -> Answer {
    get_with(url, key, &[])
}

pub fn get_with(url: &str, key: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let mut request = agent().get(url);
    if let Some(key) = key {
        request = request.set("authorization", &format!("Bearer {key}"));
    }
    for (name, value) in headers {
        request = request.set(name, value);
    }
    finish(request.call())
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let send = || {
        let mut request = agent().request(method, url);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        finish(request.send_bytes(body))
    };
    let answer = send();
    if answer.dropped_by_wrangler() {
        eprintln!("wrangler dev dropped {method} {url}: sent again");
        return send();
    }
    answer
}

/// Sends `body` with chunked transfer encoding (no `content-length`).
pub fn request_chunked(url: &str, headers: &[(&str, &str)], body: impl Read) -> Answer {
    let mut request = agent().post(url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    finish(request.send(body))
}

/// Runs a checking program (an SDK script, Schemathesis): its success is a zero exit
/// status and `marker` in what it printed; otherwise the error shows all it printed.
pub fn run_check(command: &mut Command, what: &str, marker: &str) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{what} could not start: {e}"))?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && printed.contains(marker) {
        Ok(())
    } else {
        Err(format!("{what} failed:\n{printed}"))
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
