//! Cron expressions as Trigger.dev accepts them (five fields: minute, hour, day of month,
//! month, day of week; names, ranges, steps, lists, `L`, `#`, `W`), parsed and searched by
//! the `croner` crate, and evaluated in an IANA time zone given as a function of offsets
//! ([`Offsets`]): the runtime's `Intl` data on Workers, the `chrono-tz` database in tests.
//!
//! Daylight saving time follows croner's rules (the Open Cron Pattern Specification): a
//! fixed-time job (`30 2 * * *`) whose wall-clock time falls in the hour the clock skips
//! runs at the first instant after the jump, and runs once, at the earlier instant, in the
//! hour that happens twice; an interval job (`*/15 * * * *`) skips the missing times and
//! runs at both instants of a repeated one.

use std::cmp::Ordering;

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution, Weekday};

use crate::domain::basics::time::{civil_from_days, days_from_civil, Millis};

/// A time zone as the schedules need it: the offset of local time from UTC at an instant.
pub trait Offsets {
    /// Local time minus UTC, in seconds, at `utc_s` seconds since the epoch.
    fn offset_s(&self, utc_s: i64) -> i64;
}

/// Coordinated Universal Time, the default zone.
pub struct Utc;

impl Offsets for Utc {
    fn offset_s(&self, _utc_s: i64) -> i64 {
        0
    }
}

/// The offset in an `Intl` long offset name (`GMT`, `GMT+05:30`, `GMT-04:56:02`), in
/// seconds.
pub fn parse_gmt_offset(text: &str) -> Option<i64> {
    let rest = text.strip_prefix("GMT")?;
    if rest.is_empty() {
        return Some(0);
    }
    let sign = match rest.as_bytes()[0] {
        b'+' => 1,
        b'-' | 0xE2 => -1, // `-`, or U+2212 MINUS SIGN in some locales
        _ => return None,
    };
    let digits = rest.trim_start_matches(['+', '-', '\u{2212}']);
    let mut parts = digits.split(':').map(|p| p.parse::<i64>().ok());
    let hours = parts.next()??;
    let minutes = parts.next().unwrap_or(Some(0))?;
    let seconds = parts.next().unwrap_or(Some(0))?;
    if parts.next().is_some() || hours > 24 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60 + seconds))
}

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
}

/// Trigger.dev's words for an expression with a sixth (seconds) field.
pub const SECONDS_REFUSED: &str = "CRON expressions with seconds are not allowed";

impl CronSchedule {
    /// Parses a five-field expression; the error says what is wrong with it.
    pub fn parse(expression: &str) -> Result<CronSchedule, String> {
        if expression.trim().is_empty() {
            return Err("CRON expression is required".into());
        }
        if expression.split_whitespace().count() > 5 {
            return Err(SECONDS_REFUSED.into());
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        parser
            .parse(expression)
            .map(|cron| CronSchedule { cron })
            .map_err(|e| format!("Invalid CRON expression: {e}"))
    }

    /// The expression in words ("Every minute", "At 09:00 on Monday"…).
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    /// The first tick strictly after `after_ms`, whole seconds (none past year 9999).
    pub fn next_after(&self, zone: &dyn Offsets, after_ms: Millis) -> Option<Millis> {
        let start = Zoned::at(zone, after_ms.div_euclid(1000));
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        (next.utc_s < 253_402_300_800).then_some(next.utc_s * 1000)
    }

    /// The `n` ticks after `after_ms`.
    pub fn upcoming(&self, zone: &dyn Offsets, after_ms: Millis, n: usize) -> Vec<Millis> {
        let mut ticks = Vec::with_capacity(n);
        let mut at = after_ms;
        while ticks.len() < n {
            let Some(next) = self.next_after(zone, at) else {
                break;
            };
            ticks.push(next);
            at = next;
        }
        ticks
    }

    /// The latest tick in `(after_ms, now]`, if any: after a spell with nothing running,
    /// the schedule fires that one only, as Trigger.dev does. Looks back over growing
    /// windows, so a minutely schedule idle for a year costs a few searches, not 500,000.
    pub fn latest_due(&self, zone: &dyn Offsets, after_ms: Millis, now: Millis) -> Option<Millis> {
        const WINDOWS_S: [i64; 6] = [
            60,
            3_600,
            86_400,
            32 * 86_400,
            367 * 86_400,
            10_000 * 86_400,
        ];
        for window in WINDOWS_S {
            let start = after_ms.max(now - window * 1000);
            let Some(mut latest) = self.next_after(zone, start).filter(|t| *t <= now) else {
                if start == after_ms {
                    return None;
                }
                continue;
            };
            while let Some(next) = self.next_after(zone, latest).filter(|t| *t <= now) {
                latest = next;
            }
            return Some(latest);
        }
        None
    }
}

/// An instant with its zone, as croner searches over it.
#[derive(Clone)]
struct Zoned<'z> {
    utc_s: i64,
    offset_s: i64,
    zone: &'z dyn Offsets,
}

