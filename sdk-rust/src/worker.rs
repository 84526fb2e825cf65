//! The worker: register typed job handlers with a [`WorkerBuilder`], then
//! [`Worker::start`] it on the Tokio runtime (or [`Worker::run_until`] a shutdown signal).
//!
//! The worker long-polls the server for tasks on its queues and jobs, never holding more
//! tasks than it has concurrency slots, runs each handler (replaying recorded steps),
//! heartbeats every third of the lease timeout, and reports the outcome. A cancelled run or
//! a lost lease stops the handler at once. Shutdown is graceful: polling stops, in-flight
//! handlers get the grace period to finish, and whatever still runs after it is abandoned
//! (the server redelivers those runs when their leases expire).
//!
//! Jobs may declare event triggers ([`crate::JobTrigger`] in [`JobOptions`]): the worker
//! creates them before its first poll ([`Worker::try_start`] reports a refusal as an error).
//!
//! ```no_run
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use stackshift::{JobContext, StackShift, Worker};
//!
//! #[derive(Deserialize)]
//! struct Payload { user_id: String }
//! #[derive(Serialize)]
//! struct Output { sent: bool }
//!
//! async fn send_email(ctx: JobContext<Payload>) -> anyhow::Result<Output> {
//!     ctx.step.run("send", || async { anyhow::Ok(()) }).await?;
//!     Ok(Output { sent: true })
//! }
//!
//! # async fn demo() -> Result<(), stackshift::Error> {
//! let client = StackShift::from_env()?;
//! let worker = Worker::builder(client)
//!     .queues(["emails"])
//!     .concurrency(8)
//!     .shutdown_grace(Duration::from_secs(30))
//!     .job("sendVerificationEmail", send_email)
//!     .build();
//! worker.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(()) }
//! ```

mod backoff;
pub(crate) use backoff::Backoff;
mod declare;
pub(crate) mod lease;
mod poller;
mod registry;
pub(crate) mod reporter;
mod task;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::client::StackShift;
use crate::context::JobContext;
use crate::options::JobOptions;
use registry::{RegisteredJob, Registry};

/// Default number of concurrency slots.
pub const DEFAULT_CONCURRENCY: usize = 10;
/// Default time in-flight handlers get to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default long-poll wait of one `PollTask` call.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(30);

/// Configures a [`Worker`]. Created by [`Worker::builder`].
pub struct WorkerBuilder {
    client: StackShift,
    queues: Vec<String>,
    concurrency: usize,
    worker_id: Option<String>,
    shutdown_grace: Duration,
    poll_wait: Duration,
    registry: Registry,
}

impl WorkerBuilder {
    /// The queues to take tasks from (default `["default"]`).
    #[must_use]
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// The number of handlers that may run at once (default 10, at least 1). The worker
    /// never holds more tasks than this.
    #[must_use]
    pub fn concurrency(mut self, slots: usize) -> Self {
        self.concurrency = slots.max(1);
        self
    }

