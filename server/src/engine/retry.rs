//! Retry rules: exponential backoff without jitter, so delays are predictable and testable.
//! The delay before attempt `n + 1` is `initial * coefficient^(n - 1)`, capped at the
//! maximum interval.

use super::model::{Failure, RetryPolicy, RunRecord};

/// Delay in milliseconds before the attempt following failed attempt number `attempt`.
pub fn backoff_ms(policy: &RetryPolicy, attempt: i32) -> i64 {
    let exp = (attempt.max(1) - 1).min(62);
    let factor = policy.backoff_coefficient.max(1.0).powi(exp);
    let delay = (policy.initial_interval_ms as f64) * factor;
    if !delay.is_finite() || delay >= policy.maximum_interval_ms as f64 {
        policy.maximum_interval_ms
    } else {
        delay as i64
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Queue the run again, deliverable at this time.
    RetryAt(i64),
    /// Fail the run.
    Fail,
}

/// Decides between retrying and failing after the current attempt of `run` failed.
pub fn decide(run: &RunRecord, failure: &Failure, now: i64) -> RetryDecision {
    if failure.non_retryable || run.attempt >= run.max_attempts {
        RetryDecision::Fail
    } else {
        RetryDecision::RetryAt(now.saturating_add(backoff_ms(&run.retry, run.attempt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_interval_ms: 100,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 1_000,
        };
        let got: Vec<i64> = (1..=6).map(|a| backoff_ms(&p, a)).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff_ms(&p, i32::MAX), 1_000);
    }
}
