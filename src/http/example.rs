//! The built-in example task, `hello-world`: a task endpoint served by this very worker
//! (reached through its `SELF` service binding), so the shipped configuration runs out of
//! the box. It checks the call's signature exactly as any task endpoint should.

use serde::Deserialize;
use serde_json::Value;

use super::{json_response, read_body, Incoming, Response};
use crate::domain::api::error::ApiError;
use crate::domain::config::Config;
use crate::domain::run::execution::{verify, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_OUTPUT_BYTES};

#[derive(Deserialize)]
struct Call {
    payload: Option<Value>,
}

pub async fn run_example(config: &Config, req: Incoming, task: &str) -> Result<Response, ApiError> {
    if task != "hello-world" {
        return Err(ApiError::NotFound("Not found"));
    }
    let body = read_body(&req, MAX_OUTPUT_BYTES).await?;
    let header = |name: &str| req.header(name).unwrap_or_default();
    let now = crate::platform::runtime::now();
    let signed = verify(
        config.signing_secret.as_bytes(),
        &header(HEADER_TIMESTAMP),
        &header(HEADER_SIGNATURE),
        &body,
        now,
    );
    if signed.is_err() {
        return Err(ApiError::Unauthorized("Invalid signature".into()));
    }
    let call: Call =
        serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest("Invalid JSON".into()))?;
    let message = format!("Hello, {}!", greeting_name(call.payload.as_ref()));
    json_response(200, &serde_json::json!({ "message": message }))
}

/// `payload.name`, also inside a superjson envelope (`{"json": {...}}` as a string, the way
/// the SDK sends objects), else `world`.
fn greeting_name(payload: Option<&Value>) -> String {
    let decoded = match payload {
        Some(Value::String(text)) => serde_json::from_str::<Value>(text).ok(),
        other => other.cloned(),
    };
    let object = decoded.as_ref().map(|v| v.get("json").unwrap_or(v));
    object
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .map_or_else(|| "world".to_owned(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn greets_by_name_in_plain_and_superjson_payloads() {
        assert_eq!(greeting_name(Some(&json!({"name": "Ada"}))), "Ada");
        assert_eq!(
            greeting_name(Some(&json!(r#"{"json":{"name":"Grace"}}"#))),
            "Grace"
        );
        assert_eq!(greeting_name(Some(&json!("plain text"))), "world");
        assert_eq!(greeting_name(None), "world");
    }
}
