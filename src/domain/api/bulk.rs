//! Bulk actions (docs/API.md section 5): cancel or replay every run a filter or a list of
//! ids selects, in the background. The request body, the `BulkActionObject` view, and the
//! paging state: which stores still have runs to act on, and the counts so far.
//!
//! An action is split by store: each store acts on its own runs a page at a time and keeps
//! its own cursor and counts with the runs it changed, in one transaction
//! (`objects::store`'s `BulkStep`), so a page is acted on once however often it is asked
//! for. The action's object only asks each store for its next page and adds up what the
//! stores report.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::api::error::ApiError;
use crate::domain::api::list::{statuses_named, RunFilter};
use crate::domain::basics::duration::parse_duration;
use crate::domain::basics::time::{format_iso, parse_iso, Millis};
use crate::domain::intake::trigger::parse_top_object;

/// The largest create body.
pub const MAX_BULK_BODY_BYTES: usize = 1024 * 1024;
/// The most run ids one action may list.
pub const MAX_RUN_IDS: usize = 10_000;
/// Runs one store acts on per step.
pub const STEP_RUNS: usize = 500;
/// Bulk actions per page of the list, by default and at most.
pub const DEFAULT_PAGE_SIZE: usize = 25;
pub const MAX_PAGE_SIZE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BulkKind {
    Cancel,
    Replay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BulkStatus {
    Pending,
    Completed,
    Aborted,
}

/// Which runs: those a filter matches (created before the action was), or these ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Selection {
    Filter(RunFilter),
    Ids(Vec<String>),
}

/// A create request, checked.
#[derive(Debug, PartialEq)]
pub struct BulkRequest {
    pub kind: BulkKind,
    pub name: Option<String>,
    pub selection: Selection,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    action: Option<Value>,
    name: Option<Value>,
    filter: Option<Value>,
    run_ids: Option<Value>,
    target_region: Option<Value>,
}

/// `POST /api/v1/bulk-actions`: `{action: "cancel" | "replay", name?, filter | runIds}`.
/// A filter only ever reaches runs created by `now`.
pub fn parse_create_body(body: &[u8], now: Millis) -> Result<BulkRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    let wire: Wire = parse_top_object(body)?;
    let kind = match wire.action {
        Some(Value::String(a)) if a == "cancel" => BulkKind::Cancel,
        Some(Value::String(a)) if a == "replay" => BulkKind::Replay,
        None => return Err(ApiError::validation("action", "required")),
        Some(_) => return Err(ApiError::validation("action", "expected cancel or replay")),
    };
    let name = match wire.name {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if n.chars().count() <= 255 => Some(n),
        Some(_) => {
            return Err(ApiError::validation(
                "name",
                "expected a string of at most 255 characters",
            ))
        }
    };
    if !matches!(wire.target_region, None | Some(Value::Null)) {
        return Err(ApiError::validation(
            "targetRegion",
            "this server has one region",
        ));
    }
    let selection = match (wire.filter, wire.run_ids) {
        (Some(filter), None) if !filter.is_null() => Selection::Filter(parse_filter(filter, now)?),
        (None, Some(ids)) if !ids.is_null() => Selection::Ids(parse_ids(ids)?),
        _ => {
            return Err(ApiError::validation(
                "body",
                "exactly one of filter or runIds must be provided",
            ))
        }
    };
    Ok(BulkRequest {
        kind,
        name,
        selection,
    })
}

fn parse_ids(value: Value) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::validation("runIds", "expected an array of run ids");
    let Value::Array(items) = value else {
        return Err(bad());
    };
    if items.is_empty() {
        return Err(ApiError::validation(
            "runIds",
            "expected at least one run id",
        ));
    }
    if items.len() > MAX_RUN_IDS {
        return Err(ApiError::BadRequest(format!(
            "Too many runIds ({}). Maximum is {MAX_RUN_IDS}. Use a filter to select more runs.",
            items.len()
        )));
    }
    let mut ids: Vec<String> = items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            _ => Err(bad()),
        })
        .collect::<Result<_, _>>()?;
    // Each run once, in the order given.
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    Ok(ids)
}

/// One value or an array of them, as strings.
fn strings(value: Value, field: &str) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::validation(field, "expected a string or an array of strings");
    match value {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

fn instant(value: Value, field: &str) -> Result<Millis, ApiError> {
    match &value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => parse_iso(s),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::validation(
            field,
            "expected epoch milliseconds or an ISO-8601 date-time",
        )
    })
}

