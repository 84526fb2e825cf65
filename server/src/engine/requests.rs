//! Inputs of engine operations, built by the API layer from protobuf requests. Durations
//! are milliseconds; `None` means "not given, use the default".

use super::model::JobSpec;

/// Retry policy fields a start may override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryPolicyInput {
    /// Total attempts.
    pub max_attempts: Option<i32>,
    /// Initial delay.
    pub initial_interval_ms: Option<i64>,
    /// Backoff multiplier.
    pub backoff_coefficient: Option<f64>,
    /// Maximum delay.
    pub maximum_interval_ms: Option<i64>,
}

/// `StartRun` input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartRunInput {
    /// Job name.
    pub job: String,
    /// Payload bytes (JSON).
    pub payload: Vec<u8>,
    /// Queue; `None` = `default`.
    pub queue: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Idempotency TTL.
    pub idempotency_ttl_ms: Option<i64>,
    /// Retry policy overrides.
    pub retry: RetryPolicyInput,
    /// Lease timeout.
    pub lease_timeout_ms: Option<i64>,
    /// Delay before the first delivery.
    pub delay_ms: Option<i64>,
    /// Earliest delivery instant (epoch milliseconds).
    pub run_at_ms: Option<i64>,
    /// Delivery priority (higher first); 0 by default.
    pub priority: i32,
    /// Concurrency key.
    pub concurrency_key: Option<String>,
}

/// `UpsertQueue` input.
#[derive(Debug, Clone, Default)]
pub struct UpsertQueueInput {
    /// Queue name.
    pub name: String,
    /// Full configuration (validated by the engine).
    pub config: super::queue_model::QueueConfig,
    /// New pause switch; `None` leaves it unchanged.
    pub paused: Option<bool>,
}

/// `PollTask` input.
#[derive(Debug, Clone, Default)]
pub struct PollInput {
    /// Worker id.
    pub worker_id: String,
    /// Queues; empty = `default`.
    pub queues: Vec<String>,
    /// Jobs served.
    pub jobs: Vec<JobSpec>,
    /// Maximum tasks; 0 = 1.
    pub max_tasks: i32,
    /// How long to block.
    pub wait_ms: Option<i64>,
}

/// Outcome given to `CompleteStep`.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// Output bytes (JSON).
    Output(Vec<u8>),
    /// Terminal failure.
    Failure(super::model::Failure),
}
