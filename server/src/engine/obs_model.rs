//! Observability records: a run's timeline (every transition, timestamped) and the log
//! lines its handler sent, with the per-run log cap. See `docs/observability.md`.

/// Most log lines stored per run (the truncation marker comes on top).
pub const MAX_LOG_LINES_PER_RUN: i64 = 1_000;
/// Most log bytes (message + fields) stored per run.
pub const MAX_LOG_BYTES_PER_RUN: i64 = 1024 * 1024;
/// Longest log message in bytes; longer ones are cut.
pub const MAX_LOG_MESSAGE_BYTES: usize = 8 * 1024;
/// Largest JSON object of structured fields of one line, in bytes.
pub const MAX_LOG_FIELDS_BYTES: usize = 16 * 1024;
/// Most lines in one `AppendLogs` request.
pub const MAX_LOG_BATCH: usize = 1_000;

/// What happened to a run at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimelineKind {
    /// Created by a start.
    Created,
    /// A new attempt was delivered.
    AttemptStarted,
    /// A suspended attempt was delivered again after its wait.
    AttemptResumed,
    /// A step result was recorded.
    StepCompleted,
    /// A step failed non-retryably.
    StepFailed,
    /// The run started a sleep or an event wait.
    Waiting,
    /// An event resolved the run's wait.
    EventMatched,
    /// A sleep ended.
    TimerFired,
    /// An event wait timed out.
    WaitTimedOut,
    /// An attempt failed; a retry is scheduled.
    RetryScheduled,
    /// An attempt's lease expired.
    LeaseExpired,
    /// The run completed.
    Completed,
    /// The run failed for good.
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// `RetryRun` queued the run again.
    Retried,
    /// The run reached its log cap.
    LogsTruncated,
    /// The run reached its timeline cap; later entries are dropped (except how it ends).
    TimelineTruncated,
}

impl TimelineKind {
    /// Every kind, for parsing.
    pub const ALL: [TimelineKind; 17] = [
        Self::Created,
        Self::AttemptStarted,
        Self::AttemptResumed,
        Self::StepCompleted,
        Self::StepFailed,
        Self::Waiting,
        Self::EventMatched,
        Self::TimerFired,
        Self::WaitTimedOut,
        Self::RetryScheduled,
        Self::LeaseExpired,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Retried,
        Self::LogsTruncated,
        Self::TimelineTruncated,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::AttemptStarted => "attempt_started",
            Self::AttemptResumed => "attempt_resumed",
            Self::StepCompleted => "step_completed",
            Self::StepFailed => "step_failed",
            Self::Waiting => "waiting",
            Self::EventMatched => "event_matched",
            Self::TimerFired => "timer_fired",
            Self::WaitTimedOut => "wait_timed_out",
            Self::RetryScheduled => "retry_scheduled",
            Self::LeaseExpired => "lease_expired",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Retried => "retried",
            Self::LogsTruncated => "logs_truncated",
            Self::TimelineTruncated => "timeline_truncated",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One stored timeline entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineRecord {
    /// Increasing position.
    pub id: i64,
    /// When (ms).
    pub at: i64,
    /// What.
    pub kind: TimelineKind,
    /// Attempt number, 0 when none.
    pub attempt: i32,
    /// Step concerned.
    pub step_id: Option<String>,
    /// A retry's due time or a wait's wake time (ms).
    pub scheduled_at: Option<i64>,
    /// Extra facts as a JSON object (never payloads or outputs).
    pub detail: Option<String>,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

impl LogLevel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Debug, Self::Info, Self::Warn, Self::Error]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// The stored level of the truncation marker.
pub const TRUNCATED_LEVEL: &str = "truncated";

/// A log line to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLog {
    /// Severity.
    pub level: LogLevel,
    /// Message (already cut to the limit).
    pub message: String,
    /// Structured fields as a JSON object text.
    pub fields: Option<String>,
    /// The step executing when it was logged.
    pub step_id: Option<String>,
    /// When it was logged (ms).
    pub at: i64,
}

impl NewLog {
    /// Bytes counted against the run's cap.
    pub fn size(&self) -> i64 {
        (self.message.len() + self.fields.as_ref().map_or(0, String::len)) as i64
    }
}

/// A stored log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Increasing position.
    pub id: i64,
    /// Severity (`None` for the truncation marker).
    pub level: Option<LogLevel>,
    /// Message.
    pub message: String,
    /// Structured fields as JSON object text.
    pub fields: Option<String>,
    /// Step.
    pub step_id: Option<String>,
    /// When (ms).
    pub at: i64,
    /// Attempt that logged it.
    pub attempt: i32,
    /// True for the truncation marker.
    pub truncated: bool,
}

/// What `append_logs` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Lines stored.
    pub accepted: usize,
    /// Lines dropped by the cap.
    pub dropped: usize,
}

/// Group-commit statistics of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Commits.
    pub commits: u64,
    /// Writes committed.
    pub writes: u64,
    /// Statements (database round trips) the group-commit writer ran.
    pub statements: u64,
    /// `(upper bound, commits with at most that many writes)`, not cumulative.
    pub batches: Vec<(u64, u64)>,
}
