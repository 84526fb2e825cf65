//! Domain types of runs, attempts and steps, shared by the engine and the storage layer.
//! Timestamps are milliseconds since the Unix epoch; JSON values are kept as text.

use std::fmt;

/// Lifecycle state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// An attempt holds a lease.
    Running,
    /// Suspended on a timer or an event.
    Waiting,
    /// Finished with a result.
    Completed,
    /// Finished with a failure.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl RunStatus {
    /// The status as stored (lowercase).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "waiting" => Self::Waiting,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// True for completed, failed and cancelled.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A structured error shared by steps, attempts and runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// Human-readable message.
    pub message: String,
    /// The error's type name in the worker's language.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_type: String,
    /// When true the run is not retried.
    #[serde(default)]
    pub non_retryable: bool,
    /// Optional JSON details (as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Optional stack trace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stack_trace: String,
}

impl Failure {
    /// A failure with just a message and a type name.
    pub fn new(message: impl Into<String>, error_type: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
            ..Self::default()
        }
    }
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts allowed, the first included.
    pub max_attempts: i32,
    /// Delay before the second attempt, in milliseconds.
    pub initial_interval_ms: i64,
    /// Multiplier applied after each failed attempt.
    pub backoff_coefficient: f64,
    /// Upper bound for the delay, in milliseconds.
    pub maximum_interval_ms: i64,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s initial delay, doubling, at most 5 minutes.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 300_000,
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Unique id (UUIDv7 text).
    pub id: String,
    /// Owning namespace.
    pub namespace: String,
    /// Job name.
    pub job: String,
    /// Queue name.
    pub queue: String,
    /// Current status.
    pub status: RunStatus,
    /// Payload JSON text.
    pub payload: String,
    /// Result JSON text, when completed.
    pub result: Option<String>,
    /// Failure that ended the run, or the cancellation reason.
    pub failure: Option<Failure>,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Effective retry policy.
    pub retry: RetryPolicy,
    /// Lease timeout requested at start.
    pub lease_timeout_ms: Option<i64>,
    /// Lease timeout of the current attempt.
    pub effective_lease_ms: Option<i64>,
    /// Token of the current (or last) attempt's lease.
    pub lease_token: Option<String>,
    /// When the current lease expires.
    pub lease_expires_at: Option<i64>,
    /// Worker holding (or last holding) the lease.
    pub worker_id: Option<String>,
    /// When a queued run becomes deliverable.
    pub available_at: i64,
    /// Idempotency key given at start.
    pub idempotency_key: Option<String>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// When the run reached a final status.
    pub finished_at: Option<i64>,
    /// Delivery priority within the queue (higher first).
    pub priority: i32,
    /// Concurrency key given at start.
    pub concurrency_key: Option<String>,
    /// The run whose `step.invoke` started this run (see docs/children.md).
    pub parent_run_id: Option<String>,
    /// The parent's wait step id that started this run.
    pub parent_step_id: Option<String>,
    /// Journal entries recorded (or reserved by a pending wait) so far; see
    /// [`super::history::HistoryLimits`].
    pub step_count: i64,
}

/// One delivery of a run to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// Attempt number from 1.
    pub number: i32,
    /// Worker that received it.
    pub worker_id: String,
    /// Delivery time.
    pub started_at: i64,
    /// End time, when ended.
    pub ended_at: Option<i64>,
    /// Why it failed.
    pub failure: Option<Failure>,
}

/// Kind of a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// A `step.run` result.
    Step,
    /// A state call made from inside a run (its recorded result).
    State,
    /// A durable sleep that ended.
    Sleep,
    /// An event wait that ended (matched or timed out).
    Event,
    /// A wait for child runs that ended (every child reached a final status).
    Child,
    /// A `wait_for_any` that ended (one item resolved, or the whole wait timed out).
    Any,
    /// A `wait_for_all` that ended (every item resolved, or the whole wait timed out).
    All,
}

impl StepKind {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Step => "step",
            Self::State => "state",
            Self::Sleep => "sleep",
            Self::Event => "event",
            Self::Child => "child",
            Self::Any => "any",
            Self::All => "all",
        }
    }

    /// Parses a stored kind.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "step" => Some(Self::Step),
            "state" => Some(Self::State),
            "sleep" => Some(Self::Sleep),
            "event" => Some(Self::Event),
            "child" => Some(Self::Child),
            "any" => Some(Self::Any),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// A recorded step result (a journal entry).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Step id with its occurrence suffix.
    pub step_id: String,
    /// What produced it.
    pub kind: StepKind,
    /// The attempt that recorded it.
    pub attempt: i32,
    /// Output JSON text (absent for a terminal failure).
    pub output: Option<String>,
    /// Terminal failure.
    pub failure: Option<Failure>,
    /// Output size in bytes.
    pub output_size: i64,
    /// When the worker started the step body.
    pub started_at: Option<i64>,
    /// When the result was recorded.
    pub completed_at: i64,
}

