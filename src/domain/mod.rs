//! The functional core: every rule of the API as plain Rust, with no `worker` types, so
//! that `cargo test` on the host exercises all of it.

pub mod auth;
pub mod config;
pub mod delivery;
pub mod duration;
pub mod error;
pub mod execution;
pub mod gate;
pub mod http_body;
pub mod idempotency;
pub mod ids;
pub mod list;
pub mod ndjson;
pub mod packets;
#[cfg(test)]
mod properties;
pub mod queue_name;
pub mod rate_limit;
pub mod request_url;
pub mod schema;
pub mod status;
pub mod time;
pub mod trigger;
pub mod view;
