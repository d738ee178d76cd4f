//! What runs cost: the operations account (every billable operation the worker made,
//! counted where it is made, see `platform::meter`) and its price at Cloudflare's list
//! prices. Plain data and arithmetic, so that the edge, the benchmark's report and the
//! budget test (`bench/budget.json`) all read one definition.

use serde::{Deserialize, Serialize};

/// Cloudflare's Workers Paid list prices, in dollars per unit, beyond the plan's monthly
/// inclusions (which this account ignores: it prices the margin).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    /// When and where they were read.
    pub checked: &'static str,
    /// A Worker request: an HTTP request to the edge, or a queue consumer invocation.
    /// A call through a service binding is not billed as a request of its own.
    pub worker_request: f64,
    /// A Worker CPU millisecond.
    pub worker_cpu_ms: f64,
    /// A Durable Object request: an RPC call, a `fetch` or an alarm.
    pub object_request: f64,
    /// A GB-second of Durable Object duration.
    pub object_gb_second: f64,
    /// The memory an active object is billed for, in GB.
    pub object_gb: f64,
    /// A SQLite row written (each index entry counts).
    pub row_written: f64,
    /// A SQLite row read.
    pub row_read: f64,
    /// A GB-month of SQLite storage.
    pub stored_gb_month: f64,
    /// A queue operation: each 64 KB written, read or deleted.
    pub queue_operation: f64,
    /// What others charge per run, for comparison: Trigger.dev cloud's per-run fee
    /// (compute extra), and QStash's per message.
    pub trigger_dev_run: f64,
    pub qstash_message: f64,
}

pub const PRICES: Prices = Prices {
    checked: "2026-12-02, developers.cloudflare.com: workers/platform/pricing, \
              durable-objects/platform/pricing, queues/platform/pricing",
    worker_request: 0.30 / 1e6,
    worker_cpu_ms: 0.02 / 1e6,
    object_request: 0.15 / 1e6,
    object_gb_second: 12.50 / 1e6,
    object_gb: 0.128,
    row_written: 1.00 / 1e6,
    row_read: 0.001 / 1e6,
    stored_gb_month: 0.20,
    queue_operation: 0.40 / 1e6,
    trigger_dev_run: 25.0 / 1e6,
    qstash_message: 10.0 / 1e6,
};

/// What `GET /api/v1/meter` answers: the account, its totals and their price (all
/// linear in the counts, so the difference of two statements is the statement of what
/// happened between them), and the prices.
#[derive(Serialize)]
pub struct Statement<'a> {
    #[serde(flatten)]
    pub account: &'a Account,
    pub totals: Totals,
    pub prices: &'a Prices,
}

impl Statement<'_> {
    pub fn of(account: &Account) -> Statement<'_> {
        Statement {
            account,
            totals: Totals {
                statements: account.statements(),
                rows_written: account.rows_written(),
                rows_read: account.rows_read(),
                object_requests: account.object_requests(),
                queue_operations: account.queue.operations,
                worker_requests: account.worker_requests(),
                dollars: account.dollars(),
            },
            prices: &PRICES,
        }
    }
}

/// An account's totals over object kinds, and its price.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub statements: u64,
    pub rows_written: u64,
    pub rows_read: u64,
    pub object_requests: u64,
    pub queue_operations: u64,
    pub worker_requests: u64,
    pub dollars: Dollars,
}

/// Bytes per queue operation: a message of up to 64 KB is one operation per write, read
/// and delete.
pub const QUEUE_OPERATION_BYTES: u64 = 64 * 1024;

/// The queue operations one write, read or delete of a message of `bytes` costs.
pub fn queue_operations(bytes: u64) -> u64 {
    bytes.div_ceil(QUEUE_OPERATION_BYTES).max(1)
}

/// Everything counted since an isolate started (or between two snapshots, see
/// [`Account::since`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Account {
    pub runs: Runs,
    pub store: ObjectOps,
    pub gate: ObjectOps,
    pub executor: ObjectOps,
    pub limiter: ObjectOps,
    pub scheduler: ObjectOps,
    pub bulk: ObjectOps,
    pub queue: QueueOps,
    pub worker: WorkerOps,
    /// The SQLite databases' sizes, summed over the objects this isolate served.
    pub stored_bytes: u64,
}

/// The runs the account's operations were spent on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Runs {
    /// New runs committed by triggers (a repeated idempotency key is not one).
    pub accepted: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Runs that reached COMPLETED.
    pub completed: u64,
    /// Runs whose last attempt failed (FAILED).
    pub failed: u64,
}

