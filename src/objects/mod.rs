//! The Durable Objects, each with the same parts: a `protocol` (the commands it takes and
//! a reply type per command), a typed client (the only code that calls it), its schema
//! (`schema.rs`, numbered migration steps), and the object, which decodes a command,
//! runs the core's rules over its storage and answers.
//!
//! - [`store`]: `RunStore`, the runs, batches, idempotency keys, queue limits and outbox
//!   of one environment's tasks on one route.
//! - [`gate`]: `QueueGate`, one queue's limit, waiting runs and leases.
//! - [`executor`]: `RunExecutor`, a small pool per gate: admitted attempts and the call to
//!   the task's endpoint.
//! - [`limiter`]: `RateLimiter`, one environment's rate-limit buckets (memory only).
//! - [`scheduler`]: `Scheduler`, one environment's cron schedules, fired by its alarm.
//! - [`bulk`]: `BulkActions`, one environment's bulk cancels and replays, a page per
//!   store at a time by its alarm.
//! - [`group_commit`]: callers' items sent together, one flush at a time (the store's
//!   triggers, the executor's starts and reports).

pub mod bulk;
pub mod executor;
pub mod gate;
pub mod group_commit;
pub mod limiter;
pub mod scheduler;
pub mod store;
