//! Worker operations: long-poll for tasks, heartbeat, and report step and run outcomes
//! under a lease.

use std::time::Duration;

use super::client_ops::{DEFAULT_QUEUE, validate_run_id};
use super::error::{EngineError, EngineResult};
use super::model::{
    ClaimRequest, ClaimedTask, FailOutcome, Failure, HeartbeatOutcome, LeaseRef, NewStep, StepKind,
};
use super::queue_model::ClaimOutcome;
use super::requests::{PollInput, StepOutcome};
use super::{Engine, now_ms, validate};

/// Most tasks one poll may take.
pub const MAX_TASKS_PER_POLL: i32 = 100;
/// Most distinct queues or jobs one poll may name.
pub const MAX_POLL_FILTERS: usize = 1_000;
/// Longest pause before claiming again from a limited queue another replica was claiming
/// from at the same instant (milliseconds; the actual pause is random, from 5 ms).
const CONTENDED_RETRY_MS: u64 = 40;

impl Engine {
    /// Long-polls for up to `max_tasks` tasks. Returns an empty list when the wait passes
    /// or the server shuts down.
    pub async fn poll(&self, namespace: &str, input: PollInput) -> EngineResult<Vec<ClaimedTask>> {
        validate::text_id("worker_id", &input.worker_id, validate::MAX_NAME_LEN)?;
        let mut queues = input.queues;
        if queues.is_empty() {
            queues.push(DEFAULT_QUEUE.to_owned());
        }
        if queues.len() > MAX_POLL_FILTERS || input.jobs.len() > MAX_POLL_FILTERS {
            return Err(EngineError::invalid(format!(
                "a poll may name at most {MAX_POLL_FILTERS} queues and {MAX_POLL_FILTERS} jobs"
            )));
        }
        for q in &queues {
            validate::name("queues[]", q)?;
        }
        if input.jobs.is_empty() {
            return Err(EngineError::invalid(
                "jobs must name at least one job the worker can execute",
            ));
        }
        for j in &input.jobs {
            validate::name("jobs[].name", &j.name)?;
            validate::duration_ms("jobs[].lease_timeout", j.lease_timeout_ms, 1_000, 3_600_000)?;
        }
        let max_tasks = match input.max_tasks {
            0 => 1,
            n if (1..=MAX_TASKS_PER_POLL).contains(&n) => n,
            n => {
                return Err(EngineError::invalid(format!(
                    "max_tasks must be between 1 and {MAX_TASKS_PER_POLL} (got {n})"
                )));
            }
        };
        validate::duration_ms("wait", input.wait_ms, 0, self.config.max_poll_wait_ms)?;
        let wait = input.wait_ms.unwrap_or(self.config.default_poll_wait_ms);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait as u64);

