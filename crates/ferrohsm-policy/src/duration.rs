//! Durations in policy files: a whole number and a unit, `30s`, `15m`, `24h`, `7d`.

use time::Duration;

/// Parses `<n>s`, `<n>m`, `<n>h` or `<n>d` with a positive whole `n`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // Split before the last character, not the last byte: `"1é"` must be an error, not a
    // panic inside a multi-byte character.
    let at = text.char_indices().next_back().map_or(0, |(i, _)| i);
    let (number, unit) = text.split_at(at);
    let n: i64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0 && number.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{text:?} is not a duration like 30s, 15m, 24h or 7d"))?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| *s <= 100 * 365 * 86_400)
    .ok_or_else(|| {
        format!("{text:?} is not a duration like 30s, 15m, 24h or 7d (at most 100 years)")
    })?;
    Ok(Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        for (text, secs) in [("30s", 30), ("15m", 900), ("24h", 86_400), ("7d", 604_800)] {
            assert_eq!(parse_duration(text), Ok(Duration::seconds(secs)));
        }
        // Issue 11: multi-byte characters anywhere are errors, never panics.
        for bad in [
            "",
            "h",
            "0h",
            "-1h",
            "1.5h",
            "10",
            "1w",
            "+3d",
            "99999999999d",
            "1é",
            "é",
            "1日",
            "日h",
            "٣h",
            "1\u{301}",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
