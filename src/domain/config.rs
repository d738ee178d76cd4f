//! The worker's configuration: API keys, declared tasks and limits, read from the
//! environment once per isolate and checked loudly.
//!
//! Tasks are declared in `wrangler.toml` as a `vars` table, task id → settings:
//!
//! ```toml
//! [vars.TASKS.hello-world]
//! service = "EXAMPLES"                  # a service binding, or: endpoint = "https://…"
//! queue = { name = "hello", concurrencyLimit = 10, totalConcurrencyLimit = 50 }
//! # or gateShards = 4: the gates its keys spread over (not with totalConcurrencyLimit);
//! # throttle = { limit = 5, period = "1s", burst = 0 }: a rate per concurrency key
//! maxAttempts = 3
//! maxDuration = 300                     # seconds
//! ttl = "1h"                            # default TTL of the task's runs
//! shards = 4                            # stores its runs spread over (domain::basics::shards)
//! retry = { factor = 2, minTimeoutInMs = 1000, maxTimeoutInMs = 60000, randomize = true }
//! ```
//!
//! A malformed declaration is an error that names the task and the field, so that the
//! first request fails with a message the operator can act on.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;

use crate::domain::api::auth::{ApiKeys, Environment};
use crate::domain::api::error::ApiError;
use crate::domain::api::rate_limit::{parse_rate_limits, RateLimits};
use crate::domain::basics::duration::parse_duration;
use crate::domain::basics::names::StoreName;
use crate::domain::basics::shards::{store_routes, MAX_SHARDS};
use crate::domain::intake::queue_name::{clean_queue_name, default_queue_name};
use crate::domain::schedule::cron::CronSchedule;
use crate::domain::scheduling::gate::Throttle;

/// The seed endpoint's default item limit, and the most it may be raised to.
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 100;
pub const MAX_MAX_BATCH_ITEMS: usize = 1000;

/// Everything the worker reads from its environment, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub keys: ApiKeys,
    pub tasks: HashMap<String, TaskSettings>,
    /// The queues of the declared tasks, by name.
    pub queues: BTreeMap<String, DeclaredQueue>,
    pub max_batch_items: usize,
    pub signing_secret: SigningSecret,
    pub rate_limits: RateLimits,
}

/// A queue as the declared tasks that use it set it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredQueue {
    /// Its gates (`gateShards`, 1 unless a task declares more).
    pub gate_shards: u32,
    /// The limit per key its tasks declare (the first task's by id that declares one).
    pub concurrency_limit: Option<u32>,
    /// The most runs of all its keys at once (`totalConcurrencyLimit`).
    pub total_limit: Option<u32>,
    /// The rate each of its concurrency keys' runs may start at (`throttle`).
    pub throttle: Option<Throttle>,
}

/// The key of the HMAC signature on calls to task endpoints. Never printed.
#[derive(Clone)]
pub struct SigningSecret(String);

impl SigningSecret {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

/// The longest attempt a task may declare: attempts run inside a Durable Object alarm,
/// which may take 15 minutes of wall time; a minute is kept for the bookkeeping.
pub const MAX_DURATION_SECS: u32 = 840;
/// Attempts a run may make when neither its trigger nor its task says.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The attempts a run may make: its own `maxAttempts`, else the default, within 1 to 100.
pub fn run_max_attempts(max_attempts: Option<i64>) -> u32 {
    max_attempts
        .unwrap_or(i64::from(DEFAULT_MAX_ATTEMPTS))
        .clamp(1, 100) as u32
}

/// Seconds an attempt may take when neither its trigger nor its task says.
pub const DEFAULT_MAX_DURATION_SECS: u32 = 300;

/// The seconds an attempt of a run may take: the run's own `maxDuration` (its trigger's,
/// else its task's), else the default; always within 1 to [`MAX_DURATION_SECS`].
pub fn attempt_seconds(max_duration: Option<i64>) -> u32 {
    max_duration
        .unwrap_or(i64::from(DEFAULT_MAX_DURATION_SECS))
        .clamp(1, i64::from(MAX_DURATION_SECS)) as u32
}

/// What is wrong with the configuration: names the setting (and the task and field), never
/// a secret. Every request is answered `500 Server misconfigured: …` while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> ApiError {
        ApiError::Misconfigured(e.0)
    }
}

/// The configuration as the environment holds it, before checking.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// Secret `TRIGGER_SECRET_KEYS`.
    pub secret_keys: Option<String>,
    /// Var `TASKS`, a JSON object.
    pub tasks: Option<Value>,
    /// Var `MAX_BATCH_ITEMS`, a number or a string of digits.
    pub max_batch_items: Option<Value>,
    /// Secret `TASK_SIGNING_SECRET`.
    pub signing_secret: Option<String>,
    /// Var `RATE_LIMITS`, a JSON object (`domain::api::rate_limit`).
    pub rate_limits: Option<Value>,
}

/// Where a task's attempts execute.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// An HTTP(S) URL called with `POST`.
    Endpoint(String),
    /// A service binding to another Worker, called with `POST` on `path`.
    Service { binding: String, path: String },
}

/// Exponential backoff between attempts (Trigger.dev's names).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct RetryPolicy {
    pub factor: f64,
    pub min_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub randomize: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            factor: 2.0,
            min_timeout_ms: 1000,
            max_timeout_ms: 60_000,
            randomize: true,
        }
    }
}

