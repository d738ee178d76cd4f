//! The call to a task's endpoint for one attempt: a signed POST of the run, bounded in
//! time by the attempt's `maxDuration` and in size by `MAX_OUTPUT_BYTES`.

use futures_util::StreamExt;
use serde_json::value::RawValue;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Env, Fetch, Headers, Request, Response};

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
    // One timer of the runtime's bounds the whole attempt, its answer's body included:
    // when it fires, the call and the read of its body are aborted.
    let signal = web_sys::AbortSignal::timeout_with_u32(max_secs * 1000);
    let answer = match send(
        env,
        &settings.target,
        config,
        start,
        body,
        max_secs,
        &signal,
    )
    .await
    {
        Ok(response) => read_outcome(response).await,
        Err(e) => Err(CallError::Unreachable(e)),
    };
    match answer {
        Ok(outcome) => outcome,
        Err(_) if signal.aborted() => failure(
            "MaxDurationExceeded",
            format!("the attempt ran past its maxDuration of {max_secs}s"),
        ),
        Err(CallError::Unreachable(e)) => failure(
            "TaskEndpointUnreachable",
            format!("calling the task endpoint failed: {e}"),
        ),
        Err(CallError::Unreadable(e)) => failure(
            "TaskEndpointUnreachable",
            format!("reading the answer failed: {e}"),
        ),
    }
}

/// How a call failed, before its answer could be judged.
enum CallError {
    Unreachable(worker::Error),
    Unreadable(worker::Error),
}

async fn send(
    env: &Env,
    target: &Target,
    config: &Config,
    start: &AttemptStart,
    body: Vec<u8>,
    max_secs: u32,
    signal: &web_sys::AbortSignal,
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
    // The runtime's own `RequestInit`: workers-rs' has no signal, and the signal must
    // travel with the request to reach a service binding's call too.
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers.0);
    init.set_body(&js_sys::Uint8Array::from(body.as_slice()));
    init.set_signal(Some(signal));
    crate::platform::meter::task_call(matches!(target, Target::Service { .. }));
    let request = |url: &str| -> worker::Result<Request> {
        Ok(web_sys::Request::new_with_str_and_init(url, &init)?.into())
    };
    match target {
        Target::Endpoint(url) => Fetch::Request(request(url)?).send().await,
        Target::Service { binding, path } => {
            let request = request(&format!("https://{binding}.service{path}"))?;
            env.service(binding)?.fetch_request(request).await
        }
    }
}

/// Reads the answer (at most `MAX_OUTPUT_BYTES`) and judges it (`domain::run::answer`).
async fn read_outcome(mut response: Response) -> Result<AttemptOutcome, CallError> {
    let status = response.status_code();
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let (output_type, retry) = (header(HEADER_OUTPUT_TYPE), header(HEADER_RETRY));
    let declared = crate::platform::runtime::content_length(response.headers());
    let mut body: Vec<u8> = Vec::new();
    if declared.is_some_and(|n| n > MAX_OUTPUT_BYTES as u64) {
        return Ok(too_large());
    }
    if declared.is_some() {
        // Its length is known and allowed: one read instead of a loop over chunks.
        body = body_bytes(response).await.map_err(CallError::Unreadable)?;
    } else if let Ok(mut stream) = response.stream() {
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(CallError::Unreadable)? {
                chunk if body.len() + chunk.len() <= MAX_OUTPUT_BYTES => {
                    body.extend_from_slice(&chunk)
                }
                _ => return Ok(too_large()),
            }
        }
    }
    Ok(
        match judge_answer(status, output_type.as_deref(), retry.as_deref(), &body) {
            Judged::Succeeded {
                output,
                output_type,
            } => AttemptOutcome::Succeeded {
                output: output.map(|text| RawValue::from_string(text).expect("judged as JSON")),
                output_type: output_type.map(str::to_owned),
            },
            Judged::Failed { error, retry } => failed(error, retry),
        },
    )
}

fn too_large() -> AttemptOutcome {
    failure(
        "OutputTooLarge",
        format!("the task endpoint answered more than {MAX_OUTPUT_BYTES} bytes"),
    )
}

/// A whole response body in one `arrayBuffer()`: workers-rs reads a response through its
/// stream reader, chunk by chunk, which costs several JavaScript calls per chunk.
async fn body_bytes(response: Response) -> worker::Result<Vec<u8>> {
    let response = web_sys::Response::from(response);
    let buffer = JsFuture::from(response.array_buffer()?).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}
