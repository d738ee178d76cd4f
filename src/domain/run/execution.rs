//! Rules of executing a run: lifecycle transitions, retry backoff, the signed call to the
//! task's endpoint, and batch status.

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::domain::basics::time::Millis;
use crate::domain::config::RetryPolicy;
use crate::domain::run::status::RunStatus;

/// The largest task output kept; a larger answer fails the attempt.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// How long past `maxDuration` a lease outlives its attempt before it is reclaimed.
pub const LEASE_MARGIN_MS: u64 = 30_000;
/// How far a signature's timestamp may be from the verifier's clock.
pub const SIGNATURE_TOLERANCE_MS: i64 = 5 * 60 * 1000;

impl RunStatus {
    /// The lifecycle of docs/API.md section 3. Final statuses never change.
    pub fn can_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        match self {
            Delayed => matches!(next, Queued | Canceled | Expired),
            Queued => matches!(next, Executing | Canceled | Expired),
            Executing => matches!(
                next,
                Completed | Failed | Reattempting | Canceled | Crashed | SystemFailure | TimedOut
            ),
            Reattempting => matches!(next, Executing | Canceled | Failed),
            _ => false,
        }
    }
}

/// The delay before the attempt after failed attempt number `attempt` (1-based):
/// `minTimeoutInMs × factor^(attempt-1)`, times a random 1..2 when `randomize`, capped at
/// `maxTimeoutInMs`. `jitter` is a uniform random number in [0, 1).
pub fn backoff_ms(policy: &RetryPolicy, attempt: u32, jitter: f64) -> u64 {
    let exponent = attempt.saturating_sub(1).min(64) as i32;
    let mut delay = policy.min_timeout_ms as f64 * policy.factor.powi(exponent);
    if policy.randomize {
        delay *= 1.0 + jitter.clamp(0.0, 1.0);
    }
    delay.min(policy.max_timeout_ms as f64).max(0.0) as u64
}

/// A run as the start of an attempt finds it in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartState {
    pub status: RunStatus,
    pub attempt_count: u32,
    /// The lease whose holder last started an attempt, if one is running.
    pub lease_token: Option<u64>,
    /// The end of a `QUEUED` run's TTL.
    pub expires_at: Option<Millis>,
    /// When a `REATTEMPTING` run's backoff ends.
    pub retry_at: Option<Millis>,
}

/// What the holder of lease `token` may do with a run: the compare-and-set that makes an
/// attempt start at most once (invariant 5, docs/ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartDecision {
    /// Start attempt `attempt_count + 1` under this lease.
    Start,
    /// This lease's holder started attempt `attempt` already (it restarted since).
    AlreadyStarted { attempt: u32 },
    /// Its TTL passed while it waited: it becomes `EXPIRED`.
    Expire,
    /// Admitted before its backoff ended (an offer that waited behind the lease of the
    /// attempt that failed): it must come back at `at`.
    TooEarly { at: Millis },
    /// It may not start (cancelled, expired, finished, or running under another lease).
    NotStartable,
}

/// Decides the start of an attempt; `slack_ms` is how early a retry may start (clock skew
/// between objects).
pub fn start_decision(
    run: &StartState,
    token: u64,
    now: Millis,
    slack_ms: Millis,
) -> StartDecision {
    match run.status {
        RunStatus::Executing if run.lease_token == Some(token) => StartDecision::AlreadyStarted {
            attempt: run.attempt_count,
        },
        RunStatus::Queued if run.expires_at.is_some_and(|at| at <= now) => StartDecision::Expire,
        RunStatus::Reattempting if run.retry_at.is_some_and(|at| at > now + slack_ms) => {
            StartDecision::TooEarly {
                at: run.retry_at.unwrap_or(now),
            }
        }
        status if status.can_become(RunStatus::Executing) => StartDecision::Start,
        _ => StartDecision::NotStartable,
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// `REATTEMPTING` until `at`, then queued again.
    Retry { at: Millis },
    /// `FAILED`: no attempts left.
    Fail,
}

pub fn after_failure(
    attempt: u32,
    max_attempts: u32,
    policy: &RetryPolicy,
    jitter: f64,
    now: Millis,
) -> AfterFailure {
    if attempt >= max_attempts {
        AfterFailure::Fail
    } else {
        AfterFailure::Retry {
            at: now.saturating_add(backoff_ms(policy, attempt, jitter) as i64),
        }
    }
}

/// A batch's status from its runs' statuses (v1 and v2 batch endpoints).
pub fn batch_status(statuses: &[RunStatus]) -> &'static str {
    let waiting = |s: &RunStatus| matches!(s, RunStatus::Delayed | RunStatus::Queued);
    if statuses.iter().all(waiting) {
        "PENDING"
    } else if !statuses.iter().all(|s| s.is_final()) {
        "PROCESSING"
    } else if statuses.iter().any(|s| s.is_failed()) {
        "PARTIAL_FAILED"
    } else {
        "COMPLETED"
    }
}

