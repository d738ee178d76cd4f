//! Activity (docs/API.md section 4): runs created, completed and failed per minute, for
//! the dashboard's chart. Each store tallies its own in memory ([`Tally`]) and writes a
//! minute's counts as one row when the minute is over (so a run costs no row written: at
//! most one per store and minute); the edge sums the stores' minutes into buckets of the
//! period asked for ([`buckets`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::api::error::ApiError;
use crate::domain::basics::time::{format_iso, Millis};

pub const MINUTE_MS: Millis = 60_000;
/// How long a store keeps its minutes.
pub const KEPT_MS: Millis = 86_400_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub created: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.created += other.created;
        self.completed += other.completed;
        self.failed += other.failed;
    }
}

/// What happened to runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Created(u64),
    Completed,
    Failed,
}

/// The minute (its first millisecond) of `at`.
pub fn minute_of(at: Millis) -> Millis {
    at - at.rem_euclid(MINUTE_MS)
}

/// A store's counts not yet written, by minute.
#[derive(Debug, Default)]
pub struct Tally {
    minutes: BTreeMap<Millis, Counts>,
}

impl Tally {
    pub fn record(&mut self, at: Millis, event: Event) {
        let counts = self.minutes.entry(minute_of(at)).or_default();
        match event {
            Event::Created(n) => counts.created += n,
            Event::Completed => counts.completed += 1,
            Event::Failed => counts.failed += 1,
        }
    }

    /// The minutes that ended before `now`, taken out to be written.
    pub fn take_ended(&mut self, now: Millis) -> Vec<(Millis, Counts)> {
        let current = minute_of(now);
        let open = self.minutes.split_off(&current);
        std::mem::replace(&mut self.minutes, open)
            .into_iter()
            .collect()
    }

    /// The counts not yet written, from `since` on.
    pub fn pending(&self, since: Millis) -> Vec<(Millis, Counts)> {
        self.minutes
            .range(minute_of(since)..)
            .map(|(m, c)| (*m, *c))
            .collect()
    }
}

/// The chart's span: the last hour by minute, or the last day by hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    pub fn span_ms(self) -> Millis {
        match self {
            Period::Hour => 3_600_000,
            Period::Day => 86_400_000,
        }
    }

    pub fn bucket_ms(self) -> Millis {
        match self {
            Period::Hour => MINUTE_MS,
            Period::Day => 3_600_000,
        }
    }
}

/// `?period=1h|1d` (default `1h`).
pub fn parse_period(query: &str) -> Result<Period, ApiError> {
    let value = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "period")
        .map(|(_, value)| value);
    match value {
        None | Some("1h") => Ok(Period::Hour),
        Some("1d") => Ok(Period::Day),
        Some(_) => Err(ApiError::validation("period", "expected 1h or 1d")),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub at: String,
    pub created: u64,
    pub completed: u64,
    pub failed: u64,
}

/// `GET /api/v1/activity`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityView {
    pub period: &'static str,
    pub bucket_ms: Millis,
    pub buckets: Vec<Bucket>,
}

/// The stores' minutes summed into the period's buckets, oldest first, the current one
/// last, every bucket present (zeros where nothing happened).
pub fn buckets(minutes: &[(Millis, Counts)], now: Millis, period: Period) -> ActivityView {
    let size = period.bucket_ms();
    let last = now - now.rem_euclid(size);
    let count = period.span_ms() / size;
    let first = last - (count - 1) * size;
    let mut sums = vec![Counts::default(); count as usize];
    for (minute, counts) in minutes {
        if *minute >= first && *minute < last + size {
            sums[((minute - first) / size) as usize].add(*counts);
        }
    }
    ActivityView {
        period: match period {
            Period::Hour => "1h",
            Period::Day => "1d",
        },
        bucket_ms: size,
        buckets: sums
            .into_iter()
            .enumerate()
            .map(|(i, c)| Bucket {
                at: format_iso(first + i as Millis * size),
                created: c.created,
                completed: c.completed,
                failed: c.failed,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_800_000_000_000; // a whole minute

    #[test]
    fn a_tally_hands_over_only_minutes_that_ended() {
        let mut tally = Tally::default();
        tally.record(T + 1_000, Event::Created(100));
        tally.record(T + 59_999, Event::Completed);
        tally.record(T + 60_000, Event::Failed);
        assert!(tally.take_ended(T + 30_000).is_empty());
        let ended = tally.take_ended(T + 61_000);
        assert_eq!(
            ended,
            [(
                T,
                Counts {
                    created: 100,
                    completed: 1,
                    failed: 0
                }
            )]
        );
        assert_eq!(
            tally.pending(T),
            [(
                T + 60_000,
                Counts {
                    created: 0,
                    completed: 0,
                    failed: 1
                }
            )]
        );
        assert!(tally.take_ended(T + 61_000).is_empty(), "handed over once");
    }

    #[test]
    fn minutes_sum_into_the_periods_buckets_with_zeros_between() {
        let now = T + 3_600_000 + 5_000;
        let c = |created| Counts {
            created,
            completed: 0,
            failed: 0,
        };
        let minutes = [
            (T + 60_000, c(1)),
            (T + 60_000, c(2)),
            (now - 5_000, c(4)),
            (T - 86_400_000, c(99)),
        ];
        let hour = buckets(&minutes, now, Period::Hour);
        assert_eq!(hour.buckets.len(), 60);
        assert_eq!(hour.buckets[0].at, format_iso(T + 60_000));
        assert_eq!(hour.buckets[0].created, 3);
        assert_eq!(hour.buckets[59].created, 4);
        assert_eq!(hour.buckets.iter().map(|b| b.created).sum::<u64>(), 7);
        let day = buckets(&minutes, now, Period::Day);
        assert_eq!((day.buckets.len(), day.bucket_ms), (24, 3_600_000));
        assert_eq!(
            day.buckets.iter().map(|b| b.created).sum::<u64>(),
            7,
            "a day-old minute is out"
        );
        assert_eq!(parse_period("period=1d").unwrap(), Period::Day);
        assert_eq!(parse_period("").unwrap(), Period::Hour);
        assert_eq!(parse_period("period=2h").unwrap_err().status(), 400);
    }
}