/// One declared task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSettings {
    pub target: Target,
    /// The task's default queue name (already cleaned), if it declares one.
    pub queue: Option<String>,
    /// The limit that queue gets when a run arrives and no item sets one.
    pub concurrency_limit: Option<u32>,
    /// The gates that queue's concurrency keys spread over, 1 to [`MAX_SHARDS`], if the
    /// task declares it (tasks sharing a queue may leave it to one of them).
    pub gate_shards: Option<u32>,
    /// The queue's total cap over all its keys, if the task declares it.
    pub total_limit: Option<u32>,
    /// The queue's rate per concurrency key, if the task declares it.
    pub throttle: Option<Throttle>,
    pub max_attempts: u32,
    pub max_duration_secs: u32,
    pub ttl_ms: Option<u64>,
    pub retry: RetryPolicy,
    /// The stores the task's runs spread over, 1 to [`MAX_SHARDS`].
    pub shards: u32,
    /// The task's declared cron schedule, if any (`schedule = { cron, timezone,
    /// environments }`).
    pub schedule: Option<DeclaredSchedule>,
}

/// A schedule written in the task's declaration: Trigger.dev's `schedules.task({cron})`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredSchedule {
    /// A five-field expression, already checked.
    pub cron: String,
    /// An IANA zone name (`UTC` unless given); the worker checks it against the runtime's
    /// zones when it loads the configuration.
    pub timezone: String,
    /// The environments it runs in; `None`: every environment with a key.
    pub environments: Option<Vec<Environment>>,
}

impl DeclaredSchedule {
    pub fn runs_in(&self, environment: Environment) -> bool {
        self.environments
            .as_ref()
            .is_none_or(|list| list.contains(&environment))
    }
}

/// A task's declaration as written, before its rules are checked.
#[derive(Default)]
struct TaskWire {
    endpoint: Option<String>,
    service: Option<String>,
    path: Option<String>,
    queue: Option<QueueWire>,
    max_attempts: Option<u32>,
    max_duration: Option<u32>,
    ttl: Option<Value>,
    retry: Option<RetryWire>,
    shards: Option<u32>,
    schedule: Option<Value>,
}

#[derive(Default)]
struct QueueWire {
    name: Option<String>,
    concurrency_limit: Option<u32>,
    total_limit: Option<u32>,
    gate_shards: Option<u32>,
    throttle: Option<Value>,
}

#[derive(Default)]
struct RetryWire {
    factor: Option<f64>,
    min_timeout_in_ms: Option<u64>,
    max_timeout_in_ms: Option<u64>,
    randomize: Option<bool>,
}

/// Reads a declaration's fields one at a time, so that an error names its field:
/// `.queue.name: invalid type: …`, or `: invalid type: …` for the value itself.
fn read_fields(
    value: &Value,
    fields: &[&str],
    mut read: impl FnMut(&str, &Value) -> Result<(), String>,
) -> Result<(), String> {
    let Value::Object(map) = value else {
        return Err(format!(": {}", invalid_table(value)));
    };
    for (key, v) in map {
        if !fields.contains(&key.as_str()) {
            let expected = fields.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>();
            return Err(format!(
                ".{key}: unknown field `{key}`, expected one of {}",
                expected.join(", ")
            ));
        }
        read(key, v).map_err(|e| match e.starts_with(['.', ':']) {
            true => format!(".{key}{e}"), // a nested field's error, already placed
            false => format!(".{key}: {e}"),
        })?;
    }
    Ok(())
}

fn invalid_table(value: &Value) -> String {
    let found = match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".to_owned(),
        Value::Object(_) => "map".to_owned(),
    };
    format!("invalid type: {found}, expected a table of settings")
}

/// One field's value as `T`, with serde's own message when it is of another type.
fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| e.to_string())
}

fn task_wire(value: &Value) -> Result<TaskWire, String> {
    const FIELDS: &[&str] = &[
        "endpoint",
        "service",
        "path",
        "queue",
        "maxAttempts",
        "maxDuration",
        "ttl",
        "retry",
        "shards",
        "schedule",
    ];
    let mut wire = TaskWire::default();
    read_fields(value, FIELDS, |key, v| {
        match key {
            "endpoint" => wire.endpoint = typed(v)?,
            "service" => wire.service = typed(v)?,
            "path" => wire.path = typed(v)?,
            "queue" => wire.queue = Some(queue_wire(v)?),
            "maxAttempts" => wire.max_attempts = typed(v)?,
            "maxDuration" => wire.max_duration = typed(v)?,
            "ttl" => wire.ttl = Some(v.clone()).filter(|v| !v.is_null()),
            "shards" => wire.shards = typed(v)?,
            "schedule" => wire.schedule = Some(v.clone()).filter(|v| !v.is_null()),
            _ => wire.retry = Some(retry_wire(v)?),
        }
        Ok(())
    })?;
    Ok(wire)
}

fn queue_wire(value: &Value) -> Result<QueueWire, String> {
    let mut wire = QueueWire::default();
    read_fields(
        value,
        &[
            "name",
            "concurrencyLimit",
            "totalConcurrencyLimit",
            "gateShards",
            "throttle",
        ],
        |key, v| {
            match key {
                "name" => wire.name = typed(v)?,
                "throttle" => wire.throttle = Some(v.clone()),
                "gateShards" => wire.gate_shards = typed(v)?,
                "totalConcurrencyLimit" => wire.total_limit = typed(v)?,
                _ => wire.concurrency_limit = typed(v)?,
            }
            Ok(())
        },
    )?;
    Ok(wire)
}

