//! Queue operations: configure, inspect, pause and resume queues; the start options that
//! concern queues (delays, priorities, concurrency keys); and the wakeups that let freed
//! capacity be used at once. Limits are documented in `docs/limits.md` and `docs/queues.md`.

use super::error::{EngineError, EngineResult};
use super::queue_model::{QueueConfig, QueueInfo, QueueRecord};
use super::requests::{RetryPolicyInput, StartRunInput, UpsertQueueInput};
use super::{Engine, now_ms, validate};

/// Largest concurrency limit, per-key limit and rate limit accepted.
pub const MAX_QUEUE_LIMIT: i32 = 100_000;
/// Shortest and longest rate-limit window.
pub const MIN_RATE_PERIOD_MS: i64 = 1_000;
/// Longest rate-limit window (24 h).
pub const MAX_RATE_PERIOD_MS: i64 = 24 * 3_600_000;
/// How far ahead a run may be scheduled (`delay` or `run_at`): 365 days.
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 365 * 24 * 3_600_000;
/// How far in the past a `run_at` may lie (it then means "now"): 24 h. Further back is
/// almost certainly a clock or caller bug (a stale timestamp, seconds taken for
/// milliseconds) and is rejected.
pub const MAX_RUN_AT_PAST_MS: i64 = 24 * 3_600_000;
/// Priority bounds (higher is delivered first).
pub const MIN_PRIORITY: i32 = -1_000;
/// Highest priority accepted.
pub const MAX_PRIORITY: i32 = 1_000;
/// Longest concurrency key, in characters.
pub const MAX_CONCURRENCY_KEY_LEN: usize = 256;
/// Page size bounds of `ListQueues`.
const DEFAULT_QUEUE_PAGE: u64 = 50;
const MAX_QUEUE_PAGE: u64 = 100;

/// Where and when a new run may be delivered, resolved from its start options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// When the run becomes deliverable.
    pub available_at: i64,
    /// Priority.
    pub priority: i32,
    /// Concurrency key.
    pub concurrency_key: Option<String>,
}

/// Validates the queue options of a start at `now`.
pub(crate) fn schedule(input: &StartRunInput, now: i64) -> EngineResult<Schedule> {
    let available_at = match (input.delay_ms, input.run_at_ms) {
        (Some(d), Some(_)) if d > 0 => {
            return Err(EngineError::invalid("set either delay or run_at, not both"));
        }
        (_, Some(at)) => {
            if at < now - MAX_RUN_AT_PAST_MS {
                return Err(EngineError::invalid(format!(
                    "run_at is {} in the past; at most {} in the past is accepted (it then \
                     means now). Check the clock, and that the timestamp is not in seconds",
                    human(now - at),
                    human(MAX_RUN_AT_PAST_MS)
                )));
            }
            if at > now + MAX_SCHEDULE_AHEAD_MS {
                return Err(EngineError::invalid(format!(
                    "run_at is {} ahead; runs can be scheduled at most {} ahead",
                    human(at - now),
                    human(MAX_SCHEDULE_AHEAD_MS)
                )));
            }
            at.max(now)
        }
        (Some(delay), None) => {
            if !(0..=MAX_SCHEDULE_AHEAD_MS).contains(&delay) {
                return Err(EngineError::invalid(format!(
                    "delay is {}; runs can be scheduled at most {} ahead",
                    human(delay),
                    human(MAX_SCHEDULE_AHEAD_MS)
                )));
            }
            now + delay
        }
        (None, None) => now,
    };
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&input.priority) {
        return Err(EngineError::invalid(format!(
            "priority must be between {MIN_PRIORITY} and {MAX_PRIORITY} (got {})",
            input.priority
        )));
    }
    if let Some(key) = &input.concurrency_key {
        validate::text_id("concurrency_key", key, MAX_CONCURRENCY_KEY_LEN)?;
    }
    Ok(Schedule {
        available_at,
        priority: input.priority,
        concurrency_key: input.concurrency_key.clone(),
    })
}

