//! Conversions between protobuf messages and engine types.

use prost_types::{Duration, Timestamp};
use stackshift_proto::v1 as pb;
use tonic::Status;

use crate::engine::model::{
    AttemptRecord, ClaimedTask, Failure, JobSpec, RetryPolicy, RunDetail, RunRecord, RunStatus,
    StepKind, StepRecord,
};
use crate::engine::requests::RetryPolicyInput;

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A protobuf timestamp as milliseconds since the epoch.
pub fn ts_ms(field: &str, t: &Timestamp) -> Result<i64, Status> {
    if !(0..1_000_000_000).contains(&t.nanos) || t.seconds.unsigned_abs() > 253_402_300_799 {
        return Err(Status::invalid_argument(format!(
            "{field} is not a valid timestamp"
        )));
    }
    Ok(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// A protobuf duration as milliseconds; negative or malformed durations are rejected.
pub fn dur_ms(field: &str, d: &Option<Duration>) -> Result<Option<i64>, Status> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(Status::invalid_argument(format!(
            "{field} must be a non-negative duration (seconds >= 0, 0 <= nanos < 1e9)"
        )));
    }
    if d.seconds > 10 * 365 * 24 * 3600 {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than 10 years"
        )));
    }
    Ok(Some(d.seconds * 1000 + i64::from(d.nanos) / 1_000_000))
}

