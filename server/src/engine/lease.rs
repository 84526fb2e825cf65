//! Lease rules: which worker writes are accepted. A write must name the lease token of the
//! run's current attempt, the attempt must still be running, and its lease must not have
//! expired. A write to a cancelled run is answered with `Cancelled` so the SDK stops.

use super::error::EngineError;
use super::model::{RunRecord, RunStatus};

/// What a write is allowed to do when the run is already in a final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An ordinary write (step result, heartbeat, failure).
    Write,
    /// Completing the run: a resent completion of an already completed run is accepted.
    Complete,
}

/// Checks that `token` holds the live lease of `run` at `now`.
pub fn check(run: &RunRecord, token: &str, now: i64, access: Access) -> Result<(), EngineError> {
    let matches = run.lease_token.as_deref() == Some(token);
    if !matches {
        return Err(EngineError::FailedPrecondition(format!(
            "stale lease: the token does not belong to the current attempt of run {} \
             (attempt {} is {})",
            run.id, run.attempt, run.status
        )));
    }
    match run.status {
        RunStatus::Running => match run.lease_expires_at {
            Some(deadline) if deadline > now => Ok(()),
            _ => Err(EngineError::FailedPrecondition(format!(
                "lease expired: attempt {} of run {} missed its heartbeat deadline and will be \
                 delivered again",
                run.attempt, run.id
            ))),
        },
        RunStatus::Cancelled => Err(EngineError::Cancelled(format!(
            "run {} was cancelled; stop executing it",
            run.id
        ))),
        RunStatus::Completed if access == Access::Complete => Ok(()),
        status => Err(EngineError::FailedPrecondition(format!(
            "stale lease: run {} is {status}, attempt {} no longer holds it",
            run.id, run.attempt
        ))),
    }
}