/// `queue.throttle = { limit, period, burst }`: `limit` starts per `period` (a duration,
/// `1s` to `1d`) for each concurrency key, and `burst` (default 0) more at once after a
/// quiet spell.
fn throttle_of(value: &Value) -> Result<Throttle, String> {
    let (mut limit, mut period, mut burst) = (None::<u32>, None::<String>, None::<u32>);
    read_fields(value, &["limit", "period", "burst"], |key, v| {
        match key {
            "limit" => limit = typed(v)?,
            "period" => period = typed(v)?,
            _ => burst = typed(v)?,
        }
        Ok(())
    })
    .map_err(|e| format!("queue.throttle{e}"))?;
    let limit = limit
        .filter(|n| (1..=100_000).contains(n))
        .ok_or("queue.throttle.limit: must be an integer from 1 to 100000")?;
    let period_ms = period
        .as_deref()
        .and_then(parse_duration)
        .filter(|ms| (1000..=86_400_000).contains(ms))
        .ok_or("queue.throttle.period: must be a duration from 1s to 1d, like \"1s\" or \"10m\"")?;
    let burst = burst.unwrap_or(0);
    if burst > 100_000 {
        return Err("queue.throttle.burst: must be an integer from 0 to 100000".into());
    }
    Ok(Throttle {
        limit,
        period_ms,
        burst,
    })
}

fn retry_wire(value: &Value) -> Result<RetryWire, String> {
    const FIELDS: &[&str] = &["factor", "minTimeoutInMs", "maxTimeoutInMs", "randomize"];
    let mut wire = RetryWire::default();
    read_fields(value, FIELDS, |key, v| {
        match key {
            "factor" => wire.factor = typed(v)?,
            "minTimeoutInMs" => wire.min_timeout_in_ms = typed(v)?,
            "maxTimeoutInMs" => wire.max_timeout_in_ms = typed(v)?,
            _ => wire.randomize = typed(v)?,
        }
        Ok(())
    })?;
    Ok(wire)
}

impl Config {
    pub fn from_raw(raw: RawConfig) -> Result<Config, String> {
        let keys = ApiKeys::parse(raw.secret_keys.as_deref().unwrap_or_default())?;
        let tasks = parse_tasks(raw.tasks.as_ref())?;
        let queues = queues_of(&tasks)?;
        let max_batch_items = parse_max_batch_items(raw.max_batch_items.as_ref())?;
        let signing_secret = match raw.signing_secret {
            Some(secret) if secret.trim().len() >= 16 => SigningSecret(secret.trim().to_owned()),
            Some(_) => return Err("TASK_SIGNING_SECRET: use at least 16 characters".into()),
            None => {
                return Err("TASK_SIGNING_SECRET: not set (a secret; locally in .dev.vars)".into())
            }
        };
        let rate_limits = parse_rate_limits(raw.rate_limits.as_ref())?;
        Ok(Config {
            keys,
            tasks,
            queues,
            max_batch_items,
            signing_secret,
            rate_limits,
        })
    }
}

impl Config {
    /// The store of every shard of every declared task that `wanted` keeps, each once and
    /// in order: where a question about all of an environment's runs (a list, a count, a
    /// bulk action) is asked.
    pub fn stores(
        &self,
        environment: Environment,
        wanted: impl Fn(&str) -> bool,
    ) -> Vec<StoreName> {
        let mut stores: Vec<StoreName> = self
            .tasks
            .iter()
            .filter(|(task, _)| wanted(task))
            .flat_map(|(task, settings)| store_routes(task, settings.shards))
            .map(|route| StoreName::new(environment, route))
            .collect();
        stores.sort_unstable();
        stores.dedup();
        stores
    }

    /// The gates of `queue` (1 unless a task declares its `gateShards`).
    pub fn gate_shards(&self, queue: &str) -> u32 {
        self.queues.get(queue).map_or(1, |q| q.gate_shards)
    }

    /// The total cap `queue` declares, if any.
    pub fn total_limit(&self, queue: &str) -> Option<u32> {
        self.queues.get(queue).and_then(|q| q.total_limit)
    }

    /// The throttle `queue` declares, if any.
    pub fn throttle(&self, queue: &str) -> Option<Throttle> {
        self.queues.get(queue).and_then(|q| q.throttle)
    }

    /// The schedules the tasks declare for `environment`, by task id.
    pub fn declared_schedules(&self, environment: Environment) -> Vec<(&str, &DeclaredSchedule)> {
        let mut ids: Vec<&String> = self.tasks.keys().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|task| Some((task.as_str(), self.tasks[task].schedule.as_ref()?)))
            .filter(|(_, schedule)| schedule.runs_in(environment))
            .collect()
    }
}

