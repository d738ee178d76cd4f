//! The request as the runtime hands it to the worker, read only as far as the edge needs.
//!
//! workers-rs' `Request` copies the method, the URL's path, the headers object and the
//! `cf` properties out of JavaScript whenever it wraps one, and takes any method it does
//! not know for a `GET`. The edge needs the URL once, a few headers and the body, never
//! `cf`, and answers a method no route takes with 405: this adapter reads each part
//! when asked, and gives the method as sent.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::{js_sys, web_sys, ByteStream, Headers};

use crate::domain::api::request_url::{split_url, UrlParts};
use crate::domain::basics::time::Millis;

#[wasm_bindgen(module = "/src/http/edge.js")]
extern "C" {
    #[wasm_bindgen(catch, js_name = readBody)]
    fn read_body(request: &web_sys::Request, ms: f64) -> Result<js_sys::Promise, JsValue>;
}

pub struct Incoming {
    raw: web_sys::Request,
    url: String,
    headers: Headers,
}

impl Incoming {
    pub fn new(raw: web_sys::Request) -> Incoming {
        Incoming {
            url: raw.url(),
            headers: Headers(raw.headers()),
            raw,
        }
    }

    pub fn method(&self) -> String {
        self.raw.method()
    }

    /// The URL's origin, path and query (`None` for a URL without a scheme, which the
    /// runtime never gives).
    pub fn url(&self) -> Option<UrlParts<'_>> {
        split_url(&self.url)
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).ok().flatten()
    }

    /// The whole body (an `ArrayBuffer`), or `null` if it has not arrived within `ms`;
    /// `None` when the request has none (or it was taken already).
    pub fn whole_body(&self, ms: Millis) -> Option<worker::Result<js_sys::Promise>> {
        if self.raw.body_used() || self.raw.body().is_none() {
            return None;
        }
        Some(read_body(&self.raw, ms as f64).map_err(worker::Error::from))
    }

    /// The body's stream; `None` when the request has none (or it was taken already).
    pub fn body(&self) -> Option<ByteStream> {
        if self.raw.body_used() {
            return None;
        }
        self.raw.body().map(ByteStream::from)
    }
}
