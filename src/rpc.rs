//! One request/reply exchange with a Durable Object: a JSON command in, a JSON reply out.
//! Every typed client (`RunStoreClient`, `QueueGateClient`, `RunExecutorClient`) uses it.

use serde::de::DeserializeOwned;
use serde::Serialize;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Method, Request, RequestInit, Response, Stub};

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
    let response = stub.fetch_with_request(request).await?;
    let status = response.status_code();
    let bytes = body_bytes(response).await?;
    if status != 200 {
        return Err(CallError::other(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| CallError::other(format!("unreadable reply: {e}")))
}

/// A whole response body in one `arrayBuffer()`: workers-rs reads a response through its
/// stream reader, chunk by chunk, which costs several JavaScript calls per chunk.
pub async fn body_bytes(response: Response) -> worker::Result<Vec<u8>> {
    let response = web_sys::Response::from(response);
    let buffer = JsFuture::from(response.array_buffer()?).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}
