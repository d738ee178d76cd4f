//! Small pieces every adapter needs from the Workers runtime: the clock, an internal
//! error, a message's declared length, and a Durable Object's single alarm.

use std::cell::Cell;

use worker::{Headers, Result, ScheduledTime, Storage};

use crate::domain::basics::time::Millis;

/// Milliseconds since the epoch, by the runtime's clock.
pub fn now() -> Millis {
    worker::Date::now().as_millis() as Millis
}

/// An error of ours (never shown to API callers: the edge logs it and answers 500).
pub fn internal(message: impl Into<String>) -> worker::Error {
    worker::Error::RustError(message.into())
}

/// The `content-length` of a request or response, when it declares a valid one.
pub fn content_length(headers: &Headers) -> Option<u64> {
    headers
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse().ok())
}

/// Arms the object's alarm for `at` unless it is already due no later. `known` caches
/// the alarm time this object set (memory only: after a restart it is read again).
pub async fn ensure_alarm(
    storage: &Storage,
    known: &Cell<Option<Millis>>,
    at: Millis,
) -> Result<()> {
    if known.get().is_some_and(|k| k <= at) {
        return Ok(());
    }
    let current = storage.get_alarm().await?;
    if current.is_none_or(|c| c > at) {
        storage
            .set_alarm(ScheduledTime::new(js_sys::Date::new(&(at as f64).into())))
            .await?;
        known.set(Some(at));
    } else {
        known.set(current);
    }
    Ok(())
}
