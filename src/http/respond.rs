//! Building responses: JSON bodies, the one rendering of an `ApiError`, and the parts of
//! the request URL handlers echo back.

use serde::Serialize;
use worker::{console_error, Response};

use super::Incoming;
use crate::domain::api::error::ApiError;

/// The query of the request's URL (without `?`), empty when there is none.
pub fn query_of(req: &Incoming) -> &str {
    req.url().map_or("", |p| p.query)
}

/// The request's origin (`scheme://host[:port]`), to build URLs on this worker.
pub fn origin_of(req: &Incoming) -> &str {
    req.url().map_or("", |p| p.origin)
}

/// A JSON response with any status (202 for a created two-step batch).
pub fn json_response(status: u16, value: &impl Serialize) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        console_error!("encoding a response failed: {e}");
        ApiError::Internal { retry: false }
    })?;
    bytes_response(status, body, &[])
}

/// A body of any content type (a superjson output).
pub fn text_response(status: u16, body: String, content_type: &str) -> Result<Response, ApiError> {
    bytes_response(
        status,
        body.into_bytes(),
        &[("content-type", content_type.to_owned())],
    )
}

fn bytes_response(
    status: u16,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<Response, ApiError> {
    let build = || -> worker::Result<Response> {
        let response = Response::from_bytes(body)?.with_status(status);
        let h = response.headers();
        h.set("content-type", "application/json")?;
        for (name, value) in headers {
            h.set(name, value)?;
        }
        Ok(response)
    };
    build().map_err(|e| {
        console_error!("building a response failed: {e}");
        ApiError::Internal { retry: false }
    })
}

pub(super) fn error_response(err: &ApiError) -> Response {
    let rendered = err.render();
    bytes_response(
        rendered.status,
        rendered.body.into_bytes(),
        &rendered.headers,
    )
    .or_else(|_| Response::error("Internal server error", 500))
    .unwrap_or_else(|_| Response::empty().expect("an empty response can always be built"))
}
