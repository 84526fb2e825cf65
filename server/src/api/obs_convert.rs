//! Protobuf conversion of timelines and logs.

use stackshift_proto::v1 as pb;
use tonic::Status;

use crate::engine::obs_model::{LogLevel, LogRecord, TimelineKind, TimelineRecord};
use crate::engine::obs_ops::LogInput;

use super::convert::{opt, ts, ts_ms};

/// Engine timeline kind to protobuf.
pub fn kind_to_pb(k: TimelineKind) -> pb::TimelineEntryKind {
    use pb::TimelineEntryKind as P;
    match k {
        TimelineKind::Created => P::Created,
        TimelineKind::AttemptStarted => P::AttemptStarted,
        TimelineKind::AttemptResumed => P::AttemptResumed,
        TimelineKind::StepCompleted => P::StepCompleted,
        TimelineKind::StepFailed => P::StepFailed,
        TimelineKind::Waiting => P::Waiting,
        TimelineKind::EventMatched => P::EventMatched,
        TimelineKind::TimerFired => P::TimerFired,
        TimelineKind::WaitTimedOut => P::WaitTimedOut,
        TimelineKind::RetryScheduled => P::RetryScheduled,
        TimelineKind::LeaseExpired => P::LeaseExpired,
        TimelineKind::Completed => P::Completed,
        TimelineKind::Failed => P::Failed,
        TimelineKind::Cancelled => P::Cancelled,
        TimelineKind::Retried => P::Retried,
        TimelineKind::LogsTruncated => P::LogsTruncated,
        TimelineKind::TimelineTruncated => P::TimelineTruncated,
    }
}

/// A timeline entry.
pub fn timeline_to_pb(t: &TimelineRecord) -> pb::TimelineEntry {
    pb::TimelineEntry {
        id: t.id,
        at: Some(ts(t.at)),
        kind: kind_to_pb(t.kind) as i32,
        attempt: t.attempt,
        step_id: t.step_id.clone().unwrap_or_default(),
        scheduled_at: t.scheduled_at.map(ts),
        detail: t.detail.clone().map(String::into_bytes).unwrap_or_default(),
    }
}

fn level_to_pb(l: Option<LogLevel>) -> pb::LogLevel {
    match l {
        Some(LogLevel::Debug) => pb::LogLevel::Debug,
        Some(LogLevel::Info) => pb::LogLevel::Info,
        Some(LogLevel::Warn) | None => pb::LogLevel::Warn,
        Some(LogLevel::Error) => pb::LogLevel::Error,
    }
}

/// A stored log line.
pub fn log_to_pb(l: &LogRecord) -> pb::LogEntry {
    pb::LogEntry {
        id: l.id,
        level: level_to_pb(l.level) as i32,
        message: l.message.clone(),
        fields: l.fields.clone().map(String::into_bytes).unwrap_or_default(),
        step_id: l.step_id.clone().unwrap_or_default(),
        at: Some(ts(l.at)),
        attempt: l.attempt,
        truncated: l.truncated,
    }
}

/// Log lines of an `AppendLogs` request.
pub fn logs_from_pb(entries: Vec<pb::LogEntry>) -> Result<Vec<LogInput>, Status> {
    entries
        .into_iter()
        .map(|e| {
            let level = match pb::LogLevel::try_from(e.level) {
                Ok(pb::LogLevel::Unspecified) => None,
                Ok(pb::LogLevel::Debug) => Some(LogLevel::Debug),
                Ok(pb::LogLevel::Info) => Some(LogLevel::Info),
                Ok(pb::LogLevel::Warn) => Some(LogLevel::Warn),
                Ok(pb::LogLevel::Error) => Some(LogLevel::Error),
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "entries[].level {} is not a LogLevel",
                        e.level
                    )));
                }
            };
            Ok(LogInput {
                level,
                message: e.message,
                fields: e.fields,
                step_id: opt(e.step_id),
                at: e
                    .at
                    .as_ref()
                    .map(|t| ts_ms("entries[].at", t))
                    .transpose()?,
            })
        })
        .collect()
}
