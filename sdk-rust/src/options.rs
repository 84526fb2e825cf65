//! Options for the client ([`ClientOptions`]), for starting runs ([`StartOptions`],
//! [`RetryPolicy`]), for listing runs ([`ListRunsOptions`]) and for registering jobs on a
//! worker ([`JobOptions`], [`JobTrigger`]).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::duration::{IntoDuration, ParseDurationError};
use crate::run::RunStatus;

/// The endpoint used when none is configured.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7447";

/// How to reach the StackShift server.
///
/// The `Debug` output never shows the API key or the client's private key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// The server's URL, e.g. `http://127.0.0.1:7447`, or `https://...` for a server
    /// started with `--tls-cert`.
    pub endpoint: String,
    /// The API key, sent as `authorization: Bearer <key>` on every call.
    pub api_key: Option<String>,
    /// For `https://`: PEM certificates of the authorities to trust. `None` = the public web
    /// PKI roots (webpki-roots).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// For `https://` to a server started with `--tls-client-ca` (mutual TLS): the client's
    /// certificate chain and private key, both PEM.
    pub tls_client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientOptions {
    /// Options for this endpoint, without an API key.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            api_key: None,
            tls_ca_pem: None,
            tls_client_identity: None,
        }
    }

    /// Trusts these PEM certificate authorities for an `https://` endpoint (e.g. a private
    /// CA) instead of the public web PKI roots.
    #[must_use]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate (PEM chain and PEM private key) to a server that
    /// requires mutual TLS.
    #[must_use]
    pub fn tls_client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_client_identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Sets the API key.
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Options from the environment: `STACKSHIFT_ENDPOINT` (default
    /// [`DEFAULT_ENDPOINT`]) and `STACKSHIFT_API_KEY` (optional). Empty values count as
    /// unset.
    pub fn from_env() -> Self {
        let var = |name| {
            std::env::var(name)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Self {
            api_key: var("STACKSHIFT_API_KEY"),
            ..Self::new(var("STACKSHIFT_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()))
        }
    }
}

impl Default for ClientOptions {
    /// [`DEFAULT_ENDPOINT`], no API key.
    fn default() -> Self {
        Self::new(DEFAULT_ENDPOINT)
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(|_| "<set>"))
            .field(
                "tls_client_identity",
                &self.tls_client_identity.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How failed attempts of a run are retried. `None` fields take the server's defaults
/// (5 attempts, 1 s initial interval, coefficient 2.0, 5 min maximum interval).
///
/// ```
/// use std::time::Duration;
/// use stackshift::RetryPolicy;
///
/// let fast = RetryPolicy::new()
///     .max_attempts(3)
///     .initial_interval(Duration::from_millis(200));
/// let same = RetryPolicy {
///     max_attempts: Some(3),
///     initial_interval: Some(Duration::from_millis(200)),
///     ..RetryPolicy::default()
/// };
/// assert_eq!(fast, same);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryPolicy {
    /// Total attempts allowed, the first one included (1 = never retry).
    pub max_attempts: Option<i32>,
    /// Delay before the second attempt.
    pub initial_interval: Option<Duration>,
    /// Multiplier applied to the delay after each failed attempt (>= 1.0).
    pub backoff_coefficient: Option<f64>,
    /// Upper bound for the delay between attempts.
    pub maximum_interval: Option<Duration>,
}

impl RetryPolicy {
    /// A policy with every field left to the server's default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the total number of attempts (1 = never retry).
    #[must_use]
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the delay before the second attempt.
    #[must_use]
    pub fn initial_interval(mut self, d: Duration) -> Self {
        self.initial_interval = Some(d);
        self
    }

    /// Sets the multiplier applied to the delay after each failed attempt.
    #[must_use]
    pub fn backoff_coefficient(mut self, c: f64) -> Self {
        self.backoff_coefficient = Some(c);
        self
    }

    /// Sets the upper bound for the delay between attempts.
    #[must_use]
    pub fn maximum_interval(mut self, d: Duration) -> Self {
        self.maximum_interval = Some(d);
        self
    }
}

/// Options for [`crate::StackShift::start`] and [`crate::Queue::enqueue`].
///
/// ```
/// use stackshift::StartOptions;
///
/// let opts = StartOptions::default()
///     .queue_name("emails")
///     .idempotency_key("verify:user_123")
///     .idempotency_ttl("30d");
/// ```
///
/// A duration string that does not parse is reported as
/// [`crate::Error::InvalidArgument`] by `start`, not when the option is set.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub(crate) queue_name: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) idempotency_ttl: Option<Result<Duration, ParseDurationError>>,
    pub(crate) retry_policy: Option<RetryPolicy>,
    pub(crate) lease_timeout: Option<Result<Duration, ParseDurationError>>,
    pub(crate) delay: Option<Result<Duration, ParseDurationError>>,
    pub(crate) run_at: Option<DateTime<Utc>>,
    pub(crate) priority: i32,
    pub(crate) concurrency_key: Option<String>,
}

impl StartOptions {
    /// Default options: the `default` queue, no idempotency key, the server's retry policy
    /// and lease timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the job on this queue instead of `default`.
    #[must_use]
    pub fn queue_name(mut self, queue: impl Into<String>) -> Self {
        self.queue_name = Some(queue.into());
        self
    }

    /// Makes the start idempotent: a second start with the same key within the TTL returns
    /// the existing run, flagged as a duplicate.
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// How long the idempotency key is remembered (server default 24 h): a
    /// [`Duration`] or a string like `"30d"`, `"1h30m"`.
    #[must_use]
    pub fn idempotency_ttl(mut self, ttl: impl IntoDuration) -> Self {
        self.idempotency_ttl = Some(ttl.into_duration());
        self
    }

    /// Overrides the retry policy for this run.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// The lease timeout of this run's attempts (1 s to 1 h): a worker that does not
    /// heartbeat within it loses the attempt. A [`Duration`] or a string like `"30s"`.
    #[must_use]
    pub fn lease_timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.lease_timeout = Some(timeout.into_duration());
        self
    }

    /// Delays the first delivery (a delayed job): a [`Duration`] or a string like `"10m"`,
    /// at most 365 days. Replaces any [`StartOptions::run_at`].
    #[must_use]
    pub fn delay(mut self, delay: impl IntoDuration) -> Self {
        self.delay = Some(delay.into_duration());
        self.run_at = None;
        self
    }

    /// Delivers the run no earlier than `at` (at most 365 days ahead; an instant up to 24 h
    /// in the past means "now"). Takes a `chrono::DateTime<Utc>` or a
    /// [`std::time::SystemTime`]. Replaces any [`StartOptions::delay`].
    #[must_use]
    pub fn run_at(mut self, at: impl Into<DateTime<Utc>>) -> Self {
        self.run_at = Some(at.into());
        self.delay = None;
        self
    }

    /// Delivery priority within the queue, -1000 to 1000 (default 0). Higher is delivered
    /// first; equal priorities are delivered first in, first out.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The concurrency key (e.g. a customer id): when the queue has a per-key concurrency
    /// limit, at most that many runs with this key run at once.
    #[must_use]
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }
}

/// Filters and paging for [`crate::StackShift::list_runs`]. `None` means "any".
///
/// ```
/// use stackshift::{ListRunsOptions, RunStatus};
///
/// let failed_emails = ListRunsOptions {
///     queue: Some("emails".into()),
///     status: Some(RunStatus::Failed),
///     ..ListRunsOptions::default()
/// };
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRunsOptions {
    /// Only runs of this job.
    pub job: Option<String>,
    /// Only runs on this queue.
    pub queue: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Maximum runs to return (1-1000); the server's default is 50.
    pub page_size: Option<u32>,
    /// The `next_page_token` of a previous page.
    pub page_token: Option<String>,
    /// Only runs created at or after this instant.
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only runs created before this instant.
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Only runs started with this idempotency key.
    pub idempotency_key: Option<String>,
}

/// Per-job options for [`crate::WorkerBuilder::job_with_options`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// Lease timeout for runs of this job that did not set one at start (server default
    /// 30 s). The worker heartbeats every third of it.
    pub lease_timeout: Option<Duration>,
    /// Event triggers declared on the job: each published event they match starts a run
    /// of it. The worker creates them when it starts, before it polls (see
    /// [`JobTrigger`]).
    pub triggers: Vec<JobTrigger>,
}

