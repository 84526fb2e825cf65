//! The poll loop: take a free concurrency slot (plus any others free at that moment), long-
//! poll for at most that many tasks, run each task in its slot, and repeat until shutdown.
//! Unreachable servers and refused credentials back off exponentially (with jitter) rather
//! than spin. On shutdown it stops polling, gives in-flight handlers the grace period,
//! then abandons the rest.

use std::sync::Arc;
use std::time::Duration;

use stackshift_proto::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::Instrument as _;

use super::backoff::Backoff;
use super::task::{TaskEnv, execute};
use crate::client::with_timeout;
use crate::convert::duration_to_proto;

/// The most tasks one poll may ask for (the server's limit).
const MAX_TASKS_PER_POLL: usize = 100;
/// Extra time on top of the poll's wait before the client gives up on the call.
const POLL_SLACK: Duration = Duration::from_secs(10);
/// How long abandoned handlers get to drop after the grace period.
const ABANDON_WAIT: Duration = Duration::from_secs(2);

/// The poll loop's settings.
pub(crate) struct PollConfig {
    pub(crate) worker_id: String,
    pub(crate) queues: Vec<String>,
    pub(crate) concurrency: usize,
    pub(crate) poll_wait: Duration,
    pub(crate) shutdown_grace: Duration,
}

/// Runs the worker until `shutdown` is cancelled, then drains.
pub(crate) async fn run(config: PollConfig, env: Arc<TaskEnv>, shutdown: CancellationToken) {
    let jobs: Vec<pb::JobSpec> = env
        .registry
        .iter()
        .map(|(name, job)| pb::JobSpec {
            name: name.to_owned(),
            lease_timeout: job.options.lease_timeout.map(duration_to_proto),
        })
        .collect();
    if jobs.is_empty() {
        tracing::error!("worker has no jobs registered; it will not poll");
        shutdown.cancelled().await;
        return;
    }
    let slots = Arc::new(Semaphore::new(config.concurrency));
    tracing::info!(
        queues = ?config.queues,
        jobs = ?jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        concurrency = config.concurrency,
        "worker started"
    );

    let mut backoff = Backoff::new();
    let mut unreachable = false;
    loop {
        let permits = tokio::select! {
            () = shutdown.cancelled() => break,
            permits = free_slots(&slots) => permits,
        };
        let Some(mut permits) = permits else { break };
        let request = pb::PollTaskRequest {
            worker_id: config.worker_id.clone(),
            queues: config.queues.clone(),
            jobs: jobs.clone(),
            max_tasks: i32::try_from(permits.len()).unwrap_or(1),
            wait: Some(duration_to_proto(config.poll_wait)),
        };
        let started = Instant::now();
        let mut client = env.client.clone();
        let answer = tokio::select! {
            () = shutdown.cancelled() => break,
            answer = client.poll_task(with_timeout(request, config.poll_wait + POLL_SLACK)) => answer,
        };
        let delay = match answer {
            Ok(response) => {
                let tasks = response.into_inner().tasks;
                if std::mem::take(&mut unreachable) {
                    tracing::info!("polling again");
                }
                backoff.reset();
                let quick_empty = tasks.is_empty() && started.elapsed() < config.poll_wait / 2;
                if tasks.len() > permits.len() {
                    tracing::error!(
                        asked = permits.len(),
                        got = tasks.len(),
                        "server sent more tasks than asked for; dropping the extra ones"
                    );
                }
                for task in tasks {
                    let Some(permit) = permits.pop() else { break };
                    let span = tracing::info_span!(
                        "stackshift.task",
                        run_id = %task.run_id,
                        job = %task.job,
                        attempt = task.attempt,
                    );
                    tokio::spawn(execute(Arc::clone(&env), task, permit).instrument(span));
                }
                // An empty answer long before the wait passed (a spurious wake-up, or a
                // server that ignores `wait`) must not become a busy loop.
                quick_empty.then(|| Duration::from_millis(rand::random_range(50..150)))
            }
            Err(status) => {
                unreachable = true;
                let delay = backoff.next_delay();
                let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                match status.code() {
                    Code::Unauthenticated | Code::PermissionDenied => tracing::error!(
                        code = ?status.code(),
                        error = %status.message(),
                        retry_in_ms,
                        "server refused the worker's credentials; check STACKSHIFT_API_KEY"
                    ),
                    Code::InvalidArgument | Code::Unimplemented | Code::Internal => {
                        tracing::error!(
                            code = ?status.code(),
                            error = %status.message(),
                            retry_in_ms,
                            "poll failed"
                        )
                    }
                    _ => tracing::warn!(
                        code = ?status.code(),
                        error = %status.message(),
                        retry_in_ms,
                        "cannot reach the server; reconnecting"
                    ),
                }
                Some(delay)
            }
        };
        drop(permits);
        if let Some(delay) = delay {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
    drain(
        &slots,
        config.concurrency,
        config.shutdown_grace,
        &env.abandon,
    )
    .await;
}

/// Waits for one free slot, then takes every other slot free at that moment (up to the
/// server's per-poll limit). `None` when the semaphore is closed.
async fn free_slots(slots: &Arc<Semaphore>) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = Arc::clone(slots).acquire_owned().await.ok()?;
    let mut permits = vec![first];
    while permits.len() < MAX_TASKS_PER_POLL {
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// Waits up to `grace` for in-flight tasks to finish (every slot free again), then tells the
/// rest to stop and waits briefly for them to drop.
async fn drain(
    slots: &Arc<Semaphore>,
    concurrency: usize,
    grace: Duration,
    abandon: &CancellationToken,
) {
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let in_flight = concurrency - slots.available_permits();
    if in_flight > 0 {
        tracing::info!(
            in_flight,
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "worker stopping; waiting for running handlers"
        );
    }
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        let left = concurrency - slots.available_permits();
        tracing::warn!(
            abandoned = left,
            "shutdown grace period over; abandoning running handlers"
        );
        abandon.cancel();
        let _ = tokio::time::timeout(ABANDON_WAIT, slots.acquire_many(all)).await;
    }
    tracing::info!("worker stopped");
}
