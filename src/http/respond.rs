//! Building responses: JSON bodies, the one rendering of an `ApiError`, and the parts of
//! the request URL handlers echo back.

use serde::Serialize;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::{console_error, web_sys};

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

/// A response the edge built: status, body and headers, handed to the runtime in one
/// call when the request ends ([`Response::into_raw`]).
#[derive(Debug)]
pub struct Response {
    status: u16,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Response {
    /// Sets the header `name`, replacing any value it had.
    pub fn set_header(&mut self, name: &'static str, value: String) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value));
    }

    /// The runtime's response.
    pub fn into_raw(self) -> worker::Result<web_sys::Response> {
        respond(&self.body, self.status, &header_lines(&self.headers)).map_err(worker::Error::from)
    }
}

/// The headers as `edge.js`'s `respond` reads them: name and value on alternate lines
/// (neither a name nor a value may hold a line break).
fn header_lines(headers: &[(&str, String)]) -> String {
    let mut lines = String::new();
    for (name, value) in headers {
        if !lines.is_empty() {
            lines.push('\n');
        }
        lines.push_str(name);
        lines.push('\n');
        lines.push_str(value);
    }
    lines
}

#[wasm_bindgen(module = "/src/http/edge.js")]
extern "C" {
    #[wasm_bindgen(catch)]
    fn respond(body: &[u8], status: u16, lines: &str) -> Result<web_sys::Response, JsValue>;
}

/// A JSON response with any status (202 for a created two-step batch).
pub fn json_response(status: u16, value: &impl Serialize) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| {
        console_error!("encoding a response failed: {e}");
        ApiError::Internal { retry: false }
    })?;
    Ok(bytes_response(status, body, "application/json", Vec::new()))
}

/// A body of any content type (a superjson output).
pub fn text_response(status: u16, body: String, content_type: &str) -> Response {
    bytes_response(status, body.into_bytes(), content_type, Vec::new())
}

fn bytes_response(
    status: u16,
    body: Vec<u8>,
    content_type: &str,
    mut headers: Vec<(&'static str, String)>,
) -> Response {
    headers.insert(0, ("content-type", content_type.to_owned()));
    Response {
        status,
        body,
        headers,
    }
}

pub(super) fn error_response(err: &ApiError) -> Response {
    let rendered = err.render();
    bytes_response(
        rendered.status,
        rendered.body.into_bytes(),
        "application/json",
        rendered.headers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_cross_as_alternate_lines_with_a_set_one_replacing_its_old_value() {
        let mut response = bytes_response(
            429,
            Vec::new(),
            "application/json",
            vec![("retry-after", "3".into())],
        );
        response.set_header("x-ratelimit-remaining", "0".into());
        response.set_header("Retry-After", "4".into());
        assert_eq!(
            header_lines(&response.headers),
            "content-type\napplication/json\nx-ratelimit-remaining\n0\nRetry-After\n4"
        );
        assert_eq!(header_lines(&[]), "");
    }
}