    /// The id recorded on the attempts this worker runs (1-128 characters; default
    /// `<hostname>-<pid>-<random>`).
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// How long in-flight handlers may run after shutdown begins before they are abandoned
    /// (default 30 s).
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// How long one poll waits for work on the server (default 30 s, at most 60 s).
    #[must_use]
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait.clamp(Duration::from_secs(1), Duration::from_secs(60));
        self
    }

    /// Registers `handler` for `name`: an `async fn(JobContext<P>) -> anyhow::Result<R>`
    /// where `P` is the payload type and `R` the result type. Registering a name twice
    /// keeps the last handler.
    #[must_use]
    pub fn job<P, R, F, Fut>(self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(JobContext<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
    {
        self.job_with_options(name, JobOptions::default(), handler)
    }

    /// Like [`WorkerBuilder::job`], with per-job options such as the lease timeout.
    #[must_use]
    pub fn job_with_options<P, R, F, Fut>(
        mut self,
        name: impl Into<String>,
        options: JobOptions,
        handler: F,
    ) -> Self
    where
        F: Fn(JobContext<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
    {
        let job = RegisteredJob {
            options,
            handler: registry::erase(handler),
        };
        self.registry.insert(name.into(), job);
        self
    }

    /// The configured worker. Call [`Worker::start`] to run it.
    pub fn build(self) -> Worker {
        let queues = if self.queues.is_empty() {
            vec!["default".to_owned()]
        } else {
            self.queues
        };
        Worker {
            client: self.client,
            queues,
            concurrency: self.concurrency,
            worker_id: self.worker_id.unwrap_or_else(default_worker_id),
            shutdown_grace: self.shutdown_grace,
            poll_wait: self.poll_wait,
            registry: self.registry,
        }
    }
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field(
                "jobs",
                &self.registry.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A configured worker, ready to [`start`](Worker::start).
pub struct Worker {
    client: StackShift,
    queues: Vec<String>,
    concurrency: usize,
    worker_id: String,
    shutdown_grace: Duration,
    poll_wait: Duration,
    registry: Registry,
}

impl Worker {
    /// A builder for a worker that talks to the server through `client`.
    pub fn builder(client: StackShift) -> WorkerBuilder {
        WorkerBuilder {
            client,
            queues: vec!["default".to_owned()],
            concurrency: DEFAULT_CONCURRENCY,
            worker_id: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            poll_wait: DEFAULT_POLL_WAIT,
            registry: Registry::default(),
        }
    }

    /// The id this worker reports.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Starts polling in a background Tokio task and returns a handle to stop it. Dropping
    /// the handle does not stop the worker; call [`WorkerHandle::shutdown`].
    ///
    /// When jobs declare event triggers ([`crate::JobTrigger`]) the background task creates
    /// them first (retrying while the server is unreachable) and polls only once they
    /// exist; a refused declaration is logged as an error and the worker stops without
    /// polling ([`WorkerHandle::is_finished`]). Use [`Worker::try_start`] to get that
    /// refusal as an error, and to know the triggers exist when it returns.
    ///
    /// # Panics
    /// When called outside a Tokio runtime (like [`tokio::spawn`]).
    pub fn start(self) -> WorkerHandle {
        let declared = declare::declarations(&self.registry, self.first_queue());
        self.launch(declared)
    }

    /// Creates the event triggers the jobs declare ([`crate::JobTrigger`]), then starts
    /// polling like [`Worker::start`]. Fails, without polling, when the server refuses a
    /// declaration ([`Error::TriggerRefused`], carrying the refusal's code) or cannot be
    /// reached ([`Error::Unavailable`]).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), stackshift::Error> {
    /// use stackshift::{JobContext, JobOptions, JobTrigger, StackShift, TriggeredEvent, Worker};
    /// let client = StackShift::from_env()?;
    /// let handle = Worker::builder(client)
    ///     .queues(["emails"])
    ///     .job_with_options(
    ///         "send-welcome-email",
    ///         JobOptions::default().trigger(JobTrigger::event("user.signed_up")),
    ///         |ctx: JobContext<TriggeredEvent>| async move { anyhow::Ok(ctx.payload.id) },
    ///     )
    ///     .build()
    ///     .try_start()
    ///     .await?; // the trigger exists: runs of it go to `emails`
    /// # handle.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn try_start(self) -> Result<WorkerHandle, Error> {
        let declared = declare::declarations(&self.registry, self.first_queue());
        declare::create_all(&self.client.triggers(), &declared).await?;
        Ok(self.launch(Vec::new()))
    }

    /// The queue declared triggers without a queue use.
    fn first_queue(&self) -> &str {
        self.queues.first().map_or("default", String::as_str)
    }

    /// Spawns the worker task: creates `declared` (if any), then polls.
    fn launch(self, declared: Vec<declare::Declaration>) -> WorkerHandle {
        let shutdown = CancellationToken::new();
        let triggers = self.client.triggers();
        let env = Arc::new(task::TaskEnv {
            client: self.client.worker_client(),
            reporter: reporter::Reporter::new(self.client.worker_client()),
            state_client: self.client.state_client(),
            abandon: CancellationToken::new(),
            registry: self.registry,
        });
        let config = poller::PollConfig {
            worker_id: self.worker_id.clone(),
            queues: self.queues,
            concurrency: self.concurrency,
            poll_wait: self.poll_wait,
            shutdown_grace: self.shutdown_grace,
        };
        let span = tracing::info_span!("stackshift.worker", worker_id = %self.worker_id);
        let token = shutdown.clone();
        let work = async move {
            if !declared.is_empty() && !declare::in_background(&triggers, &declared, &token).await {
                return;
            }
            poller::run(config, env, token).await;
        };
        let join = tokio::spawn(tracing::Instrument::instrument(work, span));
        WorkerHandle {
            shutdown,
            join,
            worker_id: self.worker_id,
        }
    }

    /// Runs the worker until `signal` resolves, then shuts it down gracefully.
    ///
    /// ```no_run
    /// # async fn demo(worker: stackshift::Worker) {
    /// worker.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await;
    /// # }
    /// ```
    pub async fn run_until<F>(self, signal: F)
    where
        F: Future<Output = ()>,
    {
        let handle = self.start();
        signal.await;
        handle.shutdown().await;
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.worker_id)
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field(
                "jobs",
                &self.registry.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    shutdown: CancellationToken,
    join: JoinHandle<()>,
    worker_id: String,
}

impl WorkerHandle {
    /// The id this worker reports.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// True once the worker has stopped.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Stops polling, lets in-flight handlers finish within the grace period, abandons the
    /// rest, and returns once the worker has stopped.
    ///
    /// A poll that is waiting on the server is dropped at once; should the server have
    /// handed it a task at that very moment, that run is redelivered when its lease expires
    /// (delivery is at-least-once).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(e) = self.join.await {
            tracing::error!(error = %e, "worker task ended abnormally");
        }
    }
}

/// `<hostname>-<pid>-<6 random hex digits>`, at most 128 characters.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(100)
        .collect();
    let suffix = rand::random::<u32>() & 0x00ff_ffff;
    format!("{host}-{}-{suffix:06x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_worker_id_shape() {
        let id = default_worker_id();
        let parts: Vec<&str> = id.rsplitn(3, '-').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0].len(), 6);
        assert_eq!(parts[1], std::process::id().to_string());
        assert!(id.len() <= 128);
    }
}
