//! Run statuses and the two vocabularies the SDKs accept.

use serde::{Deserialize, Serialize};

/// A run's status, in the 3.x vocabulary that the store records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Delayed,
    Queued,
    Executing,
    Reattempting,
    Completed,
    Canceled,
    Failed,
    Crashed,
    SystemFailure,
    TimedOut,
    Expired,
    Interrupted,
}

/// Which status names a caller understands, chosen by `x-trigger-api-version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusVocabulary {
    /// SDK 3.x (no version header).
    V3,
    /// SDK 4.x (`x-trigger-api-version: 2025-07-16` or later).
    V4,
}

impl StatusVocabulary {
    /// SDK 4.x sends a date-like API version; 3.x sends none.
    pub fn from_api_version(header: Option<&str>) -> StatusVocabulary {
        match header.map(str::trim) {
            Some(v) if is_date(v) && v >= "2025-07-16" => StatusVocabulary::V4,
            _ => StatusVocabulary::V3,
        }
    }
}

/// `YYYY-MM-DD`, digits only, so that a plain string comparison orders versions.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 12] = [
        RunStatus::Delayed,
        RunStatus::Queued,
        RunStatus::Executing,
        RunStatus::Reattempting,
        RunStatus::Completed,
        RunStatus::Canceled,
        RunStatus::Failed,
        RunStatus::Crashed,
        RunStatus::SystemFailure,
        RunStatus::TimedOut,
        RunStatus::Expired,
        RunStatus::Interrupted,
    ];

    /// The stored (3.x) name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Delayed => "DELAYED",
            RunStatus::Queued => "QUEUED",
            RunStatus::Executing => "EXECUTING",
            RunStatus::Reattempting => "REATTEMPTING",
            RunStatus::Completed => "COMPLETED",
            RunStatus::Canceled => "CANCELED",
            RunStatus::Failed => "FAILED",
            RunStatus::Crashed => "CRASHED",
            RunStatus::SystemFailure => "SYSTEM_FAILURE",
            RunStatus::TimedOut => "TIMED_OUT",
            RunStatus::Expired => "EXPIRED",
            RunStatus::Interrupted => "INTERRUPTED",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }

    /// The name a caller of `vocabulary` accepts.
    pub fn name_for(self, vocabulary: StatusVocabulary) -> &'static str {
        match (vocabulary, self) {
            (StatusVocabulary::V4, RunStatus::Reattempting) => "EXECUTING",
            (StatusVocabulary::V4, RunStatus::Interrupted) => "FAILED",
            _ => self.as_str(),
        }
    }

    /// A run in this status waits at its queue's gate or holds a slot there (a retry
    /// waits there for its backoff): cancelling it frees that place.
    pub fn has_gate_place(self) -> bool {
        matches!(
            self,
            RunStatus::Queued | RunStatus::Executing | RunStatus::Reattempting
        )
    }

    /// No further transition leaves a final status.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RunStatus::Delayed | RunStatus::Queued | RunStatus::Executing | RunStatus::Reattempting
        )
    }

    /// A run that ended like this gives up its idempotency key (docs/API.md section 2);
    /// `COMPLETED` and `CANCELED` runs keep theirs.
    pub fn releases_idempotency_key(self) -> bool {
        matches!(
            self,
            RunStatus::Failed
                | RunStatus::Crashed
                | RunStatus::SystemFailure
                | RunStatus::TimedOut
                | RunStatus::Expired
                | RunStatus::Interrupted
        )
    }

    pub fn is_success(self) -> bool {
        self == RunStatus::Completed
    }

    pub fn is_failed(self) -> bool {
        self.releases_idempotency_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RunStatus; 12] = RunStatus::ALL;
    #[test]
    fn names_round_trip() {
        for status in ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("PENDING"), None);
    }

    #[test]
    fn v4_callers_never_see_names_outside_their_set() {
        let v4 = [
            "PENDING_VERSION",
            "QUEUED",
            "DEQUEUED",
            "EXECUTING",
            "WAITING",
            "COMPLETED",
            "CANCELED",
            "FAILED",
            "CRASHED",
            "SYSTEM_FAILURE",
            "DELAYED",
            "EXPIRED",
            "TIMED_OUT",
        ];
        let v3 = [
            "QUEUED",
            "EXECUTING",
            "COMPLETED",
            "CANCELED",
            "FAILED",
            "CRASHED",
            "SYSTEM_FAILURE",
            "DELAYED",
            "EXPIRED",
            "TIMED_OUT",
            "WAITING_FOR_DEPLOY",
            "REATTEMPTING",
            "FROZEN",
            "INTERRUPTED",
        ];
        for status in ALL {
            assert!(
                v4.contains(&status.name_for(StatusVocabulary::V4)),
                "{status:?}"
            );
            assert!(
                v3.contains(&status.name_for(StatusVocabulary::V3)),
                "{status:?}"
            );
        }
    }

    #[test]
    fn vocabulary_follows_the_api_version_header() {
        assert_eq!(
            StatusVocabulary::from_api_version(None),
            StatusVocabulary::V3
        );
        assert_eq!(
            StatusVocabulary::from_api_version(Some("2025-07-16")),
            StatusVocabulary::V4
        );
        assert_eq!(
            StatusVocabulary::from_api_version(Some("2026-01-01")),
            StatusVocabulary::V4
        );
        assert_eq!(
            StatusVocabulary::from_api_version(Some("2024-04")),
            StatusVocabulary::V3
        );
        assert_eq!(
            StatusVocabulary::from_api_version(Some("junk")),
            StatusVocabulary::V3
        );
        assert_eq!(
            StatusVocabulary::from_api_version(Some("abcdefghij")),
            StatusVocabulary::V3
        );
    }

    #[test]
    fn failed_endings_release_the_key_and_successes_keep_it() {
        let releasing: Vec<_> = ALL
            .into_iter()
            .filter(|s| s.releases_idempotency_key())
            .collect();
        assert_eq!(
            releasing,
            [
                RunStatus::Failed,
                RunStatus::Crashed,
                RunStatus::SystemFailure,
                RunStatus::TimedOut,
                RunStatus::Expired,
                RunStatus::Interrupted
            ]
        );
        assert!(releasing.iter().all(|s| s.is_final()));
        assert!(RunStatus::Completed.is_final() && RunStatus::Canceled.is_final());
        assert!(!RunStatus::Queued.is_final() && !RunStatus::Reattempting.is_final());
    }
}
