//! Instants as milliseconds since the Unix epoch, and their ISO-8601 text form.
//!
//! The API speaks UTC with milliseconds (`2026-11-28T17:01:31.123Z`). Parsing accepts
//! RFC 3339 date-times (any offset, optional fraction), which is what `Date.toISOString()`
//! and every mainstream client produce. The civil-date arithmetic is Howard Hinnant's
//! `days_from_civil` / `civil_from_days`, exact over the proleptic Gregorian calendar.

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// Years outside 0000..=9999 cannot be written in the four-digit ISO form.
const MIN_MS: Millis = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
const MAX_MS: Millis = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month, day) `z` days after 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// `2026-11-28T17:01:31.123Z`. Instants outside years 0000..9999 are clamped to that range.
pub fn format_iso(ms: Millis) -> String {
    let ms = ms.clamp(MIN_MS, MAX_MS);
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`).
/// Fractions beyond milliseconds are truncated. Returns `None` for anything else.
pub fn parse_iso(text: &str) -> Option<Millis> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter().try_fold(0u32, |acc, c| {
            acc.checked_mul(10)?.checked_add(u32::from(c - b'0'))
        })
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(i64::from(y), mo) {
        return None;
    }
    // 23:59:60 (a leap second) is read as the next second, like JavaScript does.
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut milli = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if end == start {
            return None;
        }
        for (k, c) in b[start..end.min(start + 3)].iter().enumerate() {
            milli += u32::from(c - b'0') * [100, 10, 1][k];
        }
        i = end;
    }
    let offset_min: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let total = i64::from(oh * 60 + om);
            if *sign == b'+' {
                total
            } else {
                -total
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset_min * 60;
    Some(secs * 1000 + i64::from(milli))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_in_utc() {
        assert_eq!(format_iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_iso(1_795_885_291_123), "2026-11-28T17:01:31.123Z");
        assert_eq!(format_iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_iso(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parse_and_format_round_trip() {
        for ms in [
            0,
            1,
            999,
            86_399_999,
            951_782_400_000,
            1_795_885_291_123,
            MAX_MS,
        ] {
            assert_eq!(parse_iso(&format_iso(ms)), Some(ms), "{ms}");
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let base = parse_iso("2030-01-01T00:00:00.000Z").unwrap();
        assert_eq!(parse_iso("2030-01-01T00:00:00Z"), Some(base));
        assert_eq!(parse_iso("2030-01-01T01:00:00+01:00"), Some(base));
        assert_eq!(parse_iso("2029-12-31T23:30:00-00:30"), Some(base));
        assert_eq!(parse_iso("2030-01-01T00:00:00.5Z"), Some(base + 500));
        assert_eq!(parse_iso("2030-01-01T00:00:00.123456Z"), Some(base + 123));
        assert_eq!(parse_iso("2030-01-01t00:00:00z"), Some(base));
    }

    #[test]
    fn rejects_what_is_not_a_date_time() {
        for bad in [
            "",
            "tomorrow",
            "2030-01-01",
            "2030-01-01T00:00:00",
            "2030-13-01T00:00:00Z",
            "2030-02-29T00:00:00Z",
            "2030-01-01T24:00:00Z",
            "2030-01-01T00:00:00.Z",
            "2030-01-01T00:00:00+0100",
            "2030-01-01T00:00:00Zjunk",
            "+2030-01-01T00:00:00Z",
            "2030-01-01T00:00:00＋01:00",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad:?}");
        }
    }
}
