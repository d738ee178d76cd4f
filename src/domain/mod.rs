//! The functional core: every rule of the API as plain Rust, with no `worker` types, so
//! that `cargo test` on the host exercises all of it. Grouped by what the rules decide:
//!
//! - [`intake`]: what a trigger may ask for. Batch, trigger and NDJSON item bodies parsed
//!   into validated run requests, idempotency decisions, queue names, offloaded payloads.
//! - [`run`]: a run's life once accepted. Statuses and their vocabularies, transitions,
//!   retry backoff, the signed task call, getting runs onto the queue.
//! - [`schedule`]: cron schedules: when they tick (in a time zone) and the run a tick
//!   triggers.
//! - [`scheduling`]: who runs when. The gate's admission state machine per queue.
//! - [`api`]: what callers see and are allowed. API keys and environments, rate limits,
//!   the one error type, the read views, list queries, request URLs and body pacing.
//! - [`basics`]: platform-free building blocks. Times, durations, ids, schema migration
//!   plans.
//! - [`config`]: the worker's configuration, checked loudly.
//! - [`cost`]: what runs cost: the operations account and its price at list prices.

pub mod api;
pub mod basics;
pub mod config;
pub mod cost;
pub mod intake;
#[cfg(test)]
mod properties;
pub mod run;
pub mod schedule;
pub mod scheduling;
