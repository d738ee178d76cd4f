//! The API's one error type and its one rendering.
//!
//! Every failure a handler can meet is a variant here; [`ApiError::render`] turns it into
//! the status, headers and `{"error": "..."}` body the contract fixes. Internal causes are
//! logged by the adapter that met them and never reach the body.

use crate::domain::api::rate_limit::{BucketName, Figures};

/// An error answered to an API caller. Each variant's doc names its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 401 `Invalid or Missing API key`: no usable `Authorization` header.
    MissingApiKey,
    /// 401 `Invalid API key`: a key that is not configured.
    InvalidApiKey,
    /// 401 with a fixed message (an unsigned call to the example task).
    Unauthorized(String),
    /// 400 with a fixed message (`Request body is empty`, `Invalid JSON`, ...).
    BadRequest(String),
    /// 400 `Validation error: <path>: <reason>`.
    Validation { path: String, reason: String },
    /// 404 with what was not found (`Task not found`, `Run not found`, `Not found`).
    NotFound(&'static str),
    /// 405 with an `Allow` header listing the methods the path takes.
    MethodNotAllowed { allow: &'static str },
    /// 408 `Request body not received in time`: a body sent too slowly (or never ended).
    RequestTimeout,
    /// 413 `Request body too large`.
    PayloadTooLarge,
    /// 415 `Content-Type must be application/x-ndjson`.
    UnsupportedMediaType(&'static str),
    /// 422 with a fixed message (a conflicting batch idempotency key).
    Unprocessable(String),
    /// 500 `Server misconfigured: ...`, not retryable: the operator must fix the
    /// configuration. The message names the setting, never a secret.
    Misconfigured(String),
    /// 429: the environment's `bucket` is out of tokens until `figures.reset`.
    RateLimited {
        bucket: BucketName,
        figures: Figures,
        retry_after_secs: u64,
    },
    /// 503 `Storage is overloaded, retry later`: a retry can help.
    Overloaded,
    /// 500 `Internal server error`; `retry` says whether a retry can help.
    Internal { retry: bool },
}

/// What goes on the wire for an [`ApiError`].
#[derive(Debug, PartialEq, Eq)]
pub struct Rendered {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn validation(path: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::Validation {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::MissingApiKey | ApiError::InvalidApiKey | ApiError::Unauthorized(_) => 401,
            ApiError::BadRequest(_) | ApiError::Validation { .. } => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::RequestTimeout => 408,
            ApiError::PayloadTooLarge => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Unprocessable(_) => 422,
            ApiError::RateLimited { .. } => 429,
            ApiError::Misconfigured(_) | ApiError::Internal { .. } => 500,
            ApiError::Overloaded => 503,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::MissingApiKey => "Invalid or Missing API key".into(),
            ApiError::InvalidApiKey => "Invalid API key".into(),
            ApiError::BadRequest(m) | ApiError::Unprocessable(m) | ApiError::Unauthorized(m) => {
                m.clone()
            }
            ApiError::Validation { path, reason } => format!("Validation error: {path}: {reason}"),
            ApiError::NotFound(what) | ApiError::UnsupportedMediaType(what) => (*what).into(),
            ApiError::MethodNotAllowed { .. } => "Method not allowed".into(),
            ApiError::RequestTimeout => "Request body not received in time".into(),
            ApiError::PayloadTooLarge => "Request body too large".into(),
            ApiError::Misconfigured(m) => format!("Server misconfigured: {m}"),
            ApiError::RateLimited {
                bucket,
                figures,
                retry_after_secs,
            } => {
                let what = match bucket {
                    BucketName::Requests => "requests",
                    BucketName::BatchItems => "batch items",
                };
                format!(
                    "Rate limit exceeded: {}/{} {what} remaining. Retry in {retry_after_secs} seconds.",
                    figures.remaining, figures.limit
                )
            }
            ApiError::Overloaded => "Storage is overloaded, retry later".into(),
            ApiError::Internal { .. } => "Internal server error".into(),
        }
    }

    pub fn render(&self) -> Rendered {
        let body = serde_json::json!({ "error": self.message() }).to_string();
        let mut headers = Vec::new();
        match self {
            ApiError::MethodNotAllowed { allow } => headers.push(("allow", (*allow).to_owned())),
            ApiError::RateLimited {
                figures,
                retry_after_secs,
                ..
            } => {
                headers.extend(rate_limit_headers(figures));
                headers.push(("retry-after", retry_after_secs.to_string()));
            }
            ApiError::Overloaded => {
                headers.push(("x-should-retry", "true".into()));
                headers.push(("retry-after", "1".into()));
            }
            ApiError::Internal { retry } => {
                headers.push(("x-should-retry", retry.to_string()));
            }
            ApiError::Misconfigured(_) => headers.push(("x-should-retry", "false".into())),
            _ => {}
        }
        Rendered {
            status: self.status(),
            body,
            headers,
        }
    }
}

/// The `x-ratelimit-*` headers of a bucket's figures (on every limited response).
pub fn rate_limit_headers(figures: &Figures) -> [(&'static str, String); 3] {
    [
        ("x-ratelimit-limit", figures.limit.to_string()),
        ("x-ratelimit-remaining", figures.remaining.to_string()),
        ("x-ratelimit-reset", figures.reset.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contracts_statuses_and_messages() {
        for (err, status, body) in [
            (
                ApiError::MissingApiKey,
                401,
                r#"{"error":"Invalid or Missing API key"}"#,
            ),
            (
                ApiError::InvalidApiKey,
                401,
                r#"{"error":"Invalid API key"}"#,
            ),
            (
                ApiError::PayloadTooLarge,
                413,
                r#"{"error":"Request body too large"}"#,
            ),
            (
                ApiError::NotFound("Task not found"),
                404,
                r#"{"error":"Task not found"}"#,
            ),
            (
                ApiError::validation("items[3].options.tags", "at most 5 tags per run"),
                400,
                r#"{"error":"Validation error: items[3].options.tags: at most 5 tags per run"}"#,
            ),
        ] {
            let rendered = err.render();
            assert_eq!((rendered.status, rendered.body.as_str()), (status, body));
        }
    }

    #[test]
    fn a_rate_limited_answer_carries_the_figures_the_sdk_waits_on() {
        let rendered = ApiError::RateLimited {
            bucket: BucketName::BatchItems,
            figures: Figures {
                limit: 10,
                remaining: 2,
                reset: 1_800_000_004_000,
            },
            retry_after_secs: 4,
        }
        .render();
        assert_eq!(rendered.status, 429);
        assert_eq!(
            rendered.body,
            r#"{"error":"Rate limit exceeded: 2/10 batch items remaining. Retry in 4 seconds."}"#
        );
        let header = |name: &str| {
            rendered
                .headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-ratelimit-limit"), Some("10"));
        assert_eq!(header("x-ratelimit-remaining"), Some("2"));
        assert_eq!(header("x-ratelimit-reset"), Some("1800000004000"));
        assert_eq!(header("retry-after"), Some("4"));
    }

    #[test]
    fn server_faults_say_whether_to_retry() {
        let header = |e: ApiError| {
            e.render()
                .headers
                .into_iter()
                .find(|(k, _)| *k == "x-should-retry")
                .map(|(_, v)| v)
        };
        assert_eq!(header(ApiError::Overloaded).as_deref(), Some("true"));
        assert_eq!(
            header(ApiError::Internal { retry: false }).as_deref(),
            Some("false")
        );
        assert_eq!(
            header(ApiError::Misconfigured("x".into())).as_deref(),
            Some("false")
        );
        assert_eq!(header(ApiError::BadRequest("x".into())), None);
    }

    #[test]
    fn messages_are_escaped_json() {
        let body = ApiError::validation("items[0].options.tags[0]", "bad \"tag\"\n")
            .render()
            .body;
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed["error"],
            "Validation error: items[0].options.tags[0]: bad \"tag\"\n"
        );
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let rendered = ApiError::MethodNotAllowed { allow: "POST" }.render();
        assert_eq!(rendered.status, 405);
        assert_eq!(rendered.headers, vec![("allow", "POST".to_owned())]);
    }
}
