//! Domain types of queues: configuration, live statistics, and what a queue-aware claim
//! reports besides the tasks it took. Durations and timestamps are milliseconds.

use super::model::ClaimedTask;
use super::requests::RetryPolicyInput;

/// At most `limit` attempts start in any window of `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Attempts allowed per window.
    pub limit: i32,
    /// Window length.
    pub period_ms: i64,
}

/// A queue's configuration. `None` means "unlimited" for limits and "the server default"
/// for the retry policy fields and the lease timeout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueConfig {
    /// Most runs of the queue holding a lease at once.
    pub concurrency_limit: Option<i32>,
    /// Most runs holding a lease at once per concurrency key.
    pub key_concurrency_limit: Option<i32>,
    /// Attempts started per window.
    pub rate_limit: Option<RateLimit>,
    /// Retry policy fields for runs started without them.
    pub retry: RetryPolicyInput,
    /// Lease timeout for runs started without one.
    pub lease_timeout_ms: Option<i64>,
}

impl QueueConfig {
    /// True when a claim must count leases or starts before taking runs of this queue.
    pub fn is_limited(&self) -> bool {
        self.concurrency_limit.is_some()
            || self.key_concurrency_limit.is_some()
            || self.rate_limit.is_some()
    }
}

/// A queue as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRecord {
    /// Owning namespace.
    pub namespace: String,
    /// Queue name.
    pub name: String,
    /// Configuration.
    pub config: QueueConfig,
    /// True while delivery is paused.
    pub paused: bool,
    /// Creation time.
    pub created_at: i64,
    /// Last configuration or pause change.
    pub updated_at: i64,
}

/// Live counts of a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Runs in status `queued` (delayed ones included).
    pub queued: i64,
    /// Queued runs not yet deliverable.
    pub delayed: i64,
    /// Runs holding a lease.
    pub running: i64,
    /// Suspended runs.
    pub waiting: i64,
    /// Completed runs.
    pub completed: i64,
    /// Failed runs.
    pub failed: i64,
    /// Cancelled runs.
    pub cancelled: i64,
    /// Since when the oldest deliverable queued run has been deliverable.
    pub oldest_ready_at: Option<i64>,
    /// Concurrency keys with the most running runs, most first.
    pub running_by_key: Vec<(String, i64)>,
    /// Attempts started within the current rate-limit window.
    pub rate_window_started: i64,
}

/// A queue with its live statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    /// The queue.
    pub queue: QueueRecord,
    /// Its counts, computed when read.
    pub stats: QueueStats,
}

/// What a queue-aware claim did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimOutcome {
    /// The tasks claimed.
    pub tasks: Vec<ClaimedTask>,
    /// Queues from which the claim may have left deliverable runs behind because the queue
    /// is paused or at a concurrency limit. Freed capacity on them must wake the poller.
    pub blocked: Vec<String>,
    /// The earliest instant a rate-limited queue of the claim gets room again.
    pub retry_at: Option<i64>,
    /// A limited queue was being claimed by another transaction at the same moment
    /// (another server replica); the claim should be tried again shortly.
    pub contended: bool,
}
