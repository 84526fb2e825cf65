//! Schedule time arithmetic: validating cron expressions, time zones and intervals, the
//! next time after an instant, and which due times a firing starts runs for under each
//! catch-up policy. Instants are milliseconds since the Unix epoch.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::error::{EngineError, EngineResult};
use super::schedule_model::{CatchUp, ScheduleSpec};

/// Shortest interval.
pub const MIN_INTERVAL_MS: i64 = 1_000;
/// Longest interval (366 days).
pub const MAX_INTERVAL_MS: i64 = 366 * 24 * 3_600_000;
/// Longest cron expression.
pub const MAX_CRON_LEN: usize = 256;
/// A due time noticed at most this late is "on time": `SKIP` still fires it.
pub const ON_TIME_GRACE_MS: i64 = 5_000;
/// Most runs one `ALL` catch-up starts (the most recent missed times).
pub const MAX_CATCH_UP_RUNS: usize = 100;

/// A validated, ready-to-evaluate spec.
pub enum Compiled {
    /// Cron in a zone.
    Cron(Box<Cron>, Tz),
    /// Epoch-aligned interval.
    Interval(i64),
}

/// Validates a spec and prepares it for evaluation.
pub fn compile(spec: &ScheduleSpec) -> EngineResult<Compiled> {
    match spec {
        ScheduleSpec::Interval { interval_ms } => {
            if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(interval_ms) {
                return Err(EngineError::invalid(format!(
                    "spec.interval must be at least 1s and at most 366 days (got {}ms)",
                    interval_ms
                )));
            }
            Ok(Compiled::Interval(*interval_ms))
        }
        ScheduleSpec::Cron {
            expression,
            time_zone,
        } => {
            if expression.trim().is_empty() || expression.len() > MAX_CRON_LEN {
                return Err(EngineError::invalid(format!(
                    "cron_expression must be 1-{MAX_CRON_LEN} characters, e.g. \"0 9 * * MON-FRI\" \
                     (minute hour day-of-month month day-of-week, optionally seconds first)"
                )));
            }
            let cron = Cron::from_str(expression).map_err(|e| {
                EngineError::invalid(format!(
                    "cron_expression {expression:?} is invalid: {e}. Use 5 fields (minute hour \
                     day-of-month month day-of-week) or 6 with seconds first, e.g. \"*/15 * * * *\""
                ))
            })?;
            let tz = Tz::from_str(time_zone).map_err(|_| {
                EngineError::invalid(format!(
                    "time_zone {time_zone:?} is not an IANA time zone name (e.g. \"UTC\", \
                     \"Europe/Paris\", \"America/New_York\")"
                ))
            })?;
            // An expression that never matches (e.g. 30 February) cannot be scheduled.
            let c = Compiled::Cron(Box::new(cron), tz);
            if c.next_after(0).is_none() {
                return Err(EngineError::invalid(format!(
                    "cron_expression {expression:?} never matches a date"
                )));
            }
            Ok(c)
        }
    }
}

fn to_tz(tz: &Tz, ms: i64) -> Option<DateTime<Tz>> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.with_timezone(tz))
}

impl Compiled {
    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        match self {
            Self::Interval(iv) => t.div_euclid(*iv).checked_add(1)?.checked_mul(*iv),
            Self::Cron(cron, tz) => {
                let start = to_tz(tz, t)?;
                cron.find_next_occurrence(&start, false)
                    .ok()
                    .map(|d| d.timestamp_millis())
            }
        }
    }

    /// The latest scheduled time at or before `t`.
    pub fn latest_at_or_before(&self, t: i64) -> Option<i64> {
        match self {
            Self::Interval(iv) => t.div_euclid(*iv).checked_mul(*iv),
            Self::Cron(cron, tz) => {
                let start = to_tz(tz, t)?;
                cron.find_previous_occurrence(&start, true)
                    .ok()
                    .map(|d| d.timestamp_millis())
            }
        }
    }

    /// The scheduled times a firing at `now` starts runs for, oldest first, given that the
    /// earliest unfired time is `first_due` (`<= now`).
    pub fn due_times(&self, first_due: i64, now: i64, catch_up: CatchUp) -> Vec<i64> {
        let latest = self
            .latest_at_or_before(now)
            .filter(|l| *l >= first_due)
            .unwrap_or(first_due);
        match catch_up {
            CatchUp::Latest => vec![latest],
            CatchUp::Skip if now - latest <= ON_TIME_GRACE_MS => vec![latest],
            CatchUp::Skip => Vec::new(),
            CatchUp::All => {
                // Walk back from the latest time; keep the most recent ones.
                let mut times = vec![latest];
                let mut t = latest;
                while times.len() < MAX_CATCH_UP_RUNS {
                    match self.latest_at_or_before(t - 1) {
                        Some(prev) if prev >= first_due && prev < t => {
                            times.push(prev);
                            t = prev;
                        }
                        _ => break,
                    }
                }
                times.reverse();
                times
            }
        }
    }
}

