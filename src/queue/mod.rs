//! The queue stage: what happens between a store's outbox and a gate. The consumer takes
//! delivered run references from the Cloudflare Queue to their stores (claim) and their
//! gates (offer); the edge offers the runs a trigger just made the same way, at once.

pub mod consumer;
pub mod offers;