/// The queues of the declared tasks. Tasks sharing a queue that declare its gates or its
/// total cap must agree (a run's gate is its concurrency key's shard of them), and a total
/// cap needs the queue's runs at one gate.
fn queues_of(
    tasks: &HashMap<String, TaskSettings>,
) -> Result<BTreeMap<String, DeclaredQueue>, String> {
    let mut ids: Vec<&String> = tasks.keys().collect();
    ids.sort_unstable(); // the same error whichever order the table was read in
    let mut queues: BTreeMap<String, DeclaredQueue> = BTreeMap::new();
    // Which task declared each queue's gates and cap first.
    let mut shards_by: HashMap<String, &str> = HashMap::new();
    let mut total_by: HashMap<String, &str> = HashMap::new();
    let mut throttle_by: HashMap<String, &str> = HashMap::new();
    let field = |id: &str, name: &str| {
        format!(
            "TASKS[{}].queue.{name}",
            serde_json::to_string(id).unwrap_or_default()
        )
    };
    for id in ids {
        let task = &tasks[id];
        let name = task.queue.clone().unwrap_or_else(|| default_queue_name(id));
        let queue = queues.entry(name.clone()).or_insert(DeclaredQueue {
            gate_shards: 1,
            concurrency_limit: None,
            total_limit: None,
            throttle: None,
        });
        if let Some(wanted) = task.throttle {
            match throttle_by.get(&name) {
                Some(by) if queue.throttle != Some(wanted) => {
                    return Err(format!(
                        "{}: differs from task {by:?}'s on the same queue {name:?}",
                        field(id, "throttle"),
                    ))
                }
                Some(_) => {}
                None => {
                    queue.throttle = Some(wanted);
                    throttle_by.insert(name.clone(), id);
                }
            }
        }
        queue.concurrency_limit = queue.concurrency_limit.or(task.concurrency_limit);
        if let Some(wanted) = task.gate_shards {
            match shards_by.get(&name) {
                Some(by) if queue.gate_shards != wanted => {
                    return Err(format!(
                        "{}: {wanted} here, {} for task {by:?} on the same queue {name:?}",
                        field(id, "gateShards"),
                        queue.gate_shards
                    ))
                }
                Some(_) => {}
                None => {
                    queue.gate_shards = wanted;
                    shards_by.insert(name.clone(), id);
                }
            }
        }
        if let Some(wanted) = task.total_limit {
            match total_by.get(&name) {
                Some(by) if queue.total_limit != Some(wanted) => {
                    return Err(format!(
                        "{}: {wanted} here, {} for task {by:?} on the same queue {name:?}",
                        field(id, "totalConcurrencyLimit"),
                        queue.total_limit.unwrap_or_default()
                    ))
                }
                Some(_) => {}
                None => {
                    queue.total_limit = Some(wanted);
                    total_by.insert(name.clone(), id);
                }
            }
        }
    }
    for (name, queue) in &queues {
        if queue.total_limit.is_some() && queue.gate_shards > 1 {
            let by = total_by[name];
            return Err(format!(
                "{}: a total cap needs the queue at one gate, and {name:?} has gateShards = {}",
                field(by, "totalConcurrencyLimit"),
                queue.gate_shards
            ));
        }
    }
    Ok(queues)
}

