//! Event triggers as the engine and the store see them: a job subscribed to an event name
//! (optionally to one correlation key), with the start options of the runs it gets. Rules
//! are in `docs/schedules.md`.

use super::requests::RetryPolicyInput;

/// The part of a trigger a user defines.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerDefinition {
    /// Event name it listens to.
    pub event_name: String,
    /// Only events with exactly this key; empty = any key.
    pub correlation_key: String,
    /// Job started for each matching event.
    pub job: String,
    /// Queue of the runs.
    pub queue: String,
    /// Retry overrides (the queue's, else the server's defaults fill the rest at publish).
    pub retry: RetryPolicyInput,
    /// Lease timeout of the runs.
    pub lease_timeout_ms: Option<i64>,
    /// Delivery priority of the runs.
    pub priority: i32,
}

/// A stored trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerRecord {
    /// Namespace.
    pub namespace: String,
    /// Server-assigned id.
    pub id: String,
    /// Definition.
    pub definition: TriggerDefinition,
    /// Creation time.
    pub created_at: i64,
}

/// `CreateEventTrigger` input, built by the API layer.
#[derive(Debug, Clone, Default)]
pub struct CreateTriggerInput {
    /// Event name.
    pub event_name: String,
    /// Correlation key filter; `None` = any key.
    pub correlation_key: Option<String>,
    /// Job.
    pub job: String,
    /// Queue; `None` = `default`.
    pub queue: Option<String>,
    /// Retry overrides.
    pub retry: RetryPolicyInput,
    /// Lease timeout.
    pub lease_timeout_ms: Option<i64>,
    /// Priority.
    pub priority: i32,
}

/// Filter of `ListEventTriggers`.
#[derive(Debug, Clone, Default)]
pub struct TriggerFilter {
    /// Only triggers of this event name.
    pub event_name: Option<String>,
    /// Only triggers of this job.
    pub job: Option<String>,
}

/// Most triggers one event name may have in a namespace (each publish starts at most this
/// many runs).
pub const MAX_TRIGGERS_PER_EVENT: usize = 100;
