//! Conversions between the wire types of `stackshift.v1` and the SDK's own types:
//! timestamps, durations, JSON bytes, [`Run`], [`Failure`], [`RetryPolicy`] and
//! [`RunStatus`]. Decoding is strict: a response that lacks a required field or carries
//! invalid JSON is reported as an error rather than papered over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use stackshift_proto::prost_types;
use stackshift_proto::v1 as pb;

use crate::Error;
use crate::options::RetryPolicy;
use crate::run::{
    AttemptInfo, Failure, LogLevel, LogLine, Run, RunStatus, StepInfo, StepKind, TimelineEntry,
    TimelineKind, WaitInfo,
};

/// A protobuf timestamp as a UTC date-time; `None` when out of range.
pub(crate) fn timestamp_to_chrono(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// A UTC date-time as a protobuf timestamp.
pub(crate) fn chrono_to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        // Always below 2 * 10^9 (leap seconds), so it fits.
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(999_999_999),
    }
}

/// A std duration as a protobuf duration (saturating at the protobuf maximum).
pub(crate) fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: 315_576_000_000,
        nanos: 0,
    })
}

/// A protobuf duration as a std duration; `None` when negative.
pub(crate) fn duration_from_proto(d: &prost_types::Duration) -> Option<Duration> {
    Duration::try_from(*d).ok()
}

/// JSON bytes as a value; empty bytes mean `null`.
pub(crate) fn json_from_bytes(bytes: &[u8]) -> Result<Value, Error> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// Optional JSON bytes: empty bytes mean "absent".
fn optional_json(bytes: &[u8]) -> Result<Option<Value>, Error> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        Ok(Some(serde_json::from_slice(bytes)?))
    }
}

fn required_time(ts: Option<&prost_types::Timestamp>, what: &str) -> Result<DateTime<Utc>, Error> {
    ts.and_then(timestamp_to_chrono)
        .ok_or_else(|| Error::protocol(format!("{what} is missing or out of range")))
}

fn optional_time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(timestamp_to_chrono)
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

impl From<RunStatus> for pb::RunStatus {
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Queued => pb::RunStatus::Queued,
            RunStatus::Running => pb::RunStatus::Running,
            RunStatus::Waiting => pb::RunStatus::Waiting,
            RunStatus::Completed => pb::RunStatus::Completed,
            RunStatus::Failed => pb::RunStatus::Failed,
            RunStatus::Cancelled => pb::RunStatus::Cancelled,
        }
    }
}

impl TryFrom<pb::RunStatus> for RunStatus {
    type Error = Error;

    fn try_from(status: pb::RunStatus) -> Result<Self, Error> {
        Ok(match status {
            pb::RunStatus::Queued => RunStatus::Queued,
            pb::RunStatus::Running => RunStatus::Running,
            pb::RunStatus::Waiting => RunStatus::Waiting,
            pb::RunStatus::Completed => RunStatus::Completed,
            pb::RunStatus::Failed => RunStatus::Failed,
            pb::RunStatus::Cancelled => RunStatus::Cancelled,
            pb::RunStatus::Unspecified => {
                return Err(Error::protocol("run status is unspecified"));
            }
        })
    }
}

/// Decodes the raw `i32` of a `RunStatus` field.
pub(crate) fn run_status_from_i32(value: i32) -> Result<RunStatus, Error> {
    pb::RunStatus::try_from(value)
        .map_err(|_| Error::protocol(format!("unknown run status {value}")))?
        .try_into()
}

impl From<Failure> for pb::Failure {
    fn from(f: Failure) -> Self {
        pb::Failure {
            message: f.message,
            r#type: f.error_type.unwrap_or_default(),
            non_retryable: f.non_retryable,
            details: f
                .details
                .map(|d| serde_json::to_vec(&d).unwrap_or_default())
                .unwrap_or_default(),
            stack_trace: f.stack_trace.unwrap_or_default(),
        }
    }
}

impl From<pb::Failure> for Failure {
    /// Lenient: `details` that are not valid JSON are kept as a JSON string.
    fn from(f: pb::Failure) -> Self {
        let details = if f.details.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&f.details).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&f.details).into_owned())
            }))
        };
        Failure {
            message: f.message,
            error_type: non_empty(f.r#type),
            non_retryable: f.non_retryable,
            details,
            stack_trace: non_empty(f.stack_trace),
        }
    }
}

