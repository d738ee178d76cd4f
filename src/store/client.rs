//! `RunStoreClient`: the only code that builds run-store URLs or reads their replies.

use worker::{Env, Method, Request, RequestInit, Stub};

use super::protocol::{StoreCommand, StoreReply};
use crate::domain::auth::Environment;
use crate::domain::error::ApiError;
use crate::domain::ids::Route;

/// The Durable Object namespace binding of `RunStore`.
pub const RUN_STORE: &str = "RUN_STORE";

/// The name of the store that owns `route` in `env`: `<env>:<route>`.
pub fn store_name(env: Environment, route: Route) -> String {
    format!("{}:{}", env.slug(), route)
}

pub struct RunStoreClient {
    stub: Stub,
}

/// A failed call to a store, before it is turned into an API error.
#[derive(Debug)]
pub struct StoreError {
    pub overloaded: bool,
    pub detail: String,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        worker::console_error!("run store call failed: {}", e.detail);
        if e.overloaded {
            ApiError::Overloaded
        } else {
            ApiError::Internal { retry: true }
        }
    }
}

impl From<worker::Error> for StoreError {
    fn from(e: worker::Error) -> StoreError {
        let detail = e.to_string();
        StoreError {
            // The runtime's words for a Durable Object past its capacity.
            overloaded: detail.contains("overloaded") || detail.contains("Too many requests"),
            detail,
        }
    }
}

impl RunStoreClient {
    pub fn new(env: &Env, name: &str) -> Result<RunStoreClient, StoreError> {
        let stub = env
            .durable_object(RUN_STORE)?
            .id_from_name(name)?
            .get_stub()?;
        Ok(RunStoreClient { stub })
    }

    pub async fn call(&self, command: &StoreCommand) -> Result<StoreReply, StoreError> {
        let body = serde_json::to_string(command).map_err(|e| StoreError {
            overloaded: false,
            detail: e.to_string(),
        })?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(body.into()));
        let request = Request::new_with_init("https://run-store/", &init)?;
        let mut response = self.stub.fetch_with_request(request).await?;
        let bytes = response.bytes().await?;
        if response.status_code() != 200 {
            return Err(StoreError {
                overloaded: false,
                detail: format!(
                    "status {}: {}",
                    response.status_code(),
                    String::from_utf8_lossy(&bytes)
                ),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| StoreError {
            overloaded: false,
            detail: format!("unreadable store reply: {e}"),
        })
    }
}
