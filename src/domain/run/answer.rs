//! How a task endpoint's answer ends an attempt (docs/API.md section 3):
//!
//! - a `2xx` completes the run. Its body (empty: `null`) is the output and must be JSON;
//!   `x-trigger-output-type: application/super+json` says the body is a superjson
//!   document (`{"json", "meta"}`, what the task package sends for Dates, BigInts, Maps…),
//!   kept as the run's `outputType` so that the SDKs decode it;
//! - any other status fails the attempt. A body `{"error": {"name", "message", "stack"?}}`
//!   (the task package's, or any endpoint's) is the run's error, shown as Trigger.dev shows
//!   one (`{name, message, stackTrace}`); otherwise the error names
//!   the status and quotes the start of the body. `x-trigger-retry: false` ends the run
//!   with this attempt (`AbortTaskRunError`); otherwise the task's retry policy decides.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Answer headers the worker reads.
pub const HEADER_OUTPUT_TYPE: &str = "x-trigger-output-type";
pub const HEADER_RETRY: &str = "x-trigger-retry";
/// The output type of a superjson document.
pub const SUPERJSON: &str = "application/super+json";
/// The longest error message or stack kept (characters); longer ones are cut.
pub const MAX_ERROR_CHARS: usize = 16 * 1024;

/// What an answer comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    /// The run completed: its output as JSON text (`None`: no output), and its type when
    /// it is not plain JSON.
    Succeeded {
        output: Option<String>,
        output_type: Option<&'static str>,
    },
    /// The attempt failed: the run's error as JSON, and whether another attempt may follow.
    Failed { error: String, retry: bool },
}

/// A run's error as JSON, as Trigger.dev shows it: `{"name", "message"}`, and
/// `stackTrace` when there is a stack.
pub fn error_json(name: &str, message: &str, stack: Option<&str>) -> String {
    let cut = |text: &str| text.chars().take(MAX_ERROR_CHARS).collect::<String>();
    let mut error = serde_json::json!({ "name": cut(name), "message": cut(message) });
    if let Some(stack) = stack {
        error["stackTrace"] = cut(stack).into();
    }
    error.to_string()
}

/// Judges an answer of `status` with these header values and this body.
pub fn judge_answer(
    status: u16,
    output_type: Option<&str>,
    retry: Option<&str>,
    body: &[u8],
) -> Judged {
    if (200..300).contains(&status) {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Judged::Succeeded {
                output: None,
                output_type: None,
            };
        }
        let text = std::str::from_utf8(body).ok().map(str::trim);
        return match text.filter(|t| serde_json::from_str::<&RawValue>(t).is_ok()) {
            Some(text) => Judged::Succeeded {
                output: Some(text.to_owned()),
                output_type: output_type
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case(SUPERJSON))
                    .then_some(SUPERJSON),
            },
            None => Judged::Failed {
                error: error_json(
                    "InvalidOutput",
                    &format!("the task endpoint answered {status} with a body that is not JSON"),
                    None,
                ),
                retry: true,
            },
        };
    }
    let retry = !retry.is_some_and(|r| r.trim().eq_ignore_ascii_case("false"));
    #[derive(Deserialize)]
    struct Reported {
        error: ReportedError,
    }
    #[derive(Deserialize)]
    struct ReportedError {
        name: String,
        message: String,
        stack: Option<String>,
    }
    let error = match serde_json::from_slice::<Reported>(body) {
        Ok(Reported { error }) => error_json(&error.name, &error.message, error.stack.as_deref()),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text.chars().take(500).collect();
            error_json(
                "TaskEndpointError",
                &format!("the task endpoint answered {status}: {excerpt}"),
                None,
            )
        }
    };
    Judged::Failed { error, retry }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: &str, retry: bool) -> Judged {
        Judged::Failed {
            error: error.to_owned(),
            retry,
        }
    }

    #[test]
    fn a_2xx_completes_with_its_json_body_and_an_empty_body_is_no_output() {
        assert_eq!(
            judge_answer(200, None, None, b" {\"ok\": true}\n"),
            Judged::Succeeded {
                output: Some("{\"ok\": true}".into()),
                output_type: None
            }
        );
        assert_eq!(
            judge_answer(204, None, None, b"  "),
            Judged::Succeeded {
                output: None,
                output_type: None
            }
        );
        assert_eq!(
            judge_answer(200, None, None, b"not json"),
            failed(
                r#"{"message":"the task endpoint answered 200 with a body that is not JSON","name":"InvalidOutput"}"#,
                true
            )
        );
    }

    #[test]
    fn a_superjson_output_keeps_its_type() {
        let body =
            br#"{"json":{"at":"2026-01-02T03:04:05.000Z"},"meta":{"values":{"at":["Date"]}}}"#;
        let judged = judge_answer(200, Some("Application/Super+JSON"), None, body);
        assert_eq!(
            judged,
            Judged::Succeeded {
                output: Some(String::from_utf8(body.to_vec()).unwrap()),
                output_type: Some(SUPERJSON)
            }
        );
        let plain = judge_answer(200, Some("application/json"), None, b"1");
        assert!(matches!(
            plain,
            Judged::Succeeded {
                output_type: None,
                ..
            }
        ));
    }

    #[test]
    fn a_reported_error_is_the_runs_error_and_retry_false_ends_the_run() {
        let body = br#"{"error":{"name":"TypeError","message":"bad input","stack":"TypeError: bad input\n    at run"}}"#;
        assert_eq!(
            judge_answer(500, None, None, body),
            failed(
                r#"{"message":"bad input","name":"TypeError","stackTrace":"TypeError: bad input\n    at run"}"#,
                true
            )
        );
        let abort = br#"{"error":{"name":"AbortTaskRunError","message":"stop"}}"#;
        assert_eq!(
            judge_answer(500, None, Some(" FALSE "), abort),
            failed(r#"{"message":"stop","name":"AbortTaskRunError"}"#, false)
        );
        assert!(matches!(
            judge_answer(503, None, Some("true"), b""),
            Judged::Failed { retry: true, .. }
        ));
    }

    #[test]
    fn any_other_failure_names_the_status_and_quotes_the_body() {
        assert_eq!(
            judge_answer(404, None, None, br#"{"error":"Unknown task"}"#),
            failed(
                r#"{"message":"the task endpoint answered 404: {\"error\":\"Unknown task\"}","name":"TaskEndpointError"}"#,
                true
            )
        );
        let long = "x".repeat(2000);
        let Judged::Failed { error, .. } = judge_answer(500, None, None, long.as_bytes()) else {
            panic!("a failure")
        };
        assert!(error.len() < 600, "the excerpt is bounded");
    }

    #[test]
    fn error_texts_are_bounded() {
        let huge = "m".repeat(MAX_ERROR_CHARS * 2);
        let error: serde_json::Value =
            serde_json::from_str(&error_json("E", &huge, Some(&huge))).unwrap();
        assert_eq!(error["message"].as_str().unwrap().len(), MAX_ERROR_CHARS);
        assert_eq!(error["stackTrace"].as_str().unwrap().len(), MAX_ERROR_CHARS);
    }
}
