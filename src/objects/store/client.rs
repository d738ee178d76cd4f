//! `RunStoreClient`: the only code that sends commands to run stores or reads their replies.

use worker::Env;

use super::protocol::{StoreCommand, StoreReply};
use crate::domain::api::auth::Environment;
use crate::domain::basics::ids::StoreRoute;
use crate::platform::rpc;

/// The Durable Object namespace binding of `RunStore`.
pub const RUN_STORE: &str = "RUN_STORE";

/// The name of the store that owns `route` in `env`: `<env>:<route>`.
pub fn store_name(env: Environment, route: StoreRoute) -> String {
    format!("{}:{}", env.slug(), route)
}

/// The environment slug of a store name.
pub fn env_of_store(store: &str) -> &str {
    store.split_once(':').map_or(store, |(env, _)| env)
}

pub struct RunStoreClient {
    object: rpc::ObjectStub,
}

impl RunStoreClient {
    pub fn new(env: &Env, name: &str) -> Result<RunStoreClient, rpc::CallError> {
        Ok(RunStoreClient {
            object: rpc::object(env, RUN_STORE, name)?,
        })
    }

    pub async fn call(&self, command: &StoreCommand) -> Result<StoreReply, rpc::CallError> {
        rpc::call(&self.object, command).await
    }
}
