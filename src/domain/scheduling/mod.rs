//! Who runs when: the admission state machine of one queue's gate (limits per
//! concurrency key, waiting order, leases and their expiry), and how a gate spreads its
//! admitted attempts over its pool of executors. The queue controls (pause,
//! overrides, priority, fairness, throttles, debounce) belong here too.

pub mod gate;
pub mod lease_rows;
pub mod pool;
