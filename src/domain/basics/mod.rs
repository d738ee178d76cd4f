//! Platform-free building blocks every other group uses: instants and their ISO-8601 form,
//! Trigger.dev's duration strings, run and batch ids, and the plan of an object's schema
//! migrations.

pub mod duration;
pub mod ids;
pub mod names;
pub mod schema;
pub mod shards;
pub mod time;
