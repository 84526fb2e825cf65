//! Client operations: start, inspect, list, cancel and retry runs.

use std::time::Duration;

use super::error::{EngineError, EngineResult};
use super::model::{Failure, NewRun, RetryPolicy, RunDetail, RunFilter, RunRecord, StartOutcome};
use super::requests::{RetryPolicyInput, StartRunInput};
use super::{Engine, now_ms, queue_ops, validate};

/// Longest accepted retry interval (1 day) and attempt count.
const MAX_RETRY_INTERVAL_MS: i64 = 24 * 3_600_000;
const MAX_ATTEMPTS: i32 = 10_000;
/// Page size bounds for `ListRuns`.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 1_000;
/// Queue used when a start names none.
pub const DEFAULT_QUEUE: &str = "default";

impl Engine {
    /// Starts a run, or returns the live run holding the idempotency key.
    pub async fn start_run(
        &self,
        namespace: &str,
        input: StartRunInput,
    ) -> EngineResult<StartOutcome> {
        let now = now_ms();
        let new = self
            .prepare_run(namespace, input, DEFAULT_QUEUE, "", now)
            .await?;
        // A poll parked on this queue and job claims in the start's own transaction: the
        // run reaches a handler after one commit instead of two.
        let handoff = (new.available_at <= now)
            .then(|| self.dispatcher.reserve(namespace, &new.queue, &new.job))
            .flatten();
        let (outcome, handed) = match handoff {
            None => (self.store.start_run(new).await?, None),
            Some(h) => {
                let mut req = h.req;
                req.now = now;
                match self.store.start_and_claim(new, req).await {
                    Ok((outcome, claim)) => (outcome, Some((h.tx, claim.tasks))),
                    Err(e) => {
                        let _ = h.tx.send(Vec::new()); // the poll claims by itself
                        return Err(e);
                    }
                }
            }
        };
        let mut taken = false;
        if let Some((tx, tasks)) = handed {
            let run_id = match &outcome {
                StartOutcome::Created(run) => Some(run.id.as_str()),
                StartOutcome::Duplicate(_) => None,
            };
            taken = tasks.iter().any(|t| Some(t.run.id.as_str()) == run_id);
            if let Err(tasks) = tx.send(tasks) {
                // The poll's request was dropped: the next matching poll gets the tasks.
                self.orphaned(namespace, tasks);
            }
        }
        if let StartOutcome::Created(run) = &outcome {
            if taken {
                self.metrics
                    .runs(namespace, &run.job, &run.queue, |c| c.started += 1);
            } else {
                self.run_started(run);
            }
        }
        Ok(outcome)
    }

    /// Counts a created run and wakes a poller for it.
    pub(crate) fn run_started(&self, run: &RunRecord) {
        self.metrics
            .runs(&run.namespace, &run.job, &run.queue, |c| c.started += 1);
        self.run_ready(&run.namespace, &run.queue, &run.job, run.available_at);
    }

    /// Validates a start and builds the run to insert. `field` prefixes the field names in
    /// error messages (empty for `StartRun`, `child.children[i].` for a child run);
    /// `default_queue` is used when the input names no queue.
    pub(crate) async fn prepare_run(
        &self,
        namespace: &str,
        input: StartRunInput,
        default_queue: &str,
        field: &str,
        now: i64,
    ) -> EngineResult<NewRun> {
        let prefixed = |e: EngineError| match e {
            EngineError::InvalidArgument(m) if !field.is_empty() => {
                EngineError::InvalidArgument(format!("{field}{m}"))
            }
            other => other,
        };
        self.prepare_run_inner(namespace, input, default_queue, now)
            .await
            .map_err(prefixed)
    }

