//! The schedules API (docs/API.md section 8), Trigger.dev 4.x's shape: the bodies of
//! create and update, and the `ScheduleObject` view.
//!
//! A body's shape is checked here (400 naming the field); whether its cron expression
//! parses and its task exists are the schedule's meaning, answered 422 as Trigger.dev
//! does; the time zone is checked by the edge against the runtime's zones (422 too).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::api::auth::Environment;
use crate::domain::api::error::ApiError;
use crate::domain::basics::time::format_iso;
use crate::domain::intake::trigger::parse_top_object;
use crate::domain::schedule::cron::CronSchedule;
use crate::domain::schedule::{Schedule, ScheduleSpec};

/// The largest body create or update reads.
pub const MAX_SCHEDULE_BODY_BYTES: usize = 16 * 1024;
/// The longest deduplication key or external id.
pub const MAX_KEY_CHARS: usize = 1024;

/// A create or update, checked.
#[derive(Debug, PartialEq)]
pub struct ScheduleBody {
    pub spec: ScheduleSpec,
    /// Given on create only.
    pub dedup_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    task: Option<Value>,
    cron: Option<Value>,
    deduplication_key: Option<Value>,
    external_id: Option<Value>,
    timezone: Option<Value>,
    window: Option<Value>,
}

/// `POST /api/v1/schedules`: `{task, cron, deduplicationKey, externalId?, timezone?}`.
pub fn parse_create_body(body: &[u8]) -> Result<ScheduleBody, ApiError> {
    parse_body(body, true)
}

/// `PUT /api/v1/schedules/{id}`: the same without `deduplicationKey` (ignored if sent).
pub fn parse_update_body(body: &[u8]) -> Result<ScheduleBody, ApiError> {
    parse_body(body, false)
}

fn parse_body(body: &[u8], create: bool) -> Result<ScheduleBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("Request body is empty".into()));
    }
    let wire: Wire = parse_top_object(body)?;
    let task = text(wire.task, "task")?.ok_or(ApiError::validation("task", "required"))?;
    let cron = text(wire.cron, "cron")?.ok_or(ApiError::validation("cron", "required"))?;
    let dedup_key = if create {
        let key = text(wire.deduplication_key, "deduplicationKey")?
            .ok_or(ApiError::validation("deduplicationKey", "required"))?;
        Some(bounded_key(key, "deduplicationKey")?)
    } else {
        None
    };
    let external_id = text(wire.external_id, "externalId")?
        .map(|id| bounded_key(id, "externalId"))
        .transpose()?;
    let timezone = text(wire.timezone, "timezone")?.unwrap_or_else(|| "UTC".into());
    if !matches!(wire.window, None | Some(Value::Null)) {
        return Err(ApiError::validation(
            "window",
            "schedule windows are not supported by this server",
        ));
    }
    CronSchedule::parse(&cron).map_err(ApiError::Unprocessable)?;
    Ok(ScheduleBody {
        spec: ScheduleSpec {
            task,
            cron: cron.trim().to_owned(),
            timezone,
            external_id,
        },
        dedup_key,
    })
}

fn text(value: Option<Value>, field: &str) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::validation(field, "expected a string")),
    }
}

