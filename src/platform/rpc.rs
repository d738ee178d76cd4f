//! Calls between our Durable Objects: a JSON command in, a JSON reply out, by JavaScript
//! RPC. `src/entry.js` makes each object class extend `DurableObject` and forward its
//! `command` method to the Rust object's [`export_command!`] export. The JSON crosses as
//! bytes (a `Uint8Array`), copied out of one wasm memory and into the other, rather than
//! as a JavaScript string, which would be decoded from UTF-8 on one side and encoded again
//! on the other.
//!
//! Typed end to end: an object's [`Protocol`] names its binding and its command envelope
//! (one enum), and each [`Command`] names the one reply type it gets. [`Client`] is the
//! one generic client (name → stub → command → typed reply) every object's client wraps;
//! on the object's side, [`answer`] encodes a reply only as the type its command
//! declares. A caller therefore never matches on a reply its command cannot get.
//!
//! RPC rather than `fetch`: no `Request` and `Response` on either side, no body stream,
//! and no inspector network events, which `wrangler dev` forwards one HTTP request each to
//! its Node process (see docs/PERFORMANCE.md).

use std::marker::PhantomData;
use std::time::Duration;

use futures_util::future::{select, Either};

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Delay, Env, Response};

use crate::domain::api::error::ApiError;

#[wasm_bindgen]
extern "C" {
    /// A stub of one of our objects, whose class answers `command` by RPC.
    pub type ObjectStub;

    #[wasm_bindgen(method, catch, js_name = command)]
    fn send(this: &ObjectStub, command: &js_sys::Uint8Array) -> Result<js_sys::Promise, JsValue>;
}

/// A failure inside the system: a call between objects, or the storage an object called
/// on. Typed so that an overloaded object (a retry helps) is told apart from anything
/// else; the edge renders it as 503 or 500 (`From<CallError> for ApiError`).
#[derive(Debug, Clone)]
pub struct CallError {
    pub overloaded: bool,
    pub detail: String,
}