        let mut req = ClaimRequest {
            namespace: namespace.to_owned(),
            worker_id: input.worker_id,
            queues,
            jobs: input.jobs,
            max_tasks: max_tasks as usize,
            default_lease_ms: self.config.default_lease_ms,
            now: 0,
        };
        let waiter = self.dispatcher.register_claim(&req);
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(self.leave(namespace, &waiter).await);
            }
            let since = waiter.consume();
            if let Some(tasks) = self.handed_off(namespace, &waiter).await {
                return Ok(tasks);
            }
            // Reservable while it only reads: a start (or publish) arriving now claims for
            // this poll in its own transaction rather than waking it for a claim of its own.
            waiter.park();
            req.now = now_ms();
            // Tasks claimed for a poll that went away are this poll's before anything new.
            let orphans = self.dispatcher.take_orphans(&req, req.now);
            if !orphans.is_empty() {
                self.delivered(namespace, &orphans);
                return Ok(orphans);
            }
            // Nothing deliverable: sleep without taking a turn in the writer (a start
            // committed after this read signals this poll, which consumed its signal
            // before the read).
            let out = if self.store.has_claimable(&req).await? {
                if !waiter.begin_claim() {
                    continue; // a start is claiming for this poll: take its handoff
                }
                self.claim_detached(req.clone()).await?
            } else {
                Default::default()
            };
            if !out.tasks.is_empty() {
                self.delivered(namespace, &out.tasks);
                return Ok(out.tasks);
            }
            // Nothing claimed. Queues held back by a pause or a concurrency limit wake this
            // poll when capacity frees; a full rate-limit window reopens at `retry_at`; a
            // queue another replica was claiming at this instant is tried again shortly.
            if !out.blocked.is_empty() && !waiter.block_on(&out.blocked, since) {
                continue;
            }
            let mut wake = deadline;
            if let Some(at) = out.retry_at {
                let until = Duration::from_millis((at - now_ms()).max(0) as u64);
                wake = wake.min(tokio::time::Instant::now() + until);
            }
            if out.contended {
                let jitter = Duration::from_millis(rand::random_range(5..=CONTENDED_RETRY_MS));
                wake = wake.min(tokio::time::Instant::now() + jitter);
            }
            waiter.park();
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep_until(wake) => {
                    if wake >= deadline {
                        return Ok(self.leave(namespace, &waiter).await);
                    }
                }
                _ = self.shutdown.cancelled() => {
                    tracing::debug!("poll answered: shutting down");
                    return Ok(self.leave(namespace, &waiter).await);
                }
            }
        }
    }

    /// Keeps tasks claimed for a poll that went away (its request was dropped) for the next
    /// matching poll, instead of leaving them leased to nobody until their leases expire.
    pub(crate) fn orphaned(&self, namespace: &str, tasks: Vec<ClaimedTask>) {
        keep_orphans(&self.dispatcher, &self.timer, namespace, tasks);
    }

    /// Claims in a task of its own, so that a poll dropped while its claim waits in the
    /// writer (its caller went away) cannot lose the claimed tasks: they go to the next
    /// matching poll ([`Engine::orphaned`]).
    async fn claim_detached(&self, req: ClaimRequest) -> EngineResult<ClaimOutcome> {
        let store = self.store.clone();
        let dispatcher = self.dispatcher.clone();
        let timer = self.timer.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let namespace = req.namespace.clone();
            let out = store.claim_queued(req).await;
            if let Err(Ok(out)) = tx.send(out) {
                keep_orphans(&dispatcher, &timer, &namespace, out.tasks);
            }
        });
        rx.await
            .map_err(|_| EngineError::Unavailable("the claim was interrupted".into()))?
    }

    /// Counts and announces tasks a poll is about to return.
    fn delivered(&self, namespace: &str, tasks: &[ClaimedTask]) {
        for t in tasks {
            if !t.resumed {
                self.metrics
                    .runs(namespace, &t.run.job, &t.run.queue, |c| c.attempts += 1);
            }
            self.run_changed(&t.run.id);
        }
        if let Some(first) = tasks.iter().map(|t| t.lease_deadline).min() {
            self.timer.schedule(first);
        }
    }

    /// The tasks a start claimed for this poll, when it was reserved and they are not
    /// empty (waits for the start's commit).
    async fn handed_off(
        &self,
        namespace: &str,
        waiter: &super::dispatcher::WaiterGuard,
    ) -> Option<Vec<ClaimedTask>> {
        let tasks = match waiter.take_handoff()?.await {
            Ok(tasks) => tasks,
            Err(_) => {
                // The start's request was dropped before it answered: if its write
                // committed, the tasks it claimed for this poll are delivered again when
                // their leases expire.
                tracing::warn!("a start handing tasks to this poll went away");
                return None;
            }
        };
        if tasks.is_empty() {
            return None;
        }
        self.delivered(namespace, &tasks);
        Some(tasks)
    }

    /// Unregisters a poll that answers without claiming; returns the tasks of a handoff
    /// that reached it meanwhile (usually none).
    async fn leave(
        &self,
        namespace: &str,
        waiter: &super::dispatcher::WaiterGuard,
    ) -> Vec<ClaimedTask> {
        waiter.close();
        self.handed_off(namespace, waiter).await.unwrap_or_default()
    }

    fn lease(namespace: &str, run_id: &str, token: &str) -> EngineResult<LeaseRef> {
        validate_run_id(run_id)?;
        if token.is_empty() || token.len() > 64 {
            return Err(EngineError::invalid(
                "lease_token must be the token of the task being executed",
            ));
        }
        Ok(LeaseRef {
            namespace: namespace.to_owned(),
            run_id: run_id.to_owned(),
            token: token.to_owned(),
        })
    }

    /// Extends a lease.
    pub async fn heartbeat(
        &self,
        namespace: &str,
        run_id: &str,
        token: &str,
    ) -> EngineResult<HeartbeatOutcome> {
        let lease = Self::lease(namespace, run_id, token)?;
        let out = self.store.heartbeat(lease, now_ms()).await?;
        self.timer.schedule(out.lease_deadline);
        Ok(out)
    }

    /// Durably records a step result. Returns true when it was already recorded.
    pub async fn complete_step(
        &self,
        namespace: &str,
        run_id: &str,
        token: &str,
        step_id: &str,
        outcome: StepOutcome,
        started_at: Option<i64>,
    ) -> EngineResult<bool> {
        let lease = Self::lease(namespace, run_id, token)?;
        // The SDK adds `#N` occurrence suffixes; leave room for them.
        validate::text_id("step_id", step_id, validate::MAX_STEP_ID_LEN + 12)?;
        let (output, failure) = match outcome {
            StepOutcome::Output(bytes) => (
                Some(validate::json(
                    "output",
                    &bytes,
                    self.config.max_payload_bytes,
                )?),
                None,
            ),
            StepOutcome::Failure(f) => (None, Some(self.failure(f)?)),
        };
        let step = NewStep {
            step_id: step_id.to_owned(),
            kind: StepKind::Step,
            output,
            failure,
            started_at,
        };
        let now = now_ms();
        let duration = step.started_at.map(|s| now - s);
        let already = match self.store.complete_step(lease, step, now).await {
            Ok(already) => already,
            Err(e) => return Err(self.after_store_error(e, namespace, run_id).await),
        };
        if !already {
            if let Some(ms) = duration {
                self.metrics.step_duration.observe_ms(ms);
            }
            self.run_changed(run_id);
        }
        Ok(already)
    }

    /// Completes the run with its result.
    pub async fn complete_run(
        &self,
        namespace: &str,
        run_id: &str,
        token: &str,
        result: &[u8],
    ) -> EngineResult<()> {
        let lease = Self::lease(namespace, run_id, token)?;
        let result = validate::json("result", result, self.config.max_payload_bytes)?;
        let now = now_ms();
        crate::failpoint::pause("complete_run.before_store").await;
        let run = self.store.complete_run(lease, result, now).await?;
        self.watchers.finished(run_id);
        self.metrics
            .runs(namespace, &run.job, &run.queue, |c| c.completed += 1);
        self.queue_released(namespace, &run.queue);
        self.child_finished(&run).await;
        Ok(())
    }

    /// Records a failed attempt: schedules a retry or fails the run.
    pub async fn fail_run(
        &self,
        namespace: &str,
        run_id: &str,
        token: &str,
        failure: Failure,
    ) -> EngineResult<FailOutcome> {
        let lease = Self::lease(namespace, run_id, token)?;
        let failure = self.failure(failure)?;
        let out = self.store.fail_run(lease, failure, now_ms()).await?;
        self.queue_released(namespace, &out.run.queue);
        match out.next_attempt_at {
            Some(at) => self.run_ready(namespace, &out.run.queue, &out.run.job, at),
            None => {
                self.watchers.finished(run_id);
                let r = &out.run;
                self.metrics
                    .runs(namespace, &r.job, &r.queue, |c| c.failed += 1);
                self.child_finished(r).await;
            }
        }
        self.run_changed(run_id);
        Ok(out)
    }

    /// Validates a failure reported by a worker, truncating oversized text.
    fn failure(&self, mut f: Failure) -> EngineResult<Failure> {
        if f.message.is_empty() {
            f.message = "error without a message".to_owned();
        }
        f.message = validate::truncate(f.message, validate::MAX_FAILURE_TEXT);
        f.stack_trace = validate::truncate(f.stack_trace, validate::MAX_FAILURE_TEXT);
        f.error_type = validate::truncate(f.error_type, validate::MAX_NAME_LEN);
        if let Some(details) = f.details.take() {
            f.details = Some(validate::json(
                "failure.details",
                details.as_bytes(),
                self.config.max_payload_bytes,
            )?);
        }
        Ok(f)
    }
}

/// [`Engine::orphaned`], for code that holds the engine's parts rather than the engine.
pub(super) fn keep_orphans(
    dispatcher: &super::dispatcher::Dispatcher,
    timer: &super::timer::Timer,
    namespace: &str,
    tasks: Vec<ClaimedTask>,
) {
    let Some(first) = tasks.iter().map(|t| t.lease_deadline).min() else {
        return;
    };
    tracing::debug!(
        tasks = tasks.len(),
        "a poll went away with claimed tasks; the next matching poll gets them"
    );
    // The reaper still expires them if no poll takes them in time.
    timer.schedule(first);
    dispatcher.orphaned(namespace, tasks);
}
