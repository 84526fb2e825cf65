//! What a handler receives: [`JobContext`] (the typed payload and the run's identity) and
//! [`Step`], which runs memoized steps, durable sleeps and event waits.
//!
//! The exact step semantics (occurrence suffixes, replay, what is recorded when) are
//! documented on [`Step`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::complete_step_request::Outcome;
use tonic::Code;

use crate::client::WorkerClient;
use crate::convert::chrono_to_timestamp;
use crate::error::{StepFailed, failure_from_error, is_interrupted, is_non_retryable};
use crate::run::Failure;
use crate::worker::lease::{Lease, WriteError, write};
use crate::worker::reporter::Reporter;
use crate::{Error, non_retryable};

mod children;
mod combined;
mod wait;

pub use children::{ChildFailed, ChildOutcome, ChildRun, ChildStatus};
pub use combined::{AllResult, AnyResult, ItemResult, WaitItem};

/// The context a handler is called with.
///
/// ```no_run
/// use serde::Deserialize;
/// use stackshift::JobContext;
///
/// #[derive(Deserialize)]
/// struct Payload { user_id: String }
///
/// async fn handler(ctx: JobContext<Payload>) -> anyhow::Result<String> {
///     let greeting = ctx
///         .step
///         .run("greet", || async { anyhow::Ok(format!("hello {}", ctx.payload.user_id)) })
///         .await?;
///     Ok(greeting)
/// }
/// ```
pub struct JobContext<P> {
    /// The run's payload, deserialized.
    pub payload: P,
    /// Runs memoized steps (see [`Step`]).
    pub step: Step,
    /// The state store, journaled in this run: each call is recorded like a step (ids
    /// `state:1`, `state:2`, ... by call order), so a retried attempt gets the recorded
    /// results back and an increment is applied once. See [`State`](crate::State).
    pub state: crate::State,
    /// The run's id.
    pub run_id: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// Attempts allowed in total.
    pub max_attempts: i32,
    /// The job's name.
    pub job: String,
    /// The queue the run came from.
    pub queue: String,
    /// The run's logger: lines are tied to the run, this attempt and the executing step,
    /// and shown in the run's detail (see [`Logger`](crate::Logger)).
    pub log: crate::Logger,
}

impl<P> JobContext<P> {
    /// True when a failure of this attempt will not be retried.
    pub fn is_last_attempt(&self) -> bool {
        self.max_attempts > 0 && self.attempt >= self.max_attempts
    }
}

impl<P> fmt::Debug for JobContext<P> {
    /// Leaves the payload out, so that logging a context never leaks it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("run_id", &self.run_id)
            .field("job", &self.job)
            .field("queue", &self.queue)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// A recorded step outcome from the task's journal.
#[derive(Debug, Clone)]
pub(crate) enum Recorded {
    /// The step's output as JSON bytes.
    Output(Vec<u8>),
    /// The step's terminal failure.
    Failure(Failure),
    /// The result of a sleep or an event wait that ended (its output as JSON bytes).
    Wait {
        /// `Sleep` or `Event`.
        kind: pb::JournalEntryKind,
        /// The journaled output.
        output: Vec<u8>,
    },
}

/// Assigns effective step ids: `id`, `id#2`, `id#3`, ... per execution, and refuses an
/// effective id that was already handed out in this execution (e.g. an explicit `a#2`
/// followed by a second `a`), since the two steps would share one journal entry.
#[derive(Debug, Default)]
pub(crate) struct Occurrences {
    counts: HashMap<String, u32>,
    used: HashSet<String>,
}

impl Occurrences {
    /// The effective id for the next use of `id`.
    pub(crate) fn next(&mut self, id: &str) -> Result<String, String> {
        let count = self.counts.entry(id.to_owned()).or_insert(0);
        *count += 1;
        let effective = if *count == 1 {
            id.to_owned()
        } else {
            format!("{id}#{count}")
        };
        if !self.used.insert(effective.clone()) {
            return Err(format!(
                "step id {effective:?} is used twice in one execution (an explicit id collides \
                 with an occurrence suffix); rename the step"
            ));
        }
        Ok(effective)
    }
}

/// What [`Step::prepare`] found: a replayed outcome, or the effective id to execute.
enum Prepared<T> {
    Replayed(anyhow::Result<T>),
    Execute(String),
}

/// The largest `retries` a step accepts.
pub const MAX_STEP_RETRIES: u32 = 100;
/// The default delay before the first in-place retry of a step.
pub const DEFAULT_STEP_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(200);
/// The longest delay between two tries of a step.
pub const MAX_STEP_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Options of [`Step::run_with`]: the step's in-place retry policy.
///
/// `retries(n)` (0 to 100, default 0) extra tries of the body inside the same attempt;
/// `retry_delay(d)` (default 200 ms) the wait before the first retry, doubled for each
/// further one and capped at 5 s. A bad value fails the step with a non-retryable error.
#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    retries: u32,
    retry_delay: Option<Result<std::time::Duration, crate::ParseDurationError>>,
}