/// One object kind's operations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectOps {
    /// Calls and fetches it answered.
    pub requests: u64,
    /// Alarms it ran.
    pub alarms: u64,
    /// SQL statements it executed.
    pub statements: u64,
    /// The cursors' `rowsRead`, summed.
    pub rows_read: u64,
    /// The cursors' `rowsWritten`, summed (index entries included).
    pub rows_written: u64,
    /// Milliseconds during which an instance had a request or alarm under way, summed over
    /// instances: the duration it is billed for (an idle object hibernates, unbilled).
    pub active_ms: u64,
}

/// The queue's operations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueOps {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub acks: u64,
    pub retries: u64,
    /// Writes, reads and deletes, each per 64 KB of its message.
    pub operations: u64,
}

/// The Worker's invocations and the calls it made to tasks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerOps {
    /// HTTP requests the edge answered.
    pub fetches: u64,
    /// Queue consumer invocations.
    pub queue_batches: u64,
    /// Task calls over HTTP (subrequests, not billed as requests).
    pub task_fetches: u64,
    /// Task calls through a service binding (not billed as requests).
    pub service_calls: u64,
}

impl ObjectOps {
    fn since(&self, before: &ObjectOps) -> ObjectOps {
        ObjectOps {
            requests: self.requests.saturating_sub(before.requests),
            alarms: self.alarms.saturating_sub(before.alarms),
            statements: self.statements.saturating_sub(before.statements),
            rows_read: self.rows_read.saturating_sub(before.rows_read),
            rows_written: self.rows_written.saturating_sub(before.rows_written),
            active_ms: self.active_ms.saturating_sub(before.active_ms),
        }
    }
}

impl Account {
    /// What was counted after `before` (an earlier snapshot of the same isolate).
    pub fn since(&self, before: &Account) -> Account {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Account {
            runs: Runs {
                accepted: d(self.runs.accepted, before.runs.accepted),
                attempts: d(self.runs.attempts, before.runs.attempts),
                completed: d(self.runs.completed, before.runs.completed),
                failed: d(self.runs.failed, before.runs.failed),
            },
            store: self.store.since(&before.store),
            gate: self.gate.since(&before.gate),
            executor: self.executor.since(&before.executor),
            limiter: self.limiter.since(&before.limiter),
            scheduler: self.scheduler.since(&before.scheduler),
            bulk: self.bulk.since(&before.bulk),
            queue: QueueOps {
                messages_sent: d(self.queue.messages_sent, before.queue.messages_sent),
                messages_received: d(self.queue.messages_received, before.queue.messages_received),
                acks: d(self.queue.acks, before.queue.acks),
                retries: d(self.queue.retries, before.queue.retries),
                operations: d(self.queue.operations, before.queue.operations),
            },
            worker: WorkerOps {
                fetches: d(self.worker.fetches, before.worker.fetches),
                queue_batches: d(self.worker.queue_batches, before.worker.queue_batches),
                task_fetches: d(self.worker.task_fetches, before.worker.task_fetches),
                service_calls: d(self.worker.service_calls, before.worker.service_calls),
            },
            stored_bytes: d(self.stored_bytes, before.stored_bytes),
        }
    }

