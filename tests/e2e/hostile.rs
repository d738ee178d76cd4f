//! Hostile input (issue #5): each gets a clear 4xx and leaves nothing stored. Every batch
//! here carries a tag of its own; after the refusal, listing that tag must find no run.
//! These run on the worker kept for abusive requests, one at a time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use serde_json::json;

use crate::execution::Case;
use crate::harness::{get, request, Answer, Worker, DEV_KEY};
use crate::task_server::TaskServer;
use crate::{auth, ensure, ensure_eq, unique};

pub fn cases() -> Vec<(&'static str, Case)> {
    crate::cases![
        json_nested_10000_levels_deep_is_400,
        numbers_beyond_64_bits_are_refused_as_options_and_kept_exactly_in_payloads,
        invalid_utf8_is_400,
        nul_bytes_in_keys_and_tags_are_400,
        an_idempotency_key_of_2049_characters_is_400_everywhere,
        hostile_task_identifiers_are_404,
        header_values_with_cr_or_lf_are_refused_or_never_reach_storage,
        a_body_that_never_ends_is_408_within_bounded_time,
        duplicate_json_keys_are_400,
    ]
}

const BATCH: &str = "/api/v1/tasks/hello-world/batch";

fn post(w: &Worker, path: &str, body: &[u8], extra: &[(&str, &str)]) -> Answer {
    let authorization = auth(DEV_KEY);
    let mut headers = vec![
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    request("POST", &w.url(path), &headers, body)
}

/// The runs listed under `tag`: zero after every refusal here.
fn runs_tagged(w: &Worker, tag: &str) -> Result<usize, Failed> {
    let answer = get(
        &w.url(&format!("/api/v1/runs?filter[tag]={tag}")),
        Some(DEV_KEY),
    );
    ensure_eq(answer.status, 200, "listing by tag")?;
    Ok(answer.json()["data"].as_array().map_or(0, Vec::len))
}

/// Expects `answer` to be `status` with exactly `message`, and nothing stored under `tag`.
fn refused(
    w: &Worker,
    answer: &Answer,
    status: u16,
    message: &str,
    tag: &str,
) -> Result<(), Failed> {
    ensure_eq(answer.status, status, &format!("status ({})", answer.body))?;
    ensure_eq(answer.error().as_str(), message, "message")?;
    ensure_eq(
        runs_tagged(w, tag)?,
        0,
        "runs stored by the refused request",
    )
}

fn json_nested_10000_levels_deep_is_400(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let tag = unique("deep");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let body = format!(r#"{{"items":[{{"payload":{deep},"options":{{"tags":["{tag}"]}}}}]}}"#);
    let answer = post(w, BATCH, body.as_bytes(), &[]);
    refused(
        w,
        &answer,
        400,
        "Invalid JSON: nested deeper than 128 levels",
        &tag,
    )
}

fn numbers_beyond_64_bits_are_refused_as_options_and_kept_exactly_in_payloads(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("big");
    let body = format!(
        r#"{{"items":[{{"payload":1,"options":{{"tags":["{tag}"],"maxAttempts":123456789012345678901234567890}}}}]}}"#
    );
    let answer = post(w, BATCH, body.as_bytes(), &[]);
    refused(
        w,
        &answer,
        400,
        "Validation error: items[0].options.maxAttempts: must be an integer from 1 to 100",
        &tag,
    )?;
    // A payload is the caller's: stored and returned as sent, digit for digit.
    let body = r#"{"items":[{"payload":{"n":123456789012345678901234567890,"f":1e400}}]}"#;
    let answer = post(w, BATCH, body.as_bytes(), &[]);
    ensure_eq(answer.status, 200, "a payload with big numbers")?;
    let id = answer.json()["runs"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let run = get(&w.url(&format!("/api/v3/runs/{id}")), Some(DEV_KEY));
    ensure(
        run.body
            .contains(r#""payload":{"n":123456789012345678901234567890,"f":1e400}"#),
        format!("the payload comes back as sent: {}", run.body),
    )
}

fn invalid_utf8_is_400(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let tag = unique("utf8");
    let mut body =
        format!(r#"{{"items":[{{"options":{{"tags":["{tag}"]}},"payload":""#).into_bytes();
    body.extend_from_slice(&[0xff, 0xfe, 0x80]);
    body.extend_from_slice(br#""}]}"#);
    let answer = post(w, BATCH, &body, &[]);
    refused(w, &answer, 400, "Invalid JSON", &tag)
}

fn nul_bytes_in_keys_and_tags_are_400(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let tag = unique("nul");
    for (options, path) in [
        (json!({"tags": [tag, "a\u{0}b"]}), "tags[1]"),
        (
            json!({"tags": [tag], "idempotencyKey": "k\u{0}"}),
            "idempotencyKey",
        ),
        (
            json!({"tags": [tag], "concurrencyKey": "\u{0}"}),
            "concurrencyKey",
        ),
        (
            json!({"tags": [tag], "idempotencyKey": "a\r\nb"}),
            "idempotencyKey",
        ),
    ] {
        let body = json!({"items": [{"payload": 1}, {"payload": 2, "options": options}]});
        let answer = post(w, BATCH, body.to_string().as_bytes(), &[]);
        refused(
            w,
            &answer,
            400,
            &format!(
                "Validation error: items[1].options.{path}: must not contain control characters"
            ),
            &tag,
        )?;
    }
    // The two-step batch key too.
    let answer = post(
        w,
        "/api/v3/batches",
        json!({"runCount": 1, "idempotencyKey": "a\u{0}"})
            .to_string()
            .as_bytes(),
        &[],
    );
    ensure_eq(answer.status, 400, "a two-step batch key with NUL")?;
    ensure_eq(
        answer.error().as_str(),
        "Validation error: idempotencyKey: must not contain control characters",
        "message",
    )
}

fn an_idempotency_key_of_2049_characters_is_400_everywhere(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("long-key");
    let long = "k".repeat(2049);
    let body =
        json!({"items": [{"payload": 1, "options": {"tags": [tag], "idempotencyKey": long}}]});
    let answer = post(w, BATCH, body.to_string().as_bytes(), &[]);
    refused(
        w,
        &answer,
        400,
        "Validation error: items[0].options.idempotencyKey: expected a string of 1 to 2048 characters",
        &tag,
    )?;
    let body = json!({"items": [{"payload": 1, "options": {"tags": [tag]}}]});
    let answer = post(
        w,
        BATCH,
        body.to_string().as_bytes(),
        &[("idempotency-key", &long)],
    );
    refused(
        w,
        &answer,
        400,
        "Validation error: idempotency-key header: expected 1 to 2048 characters",
        &tag,
    )?;
    let answer = post(
        w,
        "/api/v3/batches",
        json!({"runCount": 1, "idempotencyKey": long})
            .to_string()
            .as_bytes(),
        &[],
    );
    ensure_eq(
        answer.status,
        400,
        "a two-step batch key of 2049 characters",
    )?;
    // 2048 is the limit, not past it.
    let body = json!({"items": [{"payload": 1, "options": {"tags": [tag], "idempotencyKey": "k".repeat(2048)}}]});
    ensure_eq(
        post(w, BATCH, body.to_string().as_bytes(), &[]).status,
        200,
        "a key of 2048 characters",
    )
}

fn hostile_task_identifiers_are_404(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let tag = unique("task-id");
    let body = json!({"items": [{"payload": 1, "options": {"tags": [tag]}}]}).to_string();
    let long = "t".repeat(500);
    for task in [
        "..%2F..%2Fhello-world",
        "hello-world%2F..",
        "a%2Fb",
        "hello%20world",
        "%00",
        &long,
    ] {
        let answer = post(
            w,
            &format!("/api/v1/tasks/{task}/batch"),
            body.as_bytes(),
            &[],
        );
        ensure_eq(answer.status, 404, &format!("task `{task}`"))?;
        ensure_eq(
            answer.error().as_str(),
            "Task not found",
            &format!("task `{task}`"),
        )?;
    }
    // `..` as a path segment, sent as is (no client-side normalisation).
    let (status, body_text, _) = raw(
        w,
        format!(
            "POST /api/v1/tasks/../batch HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {DEV_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
        Duration::from_secs(30),
    );
    ensure(
        (400..500).contains(&status),
        format!("`..` segment: {status} {body_text}"),
    )?;
    ensure_eq(runs_tagged(w, &tag)?, 0, "runs stored")
}

fn header_values_with_cr_or_lf_are_refused_or_never_reach_storage(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let send = |header: &str, tag: &str| {
        let body = json!({"items": [{"payload": 1, "options": {"tags": [tag]}}]}).to_string();
        raw(
            w,
            format!(
                "POST {BATCH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {DEV_KEY}\r\n{header}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
            Duration::from_secs(30),
        )
    };
    // A bare CR inside a value: the HTTP parser in front of the worker refuses it (400),
    // or closes the connection (0). Never a 2xx, nothing stored.
    let tag = unique("crlf");
    let (status, text, _) = send("idempotency-key: a\rb", &tag);
    ensure(
        status == 0 || (400..500).contains(&status),
        format!("a bare CR: {status} {text}"),
    )?;
    ensure_eq(runs_tagged(w, &tag)?, 0, "runs stored")?;
    // A bare LF ends the header line, and obsolete line folding is unfolded to a space
    // (RFC 9112 sections 2.2 and 5.2 allow both instead of a 400): either way no value
    // reaches the worker with a line break in it, and none is stored.
    for header in [
        "idempotency-key: a\nx-injected: 1",
        "idempotency-key: fold\r\n ed",
    ] {
        let (status, text, _) = send(header, &unique("lf"));
        if status != 200 {
            ensure(
                status == 0 || (400..500).contains(&status),
                format!("{header:?}: {status} {text}"),
            )?;
            continue;
        }
        let batch: serde_json::Value = serde_json::from_str(&text)?;
        let id = batch["batchId"].as_str().unwrap_or_default();
        let stored = get(&w.url(&format!("/api/v1/batches/{id}")), Some(DEV_KEY)).json();
        let key = stored["idempotencyKey"].as_str().unwrap_or_default();
        ensure(
            !key.is_empty() && !key.contains(['\r', '\n']),
            format!("{header:?} was stored as the key {key:?}"),
        )?;
    }
    Ok(())
}

fn a_body_that_never_ends_is_408_within_bounded_time(
    w: &Worker,
    _: &TaskServer,
) -> Result<(), Failed> {
    let tag = unique("slow");
    let start = format!(r#"{{"items":[{{"payload":1,"options":{{"tags":["{tag}"]}}}}"#);
    // A short body of declared length is read whole, a longer one and a chunked one chunk
    // by chunk (src/http/body.rs): each way must give up on a stalled upload.
    for framing in [
        format!("content-length: 1000\r\n\r\n{start}"),
        format!("content-length: 100000\r\n\r\n{start}"),
        format!(
            "transfer-encoding: chunked\r\n\r\n{:x}\r\n{start}\r\n",
            start.len()
        ),
    ] {
        let (status, text, took) = raw(
            w,
            format!(
                "POST {BATCH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {DEV_KEY}\r\ncontent-type: application/json\r\n{framing}"
            )
            .as_bytes(),
            Duration::from_secs(40),
        );
        ensure(
            status == 408 || status == 0,
            format!("a stalled body: {status} {text}"),
        )?;
        if status == 408 {
            ensure(
                text.contains("Request body not received in time"),
                format!("the 408's body: {text}"),
            )?;
        }
        ensure(
            took < Duration::from_secs(20),
            format!("answered after {took:?}: the bound is the 10 s idle allowance"),
        )?;
    }
    ensure_eq(runs_tagged_after_a_stall(w, &tag)?, 0, "runs stored")
}

/// `runs_tagged` for after an abandoned upload. wrangler dev's Node proxy sometimes holds
/// the next request for a minute behind the connection of an abandoned chunked upload
/// (about one time in four, also before this worker's body reading changed; a bare
/// `GET` after the stall suffices, and the Miniflare path without the proxy never does
/// it). The listing is asked on fresh connections until one answers.
fn runs_tagged_after_a_stall(w: &Worker, tag: &str) -> Result<usize, Failed> {
    let url = w.url(&format!("/api/v1/runs?filter[tag]={tag}"));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    for _ in 0..4 {
        let answer = agent
            .get(&url)
            .set("authorization", &format!("Bearer {DEV_KEY}"))
            .call();
        if let Ok(answer) = answer {
            let text = answer.into_string().map_err(|e| e.to_string())?;
            let listing: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| e.to_string())?;
            return Ok(listing["data"].as_array().map_or(0, Vec::len));
        }
    }
    Err("the listing never answered".into())
}

fn duplicate_json_keys_are_400(w: &Worker, _: &TaskServer) -> Result<(), Failed> {
    let tag = unique("dup");
    let body = format!(
        r#"{{"items":[{{"payload":1,"options":{{"tags":["{tag}"]}}}}],"items":[{{"payload":2,"options":{{"tags":["{tag}"]}}}}]}}"#
    );
    let answer = post(w, BATCH, body.as_bytes(), &[]);
    refused(
        w,
        &answer,
        400,
        "Validation error: body: duplicate field `items`",
        &tag,
    )?;
    let body =
        format!(r#"{{"items":[{{"payload":1,"options":{{"tags":["{tag}"],"tags":["other"]}}}}]}}"#);
    let answer = post(w, BATCH, body.as_bytes(), &[]);
    refused(
        w,
        &answer,
        400,
        "Validation error: items[0].options: duplicate field `tags`",
        &tag,
    )
}

/// Sends `bytes` on a new connection as they are, and reads the answer until the
/// connection closes, a complete response arrives, or `limit` passes. Returns the status
/// (0 when there was none), the body, and how long it took.
fn raw(w: &Worker, bytes: &[u8], limit: Duration) -> (u16, String, Duration) {
    let started = Instant::now();
    let address = w.base.trim_start_matches("http://").to_owned();
    let Ok(mut socket) = TcpStream::connect(&address) else {
        return (0, String::new(), started.elapsed());
    };
    let _ = socket.set_read_timeout(Some(limit));
    let _ = socket.write_all(bytes);
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
        if complete(&received) || started.elapsed() > limit {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body, started.elapsed())
}

/// Whether `received` holds a whole response with a `content-length` body.
fn complete(received: &[u8]) -> bool {
    let text = String::from_utf8_lossy(received);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .is_some_and(|n| body.len() >= n)
}
