//! The queues API (docs/API.md section 7), Trigger.dev 4.x's shape: how a path names a
//! queue, the bodies of pause and override, the list's pages, and the `QueueItem` view of
//! a queue built from its declaration and what its gates report.
//!
//! A queue's id is `queue_` and its name in hex: stable, the same in every environment,
//! and read back without a directory. A task's own queue is `task/<id>`, shown as type
//! `task` under the task's id (as Trigger.dev shows it); any other name is `custom`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::api::error::ApiError;
use crate::domain::api::list::unescape;
use crate::domain::basics::time::format_iso;
use crate::domain::intake::queue_name::clean_queue_name;
use crate::domain::intake::trigger::parse_top_object;
use crate::domain::scheduling::gate::{Control, Controls};

/// The largest body pause, override or reset reads.
pub const MAX_QUEUE_BODY_BYTES: usize = 16 * 1024;
/// Queues per page of the list, by default and at most.
pub const DEFAULT_PER_PAGE: usize = 25;
pub const MAX_PER_PAGE: usize = 100;
/// The highest limit an override may set (per key, or total).
pub const MAX_OVERRIDE: u32 = 100_000;

const TASK_PREFIX: &str = "task/";

/// A queue's id: `queue_` and its name in hex.
pub fn queue_id(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("queue_{hex}")
}

/// The queue an id names, if it is one of ours.
fn name_of_id(id: &str) -> Option<String> {
    let hex = id.strip_prefix("queue_")?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The queue a path names. `kind` is the `type` the caller gave (`id`, `task` or
/// `custom`); without one, an id if it looks like one, else the queue's full name. The
/// SDK encodes a `/` in a name as `%2F` before encoding the whole (`%252F` on the wire):
/// the router decoded once, and a name never holds a `%`, so it is decoded again here.
/// `Ok(None)`: no queue can have that name (answered 404).
pub fn resolve(value: &str, kind: Option<&str>) -> Result<Option<String>, ApiError> {
    let value = unescape(value);
    let name = match kind {
        Some("id") => name_of_id(&value),
        Some("task") => Some(format!(
            "{TASK_PREFIX}{}",
            value.strip_prefix(TASK_PREFIX).unwrap_or(&value)
        )),
        Some("custom") => Some(value),
        None if value.starts_with("queue_") => name_of_id(&value),
        None => Some(value),
        Some(_) => return Err(ApiError::validation("type", "expected id, task or custom")),
    };
    // Only names a trigger could have given (cleaned, as runs' queue names are).
    Ok(name.filter(|n| clean_queue_name(n).as_deref() == Some(n.as_str())))
}

/// The `type` parameter of a query string, if given.
pub fn type_param(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "type")
        .map(|(_, value)| unescape(value))
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: Option<Value>,
}

fn kind_of(kind: Option<Value>) -> Result<Option<String>, ApiError> {
    match kind {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::validation("type", "expected id, task or custom")),
    }
}

/// `POST …/pause`, `{"type", "action": "pause" | "resume"}`: the body's `type`, and the
/// change.
pub fn parse_pause_body(body: &[u8]) -> Result<(Option<String>, Control), ApiError> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(rename = "type")]
        kind: Option<Value>,
        action: Option<Value>,
    }
    let parsed: Body = parse_top_object(non_empty(body)?)?;
    let control = match parsed.action {
        Some(Value::String(a)) if a == "pause" => Control::Pause,
        Some(Value::String(a)) if a == "resume" => Control::Resume,
        None => return Err(ApiError::validation("action", "required")),
        Some(_) => return Err(ApiError::validation("action", "expected pause or resume")),
    };
    Ok((kind_of(parsed.kind)?, control))
}

/// `POST …/concurrency/override`, `{"type", "concurrencyLimit"}` and, beyond
/// Trigger.dev, `totalConcurrencyLimit` (a queue's total cap); at least one of the two.
pub fn parse_override_body(body: &[u8]) -> Result<(Option<String>, Control), ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(rename = "type")]
        kind: Option<Value>,
        concurrency_limit: Option<Value>,
        total_concurrency_limit: Option<Value>,
    }
    let parsed: Body = parse_top_object(non_empty(body)?)?;
    let bound = |field: &str, value: Option<Value>| match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= u64::from(MAX_OVERRIDE))
            .map(|n| Some(n as u32))
            .ok_or_else(|| {
                ApiError::validation(
                    field,
                    format!("expected an integer from 0 to {MAX_OVERRIDE}"),
                )
            }),
    };
    let limit = bound("concurrencyLimit", parsed.concurrency_limit)?;
    let total = bound("totalConcurrencyLimit", parsed.total_concurrency_limit)?;
    if limit.is_none() && total.is_none() {
        return Err(ApiError::validation("concurrencyLimit", "required"));
    }
    Ok((kind_of(parsed.kind)?, Control::Override { limit, total }))
}

