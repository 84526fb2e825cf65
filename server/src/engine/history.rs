//! History limits of a run (see `docs/limits.md`, "History limits"): how many journal
//! entries (steps) and timeline entries one run may accumulate, and the failure a run gets
//! when its worker asks for one journal entry too many.
//!
//! Storage enforces both with counters on the run row, maintained in the transaction that
//! adds the rows they count (no `COUNT(*)`).

use super::model::Failure;

/// Default of `--max-steps-per-run`.
pub const DEFAULT_MAX_STEPS_PER_RUN: i64 = 10_000;
/// Smallest accepted `--max-steps-per-run`.
pub const MIN_MAX_STEPS_PER_RUN: i64 = 10;
/// Largest accepted `--max-steps-per-run`.
pub const MAX_MAX_STEPS_PER_RUN: i64 = 1_000_000;
/// Default of `--max-timeline-entries`.
pub const DEFAULT_MAX_TIMELINE_ENTRIES: i64 = 10_000;
/// Smallest accepted `--max-timeline-entries`.
pub const MIN_MAX_TIMELINE_ENTRIES: i64 = 10;
/// Largest accepted `--max-timeline-entries`.
pub const MAX_MAX_TIMELINE_ENTRIES: i64 = 1_000_000;

/// The reason sent in the `stackshift-error-reason` metadata with a step-limit refusal.
pub const STEP_LIMIT_REASON: &str = "STEP_LIMIT";
/// The failure type of a run failed by the step limit.
pub const STEP_LIMIT_ERROR_TYPE: &str = "StepLimitExceeded";

/// Per-run history caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most journal entries (step results, sleeps, waits, state calls, child waits) of a run.
    pub max_steps_per_run: i64,
    /// Most timeline entries of a run; one truncation marker follows, later ones are dropped
    /// (except how the run ended: completed, failed, cancelled).
    pub max_timeline_entries: i64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            max_steps_per_run: DEFAULT_MAX_STEPS_PER_RUN,
            max_timeline_entries: DEFAULT_MAX_TIMELINE_ENTRIES,
        }
    }
}

/// The message of a step-limit refusal (and of the run's failure).
pub fn step_limit_message(run_id: &str, max: i64) -> String {
    format!(
        "run {run_id} reached the limit of {max} journal entries (steps, sleeps, waits, state \
         calls) per run; the run is failed with {STEP_LIMIT_ERROR_TYPE}. Split the work into \
         child runs or continue in a new run, or raise the server's --max-steps-per-run"
    )
}

/// The non-retryable failure recorded on a run that hit the step limit.
pub fn step_limit_failure(run_id: &str, max: i64) -> Failure {
    let mut f = Failure::new(step_limit_message(run_id, max), STEP_LIMIT_ERROR_TYPE);
    f.non_retryable = true;
    f.details = Some(serde_json::json!({ "max_steps_per_run": max }).to_string());
    f
}