fn parse_max_batch_items(value: Option<&Value>) -> Result<usize, String> {
    let n = match value {
        None => return Ok(DEFAULT_MAX_BATCH_ITEMS),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    match n {
        Some(n @ 1..=1000) => Ok(n as usize),
        _ => Err(format!(
            "MAX_BATCH_ITEMS: must be an integer from 1 to {MAX_MAX_BATCH_ITEMS}"
        )),
    }
}

/// A task identifier a declaration may use: 1..128 printable characters, no spaces.
pub fn is_valid_task_identifier(id: &str) -> bool {
    (1..=128).contains(&id.chars().count())
        && !id.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Test support: the declared tasks of a `TASKS` value written as JSON.
#[cfg(test)]
pub fn parse_tasks_for_tests(json: &str) -> HashMap<String, TaskSettings> {
    let value: Value = serde_json::from_str(json).expect("JSON");
    parse_tasks(Some(&value)).expect("valid task declarations")
}

fn parse_tasks(value: Option<&Value>) -> Result<HashMap<String, TaskSettings>, String> {
    let Some(value) = value else {
        return Err(
            "TASKS: not declared; declare tasks in wrangler.toml under [vars.TASKS]".into(),
        );
    };
    let Value::Object(map) = value else {
        return Err("TASKS: must be a table of task id to settings".into());
    };
    let mut tasks = HashMap::with_capacity(map.len());
    for (id, settings) in map {
        let at = format!("TASKS[{}]", serde_json::to_string(id).unwrap_or_default());
        if !is_valid_task_identifier(id) {
            return Err(format!(
                "{at}: a task id has 1 to 128 characters and no spaces or control characters"
            ));
        }
        let wire = task_wire(settings).map_err(|e| format!("{at}{e}"))?;
        tasks.insert(
            id.clone(),
            task_settings(id, wire).map_err(|e| format!("{at}.{e}"))?,
        );
    }
    Ok(tasks)
}

fn task_settings(id: &str, wire: TaskWire) -> Result<TaskSettings, String> {
    let target = match (wire.endpoint, wire.service) {
        (Some(url), None) => {
            if wire.path.is_some() {
                return Err("path: only a service target takes a path".into());
            }
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err("endpoint: must be an http:// or https:// URL".into());
            }
            Target::Endpoint(url)
        }
        (None, Some(binding)) => {
            if binding.is_empty() {
                return Err("service: must name a service binding".into());
            }
            let path = wire.path.unwrap_or_else(|| format!("/tasks/{id}"));
            if !path.starts_with('/') {
                return Err("path: must start with /".into());
            }
            Target::Service { binding, path }
        }
        (Some(_), Some(_)) => {
            return Err("endpoint: give either endpoint or service, not both".into())
        }
        (None, None) => return Err("endpoint: required (or service, a service binding)".into()),
    };
    let (queue, concurrency_limit, total_limit, gate_shards, throttle) = match wire.queue {
        None => (None, None, None, None, None),
        Some(q) => {
            let name = match q.name {
                None => None,
                Some(raw) => Some(
                    clean_queue_name(&raw)
                        .ok_or("queue.name: must contain letters, digits, _, - or /")?,
                ),
            };
            if q.concurrency_limit.is_some_and(|n| n > 1000) {
                return Err("queue.concurrencyLimit: must be an integer from 0 to 1000".into());
            }
            if q.gate_shards
                .is_some_and(|n| !(1..=MAX_SHARDS).contains(&n))
            {
                return Err(format!(
                    "queue.gateShards: must be an integer from 1 to {MAX_SHARDS}"
                ));
            }
            if q.total_limit.is_some_and(|n| n > 100_000) {
                return Err(
                    "queue.totalConcurrencyLimit: must be an integer from 0 to 100000".into(),
                );
            }
            let throttle = q.throttle.as_ref().map(throttle_of).transpose()?;
            (
                name,
                q.concurrency_limit,
                q.total_limit,
                q.gate_shards,
                throttle,
            )
        }
    };
    let max_attempts = wire.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=100).contains(&max_attempts) {
        return Err("maxAttempts: must be an integer from 1 to 100".into());
    }
    let max_duration_secs = wire.max_duration.unwrap_or(DEFAULT_MAX_DURATION_SECS);
    if !(1..=MAX_DURATION_SECS).contains(&max_duration_secs) {
        return Err(format!(
            "maxDuration: must be from 1 to {MAX_DURATION_SECS} seconds"
        ));
    }
    let ttl_ms = match wire.ttl {
        None => None,
        Some(Value::String(s)) => {
            Some(parse_duration(&s).ok_or("ttl: not a duration like 1h or 30m")?)
        }
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|s| s.checked_mul(1000))
                .ok_or("ttl: must be a non-negative whole number of seconds")?,
        ),
        Some(_) => return Err("ttl: must be a duration string or a number of seconds".into()),
    }
    .filter(|ms| *ms > 0);
    let retry = match wire.retry {
        None => RetryPolicy::default(),
        Some(r) => {
            let d = RetryPolicy::default();
            let policy = RetryPolicy {
                factor: r.factor.unwrap_or(d.factor),
                min_timeout_ms: r.min_timeout_in_ms.unwrap_or(d.min_timeout_ms),
                max_timeout_ms: r.max_timeout_in_ms.unwrap_or(d.max_timeout_ms),
                randomize: r.randomize.unwrap_or(d.randomize),
            };
            if !(policy.factor.is_finite() && (1.0..=10.0).contains(&policy.factor)) {
                return Err("retry.factor: must be a number from 1 to 10".into());
            }
            if policy.min_timeout_ms > policy.max_timeout_ms {
                return Err("retry.minTimeoutInMs: must not exceed maxTimeoutInMs".into());
            }
            if policy.max_timeout_ms > 86_400_000 {
                return Err("retry.maxTimeoutInMs: must be at most one day".into());
            }
            policy
        }
    };
    let shards = wire.shards.unwrap_or(1);
    if !(1..=MAX_SHARDS).contains(&shards) {
        return Err(format!("shards: must be an integer from 1 to {MAX_SHARDS}"));
    }
    let schedule = wire.schedule.as_ref().map(schedule_of).transpose()?;
    Ok(TaskSettings {
        target,
        queue,
        concurrency_limit,
        gate_shards,
        total_limit,
        throttle,
        max_attempts,
        max_duration_secs,
        ttl_ms,
        retry,
        shards,
        schedule,
    })
}