/// A run with everything recorded about it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    /// The run.
    pub run: RunRecord,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Its recorded steps, in completion order.
    pub steps: Vec<StepRecord>,
    /// What it is suspended on, while it is waiting.
    pub wait: Option<super::event_model::WaitRecord>,
    /// Its timeline, oldest first (see `obs_model`).
    pub timeline: Vec<super::obs_model::TimelineRecord>,
    /// Its log lines, oldest first.
    pub logs: Vec<super::obs_model::LogRecord>,
}

/// Everything needed to insert a run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// Pre-generated id.
    pub id: String,
    /// Owning namespace.
    pub namespace: String,
    /// Job name.
    pub job: String,
    /// Queue name.
    pub queue: String,
    /// Payload JSON text.
    pub payload: String,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Lease timeout requested at start.
    pub lease_timeout_ms: Option<i64>,
    /// Idempotency key and the time it expires.
    pub idempotency: Option<(String, i64)>,
    /// Creation time.
    pub now: i64,
    /// When the run becomes deliverable (`now` unless delayed).
    pub available_at: i64,
    /// Delivery priority within the queue (higher first).
    pub priority: i32,
    /// Concurrency key.
    pub concurrency_key: Option<String>,
    /// For a child run: the parent wait that started it.
    pub parent: Option<ParentLink>,
}

/// Where a child run hangs in its parent: the parent run, the wait's step id and the
/// child's position in that wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLink {
    /// The parent run.
    pub run_id: String,
    /// The parent's wait step id.
    pub step_id: String,
    /// Position among the wait's children, from 0.
    pub index: i32,
}

/// What `start_run` did.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// A new run was created.
    Created(RunRecord),
    /// The idempotency key matched this existing run.
    Duplicate(RunRecord),
}

/// A job a worker can execute.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Job name.
    pub name: String,
    /// Lease timeout for runs that did not set one.
    pub lease_timeout_ms: Option<i64>,
}

/// A request to claim tasks.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Namespace of the worker.
    pub namespace: String,
    /// Worker id, recorded on attempts.
    pub worker_id: String,
    /// Queues served.
    pub queues: Vec<String>,
    /// Jobs served.
    pub jobs: Vec<JobSpec>,
    /// Maximum tasks.
    pub max_tasks: usize,
    /// Lease timeout when neither the run nor the job sets one.
    pub default_lease_ms: i64,
    /// Claim time.
    pub now: i64,
}

/// A claimed attempt with its lease and journal.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    /// The run after the claim (status running, attempt incremented).
    pub run: RunRecord,
    /// Lease token of this attempt.
    pub lease_token: String,
    /// Lease deadline.
    pub lease_deadline: i64,
    /// Lease duration.
    pub lease_ms: i64,
    /// Steps recorded so far.
    pub journal: Vec<StepRecord>,
    /// True when this delivery resumes an attempt after a wait (same attempt number).
    pub resumed: bool,
}

/// Names an attempt's lease in a worker write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    /// Namespace of the worker.
    pub namespace: String,
    /// The run.
    pub run_id: String,
    /// The attempt's lease token.
    pub token: String,
}

/// A step result to record.
#[derive(Debug, Clone)]
pub struct NewStep {
    /// Step id with its occurrence suffix.
    pub step_id: String,
    /// What produced it.
    pub kind: StepKind,
    /// Output JSON text.
    pub output: Option<String>,
    /// Terminal failure.
    pub failure: Option<Failure>,
    /// When the worker started the step body.
    pub started_at: Option<i64>,
}

/// Outcome of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// New lease deadline.
    pub lease_deadline: i64,
    /// True when the run was cancelled.
    pub cancel_requested: bool,
}

/// Outcome of a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct FailOutcome {
    /// The run after the failure.
    pub run: RunRecord,
    /// When the retry becomes deliverable, if one was scheduled.
    pub next_attempt_at: Option<i64>,
}

/// Filter for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this job.
    pub job: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only runs created at or after this instant (ms).
    pub created_after: Option<i64>,
    /// Only runs created before this instant (ms).
    pub created_before: Option<i64>,
    /// Only runs started with this idempotency key.
    pub idempotency_key: Option<String>,
}

/// What the lease reaper changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpiredLeases {
    /// Runs queued again: `(namespace, queue, job)`.
    pub requeued: Vec<(String, String, String)>,
    /// Runs that failed because their attempts were used up.
    pub failed: Vec<String>,
    /// `(namespace, queue)` of every expired lease: capacity freed on limited queues.
    pub released: Vec<(String, String)>,
    /// `(run id, namespace, job, queue)` of every expired lease (for watchers and metrics).
    pub expired: Vec<(String, String, String, String)>,
}

/// An API key as stored (never the key itself, only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id, shown in listings.
    pub id: String,
    /// Namespace the key grants access to.
    pub namespace: String,
    /// A label.
    pub name: String,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    /// Creation time.
    pub created_at: i64,
    /// Revocation time, when revoked.
    pub revoked_at: Option<i64>,
    /// Whether the key may manage keys (`KeysService`).
    pub admin: bool,
}