/// A long span for messages: `365 days`, `26.5 hours`, `90 s`, `250 ms`.
fn human(ms: i64) -> String {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let fmt = |v: f64, unit: &str| {
        let v = (v * 10.0).round() / 10.0;
        if v.fract() == 0.0 {
            format!("{v:.0} {unit}")
        } else {
            format!("{v:.1} {unit}")
        }
    };
    match ms.abs() {
        m if m >= 2 * DAY => fmt(ms as f64 / DAY as f64, "days"),
        m if m >= 2 * HOUR => fmt(ms as f64 / HOUR as f64, "hours"),
        m if m >= 1_000 => fmt(ms as f64 / 1_000.0, "s"),
        _ => format!("{ms} ms"),
    }
}

/// A start's retry fields over the queue's defaults: the start's own fields win.
pub(crate) fn merge_retry(start: &RetryPolicyInput, queue: &RetryPolicyInput) -> RetryPolicyInput {
    RetryPolicyInput {
        max_attempts: start.max_attempts.or(queue.max_attempts),
        initial_interval_ms: start.initial_interval_ms.or(queue.initial_interval_ms),
        backoff_coefficient: start.backoff_coefficient.or(queue.backoff_coefficient),
        maximum_interval_ms: start.maximum_interval_ms.or(queue.maximum_interval_ms),
    }
}

fn limit(field: &str, value: Option<i32>) -> EngineResult<()> {
    match value {
        Some(v) if !(1..=MAX_QUEUE_LIMIT).contains(&v) => Err(EngineError::invalid(format!(
            "{field} must be between 1 and {MAX_QUEUE_LIMIT} (got {v}); leave it unset for \
             no limit"
        ))),
        _ => Ok(()),
    }
}

impl Engine {
    /// Validates a queue configuration: every limit positive and bounded, the retry policy
    /// valid once merged with the server defaults, the lease timeout in range.
    fn validate_queue_config(&self, config: &QueueConfig) -> EngineResult<()> {
        limit("config.concurrency_limit", config.concurrency_limit)?;
        limit("config.key_concurrency_limit", config.key_concurrency_limit)?;
        if let Some(rate) = &config.rate_limit {
            limit("config.rate_limit.limit", Some(rate.limit))?;
            validate::duration_ms(
                "config.rate_limit.period",
                Some(rate.period_ms),
                MIN_RATE_PERIOD_MS,
                MAX_RATE_PERIOD_MS,
            )?;
        }
        self.retry_policy(&config.retry)
            .map_err(|e| EngineError::invalid(format!("config.{e}")))?;
        validate::duration_ms(
            "config.lease_timeout",
            config.lease_timeout_ms,
            1_000,
            3_600_000,
        )?;
        Ok(())
    }

    /// Creates a queue or replaces its configuration. Returns the queue and whether it was
    /// created.
    pub async fn upsert_queue(
        &self,
        namespace: &str,
        input: UpsertQueueInput,
    ) -> EngineResult<(QueueInfo, bool)> {
        validate::name("name", &input.name)?;
        self.validate_queue_config(&input.config)?;
        let (queue, created) = self
            .store
            .upsert_queue(namespace, &input.name, input.config, input.paused, now_ms())
            .await?;
        // Limits may have been raised or the queue resumed: held-back polls claim again.
        self.queue_released(namespace, &queue.name);
        Ok((self.with_stats(queue).await?, created))
    }

    /// A queue with its live statistics.
    pub async fn get_queue(&self, namespace: &str, name: &str) -> EngineResult<QueueInfo> {
        validate::name("name", name)?;
        let queue = self
            .store
            .get_queue(namespace, name)
            .await?
            .ok_or_else(|| queue_not_found(name))?;
        self.with_stats(queue).await
    }