impl From<RetryPolicy> for pb::RetryPolicy {
    fn from(p: RetryPolicy) -> Self {
        pb::RetryPolicy {
            max_attempts: p.max_attempts.unwrap_or(0),
            initial_interval: p.initial_interval.map(duration_to_proto),
            backoff_coefficient: p.backoff_coefficient.unwrap_or(0.0),
            maximum_interval: p.maximum_interval.map(duration_to_proto),
        }
    }
}

impl From<pb::RetryPolicy> for RetryPolicy {
    fn from(p: pb::RetryPolicy) -> Self {
        RetryPolicy {
            max_attempts: (p.max_attempts != 0).then_some(p.max_attempts),
            initial_interval: p.initial_interval.as_ref().and_then(duration_from_proto),
            backoff_coefficient: (p.backoff_coefficient != 0.0).then_some(p.backoff_coefficient),
            maximum_interval: p.maximum_interval.as_ref().and_then(duration_from_proto),
        }
    }
}

impl TryFrom<pb::Attempt> for AttemptInfo {
    type Error = Error;

    fn try_from(a: pb::Attempt) -> Result<Self, Error> {
        Ok(AttemptInfo {
            number: a.number,
            started_at: required_time(a.started_at.as_ref(), "attempt.started_at")?,
            ended_at: optional_time(a.ended_at.as_ref()),
            failure: a.failure.map(Failure::from),
            worker_id: a.worker_id,
        })
    }
}

impl From<i32> for StepKind {
    fn from(kind: i32) -> Self {
        match pb::JournalEntryKind::try_from(kind) {
            Ok(pb::JournalEntryKind::Step) => StepKind::Step,
            Ok(pb::JournalEntryKind::Sleep) => StepKind::Sleep,
            Ok(pb::JournalEntryKind::Event) => StepKind::Event,
            Ok(pb::JournalEntryKind::Child) => StepKind::Child,
            Ok(pb::JournalEntryKind::Any) => StepKind::Any,
            Ok(pb::JournalEntryKind::All) => StepKind::All,
            _ => StepKind::Other(kind),
        }
    }
}

impl From<pb::RunWait> for WaitInfo {
    fn from(w: pb::RunWait) -> Self {
        WaitInfo {
            kind: StepKind::from(w.kind),
            event_name: non_empty(w.event_name),
            correlation_key: non_empty(w.correlation_key),
            wake_at: optional_time(w.wake_at.as_ref()),
            since: optional_time(w.since.as_ref()),
            step_id: w.step_id,
        }
    }
}

impl TryFrom<pb::Step> for StepInfo {
    type Error = Error;

    fn try_from(s: pb::Step) -> Result<Self, Error> {
        let output = if s.failure.is_some() {
            None
        } else {
            optional_json(&s.output)?
        };
        Ok(StepInfo {
            kind: StepKind::from(s.kind),
            attempt: s.attempt,
            started_at: optional_time(s.started_at.as_ref()),
            completed_at: required_time(s.completed_at.as_ref(), "step.completed_at")?,
            output,
            failure: s.failure.map(Failure::from),
            id: s.id,
        })
    }
}

impl From<i32> for TimelineKind {
    fn from(kind: i32) -> Self {
        use pb::TimelineEntryKind as K;
        match K::try_from(kind) {
            Ok(K::Created) => TimelineKind::Created,
            Ok(K::AttemptStarted) => TimelineKind::AttemptStarted,
            Ok(K::AttemptResumed) => TimelineKind::AttemptResumed,
            Ok(K::StepCompleted) => TimelineKind::StepCompleted,
            Ok(K::StepFailed) => TimelineKind::StepFailed,
            Ok(K::Waiting) => TimelineKind::Waiting,
            Ok(K::EventMatched) => TimelineKind::EventMatched,
            Ok(K::TimerFired) => TimelineKind::TimerFired,
            Ok(K::WaitTimedOut) => TimelineKind::WaitTimedOut,
            Ok(K::RetryScheduled) => TimelineKind::RetryScheduled,
            Ok(K::LeaseExpired) => TimelineKind::LeaseExpired,
            Ok(K::Completed) => TimelineKind::Completed,
            Ok(K::Failed) => TimelineKind::Failed,
            Ok(K::Cancelled) => TimelineKind::Cancelled,
            Ok(K::Retried) => TimelineKind::Retried,
            Ok(K::LogsTruncated) => TimelineKind::LogsTruncated,
            Ok(K::TimelineTruncated) => TimelineKind::TimelineTruncated,
            Ok(K::Unspecified) | Err(_) => TimelineKind::Other(kind),
        }
    }
}

