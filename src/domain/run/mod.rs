//! A run's life once it is accepted: its statuses and the two vocabularies the SDKs read,
//! the legal transitions, retry backoff, the signed call to the task's endpoint, batch
//! status, and the rules that get runs onto the queue (message packing, outbox timing).

pub mod answer;
pub mod body;
pub mod delivery;
pub mod execution;
pub mod metadata;
pub mod status;
