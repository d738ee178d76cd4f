//! Idempotency decisions: which items of a batch create runs and which reuse one.
//!
//! Keys are unique per (environment, task, key); the run store that owns the task makes
//! every decision for it, so these functions only see one store's view and never race.

use std::collections::HashMap;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::domain::basics::time::Millis;
use crate::domain::intake::trigger::{
    has_control_characters, MAX_IDEMPOTENCY_KEY_CHARS, NO_CONTROL_CHARACTERS,
};
use crate::domain::run::status::RunStatus;

/// An idempotency key as the API accepts it, for an item, a trigger, a batch header or a
/// two-step batch alike: 1 to 2048 characters, no control character. Made only by
/// [`IdempotencyKey::parse`] (also when read back from a command), so a key that exists
/// is a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

/// Why a text is not an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Empty or longer than 2048 characters.
    Length,
    /// It holds a control character (NUL, CR, LF, ...).
    ControlCharacters,
}

impl KeyError {
    /// The reason a validation error gives, for a key sent as a JSON string.
    pub fn reason(self) -> &'static str {
        match self {
            KeyError::Length => "expected a string of 1 to 2048 characters",
            KeyError::ControlCharacters => NO_CONTROL_CHARACTERS,
        }
    }
}

impl IdempotencyKey {
    pub fn parse(text: impl Into<String>) -> Result<IdempotencyKey, KeyError> {
        let text = text.into();
        if !(1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&text.chars().count()) {
            return Err(KeyError::Length);
        }
        if has_control_characters(&text) {
            return Err(KeyError::ControlCharacters);
        }
        Ok(IdempotencyKey(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for IdempotencyKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = String;

    fn try_from(text: String) -> Result<IdempotencyKey, String> {
        IdempotencyKey::parse(text).map_err(|e| format!("idempotency key: {}", e.reason()))
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> String {
        key.0
    }
}

/// A stored key and what its run has become.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldKey {
    pub run_id: String,
    pub expires_at: Millis,
    pub run_status: RunStatus,
}

impl HeldKey {
    /// A key holds until its TTL passes or its run ends in a releasing status.
    pub fn holds(&self, now: Millis) -> bool {
        self.expires_at > now && !self.run_status.releases_idempotency_key()
    }
}

/// What one item of a batch comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemOutcome {
    pub run_id: String,
    /// `true` when the item creates this run; `false` when it reuses one (cached).
    pub created: bool,
}

/// Decides each item's run. `keys[i]` is item i's idempotency key, `fresh_ids[i]` the id
/// it gets if it creates a run, and `held` the stored keys among them.
///
/// Two items of one batch with the same key share one run, the first item's.
pub fn plan_items(
    keys: &[Option<&str>],
    fresh_ids: &[String],
    held: &HashMap<String, HeldKey>,
    now: Millis,
) -> Vec<ItemOutcome> {
    debug_assert_eq!(keys.len(), fresh_ids.len());
    let mut in_batch: HashMap<&str, usize> = HashMap::new();
    let mut outcomes: Vec<ItemOutcome> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let outcome = match key {
            None => ItemOutcome {
                run_id: fresh_ids[i].clone(),
                created: true,
            },
            Some(key) => {
                if let Some(&first) = in_batch.get(key) {
                    ItemOutcome {
                        run_id: outcomes[first].run_id.clone(),
                        created: false,
                    }
                } else {
                    in_batch.insert(key, i);
                    match held.get(*key).filter(|h| h.holds(now)) {
                        Some(h) => ItemOutcome {
                            run_id: h.run_id.clone(),
                            created: false,
                        },
                        None => ItemOutcome {
                            run_id: fresh_ids[i].clone(),
                            created: true,
                        },
                    }
                }
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

/// What a batch-level `idempotency-key` header comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchKeyDecision {
    /// No live batch holds the key: create the batch and record the key.
    Fresh,
    /// The same request again: answer with the stored batch.
    Replay { batch_id: String },
    /// The key belongs to a batch with another body.
    Conflict,
}

/// A stored batch-level key.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldBatchKey {
    pub batch_id: String,
    pub body_hash: String,
    pub expires_at: Millis,
}

pub fn decide_batch_key(
    held: Option<&HeldBatchKey>,
    body_hash: &str,
    now: Millis,
) -> BatchKeyDecision {
    match held {
        Some(h) if h.expires_at > now => {
            if h.body_hash == body_hash {
                BatchKeyDecision::Replay {
                    batch_id: h.batch_id.clone(),
                }
            } else {
                BatchKeyDecision::Conflict
            }
        }
        _ => BatchKeyDecision::Fresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_000_000;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("run_new{i}")).collect()
    }

    fn held(run: &str, expires_at: Millis, status: RunStatus) -> HeldKey {
        HeldKey {
            run_id: run.into(),
            expires_at,
            run_status: status,
        }
    }

    fn outcome(run: &str, created: bool) -> ItemOutcome {
        ItemOutcome {
            run_id: run.into(),
            created,
        }
    }

    #[test]
    fn a_key_has_1_to_2048_characters_and_no_control_character() {
        assert_eq!(IdempotencyKey::parse("k").map(|k| k.len()), Ok(1));
        assert!(
            IdempotencyKey::parse("é".repeat(2048)).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Length));
        assert_eq!(
            IdempotencyKey::parse("k".repeat(2049)),
            Err(KeyError::Length)
        );
        for bad in ["a\u{0}b", "a\r\nb", "tab\there", "\u{7f}"] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(KeyError::ControlCharacters),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_key_read_back_from_a_command_is_checked_too() {
        let key: IdempotencyKey = serde_json::from_str(r#""greet-ada""#).unwrap();
        assert_eq!(key.as_str(), "greet-ada");
        assert_eq!(serde_json::to_string(&key).unwrap(), r#""greet-ada""#);
        assert!(serde_json::from_str::<IdempotencyKey>(r#""""#).is_err());
        assert!(serde_json::from_str::<IdempotencyKey>(r#""a\u0000b""#).is_err());
    }

    #[test]
    fn items_without_keys_always_create() {
        let plan = plan_items(&[None, None], &ids(2), &HashMap::new(), NOW);
        assert_eq!(plan, [outcome("run_new0", true), outcome("run_new1", true)]);
    }

    #[test]
    fn a_key_repeated_inside_a_batch_maps_to_one_run() {
        let plan = plan_items(
            &[Some("k"), None, Some("k"), Some("j"), Some("k")],
            &ids(5),
            &HashMap::new(),
            NOW,
        );
        assert_eq!(
            plan,
            [
                outcome("run_new0", true),
                outcome("run_new1", true),
                outcome("run_new0", false),
                outcome("run_new3", true),
                outcome("run_new0", false),
            ]
        );
    }

    #[test]
    fn a_live_key_returns_its_run() {
        let stored = HashMap::from([("k".to_owned(), held("run_old", NOW + 1, RunStatus::Queued))]);
        let plan = plan_items(&[Some("k"), Some("k")], &ids(2), &stored, NOW);
        assert_eq!(plan, [outcome("run_old", false), outcome("run_old", false)]);
    }

    #[test]
    fn completed_and_canceled_runs_keep_their_key() {
        for status in [
            RunStatus::Completed,
            RunStatus::Canceled,
            RunStatus::Executing,
            RunStatus::Delayed,
        ] {
            let stored = HashMap::from([("k".to_owned(), held("run_old", NOW + 1, status))]);
            assert_eq!(
                plan_items(&[Some("k")], &ids(1), &stored, NOW),
                [outcome("run_old", false)],
                "{status:?}"
            );
        }
    }

    #[test]
    fn expired_keys_and_failed_runs_release_the_key() {
        let cases = [
            held("run_old", NOW, RunStatus::Queued),
            held("run_old", NOW - 1, RunStatus::Completed),
            held("run_old", NOW + 1, RunStatus::Failed),
            held("run_old", NOW + 1, RunStatus::Crashed),
            held("run_old", NOW + 1, RunStatus::SystemFailure),
            held("run_old", NOW + 1, RunStatus::TimedOut),
            held("run_old", NOW + 1, RunStatus::Expired),
            held("run_old", NOW + 1, RunStatus::Interrupted),
        ];
        for h in cases {
            let stored = HashMap::from([("k".to_owned(), h.clone())]);
            assert_eq!(
                plan_items(&[Some("k")], &ids(1), &stored, NOW),
                [outcome("run_new0", true)],
                "{h:?}"
            );
        }
    }

    #[test]
    fn batch_keys_replay_the_same_body_and_refuse_another() {
        let stored = HeldBatchKey {
            batch_id: "batch_1".into(),
            body_hash: "h1".into(),
            expires_at: NOW + 10,
        };
        assert_eq!(decide_batch_key(None, "h1", NOW), BatchKeyDecision::Fresh);
        assert_eq!(
            decide_batch_key(Some(&stored), "h1", NOW),
            BatchKeyDecision::Replay {
                batch_id: "batch_1".into()
            }
        );
        assert_eq!(
            decide_batch_key(Some(&stored), "h2", NOW),
            BatchKeyDecision::Conflict
        );
        assert_eq!(
            decide_batch_key(Some(&stored), "h2", NOW + 10),
            BatchKeyDecision::Fresh
        );
    }
}
