//! Schedules as the engine and the store see them: the definition a user creates (what to
//! start, when, and what to do about missed times) and the stored record with its firing
//! state. Rules are in `docs/schedules.md`.

use super::requests::RetryPolicyInput;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleSpec {
    /// A cron expression (5 fields, or 6 with seconds first) evaluated in an IANA time zone.
    Cron {
        /// The expression as given.
        expression: String,
        /// IANA time zone name (e.g. `Europe/Paris`); `UTC` when the caller gave none.
        time_zone: String,
    },
    /// Every `interval_ms`, aligned to the Unix epoch (an interval of 1 h fires at the top
    /// of every UTC hour).
    Interval {
        /// The interval in milliseconds (at least 1 s).
        interval_ms: i64,
    },
}

/// What a schedule does about times that passed while it could not fire (server down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Fire only times noticed at most [`super::schedule_spec::ON_TIME_GRACE_MS`] late;
    /// older missed times are skipped.
    Skip,
    /// Fire once, for the most recent missed time (the default).
    Latest,
    /// Fire every missed time, oldest first, at most
    /// [`super::schedule_spec::MAX_CATCH_UP_RUNS`] (the most recent ones).
    All,
}

impl CatchUp {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Latest => "latest",
            Self::All => "all",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "skip" => Some(Self::Skip),
            "latest" => Some(Self::Latest),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

/// The part of a schedule a user defines; two creates with equal definitions are the same
/// schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDefinition {
    /// Job started at each firing.
    pub job: String,
    /// Queue of the runs.
    pub queue: String,
    /// Payload JSON text of every run.
    pub payload: String,
    /// Retry overrides (unset fields take the queue's, else the server's defaults at
    /// firing time).
    pub retry: RetryPolicyInput,
    /// Lease timeout of the runs.
    pub lease_timeout_ms: Option<i64>,
    /// Delivery priority of the runs.
    pub priority: i32,
    /// When it fires.
    pub spec: ScheduleSpec,
    /// Missed-time policy.
    pub catch_up: CatchUp,
}

/// A schedule to insert.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Namespace.
    pub namespace: String,
    /// User-chosen id, unique per namespace.
    pub id: String,
    /// Definition.
    pub definition: ScheduleDefinition,
    /// Created paused.
    pub paused: bool,
    /// First instant it fires.
    pub next_fire_at: i64,
    /// Creation time.
    pub now: i64,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// Namespace.
    pub namespace: String,
    /// Id.
    pub id: String,
    /// Definition.
    pub definition: ScheduleDefinition,
    /// Paused: it does not fire.
    pub paused: bool,
    /// The next scheduled time it fires at (while not paused).
    pub next_fire_at: i64,
    /// The scheduled time of the most recent firing.
    pub last_fire_at: Option<i64>,
    /// Ids of the most recent runs it started, newest first (at most
    /// [`MAX_RECENT_RUNS`]).
    pub recent_run_ids: Vec<String>,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// Run ids a schedule remembers.
pub const MAX_RECENT_RUNS: usize = 10;

/// One firing, decided by the engine and applied atomically by the store.
#[derive(Debug, Clone)]
pub struct ScheduleFiring {
    /// Namespace.
    pub namespace: String,
    /// Schedule id.
    pub id: String,
    /// The `next_fire_at` the engine read: the firing applies only if it is unchanged
    /// (and the schedule is not paused), so that one firing wins among replicas.
    pub expected_next_fire_at: i64,
    /// The new `next_fire_at`.
    pub next_fire_at: i64,
    /// The scheduled time of the newest run started; `None` when the policy skipped every
    /// due time (the stored value is kept).
    pub last_fire_at: Option<i64>,
    /// The runs to start (possibly none when the policy skips missed times), each with
    /// its `schedule:<id>:<time>` idempotency key.
    pub runs: Vec<super::model::NewRun>,
    /// Now.
    pub now: i64,
}

/// `CreateSchedule` input, built by the API layer.
#[derive(Debug, Clone)]
pub struct CreateScheduleInput {
    /// User-chosen id.
    pub id: String,
    /// Job to start.
    pub job: String,
    /// Queue; `None` = `default`.
    pub queue: Option<String>,
    /// Payload bytes (JSON); empty = `null`.
    pub payload: Vec<u8>,
    /// Retry overrides.
    pub retry: RetryPolicyInput,
    /// Lease timeout of the runs.
    pub lease_timeout_ms: Option<i64>,
    /// Delivery priority of the runs.
    pub priority: i32,
    /// When it fires.
    pub spec: ScheduleSpec,
    /// Missed-time policy; `None` = [`CatchUp::Latest`].
    pub catch_up: Option<CatchUp>,
    /// Create it paused.
    pub paused: bool,
}
