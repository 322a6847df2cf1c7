//! Durations as operators and partners write them: `250ms`, `5s`, `30m`, `2h`, `7d`.

use std::time::Duration;

/// Parses `250ms`, `5s`, `30m`, `2h`, `7d` (a bare number means seconds). Values too large to
/// represent are an error, never a wrap-around (they come from partners as well as operators).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 250ms, 5s, 30m, 2h or 7d"))?;
    let seconds_per_unit: u64 = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m, h or d)")),
    };
    n.checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        // Overflow is an error, not a wrap-around or a panic.
        assert!(parse_duration("213503982334602d").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert_eq!(
            parse_duration("18446744073709551615ms"),
            Ok(Duration::from_millis(u64::MAX))
        );
    }
}