impl TryFrom<pb::TimelineEntry> for TimelineEntry {
    type Error = Error;

    fn try_from(e: pb::TimelineEntry) -> Result<Self, Error> {
        Ok(TimelineEntry {
            id: e.id,
            at: required_time(e.at.as_ref(), "timeline.at")?,
            kind: TimelineKind::from(e.kind),
            attempt: e.attempt,
            step_id: non_empty(e.step_id),
            scheduled_at: optional_time(e.scheduled_at.as_ref()),
            detail: optional_json(&e.detail)?,
        })
    }
}

impl TryFrom<pb::LogEntry> for LogLine {
    type Error = Error;

    fn try_from(l: pb::LogEntry) -> Result<Self, Error> {
        let level = match pb::LogLevel::try_from(l.level) {
            Ok(pb::LogLevel::Debug) => LogLevel::Debug,
            Ok(pb::LogLevel::Warn) => LogLevel::Warn,
            Ok(pb::LogLevel::Error) => LogLevel::Error,
            // The server stores an unset level as INFO.
            _ => LogLevel::Info,
        };
        let fields = match optional_json(&l.fields)? {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(Error::protocol(format!(
                    "log fields are not a JSON object: {other}"
                )));
            }
        };
        Ok(LogLine {
            id: l.id,
            level,
            message: l.message,
            fields,
            step_id: non_empty(l.step_id),
            at: optional_time(l.at.as_ref()),
            attempt: l.attempt,
            truncated: l.truncated,
        })
    }
}

impl TryFrom<pb::Run> for Run {
    type Error = Error;

    fn try_from(r: pb::Run) -> Result<Self, Error> {
        Ok(Run {
            status: run_status_from_i32(r.status)?,
            payload: json_from_bytes(&r.payload)?,
            result: optional_json(&r.result)?,
            failure: r.failure.map(Failure::from),
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            retry_policy: r.retry_policy.map(RetryPolicy::from),
            idempotency_key: non_empty(r.idempotency_key),
            lease_timeout: r.lease_timeout.as_ref().and_then(duration_from_proto),
            created_at: required_time(r.created_at.as_ref(), "run.created_at")?,
            updated_at: required_time(r.updated_at.as_ref(), "run.updated_at")?,
            finished_at: optional_time(r.finished_at.as_ref()),
            next_attempt_at: optional_time(r.next_attempt_at.as_ref()),
            attempts: r
                .attempts
                .into_iter()
                .map(AttemptInfo::try_from)
                .collect::<Result<_, _>>()?,
            steps: r
                .steps
                .into_iter()
                .map(StepInfo::try_from)
                .collect::<Result<_, _>>()?,
            wait: r.wait.map(WaitInfo::from),
            timeline: r
                .timeline
                .into_iter()
                .map(TimelineEntry::try_from)
                .collect::<Result<_, _>>()?,
            logs: r
                .logs
                .into_iter()
                .map(LogLine::try_from)
                .collect::<Result<_, _>>()?,
            id: r.id,
            job: r.job,
            queue: r.queue,
            priority: r.priority,
            concurrency_key: non_empty(r.concurrency_key),
            parent_run_id: non_empty(r.parent_run_id),
            parent_step_id: non_empty(r.parent_step_id),
        })
    }
}

