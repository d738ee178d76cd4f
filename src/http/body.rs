//! Reading request bodies: bounded in size (never buffered past the limit) and in time
//! (a slowloris defence), docs/API.md section 1.

use std::future::Future;

use futures_util::future::{select, Either};
use futures_util::StreamExt;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{console_error, js_sys, ByteStream, Delay};

use super::Incoming;
use crate::domain::api::error::ApiError;
use crate::domain::api::http_body::{next_chunk_wait, read_whole, BODY_IDLE_MS};
use crate::domain::basics::time::Millis;

/// The largest request body read (docs/API.md section 2): 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Reads the body, refusing more than `limit` bytes by `content-length` or while
/// streaming, so an oversized body is never buffered; a body sent too slowly is a 408.
/// A short body of declared length is read whole ([`read_whole`]), any other streamed.
pub async fn read_body(req: &Incoming, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = crate::platform::runtime::content_length(req.headers());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    if read_whole(declared) {
        return read_whole_body(req, limit).await;
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let Some(mut stream) = req.body() else {
        return Ok(body); // no body at all
    };
    let pace = BodyPace::start(BODY_TIME_MS);
    while let Some(chunk) = pace.next(&mut stream).await? {
        if body.len() + chunk.len() > limit {
            drain(&mut stream).await;
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A short body of declared length, read in one call that must end within the idle
/// allowance (docs/API.md section 1). The runtime holds a body to its `content-length`,
/// so the limit is checked again only as a guard.
async fn read_whole_body(req: &Incoming, limit: usize) -> Result<Vec<u8>, ApiError> {
    let whole = match req.whole_body(BODY_IDLE_MS) {
        None => return Ok(Vec::new()),
        Some(started) => started.map_err(unreadable)?,
    };
    let buffer = JsFuture::from(whole)
        .await
        .map_err(|e| unreadable(e.into()))?;
    if buffer.is_null() {
        return Err(ApiError::RequestTimeout);
    }
    let body = js_sys::Uint8Array::new(&buffer).to_vec();
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(body)
}

/// `read` if it ends within `ms`, else `408` (what the rest of it would have been is
/// dropped with it).
async fn in_time<F: Future>(ms: Millis, read: F) -> Result<F::Output, ApiError> {
    let timer = Delay::from(std::time::Duration::from_millis(ms as u64));
    match select(std::pin::pin!(read), timer).await {
        Either::Left((done, _)) => Ok(done),
        Either::Right(_) => Err(ApiError::RequestTimeout),
    }
}

fn unreadable(e: worker::Error) -> ApiError {
    console_error!("reading the request body failed: {e}");
    ApiError::BadRequest("Could not read the request body".into())
}

/// Reads (and drops) a little of what a client is still sending before it is refused, so
/// that the connection is not left half-read (wrangler's dev proxy then fails, or fails
/// the next request). Bounded in bytes and time: a client cannot keep us reading.
pub async fn drain(stream: &mut ByteStream) {
    const DRAIN_BYTES: usize = 4 * 1024 * 1024;
    const DRAIN_MS: Millis = 2_000;
    let (mut drained, pace) = (0, BodyPace::start(DRAIN_MS));
    while drained < DRAIN_BYTES {
        match pace.next(stream).await {
            Ok(Some(chunk)) => drained += chunk.len(),
            _ => break,
        }
    }
}

/// The longest a whole body (3 MiB at most) may take to arrive.
pub const BODY_TIME_MS: Millis = 60_000;

/// How slowly a client may send a body (a slowloris defence): each chunk must come within
/// [`BODY_IDLE_MS`](crate::domain::api::http_body::BODY_IDLE_MS) of the previous one, and the
/// body must end by a deadline; otherwise the read ends with `408`.
pub struct BodyPace {
    deadline: Millis,
}

impl BodyPace {
    pub fn start(total_ms: Millis) -> BodyPace {
        BodyPace {
            deadline: crate::platform::runtime::now() + total_ms,
        }
    }

    /// The next chunk, `None` at the end of the body.
    pub async fn next(&self, stream: &mut ByteStream) -> Result<Option<Vec<u8>>, ApiError> {
        let wait = next_chunk_wait(crate::platform::runtime::now(), self.deadline)
            .ok_or(ApiError::RequestTimeout)?;
        match in_time(wait, stream.next()).await? {
            Some(Ok(chunk)) => Ok(Some(chunk)),
            None => Ok(None),
            Some(Err(e)) => Err(unreadable(e)),
        }
    }
}