impl CallError {
    pub fn other(detail: impl Into<String>) -> CallError {
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

impl From<CallError> for worker::Error {
    fn from(e: CallError) -> worker::Error {
        worker::Error::RustError(e.detail)
    }
}

/// An object kind's side of the wire: where it is bound and the commands it decodes.
pub trait Protocol {
    /// The Durable Object namespace binding (`wrangler.toml`).
    const BINDING: &'static str;
    /// Every command, as one enum (or a single struct for a one-command object).
    type Envelope: Serialize + DeserializeOwned;
}

/// One command of an object's protocol, and the only reply it gets.
pub trait Command: Into<<Self::Protocol as Protocol>::Envelope> {
    type Protocol: Protocol;
    type Reply: Serialize + DeserializeOwned;
}

/// Declares the commands of an envelope enum whose variants are named after the command
/// structs they hold: each command's reply type, and its way into the envelope.
///
/// `commands!(Store => StoreCommand { GetRun => RunReply, … })`
#[macro_export]
macro_rules! commands {
    ($protocol:ty => $envelope:ident { $($command:ident => $reply:ty),* $(,)? }) => {
        $(
            impl $crate::platform::rpc::Command for $command {
                type Protocol = $protocol;
                type Reply = $reply;
            }

            impl From<$command> for $envelope {
                fn from(command: $command) -> $envelope {
                    $envelope::$command(command)
                }
            }
        )*
    };
}

/// The longest a caller that must go on (the queue consumer, an executor's group commit, a
/// gate handing runs) waits for one object call before it counts the call as failed
/// ([`Client::send_within`]).
pub const CALL_LIMIT: Duration = Duration::from_secs(30);

/// A client of the object named `name` of protocol `P`.
pub struct Client<P: Protocol> {
    stub: ObjectStub,
    protocol: PhantomData<P>,
}

impl<P: Protocol> Client<P> {
    pub fn new(env: &Env, name: &str) -> Result<Client<P>, CallError> {
        Ok(Client {
            stub: object(env, P::BINDING, name)?,
            protocol: PhantomData,
        })
    }

    /// Sends `command` and reads the reply its type declares.
    pub async fn send<C: Command<Protocol = P>>(&self, command: C) -> Result<C::Reply, CallError> {
        self.call(command, None).await
    }

    /// [`Client::send`], given up after `limit` with an error: for a caller that must end
    /// whatever the object does (the queue consumer, whose local simulation delivers
    /// nothing while one invocation goes on). The command may still take effect, so it
    /// must be one that can be sent again.
    pub async fn send_within<C: Command<Protocol = P>>(
        &self,
        command: C,
        limit: Duration,
    ) -> Result<C::Reply, CallError> {
        self.call(command, Some(limit)).await
    }

    async fn call<C: Command<Protocol = P>>(
        &self,
        command: C,
        limit: Option<Duration>,
    ) -> Result<C::Reply, CallError> {
        let envelope: P::Envelope = command.into();
        let command = serde_json::to_vec(&envelope).map_err(|e| CallError::other(e.to_string()))?;
        let reply = exchange(&self.stub, &command, limit).await?;
        serde_json::from_slice(&reply)
            .map_err(|e| CallError::other(format!("unreadable reply: {e}")))
    }
}

/// The reply to a command `C`, encoded for [`Client::send`]: `rpc::answer::<C>(&reply)`
/// ties a reply to its command on the object's side too.
pub fn answer<C: Command>(reply: &C::Reply) -> worker::Result<String> {
    encode(reply)
}

/// The object named `name` in the namespace bound as `binding`.
fn object(env: &Env, binding: &str, name: &str) -> Result<ObjectStub, CallError> {
    Ok(env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?
        .into_rpc())
}

/// The call itself, bytes in and bytes out, given up after `limit` if one is given: not
/// generic, so that one copy of it serves every command and reply type (the wasm module
/// stays small).
async fn exchange(
    object: &ObjectStub,
    command: &[u8],
    limit: Option<Duration>,
) -> Result<Vec<u8>, CallError> {
    // A copy, not a view of wasm memory: RPC would send the whole memory behind a view.
    let command = js_sys::Uint8Array::from(command);
    let promise = object.send(&command).map_err(worker::Error::from)?;
    let answer = JsFuture::from(promise);
    let reply = match limit {
        None => answer.await,
        Some(limit) => match select(answer, Delay::from(limit)).await {
            Either::Left((reply, _)) => reply,
            Either::Right(((), _)) => {
                let seconds = limit.as_secs();
                return Err(CallError::other(format!("no answer within {seconds} s")));
            }
        },
    };
    let reply = reply.map_err(worker::Error::from)?;
    wire_bytes(&reply)
        .ok_or_else(|| CallError::other("the object's reply is neither bytes nor text"))
}

/// A command or a reply as it crossed: bytes, or text from an object or caller of a build
/// before bytes (during a deploy), which gets its reply as text too.
fn wire_bytes(value: &JsValue) -> Option<Vec<u8>> {
    match value.as_string() {
        Some(text) => Some(text.into_bytes()),
        None => value
            .dyn_ref::<js_sys::Uint8Array>()
            .map(js_sys::Uint8Array::to_vec),
    }
}

/// A command as [`export_command!`] receives it: its bytes, and whether it came as text.
pub fn received(command: &JsValue) -> Result<(Vec<u8>, bool), JsValue> {
    let bytes = wire_bytes(command)
        .ok_or_else(|| JsValue::from(js_sys::Error::new("a command is text or bytes")))?;
    Ok((bytes, command.is_string()))
}

/// Reads the envelope of a command sent by [`Client::send`].
pub fn decode<P: Protocol>(command: &[u8]) -> worker::Result<P::Envelope> {
    serde_json::from_slice(command)
        .map_err(|e| worker::Error::RustError(format!("bad command for {}: {e}", P::BINDING)))
}

fn encode<R: Serialize>(reply: &R) -> worker::Result<String> {
    serde_json::to_string(reply).map_err(|e| worker::Error::RustError(e.to_string()))
}

/// An object's handler as the RPC export answers: the reply as bytes (as text to a command
/// that came as text), or an `Error` that the caller's [`Client::send`] receives with its
/// message.
pub fn settle(reply: worker::Result<String>, as_text: bool) -> Result<JsValue, JsValue> {
    match reply {
        Ok(reply) if as_text => Ok(JsValue::from(reply)),
        Ok(reply) => Ok(js_sys::Uint8Array::from(reply.as_bytes()).into()),
        Err(e) => Err(js_sys::Error::new(&e.to_string()).into()),
    }
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
                    command: JsValue,
                ) -> ::std::result::Result<JsValue, JsValue> {
                    let (command, as_text) = $crate::platform::rpc::received(&command)?;
                    $crate::platform::rpc::settle(self.handle(&command).await, as_text)
                }
            }
        };
    };
}