/// `POST …/concurrency/reset`, `{"type"}` (an empty body is a reset too).
pub fn parse_reset_body(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: TypeOnly = parse_top_object(body)?;
    kind_of(parsed.kind)
}

fn non_empty(body: &[u8]) -> Result<&[u8], ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    Ok(body)
}

/// A page of the list: `page` from 1, `perPage` up to [`MAX_PER_PAGE`].
#[derive(Debug, PartialEq, Eq)]
pub struct ListPage {
    pub page: usize,
    pub per_page: usize,
}

pub fn parse_list_page(query: &str) -> Result<ListPage, ApiError> {
    let mut page = ListPage {
        page: 1,
        per_page: DEFAULT_PER_PAGE,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |max: usize, field: &str| {
            unescape(value)
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::validation(field, format!("expected an integer from 1 to {max}"))
                })
        };
        match unescape(key).as_str() {
            "page" => page.page = number(1_000_000, "page")?,
            "perPage" => page.per_page = number(MAX_PER_PAGE, "perPage")?,
            _ => {}
        }
    }
    Ok(page)
}

/// What one gate of a queue reports (`objects::gate::protocol::GateView`, without the
/// object's types).
#[derive(Debug, Clone, Default)]
pub struct GateFigures {
    pub limit: Option<u32>,
    pub controls: Controls,
    pub running: u32,
    pub queued: u64,
}

/// Trigger.dev's `QueueItem`, and the total cap beyond it.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueItem {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub running: u32,
    pub queued: u64,
    pub paused: bool,
    pub concurrency_limit: Option<u32>,
    pub concurrency: Concurrency,
    pub total_concurrency_limit: Option<u32>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    pub current: Option<u32>,
    pub base: Option<u32>,
    #[serde(rename = "override")]
    pub overridden: Option<u32>,
    pub overridden_at: Option<String>,
    pub overridden_by: Option<String>,
}