/// Decodes the `run` field every JobsService response carries.
pub(crate) fn run_from_response(run: Option<pb::Run>) -> Result<Run, Error> {
    run.ok_or_else(|| Error::protocol("the response holds no run"))?
        .try_into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn wire_run() -> pb::Run {
        pb::Run {
            id: "0190-run".into(),
            job: "provisionAfterPayment".into(),
            queue: "default".into(),
            status: pb::RunStatus::Completed as i32,
            payload: br#"{"paymentId":"p1"}"#.to_vec(),
            result: br#"{"provisioned":true}"#.to_vec(),
            attempt: 2,
            max_attempts: 5,
            idempotency_key: String::new(),
            created_at: ts(1_700_000_000),
            updated_at: ts(1_700_000_010),
            finished_at: ts(1_700_000_010),
            attempts: vec![
                pb::Attempt {
                    number: 1,
                    worker_id: "w1".into(),
                    started_at: ts(1_700_000_001),
                    ended_at: ts(1_700_000_002),
                    failure: Some(pb::Failure {
                        message: "boom".into(),
                        r#type: "anyhow::Error".into(),
                        ..Default::default()
                    }),
                },
                pb::Attempt {
                    number: 2,
                    worker_id: "w1".into(),
                    started_at: ts(1_700_000_005),
                    ended_at: ts(1_700_000_010),
                    failure: None,
                },
            ],
            steps: vec![
                pb::Step {
                    id: "verify-payment".into(),
                    kind: pb::JournalEntryKind::Step as i32,
                    attempt: 1,
                    started_at: ts(1_700_000_001),
                    completed_at: ts(1_700_000_002),
                    output_size: 16,
                    failure: None,
                    output: br#"{"status":"paid"}"#.to_vec(),
                    ..Default::default()
                },
                pb::Step {
                    id: "charge".into(),
                    kind: pb::JournalEntryKind::Step as i32,
                    attempt: 2,
                    started_at: None,
                    completed_at: ts(1_700_000_006),
                    output_size: 0,
                    failure: Some(pb::Failure {
                        message: "declined".into(),
                        non_retryable: true,
                        details: b"not json".to_vec(),
                        ..Default::default()
                    }),
                    status: pb::StepStatus::Failed as i32,
                    duration: None,
                    output: Vec::new(),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn run_from_wire() {
        let run = Run::try_from(wire_run()).unwrap();
        assert_eq!(run.status, RunStatus::Completed);
        assert!(run.is_final());
        assert_eq!(run.payload, json!({"paymentId": "p1"}));
        assert_eq!(run.result, Some(json!({"provisioned": true})));
        assert_eq!(run.idempotency_key, None);
        assert_eq!(run.created_at.timestamp(), 1_700_000_000);
        assert_eq!(run.next_attempt_at, None);
        assert_eq!(run.attempts.len(), 2);
        assert_eq!(run.attempts[0].failure.as_ref().unwrap().message, "boom");
        let step = run.step("verify-payment").unwrap();
        assert_eq!(step.output, Some(json!({"status": "paid"})));
        assert_eq!(step.duration(), Some(chrono::TimeDelta::seconds(1)));
        let failed = run.step("charge").unwrap();
        assert_eq!(failed.output, None);
        let failure = failed.failure.as_ref().unwrap();
        assert!(failure.non_retryable);
        assert_eq!(failure.error_type, None);
        assert_eq!(failure.details, Some(json!("not json")));
    }

    #[test]
    fn timeline_and_logs_from_wire() {
        let mut wire = wire_run();
        wire.timeline = vec![
            pb::TimelineEntry {
                id: 7,
                at: ts(1_700_000_000),
                kind: pb::TimelineEntryKind::Created as i32,
                ..Default::default()
            },
            pb::TimelineEntry {
                id: 9,
                at: ts(1_700_000_002),
                kind: pb::TimelineEntryKind::StepCompleted as i32,
                attempt: 1,
                step_id: "charge".into(),
                detail: br#"{"duration_ms":3}"#.to_vec(),
                ..Default::default()
            },
            pb::TimelineEntry {
                id: 10,
                at: ts(1_700_000_003),
                kind: 999,
                ..Default::default()
            },
        ];
        wire.logs = vec![
            pb::LogEntry {
                id: 1,
                level: pb::LogLevel::Warn as i32,
                message: "slow".into(),
                fields: br#"{"ms":12}"#.to_vec(),
                step_id: "charge".into(),
                attempt: 2,
                ..Default::default()
            },
            pb::LogEntry {
                id: 2,
                message: "plain".into(),
                ..Default::default()
            },
        ];
        let run = Run::try_from(wire).unwrap();
        let kinds: Vec<TimelineKind> = run.timeline.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                TimelineKind::Created,
                TimelineKind::StepCompleted,
                TimelineKind::Other(999)
            ]
        );
        assert_eq!(run.timeline[0].step_id, None);
        assert_eq!(run.timeline[1].step_id.as_deref(), Some("charge"));
        assert_eq!(run.timeline[1].detail, Some(json!({"duration_ms": 3})));
        assert_eq!(TimelineKind::StepCompleted.as_str(), "step_completed");
        assert_eq!(run.logs[0].level, LogLevel::Warn);
        assert_eq!(run.logs[0].fields.get("ms"), Some(&json!(12)));
        assert_eq!(run.logs[0].step_id.as_deref(), Some("charge"));
        assert_eq!(run.logs[0].attempt, 2);
        assert_eq!(run.logs[1].level, LogLevel::Info);
        assert!(run.logs[1].fields.is_empty());
    }

    #[test]
    fn strict_decoding_reports_protocol_errors() {
        let mut bad = wire_run();
        bad.status = 0;
        assert_eq!(
            Run::try_from(bad).unwrap_err().code(),
            tonic::Code::Internal
        );
        let mut bad = wire_run();
        bad.status = 99;
        assert!(Run::try_from(bad).is_err());
        let mut bad = wire_run();
        bad.created_at = None;
        assert!(Run::try_from(bad).is_err());
        let mut bad = wire_run();
        bad.payload = b"{not json".to_vec();
        assert!(matches!(Run::try_from(bad), Err(Error::Json(_))));
        assert!(run_from_response(None).is_err());
    }

    #[test]
    fn empty_payload_is_null_and_empty_result_is_none() {
        let mut r = wire_run();
        r.payload.clear();
        r.result.clear();
        r.status = pb::RunStatus::Queued as i32;
        let run = Run::try_from(r).unwrap();
        assert_eq!(run.payload, Value::Null);
        assert_eq!(run.result, None);
        assert!(!run.is_final());
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Waiting,
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            let wire = pb::RunStatus::from(s);
            assert_eq!(run_status_from_i32(wire as i32).unwrap(), s);
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), s);
        }
    }

    #[test]
    fn failure_round_trips() {
        let f = Failure {
            message: "m".into(),
            error_type: Some("T".into()),
            non_retryable: true,
            details: Some(json!({"k": 1})),
            stack_trace: Some("at x".into()),
        };
        assert_eq!(Failure::from(pb::Failure::from(f.clone())), f);
        let empty = pb::Failure::from(Failure::new("only a message"));
        assert!(empty.r#type.is_empty() && empty.details.is_empty());
    }

    #[test]
    fn retry_policy_round_trips_and_zero_means_default() {
        let p = RetryPolicy::new()
            .max_attempts(3)
            .initial_interval(Duration::from_millis(200))
            .backoff_coefficient(1.5)
            .maximum_interval(Duration::from_secs(10));
        let wire = pb::RetryPolicy::from(p);
        assert_eq!(wire.max_attempts, 3);
        assert_eq!(wire.initial_interval.unwrap().nanos, 200_000_000);
        assert_eq!(RetryPolicy::from(wire), p);
        let defaults = pb::RetryPolicy::from(RetryPolicy::default());
        assert_eq!(defaults, pb::RetryPolicy::default());
        assert_eq!(RetryPolicy::from(defaults), RetryPolicy::default());
    }

    #[test]
    fn timestamps_and_durations() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        assert_eq!(timestamp_to_chrono(&chrono_to_timestamp(t)), Some(t));
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(timestamp_to_chrono(&bad), None);
        let d = Duration::from_millis(1_500);
        assert_eq!(duration_from_proto(&duration_to_proto(d)), Some(d));
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(duration_from_proto(&negative), None);
    }
}
