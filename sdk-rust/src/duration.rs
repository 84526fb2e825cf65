//! Human-friendly durations (`'30d'`, `'1h30m'`, `'500ms'`) as accepted by every StackShift
//! SDK, and [`IntoDuration`], which lets options take either such a string or a
//! [`std::time::Duration`].
//!
//! Grammar: one or more `<integer><unit>` parts with no spaces between them, units `ms`,
//! `s`, `m`, `h`, `d` (24 h) and `w` (7 d); surrounding whitespace is ignored. Examples:
//! `30d`, `24h`, `90m`, `1h30m`, `500ms`, `10s`, `2w`, `1d12h`.

use std::fmt;
use std::time::Duration;

/// The error for a duration string that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: {} (expected e.g. '30d', '24h', '1h30m', '500ms'; units ms, s, m, h, d, w)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for ParseDurationError {}

/// Parses a duration such as `30d`, `1h30m` or `500ms`: one or more `<integer><unit>`
/// parts with no spaces between them, units `ms`, `s`, `m`, `h`, `d` (24 h) and `w` (7 d);
/// surrounding whitespace is ignored.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(stackshift::parse_duration("1h30m")?, Duration::from_secs(5400));
/// assert_eq!(stackshift::parse_duration("500ms")?, Duration::from_millis(500));
/// assert!(stackshift::parse_duration("soon").is_err());
/// # Ok::<(), stackshift::ParseDurationError>(())
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let fail = |reason| ParseDurationError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(fail("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(fail("expected a number"));
        }
        let (number, tail) = rest.split_at(digits);
        let value: u64 = number.parse().map_err(|_| fail("number is too large"))?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(fail("a number is missing its unit"));
        }
        let (unit, tail) = tail.split_at(unit_len);
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(fail("unknown unit")),
        };
        let millis = value
            .checked_mul(millis_per_unit)
            .ok_or_else(|| fail("duration is too large"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| fail("duration is too large"))?;
        rest = tail;
    }
    Ok(total)
}

/// A value that can be turned into a [`Duration`]: a [`Duration`] itself, or a duration
/// string like `"30d"` (see [`parse_duration`]). Options that take a duration accept any
/// `impl IntoDuration`, and report a bad string as [`crate::Error::InvalidArgument`] when
/// the options are used, never by panicking.
pub trait IntoDuration {
    /// Converts the value, failing for a string that does not parse.
    fn into_duration(self) -> Result<Duration, ParseDurationError>;
}

impl IntoDuration for Duration {
    fn into_duration(self) -> Result<Duration, ParseDurationError> {
        Ok(self)
    }
}

impl IntoDuration for &str {
    fn into_duration(self) -> Result<Duration, ParseDurationError> {
        parse_duration(self)
    }
}

impl IntoDuration for String {
    fn into_duration(self) -> Result<Duration, ParseDurationError> {
        parse_duration(&self)
    }
}

impl IntoDuration for &String {
    fn into_duration(self) -> Result<Duration, ParseDurationError> {
        parse_duration(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        match parse_duration(s) {
            Ok(d) => d,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(ok("30d"), Duration::from_secs(30 * 86_400));
        assert_eq!(ok("24h"), Duration::from_secs(24 * 3_600));
        assert_eq!(ok("90m"), Duration::from_secs(90 * 60));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("2w"), Duration::from_secs(14 * 86_400));
        assert_eq!(ok("0s"), Duration::ZERO);
    }

    #[test]
    fn parses_compound_durations() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5_400));
        assert_eq!(ok("1d12h"), Duration::from_secs(36 * 3_600));
        assert_eq!(ok("1m30s250ms"), Duration::from_millis(90_250));
        assert_eq!(ok("  15m "), Duration::from_secs(900));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "   ",
            "30",
            "d",
            "h1",
            "1.5h",
            "-1h",
            "1 h",
            "1h 30m",
            "30x",
            "1hour",
            "1H",
            "99999999999999999999s",
            "18446744073709551615w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        let message = parse_duration("soon").err().map(|e| e.to_string());
        assert!(message.is_some_and(|m| m.contains("\"soon\"") && m.contains("30d")));
    }

    #[test]
    fn into_duration_accepts_strings_and_durations() {
        assert_eq!("2h".into_duration(), Ok(Duration::from_secs(7_200)));
        assert_eq!(
            String::from("1s").into_duration(),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(
            Duration::from_millis(7).into_duration(),
            Ok(Duration::from_millis(7))
        );
        assert!("nope".into_duration().is_err());
    }
}