    /// Lists queues in name order, with their statistics. Returns the page and the next
    /// page token.
    pub async fn list_queues(
        &self,
        namespace: &str,
        page_size: i32,
        page_token: Option<String>,
    ) -> EngineResult<(Vec<QueueInfo>, Option<String>)> {
        let limit = match page_size {
            0 => DEFAULT_QUEUE_PAGE,
            n if n < 0 || n as u64 > MAX_QUEUE_PAGE => {
                return Err(EngineError::invalid(format!(
                    "page_size must be between 1 and {MAX_QUEUE_PAGE} (got {n})"
                )));
            }
            n => n as u64,
        };
        if let Some(token) = &page_token {
            validate::name("page_token", token).map_err(|_| {
                EngineError::invalid("page_token is not a token returned by ListQueues")
            })?;
        }
        let mut queues = self
            .store
            .list_queues(namespace, page_token.as_deref(), limit + 1)
            .await?;
        let next = if queues.len() as u64 > limit {
            queues.truncate(limit as usize);
            queues.last().map(|q| q.name.clone())
        } else {
            None
        };
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            out.push(self.with_stats(q).await?);
        }
        Ok((out, next))
    }

    /// Pauses (`true`) or resumes (`false`) delivery from an existing queue.
    pub async fn set_queue_paused(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
    ) -> EngineResult<QueueInfo> {
        validate::name("name", name)?;
        let queue = self
            .store
            .set_queue_paused(namespace, name, paused, now_ms())
            .await?
            .ok_or_else(|| queue_not_found(name))?;
        if !paused {
            self.queue_released(namespace, name);
        }
        self.with_stats(queue).await
    }

    async fn with_stats(&self, queue: QueueRecord) -> EngineResult<QueueInfo> {
        let stats = self.store.queue_stats(&queue, now_ms()).await?;
        Ok(QueueInfo { queue, stats })
    }

    /// Capacity may have opened on a queue (a lease ended, or the queue was resumed or
    /// reconfigured): polls held back on it claim again. Every transition out of `running`
    /// must call this (other replicas hear of it through the store's notifications).
    pub(crate) fn queue_released(&self, namespace: &str, queue: &str) {
        self.dispatcher.released(namespace, queue);
    }
}

/// The error for a queue that does not exist in the caller's namespace.
pub(crate) fn queue_not_found(name: &str) -> EngineError {
    EngineError::NotFound(format!(
        "queue {name} not found (queues are created by UpsertQueue or by the first StartRun \
         naming them)"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input(delay: Option<i64>, run_at: Option<i64>) -> StartRunInput {
        StartRunInput {
            delay_ms: delay,
            run_at_ms: run_at,
            ..StartRunInput::default()
        }
    }

    #[test]
    fn schedules() {
        let now = 1_000_000_000_000;
        assert_eq!(schedule(&input(None, None), now).unwrap().available_at, now);
        assert_eq!(
            schedule(&input(Some(5_000), None), now)
                .unwrap()
                .available_at,
            now + 5_000
        );
        assert_eq!(
            schedule(&input(None, Some(now + 7)), now)
                .unwrap()
                .available_at,
            now + 7
        );
        // A recent past instant means now; a far one is an error, as is the far future.
        assert_eq!(
            schedule(&input(None, Some(now - 60_000)), now)
                .unwrap()
                .available_at,
            now
        );
        assert!(schedule(&input(None, Some(now - MAX_RUN_AT_PAST_MS - 1)), now).is_err());
        assert!(schedule(&input(None, Some(now + MAX_SCHEDULE_AHEAD_MS + 1)), now).is_err());
        assert!(schedule(&input(Some(MAX_SCHEDULE_AHEAD_MS + 1), None), now).is_err());
        assert!(schedule(&input(Some(1), Some(now)), now).is_err());
        let mut bad = input(None, None);
        bad.priority = MAX_PRIORITY + 1;
        assert!(schedule(&bad, now).is_err());
        bad.priority = 0;
        bad.concurrency_key = Some("a\nb".into());
        assert!(schedule(&bad, now).is_err());
    }

    #[test]
    fn human_spans() {
        assert_eq!(human(MAX_SCHEDULE_AHEAD_MS), "365 days");
        assert_eq!(human(MAX_RUN_AT_PAST_MS), "24 hours");
        assert_eq!(human(2 * 86_400_000 + 43_200_000), "2.5 days");
        assert_eq!(human(90_000), "90 s");
        assert_eq!(human(250), "250 ms");
    }

    #[test]
    fn start_fields_win_over_queue_fields() {
        let start = RetryPolicyInput {
            max_attempts: Some(7),
            ..RetryPolicyInput::default()
        };
        let queue = RetryPolicyInput {
            max_attempts: Some(2),
            initial_interval_ms: Some(10),
            ..RetryPolicyInput::default()
        };
        let m = merge_retry(&start, &queue);
        assert_eq!(m.max_attempts, Some(7));
        assert_eq!(m.initial_interval_ms, Some(10));
        assert_eq!(m.backoff_coefficient, None);
    }
}
