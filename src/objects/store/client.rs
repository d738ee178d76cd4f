//! `RunStoreClient`: the only code that sends commands to run stores or reads their
//! replies, and the rules that name a store.

use crate::domain::api::auth::Environment;
use crate::domain::basics::ids::StoreRoute;
use crate::platform::rpc::Client;

use super::protocol::Store;

/// A client of one run store: `send` takes any store command and answers its reply type
/// (`protocol`, `store_command!`).
pub type RunStoreClient = Client<Store>;

/// The name of the store that owns `route` in `env`: `<env>:<route>`.
pub fn store_name(env: Environment, route: StoreRoute) -> String {
    format!("{}:{}", env.slug(), route)
}

/// The environment slug of a store name.
pub fn env_of_store(store: &str) -> &str {
    store.split_once(':').map_or(store, |(env, _)| env)
}