/// The scheduled time as it appears in idempotency keys: RFC 3339 UTC with milliseconds.
pub fn format_time(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cron(e: &str, tz: &str) -> EngineResult<Compiled> {
        compile(&ScheduleSpec::Cron {
            expression: e.into(),
            time_zone: tz.into(),
        })
    }

    #[test]
    fn validation() {
        assert!(cron("*/5 * * * *", "UTC").is_ok());
        assert!(cron("*/2 * * * * *", "Europe/Paris").is_ok());
        assert!(cron("not cron", "UTC").is_err());
        assert!(cron("* * * * *", "Mars/Olympus").is_err());
        assert!(compile(&ScheduleSpec::Interval { interval_ms: 999 }).is_err());
        assert!(compile(&ScheduleSpec::Interval { interval_ms: 1_000 }).is_ok());
    }

    #[test]
    fn interval_times_are_epoch_aligned() {
        let c = Compiled::Interval(1_000);
        assert_eq!(c.next_after(1_500), Some(2_000));
        assert_eq!(c.next_after(2_000), Some(3_000));
        assert_eq!(c.latest_at_or_before(2_999), Some(2_000));
    }

    #[test]
    fn cron_in_a_time_zone() {
        // 09:00 in Paris (UTC+1 in November) is 08:00 UTC.
        let c = cron("0 9 * * *", "Europe/Paris").unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .timestamp_millis();
        let next = c.next_after(t0).unwrap();
        assert_eq!(format_time(next), "2026-11-22T08:00:00.000Z");
    }

    #[test]
    fn catch_up_policies() {
        let c = Compiled::Interval(1_000);
        // Times 10s..=20s were missed; now is 20.5 s.
        assert_eq!(c.due_times(10_000, 20_500, CatchUp::Latest), vec![20_000]);
        assert_eq!(c.due_times(10_000, 20_500, CatchUp::Skip), vec![20_000]);
        assert_eq!(c.due_times(10_000, 30_000, CatchUp::Skip), vec![30_000]);
        let slow = Compiled::Interval(10_000);
        assert!(slow.due_times(10_000, 26_000, CatchUp::Skip).is_empty());
        assert_eq!(
            slow.due_times(10_000, 26_000, CatchUp::Latest),
            vec![20_000]
        );
        let all = c.due_times(10_000, 20_500, CatchUp::All);
        assert_eq!(all.len(), 11);
        assert_eq!(all[0], 10_000);
        let capped = c.due_times(0, 1_000_000, CatchUp::All);
        assert_eq!(capped.len(), MAX_CATCH_UP_RUNS);
        assert_eq!(*capped.last().unwrap(), 1_000_000);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod dst_tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn daylight_saving_gaps_and_repeats() {
        let c = compile(&ScheduleSpec::Cron {
            expression: "30 2 * * *".into(),
            time_zone: "America/New_York".into(),
        })
        .unwrap();
        // 2026-03-08 02:30 does not exist in New York (clocks jump 02:00 -> 03:00).
        // It fires when the gap ends: 03:00 EDT.
        let next = c.next_after(at("2026-03-07T12:00:00Z")).unwrap();
        assert_eq!(format_time(next), "2026-03-08T07:00:00.000Z");
        let c = compile(&ScheduleSpec::Cron {
            expression: "30 1 * * *".into(),
            time_zone: "America/New_York".into(),
        })
        .unwrap();
        // 2026-11-01 01:30 happens twice (EDT, then EST).
        let first = c.next_after(at("2026-10-31T12:00:00Z")).unwrap();
        let second = c.next_after(first).unwrap();
        assert_eq!(
            format_time(first),
            "2026-11-01T05:30:00.000Z",
            "the first 01:30 (EDT)"
        );
        assert_eq!(
            format_time(second),
            "2026-11-02T06:30:00.000Z",
            "not again at 01:30 EST: a repeated local time fires once"
        );
    }
}