impl StepOptions {
    /// No retries, the default delay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Extra tries of the body after a retryable error (0 to 100).
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The wait before the first retry (`"500ms"` or a [`std::time::Duration`]).
    #[must_use]
    pub fn retry_delay(mut self, delay: impl crate::IntoDuration) -> Self {
        self.retry_delay = Some(delay.into_duration());
        self
    }

    /// The retries and base delay, or why they are invalid.
    fn validate(&self) -> Result<(u32, std::time::Duration), String> {
        if self.retries > MAX_STEP_RETRIES {
            return Err(format!(
                "step retries must be between 0 and {MAX_STEP_RETRIES}, got {}",
                self.retries
            ));
        }
        let delay = match &self.retry_delay {
            None => DEFAULT_STEP_RETRY_DELAY,
            Some(Ok(d)) => *d,
            Some(Err(e)) => return Err(format!("invalid step retry delay: {e}")),
        };
        Ok((self.retries, delay))
    }
}

/// The wait after failed try `k` (from 1): `base * 2^(k-1)`, capped at 5 s.
pub(crate) fn retry_delay(base: std::time::Duration, k: u32) -> std::time::Duration {
    let factor = 1u32
        .checked_shl(k.saturating_sub(1).min(31))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor)
        .unwrap_or(MAX_STEP_RETRY_DELAY)
        .min(MAX_STEP_RETRY_DELAY)
}

/// Runs memoized steps for one attempt. Cheap to clone; clones share the occurrence
/// counters, so ids stay unique across clones.
///
/// `step.run(id, f)` first assigns the *effective* step id: the first use of `id` in this
/// execution of the handler is `id`, the second `id#2`, the third `id#3`, and so on (the
/// same rule in every StackShift SDK). Then:
/// - if the task's journal holds that id, the recorded output is returned (or the recorded
///   terminal failure re-raised as [`StepFailed`]) and `f` is **not** called;
/// - otherwise `f` runs. On `Ok(v)` the output is recorded on the server and `v` is returned
///   only once the server acknowledged it (so it is durable). On an error that carries
///   [`NonRetryable`](crate::NonRetryable), the failure is recorded as the step's terminal
///   outcome and the error returned. Any other error is returned as is: the attempt fails,
///   is retried, and the step runs again then.
///
/// If the server answers that the run was cancelled or the lease is gone, `step.run`
/// returns [`Interrupted`](crate::Interrupted) and the worker stops the handler without
/// reporting anything. An empty id, or an explicit id that collides with an occurrence
/// suffix (`a#2` followed by a second `a`), is a non-retryable error.
#[derive(Clone)]
pub struct Step {
    inner: Arc<StepState>,
}

