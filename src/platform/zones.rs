//! Time zones from the runtime: the offsets of an IANA zone come from `Intl`, whose data
//! the Workers runtime keeps current, so the wasm module carries no zone database. The
//! schedules' rules (`domain::schedule::cron`) take them through `Offsets`.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

use crate::domain::schedule::cron::{parse_gmt_offset, Offsets, Utc};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = Intl, js_name = DateTimeFormat)]
    type Formatter;

    #[wasm_bindgen(constructor, js_namespace = Intl, js_class = "DateTimeFormat", catch)]
    fn new(locale: &str, options: &JsValue) -> Result<Formatter, JsValue>;

    #[wasm_bindgen(method, js_name = formatToParts)]
    fn format_to_parts(this: &Formatter, date: f64) -> js_sys::Array;

    #[wasm_bindgen(js_namespace = Intl, js_name = supportedValuesOf, catch)]
    fn supported_values_of(key: &str) -> Result<js_sys::Array, JsValue>;
}

/// A zone the runtime knows, by IANA name.
pub struct Zone {
    /// `None`: UTC, which needs no lookup.
    formatter: Option<Formatter>,
}

impl Zone {
    /// The zone named `name`, if the runtime knows it.
    pub fn named(name: &str) -> Option<Zone> {
        if name == "UTC" {
            return Some(Zone { formatter: None });
        }
        let options = js_sys::Object::new();
        let set = |key: &str, value: &str| {
            js_sys::Reflect::set(&options, &key.into(), &value.into()).is_ok()
        };
        if !(set("timeZone", name) && set("timeZoneName", "longOffset")) {
            return None;
        }
        let formatter = Formatter::new("en-US", &options).ok()?;
        Some(Zone {
            formatter: Some(formatter),
        })
    }
}

impl Offsets for Zone {
    fn offset_s(&self, utc_s: i64) -> i64 {
        let Some(formatter) = &self.formatter else {
            return Utc.offset_s(utc_s);
        };
        let parts = formatter.format_to_parts(utc_s as f64 * 1000.0);
        parts
            .iter()
            .find_map(|part| {
                let kind = js_sys::Reflect::get(&part, &"type".into())
                    .ok()?
                    .as_string()?;
                if kind != "timeZoneName" {
                    return None;
                }
                let value = js_sys::Reflect::get(&part, &"value".into()).ok()?;
                parse_gmt_offset(&value.as_string()?)
            })
            .unwrap_or(0)
    }
}

/// Every zone name the runtime knows, sorted, with `UTC` first when asked (Trigger.dev's
/// `GET /api/v1/timezones`).
pub fn names(include_utc: bool) -> Vec<String> {
    let mut names: Vec<String> = supported_values_of("timeZone")
        .map(|list| {
            list.iter()
                .filter_map(|v| v.dyn_into::<js_sys::JsString>().ok().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort_unstable();
    names.retain(|n| n != "UTC");
    if include_utc {
        names.insert(0, "UTC".into());
    }
    names
}
