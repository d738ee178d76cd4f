//! Debounced triggers (Trigger.dev 4.x's `options.debounce`, docs/API.md section 2): a
//! trigger with a debounce key, while the key's run is still `DELAYED`, creates nothing;
//! it pushes that run's start to `delay` from now (never past `maxDelay` after the run was
//! created) and answers its id. `leading` (the default) keeps the first trigger's payload
//! and options; `trailing` takes the last trigger's payload, metadata, tags, maxAttempts,
//! maxDuration and machine. Keys are per task; an idempotency key is checked first.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::domain::api::error::ApiError;
use crate::domain::basics::duration::parse_duration;
use crate::domain::basics::time::Millis;

/// The longest debounce key.
pub const MAX_DEBOUNCE_KEY: usize = 512;
/// How long a key's run may be pushed back when `maxDelay` is not given.
pub const DEFAULT_MAX_DELAY_MS: u64 = 10 * 60 * 1000;

/// A trigger's debounce, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debounce {
    pub key: String,
    pub delay_ms: u64,
    /// `trailing`: the last trigger's payload and options win; else the first's.
    pub trailing: bool,
    pub max_delay_ms: u64,
}

impl Debounce {
    /// Parses `options.debounce`; `at(field)` names a field in errors.
    pub fn parse(raw: &RawValue, at: impl Fn(&str) -> String) -> Result<Debounce, ApiError> {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(raw.get()) else {
            return Err(ApiError::validation(
                at("debounce"),
                "expected an object {key, delay, mode?, maxDelay?}",
            ));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !["key", "delay", "mode", "maxDelay"].contains(&k.as_str()))
        {
            return Err(ApiError::validation(
                at(&format!("debounce.{unknown}")),
                "unknown field",
            ));
        }
        let key = match fields.get("key") {
            Some(Value::String(k))
                if !k.is_empty()
                    && k.chars().count() <= MAX_DEBOUNCE_KEY
                    && !k.chars().any(char::is_control) =>
            {
                k.clone()
            }
            None => return Err(ApiError::validation(at("debounce.key"), "required")),
            Some(_) => {
                return Err(ApiError::validation(
                    at("debounce.key"),
                    "expected a string of 1 to 512 characters, no control characters",
                ))
            }
        };
        let duration = |field: &str| -> Result<Option<u64>, ApiError> {
            match fields.get(field) {
                None => Ok(None),
                Some(Value::String(s)) => parse_duration(s)
                    .filter(|ms| *ms > 0)
                    .map(Some)
                    .ok_or_else(|| {
                        ApiError::validation(
                            at(&format!("debounce.{field}")),
                            "expected a duration like 5s or 1m (units w, d, h or hr, m, s)",
                        )
                    }),
                Some(_) => Err(ApiError::validation(
                    at(&format!("debounce.{field}")),
                    "expected a duration like 5s or 1m (units w, d, h or hr, m, s)",
                )),
            }
        };
        let delay_ms = duration("delay")?
            .ok_or_else(|| ApiError::validation(at("debounce.delay"), "required"))?;
        let max_delay_ms = duration("maxDelay")?;
        let trailing = match fields.get("mode") {
            None => false,
            Some(Value::String(m)) if m == "leading" => false,
            Some(Value::String(m)) if m == "trailing" => true,
            Some(_) => {
                return Err(ApiError::validation(
                    at("debounce.mode"),
                    "expected leading or trailing",
                ))
            }
        };
        let bound = max_delay_ms.unwrap_or(DEFAULT_MAX_DELAY_MS);
        if delay_ms >= bound {
            let reason = match max_delay_ms {
                Some(_) => "must be shorter than debounce.maxDelay".to_owned(),
                None => "must be shorter than debounce.maxDelay (10m when not given)".to_owned(),
            };
            return Err(ApiError::validation(at("debounce.delay"), reason));
        }
        Ok(Debounce {
            key,
            delay_ms,
            trailing,
            max_delay_ms: bound,
        })
    }

    /// When a new run of this key starts, triggered at `now`.
    pub fn first_due(&self, now: Millis) -> Millis {
        now.saturating_add(self.delay_ms.min(i64::MAX as u64) as i64)
    }
}

/// A key's run as stored: its id, the latest its start may be pushed to, and whether it
/// is still `DELAYED` (only then does the key debounce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldDebounce {
    pub run_id: String,
    pub latest: Millis,
    pub delayed: bool,
}