    /// Each object kind's operations, by name.
    pub fn objects(&self) -> [(&'static str, &ObjectOps); 6] {
        [
            ("store", &self.store),
            ("gate", &self.gate),
            ("executor", &self.executor),
            ("limiter", &self.limiter),
            ("scheduler", &self.scheduler),
            ("bulk", &self.bulk),
        ]
    }

    fn sum(&self, f: impl Fn(&ObjectOps) -> u64) -> u64 {
        self.objects().iter().map(|(_, o)| f(o)).sum()
    }

    /// Durable Object requests: calls, fetches and alarms.
    pub fn object_requests(&self) -> u64 {
        self.sum(|o| o.requests + o.alarms)
    }

    pub fn rows_written(&self) -> u64 {
        self.sum(|o| o.rows_written)
    }

    pub fn rows_read(&self) -> u64 {
        self.sum(|o| o.rows_read)
    }

    pub fn statements(&self) -> u64 {
        self.sum(|o| o.statements)
    }

    /// Worker requests billed: the edge's and the queue consumer's invocations.
    pub fn worker_requests(&self) -> u64 {
        self.worker.fetches + self.worker.queue_batches
    }

    /// The price of every counted operation (CPU time is measured outside, see
    /// [`Dollars::with_cpu_ms`]).
    pub fn dollars(&self) -> Dollars {
        let active_seconds = self.sum(|o| o.active_ms) as f64 / 1000.0;
        let parts = Dollars {
            worker_requests: self.worker_requests() as f64 * PRICES.worker_request,
            worker_cpu: 0.0,
            object_requests: self.object_requests() as f64 * PRICES.object_request,
            object_duration: active_seconds * PRICES.object_gb * PRICES.object_gb_second,
            rows_written: self.rows_written() as f64 * PRICES.row_written,
            rows_read: self.rows_read() as f64 * PRICES.row_read,
            queue: self.queue.operations as f64 * PRICES.queue_operation,
            total: 0.0,
        };
        parts.totalled()
    }

    /// The figures a budget holds, per run of `runs` (none: all zero).
    pub fn per_run(&self, runs: u64) -> PerRun {
        let per = |n: f64| if runs == 0 { 0.0 } else { n / runs as f64 };
        PerRun {
            rows_written_per_run: per(self.rows_written() as f64),
            rows_read_per_run: per(self.rows_read() as f64),
            do_requests_per_run: per(self.object_requests() as f64),
            queue_ops_per_run: per(self.queue.operations as f64),
            dollars_per_million_runs: per(self.dollars().total) * 1e6,
        }
    }
}

/// An account's price, by what is billed, in dollars.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Dollars {
    pub worker_requests: f64,
    pub worker_cpu: f64,
    pub object_requests: f64,
    pub object_duration: f64,
    pub rows_written: f64,
    pub rows_read: f64,
    pub queue: f64,
    pub total: f64,
}

impl Dollars {
    /// With the Worker CPU time measured for the same work.
    pub fn with_cpu_ms(self, cpu_ms: f64) -> Dollars {
        Dollars {
            worker_cpu: cpu_ms * PRICES.worker_cpu_ms,
            ..self
        }
        .totalled()
    }

    fn totalled(self) -> Dollars {
        let total = self.worker_requests
            + self.worker_cpu
            + self.object_requests
            + self.object_duration
            + self.rows_written
            + self.rows_read
            + self.queue;
        Dollars { total, ..self }
    }
}

/// The per-run figures a budget (`bench/budget.json`) bounds for one scenario.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PerRun {
    pub rows_written_per_run: f64,
    pub rows_read_per_run: f64,
    pub do_requests_per_run: f64,
    pub queue_ops_per_run: f64,
    pub dollars_per_million_runs: f64,
}

