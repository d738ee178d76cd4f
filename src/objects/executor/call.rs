//! The call to a task's endpoint for one attempt: a signed POST of the run, bounded in
//! time by the attempt's `maxDuration` and in size by `MAX_OUTPUT_BYTES`.

use std::time::Duration;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde_json::value::RawValue;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    web_sys, AbortController, AbortSignal, Delay, Env, Fetch, Headers, Method, Request,
    RequestInit, Response,
};

use crate::domain::api::auth::Environment;
use crate::domain::basics::time::format_iso;
use crate::domain::config::{Config, Target, MAX_DURATION_SECS};
use crate::domain::run::answer::{
    error_json, judge_answer, Judged, HEADER_OUTPUT_TYPE, HEADER_RETRY,
};
use crate::domain::run::execution::{
    sign, EnvironmentRef, TaskCall, HEADER_ATTEMPT, HEADER_DEADLINE, HEADER_RUN_ID,
    HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_OUTPUT_BYTES,
};
use crate::objects::store::protocol::{AttemptOutcome, AttemptStart};

/// A failed attempt's outcome, with the run's error `{"name", "message"}`; the task's
/// retry policy decides what follows.
pub fn failure(name: &str, message: impl Into<String>) -> AttemptOutcome {
    failed(error_json(name, &message.into(), None), true)
}

fn failed(error: String, retry: bool) -> AttemptOutcome {
    AttemptOutcome::Failed {
        error: RawValue::from_string(error).expect("error_json is valid JSON"),
        retry,
    }
}

/// Makes the attempt and says how it ended. Never fails itself: every problem is an
/// outcome of the attempt. `environment` is the run's (from its store's name).
pub async fn call_task(
    env: &Env,
    config: &Config,
    start: &AttemptStart,
    environment: Option<Environment>,
) -> AttemptOutcome {
    let Some(settings) = config.tasks.get(&start.task) else {
        return failure(
            "TaskNotDeclared",
            format!("task {} is no longer declared", start.task),
        );
    };
    let body = TaskCall {
        id: &start.run_id,
        task: &start.task,
        attempt: start.attempt,
        payload: start.payload.as_deref(),
        payload_type: &start.payload_type,
        context: start.context.as_deref(),
        tags: &start.tags,
        batch_id: start.batch_id.as_deref(),
        idempotency_key: start.idempotency_key.as_deref(),
        queue: &start.queue,
        concurrency_key: start.concurrency_key.as_deref(),
        created_at: format_iso(start.created_at),
        max_attempts: start.max_attempts,
        is_test: start.is_test,
        environment: EnvironmentRef {
            kind: environment.map_or("DEVELOPMENT", Environment::kind),
        },
    };
    let body = match serde_json::to_vec(&body) {
        Ok(body) => body,
        Err(e) => return failure("InternalError", format!("encoding the call failed: {e}")),
    };
    let max_secs = start.max_duration_secs.clamp(1, MAX_DURATION_SECS);
    let controller = AbortController::default();
    let call = send(
        env,
        &settings.target,
        config,
        start,
        body,
        max_secs,
        controller.signal(),
    );
    let timeout = Delay::from(Duration::from_secs(u64::from(max_secs)));
    match select(Box::pin(call), Box::pin(timeout)).await {
        Either::Left((Ok(response), _)) => read_outcome(response).await,
        Either::Left((Err(e), _)) => failure(
            "TaskEndpointUnreachable",
            format!("calling the task endpoint failed: {e}"),
        ),
        Either::Right((_, call)) => {
            drop(call);
            controller.abort();
            failure(
                "MaxDurationExceeded",
                format!("the attempt ran past its maxDuration of {max_secs}s"),
            )
        }
    }
}

async fn send(
    env: &Env,
    target: &Target,
    config: &Config,
    start: &AttemptStart,
    body: Vec<u8>,
    max_secs: u32,
    signal: AbortSignal,
) -> worker::Result<Response> {
    let timestamp = crate::platform::runtime::now();
    let deadline = timestamp + i64::from(max_secs) * 1000;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set(HEADER_RUN_ID, &start.run_id)?;
    headers.set(HEADER_ATTEMPT, &start.attempt.to_string())?;
    headers.set(HEADER_TIMESTAMP, &timestamp.to_string())?;
    headers.set(HEADER_DEADLINE, &deadline.to_string())?;
    headers.set(
        HEADER_SIGNATURE,
        &sign(config.signing_secret.as_bytes(), timestamp, &body),
    )?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    crate::platform::meter::task_call(matches!(target, Target::Service { .. }));
    match target {
        Target::Endpoint(url) => {
            let request = Request::new_with_init(url, &init)?;
            Fetch::Request(request).send_with_signal(&signal).await
        }
        Target::Service { binding, path } => {
            let request =
                Request::new_with_init(&format!("https://{binding}.service{path}"), &init)?;
            env.service(binding)?.fetch_request(request).await
        }
    }
}

/// Reads the answer (at most `MAX_OUTPUT_BYTES`) and judges it (`domain::run::answer`).
async fn read_outcome(mut response: Response) -> AttemptOutcome {
    let status = response.status_code();
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let (output_type, retry) = (header(HEADER_OUTPUT_TYPE), header(HEADER_RETRY));
    let declared = crate::platform::runtime::content_length(response.headers());
    let mut body: Vec<u8> = Vec::new();
    if declared.is_some_and(|n| n > MAX_OUTPUT_BYTES as u64) {
        return too_large();
    }
    if declared.is_some() {
        // Its length is known and allowed: one read instead of a loop over chunks.
        body = match body_bytes(response).await {
            Ok(body) => body,
            Err(e) => return unreadable(e),
        };
    } else if let Ok(mut stream) = response.stream() {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) if body.len() + chunk.len() <= MAX_OUTPUT_BYTES => {
                    body.extend_from_slice(&chunk)
                }
                Ok(_) => return too_large(),
                Err(e) => return unreadable(e),
            }
        }
    }
    match judge_answer(status, output_type.as_deref(), retry.as_deref(), &body) {
        Judged::Succeeded {
            output,
            output_type,
        } => AttemptOutcome::Succeeded {
            output: output.map(|text| RawValue::from_string(text).expect("judged as JSON")),
            output_type: output_type.map(str::to_owned),
        },
        Judged::Failed { error, retry } => failed(error, retry),
    }
}

fn too_large() -> AttemptOutcome {
    failure(
        "OutputTooLarge",
        format!("the task endpoint answered more than {MAX_OUTPUT_BYTES} bytes"),
    )
}

fn unreadable(e: worker::Error) -> AttemptOutcome {
    failure(
        "TaskEndpointUnreachable",
        format!("reading the answer failed: {e}"),
    )
}

/// A whole response body in one `arrayBuffer()`: workers-rs reads a response through its
/// stream reader, chunk by chunk, which costs several JavaScript calls per chunk.
async fn body_bytes(response: Response) -> worker::Result<Vec<u8>> {
    let response = web_sys::Response::from(response);
    let buffer = JsFuture::from(response.array_buffer()?).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}
