//! The client: [`StackShift`] starts, inspects, waits for, lists, cancels and retries runs,
//! [`Queue`] enqueues onto a named queue, and [`Events`] publishes events. One client holds
//! one lazily connected HTTP/2 channel; clones share it, so clone freely (workers take a
//! clone too).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::events_service_client::EventsServiceClient;
use stackshift_proto::v1::jobs_service_client::JobsServiceClient;
use stackshift_proto::v1::queues_service_client::QueuesServiceClient;
use stackshift_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::Error;
use crate::auth::AuthInterceptor;
use crate::convert::{chrono_to_timestamp, duration_to_proto, run_from_response};
use crate::events::{Events, EventsClient};
use crate::options::{ClientOptions, ListRunsOptions, StartOptions};
use crate::queues::QueuesClient;
use crate::run::{Run, RunPage, StartedRun};
use crate::schedules::{Schedules, SchedulesClient};
use crate::state::{State, StateClient};
use crate::triggers::{Triggers, TriggersClient};

/// The generated `JobsService` client, authenticated by the client's API key.
pub type JobsClient = JobsServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// The generated `WorkerService` client, authenticated by the client's API key.
pub type WorkerClient = WorkerServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// The longest wait the server accepts for one `GetRun` long-poll.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(60);
/// Extra time on top of a long-poll's wait before the client gives up on the call.
const LONG_POLL_SLACK: Duration = Duration::from_secs(10);
/// Deadline for ordinary (non-blocking) calls.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response the client decodes (runs with many large steps can be big).
const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// A StackShift client. Cheap to clone; clones share one connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), stackshift::Error> {
/// use serde_json::json;
/// use stackshift::{StackShift, StartOptions};
///
/// let client = StackShift::from_env()?;
/// let started = client
///     .queue("emails")
///     .enqueue(
///         "sendVerificationEmail",
///         &json!({ "userId": "user_123", "email": "ada@example.com" }),
///         StartOptions::default().idempotency_key("verify:user_123"),
///     )
///     .await?;
/// let run = client
///     .wait_for_run(&started.id, std::time::Duration::from_secs(30))
///     .await?;
/// println!("{} is {}", run.id, run.status);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct StackShift {
    jobs: JobsClient,
    worker: WorkerClient,
    queues: QueuesClient,
    state: StateClient,
    events: EventsClient,
    schedules: SchedulesClient,
    triggers: TriggersClient,
    endpoint: Arc<str>,
}

