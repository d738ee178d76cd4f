//! One request/reply exchange with a Durable Object: a JSON command in, a JSON reply out.
//! Every typed client (`RunStoreClient`, `QueueGateClient`, `RunExecutorClient`) uses it.

use serde::de::DeserializeOwned;
use serde::Serialize;
use worker::{Method, Request, RequestInit, Stub};

use crate::domain::error::ApiError;

/// A failed call, before it is turned into an API error.
#[derive(Debug)]
pub struct CallError {
    pub overloaded: bool,
    pub detail: String,
}

impl CallError {
    fn other(detail: impl Into<String>) -> CallError {
        CallError {
            overloaded: false,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl From<worker::Error> for CallError {
    fn from(e: worker::Error) -> CallError {
        let detail = e.to_string();
        CallError {
            // The runtime's words for a Durable Object past its capacity.
            overloaded: detail.contains("overloaded") || detail.contains("Too many requests"),
            detail,
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> ApiError {
        worker::console_error!("Durable Object call failed: {}", e.detail);
        if e.overloaded {
            ApiError::Overloaded
        } else {
            ApiError::Internal { retry: true }
        }
    }
}

pub async fn call<C: Serialize, R: DeserializeOwned>(
    stub: &Stub,
    command: &C,
) -> Result<R, CallError> {
    let body = serde_json::to_string(command).map_err(|e| CallError::other(e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init("https://object/", &init)?;
    let mut response = stub.fetch_with_request(request).await?;
    let bytes = response.bytes().await?;
    if response.status_code() != 200 {
        return Err(CallError::other(format!(
            "status {}: {}",
            response.status_code(),
            String::from_utf8_lossy(&bytes)
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| CallError::other(format!("unreadable reply: {e}")))
}