struct StepState {
    client: WorkerClient,
    reporter: Reporter,
    lease: Arc<Lease>,
    journal: HashMap<String, Recorded>,
    occurrences: Mutex<Occurrences>,
    log: crate::log::Logger,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("run_id", &self.inner.lease.run_id)
            .field("journaled_steps", &self.inner.journal.len())
            .finish_non_exhaustive()
    }
}

impl Step {
    pub(crate) fn new(
        client: WorkerClient,
        reporter: Reporter,
        lease: Arc<Lease>,
        journal: HashMap<String, Recorded>,
    ) -> Self {
        let log = crate::log::Logger::new(client.clone(), Arc::clone(&lease));
        Self {
            inner: Arc::new(StepState {
                client,
                reporter,
                lease,
                journal,
                occurrences: Mutex::new(Occurrences::default()),
                log,
            }),
        }
    }

    /// The run-scoped logger of this attempt.
    pub(crate) fn logger(&self) -> crate::log::Logger {
        self.inner.log.clone()
    }

    /// Runs `f` as the step `id`, or returns its recorded outcome when an earlier attempt
    /// completed it (see [`Step`] for the exact rules).
    ///
    /// ```no_run
    /// # async fn demo(step: stackshift::Step) -> anyhow::Result<()> {
    /// let payment: serde_json::Value = step
    ///     .run("verify-payment", || async { anyhow::Ok(serde_json::json!({"status": "paid"})) })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<T, F, Fut>(&self, id: &str, f: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
        T: Serialize + DeserializeOwned,
    {
        let step_id = match self.prepare(id)? {
            Prepared::Replayed(result) => return result,
            Prepared::Execute(step_id) => step_id,
        };
        let lease = &self.inner.lease;
        if lease.is_interrupted() {
            return Err(lease.interrupted_error().into());
        }
        let started_at = Utc::now();
        let result = crate::log::CURRENT_STEP.scope(step_id.clone(), f()).await;
        self.finish(&step_id, result, started_at).await
    }