fn bounded_key(key: String, field: &str) -> Result<String, ApiError> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS {
        return Err(ApiError::validation(
            field,
            format!("expected 1 to {MAX_KEY_CHARS} characters"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::validation(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(key)
}

/// Trigger.dev's `ScheduleObject`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleObject {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub task: String,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deduplication_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub generator: Generator,
    pub timezone: String,
    /// The next tick, `null` while inactive.
    pub next_run: Option<String>,
    pub environments: Vec<EnvironmentRef>,
}

#[derive(Debug, Serialize)]
pub struct Generator {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub expression: String,
    pub description: String,
}

#[derive(Debug, Serialize)]
pub struct EnvironmentRef {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl ScheduleObject {
    pub fn new(schedule: &Schedule, environment: Environment) -> ScheduleObject {
        let description = CronSchedule::parse(&schedule.cron)
            .map(|c| c.describe())
            .unwrap_or_default();
        ScheduleObject {
            id: schedule.id.clone(),
            kind: schedule.kind.as_str(),
            task: schedule.task.clone(),
            active: schedule.active,
            deduplication_key: schedule.dedup_key.clone(),
            external_id: schedule.external_id.clone(),
            generator: Generator {
                kind: "CRON",
                expression: schedule.cron.clone(),
                description,
            },
            timezone: schedule.timezone.clone(),
            next_run: schedule
                .next_tick
                .filter(|_| schedule.active)
                .map(format_iso),
            environments: vec![EnvironmentRef {
                id: format!("env_{}", environment.slug()),
                kind: environment.kind(),
            }],
        }
    }
}

/// `GET /api/v1/schedules`: a page of schedules and where it sits.
#[derive(Debug, Serialize)]
pub struct ScheduleList {
    pub data: Vec<ScheduleObject>,
    pub pagination: Pagination,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub current_page: usize,
    pub total_pages: usize,
    pub count: usize,
}

impl Pagination {
    pub fn new(page: usize, per_page: usize, count: usize) -> Pagination {
        Pagination {
            current_page: page,
            total_pages: count.div_ceil(per_page),
            count,
        }
    }
}

/// `GET /api/v1/timezones?excludeUtc=true`: whether to leave `UTC` out of the list.
pub fn exclude_utc(query: &str) -> bool {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(key, value)| key == "excludeUtc" && value == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::ScheduleKind;

    fn create(body: &str) -> Result<ScheduleBody, ApiError> {
        parse_create_body(body.as_bytes())
    }

    #[test]
    fn a_create_body_needs_task_cron_and_a_key_and_defaults_to_utc() {
        let body =
            create(r#"{"task":"t","cron":" 0 * * * * ","deduplicationKey":"k","externalId":"u1"}"#)
                .unwrap();
        assert_eq!(body.spec.cron, "0 * * * *");
        assert_eq!(body.spec.timezone, "UTC");
        assert_eq!(body.spec.external_id.as_deref(), Some("u1"));
        assert_eq!(body.dedup_key.as_deref(), Some("k"));
        let update = parse_update_body(br#"{"task":"t","cron":"0 * * * *","timezone":"Asia/Tokyo","deduplicationKey":"ignored"}"#).unwrap();
        assert_eq!(
            (update.spec.timezone.as_str(), update.dedup_key),
            ("Asia/Tokyo", None)
        );
    }

    #[test]
    fn bad_bodies_name_their_field_and_bad_crons_are_422() {
        let cases = [
            ("", "Request body is empty"),
            ("[]", "Validation error: body: expected an object"),
            (
                r#"{"cron":"* * * * *","deduplicationKey":"k"}"#,
                "Validation error: task: required",
            ),
            (
                r#"{"task":"t","deduplicationKey":"k"}"#,
                "Validation error: cron: required",
            ),
            (
                r#"{"task":"t","cron":"* * * * *"}"#,
                "Validation error: deduplicationKey: required",
            ),
            (
                r#"{"task":1,"cron":"* * * * *","deduplicationKey":"k"}"#,
                "Validation error: task: expected a string",
            ),
            (
                r#"{"task":"t","cron":"* * * * *","deduplicationKey":""}"#,
                "Validation error: deduplicationKey: expected 1 to 1024 characters",
            ),
            (
                r#"{"task":"t","cron":"* * * * *","deduplicationKey":"k","externalId":"a\nb"}"#,
                "Validation error: externalId: control characters are not allowed",
            ),
            (
                r#"{"task":"t","cron":"* * * * *","deduplicationKey":"k","window":"30m"}"#,
                "Validation error: window: schedule windows are not supported by this server",
            ),
        ];
        for (body, message) in cases {
            let e = create(body).unwrap_err();
            assert_eq!(
                (e.status(), e.message()),
                (400, message.to_owned()),
                "{body}"
            );
        }
        let e = create(r#"{"task":"t","cron":"* * * * * *","deduplicationKey":"k"}"#).unwrap_err();
        assert_eq!(
            (e.status(), e.message().as_str()),
            (422, "CRON expressions with seconds are not allowed")
        );
        let e = create(r#"{"task":"t","cron":"99 * * * *","deduplicationKey":"k"}"#).unwrap_err();
        assert_eq!(e.status(), 422);
    }

    #[test]
    fn the_view_is_trigger_devs_schedule_object() {
        let schedule = Schedule {
            id: "sched_1".into(),
            kind: ScheduleKind::Imperative,
            task: "t".into(),
            cron: "0 * * * *".into(),
            timezone: "UTC".into(),
            dedup_key: Some("k".into()),
            external_id: None,
            active: true,
            created_at: 0,
            last_tick: None,
            next_tick: Some(3_600_000),
        };
        let view =
            serde_json::to_value(ScheduleObject::new(&schedule, Environment::Production)).unwrap();
        assert_eq!(view["type"], "IMPERATIVE");
        assert_eq!(view["generator"]["type"], "CRON");
        assert_eq!(view["generator"]["expression"], "0 * * * *");
        assert_eq!(view["nextRun"], "1970-01-01T01:00:00.000Z");
        assert_eq!(view["deduplicationKey"], "k");
        assert!(view.get("externalId").is_none());
        assert_eq!(
            view["environments"],
            serde_json::json!([{"id": "env_prod", "type": "PRODUCTION"}])
        );
        let inactive = Schedule {
            active: false,
            ..schedule
        };
        let view =
            serde_json::to_value(ScheduleObject::new(&inactive, Environment::Production)).unwrap();
        assert_eq!(view["nextRun"], Value::Null);
    }

    #[test]
    fn pages_count_up_and_utc_is_excluded_only_when_asked() {
        let p = Pagination::new(2, 25, 51);
        assert_eq!((p.current_page, p.total_pages, p.count), (2, 3, 51));
        assert_eq!(Pagination::new(1, 25, 0).total_pages, 0);
        assert!(exclude_utc("excludeUtc=true"));
        assert!(!exclude_utc("excludeUtc=false") && !exclude_utc(""));
    }
}
