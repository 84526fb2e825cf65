//! What the SDK returns about runs: [`Run`] with its [`RunStatus`], [`AttemptInfo`]s,
//! [`StepInfo`]s, [`Failure`], [`TimelineEntry`]s and [`LogLine`]s, plus [`StartedRun`] and
//! [`RunPage`]. These are plain Rust
//! types (JSON as [`serde_json::Value`], timestamps as [`chrono::DateTime<Utc>`]); the
//! conversions from the wire types live in [`crate::convert`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::options::RetryPolicy;

/// The lifecycle state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Waiting for a worker (possibly until a retry delay has passed).
    Queued,
    /// An attempt holds a lease and a worker executes the handler.
    Running,
    /// Suspended (durable sleep or waiting for an event); holds no worker.
    Waiting,
    /// The handler returned; the result is recorded. Final.
    Completed,
    /// The last attempt failed, or a failure was non-retryable. Final until retried.
    Failed,
    /// Cancelled. Final until retried.
    Cancelled,
}

impl RunStatus {
    /// True for completed, failed and cancelled runs.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// The lowercase name used in docs and UIs: `queued`, `running`, `waiting`,
    /// `completed`, `failed`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = crate::Error;

    /// Parses the lowercase name (`"completed"`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "waiting" => RunStatus::Waiting,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" | "canceled" => RunStatus::Cancelled,
            _ => {
                return Err(crate::Error::InvalidArgument(format!(
                    "unknown run status {s:?}"
                )));
            }
        })
    }
}

/// A structured error, shared by failed steps, attempts and runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Failure {
    /// Human-readable message (for handler errors: the whole error chain).
    pub message: String,
    /// The error's type name in the worker's language, when known.
    pub error_type: Option<String>,
    /// True when the failure ended the run without further retries.
    pub non_retryable: bool,
    /// Optional structured details.
    pub details: Option<Value>,
    /// Optional stack trace as text.
    pub stack_trace: Option<String>,
}

