//! Duration strings, parsed the way Trigger.dev's server reads them.
//!
//! A duration is one or more `<digits><unit>` parts with no separators: `w` (7 days),
//! `d`, `hr` or `h`, `m`, `s`; at most 100 characters. Units may come in any order and
//! each unit counts once, at its first occurrence (`1m2m` is one minute), which is what
//! Trigger.dev's per-unit regular expressions do. Anything else is rejected: no spaces,
//! no decimals, no `ms`, months or years.

/// The longest duration string accepted.
pub const MAX_DURATION_LEN: usize = 100;

/// Parses a duration string into milliseconds. `None` when the text is not a duration
/// or the value does not fit in 64 bits.
pub fn parse_duration(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > MAX_DURATION_LEN {
        return None;
    }
    // Unit order: w, d, h, m, s. `seen` keeps the first value of each.
    let mut seen: [Option<u64>; 5] = [None; 5];
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let value: u64 = text[start..i].parse().ok()?;
        let (slot, unit_len) = match bytes.get(i)? {
            b'w' => (0, 1),
            b'd' => (1, 1),
            b'h' if bytes.get(i + 1) == Some(&b'r') => (2, 2),
            b'h' => (2, 1),
            b'm' => (3, 1),
            b's' => (4, 1),
            _ => return None,
        };
        i += unit_len;
        seen[slot].get_or_insert(value);
    }
    const UNIT_MS: [u64; 5] = [604_800_000, 86_400_000, 3_600_000, 60_000, 1000];
    seen.iter()
        .zip(UNIT_MS)
        .try_fold(0u64, |total, (value, unit)| {
            total.checked_add(value.unwrap_or(0).checked_mul(unit)?)
        })
}

/// Parses an idempotency-key TTL: digits and exactly one unit of `s`, `m`, `h`, `d`
/// (`^\d+[smhd]$`). Returns milliseconds.
pub fn parse_key_ttl(text: &str) -> Option<u64> {
    // The unit is the last character, which may be any character at all.
    let unit_at = text.char_indices().next_back()?.0;
    let (digits, unit) = text.split_at(unit_at);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let unit_ms = match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    const D: u64 = 24 * H;

    #[test]
    fn accepts_trigger_dev_durations() {
        for (text, ms) in [
            ("1h42m", H + 42 * M),
            ("2w", 14 * D),
            ("1hr", H),
            ("90s", 90 * S),
            ("1m2m", M),
            ("0s", 0),
            ("30d", 30 * D),
            ("15m", 15 * M),
            ("60s", 60 * S),
            ("1s1w", 7 * D + S),
            ("1w2d3h4m5s", 7 * D + 2 * D + 3 * H + 4 * M + 5 * S),
            ("2hr30m", 2 * H + 30 * M),
            ("1h2hr", H),
            ("007m", 7 * M),
        ] {
            assert_eq!(parse_duration(text), Some(ms), "{text:?}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for text in [
            "", "1.5h", "1 h", " 1h", "1h ", "h", "1", "10ms", "1y", "1mo", "-1h", "+1h", "1H",
            "1hrs", "1h_30m", "one hour", "1h\n", "１h",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn rejects_over_long_and_overflowing_text() {
        let long = "1s".repeat(51);
        assert_eq!(long.len(), 102);
        assert_eq!(parse_duration(&long), None);
        assert_eq!(parse_duration(&"1s".repeat(50)), Some(S));
        assert_eq!(parse_duration("99999999999999999999s"), None);
        assert_eq!(parse_duration("9999999999999999w"), None);
    }

    #[test]
    fn key_ttl_takes_exactly_one_unit() {
        assert_eq!(parse_key_ttl("30d"), Some(30 * D));
        assert_eq!(parse_key_ttl("1h"), Some(H));
        assert_eq!(parse_key_ttl("45m"), Some(45 * M));
        assert_eq!(parse_key_ttl("10s"), Some(10 * S));
        for bad in [
            "1¨", "¨", "5é", "", "d", "1w", "1h30m", "1hr", "1.5h", " 1h", "-1h", "1",
        ] {
            assert_eq!(parse_key_ttl(bad), None, "{bad:?}");
        }
    }
}