impl PerRun {
    /// The figures of `self` above `budget`, each as `(name, measured, budgeted)`.
    pub fn over(&self, budget: &PerRun) -> Vec<(&'static str, f64, f64)> {
        let pairs = [
            (
                "rowsWrittenPerRun",
                self.rows_written_per_run,
                budget.rows_written_per_run,
            ),
            (
                "rowsReadPerRun",
                self.rows_read_per_run,
                budget.rows_read_per_run,
            ),
            (
                "doRequestsPerRun",
                self.do_requests_per_run,
                budget.do_requests_per_run,
            ),
            (
                "queueOpsPerRun",
                self.queue_ops_per_run,
                budget.queue_ops_per_run,
            ),
            (
                "dollarsPerMillionRuns",
                self.dollars_per_million_runs,
                budget.dollars_per_million_runs,
            ),
        ];
        // A hair of tolerance for the decimals a budget file is written with.
        pairs
            .into_iter()
            .filter(|(_, measured, budgeted)| *measured > budgeted + 1e-9)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            runs: Runs {
                accepted: 1000,
                attempts: 1000,
                completed: 1000,
                failed: 0,
            },
            store: ObjectOps {
                requests: 30,
                alarms: 10,
                statements: 500,
                rows_read: 20_000,
                rows_written: 9000,
                active_ms: 2000,
            },
            gate: ObjectOps {
                requests: 20,
                rows_written: 4000,
                ..ObjectOps::default()
            },
            executor: ObjectOps {
                requests: 40,
                rows_written: 2000,
                ..ObjectOps::default()
            },
            queue: QueueOps {
                messages_sent: 10,
                messages_received: 10,
                acks: 10,
                retries: 0,
                operations: 30,
            },
            worker: WorkerOps {
                fetches: 10,
                queue_batches: 5,
                ..WorkerOps::default()
            },
            ..Account::default()
        }
    }

    #[test]
    fn a_queue_operation_is_each_64_kb_of_a_message_and_at_least_one() {
        assert_eq!(queue_operations(0), 1);
        assert_eq!(queue_operations(200), 1);
        assert_eq!(queue_operations(65_536), 1);
        assert_eq!(queue_operations(65_537), 2);
        assert_eq!(queue_operations(128 * 1024), 2);
    }

    #[test]
    fn totals_sum_every_object_kind() {
        let a = account();
        assert_eq!(a.rows_written(), 15_000);
        assert_eq!(a.rows_read(), 20_000);
        assert_eq!(a.object_requests(), 100);
        assert_eq!(a.statements(), 500);
        assert_eq!(a.worker_requests(), 15);
    }

    #[test]
    fn dollars_are_each_operation_at_its_list_price() {
        let d = account().dollars();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(d.rows_written, 15_000.0 * 1e-6));
        assert!(close(d.rows_read, 20_000.0 * 1e-9));
        assert!(close(d.object_requests, 100.0 * 0.15e-6));
        assert!(close(d.worker_requests, 15.0 * 0.30e-6));
        assert!(close(d.queue, 30.0 * 0.40e-6));
        // 2 s active at 128 MB: 0.256 GB-s.
        assert!(close(d.object_duration, 0.256 * 12.5e-6));
        let parts = d.rows_written
            + d.rows_read
            + d.object_requests
            + d.worker_requests
            + d.queue
            + d.object_duration;
        assert!(close(d.total, parts));
        let with_cpu = d.clone().with_cpu_ms(1000.0);
        assert!(close(with_cpu.total, parts + 1000.0 * 0.02e-6));
    }

    #[test]
    fn per_run_figures_divide_by_the_runs_and_scale_dollars_to_a_million() {
        let a = account();
        let per = a.per_run(1000);
        assert_eq!(per.rows_written_per_run, 15.0);
        assert_eq!(per.rows_read_per_run, 20.0);
        assert_eq!(per.do_requests_per_run, 0.1);
        assert_eq!(per.queue_ops_per_run, 0.03);
        assert!((per.dollars_per_million_runs - a.dollars().total * 1000.0).abs() < 1e-9);
        assert_eq!(a.per_run(0), PerRun::default());
    }

    #[test]
    fn since_subtracts_an_earlier_snapshot() {
        let later = account();
        let mut earlier = account();
        earlier.store.rows_written = 1000;
        earlier.runs.accepted = 400;
        earlier.queue.operations = 30;
        let d = later.since(&earlier);
        assert_eq!(d.store.rows_written, 8000);
        assert_eq!(d.runs.accepted, 600);
        assert_eq!(d.queue.operations, 0);
        assert_eq!(d.gate, ObjectOps::default());
        assert_eq!(later.since(&Account::default()), later);
    }

    #[test]
    fn over_names_each_figure_above_its_budget() {
        let budget = account().per_run(1000);
        assert!(budget.over(&budget).is_empty());
        let mut worse = budget.clone();
        worse.rows_written_per_run += 1.0;
        worse.queue_ops_per_run += 0.01;
        let over: Vec<&str> = worse.over(&budget).into_iter().map(|o| o.0).collect();
        assert_eq!(over, ["rowsWrittenPerRun", "queueOpsPerRun"]);
    }

    #[test]
    fn the_statement_is_the_account_with_its_prices_beside() {
        let a = account();
        let text = serde_json::to_string(&Statement::of(&a)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["store"]["rowsWritten"], 9000);
        assert_eq!(value["totals"]["rowsWritten"], 15_000);
        assert_eq!(value["totals"]["objectRequests"], 100);
        let total = value["totals"]["dollars"]["total"].as_f64().unwrap();
        assert!((total - a.dollars().total).abs() < 1e-12);
        assert_eq!(value["prices"]["rowWritten"], 1e-6);
        // The budget test reads a statement back as an account.
        assert_eq!(serde_json::from_str::<Account>(&text).unwrap(), a);
    }

    #[test]
    fn an_account_reads_back_as_written_and_missing_fields_are_zero() {
        let a = account();
        let text = serde_json::to_string(&a).unwrap();
        assert!(text.contains("\"rowsWritten\":9000"));
        assert_eq!(serde_json::from_str::<Account>(&text).unwrap(), a);
        let partial: Account = serde_json::from_str(r#"{"runs":{"accepted":3}}"#).unwrap();
        assert_eq!(partial.runs.accepted, 3);
        assert_eq!(partial.store, ObjectOps::default());
    }
}