impl Failure {
    /// A failure with just a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::default()
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error_type {
            Some(t) if !t.is_empty() => write!(f, "{t}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// One execution of a job with a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Unique id (a UUIDv7 string; ids sort by creation time).
    pub id: String,
    /// The job's name.
    pub job: String,
    /// The queue the run is on.
    pub queue: String,
    /// Current status.
    pub status: RunStatus,
    /// The payload (`null` when started without one).
    pub payload: Value,
    /// The handler's result, once completed.
    pub result: Option<Value>,
    /// The failure that ended the run (failed), or the cancellation reason (cancelled).
    pub failure: Option<Failure>,
    /// Number of attempts started so far.
    pub attempt: i32,
    /// Attempts allowed before the run fails.
    pub max_attempts: i32,
    /// The effective retry policy, when the server reports it.
    pub retry_policy: Option<RetryPolicy>,
    /// The idempotency key given at start.
    pub idempotency_key: Option<String>,
    /// The lease timeout requested at start; `None` when the default applies.
    pub lease_timeout: Option<Duration>,
    /// When the run was created.
    pub created_at: DateTime<Utc>,
    /// When the run last changed.
    pub updated_at: DateTime<Utc>,
    /// When the run reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// For a queued run: when it becomes deliverable (e.g. after a retry delay).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Attempts, oldest first. Filled by `get_run`/`wait_for_run` only.
    pub attempts: Vec<AttemptInfo>,
    /// Recorded steps in the order they completed. Filled by `get_run`/`wait_for_run`
    /// only.
    pub steps: Vec<StepInfo>,
    /// Delivery priority within the queue (higher first).
    pub priority: i32,
    /// The concurrency key given at start.
    pub concurrency_key: Option<String>,
    /// What the run is suspended on while it is [`RunStatus::Waiting`]. Filled by
    /// `get_run`/`wait_for_run` only.
    pub wait: Option<WaitInfo>,
    /// What happened to the run, oldest first: creation, attempts, steps, waits, retries,
    /// the outcome (see `docs/observability.md`). Filled by `get_run`/`wait_for_run` only.
    pub timeline: Vec<TimelineEntry>,
    /// The lines the handler logged through `ctx.log`, oldest first (capped per run; see
    /// [`LogLine::truncated`]). Filled by `get_run`/`wait_for_run` only.
    pub logs: Vec<LogLine>,
    /// For a child run: the run whose `step.invoke` / `step.invoke_all` started it.
    pub parent_run_id: Option<String>,
    /// For a child run: the parent's wait step id that started it.
    pub parent_step_id: Option<String>,
}

impl Run {
    /// True when the run is completed, failed or cancelled.
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    /// The result deserialized into `T` (`Ok(None)` while there is no result).
    pub fn result_as<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, crate::Error> {
        self.result
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(crate::Error::from)
    }

    /// The recorded step with this id (including its occurrence suffix, e.g.
    /// `import-batch#2`).
    pub fn step(&self, id: &str) -> Option<&StepInfo> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// One delivery of a run to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptInfo {
    /// The attempt number, from 1.
    pub number: i32,
    /// The worker that received it.
    pub worker_id: String,
    /// When it was delivered.
    pub started_at: DateTime<Utc>,
    /// When it ended; `None` while running.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it failed; `None` when it succeeded or is still running.
    pub failure: Option<Failure>,
}

/// What produced a recorded step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepKind {
    /// A `step.run` result.
    Step,
    /// A durable sleep that ended (`step.sleep`, `step.sleep_until`).
    Sleep,
    /// An event wait that ended, with the event or a timed-out result
    /// (`step.wait_for_event`).
    Event,
    /// A wait for child runs that ended (`step.invoke`, `step.invoke_all`).
    Child,
    /// A `step.wait_for_any` that ended.
    Any,
    /// A `step.wait_for_all` that ended.
    All,
    /// A kind this SDK version does not know (the raw protobuf value).
    Other(i32),
}

/// What a waiting run is suspended on.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitInfo {
    /// The wait's id, with its occurrence suffix.
    pub step_id: String,
    /// [`StepKind::Sleep`] or [`StepKind::Event`].
    pub kind: StepKind,
    /// For an event wait: the event name.
    pub event_name: Option<String>,
    /// For an event wait: the correlation key (`None` when waiting for events without one).
    pub correlation_key: Option<String>,
    /// When the sleep ends, or when the event wait times out.
    pub wake_at: Option<DateTime<Utc>>,
    /// When the run suspended.
    pub since: Option<DateTime<Utc>>,
}

/// A recorded step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// The step id, with its occurrence suffix (`import-batch#2`).
    pub id: String,
    /// What produced it: a step, a sleep or an event wait. For an event wait, `output`
    /// is `{"timedOut": false, "event": {...}}` or `{"timedOut": true}`.
    pub kind: StepKind,
    /// The attempt that recorded it.
    pub attempt: i32,
    /// When the worker started executing the step body, if reported (for a sleep or an
    /// event wait: when the run suspended).
    pub started_at: Option<DateTime<Utc>>,
    /// When the result was recorded.
    pub completed_at: DateTime<Utc>,
    /// The step's output; `None` for a step that failed.
    pub output: Option<Value>,
    /// The terminal failure of a step that failed non-retryably.
    pub failure: Option<Failure>,
}

impl StepInfo {
    /// How long the step body took, when the worker reported its start.
    pub fn duration(&self) -> Option<chrono::TimeDelta> {
        self.started_at.map(|s| self.completed_at - s)
    }
}

