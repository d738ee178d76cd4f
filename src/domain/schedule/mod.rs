//! Cron schedules (docs/API.md section 8): what a schedule is, when it ticks ([`cron`]),
//! and the run each tick triggers.
//!
//! A schedule belongs to one environment and one task. `DECLARATIVE` ones are written in
//! the task's declaration (`schedule = { cron, timezone }` in `wrangler.toml`) and follow
//! the configuration; `IMPERATIVE` ones are made through the API, one per deduplication
//! key. Each tick triggers one run of the task, through the same trigger path as any
//! other, with an idempotency key of the schedule and the tick: a tick fired twice (a
//! restart between the trigger and the bookkeeping) makes one run.

pub mod cron;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::basics::time::{format_iso, Millis};

/// Where a schedule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScheduleKind {
    Declarative,
    Imperative,
}

impl ScheduleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::Declarative => "DECLARATIVE",
            ScheduleKind::Imperative => "IMPERATIVE",
        }
    }

    pub fn parse(text: &str) -> Option<ScheduleKind> {
        [ScheduleKind::Declarative, ScheduleKind::Imperative]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// A stored schedule, as its environment's scheduler keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    pub kind: ScheduleKind,
    pub task: String,
    pub cron: String,
    pub timezone: String,
    /// The caller's deduplication key (imperative schedules only).
    pub dedup_key: Option<String>,
    pub external_id: Option<String>,
    pub active: bool,
    pub created_at: Millis,
    /// The last tick that triggered a run.
    pub last_tick: Option<Millis>,
    /// The next tick, while active.
    pub next_tick: Option<Millis>,
}

/// What a caller or a declaration says a schedule should be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub task: String,
    /// A checked five-field expression.
    pub cron: String,
    /// A zone name the runtime knows.
    pub timezone: String,
    pub external_id: Option<String>,
}

/// The id of the schedule a task declares: the same on every deploy, in every environment.
pub fn declared_id(task: &str) -> String {
    let digest = Sha256::digest(format!("declared schedule of {task}").as_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("sched_{hex}")
}

/// The idempotency key of a tick's run: one run per schedule and tick.
pub fn tick_key(schedule_id: &str, tick: Millis) -> String {
    format!("{schedule_id}:{}", format_iso(tick))
}

/// How long a tick's idempotency key is kept: long past any retry of the tick.
pub const TICK_KEY_TTL: &str = "1d";

/// Ticks listed in a run's `upcoming`, as Trigger.dev's engine sends them.
pub const UPCOMING: usize = 10;

/// The trigger body of a tick's run: Trigger.dev's scheduled payload (`timestamp`,
/// `lastTimestamp`, `timezone`, `scheduleId`, `externalId`, `type`, `upcoming`) as
/// superjson, so that the SDK's task gets `Date`s, and the tick's idempotency key.
pub fn tick_trigger_body(
    schedule: &Schedule,
    tick: Millis,
    last: Option<Millis>,
    upcoming: &[Millis],
) -> String {
    let mut json = serde_json::Map::new();
    let mut dates = serde_json::Map::new();
    let date = &serde_json::json!(["Date"]);
    json.insert("scheduleId".into(), schedule.id.clone().into());
    json.insert("type".into(), schedule.kind.as_str().into());
    json.insert("timestamp".into(), format_iso(tick).into());
    dates.insert("timestamp".into(), date.clone());
    if let Some(last) = last {
        json.insert("lastTimestamp".into(), format_iso(last).into());
        dates.insert("lastTimestamp".into(), date.clone());
    }
    if let Some(external) = &schedule.external_id {
        json.insert("externalId".into(), external.clone().into());
    }
    json.insert("timezone".into(), schedule.timezone.clone().into());
    let upcoming_iso: Vec<String> = upcoming.iter().map(|t| format_iso(*t)).collect();
    json.insert("upcoming".into(), upcoming_iso.into());
    for i in 0..upcoming.len() {
        dates.insert(format!("upcoming.{i}"), date.clone());
    }
    let payload = serde_json::json!({"json": json, "meta": {"values": dates, "v": 1}});
    serde_json::json!({
        "payload": payload.to_string(),
        "options": {
            "payloadType": "application/super+json",
            "idempotencyKey": tick_key(&schedule.id, tick),
            "idempotencyKeyTTL": TICK_KEY_TTL,
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::basics::time::parse_iso;
    use crate::domain::intake::trigger::parse_trigger_body;
    use serde_json::Value;

    fn schedule(external: Option<&str>) -> Schedule {
        Schedule {
            id: "sched_abc".into(),
            kind: ScheduleKind::Imperative,
            task: "report".into(),
            cron: "0 * * * *".into(),
            timezone: "Europe/London".into(),
            dedup_key: Some("k".into()),
            external_id: external.map(Into::into),
            active: true,
            created_at: 0,
            last_tick: None,
            next_tick: None,
        }
    }

    #[test]
    fn a_ticks_run_carries_trigger_devs_scheduled_payload_as_superjson_dates() {
        let t = |iso| parse_iso(iso).unwrap();
        let body = tick_trigger_body(
            &schedule(Some("user_1")),
            t("2026-06-01T10:00:00Z"),
            Some(t("2026-06-01T09:00:00Z")),
            &[t("2026-06-01T11:00:00Z"), t("2026-06-01T12:00:00Z")],
        );
        let run = parse_trigger_body(body.as_bytes(), 0).unwrap();
        assert_eq!(run.payload_type, "application/super+json");
        assert_eq!(
            run.idempotency_key.unwrap().as_str(),
            "sched_abc:2026-06-01T10:00:00.000Z"
        );
        assert_eq!(run.idempotency_key_ttl_ms, 86_400_000);
        let text: String = serde_json::from_str(run.payload.unwrap().get()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc["json"],
            serde_json::json!({
                "scheduleId": "sched_abc", "type": "IMPERATIVE",
                "timestamp": "2026-06-01T10:00:00.000Z", "lastTimestamp": "2026-06-01T09:00:00.000Z",
                "externalId": "user_1", "timezone": "Europe/London",
                "upcoming": ["2026-06-01T11:00:00.000Z", "2026-06-01T12:00:00.000Z"],
            })
        );
        assert_eq!(
            doc["meta"]["values"],
            serde_json::json!({
                "timestamp": ["Date"], "lastTimestamp": ["Date"],
                "upcoming.0": ["Date"], "upcoming.1": ["Date"],
            })
        );
    }

    #[test]
    fn a_first_tick_has_no_last_timestamp_and_no_external_id_unless_given() {
        let body = tick_trigger_body(&schedule(None), 60_000, None, &[]);
        let run = parse_trigger_body(body.as_bytes(), 0).unwrap();
        let text: String = serde_json::from_str(run.payload.unwrap().get()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert!(doc["json"].get("lastTimestamp").is_none());
        assert!(doc["json"].get("externalId").is_none());
        assert_eq!(
            doc["meta"]["values"],
            serde_json::json!({"timestamp": ["Date"]})
        );
    }

    #[test]
    fn declared_ids_are_stable_per_task_and_distinct() {
        assert_eq!(declared_id("a"), declared_id("a"));
        assert_ne!(declared_id("a"), declared_id("b"));
        assert!(declared_id("a").starts_with("sched_") && declared_id("a").len() == 26);
    }
}