/// A two-step batch's status follows the processing of its items: `PENDING` before any
/// arrived, `PROCESSING` while some are missing, `COMPLETED` once all became runs,
/// `PARTIAL_FAILED` once all arrived but some could not become runs, `ABORTED` when the
/// batch was not sealed in time (the runs it had made go on).
pub fn processing_status(
    received: usize,
    run_count: usize,
    errors: usize,
    aborted: bool,
) -> &'static str {
    if aborted {
        "ABORTED"
    } else if received == 0 {
        "PENDING"
    } else if received < run_count {
        "PROCESSING"
    } else if errors > 0 {
        "PARTIAL_FAILED"
    } else {
        "COMPLETED"
    }
}

/// The JSON body POSTed to a task's endpoint for one attempt.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCall<'a> {
    pub id: &'a str,
    pub task: &'a str,
    pub attempt: u32,
    pub payload: Option<&'a RawValue>,
    pub payload_type: &'a str,
    pub context: Option<&'a RawValue>,
    pub tags: &'a [String],
    pub batch_id: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub queue: &'a str,
    pub concurrency_key: Option<&'a str>,
    pub created_at: String,
    /// Attempts the run may make in all: the task package calls `onFailure` on the last.
    pub max_attempts: u32,
    pub is_test: bool,
    pub environment: EnvironmentRef,
}

/// The environment of a task call: `{"type": "DEVELOPMENT" | "STAGING" | "PRODUCTION" |
/// "PREVIEW"}`, as Trigger.dev's `ctx.environment` has it.
#[derive(Debug, Serialize)]
pub struct EnvironmentRef {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// Request headers of a task call.
pub const HEADER_RUN_ID: &str = "x-trigger-run-id";
/// When the attempt's `maxDuration` ends, in Unix milliseconds: past it the worker
/// abandons the call and fails the attempt.
pub const HEADER_DEADLINE: &str = "x-trigger-deadline";
pub const HEADER_ATTEMPT: &str = "x-trigger-attempt";
pub const HEADER_TIMESTAMP: &str = "x-trigger-timestamp";
pub const HEADER_SIGNATURE: &str = "x-trigger-signature";

/// `v1=` and the hex HMAC-SHA256, under `secret`, of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: Millis, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// Why a task call was refused by [`verify`].
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    Malformed,
    Stale,
    BadSignature,
}