    async fn prepare_run_inner(
        &self,
        namespace: &str,
        input: StartRunInput,
        default_queue: &str,
        now: i64,
    ) -> EngineResult<NewRun> {
        validate::name("job", &input.job)?;
        let queue = input
            .queue
            .clone()
            .unwrap_or_else(|| default_queue.to_owned());
        validate::name("queue", &queue)?;
        let payload = validate::json("payload", &input.payload, self.config.max_payload_bytes)?;
        let schedule = queue_ops::schedule(&input, now)?;
        // The start's retry fields win; the queue's defaults fill the others (a queue that
        // does not exist yet has none).
        let queue_retry = self
            .store
            .get_queue(namespace, &queue)
            .await?
            .map(|q| q.config.retry)
            .unwrap_or_default();
        let retry = self.retry_policy(&queue_ops::merge_retry(&input.retry, &queue_retry))?;
        validate::duration_ms("lease_timeout", input.lease_timeout_ms, 1_000, 3_600_000)?;
        validate::duration_ms(
            "idempotency_ttl",
            input.idempotency_ttl_ms,
            1_000,
            self.config.max_idempotency_ttl_ms,
        )?;
        let idempotency = match input.idempotency_key {
            Some(key) => {
                validate::text_id("idempotency_key", &key, validate::MAX_IDEMPOTENCY_KEY_LEN)?;
                let ttl = input
                    .idempotency_ttl_ms
                    .unwrap_or(self.config.default_idempotency_ttl_ms);
                Some((key, now + ttl))
            }
            None if input.idempotency_ttl_ms.is_some() => {
                return Err(EngineError::invalid(
                    "idempotency_ttl is set but idempotency_key is empty",
                ));
            }
            None => None,
        };
        Ok(NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            namespace: namespace.to_owned(),
            job: input.job,
            queue,
            payload,
            retry,
            lease_timeout_ms: input.lease_timeout_ms,
            idempotency,
            now,
            available_at: schedule.available_at,
            priority: schedule.priority,
            concurrency_key: schedule.concurrency_key,
            parent: None,
        })
    }

    pub(crate) fn retry_policy(&self, input: &RetryPolicyInput) -> EngineResult<RetryPolicy> {
        let d = self.config.default_retry;
        let p = RetryPolicy {
            max_attempts: input.max_attempts.unwrap_or(d.max_attempts),
            initial_interval_ms: input.initial_interval_ms.unwrap_or(d.initial_interval_ms),
            backoff_coefficient: input.backoff_coefficient.unwrap_or(d.backoff_coefficient),
            maximum_interval_ms: input.maximum_interval_ms.unwrap_or(d.maximum_interval_ms),
        };
        if !(1..=MAX_ATTEMPTS).contains(&p.max_attempts) {
            return Err(EngineError::invalid(format!(
                "retry_policy.max_attempts must be between 1 and {MAX_ATTEMPTS} (got {})",
                p.max_attempts
            )));
        }
        validate::duration_ms(
            "retry_policy.initial_interval",
            Some(p.initial_interval_ms),
            0,
            MAX_RETRY_INTERVAL_MS,
        )?;
        validate::duration_ms(
            "retry_policy.maximum_interval",
            Some(p.maximum_interval_ms),
            0,
            MAX_RETRY_INTERVAL_MS,
        )?;
        if !(p.backoff_coefficient.is_finite() && (1.0..=100.0).contains(&p.backoff_coefficient)) {
            return Err(EngineError::invalid(format!(
                "retry_policy.backoff_coefficient must be between 1.0 and 100.0 (got {})",
                p.backoff_coefficient
            )));
        }
        if p.maximum_interval_ms < p.initial_interval_ms {
            return Err(EngineError::invalid(
                "retry_policy.maximum_interval must not be shorter than initial_interval",
            ));
        }
        Ok(p)
    }

    /// Reads a run in full. With `wait_ms`, blocks until the run is final or the wait passes.
    pub async fn get_run(
        &self,
        namespace: &str,
        run_id: &str,
        wait_ms: Option<i64>,
    ) -> EngineResult<RunDetail> {
        validate_run_id(run_id)?;
        validate::duration_ms("wait", wait_ms, 0, self.config.max_poll_wait_ms)?;
        let Some(wait_ms) = wait_ms.filter(|w| *w > 0) else {
            return self.read_detail(namespace, run_id).await;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms as u64);
        let notify = self.watchers.subscribe(run_id);
        let result = async {
            loop {
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let detail = self.read_detail(namespace, run_id).await?;
                if detail.run.status.is_final() {
                    return Ok(detail);
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => return Ok(detail),
                    _ = self.shutdown.cancelled() => return Ok(detail),
                }
            }
        }
        .await;
        self.watchers.release(run_id, notify);
        result
    }

    async fn read_detail(&self, namespace: &str, run_id: &str) -> EngineResult<RunDetail> {
        self.store
            .get_run_detail(namespace, run_id)
            .await?
            .ok_or_else(|| EngineError::run_not_found(run_id))
    }

    /// Lists runs newest first. Returns the page and the next page token.
    pub async fn list_runs(
        &self,
        namespace: &str,
        filter: RunFilter,
        page_size: i32,
        page_token: Option<String>,
    ) -> EngineResult<(Vec<RunRecord>, Option<String>)> {
        if let Some(job) = &filter.job {
            validate::name("job", job)?;
        }
        if let Some(queue) = &filter.queue {
            validate::name("queue", queue)?;
        }
        if let Some(key) = &filter.idempotency_key {
            validate::text_id("idempotency_key", key, validate::MAX_IDEMPOTENCY_KEY_LEN)?;
        }
        if let (Some(a), Some(b)) = (filter.created_after, filter.created_before)
            && a >= b
        {
            return Err(EngineError::invalid(
                "created_after must be earlier than created_before",
            ));
        }
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n if n < 0 || n as u64 > MAX_PAGE => {
                return Err(EngineError::invalid(format!(
                    "page_size must be between 1 and {MAX_PAGE} (got {n})"
                )));
            }
            n => n as u64,
        };
        if let Some(token) = &page_token {
            validate_run_id(token).map_err(|_| {
                EngineError::invalid("page_token is not a token returned by ListRuns")
            })?;
        }
        let mut runs = self
            .store
            .list_runs(namespace, &filter, page_token.as_deref(), limit + 1)
            .await?;
        let next = if runs.len() as u64 > limit {
            runs.truncate(limit as usize);
            runs.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok((runs, next))
    }

    /// Cancels a queued, running or waiting run.
    pub async fn cancel_run(
        &self,
        namespace: &str,
        run_id: &str,
        reason: Option<String>,
    ) -> EngineResult<RunRecord> {
        validate_run_id(run_id)?;
        let message = validate::truncate(
            reason.unwrap_or_else(|| "cancelled by request".to_owned()),
            validate::MAX_FAILURE_TEXT,
        );
        let run = self
            .store
            .cancel_run(
                namespace,
                run_id,
                Failure::new(message, "Cancelled"),
                now_ms(),
            )
            .await?;
        self.watchers.finished(run_id);
        self.metrics
            .runs(namespace, &run.job, &run.queue, |c| c.cancelled += 1);
        self.queue_released(namespace, &run.queue);
        self.child_finished(&run).await;
        Ok(run)
    }

    /// Queues a failed or cancelled run again; completed steps stay memoized.
    pub async fn retry_run(&self, namespace: &str, run_id: &str) -> EngineResult<RunRecord> {
        validate_run_id(run_id)?;
        let run = self.store.retry_run(namespace, run_id, now_ms()).await?;
        self.run_changed(run_id);
        self.run_ready(namespace, &run.queue, &run.job, run.available_at);
        Ok(run)
    }
}

/// Run ids are UUID strings; anything else cannot exist.
pub(crate) fn validate_run_id(run_id: &str) -> EngineResult<()> {
    if run_id.is_empty() {
        return Err(EngineError::invalid("run_id must not be empty"));
    }
    if uuid::Uuid::parse_str(run_id).is_err() {
        return Err(EngineError::invalid(format!(
            "run_id {:?} is not a run id (expected a UUID)",
            run_id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}