impl StackShift {
    /// A client configured from the environment, like the TypeScript, Python and Go SDKs:
    /// `STACKSHIFT_ENDPOINT` (default `http://127.0.0.1:7447`), `STACKSHIFT_API_KEY`
    /// (optional), and for an `https://` endpoint `STACKSHIFT_TLS_CA` (a PEM file of the CA
    /// to trust instead of the web PKI roots) and `STACKSHIFT_TLS_CLIENT_CERT` +
    /// `STACKSHIFT_TLS_CLIENT_KEY` (PEM files of the client identity for mutual TLS; both or
    /// neither). An unreadable file is an [`Error::InvalidArgument`] naming the variable. See
    /// [`StackShift::new`].
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok();
        Self::new(options_from_env(ClientOptions::from_env(), var)?)
    }

    /// A client for these options. It connects lazily: creating it never fails because the
    /// server is down (calls then fail with [`Error::Unavailable`] until it is up), only
    /// for an invalid endpoint or API key ([`Error::InvalidArgument`]).
    pub fn new(options: ClientOptions) -> Result<Self, Error> {
        let endpoint_url = options.endpoint.trim().to_owned();
        let endpoint = Endpoint::from_shared(endpoint_url.clone()).map_err(|e| {
            Error::InvalidArgument(format!("invalid endpoint {endpoint_url:?}: {e}"))
        })?;
        let endpoint = match endpoint.uri().scheme_str() {
            Some("http") => endpoint,
            Some("https") => endpoint
                .tls_config(tls_config(&options))
                .map_err(|e| Error::InvalidArgument(format!("invalid TLS settings: {e}")))?,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "endpoint {endpoint_url:?} must start with http:// or https://"
                )));
            }
        };
        let user_agent = concat!("stackshift-sdk-rust/", env!("CARGO_PKG_VERSION"));
        let channel = endpoint
            .user_agent(user_agent)
            .map_err(|e| Error::InvalidArgument(format!("invalid user agent: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let auth = AuthInterceptor::new(options.api_key.as_deref())?;
        let jobs = JobsServiceClient::with_interceptor(channel.clone(), auth.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        let queues = QueuesServiceClient::with_interceptor(channel.clone(), auth.clone());
        let state =
            stackshift_proto::v1::state_service_client::StateServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        let worker = WorkerServiceClient::with_interceptor(channel.clone(), auth.clone())
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        let schedules =
            stackshift_proto::v1::schedule_service_client::ScheduleServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            )
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        let triggers =
            stackshift_proto::v1::trigger_service_client::TriggerServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            );
        let events = EventsServiceClient::with_interceptor(channel, auth)
            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE);
        Ok(Self {
            jobs,
            worker,
            queues,
            state,
            events,
            schedules,
            triggers,
            endpoint: endpoint_url.into(),
        })
    }

    /// The server's URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Publishes and lists events (see [`Events`]).
    pub fn events(&self) -> Events {
        Events::new(self.events.clone())
    }

    /// Creates, lists, pauses, resumes and deletes schedules (see [`Schedules`]).
    pub fn schedules(&self) -> Schedules {
        Schedules::new(self.schedules.clone())
    }

    /// Subscribes jobs to events (see [`Triggers`]).
    pub fn triggers(&self) -> Triggers {
        Triggers::new(self.triggers.clone())
    }

    /// A handle for enqueueing onto `name`.
    pub fn queue(&self, name: impl Into<String>) -> Queue {
        Queue {
            client: self.clone(),
            name: name.into(),
        }
    }

    /// Starts a run of `job` with `payload` (any `Serialize` value, by value or by
    /// reference). With an idempotency key already used within its TTL, returns the
    /// existing run with `duplicate: true` and creates nothing.
    pub async fn start(
        &self,
        job: &str,
        payload: impl Serialize,
        opts: StartOptions,
    ) -> Result<StartedRun, Error> {
        let payload = serde_json::to_vec(&payload)?;
        let idempotency_ttl = opts.idempotency_ttl.transpose()?.map(duration_to_proto);
        let lease_timeout = opts.lease_timeout.transpose()?.map(duration_to_proto);
        let delay = opts.delay.transpose()?.map(duration_to_proto);
        let request = pb::StartRunRequest {
            job: job.to_owned(),
            payload,
            queue: opts.queue_name.unwrap_or_default(),
            idempotency_key: opts.idempotency_key.unwrap_or_default(),
            idempotency_ttl,
            retry_policy: opts.retry_policy.map(pb::RetryPolicy::from),
            lease_timeout,
            delay,
            run_at: opts.run_at.map(chrono_to_timestamp),
            priority: opts.priority,
            concurrency_key: opts.concurrency_key.unwrap_or_default(),
        };
        let response = self
            .jobs
            .clone()
            .start_run(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        let run = run_from_response(response.run)?;
        Ok(StartedRun {
            id: run.id.clone(),
            duplicate: response.duplicate,
            run,
        })
    }

    /// The run with its attempts and steps.
    pub async fn get_run(&self, id: impl AsRef<str>) -> Result<Run, Error> {
        self.get_run_waiting(id.as_ref(), None).await
    }

    /// Waits until the run is completed, failed or cancelled, or until `timeout` passes, and
    /// returns the run as it then is (check [`Run::is_final`]). Uses the server's long-poll
    /// (at most 60 s per call), so waiting costs no busy polling. While the server is
    /// unreachable ([`Error::Unavailable`]) it keeps retrying with backoff until `timeout`
    /// passes, then returns that error.
    pub async fn wait_for_run(&self, id: impl AsRef<str>, timeout: Duration) -> Result<Run, Error> {
        let id = id.as_ref();
        let deadline = Instant::now() + timeout;
        let mut backoff = crate::worker::Backoff::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let wait = remaining.min(MAX_SERVER_WAIT);
            let asked_at = Instant::now();
            let run = match self
                .get_run_waiting(id, (!wait.is_zero()).then_some(wait))
                .await
            {
                Ok(run) => {
                    backoff.reset();
                    run
                }
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    let pause = backoff
                        .next_delay()
                        .min(deadline.saturating_duration_since(Instant::now()));
                    tracing::debug!(run_id = id, error = %e, "server unreachable while waiting for a run; retrying");
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if run.is_final() || Instant::now() >= deadline {
                return Ok(run);
            }
            // A server that answered well before the wait passed without a final run (it
            // caps or ignores `wait`) must not turn this loop into a busy poll.
            if asked_at.elapsed() + Duration::from_millis(50) < wait {
                let pause = Duration::from_millis(250)
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }

    async fn get_run_waiting(&self, id: &str, wait: Option<Duration>) -> Result<Run, Error> {
        let request = pb::GetRunRequest {
            run_id: id.to_owned(),
            wait: wait.map(duration_to_proto),
        };
        let timeout = wait.map_or(CALL_TIMEOUT, |w| w + LONG_POLL_SLACK);
        let response = self
            .jobs
            .clone()
            .get_run(with_timeout(request, timeout))
            .await?;
        run_from_response(response.into_inner().run)
    }

    /// One page of runs, newest first, filtered by `opts`.
    pub async fn list_runs(&self, opts: ListRunsOptions) -> Result<RunPage, Error> {
        let request = pb::ListRunsRequest {
            job: opts.job.unwrap_or_default(),
            queue: opts.queue.unwrap_or_default(),
            status: opts
                .status
                .map_or(pb::RunStatus::Unspecified, pb::RunStatus::from) as i32,
            page_size: opts
                .page_size
                .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
            page_token: opts.page_token.unwrap_or_default(),
            created_after: opts.created_after.map(crate::convert::chrono_to_timestamp),
            created_before: opts.created_before.map(crate::convert::chrono_to_timestamp),
            idempotency_key: opts.idempotency_key.unwrap_or_default(),
        };
        let response = self
            .jobs
            .clone()
            .list_runs(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        let runs = response
            .runs
            .into_iter()
            .map(Run::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RunPage {
            runs,
            next_page_token: (!response.next_page_token.is_empty())
                .then_some(response.next_page_token),
        })
    }

    /// Cancels a queued, running or waiting run; `reason` is recorded on its failure.
    /// A running handler is stopped at its next heartbeat or step.
    pub async fn cancel_run(
        &self,
        id: impl AsRef<str>,
        reason: Option<&str>,
    ) -> Result<Run, Error> {
        let request = pb::CancelRunRequest {
            run_id: id.as_ref().to_owned(),
            reason: reason.unwrap_or_default().to_owned(),
        };
        let response = self
            .jobs
            .clone()
            .cancel_run(with_timeout(request, CALL_TIMEOUT))
            .await?;
        run_from_response(response.into_inner().run)
    }

    /// Gives a failed or cancelled run new attempts; completed steps stay memoized.
    pub async fn retry_run(&self, id: impl AsRef<str>) -> Result<Run, Error> {
        let request = pb::RetryRunRequest {
            run_id: id.as_ref().to_owned(),
        };
        let response = self
            .jobs
            .clone()
            .retry_run(with_timeout(request, CALL_TIMEOUT))
            .await?;
        run_from_response(response.into_inner().run)
    }

    /// The raw generated `JobsService` client (authenticated), for calls and fields the
    /// typed API does not cover.
    pub fn jobs_client(&self) -> JobsClient {
        self.jobs.clone()
    }

    /// The raw generated `WorkerService` client (authenticated).
    pub fn worker_client(&self) -> WorkerClient {
        self.worker.clone()
    }

    /// The raw generated `QueuesService` client (authenticated).
    pub fn queues_client(&self) -> QueuesClient {
        self.queues.clone()
    }

    /// The state store of the key's namespace, for use outside job handlers: calls apply
    /// directly. (Inside a handler use `ctx.state`, whose calls are journaled in the run.)
    pub fn state(&self) -> State {
        State::direct(self.state.clone())
    }

    /// The raw generated `StateService` client (authenticated).
    pub fn state_client(&self) -> StateClient {
        self.state.clone()
    }
}

impl fmt::Debug for StackShift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackShift")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A named queue: `client.queue("emails").enqueue(job, payload, opts)` is
/// `client.start(job, payload, opts.queue_name("emails"))`. A queue that does not exist
/// yet is created with the defaults by its first run. [`Queue::configure`],
/// [`Queue::get`], [`Queue::pause`] and [`Queue::resume`] manage it.
#[derive(Clone, Debug)]
pub struct Queue {
    pub(crate) client: StackShift,
    pub(crate) name: String,
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts a run of `job` on this queue (overriding any queue set in `opts`).
    pub async fn enqueue(
        &self,
        job: &str,
        payload: impl Serialize,
        opts: StartOptions,
    ) -> Result<StartedRun, Error> {
        self.client
            .start(job, payload, opts.queue_name(self.name.clone()))
            .await
    }
}

/// A request with a gRPC deadline.
pub(crate) fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Adds the TLS files named by `STACKSHIFT_TLS_*` (read through `var`; empty values count as
/// unset) to `options`.
fn options_from_env(
    mut options: ClientOptions,
    var: impl Fn(&str) -> Option<String>,
) -> Result<ClientOptions, Error> {
    let path = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let read = |name: &str, path: String| {
        std::fs::read(&path)
            .map_err(|e| Error::InvalidArgument(format!("cannot read {name} ({path}): {e}")))
    };
    if let Some(ca) = path("STACKSHIFT_TLS_CA") {
        options = options.tls_ca_pem(read("STACKSHIFT_TLS_CA", ca)?);
    }
    match (
        path("STACKSHIFT_TLS_CLIENT_CERT"),
        path("STACKSHIFT_TLS_CLIENT_KEY"),
    ) {
        (Some(cert), Some(key)) => {
            options = options.tls_client_identity(
                read("STACKSHIFT_TLS_CLIENT_CERT", cert)?,
                read("STACKSHIFT_TLS_CLIENT_KEY", key)?,
            );
        }
        (None, None) => {}
        _ => {
            return Err(Error::InvalidArgument(
                "set both STACKSHIFT_TLS_CLIENT_CERT and STACKSHIFT_TLS_CLIENT_KEY for mutual \
                 TLS, or neither"
                    .to_owned(),
            ));
        }
    }
    Ok(options)
}

/// TLS settings for an `https://` endpoint: the configured CA (else the web PKI roots) and
/// the client identity for mutual TLS.
fn tls_config(options: &ClientOptions) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new();
    tls = match &options.tls_ca_pem {
        Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
        None => tls.with_webpki_roots(),
    };
    if let Some((cert, key)) = &options.tls_client_identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tls
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creating_a_client_never_connects() {
        // Nothing listens on port 1; lazy connect means this still succeeds.
        let client =
            StackShift::new(ClientOptions::new("http://127.0.0.1:1").api_key("k")).unwrap();
        assert_eq!(client.endpoint(), "http://127.0.0.1:1");
        assert!(!format!("{client:?}").contains("\"k\""));
        let err = client.get_run("x").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }

    #[tokio::test]
    async fn invalid_endpoints_are_rejected() {
        for bad in ["not a url", "ftp://host:1", ""] {
            let err = StackShift::new(ClientOptions::new(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}: {err}");
        }
        // https is supported (see the reliability suite's `tls` scenario end to end).
        StackShift::new(ClientOptions::new("https://example.com")).unwrap();
        StackShift::new(ClientOptions::new("https://example.com").tls_ca_pem(b"x".to_vec()))
            .unwrap();
    }

    #[test]
    fn tls_files_come_from_the_environment() {
        let dir = std::env::temp_dir().join(format!("ss-tls-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, b"CA").unwrap();
        let env = |pairs: &[(&str, String)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            }
        };
        let ca_path = ca.display().to_string();
        let base = || ClientOptions::new("https://example.com");

        let none = options_from_env(base(), env(&[])).unwrap();
        assert!(none.tls_ca_pem.is_none() && none.tls_client_identity.is_none());

        let with_ca = options_from_env(base(), env(&[("STACKSHIFT_TLS_CA", ca_path.clone())]));
        assert_eq!(with_ca.unwrap().tls_ca_pem.as_deref(), Some(&b"CA"[..]));

        let mtls = options_from_env(
            base(),
            env(&[
                ("STACKSHIFT_TLS_CLIENT_CERT", ca_path.clone()),
                ("STACKSHIFT_TLS_CLIENT_KEY", ca_path.clone()),
            ]),
        )
        .unwrap();
        assert_eq!(
            mtls.tls_client_identity,
            Some((b"CA".to_vec(), b"CA".to_vec()))
        );

        let missing = options_from_env(
            base(),
            env(&[("STACKSHIFT_TLS_CA", "/nonexistent/ca.pem".to_owned())]),
        )
        .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::InvalidArgument);
        assert!(
            missing.to_string().contains("STACKSHIFT_TLS_CA"),
            "{missing}"
        );

        let half = options_from_env(
            base(),
            env(&[("STACKSHIFT_TLS_CLIENT_CERT", ca_path.clone())]),
        )
        .unwrap_err();
        assert!(
            half.to_string().contains("STACKSHIFT_TLS_CLIENT_KEY"),
            "{half}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn bad_ttl_fails_start_with_invalid_argument() {
        let client = StackShift::new(ClientOptions::new("http://127.0.0.1:1")).unwrap();
        let err = client
            .start(
                "job",
                &(),
                StartOptions::default().idempotency_ttl("30 days"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(ref m) if m.contains("30 days")),
            "{err}"
        );
    }
}