/// What a debounced trigger does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebounceDecision {
    /// A new run, starting at `due`; its key holds it, to be pushed back at most until
    /// `latest`.
    Create { due: Millis, latest: Millis },
    /// The key's run `run_id` moves to `due`; nothing is created.
    Extend { run_id: String, due: Millis },
}

/// Decides a trigger at `now` with `debounce`, given the key's run (if any).
pub fn decide(held: Option<&HeldDebounce>, debounce: &Debounce, now: Millis) -> DebounceDecision {
    let due = debounce.first_due(now);
    match held {
        Some(h) if h.delayed => DebounceDecision::Extend {
            run_id: h.run_id.clone(),
            due: due.min(h.latest),
        },
        _ => DebounceDecision::Create {
            due,
            latest: now.saturating_add(debounce.max_delay_ms.min(i64::MAX as u64) as i64),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Debounce, String> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        Debounce::parse(&raw, |f| format!("options.{f}")).map_err(|e| e.message())
    }

    #[test]
    fn a_debounce_is_a_key_a_delay_a_mode_and_a_bound() {
        assert_eq!(
            parse(r#"{"key":"user-1","delay":"5s"}"#),
            Ok(Debounce {
                key: "user-1".into(),
                delay_ms: 5000,
                trailing: false,
                max_delay_ms: 600_000
            })
        );
        assert_eq!(
            parse(r#"{"key":"k","delay":"1m","mode":"trailing","maxDelay":"1h"}"#),
            Ok(Debounce {
                key: "k".into(),
                delay_ms: 60_000,
                trailing: true,
                max_delay_ms: 3_600_000
            })
        );
        let long = format!(r#"{{"key":"{}","delay":"1s"}}"#, "k".repeat(513));
        for (json, message) in [
            ("[]", "options.debounce: expected an object {key, delay, mode?, maxDelay?}"),
            (r#"{"delay":"5s"}"#, "options.debounce.key: required"),
            (r#"{"key":"","delay":"5s"}"#, "options.debounce.key: expected a string of 1 to 512 characters, no control characters"),
            (&long, "options.debounce.key: expected a string of 1 to 512 characters, no control characters"),
            (r#"{"key":"k"}"#, "options.debounce.delay: required"),
            (r#"{"key":"k","delay":"soon"}"#, "options.debounce.delay: expected a duration like 5s or 1m (units w, d, h or hr, m, s)"),
            (r#"{"key":"k","delay":5}"#, "options.debounce.delay: expected a duration like 5s or 1m (units w, d, h or hr, m, s)"),
            (r#"{"key":"k","delay":"5s","mode":"both"}"#, "options.debounce.mode: expected leading or trailing"),
            (r#"{"key":"k","delay":"5s","maxDelay":"5s"}"#, "options.debounce.delay: must be shorter than debounce.maxDelay"),
            (r#"{"key":"k","delay":"10m"}"#, "options.debounce.delay: must be shorter than debounce.maxDelay (10m when not given)"),
            (r#"{"key":"k","delay":"1s","wait":1}"#, "options.debounce.wait: unknown field"),
        ] {
            assert_eq!(parse(json), Err(format!("Validation error: {message}")), "{json}");
        }
    }

    #[test]
    fn a_delayed_run_of_the_key_is_pushed_back_never_past_its_bound() {
        let debounce = parse(r#"{"key":"k","delay":"5s","maxDelay":"20s"}"#).unwrap();
        let first = decide(None, &debounce, 1_000);
        assert_eq!(
            first,
            DebounceDecision::Create {
                due: 6_000,
                latest: 21_000
            }
        );
        let held = HeldDebounce {
            run_id: "run_a".into(),
            latest: 21_000,
            delayed: true,
        };
        assert_eq!(
            decide(Some(&held), &debounce, 4_000),
            DebounceDecision::Extend {
                run_id: "run_a".into(),
                due: 9_000
            }
        );
        // A busy key: pushed back to its bound, no further.
        assert_eq!(
            decide(Some(&held), &debounce, 19_000),
            DebounceDecision::Extend {
                run_id: "run_a".into(),
                due: 21_000
            }
        );
        // Once the run left DELAYED, the key makes a new run.
        let gone = HeldDebounce {
            delayed: false,
            ..held
        };
        assert_eq!(
            decide(Some(&gone), &debounce, 30_000),
            DebounceDecision::Create {
                due: 35_000,
                latest: 50_000
            }
        );
    }
}
