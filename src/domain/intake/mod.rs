//! What a trigger may ask for: the bodies of the trigger endpoints turned into validated
//! run requests once, at the edge ("parse, don't validate"), and the decisions made on
//! them before anything is stored. Every failure here is a 4xx naming the field.

pub mod batch_items;
pub mod debounce;
pub mod idempotency;
pub mod manage;
pub mod ndjson;
pub mod packets;
pub mod queue_name;
pub mod trigger;