impl<'z> Zoned<'z> {
    fn at(zone: &'z dyn Offsets, utc_s: i64) -> Zoned<'z> {
        Zoned {
            utc_s,
            offset_s: zone.offset_s(utc_s),
            zone,
        }
    }

    fn local_s(&self) -> i64 {
        self.utc_s + self.offset_s
    }
}

impl CronDateTime for Zoned<'_> {
    fn to_civil(&self) -> CivilDateTime {
        let local = self.local_s();
        let (y, m, d) = civil_from_days(local.div_euclid(86_400));
        let secs = local.rem_euclid(86_400) as u32;
        CivilDateTime::new(
            CivilDate::from_parts_unchecked(y as i32, m, d),
            CivilTime::from_parts_unchecked(secs / 3600, secs / 60 % 60, secs % 60),
        )
    }

    fn civil_weekday(&self) -> Weekday {
        // 1970-01-01 was a Thursday.
        Weekday::from_days_from_sunday((self.local_s().div_euclid(86_400) + 4).rem_euclid(7) as u32)
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let days = days_from_civil(i64::from(civil.year()), civil.month(), civil.day());
        let local = days * 86_400
            + i64::from(civil.hour()) * 3600
            + i64::from(civil.minute()) * 60
            + i64::from(civil.second());
        Ok(resolve(self.zone, local).map(|utc_s| Zoned::at(self.zone, utc_s)))
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        Some(Zoned::at(self.zone, self.utc_s.checked_add(seconds)?))
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.utc_s.cmp(&other.utc_s)
    }
}

/// The instants (seconds) at which the zone's clock reads `local_s`: one, two (the clock
/// went back), or none (it jumped forward). Offsets a day either side bracket any single
/// transition, since no zone is more than 14 hours from UTC.
fn resolve(zone: &dyn Offsets, local_s: i64) -> Resolution<i64> {
    let [a, b] = [local_s - 86_400, local_s + 86_400].map(|probe| {
        let utc = local_s - zone.offset_s(probe);
        (local_s - zone.offset_s(utc) == utc).then_some(utc)
    });
    match (a, b) {
        (Some(a), Some(b)) if a != b => Resolution::Ambiguous(a.min(b), a.max(b)),
        (Some(one), _) | (None, Some(one)) => Resolution::Single(one),
        (None, None) => Resolution::Gap,
    }
}

trait MapResolution<T> {
    fn map<U>(self, f: impl Fn(T) -> U) -> Resolution<U>;
}