/// What a [`TimelineEntry`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimelineKind {
    /// The run was created.
    Created,
    /// A worker received a new attempt.
    AttemptStarted,
    /// A worker received a resumed attempt after a sleep or an event wait.
    AttemptResumed,
    /// A step result was recorded.
    StepCompleted,
    /// A step failed non-retryably.
    StepFailed,
    /// The run started waiting on a sleep or an event.
    Waiting,
    /// A published event resolved the run's event wait.
    EventMatched,
    /// The run's sleep ended.
    TimerFired,
    /// The run's event wait timed out.
    WaitTimedOut,
    /// An attempt failed and a retry is scheduled.
    RetryScheduled,
    /// An attempt's lease expired.
    LeaseExpired,
    /// The run completed.
    Completed,
    /// The run failed for good.
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// `retry_run` queued a failed or cancelled run again.
    Retried,
    /// The run reached its log cap; later lines were dropped.
    LogsTruncated,
    /// The run reached its timeline cap; later entries were dropped (except how it ended).
    TimelineTruncated,
    /// A kind this SDK version does not know (the raw protobuf value).
    Other(i32),
}

impl TimelineKind {
    /// The lowercase name (`attempt_started`); `unknown` for [`TimelineKind::Other`].
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Created => "created",
            TimelineKind::AttemptStarted => "attempt_started",
            TimelineKind::AttemptResumed => "attempt_resumed",
            TimelineKind::StepCompleted => "step_completed",
            TimelineKind::StepFailed => "step_failed",
            TimelineKind::Waiting => "waiting",
            TimelineKind::EventMatched => "event_matched",
            TimelineKind::TimerFired => "timer_fired",
            TimelineKind::WaitTimedOut => "wait_timed_out",
            TimelineKind::RetryScheduled => "retry_scheduled",
            TimelineKind::LeaseExpired => "lease_expired",
            TimelineKind::Completed => "completed",
            TimelineKind::Failed => "failed",
            TimelineKind::Cancelled => "cancelled",
            TimelineKind::Retried => "retried",
            TimelineKind::LogsTruncated => "logs_truncated",
            TimelineKind::TimelineTruncated => "timeline_truncated",
            TimelineKind::Other(_) => "unknown",
        }
    }
}

impl fmt::Display for TimelineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One timestamped transition of a run (server clock).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    /// Position in the timeline: increasing in the order entries were written.
    pub id: i64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: TimelineKind,
    /// The attempt it belongs to; 0 when none (created, retried by request).
    pub attempt: i32,
    /// The step it concerns, if any.
    pub step_id: Option<String>,
    /// For a scheduled retry: when the next attempt is due; for a wait: when the sleep ends
    /// or the event wait times out.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Extra facts as a JSON object (e.g. `{"error": "..."}`); never payloads or outputs.
    pub detail: Option<Value>,
}

/// The severity of a [`LogLine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Debug detail.
    Debug,
    /// Normal information.
    Info,
    /// Something unexpected that the handler recovered from.
    Warn,
    /// An error.
    Error,
}

impl LogLevel {
    /// `debug`, `info`, `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line a handler logged through `ctx.log`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Position in the run's logs, increasing in the order lines were stored.
    pub id: i64,
    /// Severity.
    pub level: LogLevel,
    /// The message (at most 8 KiB).
    pub message: String,
    /// Structured fields (empty when none).
    pub fields: serde_json::Map<String, Value>,
    /// The step that was executing, if any.
    pub step_id: Option<String>,
    /// When the handler logged it (worker clock), if known.
    pub at: Option<DateTime<Utc>>,
    /// The attempt that logged it.
    pub attempt: i32,
    /// True for the marker the server stores when the run reached its log cap.
    pub truncated: bool,
}

/// The answer to `start`/`enqueue`.
#[derive(Debug, Clone, PartialEq)]
pub struct StartedRun {
    /// The run's id (same as `run.id`).
    pub id: String,
    /// True when the idempotency key matched an existing run: `run` is that run and no new
    /// run was created.
    pub duplicate: bool,
    /// The run as created (or found), without attempts and steps.
    pub run: Run,
}

/// One page of [`crate::StackShift::list_runs`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    /// The runs, newest first, without attempts and steps.
    pub runs: Vec<Run>,
    /// Pass as `page_token` to get the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}