impl JobOptions {
    /// Sets the lease timeout.
    #[must_use]
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = Some(timeout);
        self
    }

    /// Declares an event trigger on the job (may be given several times).
    ///
    /// ```
    /// use stackshift::{JobOptions, JobTrigger};
    /// let options = JobOptions::default()
    ///     .trigger(JobTrigger::event("user.signed_up"))
    ///     .trigger(JobTrigger::event("order.paid").correlation_key("eu").queue("billing"));
    /// assert_eq!(options.triggers.len(), 2);
    /// ```
    #[must_use]
    pub fn trigger(mut self, trigger: JobTrigger) -> Self {
        self.triggers.push(trigger);
        self
    }
}

/// An event trigger declared on a job with [`JobOptions::trigger`]: every published event
/// named `event` (with exactly `correlation_key`, when one is given) starts one run of the
/// job, with the event as its payload ([`crate::TriggeredEvent`]).
///
/// The worker creates its declared triggers with the idempotent `CreateEventTrigger` when
/// it starts, before it polls: a trigger that already exists with the same options is kept
/// as it is, so every worker of a deployment may declare the same triggers. The runs go to
/// the trigger's [`queue`](JobTrigger::queue), by default **the first queue the worker
/// polls** (`default` when none was set), so the declaring worker serves them. The server's
/// refusal (an invalid name, a trigger for the same event, key and job with other options,
/// more than 100 triggers on the event) fails the worker's start with
/// [`crate::Error::TriggerRefused`]. Removing a declaration does not delete the trigger:
/// delete it with `client.triggers().delete(id)` or `stackshift triggers delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTrigger {
    /// The event name.
    pub event: String,
    /// Only events published with exactly this key start a run; `None` = any key.
    pub correlation_key: Option<String>,
    /// The queue of the runs; `None` = the worker's first queue.
    pub queue: Option<String>,
}

impl JobTrigger {
    /// Events named `name` start a run of the job.
    pub fn event(name: impl Into<String>) -> Self {
        Self {
            event: name.into(),
            correlation_key: None,
            queue: None,
        }
    }

    /// Only events with exactly this correlation key start a run.
    #[must_use]
    pub fn correlation_key(mut self, key: impl Into<String>) -> Self {
        self.correlation_key = Some(key.into());
        self
    }

    /// The queue of the runs (default: the worker's first queue).
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let opts = ClientOptions::new("http://x:1").api_key("sk_live_secret");
        let shown = format!("{opts:?}");
        assert!(!shown.contains("sk_live_secret"));
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn bad_ttl_is_stored_not_panicked() {
        let opts = StartOptions::default().idempotency_ttl("forever");
        assert!(matches!(opts.idempotency_ttl, Some(Err(_))));
        let opts = StartOptions::default().idempotency_ttl(Duration::from_secs(5));
        assert_eq!(opts.idempotency_ttl, Some(Ok(Duration::from_secs(5))));
    }
}
