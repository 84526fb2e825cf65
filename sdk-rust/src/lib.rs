//! The native Rust SDK for StackShift durable jobs.
//!
//! - [`StackShift`] is the client: start runs ([`StackShift::start`],
//!   [`Queue::enqueue`], with delays, priorities and concurrency keys in
//!   [`StartOptions`]), read them ([`StackShift::get_run`],
//!   [`StackShift::wait_for_run`], [`StackShift::list_runs`]), and control them
//!   ([`StackShift::cancel_run`], [`StackShift::retry_run`]).
//! - [`Queue`] configures a queue ([`Queue::configure`] with a [`QueueConfig`]: concurrency
//!   limits, rate limit, default retry policy), shows its live counts ([`Queue::get`]),
//!   and pauses and resumes it.
//! - [`Worker`] executes jobs: typed `async fn(JobContext<P>) -> anyhow::Result<R>` handlers
//!   whose [`Step`]s are memoized, so a retried attempt replays completed steps instead of
//!   running them again. [`Step::sleep`] and [`Step::wait_for_event`] suspend a run
//!   durably without holding a worker slot.
//! - [`StackShift::events`] publishes events ([`PublishEvent`]) that resume waiting runs.
//! - [`State`] is the durable state store (JSON values with TTL, atomic counters,
//!   compare-and-set, locks with fencing tokens): [`StackShift::state`] outside handlers,
//!   `ctx.state` inside them, where every call is journaled like a step.
//!
//! # Guarantees
//! Code *inside* a step that has not completed runs at least once (a crash before its
//! result is recorded runs it again); each step's recorded result, and the run's result,
//! are recorded exactly once. `step.run` returns only once the server has stored the
//! step's result.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use stackshift::{JobContext, StackShift, StartOptions, Worker};
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct Payment { payment_id: String, customer_id: String }
//!
//! async fn provision(ctx: JobContext<Payment>) -> anyhow::Result<serde_json::Value> {
//!     let status: String = ctx
//!         .step
//!         .run("verify-payment", || async { anyhow::Ok("paid".to_owned()) })
//!         .await?;
//!     if status != "paid" {
//!         anyhow::bail!("Payment is not complete");
//!     }
//!     ctx.step.run("enable-plan", || async { anyhow::Ok(()) }).await?;
//!     Ok(serde_json::json!({ "provisioned": true }))
//! }
//!
//! # async fn demo() -> Result<(), stackshift::Error> {
//! let client = StackShift::from_env()?;
//! let handle = Worker::builder(client.clone())
//!     .job("provisionAfterPayment", provision)
//!     .build()
//!     .start();
//!
//! let payment = Payment { payment_id: "pay_1".into(), customer_id: "cus_1".into() };
//! let started = client
//!     .start("provisionAfterPayment", &payment, StartOptions::default())
//!     .await?;
//! let run = client.wait_for_run(&started.id, Duration::from_secs(30)).await?;
//! assert_eq!(run.result, Some(serde_json::json!({ "provisioned": true })));
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Configuration
//! [`StackShift::from_env`] reads `STACKSHIFT_ENDPOINT` (default `http://127.0.0.1:7447`)
//! and `STACKSHIFT_API_KEY`. The key is sent as `authorization: Bearer <key>` and never
//! logged. Logs go through [`tracing`]; payloads are never logged at `info` or above.

mod auth;
mod client;
mod context;
mod convert;
mod duration;
mod error;
mod events;
mod log;
mod options;
mod queues;
mod run;
mod schedules;
mod state;
mod triggers;
mod worker;

pub use auth::AuthInterceptor;
pub use client::{JobsClient, Queue, StackShift, WorkerClient};
pub use context::{
    AllResult, AnyResult, ChildFailed, ChildOutcome, ChildRun, ChildStatus, ItemResult, JobContext,
    Step, StepOptions, WaitItem,
};
pub use duration::{IntoDuration, ParseDurationError, parse_duration};
pub use error::{Error, Interrupted, NonRetryable, StepFailed, non_retryable};
pub use events::{
    Event, EventPage, Events, EventsClient, ListEventsOptions, PublishEvent, PublishResult,
    WaitResult,
};
pub use log::Logger;
pub use options::{
    ClientOptions, DEFAULT_ENDPOINT, JobOptions, JobTrigger, ListRunsOptions, RetryPolicy,
    StartOptions,
};
pub use queues::{QueueConfig, QueueInfo, QueuePage, QueueStats, QueuesClient, RateLimit};
pub use run::{
    AttemptInfo, Failure, LogLevel, LogLine, Run, RunPage, RunStatus, StartedRun, StepInfo,
    StepKind, TimelineEntry, TimelineKind, WaitInfo,
};
pub use schedules::{
    CatchUp, CreatedSchedule, NewSchedule, Schedule, SchedulePage, ScheduleSpec, Schedules,
    SchedulesClient,
};
pub use state::{
    Counter, KeyPage, ListKeysOptions, LockAttempt, LockGuard, LockOptions, SetOptions, State,
    StateClient, StateEntry, StateKey,
};
pub use triggers::{
    EventTrigger, EventTriggerPage, NewEventTrigger, TriggeredEvent, Triggers, TriggersClient,
};
pub use worker::{
    DEFAULT_CONCURRENCY, DEFAULT_POLL_WAIT, DEFAULT_SHUTDOWN_GRACE, Worker, WorkerBuilder,
    WorkerHandle,
};

/// The generated protobuf types and tonic clients of `stackshift.v1`, for raw access
/// alongside [`StackShift::jobs_client`] and [`StackShift::worker_client`].
pub use stackshift_proto::v1 as proto;