/// What a task endpoint does with a call: checks the timestamp is recent and the
/// signature matches, comparing in constant time.
pub fn verify(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: Millis,
) -> Result<(), VerifyError> {
    let timestamp: Millis = timestamp_header
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed)?;
    if (now - timestamp).abs() > SIGNATURE_TOLERANCE_MS {
        return Err(VerifyError::Stale);
    }
    let expected = sign(secret, timestamp, body);
    let given = signature_header.trim().as_bytes();
    let same_length = given.len() == expected.len();
    let diff = expected
        .as_bytes()
        .iter()
        .zip(given)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if same_length && std::hint::black_box(diff) == 0 {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunStatus::*;

    const ALL: [RunStatus; 12] = RunStatus::ALL;

    fn start_state(status: RunStatus) -> StartState {
        StartState {
            status,
            attempt_count: 1,
            lease_token: None,
            expires_at: None,
            retry_at: None,
        }
    }

    #[test]
    fn an_attempt_starts_only_for_a_startable_run_and_once_per_lease() {
        let now = 10_000;
        let queued = start_state(RunStatus::Queued);
        assert_eq!(start_decision(&queued, 7, now, 1000), StartDecision::Start);
        let running = StartState {
            lease_token: Some(7),
            ..start_state(RunStatus::Executing)
        };
        assert_eq!(
            start_decision(&running, 7, now, 1000),
            StartDecision::AlreadyStarted { attempt: 1 }
        );
        // Another lease never starts a run that is executing.
        assert_eq!(
            start_decision(&running, 8, now, 1000),
            StartDecision::NotStartable
        );
        for status in [
            RunStatus::Delayed,
            RunStatus::Completed,
            RunStatus::Canceled,
            RunStatus::Expired,
            RunStatus::Failed,
        ] {
            assert_eq!(
                start_decision(&start_state(status), 7, now, 1000),
                StartDecision::NotStartable,
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_queued_run_past_its_ttl_expires_instead_of_starting() {
        let run = StartState {
            expires_at: Some(10_000),
            ..start_state(RunStatus::Queued)
        };
        assert_eq!(start_decision(&run, 1, 10_000, 1000), StartDecision::Expire);
        assert_eq!(start_decision(&run, 1, 9_999, 1000), StartDecision::Start);
    }

    #[test]
    fn a_retry_starts_no_earlier_than_its_backoff_less_the_slack() {
        let run = StartState {
            retry_at: Some(10_000),
            ..start_state(RunStatus::Reattempting)
        };
        assert_eq!(
            start_decision(&run, 1, 8_999, 1000),
            StartDecision::TooEarly { at: 10_000 }
        );
        assert_eq!(start_decision(&run, 1, 9_000, 1000), StartDecision::Start);
    }

    #[test]
    fn legal_transitions_follow_the_lifecycle() {
        for (from, to) in [
            (Delayed, Queued),
            (Delayed, Expired),
            (Queued, Executing),
            (Queued, Expired),
            (Executing, Completed),
            (Executing, Reattempting),
            (Executing, Failed),
            (Reattempting, Executing),
            (Delayed, Canceled),
            (Queued, Canceled),
            (Executing, Canceled),
            (Reattempting, Canceled),
        ] {
            assert!(from.can_become(to), "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn illegal_transitions_are_refused() {
        for (from, to) in [
            (Queued, Completed),
            (Delayed, Executing),
            (Executing, Queued),
            (Executing, Expired),
            (Reattempting, Expired),
            (Completed, Canceled),
            (Canceled, Queued),
            (Failed, Reattempting),
            (Expired, Queued),
        ] {
            assert!(!from.can_become(to), "{from:?} -> {to:?}");
        }
        for from in ALL.into_iter().filter(|s| s.is_final()) {
            assert!(
                ALL.iter().all(|to| !from.can_become(*to)),
                "{from:?} is final"
            );
        }
    }

    #[test]
    fn backoff_grows_by_the_factor_within_the_cap() {
        let policy = RetryPolicy {
            factor: 2.0,
            min_timeout_ms: 1000,
            max_timeout_ms: 10_000,
            randomize: false,
        };
        let delays: Vec<u64> = (1..=6).map(|a| backoff_ms(&policy, a, 0.5)).collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 10_000, 10_000]);
        let jittered = RetryPolicy {
            randomize: true,
            ..policy
        };
        assert_eq!(backoff_ms(&jittered, 1, 0.0), 1000);
        assert_eq!(backoff_ms(&jittered, 1, 0.5), 1500);
        assert_eq!(
            backoff_ms(&jittered, 4, 0.9),
            10_000,
            "jitter never passes the cap"
        );
        assert!(
            backoff_ms(&jittered, 1000, 0.99) <= 10_000,
            "huge attempt numbers stay bounded"
        );
    }

    #[test]
    fn the_last_attempt_fails_the_run() {
        let policy = RetryPolicy {
            factor: 2.0,
            min_timeout_ms: 100,
            max_timeout_ms: 1000,
            randomize: false,
        };
        assert_eq!(
            after_failure(1, 3, &policy, 0.0, 10),
            AfterFailure::Retry { at: 110 }
        );
        assert_eq!(
            after_failure(2, 3, &policy, 0.0, 10),
            AfterFailure::Retry { at: 210 }
        );
        assert_eq!(after_failure(3, 3, &policy, 0.0, 10), AfterFailure::Fail);
        assert_eq!(after_failure(1, 1, &policy, 0.0, 10), AfterFailure::Fail);
    }

    #[test]
    fn batch_status_follows_its_runs() {
        assert_eq!(batch_status(&[Queued, Delayed]), "PENDING");
        assert_eq!(batch_status(&[Executing, Queued]), "PROCESSING");
        assert_eq!(batch_status(&[Completed, Queued]), "PROCESSING");
        assert_eq!(batch_status(&[Completed, Canceled]), "COMPLETED");
        assert_eq!(batch_status(&[Completed, Failed]), "PARTIAL_FAILED");
        assert_eq!(batch_status(&[Expired]), "PARTIAL_FAILED");
    }

    #[test]
    fn two_step_batch_status_follows_its_items() {
        assert_eq!(processing_status(0, 3, 0, false), "PENDING");
        assert_eq!(processing_status(2, 3, 0, false), "PROCESSING");
        assert_eq!(processing_status(3, 3, 0, false), "COMPLETED");
        assert_eq!(processing_status(3, 3, 1, false), "PARTIAL_FAILED");
        assert_eq!(processing_status(2, 3, 0, true), "ABORTED");
    }

    #[test]
    fn hmac_matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        // A fixed vector, computed independently (Python's hmac module), so verifiers in
        // other languages can be checked against it.
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000_000, br#"{"id":"run_1"}"#),
            "v1=236c0e17226f84e3088b7c301bf0fe8019778bf54f18ed07b2b43e38a212cca7"
        );
        let body = br#"{"id":"run_1"}"#;
        let sig = sign(b"secret", 1000, body);
        assert_eq!(verify(b"secret", "1000", &sig, body, 2000), Ok(()));
        assert_eq!(
            verify(b"other", "1000", &sig, body, 2000),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"secret", "1000", &sig, br#"{"id":"run_2"}"#, 2000),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"secret", "1001", &sig, body, 2000),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"secret", "1000", &sig[..10], body, 2000),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"secret", "x", &sig, body, 2000),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(
                b"secret",
                "1000",
                &sig,
                body,
                1000 + SIGNATURE_TOLERANCE_MS + 1
            ),
            Err(VerifyError::Stale)
        );
    }
}
