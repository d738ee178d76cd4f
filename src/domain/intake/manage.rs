//! The bodies of the endpoints that act on existing runs (docs/API.md section 5), parsed
//! into what the stores need: a reschedule's new time, a key reset's task.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::api::error::ApiError;
use crate::domain::basics::time::Millis;
use crate::domain::intake::trigger::{parse_delay, parse_top_object, DELAY_REASON};

/// The largest body either endpoint reads.
pub const MAX_MANAGE_BODY_BYTES: usize = 64 * 1024;

fn non_empty(body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    Ok(())
}

/// `POST /api/v1/runs/{runId}/reschedule`, `{"delay": duration | date}`: the run's new
/// time (now, for a date in the past).
pub fn parse_reschedule_body(body: &[u8], now: Millis) -> Result<Millis, ApiError> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        delay: Option<&'a RawValue>,
    }
    non_empty(body)?;
    let parsed: Body = parse_top_object(body)?;
    let delay = parsed
        .delay
        .ok_or_else(|| ApiError::validation("delay", "required"))?;
    let until =
        parse_delay(delay, now).ok_or_else(|| ApiError::validation("delay", DELAY_REASON))?;
    Ok(until.unwrap_or(now))
}

/// `POST /api/v1/idempotencyKeys/{key}/reset`, `{"taskIdentifier"}`: the task whose key
/// is reset.
pub fn parse_key_reset_body(body: &[u8]) -> Result<String, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        task_identifier: Option<serde_json::Value>,
    }
    non_empty(body)?;
    let parsed: Body = parse_top_object(body)?;
    match parsed.task_identifier {
        Some(serde_json::Value::String(task)) => Ok(task),
        Some(_) => Err(ApiError::validation("taskIdentifier", "expected a string")),
        None => Err(ApiError::validation("taskIdentifier", "required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_800_000_000_000;

    #[test]
    fn a_reschedule_takes_a_duration_or_a_date_and_a_past_date_means_now() {
        assert_eq!(
            parse_reschedule_body(br#"{"delay": "1h"}"#, NOW),
            Ok(NOW + 3_600_000)
        );
        assert_eq!(
            parse_reschedule_body(br#"{"delay": "2030-01-01T00:00:00Z"}"#, NOW),
            Ok(1_893_456_000_000)
        );
        assert_eq!(
            parse_reschedule_body(br#"{"delay": "2000-01-01T00:00:00Z"}"#, NOW),
            Ok(NOW)
        );
    }

    #[test]
    fn bad_reschedule_bodies_are_400_naming_the_field() {
        let message = |body: &[u8]| parse_reschedule_body(body, NOW).unwrap_err().message();
        assert_eq!(message(b""), "Request body is empty");
        assert_eq!(message(b"{"), "Invalid JSON");
        assert_eq!(message(b"{}"), "Validation error: delay: required");
        assert_eq!(
            message(br#"{"delay": "soon"}"#),
            format!("Validation error: delay: {DELAY_REASON}")
        );
        assert_eq!(
            message(br#"{"delay": 5}"#),
            format!("Validation error: delay: {DELAY_REASON}")
        );
    }

    #[test]
    fn a_key_reset_names_its_task_as_a_string() {
        assert_eq!(
            parse_key_reset_body(br#"{"taskIdentifier": "hello-world"}"#),
            Ok("hello-world".to_owned())
        );
        let message = |body: &[u8]| parse_key_reset_body(body).unwrap_err().message();
        assert_eq!(message(b""), "Request body is empty");
        assert_eq!(message(b"[]"), "Validation error: body: expected an object");
        assert_eq!(message(b"{}"), "Validation error: taskIdentifier: required");
        assert_eq!(
            message(br#"{"taskIdentifier": 3}"#),
            "Validation error: taskIdentifier: expected a string"
        );
    }
}
