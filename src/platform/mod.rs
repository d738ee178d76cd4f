//! Glue to the Workers platform that every adapter shares: the calls between objects
//! ([`rpc`]), the clock, alarms and small runtime helpers ([`runtime`]), the configuration
//! read once per isolate ([`settings`]), SQLite helpers and schema migration ([`sql`]), rows
//! inserted through a few bound values ([`packed`]),
//! offloaded payloads in R2 ([`packets`]), and the operations account ([`meter`]).

pub mod meter;
pub mod packed;
pub mod packets;
pub mod rpc;
pub mod runtime;
pub mod settings;
pub mod sql;
pub mod zones;