/// The list endpoint's filter, as Trigger.dev's bulk body gives it.
fn parse_filter(value: Value, now: Millis) -> Result<RunFilter, ApiError> {
    let Value::Object(fields) = value else {
        return Err(ApiError::validation("filter", "expected an object"));
    };
    let mut filter = RunFilter::default();
    let mut any = false;
    for (key, value) in fields {
        if value.is_null() {
            continue;
        }
        let field = format!("filter.{key}");
        match key.as_str() {
            "status" => filter.statuses = statuses_named(strings(value, &field)?, &field)?,
            "taskIdentifier" => filter.tasks = strings(value, &field)?,
            "tag" => filter.tags = strings(value, &field)?,
            "batch" => filter.batch = Some(strings(value, &field)?.concat()),
            "queue" => filter.queues = queues(value, &field)?,
            "from" => filter.created_from = Some(instant(value, &field)?),
            "to" => filter.created_to = Some(instant(value, &field)?),
            "period" => {
                let text = strings(value, &field)?.concat();
                let ms = parse_duration(text.trim()).ok_or_else(|| {
                    ApiError::validation(&field, "expected a duration like 1d or 2h")
                })?;
                filter.created_from =
                    Some(now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
            }
            "version" | "bulkAction" | "schedule" | "isTest" | "machine" | "region" => {
                return Err(ApiError::validation(&field, "not supported by this server"))
            }
            _ => return Err(ApiError::validation(&field, "unknown filter")),
        }
        any = true;
    }
    if !any {
        return Err(ApiError::validation(
            "filter",
            "At least one filter must be provided",
        ));
    }
    filter.created_to = Some(filter.created_to.map_or(now, |to| to.min(now)));
    Ok(filter)
}

/// `{type: "task" | "custom", name}`, or an array of them: queue names.
fn queues(value: Value, field: &str) -> Result<Vec<String>, ApiError> {
    let one = |v: Value| -> Result<String, ApiError> {
        let bad = || ApiError::validation(field, "expected {type, name} or an array of them");
        let kind = v.get("type").and_then(Value::as_str).ok_or_else(bad)?;
        let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?;
        match kind {
            "task" => Ok(format!(
                "task/{}",
                name.strip_prefix("task/").unwrap_or(name)
            )),
            "custom" => Ok(name.to_owned()),
            _ => Err(bad()),
        }
    };
    match value {
        Value::Array(items) => items.into_iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// One store's part of an action, as far as it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorePart {
    pub store: String,
    /// The ids in this store (an action by ids); empty for a filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_ids: Vec<String>,
    pub done: bool,
    /// Runs selected here, once the store counted them.
    pub total: u64,
    pub success: u64,
    pub failure: u64,
}

/// What a store reports after a step: its counts so far for the action, and whether it
/// has acted on every run it selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCounts {
    pub total: u64,
    pub success: u64,
    pub failure: u64,
    pub done: bool,
}

/// A bulk action and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkAction {
    pub id: String,
    pub kind: BulkKind,
    pub name: Option<String>,
    pub status: BulkStatus,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
    /// The filter, for an action by filter.
    pub filter: Option<RunFilter>,
    pub parts: Vec<StorePart>,
    /// Ids that name no run of this environment's stores: failures from the start.
    pub unknown: u64,
}

impl BulkAction {
    /// A new action over `stores` (by filter) or over `ids` by store.
    pub fn new(
        id: String,
        request: BulkRequest,
        now: Millis,
        stores: Vec<(String, Vec<String>)>,
        unknown: u64,
    ) -> BulkAction {
        let filter = match request.selection {
            Selection::Filter(f) => Some(f),
            Selection::Ids(_) => None,
        };
        let parts = stores
            .into_iter()
            .map(|(store, run_ids)| StorePart {
                store,
                total: run_ids.len() as u64,
                run_ids,
                done: false,
                success: 0,
                failure: 0,
            })
            .collect();
        let mut action = BulkAction {
            id,
            kind: request.kind,
            name: request.name,
            status: BulkStatus::Pending,
            created_at: now,
            completed_at: None,
            filter,
            parts,
            unknown,
        };
        action.complete_if_done(now);
        action
    }

