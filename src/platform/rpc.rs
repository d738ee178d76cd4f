//! Calls between our Durable Objects: a JSON command in, a JSON reply out, by JavaScript
//! RPC. `src/entry.js` makes each object class extend `DurableObject` and forward its
//! `command` method to the Rust object's [`export_command!`] export; callers reach it
//! through [`object`] and [`call`]. Every typed client (`RunStoreClient`,
//! `QueueGateClient`, the executor's `hand`, the rate limiter's `take`) uses them.
//!
//! RPC rather than `fetch`: no `Request` and `Response` on either side, no body stream,
//! and no inspector network events, which `wrangler dev` forwards one HTTP request each to
//! its Node process (see docs/ARCHITECTURE.md, "Performance").

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Response};

use crate::domain::api::error::ApiError;

#[wasm_bindgen]
extern "C" {
    /// A stub of one of our objects, whose class answers `command` by RPC.
    pub type ObjectStub;

    #[wasm_bindgen(method, catch, js_name = command)]
    fn send(this: &ObjectStub, command: &str) -> Result<js_sys::Promise, JsValue>;
}

/// A failed call, before it is turned into an API error.
#[derive(Debug)]
pub struct CallError {
    pub overloaded: bool,
    pub detail: String,
}

impl CallError {
    fn other(detail: impl Into<String>) -> CallError {
        CallError {
            overloaded: false,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl From<worker::Error> for CallError {
    fn from(e: worker::Error) -> CallError {
        let detail = e.to_string();
        CallError {
            // The runtime's words for a Durable Object past its capacity.
            overloaded: detail.contains("overloaded") || detail.contains("Too many requests"),
            detail,
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> ApiError {
        worker::console_error!("Durable Object call failed: {}", e.detail);
        if e.overloaded {
            ApiError::Overloaded
        } else {
            ApiError::Internal { retry: true }
        }
    }
}

/// The object named `name` in the namespace bound as `binding`.
pub fn object(env: &Env, binding: &str, name: &str) -> Result<ObjectStub, CallError> {
    Ok(env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?
        .into_rpc())
}

/// Sends `command` to `object` and reads its reply.
pub async fn call<C: Serialize, R: DeserializeOwned>(
    object: &ObjectStub,
    command: &C,
) -> Result<R, CallError> {
    let command = serde_json::to_string(command).map_err(|e| CallError::other(e.to_string()))?;
    let promise = object.send(&command).map_err(worker::Error::from)?;
    let reply = JsFuture::from(promise).await.map_err(worker::Error::from)?;
    let reply = reply
        .as_string()
        .ok_or_else(|| CallError::other("the object's reply is not text"))?;
    serde_json::from_str(&reply).map_err(|e| CallError::other(format!("unreadable reply: {e}")))
}

/// Reads a command sent by [`call`]; `what` names it in the error.
pub fn command<C: DeserializeOwned>(command: &[u8], what: &str) -> worker::Result<C> {
    serde_json::from_slice(command)
        .map_err(|e| worker::Error::RustError(format!("bad {what}: {e}")))
}

/// A reply for [`call`] to read.
pub fn reply<R: Serialize>(reply: &R) -> worker::Result<String> {
    serde_json::to_string(reply).map_err(|e| worker::Error::RustError(e.to_string()))
}

/// An object's handler as the RPC export answers: the reply as a string, or an `Error`
/// that the caller's [`call`] receives with its message.
pub fn settle(reply: worker::Result<String>) -> Result<JsValue, JsValue> {
    reply
        .map(JsValue::from)
        .map_err(|e| js_sys::Error::new(&e.to_string()).into())
}

/// A reply to a command that came over `fetch`. Objects also answer their commands that
/// way, which the runtime requires of every object class: the way a caller of an earlier
/// version (RPC came later) still reaches them during a deploy.
pub fn fetched(reply: worker::Result<String>) -> worker::Result<Response> {
    Response::ok(reply?)
}

/// Exports `command` on an object class, answering with its
/// `async fn handle(&self, command: &[u8]) -> worker::Result<String>`.
#[macro_export]
macro_rules! export_command {
    ($object:ty) => {
        const _: () = {
            use ::worker::wasm_bindgen::prelude::wasm_bindgen;
            use ::worker::wasm_bindgen::JsValue;
            // The paths the attribute's generated code takes for these two crates. Under
            // worker-build (which sets `WASM_BINDGEN_USE_JS_SYS`) it awaits through
            // `js_sys` instead, and the second goes unused.
            #[allow(unused_imports)]
            use ::worker::{wasm_bindgen as bindgen, wasm_bindgen_futures};

            #[wasm_bindgen(wasm_bindgen = bindgen)]
            impl $object {
                /// One command by RPC (`src/entry.js`): JSON in, JSON out.
                pub async fn command(
                    &self,
                    command: String,
                ) -> ::std::result::Result<JsValue, JsValue> {
                    $crate::platform::rpc::settle(self.handle(command.as_bytes()).await)
                }
            }
        };
    };
}
