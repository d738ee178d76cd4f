//! `RunStoreClient`: the only code that builds run-store URLs or reads their replies.

use worker::{Env, Stub};

use super::protocol::{StoreCommand, StoreReply};
use crate::domain::auth::Environment;
use crate::domain::ids::Route;
use crate::rpc;

/// The Durable Object namespace binding of `RunStore`.
pub const RUN_STORE: &str = "RUN_STORE";

/// The name of the store that owns `route` in `env`: `<env>:<route>`.
pub fn store_name(env: Environment, route: Route) -> String {
    format!("{}:{}", env.slug(), route)
}

/// The environment slug of a store name.
pub fn env_of_store(store: &str) -> &str {
    store.split_once(':').map_or(store, |(env, _)| env)
}

pub struct RunStoreClient {
    stub: Stub,
}

impl RunStoreClient {
    pub fn new(env: &Env, name: &str) -> Result<RunStoreClient, rpc::CallError> {
        let stub = env
            .durable_object(RUN_STORE)?
            .id_from_name(name)?
            .get_stub()?;
        Ok(RunStoreClient { stub })
    }

    pub async fn call(&self, command: &StoreCommand) -> Result<StoreReply, rpc::CallError> {
        rpc::call(&self.stub, command).await
    }
}