/// Milliseconds as a protobuf duration.
pub fn dur(ms: i64) -> Duration {
    Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Engine status to protobuf.
pub fn status_to_pb(s: RunStatus) -> pb::RunStatus {
    match s {
        RunStatus::Queued => pb::RunStatus::Queued,
        RunStatus::Running => pb::RunStatus::Running,
        RunStatus::Waiting => pb::RunStatus::Waiting,
        RunStatus::Completed => pb::RunStatus::Completed,
        RunStatus::Failed => pb::RunStatus::Failed,
        RunStatus::Cancelled => pb::RunStatus::Cancelled,
    }
}

/// Protobuf status filter to engine (`UNSPECIFIED` = no filter).
pub fn status_filter(raw: i32) -> Result<Option<RunStatus>, Status> {
    let s = pb::RunStatus::try_from(raw)
        .map_err(|_| Status::invalid_argument(format!("status {raw} is not a RunStatus")))?;
    Ok(match s {
        pb::RunStatus::Unspecified => None,
        pb::RunStatus::Queued => Some(RunStatus::Queued),
        pb::RunStatus::Running => Some(RunStatus::Running),
        pb::RunStatus::Waiting => Some(RunStatus::Waiting),
        pb::RunStatus::Completed => Some(RunStatus::Completed),
        pb::RunStatus::Failed => Some(RunStatus::Failed),
        pb::RunStatus::Cancelled => Some(RunStatus::Cancelled),
    })
}

/// Engine failure to protobuf.
pub fn failure_to_pb(f: &Failure) -> pb::Failure {
    pb::Failure {
        message: f.message.clone(),
        r#type: f.error_type.clone(),
        non_retryable: f.non_retryable,
        details: f
            .details
            .clone()
            .map(String::into_bytes)
            .unwrap_or_default(),
        stack_trace: f.stack_trace.clone(),
    }
}

/// Protobuf failure to engine; details must be UTF-8 (JSON is checked by the engine).
pub fn failure_from_pb(field: &str, f: Option<pb::Failure>) -> Result<Failure, Status> {
    let f = f.ok_or_else(|| Status::invalid_argument(format!("{field} is required")))?;
    let details =
        if f.details.is_empty() {
            None
        } else {
            Some(String::from_utf8(f.details).map_err(|_| {
                Status::invalid_argument(format!("{field}.details is not UTF-8 JSON"))
            })?)
        };
    Ok(Failure {
        message: f.message,
        error_type: f.r#type,
        non_retryable: f.non_retryable,
        details,
        stack_trace: f.stack_trace,
    })
}

/// Protobuf retry policy to engine overrides (zero = default).
pub fn retry_from_pb(p: Option<pb::RetryPolicy>) -> Result<RetryPolicyInput, Status> {
    let Some(p) = p else {
        return Ok(RetryPolicyInput::default());
    };
    Ok(RetryPolicyInput {
        max_attempts: (p.max_attempts != 0).then_some(p.max_attempts),
        initial_interval_ms: dur_ms("retry_policy.initial_interval", &p.initial_interval)?,
        backoff_coefficient: (p.backoff_coefficient != 0.0).then_some(p.backoff_coefficient),
        maximum_interval_ms: dur_ms("retry_policy.maximum_interval", &p.maximum_interval)?,
    })
}

/// Engine retry policy to protobuf.
pub fn retry_to_pb(p: &RetryPolicy) -> pb::RetryPolicy {
    pb::RetryPolicy {
        max_attempts: p.max_attempts,
        initial_interval: Some(dur(p.initial_interval_ms)),
        backoff_coefficient: p.backoff_coefficient,
        maximum_interval: Some(dur(p.maximum_interval_ms)),
    }
}

/// Engine run to protobuf (without attempts and steps).
pub fn run_to_pb(r: &RunRecord) -> pb::Run {
    pb::Run {
        id: r.id.clone(),
        job: r.job.clone(),
        queue: r.queue.clone(),
        status: status_to_pb(r.status) as i32,
        payload: r.payload.clone().into_bytes(),
        result: r.result.clone().map(String::into_bytes).unwrap_or_default(),
        failure: r.failure.as_ref().map(failure_to_pb),
        attempt: r.attempt,
        max_attempts: r.max_attempts,
        retry_policy: Some(retry_to_pb(&r.retry)),
        idempotency_key: r.idempotency_key.clone().unwrap_or_default(),
        created_at: Some(ts(r.created_at)),
        updated_at: Some(ts(r.updated_at)),
        finished_at: r.finished_at.map(ts),
        next_attempt_at: (r.status == RunStatus::Queued).then(|| ts(r.available_at)),
        lease_timeout: r.lease_timeout_ms.map(dur),
        attempts: Vec::new(),
        steps: Vec::new(),
        priority: r.priority,
        concurrency_key: r.concurrency_key.clone().unwrap_or_default(),
        wait: None,
        timeline: Vec::new(),
        logs: Vec::new(),
        parent_run_id: r.parent_run_id.clone().unwrap_or_default(),
        parent_step_id: r.parent_step_id.clone().unwrap_or_default(),
    }
}

/// Engine journal kind to protobuf.
pub fn kind_to_pb(k: StepKind) -> pb::JournalEntryKind {
    match k {
        StepKind::Step => pb::JournalEntryKind::Step,
        StepKind::State => pb::JournalEntryKind::State,
        StepKind::Sleep => pb::JournalEntryKind::Sleep,
        StepKind::Event => pb::JournalEntryKind::Event,
        StepKind::Child => pb::JournalEntryKind::Child,
        StepKind::Any => pb::JournalEntryKind::Any,
        StepKind::All => pb::JournalEntryKind::All,
    }
}

fn attempt_to_pb(a: &AttemptRecord) -> pb::Attempt {
    pb::Attempt {
        number: a.number,
        worker_id: a.worker_id.clone(),
        started_at: Some(ts(a.started_at)),
        ended_at: a.ended_at.map(ts),
        failure: a.failure.as_ref().map(failure_to_pb),
    }
}

fn step_to_pb(s: &StepRecord) -> pb::Step {
    pb::Step {
        id: s.step_id.clone(),
        kind: kind_to_pb(s.kind) as i32,
        attempt: s.attempt,
        started_at: s.started_at.map(ts),
        completed_at: Some(ts(s.completed_at)),
        output_size: s.output_size,
        failure: s.failure.as_ref().map(failure_to_pb),
        output: s.output.clone().map(String::into_bytes).unwrap_or_default(),
        status: if s.failure.is_some() {
            pb::StepStatus::Failed
        } else {
            pb::StepStatus::Completed
        } as i32,
        duration: s.started_at.map(|st| dur((s.completed_at - st).max(0))),
    }
}

/// A run in full.
pub fn detail_to_pb(d: &RunDetail) -> pb::Run {
    let mut run = run_to_pb(&d.run);
    run.attempts = d.attempts.iter().map(attempt_to_pb).collect();
    run.steps = d.steps.iter().map(step_to_pb).collect();
    run.wait = d.wait.as_ref().map(super::event_convert::wait_to_pb);
    run.timeline = d
        .timeline
        .iter()
        .map(super::obs_convert::timeline_to_pb)
        .collect();
    run.logs = d.logs.iter().map(super::obs_convert::log_to_pb).collect();
    run
}

/// A journal entry.
pub fn journal_to_pb(s: &StepRecord) -> pb::JournalEntry {
    pb::JournalEntry {
        id: s.step_id.clone(),
        kind: kind_to_pb(s.kind) as i32,
        outcome: Some(match (&s.output, &s.failure) {
            (_, Some(f)) => pb::journal_entry::Outcome::Failure(failure_to_pb(f)),
            (Some(o), None) => pb::journal_entry::Outcome::Output(o.clone().into_bytes()),
            (None, None) => pb::journal_entry::Outcome::Output(b"null".to_vec()),
        }),
        attempt: s.attempt,
        completed_at: Some(ts(s.completed_at)),
    }
}

/// A claimed task.
pub fn task_to_pb(t: &ClaimedTask) -> pb::Task {
    pb::Task {
        run_id: t.run.id.clone(),
        job: t.run.job.clone(),
        queue: t.run.queue.clone(),
        payload: t.run.payload.clone().into_bytes(),
        attempt: t.run.attempt,
        max_attempts: t.run.max_attempts,
        lease_token: t.lease_token.clone(),
        lease_deadline: Some(ts(t.lease_deadline)),
        lease_timeout: Some(dur(t.lease_ms)),
        journal: t.journal.iter().map(journal_to_pb).collect(),
        run_created_at: Some(ts(t.run.created_at)),
        resumed: t.resumed,
    }
}

/// Protobuf job specs to engine.
pub fn jobs_from_pb(jobs: Vec<pb::JobSpec>) -> Result<Vec<JobSpec>, Status> {
    jobs.into_iter()
        .map(|j| {
            Ok(JobSpec {
                lease_timeout_ms: dur_ms("jobs[].lease_timeout", &j.lease_timeout)?,
                name: j.name,
            })
        })
        .collect()
}

/// Empty string = not given.
pub fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}