    /// Like [`run`](Self::run), with a per-step retry policy: a retryable error from `f`
    /// runs it again in place (in the same attempt) up to `options.retries` more times,
    /// waiting `retry_delay` doubled each try (capped at 5 s) in between. Heartbeats go on
    /// during the wait; cancellation or a lost lease ends it at once with
    /// [`Interrupted`](crate::Interrupted). Non-retryable errors are not retried. Each failed
    /// try logs a `warn` line `step ID failed (try K of N): MESSAGE; retrying in Dms`. Once
    /// the last try fails, the error is handled exactly as by `run`. A recorded outcome is
    /// replayed without calling `f`, as by `run`.
    ///
    /// ```no_run
    /// # async fn demo(step: stackshift::Step) -> anyhow::Result<()> {
    /// use stackshift::StepOptions;
    /// let rate: f64 = step
    ///     .run_with("fetch-rate", StepOptions::new().retries(3).retry_delay("500ms"), || async {
    ///         anyhow::Ok(1.08)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_with<T, F, Fut>(
        &self,
        id: &str,
        options: StepOptions,
        mut f: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
        T: Serialize + DeserializeOwned,
    {
        let (retries, base) = options.validate().map_err(non_retryable)?;
        let step_id = match self.prepare(id)? {
            Prepared::Replayed(result) => return result,
            Prepared::Execute(step_id) => step_id,
        };
        let lease = &self.inner.lease;
        let started_at = Utc::now();
        let mut attempt_try: u32 = 1;
        loop {
            if lease.is_interrupted() {
                return Err(lease.interrupted_error().into());
            }
            let result = crate::log::CURRENT_STEP.scope(step_id.clone(), f()).await;
            let error = match result {
                Err(error)
                    if attempt_try <= retries
                        && !is_non_retryable(&error)
                        && !is_interrupted(&error)
                        && !lease.is_interrupted() =>
                {
                    error
                }
                result => return self.finish(&step_id, result, started_at).await,
            };
            let delay = retry_delay(base, attempt_try);
            crate::log::CURRENT_STEP.sync_scope(step_id.clone(), || {
                self.inner.log.warn(format!(
                    "step {step_id} failed (try {attempt_try} of {}): {error}; retrying in {}ms",
                    retries + 1,
                    delay.as_millis()
                ));
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = lease.interrupted() => return Err(lease.interrupted_error().into()),
            }
            attempt_try += 1;
        }
    }

    /// Validates `id`, assigns the effective id and looks it up in the journal.
    fn prepare<T: DeserializeOwned>(&self, id: &str) -> anyhow::Result<Prepared<T>> {
        if id.is_empty() {
            return Err(non_retryable("step id must not be empty"));
        }
        if id.starts_with("state:") {
            return Err(non_retryable(format!(
                "step id {id:?} is reserved: ids starting with `state:` name state calls"
            )));
        }
        let step_id = self
            .inner
            .occurrences
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next(id)
            .map_err(non_retryable)?;

        let Some(recorded) = self.inner.journal.get(&step_id) else {
            return Ok(Prepared::Execute(step_id));
        };
        tracing::debug!(run_id = %self.inner.lease.run_id, step_id, "step replayed from the journal");
        Ok(Prepared::Replayed(match recorded {
            Recorded::Output(bytes) => {
                let bytes: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
                serde_json::from_slice(bytes).map_err(|e| {
                    non_retryable(format!(
                        "the recorded output of step {step_id} does not match the type the \
                         handler expects: {e}"
                    ))
                })
            }
            Recorded::Failure(failure) => Err(anyhow::Error::new(StepFailed {
                step_id,
                failure: failure.clone(),
            })),
            Recorded::Wait { kind, .. } => Err(non_retryable(format!(
                "step id {step_id} is recorded as a {} in this run's journal, not as a \
                 step: the handler no longer calls its steps in the recorded order",
                wait::kind_name(*kind)
            ))),
        }))
    }

    /// Records the final outcome of an executed step (see [`Step`]) and returns it.
    async fn finish<T: Serialize>(
        &self,
        step_id: &str,
        result: anyhow::Result<T>,
        started_at: chrono::DateTime<Utc>,
    ) -> anyhow::Result<T> {
        let lease = &self.inner.lease;
        match result {
            Ok(value) => {
                let output = serde_json::to_vec(&value).map_err(|e| {
                    non_retryable(format!(
                        "could not serialize the output of step {step_id}: {e}"
                    ))
                })?;
                self.record(step_id, Outcome::Output(output), started_at)
                    .await?;
                tracing::debug!(run_id = %lease.run_id, step_id, "step completed");
                Ok(value)
            }
            Err(error) => {
                if is_non_retryable(&error) && !is_interrupted(&error) {
                    let mut failure = failure_from_error(&error);
                    failure.non_retryable = true;
                    self.record(step_id, Outcome::Failure(failure.into()), started_at)
                        .await?;
                    tracing::debug!(run_id = %lease.run_id, step_id, "step failed non-retryably; recorded");
                }
                Err(error)
            }
        }
    }

    /// Sends `CompleteStep` and waits for the acknowledgement.
    async fn record(
        &self,
        step_id: &str,
        outcome: Outcome,
        started_at: chrono::DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let lease = &self.inner.lease;
        let request = pb::CompleteStepRequest {
            run_id: lease.run_id.clone(),
            lease_token: lease.token.clone(),
            step_id: step_id.to_owned(),
            outcome: Some(outcome),
            started_at: Some(chrono_to_timestamp(started_at)),
        };
        let result = write(lease, "CompleteStep", || {
            self.inner.reporter.complete_step(request.clone())
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(WriteError::Interrupted(interrupted)) => Err(interrupted.into()),
            Err(WriteError::GaveUp(status)) => {
                // The lease is as good as gone: the server redelivers the run, so stop this
                // attempt quietly instead of failing it.
                lease.interrupt(format!(
                    "the server stayed unreachable until the lease expired ({})",
                    status.message()
                ));
                Err(lease.interrupted_error().into())
            }
            Err(WriteError::Rejected(status)) => {
                let permanent = matches!(
                    status.code(),
                    Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
                );
                let error = Error::from(status);
                if permanent {
                    Err(non_retryable(format!(
                        "could not record step {step_id}: {error}"
                    )))
                } else {
                    Err(anyhow::Error::new(error)
                        .context(format!("could not record step {step_id}")))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn occurrence_suffixes() {
        let mut o = Occurrences::default();
        let ids: Vec<String> = [
            "download",
            "import-batch",
            "import-batch",
            "import-batch",
            "mark",
        ]
        .iter()
        .map(|id| o.next(id).unwrap())
        .collect();
        assert_eq!(
            ids,
            [
                "download",
                "import-batch",
                "import-batch#2",
                "import-batch#3",
                "mark"
            ]
        );
    }

    #[test]
    fn suffixes_count_per_id() {
        let mut o = Occurrences::default();
        assert_eq!(o.next("a").unwrap(), "a");
        assert_eq!(o.next("b").unwrap(), "b");
        assert_eq!(o.next("a").unwrap(), "a#2");
        assert_eq!(o.next("b").unwrap(), "b#2");
        assert_eq!(o.next("a").unwrap(), "a#3");
    }

    #[test]
    fn colliding_explicit_ids_are_refused() {
        let mut o = Occurrences::default();
        assert_eq!(o.next("a#2").unwrap(), "a#2");
        assert_eq!(o.next("a").unwrap(), "a");
        assert!(o.next("a").is_err());
    }

    #[test]
    fn retry_delays_double_and_cap() {
        let ms = std::time::Duration::from_millis;
        let base = ms(200);
        let got: Vec<_> = (1..=7).map(|k| retry_delay(base, k)).collect();
        assert_eq!(
            got,
            [
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000)
            ]
        );
        assert_eq!(retry_delay(base, 100), ms(5000));
        assert_eq!(retry_delay(ms(0), 3), ms(0));
    }

    #[test]
    fn step_options_are_validated() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(StepOptions::new().validate().unwrap(), (0, ms(200)));
        assert_eq!(
            StepOptions::new()
                .retries(3)
                .retry_delay("500ms")
                .validate()
                .unwrap(),
            (3, ms(500))
        );
        assert!(StepOptions::new().retries(101).validate().is_err());
        assert!(StepOptions::new().retry_delay("soon").validate().is_err());
    }

    #[tokio::test]
    async fn context_debug_hides_the_payload() {
        let lease = Arc::new(Lease::new(
            "r1".into(),
            "t".into(),
            std::time::Duration::from_secs(1),
        ));
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let client =
            stackshift_proto::v1::worker_service_client::WorkerServiceClient::with_interceptor(
                channel,
                crate::AuthInterceptor::default(),
            );
        let ctx = JobContext {
            payload: "secret-card-number",
            step: Step::new(
                client.clone(),
                crate::worker::reporter::Reporter::new(client),
                lease.clone(),
                HashMap::new(),
            ),
            state: crate::State::for_run(
                stackshift_proto::v1::state_service_client::StateServiceClient::with_interceptor(
                    tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
                    crate::AuthInterceptor::default(),
                ),
                lease,
            ),
            run_id: "r1".into(),
            attempt: 1,
            max_attempts: 1,
            job: "j".into(),
            queue: "default".into(),
            log: crate::log::Logger::new(
                stackshift_proto::v1::worker_service_client::WorkerServiceClient::with_interceptor(
                    tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
                    crate::AuthInterceptor::default(),
                ),
                Arc::new(Lease::new(
                    "r1".into(),
                    "t".into(),
                    std::time::Duration::from_secs(1),
                )),
            ),
        };
        assert!(ctx.is_last_attempt());
        assert!(!format!("{ctx:?}").contains("secret"));
    }
}