impl QueueItem {
    /// A queue from its gates' reports (every gate of a queue holds the same controls:
    /// each change goes to all of them; the first one's are shown) and what its tasks
    /// declare: the limit, which shows until a run brings one to the gate, and the total
    /// cap (a gate learns it with its next offer; the declaration is the one in force).
    pub fn new(
        name: &str,
        declared_limit: Option<u32>,
        declared_total: Option<u32>,
        gates: &[GateFigures],
    ) -> QueueItem {
        let first = gates.first().cloned().unwrap_or_default();
        let base = gates.iter().find_map(|g| g.limit).or(declared_limit);
        let current = first.controls.override_limit.or(base);
        let (kind, shown) = match name.strip_prefix(TASK_PREFIX) {
            Some(task) => ("task", task.to_owned()),
            None => ("custom", name.to_owned()),
        };
        QueueItem {
            id: queue_id(name),
            name: shown,
            kind,
            running: gates.iter().map(|g| g.running).sum(),
            queued: gates.iter().map(|g| g.queued).sum(),
            paused: first.controls.paused,
            concurrency_limit: current,
            concurrency: Concurrency {
                current,
                base,
                overridden: first.controls.override_limit,
                overridden_at: first.controls.overridden_at.map(format_iso),
                overridden_by: None,
            },
            total_concurrency_limit: first.controls.total_override.or(declared_total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_the_name_in_hex_and_reads_back() {
        assert_eq!(queue_id("task/a"), "queue_7461736b2f61");
        for name in ["task/hello-world", "tenant/a_1", "q"] {
            assert_eq!(resolve(&queue_id(name), Some("id")), Ok(Some(name.into())));
            assert_eq!(resolve(&queue_id(name), None), Ok(Some(name.into())));
        }
        for bad in ["queue_", "queue_7", "queue_zz", "queue_ff", "run_abc"] {
            assert_eq!(resolve(bad, Some("id")), Ok(None), "{bad}");
        }
    }

    #[test]
    fn a_path_names_a_task_queue_a_custom_queue_or_a_full_name() {
        let ok = |name: &str| Ok(Some(name.to_owned()));
        assert_eq!(resolve("hello-world", Some("task")), ok("task/hello-world"));
        assert_eq!(
            resolve("task/hello-world", Some("task")),
            ok("task/hello-world")
        );
        assert_eq!(resolve("my-queue", Some("custom")), ok("my-queue"));
        // The SDK's `%2F`, decoded once by the router.
        assert_eq!(resolve("tenant%2Fa", Some("custom")), ok("tenant/a"));
        assert_eq!(resolve("task/x", None), ok("task/x"));
        // A name no trigger could have given.
        assert_eq!(resolve("my queue", Some("custom")), Ok(None));
        assert_eq!(
            resolve("q", Some("queue")),
            Err(ApiError::validation("type", "expected id, task or custom"))
        );
        assert_eq!(type_param("a=1&type=task"), Some("task".into()));
        assert_eq!(type_param(""), None);
    }

    #[test]
    fn pause_override_and_reset_bodies_are_checked_field_by_field() {
        assert_eq!(
            parse_pause_body(br#"{"type":"task","action":"pause"}"#),
            Ok((Some("task".into()), Control::Pause))
        );
        assert_eq!(
            parse_pause_body(br#"{"action":"resume"}"#),
            Ok((None, Control::Resume))
        );
        assert_eq!(
            parse_override_body(br#"{"type":"custom","concurrencyLimit":5}"#),
            Ok((
                Some("custom".into()),
                Control::Override {
                    limit: Some(5),
                    total: None
                }
            ))
        );
        assert_eq!(
            parse_override_body(br#"{"totalConcurrencyLimit":0}"#),
            Ok((
                None,
                Control::Override {
                    limit: None,
                    total: Some(0)
                }
            ))
        );
        assert_eq!(parse_reset_body(b""), Ok(None));
        assert_eq!(parse_reset_body(br#"{"type":"id"}"#), Ok(Some("id".into())));
        for (body, message) in [
            (&b""[..], "Request body is empty"),
            (b"[1]", "Validation error: body: expected an object"),
            (b"{", "Invalid JSON"),
            (
                br#"{"action":"stop"}"#,
                "Validation error: action: expected pause or resume",
            ),
            (br#"{"type":"task"}"#, "Validation error: action: required"),
            (
                br#"{"action":"pause","type":7}"#,
                "Validation error: type: expected id, task or custom",
            ),
        ] {
            assert_eq!(parse_pause_body(body).unwrap_err().message(), message);
        }
        for (body, message) in [
            (
                &br#"{"type":"task"}"#[..],
                "Validation error: concurrencyLimit: required",
            ),
            (
                br#"{"concurrencyLimit":-1}"#,
                "Validation error: concurrencyLimit: expected an integer from 0 to 100000",
            ),
            (
                br#"{"concurrencyLimit":1.5}"#,
                "Validation error: concurrencyLimit: expected an integer from 0 to 100000",
            ),
            (
                br#"{"concurrencyLimit":"5"}"#,
                "Validation error: concurrencyLimit: expected an integer from 0 to 100000",
            ),
            (
                br#"{"totalConcurrencyLimit":100001}"#,
                "Validation error: totalConcurrencyLimit: expected an integer from 0 to 100000",
            ),
        ] {
            assert_eq!(parse_override_body(body).unwrap_err().message(), message);
        }
    }

    #[test]
    fn list_pages_are_checked() {
        assert_eq!(
            parse_list_page(""),
            Ok(ListPage {
                page: 1,
                per_page: 25
            })
        );
        assert_eq!(
            parse_list_page("page=3&perPage=100"),
            Ok(ListPage {
                page: 3,
                per_page: 100
            })
        );
        for bad in ["page=0", "perPage=101", "perPage=x", "page=-1"] {
            assert!(parse_list_page(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_queue_item_sums_its_gates_and_shows_override_over_base() {
        let gate = |limit, running, queued| GateFigures {
            limit,
            controls: Controls {
                paused: true,
                override_limit: Some(5),
                overridden_at: Some(0),
                total_limit: Some(7),
                total_override: Some(9),
                throttle: None,
            },
            running,
            queued,
        };
        let item = QueueItem::new(
            "task/hello",
            Some(1),
            Some(7),
            &[gate(None, 2, 3), gate(Some(2), 1, 1)],
        );
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            serde_json::json!({
                "id": queue_id("task/hello"), "name": "hello", "type": "task",
                "running": 3, "queued": 4, "paused": true, "concurrencyLimit": 5,
                "concurrency": {"current": 5, "base": 2, "override": 5,
                    "overriddenAt": "1970-01-01T00:00:00.000Z", "overriddenBy": null},
                "totalConcurrencyLimit": 9,
            })
        );
        // Before any run: the declared limit, nothing overridden.
        let fresh = QueueItem::new("shared", Some(3), Some(4), &[GateFigures::default()]);
        assert_eq!(
            fresh.total_concurrency_limit,
            Some(4),
            "declared, before any offer"
        );
        assert_eq!(
            (fresh.kind, fresh.concurrency_limit, fresh.concurrency.base),
            ("custom", Some(3), Some(3))
        );
        assert_eq!((fresh.paused, fresh.concurrency.overridden), (false, None));
    }
}