/// `schedule = "<cron>"` or `schedule = { cron, timezone, environments }`, as
/// `schedules.task({ cron })` takes it.
fn schedule_of(value: &Value) -> Result<DeclaredSchedule, String> {
    let (mut cron, mut timezone, mut environments) = (None::<String>, None::<String>, None);
    match value {
        Value::String(text) => cron = Some(text.clone()),
        _ => read_fields(value, &["cron", "timezone", "environments"], |key, v| {
            match key {
                "cron" => cron = typed(v)?,
                "timezone" => timezone = typed(v)?,
                _ => environments = Some(typed::<Vec<String>>(v)?),
            }
            Ok(())
        })
        .map_err(|e| format!("schedule{e}"))?,
    }
    let cron = cron.ok_or("schedule.cron: required")?;
    CronSchedule::parse(&cron).map_err(|e| format!("schedule.cron: {e}"))?;
    let environments = environments
        .map(|names| {
            names
                .iter()
                .map(|name| {
                    Environment::from_kind(name).ok_or_else(|| {
                        format!("schedule.environments: {name:?} is not one of DEVELOPMENT, STAGING, PRODUCTION, PREVIEW")
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(DeclaredSchedule {
        cron: cron.trim().to_owned(),
        timezone: timezone.unwrap_or_else(|| "UTC".into()),
        environments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(tasks: Value) -> RawConfig {
        RawConfig {
            secret_keys: Some("tr_dev_k".into()),
            tasks: Some(tasks),
            max_batch_items: None,
            signing_secret: Some("a-signing-secret-of-some-length".into()),
            rate_limits: None,
        }
    }

    fn error_of(tasks: Value) -> String {
        Config::from_raw(raw(tasks)).unwrap_err()
    }

    #[test]
    fn the_stores_of_the_declared_tasks_are_every_shard_of_each_once_in_order() {
        let config = Config::from_raw(raw(json!({
            "one": {"endpoint": "https://t.example.com/one"},
            "three": {"endpoint": "https://t.example.com/three", "shards": 3},
            "other": {"endpoint": "https://t.example.com/other"}
        })))
        .unwrap();
        let env = Environment::Development;
        let names = |tasks: &[&str]| {
            let mut names: Vec<StoreName> = tasks
                .iter()
                .flat_map(|task| store_routes(task, config.tasks[*task].shards))
                .map(|route| StoreName::new(env, route))
                .collect();
            names.sort_unstable();
            names
        };
        let all = config.stores(env, |_| true);
        assert_eq!(all, names(&["one", "three", "other"]));
        assert_eq!(all.len(), 5);
        assert_eq!(config.stores(env, |t| t == "three"), names(&["three"]));
        assert!(config.stores(env, |_| false).is_empty());
        let prod = Environment::Production;
        assert!(config
            .stores(prod, |_| true)
            .iter()
            .all(|s| !all.contains(s)));
    }

    #[test]
    fn reads_a_full_declaration() {
        let config = Config::from_raw(raw(json!({
            "hello-world": {
                "service": "EXAMPLES",
                "queue": {"name": "hello queue", "concurrencyLimit": 10},
                "maxAttempts": 5, "maxDuration": 60, "ttl": "1h",
                "retry": {"factor": 1.5, "minTimeoutInMs": 100, "maxTimeoutInMs": 1000, "randomize": false}
            },
            "remote": {"endpoint": "https://tasks.example.com/run", "ttl": 30}
        })))
        .unwrap();
        let hello = &config.tasks["hello-world"];
        assert_eq!(
            hello.target,
            Target::Service {
                binding: "EXAMPLES".into(),
                path: "/tasks/hello-world".into()
            }
        );
        assert_eq!(hello.queue.as_deref(), Some("helloqueue"));
        assert_eq!(hello.concurrency_limit, Some(10));
        assert_eq!((hello.max_attempts, hello.max_duration_secs), (5, 60));
        assert_eq!(hello.ttl_ms, Some(3_600_000));
        assert_eq!(hello.retry.min_timeout_ms, 100);
        let remote = &config.tasks["remote"];
        assert_eq!(
            remote.target,
            Target::Endpoint("https://tasks.example.com/run".into())
        );
        assert_eq!((remote.max_attempts, remote.max_duration_secs), (3, 300));
        assert_eq!(attempt_seconds(None), 300);
        assert_eq!(run_max_attempts(None), 3);
        assert_eq!(run_max_attempts(Some(0)), 1);
        assert_eq!(run_max_attempts(Some(500)), 100);
        assert_eq!(attempt_seconds(Some(0)), 1);
        assert_eq!(attempt_seconds(Some(60)), 60);
        assert_eq!(attempt_seconds(Some(100_000)), MAX_DURATION_SECS);
        assert_eq!(remote.ttl_ms, Some(30_000));
        assert_eq!(remote.retry, RetryPolicy::default());
        assert_eq!(config.max_batch_items, 100);
    }

    #[test]
    fn a_bad_declaration_names_the_task_and_the_field() {
        for (tasks, message) in [
            (json!({"t": {"endpoint": "https://x", "maxAttempts": 0}}), "TASKS[\"t\"].maxAttempts: must be an integer from 1 to 100"),
            (json!({"t": {"endpoint": "https://x", "maxAttempts": "3"}}), "TASKS[\"t\"].maxAttempts: invalid type: string \"3\", expected u32"),
            (json!({"t": {"endpoint": "ftp://x"}}), "TASKS[\"t\"].endpoint: must be an http:// or https:// URL"),
            (json!({"t": {}}), "TASKS[\"t\"].endpoint: required (or service, a service binding)"),
            (json!({"t": {"endpoint": "https://x", "service": "S"}}), "TASKS[\"t\"].endpoint: give either endpoint or service, not both"),
            (json!({"t": {"endpoint": "https://x", "ttl": "1 hour"}}), "TASKS[\"t\"].ttl: not a duration like 1h or 30m"),
            (json!({"t": {"endpoint": "https://x", "queue": {"concurrencyLimit": 1001}}}), "TASKS[\"t\"].queue.concurrencyLimit: must be an integer from 0 to 1000"),
            (json!({"t": {"endpoint": "https://x", "retry": {"factor": 0.5}}}), "TASKS[\"t\"].retry.factor: must be a number from 1 to 10"),
            (json!({"t": {"endpoint": "https://x", "maxDuration": 900}}), "TASKS[\"t\"].maxDuration: must be from 1 to 840 seconds"),
            (json!({"t": {"endpoint": "https://x", "maxAtempts": 3}}), "TASKS[\"t\"].maxAtempts: unknown field `maxAtempts`"),
            (json!({"t": {"endpoint": "https://x", "queue": {"limit": 3}}}), "TASKS[\"t\"].queue.limit: unknown field `limit`"),
            (json!({"has space": {"endpoint": "https://x"}}), "TASKS[\"has space\"]: a task id has 1 to 128 characters and no spaces or control characters"),
            (json!(["t"]), "TASKS: must be a table of task id to settings"),
            (json!({"t": 5}), "TASKS[\"t\"]: invalid type: number `5`, expected a table of settings"),
            (json!({"t": {"endpoint": "https://x", "queue": "q"}}), "TASKS[\"t\"].queue: invalid type: string \"q\", expected a table of settings"),
            (json!({"t": {"endpoint": "https://x", "queue": {"name": 7}}}), "TASKS[\"t\"].queue.name: invalid type: integer `7`, expected a string"),
            (json!({"t": {"endpoint": "https://x", "retry": {"randomise": true}}}), "TASKS[\"t\"].retry.randomise: unknown field `randomise`, expected one of `factor`, `minTimeoutInMs`, `maxTimeoutInMs`, `randomize`"),
            (json!({"t": {"endpoint": "https://x", "ttl": null, "path": null, "maxAttempts": 0}}), "TASKS[\"t\"].maxAttempts: must be an integer from 1 to 100"),
            (json!({"t": {"endpoint": "https://x", "shards": 0}}), "TASKS[\"t\"].shards: must be an integer from 1 to 64"),
            (json!({"t": {"endpoint": "https://x", "shards": 65}}), "TASKS[\"t\"].shards: must be an integer from 1 to 64"),
            (json!({"t": {"endpoint": "https://x", "queue": {"gateShards": 0}}}), "TASKS[\"t\"].queue.gateShards: must be an integer from 1 to 64"),
            (json!({"a": {"endpoint": "https://x", "queue": {"name": "q", "gateShards": 4}}, "b": {"endpoint": "https://x", "queue": {"name": "q", "gateShards": 2}}}), "TASKS[\"b\"].queue.gateShards: 2 here, 4 for task \"a\" on the same queue \"q\""),
        ] {
            let err = error_of(tasks);
            assert!(err.starts_with(message), "got {err:?}, want {message:?}");
        }
    }

    #[test]
    fn shards_default_to_one_and_a_queues_gates_are_declared_once_for_all_its_tasks() {
        let config = Config::from_raw(raw(json!({
            "hot": {"endpoint": "https://x", "shards": 8, "queue": {"gateShards": 4}},
            "a": {"endpoint": "https://x", "queue": {"name": "shared", "gateShards": 3}},
            "b": {"endpoint": "https://x", "queue": {"name": "shared"}},
            "plain": {"endpoint": "https://x"}
        })))
        .unwrap();
        assert_eq!(config.tasks["hot"].shards, 8);
        assert_eq!(config.tasks["plain"].shards, 1);
        assert_eq!(
            config.gate_shards("task/hot"),
            4,
            "a task's own default queue"
        );
        assert_eq!(
            config.gate_shards("shared"),
            3,
            "declared by one of its tasks"
        );
        assert_eq!(config.gate_shards("task/plain"), 1);
        assert_eq!(config.gate_shards("set-by-a-trigger"), 1);
    }

    #[test]
    fn a_queue_may_declare_a_total_cap_that_its_tasks_agree_on_at_one_gate() {
        let config = Config::from_raw(raw(json!({
            "a": {"endpoint": "https://x", "queue": {"name": "shared", "concurrencyLimit": 2, "totalConcurrencyLimit": 5}},
            "b": {"endpoint": "https://x", "queue": {"name": "shared", "concurrencyLimit": 3}},
            "plain": {"endpoint": "https://x"}
        })))
        .unwrap();
        assert_eq!(config.total_limit("shared"), Some(5));
        assert_eq!(config.total_limit("task/plain"), None);
        assert_eq!(
            config.queues.keys().collect::<Vec<_>>(),
            ["shared", "task/plain"],
            "every declared task's queue, once"
        );
        assert_eq!(
            config.queues["shared"].concurrency_limit,
            Some(2),
            "task a's, first by id"
        );
        for (tasks, message) in [
            (json!({"t": {"endpoint": "https://x", "queue": {"totalConcurrencyLimit": -1}}}), "TASKS[\"t\"].queue.totalConcurrencyLimit: invalid value"),
            (json!({"t": {"endpoint": "https://x", "queue": {"totalConcurrencyLimit": 100001}}}), "TASKS[\"t\"].queue.totalConcurrencyLimit: must be an integer from 0 to 100000"),
            (json!({"a": {"endpoint": "https://x", "queue": {"name": "q", "totalConcurrencyLimit": 4}}, "b": {"endpoint": "https://x", "queue": {"name": "q", "totalConcurrencyLimit": 2}}}), "TASKS[\"b\"].queue.totalConcurrencyLimit: 2 here, 4 for task \"a\" on the same queue \"q\""),
            (json!({"a": {"endpoint": "https://x", "queue": {"name": "q", "totalConcurrencyLimit": 4}}, "b": {"endpoint": "https://x", "queue": {"name": "q", "gateShards": 2}}}), "TASKS[\"a\"].queue.totalConcurrencyLimit: a total cap needs the queue at one gate, and \"q\" has gateShards = 2"),
        ] {
            let err = Config::from_raw(raw(tasks)).unwrap_err();
            assert!(err.starts_with(message), "got {err:?}, want {message:?}");
        }
    }

    #[test]
    fn a_task_may_declare_a_schedule_for_some_environments() {
        let config = Config::from_raw(raw(json!({
            "hourly": {"endpoint": "https://x", "schedule": "0 * * * *"},
            "report": {"endpoint": "https://x", "schedule": {"cron": " 0 9 * * 1-5 ", "timezone": "Europe/London", "environments": ["PRODUCTION"]}},
            "plain": {"endpoint": "https://x"},
        })))
        .unwrap();
        let dev: Vec<&str> = config
            .declared_schedules(Environment::Development)
            .iter()
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(dev, ["hourly"]);
        let prod = config.declared_schedules(Environment::Production);
        assert_eq!(
            prod.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            ["hourly", "report"]
        );
        assert_eq!(prod[0].1.timezone, "UTC");
        assert_eq!(
            (prod[1].1.cron.as_str(), prod[1].1.timezone.as_str()),
            ("0 9 * * 1-5", "Europe/London")
        );
        for (schedule, message) in [
            (json!({"timezone": "UTC"}), "TASKS[\"t\"].schedule.cron: required"),
            (json!("0 * * * * *"), "TASKS[\"t\"].schedule.cron: CRON expressions with seconds are not allowed"),
            (json!({"cron": "99 * * * *"}), "TASKS[\"t\"].schedule.cron: Invalid CRON expression"),
            (json!({"cron": "* * * * *", "environments": ["prod"]}), "TASKS[\"t\"].schedule.environments: \"prod\" is not one of DEVELOPMENT, STAGING, PRODUCTION, PREVIEW"),
            (json!({"cron": "* * * * *", "tz": "UTC"}), "TASKS[\"t\"].schedule.tz: unknown field `tz`"),
        ] {
            let err = error_of(json!({"t": {"endpoint": "https://x", "schedule": schedule}}));
            assert!(err.starts_with(message), "got {err:?}, want {message:?}");
        }
    }

    #[test]
    fn a_queue_may_declare_a_throttle_per_key() {
        let config = Config::from_raw(raw(json!({
            "a": {"endpoint": "https://x", "queue": {"name": "q", "throttle": {"limit": 5, "period": "1s"}}},
            "b": {"endpoint": "https://x", "queue": {"name": "q", "throttle": {"limit": 5, "period": "1s", "burst": 0}}},
        })))
        .unwrap();
        let throttle = Throttle {
            limit: 5,
            period_ms: 1000,
            burst: 0,
        };
        assert_eq!(config.throttle("q"), Some(throttle));
        assert_eq!(config.throttle("task/a"), None);
        for (throttle, message) in [
            (
                json!({"period": "1s"}),
                "queue.throttle.limit: must be an integer from 1 to 100000",
            ),
            (
                json!({"limit": 0, "period": "1s"}),
                "queue.throttle.limit: must be an integer from 1 to 100000",
            ),
            (
                json!({"limit": 5}),
                "queue.throttle.period: must be a duration from 1s to 1d",
            ),
            (
                json!({"limit": 5, "period": "2d"}),
                "queue.throttle.period: must be a duration from 1s to 1d",
            ),
            (
                json!({"limit": 5, "period": 1000}),
                "queue.throttle.period: invalid type",
            ),
            (
                json!({"limit": 5, "period": "1s", "burst": 100001}),
                "queue.throttle.burst: must be an integer from 0 to 100000",
            ),
            (
                json!({"limit": 5, "period": "1s", "rate": 1}),
                "queue.throttle.rate: unknown field",
            ),
        ] {
            let tasks = json!({"t": {"endpoint": "https://x", "queue": {"throttle": throttle}}});
            let err = Config::from_raw(raw(tasks)).unwrap_err();
            let message = format!("TASKS[\"t\"].{message}");
            assert!(err.starts_with(&message), "got {err:?}, want {message:?}");
        }
        let differing = json!({
            "a": {"endpoint": "https://x", "queue": {"name": "q", "throttle": {"limit": 5, "period": "1s"}}},
            "b": {"endpoint": "https://x", "queue": {"name": "q", "throttle": {"limit": 6, "period": "1s"}}},
        });
        assert!(Config::from_raw(raw(differing))
            .unwrap_err()
            .starts_with("TASKS[\"b\"].queue.throttle: differs from task \"a\"'s"));
    }

    #[test]
    fn tasks_and_keys_must_be_declared() {
        let mut no_tasks = raw(json!({}));
        no_tasks.tasks = None;
        assert!(Config::from_raw(no_tasks)
            .unwrap_err()
            .starts_with("TASKS: not declared"));
        let mut no_keys = raw(json!({}));
        no_keys.secret_keys = None;
        assert!(Config::from_raw(no_keys)
            .unwrap_err()
            .starts_with("TRIGGER_SECRET_KEYS"));
    }

    #[test]
    fn batch_item_limit_is_configurable_up_to_1000() {
        for (value, expected) in [
            (json!(50), Ok(50)),
            (json!("1000"), Ok(1000)),
            (json!(" 7 "), Ok(7)),
            (json!(0), Err(())),
            (json!(1001), Err(())),
            (json!("lots"), Err(())),
            (json!(2.5), Err(())),
        ] {
            let mut config = raw(json!({}));
            config.max_batch_items = Some(value.clone());
            let got = Config::from_raw(config)
                .map(|c| c.max_batch_items)
                .map_err(|_| ());
            assert_eq!(got, expected, "{value}");
        }
    }
}