impl<T> MapResolution<T> for Resolution<T> {
    fn map<U>(self, f: impl Fn(T) -> U) -> Resolution<U> {
        match self {
            Resolution::Single(t) => Resolution::Single(f(t)),
            Resolution::Ambiguous(a, b) => Resolution::Ambiguous(f(a), f(b)),
            Resolution::Gap => Resolution::Gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Offset, TimeZone};
    use chrono_tz::Tz;

    use super::*;
    use crate::domain::basics::time::{format_iso, parse_iso};

    /// A zone from the IANA database, as the Workers runtime's `Intl` would give it.
    struct Iana(Tz);

    impl Offsets for Iana {
        fn offset_s(&self, utc_s: i64) -> i64 {
            let utc = chrono::DateTime::from_timestamp(utc_s, 0)
                .unwrap()
                .naive_utc();
            i64::from(
                self.0
                    .offset_from_utc_datetime(&utc)
                    .fix()
                    .local_minus_utc(),
            )
        }
    }

    fn zone(name: &str) -> Iana {
        Iana(name.parse().unwrap())
    }

    fn ms(iso: &str) -> Millis {
        parse_iso(iso).unwrap()
    }

    fn ticks(expr: &str, zone: &dyn Offsets, after: &str, n: usize) -> Vec<String> {
        let cron = CronSchedule::parse(expr).unwrap();
        cron.upcoming(zone, ms(after), n)
            .into_iter()
            .map(format_iso)
            .collect()
    }

    #[test]
    fn five_fields_parse_and_seconds_or_nonsense_are_refused_in_words() {
        for good in [
            "* * * * *",
            "0 * * * *",
            "*/15 9-17 * * MON-FRI",
            "0 0 L * *",
            "0 12 * * 5L",
            "30 2 1,15 JAN,JUL *",
            "0 0 * * 7",
            "@hourly",
        ] {
            assert!(CronSchedule::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            CronSchedule::parse("0 * * * * *").unwrap_err(),
            SECONDS_REFUSED
        );
        assert_eq!(
            CronSchedule::parse("  ").unwrap_err(),
            "CRON expression is required"
        );
        for bad in [
            "61 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "a b c d e",
            "* * *",
            "*/0 * * * *",
        ] {
            let e = CronSchedule::parse(bad).unwrap_err();
            assert!(e.starts_with("Invalid CRON expression"), "{bad}: {e}");
        }
    }

    #[test]
    fn intl_offset_names_read_as_seconds() {
        assert_eq!(parse_gmt_offset("GMT"), Some(0));
        assert_eq!(parse_gmt_offset("GMT+05:30"), Some(19_800));
        assert_eq!(parse_gmt_offset("GMT-04:00"), Some(-14_400));
        assert_eq!(parse_gmt_offset("GMT\u{2212}03:00"), Some(-10_800));
        assert_eq!(parse_gmt_offset("GMT-04:56:02"), Some(-17_762));
        assert_eq!(parse_gmt_offset("GMT+14:00"), Some(50_400));
        for bad in ["", "UTC", "GMT5", "GMT+5:99", "GMT+01:00:00:00"] {
            assert_eq!(parse_gmt_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn descriptions_are_words() {
        let d = CronSchedule::parse("0 * * * *").unwrap().describe();
        assert!(!d.is_empty() && d != "0 * * * *", "{d}");
    }

    #[test]
    fn in_utc_ticks_are_the_expressions_instants() {
        assert_eq!(
            ticks("*/15 * * * *", &Utc, "2026-01-01T00:07:30.500Z", 3),
            [
                "2026-01-01T00:15:00.000Z",
                "2026-01-01T00:30:00.000Z",
                "2026-01-01T00:45:00.000Z"
            ]
        );
        // Strictly after: a tick at the instant itself is not the next one.
        assert_eq!(
            ticks("0 * * * *", &Utc, "2026-01-01T01:00:00.000Z", 1),
            ["2026-01-01T02:00:00.000Z"]
        );
        // Day of month and day of week restricted together: either matches (Vixie cron).
        assert_eq!(
            ticks("0 0 13 * FRI", &Utc, "2026-02-01T00:00:00.000Z", 3),
            [
                "2026-02-06T00:00:00.000Z",
                "2026-02-13T00:00:00.000Z",
                "2026-02-20T00:00:00.000Z"
            ]
        );
        assert_eq!(
            ticks("0 0 L 2 *", &Utc, "2028-01-01T00:00:00.000Z", 1),
            ["2028-02-29T00:00:00.000Z"]
        );
    }

    #[test]
    fn a_daily_job_keeps_its_wall_clock_time_across_new_yorks_changes() {
        let ny = zone("America/New_York");
        // 09:00 local is 14:00Z in winter (EST, -5) and 13:00Z in summer (EDT, -4).
        assert_eq!(
            ticks("0 9 * * *", &ny, "2026-03-07T12:00:00.000Z", 3),
            [
                "2026-03-07T14:00:00.000Z",
                "2026-03-08T13:00:00.000Z",
                "2026-03-09T13:00:00.000Z"
            ]
        );
        // 2026-03-08 02:30 never happens (02:00 → 03:00): the job runs at the jump, 07:00Z.
        assert_eq!(
            ticks("30 2 * * *", &ny, "2026-03-07T00:00:00.000Z", 3),
            [
                "2026-03-07T07:30:00.000Z",
                "2026-03-08T07:00:00.000Z",
                "2026-03-09T06:30:00.000Z"
            ]
        );
        // 2026-11-01 01:30 happens twice (EDT, then EST): the job runs once, at the first.
        assert_eq!(
            ticks("30 1 * * *", &ny, "2026-10-31T12:00:00.000Z", 3),
            [
                "2026-11-01T05:30:00.000Z",
                "2026-11-02T06:30:00.000Z",
                "2026-11-03T06:30:00.000Z"
            ]
        );
    }

    #[test]
    fn an_hourly_job_in_london_skips_the_missing_hour_and_runs_in_both_repeated_ones() {
        let london = zone("Europe/London");
        // 2026-03-29 01:00 GMT → 02:00 BST: local 01:30 never happens.
        assert_eq!(
            ticks("30 * * * *", &london, "2026-03-29T00:00:00.000Z", 3),
            [
                "2026-03-29T00:30:00.000Z",
                "2026-03-29T01:30:00.000Z",
                "2026-03-29T02:30:00.000Z"
            ]
        );
        let local: Vec<String> = ticks("30 * * * *", &london, "2026-10-25T00:00:00.000Z", 3);
        // 2026-10-25 02:00 BST → 01:00 GMT: 01:30 BST (00:30Z) and 01:30 GMT (01:30Z).
        assert_eq!(
            local,
            [
                "2026-10-25T00:30:00.000Z",
                "2026-10-25T01:30:00.000Z",
                "2026-10-25T02:30:00.000Z"
            ]
        );
        // A fixed-time job at 01:30 runs once that night.
        assert_eq!(
            ticks("30 1 * * *", &london, "2026-10-24T12:00:00.000Z", 2),
            ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]
        );
    }

    #[test]
    fn zones_without_whole_hour_offsets_and_far_from_utc_are_exact() {
        assert_eq!(
            ticks(
                "0 0 * * *",
                &zone("Asia/Kolkata"),
                "2026-06-01T00:00:00.000Z",
                1
            ),
            ["2026-06-01T18:30:00.000Z"]
        );
        assert_eq!(
            ticks(
                "0 0 * * *",
                &zone("Pacific/Kiritimati"),
                "2026-06-01T00:00:00.000Z",
                1
            ),
            ["2026-06-01T10:00:00.000Z"]
        );
    }

    #[test]
    fn after_an_idle_spell_only_the_latest_due_tick_fires() {
        let cron = CronSchedule::parse("* * * * *").unwrap();
        let after = ms("2026-01-01T00:00:00.000Z");
        assert_eq!(cron.latest_due(&Utc, after, after + 59_999), None);
        assert_eq!(
            cron.latest_due(&Utc, after, after + 60_000),
            Some(after + 60_000)
        );
        let year_later = ms("2027-01-01T00:00:30.000Z");
        assert_eq!(
            cron.latest_due(&Utc, after, year_later)
                .map(format_iso)
                .as_deref(),
            Some("2027-01-01T00:00:00.000Z")
        );
        let yearly = CronSchedule::parse("0 0 1 1 *").unwrap();
        assert_eq!(
            yearly
                .latest_due(&Utc, after, year_later)
                .map(format_iso)
                .as_deref(),
            Some("2027-01-01T00:00:00.000Z")
        );
        assert_eq!(
            yearly.latest_due(&Utc, after + 1, year_later - 31_000),
            None
        );
    }
}
