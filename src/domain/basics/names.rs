//! The names of the Durable Objects: which object owns what. A name is made here, from
//! its parts, and read back here; no other code builds or splits one.
//!
//! - a run store is `<env>:<route>` ([`StoreName`]): one per environment and route, the
//!   route being the three characters every run and batch id of that store starts with;
//! - a queue gate is `<env>:<queue>` ([`GateName`]): one per environment and queue, or
//!   for a queue of several gates (`gateShards`, `domain::basics::shards`) `<env>:<queue>`
//!   for its shard 0 and `<env>:<queue>@<n>` for the others;
//! - a run executor is `<gate>#<n>` ([`executor_name`]): one of its gate's pool;
//! - a rate limiter is `<env>`, the environment's slug, and so is a scheduler.
//!
//! Queue names hold only `[a-zA-Z0-9_\-/]` (`domain::intake::queue_name`) and slugs only
//! letters, so `:`, `@` and `#` always separate the parts.

use std::fmt;

use crate::domain::api::auth::Environment;
use crate::domain::basics::ids::StoreRoute;

/// The name of the run store that owns one route of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreName(String);

impl StoreName {
    pub fn new(environment: Environment, route: StoreRoute) -> StoreName {
        StoreName(format!("{}:{route}", environment.slug()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The environment slug of a store name as messages and tickets carry it (the whole
    /// text when it has no `:`).
    pub fn env_slug_of(name: &str) -> &str {
        name.split_once(':').map_or(name, |(env, _)| env)
    }
}

impl fmt::Display for StoreName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<StoreName> for String {
    fn from(name: StoreName) -> String {
        name.0
    }
}

/// The name of the gate of one queue of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GateName(String);

impl GateName {
    /// Gate `shard` of `queue` in the environment whose slug is `env_slug`.
    pub fn new(env_slug: &str, queue: &str, shard: u32) -> GateName {
        match shard {
            0 => GateName(format!("{env_slug}:{queue}")),
            n => GateName(format!("{env_slug}:{queue}@{n}")),
        }
    }

    pub fn in_environment(environment: Environment, queue: &str, shard: u32) -> GateName {
        GateName::new(environment.slug(), queue, shard)
    }

    /// Gate `shard` of a run's queue, from the name of the store that holds the run.
    pub fn for_store(store: &str, queue: &str, shard: u32) -> GateName {
        GateName::new(StoreName::env_slug_of(store), queue, shard)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<GateName> for String {
    fn from(name: GateName) -> String {
        name.0
    }
}

/// The executor of `gate`'s pool of `pool` objects that runs the attempt of lease `token`.
pub fn executor_name(gate: &str, token: u64, pool: u64) -> String {
    format!("{gate}#{}", token % pool.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_name_joins_the_environment_and_the_route_and_gives_the_environment_back() {
        let route = StoreRoute::for_task("hello-world");
        let name = StoreName::new(Environment::Production, route);
        assert_eq!(name.as_str(), format!("prod:{route}"));
        assert_eq!(StoreName::env_slug_of(name.as_str()), "prod");
        assert_eq!(StoreName::env_slug_of("oddity"), "oddity");
    }

    #[test]
    fn a_gate_is_named_by_its_environment_and_queue_also_from_a_store_name() {
        let gate = GateName::in_environment(Environment::Development, "task/hello-world", 0);
        assert_eq!(gate.as_str(), "dev:task/hello-world");
        let store = StoreName::new(Environment::Development, StoreRoute::for_task("t"));
        assert_eq!(
            GateName::for_store(store.as_str(), "task/hello-world", 0),
            gate
        );
        assert_eq!(
            GateName::for_store(store.as_str(), "task/hello-world", 3).as_str(),
            "dev:task/hello-world@3",
            "a queue's other gates"
        );
        // Environments never share a gate.
        assert_ne!(
            GateName::in_environment(Environment::Staging, "q", 0),
            GateName::in_environment(Environment::Preview, "q", 0)
        );
    }

    #[test]
    fn an_executor_is_one_of_its_gates_pool_by_lease_token() {
        assert_eq!(executor_name("dev:q", 13, 8), "dev:q#5");
        assert_eq!(executor_name("dev:q", 13, 1), "dev:q#0");
        assert_eq!(
            executor_name("dev:q", 13, 0),
            "dev:q#0",
            "a pool has one at least"
        );
    }
}
