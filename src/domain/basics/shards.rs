//! Shards: a hot task's runs over several stores, a hot queue's concurrency keys over
//! several gates. Which shard owns what is decided here and nowhere else.
//!
//! **Store shards** (`shards = N` on a task, 1 to [`MAX_SHARDS`]). Shard 0 is the task's
//! route as it has always been ([`StoreRoute::for_task`]); shard `k` is the route of the
//! task's name with `k` appended. Every id embeds its route, so a run or batch is read,
//! cancelled, replayed or rescheduled at the store that made it whatever `N` is now. A
//! trigger commits in one store (a batch stays all or nothing), chosen by
//! [`trigger_shard`]:
//!
//! - a trigger that carries an idempotency key (on any item, or the batch's own
//!   `idempotency-key` header) goes to shard 0, the task's *home*: every key of a task is
//!   stored there and nowhere else, for every `N`, so raising or lowering `N` never gives
//!   a key a second owner;
//! - a trigger without keys goes to any shard (uniformly), since nothing in it needs to
//!   be found again by content.
//!
//! Keyed triggers of one task are thus one store's work: shards spread the unkeyed ones.
//!
//! **Gate shards** (`gateShards = N` on a queue, 1 to [`MAX_SHARDS`]). A queue's runs go
//! to the gate of their concurrency key's shard ([`gate_shard`]: FNV-1a of the key, mod
//! `N`); shard 0 is the queue's gate as it has always been. Keys are independent (each has
//! its own copy of the limit), so splitting them loses nothing; runs without a key share
//! one key, the empty one, and so one gate.

use crate::domain::basics::ids::{fnv1a, StoreRoute};

/// The most shards of either kind a task or queue may declare.
pub const MAX_SHARDS: u32 = 64;

/// The route of shard `shard` of `task`'s stores. Shard 0 is the task's home.
pub fn store_route(task: &str, shard: u32) -> StoreRoute {
    match shard {
        0 => StoreRoute::for_task(task),
        k => StoreRoute::for_task(&format!("{task}\u{0}shard\u{0}{k}")),
    }
}

/// Every route of a task declared with `shards` stores, home first (for the list, which
/// merges them all).
pub fn store_routes(task: &str, shards: u32) -> Vec<StoreRoute> {
    (0..shards.clamp(1, MAX_SHARDS))
        .map(|k| store_route(task, k))
        .collect()
}

/// The shard a trigger commits in: the home (0) when it carries any idempotency key,
/// else `random mod shards`.
pub fn trigger_shard(keyed: bool, shards: u32, random: u32) -> u32 {
    match keyed {
        true => 0,
        false => random % shards.clamp(1, MAX_SHARDS),
    }
}

/// The route of the store a trigger of `task` (declared with `shards` stores) commits in:
/// [`trigger_shard`] with a fresh random number.
pub fn trigger_route(task: &str, shards: u32, keyed: bool) -> StoreRoute {
    let random = match keyed || shards <= 1 {
        true => 0,
        false => {
            let mut bytes = [0u8; 4];
            getrandom::getrandom(&mut bytes).expect("the platform provides a random source");
            u32::from_le_bytes(bytes)
        }
    };
    store_route(task, trigger_shard(keyed, shards, random))
}

/// The gate shard of a run with `concurrency_key` (empty: none) on a queue of `shards`
/// gates.
pub fn gate_shard(concurrency_key: &str, shards: u32) -> u32 {
    (fnv1a(concurrency_key) % u64::from(shards.clamp(1, MAX_SHARDS))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn shard_0_is_the_route_a_task_always_had_and_the_others_differ() {
        assert_eq!(store_route("t", 0), StoreRoute::for_task("t"));
        let routes = store_routes("hello-world", 8);
        assert_eq!(routes.len(), 8);
        assert_eq!(routes[0], StoreRoute::for_task("hello-world"));
        assert_eq!(routes.iter().collect::<HashSet<_>>().len(), 8);
        assert_eq!(
            store_routes("t", 0).len(),
            1,
            "a task has one store at least"
        );
        assert_eq!(store_routes("t", 1000).len(), MAX_SHARDS as usize);
    }

    #[test]
    fn keyed_triggers_go_home_and_the_others_anywhere() {
        assert_eq!(trigger_shard(true, 8, 5), 0);
        assert_eq!(trigger_shard(false, 8, 13), 5);
        assert_eq!(trigger_shard(false, 1, 13), 0);
        assert_eq!(trigger_shard(false, 0, 13), 0);
        let spread: HashSet<u32> = (0..64).map(|r| trigger_shard(false, 4, r)).collect();
        assert_eq!(spread, HashSet::from([0, 1, 2, 3]));
    }

    #[test]
    fn a_key_keeps_its_gate_and_keys_spread_over_the_gates() {
        assert_eq!(gate_shard("tenant-1", 1), 0);
        let spread: HashSet<u32> = (0..64).map(|k| gate_shard(&format!("k{k}"), 4)).collect();
        assert_eq!(spread, HashSet::from([0, 1, 2, 3]));
    }

    proptest! {
        /// Any sequence of triggers, keyed or not, under any sequence of shard counts
        /// (a deployment raising and lowering `shards`), stores every key in one store.
        #[test]
        fn no_key_ever_has_two_owners(
            triggers in prop::collection::vec(
                (1u32..=64, prop::collection::vec(prop::option::of(0u8..20), 1..10), any::<u32>()),
                1..60,
            )
        ) {
            let mut owner: HashMap<u8, StoreRoute> = HashMap::new();
            for (shards, keys, random) in triggers {
                let keyed = keys.iter().any(Option::is_some);
                let route = store_route("t", trigger_shard(keyed, shards, random));
                for key in keys.into_iter().flatten() {
                    let first = *owner.entry(key).or_insert(route);
                    prop_assert_eq!(first, route);
                }
            }
        }

        /// Every key has a gate among the queue's.
        #[test]
        fn every_key_has_one_of_the_queues_gates(key in ".{0,40}", shards in 0u32..100) {
            prop_assert!(gate_shard(&key, shards) < shards.clamp(1, MAX_SHARDS));
        }
    }
}