    /// The stores still to step, while pending.
    pub fn pending_parts(&self) -> Vec<usize> {
        match self.status {
            BulkStatus::Pending => (0..self.parts.len())
                .filter(|i| !self.parts[*i].done)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Takes a store's report (its counts are totals, so a report read twice counts once).
    pub fn record(&mut self, part: usize, counts: StepCounts, now: Millis) {
        if let Some(p) = self.parts.get_mut(part) {
            p.total = counts.total;
            p.success = counts.success;
            p.failure = counts.failure;
            p.done = counts.done;
        }
        self.complete_if_done(now);
    }

    fn complete_if_done(&mut self, now: Millis) {
        if self.status == BulkStatus::Pending && self.parts.iter().all(|p| p.done) {
            self.status = BulkStatus::Completed;
            self.completed_at = Some(now);
        }
    }

    /// Stops it: no store is asked for another step. A finished action stays as it is.
    pub fn abort(&mut self, now: Millis) {
        if self.status == BulkStatus::Pending {
            self.status = BulkStatus::Aborted;
            self.completed_at = Some(now);
        }
    }

    pub fn counts(&self) -> Counts {
        let sum = |f: fn(&StorePart) -> u64| self.parts.iter().map(f).sum::<u64>();
        Counts {
            total: sum(|p| p.total) + self.unknown,
            success: sum(|p| p.success),
            failure: sum(|p| p.failure) + self.unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: u64,
    pub success: u64,
    pub failure: u64,
}

/// Trigger.dev's `BulkActionObject`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkActionObject {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: BulkKind,
    pub status: BulkStatus,
    pub counts: Counts,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

impl BulkActionObject {
    pub fn new(action: &BulkAction) -> BulkActionObject {
        BulkActionObject {
            id: action.id.clone(),
            name: action.name.clone(),
            kind: action.kind,
            status: action.status,
            counts: action.counts(),
            created_at: format_iso(action.created_at),
            completed_at: action.completed_at.map(format_iso),
        }
    }
}

/// `GET /api/v1/bulk-actions?page[size]=&page[after]=`: newest first; a cursor is the id
/// of the last action of the page before.
#[derive(Debug, PartialEq, Eq)]
pub struct BulkPage {
    pub size: usize,
    pub after: Option<String>,
}

pub fn parse_list_page(query: &str) -> Result<BulkPage, ApiError> {
    let mut page = BulkPage {
        size: DEFAULT_PAGE_SIZE,
        after: None,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (
            crate::domain::api::list::unescape(key),
            crate::domain::api::list::unescape(value),
        );
        match key.as_str() {
            "page[size]" => {
                page.size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                    .ok_or_else(|| {
                        ApiError::validation("page[size]", "expected an integer from 1 to 100")
                    })?;
            }
            "page[after]" => page.after = Some(value),
            "page[before]" => {
                return Err(ApiError::validation(
                    "page[before]",
                    "not supported: page forward with page[after]",
                ))
            }
            _ => {}
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::run::status::RunStatus;

    const NOW: Millis = 1_800_000_000_000;

    fn create(body: &str) -> Result<BulkRequest, ApiError> {
        parse_create_body(body.as_bytes(), NOW)
    }

    #[test]
    fn a_filter_is_the_lists_and_reaches_only_runs_made_before_the_action() {
        let request = create(
            r#"{"action":"cancel","name":"cleanup","filter":{"status":["DELAYED","QUEUED"],"tag":"t1","taskIdentifier":["a","b"],"queue":{"type":"task","name":"a"},"period":"1h"}}"#,
        )
        .unwrap();
        assert_eq!(request.kind, BulkKind::Cancel);
        assert_eq!(request.name.as_deref(), Some("cleanup"));
        let Selection::Filter(filter) = request.selection else {
            panic!("a filter")
        };
        assert_eq!(filter.statuses.len(), 2);
        assert!(filter.statuses.contains(&RunStatus::Delayed));
        assert_eq!(filter.tags, ["t1"]);
        assert_eq!(filter.tasks, ["a", "b"]);
        assert_eq!(filter.queues, ["task/a"]);
        assert_eq!(filter.created_from, Some(NOW - 3_600_000));
        assert_eq!(filter.created_to, Some(NOW));
        let later =
            create(r#"{"action":"replay","filter":{"to":"2100-01-01T00:00:00Z"}}"#).unwrap();
        assert_eq!(
            later.selection,
            Selection::Filter(RunFilter {
                created_to: Some(NOW),
                ..Default::default()
            })
        );
    }

    #[test]
    fn ids_are_kept_once_in_order() {
        let request = create(r#"{"action":"replay","runIds":["run_b","run_a","run_b"]}"#).unwrap();
        assert_eq!(
            request.selection,
            Selection::Ids(vec!["run_b".into(), "run_a".into()])
        );
    }

    #[test]
    fn bad_bodies_are_400_naming_the_field() {
        let too_many = format!(
            r#"{{"action":"cancel","runIds":{}}}"#,
            serde_json::to_string(&vec!["run_x"; MAX_RUN_IDS + 1]).unwrap()
        );
        let cases = [
            (r#"{}"#, "Validation error: action: required"),
            (r#"{"action":"delete","runIds":["run_a"]}"#, "Validation error: action: expected cancel or replay"),
            (r#"{"action":"cancel"}"#, "Validation error: body: exactly one of filter or runIds must be provided"),
            (r#"{"action":"cancel","runIds":["run_a"],"filter":{"tag":"x"}}"#, "Validation error: body: exactly one of filter or runIds must be provided"),
            (r#"{"action":"cancel","runIds":[]}"#, "Validation error: runIds: expected at least one run id"),
            (r#"{"action":"cancel","runIds":[1]}"#, "Validation error: runIds: expected an array of run ids"),
            (r#"{"action":"cancel","filter":{}}"#, "Validation error: filter: At least one filter must be provided"),
            (r#"{"action":"cancel","filter":{"status":"NOPE"}}"#, "Validation error: filter.status: unknown status NOPE"),
            (r#"{"action":"cancel","filter":{"machine":"small-1x"}}"#, "Validation error: filter.machine: not supported by this server"),
            (r#"{"action":"cancel","filter":{"colour":"red"}}"#, "Validation error: filter.colour: unknown filter"),
            (r#"{"action":"cancel","filter":{"from":true}}"#, "Validation error: filter.from: expected epoch milliseconds or an ISO-8601 date-time"),
            (too_many.as_str(), "Too many runIds (10001). Maximum is 10000. Use a filter to select more runs."),
        ];
        for (body, message) in cases {
            let e = create(body).unwrap_err();
            assert_eq!(
                (e.status(), e.message()),
                (400, message.to_owned()),
                "{body}"
            );
        }
    }

    fn action(parts: usize) -> BulkAction {
        let request = BulkRequest {
            kind: BulkKind::Cancel,
            name: None,
            selection: Selection::Filter(RunFilter::default()),
        };
        let stores = (0..parts)
            .map(|i| (format!("dev:s{i}"), Vec::new()))
            .collect();
        BulkAction::new("bulk_1".into(), request, NOW, stores, 0)
    }

    #[test]
    fn an_action_completes_when_every_store_is_done_and_counts_read_twice_count_once() {
        let mut a = action(2);
        assert_eq!(a.pending_parts(), [0, 1]);
        let step = |success, done| StepCounts {
            total: 700,
            success,
            failure: 0,
            done,
        };
        a.record(0, step(500, false), NOW + 1);
        a.record(0, step(500, false), NOW + 2); // the same report again
        assert_eq!(
            a.counts(),
            Counts {
                total: 700,
                success: 500,
                failure: 0
            }
        );
        a.record(0, step(700, true), NOW + 3);
        assert_eq!(
            (a.status, a.pending_parts()),
            (BulkStatus::Pending, vec![1])
        );
        a.record(
            1,
            StepCounts {
                total: 3,
                success: 1,
                failure: 2,
                done: true,
            },
            NOW + 4,
        );
        assert_eq!(a.status, BulkStatus::Completed);
        assert_eq!(a.completed_at, Some(NOW + 4));
        assert_eq!(
            a.counts(),
            Counts {
                total: 703,
                success: 701,
                failure: 2
            }
        );
        assert!(a.pending_parts().is_empty());
        a.abort(NOW + 5);
        assert_eq!(
            a.status,
            BulkStatus::Completed,
            "a finished action is not aborted"
        );
    }

    #[test]
    fn an_aborted_action_asks_no_store_again_and_unknown_ids_fail_from_the_start() {
        let mut a = action(2);
        a.abort(NOW + 1);
        assert_eq!(
            (a.status, a.completed_at),
            (BulkStatus::Aborted, Some(NOW + 1))
        );
        assert!(a.pending_parts().is_empty());
        let request = BulkRequest {
            kind: BulkKind::Replay,
            name: None,
            selection: Selection::Ids(vec!["x".into()]),
        };
        let none = BulkAction::new("bulk_2".into(), request, NOW, Vec::new(), 1);
        assert_eq!(none.status, BulkStatus::Completed);
        assert_eq!(
            none.counts(),
            Counts {
                total: 1,
                success: 0,
                failure: 1
            }
        );
    }

    #[test]
    fn the_view_is_trigger_devs_bulk_action_object() {
        let mut a = action(1);
        a.name = Some("n".into());
        let view = serde_json::to_value(BulkActionObject::new(&a)).unwrap();
        assert_eq!(view["type"], "CANCEL");
        assert_eq!(view["status"], "PENDING");
        assert_eq!(
            view["counts"],
            serde_json::json!({"total": 0, "success": 0, "failure": 0})
        );
        assert!(view.get("completedAt").is_none());
        assert_eq!(
            parse_list_page("page[size]=2&page[after]=bulk_x").unwrap(),
            BulkPage {
                size: 2,
                after: Some("bulk_x".into())
            }
        );
        assert!(parse_list_page("page[size]=0").is_err());
    }
}
