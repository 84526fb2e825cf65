//! Executing one task: build the lease and the step journal, heartbeat every third of the
//! lease timeout, run the handler (stopping it when the run is cancelled, the lease is lost
//! or the worker abandons its work at shutdown), then report the outcome with
//! `CompleteRun` or `FailRun`, unless the attempt was interrupted.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt as _;
use stackshift_proto::v1 as pb;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::lease::{Lease, WriteError, is_lease_lost, lost_reason, write};
use super::registry::{HandlerOutcome, Invocation, Registry};
use super::reporter::Reporter;
use crate::client::{WorkerClient, with_timeout};
use crate::context::{Recorded, Step};
use crate::convert::{duration_from_proto, timestamp_to_chrono};
use crate::error::{failure_from_error, is_interrupted};
use crate::run::Failure;

/// The lease timeout assumed when a task names none.
const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the worker shares with every task it executes.
pub(crate) struct TaskEnv {
    pub(crate) client: WorkerClient,
    /// Sends step results and run outcomes, batched (see [`Reporter`]).
    pub(crate) reporter: Reporter,
    pub(crate) state_client: crate::StateClient,
    pub(crate) registry: Registry,
    /// Cancelled when the shutdown grace period is over: running handlers are dropped.
    pub(crate) abandon: CancellationToken,
}

/// How the handler future ended.
enum Ending {
    Finished(HandlerOutcome),
    Panicked(String),
    Interrupted,
    Abandoned,
}

/// Aborts the heartbeat task when the execution ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Executes `task`, holding `permit` (the worker's concurrency slot) until it is done.
pub(crate) async fn execute(env: Arc<TaskEnv>, task: pb::Task, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    let lease_timeout = task
        .lease_timeout
        .as_ref()
        .and_then(duration_from_proto)
        .filter(|d| !d.is_zero())
        .or_else(|| {
            let deadline = task.lease_deadline.as_ref().and_then(timestamp_to_chrono)?;
            (deadline - Utc::now()).to_std().ok()
        })
        .unwrap_or(DEFAULT_LEASE_TIMEOUT);
    let lease = Arc::new(Lease::new(
        task.run_id.clone(),
        task.lease_token.clone(),
        lease_timeout,
    ));
    tracing::debug!(
        journaled = task.journal.len(),
        resumed = task.resumed,
        "task received"
    );

    let Some(job) = env.registry.get(&task.job) else {
        // The server only sends jobs the poll named, so this is a protocol slip; another
        // worker may know the job, so let the run be retried.
        let failure = Failure::new(format!("this worker has no handler for job {}", task.job));
        fail_run(&env.reporter, &lease, failure).await;
        return;
    };

    let step = Step::new(
        env.client.clone(),
        env.reporter.clone(),
        Arc::clone(&lease),
        journal_of(task.journal),
    );
    let logger = step.logger();
    let invocation = Invocation {
        payload: task.payload,
        step,
        state: crate::State::for_run(env.state_client.clone(), Arc::clone(&lease)),
        run_id: task.run_id,
        job: task.job,
        queue: task.queue,
        attempt: task.attempt,
        max_attempts: task.max_attempts,
    };
    let handler_future = (job.handler)(invocation);

    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat_loop(
        env.client.clone(),
        Arc::clone(&lease),
    )));

    let ending = tokio::select! {
        biased;
        () = lease.interrupted() => Ending::Interrupted,
        () = env.abandon.cancelled() => Ending::Abandoned,
        outcome = AssertUnwindSafe(handler_future).catch_unwind() => match outcome {
            Ok(outcome) => Ending::Finished(outcome),
            Err(panic) => Ending::Panicked(panic_message(panic.as_ref())),
        },
    };
    drop(_heartbeat);
    // Lines still buffered go out before the outcome (a no-op once the lease is gone).
    if !lease.is_interrupted() {
        logger.flush().await;
    }

    match ending {
        Ending::Interrupted | Ending::Finished(_) if lease.is_suspended() => {
            // Not a failure: the server holds the wait and delivers the run again.
            tracing::debug!(reason = %lease.interrupted_error().reason(), "run suspended; slot freed");
        }
        Ending::Interrupted => {
            tracing::info!(reason = %lease.interrupted_error().reason(), "handler stopped");
        }
        Ending::Abandoned => {
            tracing::warn!(
                "handler abandoned at shutdown; the run is redelivered when its lease expires"
            );
        }
        Ending::Panicked(message) => {
            tracing::error!(panic = %message, "handler panicked");
            let mut failure = Failure::new(format!("handler panicked: {message}"));
            failure.error_type = Some("panic".to_owned());
            fail_run(&env.reporter, &lease, failure).await;
        }
        Ending::Finished(_) if lease.is_interrupted() => {
            tracing::info!(reason = %lease.interrupted_error().reason(), "attempt interrupted; not reporting");
        }
        Ending::Finished(HandlerOutcome::Completed(result)) => {
            complete_run(&env.reporter, &lease, result).await;
        }
        Ending::Finished(HandlerOutcome::Failed(error)) => {
            if is_interrupted(&error) {
                tracing::info!(error = %format!("{error:#}"), "attempt interrupted; not reporting");
            } else {
                let failure = failure_from_error(&error);
                tracing::info!(
                    error = %failure.message,
                    non_retryable = failure.non_retryable,
                    "handler failed"
                );
                fail_run(&env.reporter, &lease, failure).await;
            }
        }
        Ending::Finished(HandlerOutcome::BadPayload(message)) => {
            tracing::warn!(error = %message, "payload rejected");
            let failure = Failure {
                message,
                error_type: Some("PayloadMismatch".to_owned()),
                non_retryable: true,
                ..Failure::default()
            };
            fail_run(&env.reporter, &lease, failure).await;
        }
    }
}

/// The journal's step, sleep and event-wait entries by id.
fn journal_of(entries: Vec<pb::JournalEntry>) -> HashMap<String, Recorded> {
    let mut journal = HashMap::with_capacity(entries.len());
    for entry in entries {
        let kind =
            pb::JournalEntryKind::try_from(entry.kind).unwrap_or(pb::JournalEntryKind::Unspecified);
        if kind == pb::JournalEntryKind::State {
            // State calls are replayed by the server, which answers a journaled call id
            // with the recorded result.
            continue;
        }
        let recorded = match (kind, entry.outcome) {
            (pb::JournalEntryKind::Step, Some(pb::journal_entry::Outcome::Output(bytes))) => {
                Recorded::Output(bytes)
            }
            (pb::JournalEntryKind::Step, Some(pb::journal_entry::Outcome::Failure(f))) => {
                Recorded::Failure(f.into())
            }
            (pb::JournalEntryKind::Step, None) => Recorded::Output(Vec::new()),
            (
                pb::JournalEntryKind::Sleep
                | pb::JournalEntryKind::Event
                | pb::JournalEntryKind::Child
                | pb::JournalEntryKind::Any
                | pb::JournalEntryKind::All,
                Some(pb::journal_entry::Outcome::Output(output)),
            ) => Recorded::Wait { kind, output },
            (
                pb::JournalEntryKind::Sleep
                | pb::JournalEntryKind::Event
                | pb::JournalEntryKind::Child
                | pb::JournalEntryKind::Any
                | pb::JournalEntryKind::All,
                _,
            ) => Recorded::Wait {
                kind,
                output: b"null".to_vec(),
            },
            _ => {
                tracing::debug!(entry = %entry.id, kind = entry.kind, "skipping a journal entry of an unknown kind");
                continue;
            }
        };
        journal.insert(entry.id, recorded);
    }
    journal
}

/// Extends the lease every third of its timeout until aborted; interrupts the attempt when
/// the server reports a cancellation or the lease is gone.
async fn heartbeat_loop(client: WorkerClient, lease: Arc<Lease>) {
    let interval = (lease.timeout / 3).max(Duration::from_millis(100));
    let mut next = interval;
    loop {
        tokio::time::sleep(next).await;
        let request = pb::HeartbeatRequest {
            run_id: lease.run_id.clone(),
            lease_token: lease.token.clone(),
        };
        let sent_at = Instant::now();
        let answer = client
            .clone()
            .heartbeat(with_timeout(request, interval.max(Duration::from_secs(1))))
            .await;
        match answer {
            Ok(response) => {
                lease.extended(sent_at);
                next = interval;
                if response.into_inner().cancel_requested {
                    lease.interrupt("the run was cancelled");
                    return;
                }
            }
            Err(status) if is_lease_lost(status.code()) => {
                lease.interrupt(lost_reason(&status));
                return;
            }
            Err(status) => {
                if Instant::now() >= lease.deadline() {
                    // Nothing this attempt does can be recorded any more, and the server
                    // will hand the run to another attempt: stop rather than run twice.
                    lease.interrupt(format!(
                        "the lease expired: no heartbeat reached the server in time ({})",
                        status.message()
                    ));
                    return;
                }
                tracing::warn!(code = ?status.code(), error = %status.message(), "heartbeat failed; retrying");
                next = (interval / 2).max(Duration::from_millis(100));
            }
        }
    }
}

/// Reports the handler's result.
async fn complete_run(reporter: &Reporter, lease: &Lease, result: Vec<u8>) {
    let request = pb::CompleteRunRequest {
        run_id: lease.run_id.clone(),
        lease_token: lease.token.clone(),
        result,
    };
    let outcome = write(lease, "CompleteRun", || {
        reporter.complete_run(request.clone())
    })
    .await;
    match outcome {
        Ok(_) => tracing::info!("run completed"),
        Err(WriteError::Rejected(status))
            if matches!(
                status.code(),
                Code::InvalidArgument | Code::ResourceExhausted
            ) =>
        {
            // The result itself is unacceptable (e.g. over the size limit): retrying the
            // handler would produce it again, so fail the run instead of leaving it to
            // time out.
            tracing::error!(code = ?status.code(), error = %status.message(), "server rejected the run's result");
            let failure = Failure {
                message: format!(
                    "the run's result could not be recorded: {}",
                    status.message()
                ),
                error_type: Some("ResultRejected".to_owned()),
                non_retryable: true,
                ..Failure::default()
            };
            fail_run(reporter, lease, failure).await;
        }
        Err(error) => log_write_error("CompleteRun", &error),
    }
}

/// Reports a failed attempt.
async fn fail_run(reporter: &Reporter, lease: &Lease, failure: Failure) {
    let request = pb::FailRunRequest {
        run_id: lease.run_id.clone(),
        lease_token: lease.token.clone(),
        failure: Some(failure.into()),
    };
    let outcome = write(lease, "FailRun", || reporter.fail_run(request.clone())).await;
    match outcome {
        Ok(response) => {
            let status =
                pb::RunStatus::try_from(response.status).unwrap_or(pb::RunStatus::Unspecified);
            let retry_at = response
                .next_attempt_at
                .as_ref()
                .and_then(timestamp_to_chrono)
                .map(|t| t.to_rfc3339());
            tracing::info!(
                status = status.as_str_name(),
                retry_at,
                "attempt failure recorded"
            );
        }
        Err(error) => log_write_error("FailRun", &error),
    }
}

fn log_write_error(rpc: &str, error: &WriteError) {
    match error {
        WriteError::Interrupted(i) => {
            tracing::info!(rpc, reason = %i.reason(), "outcome not recorded")
        }
        WriteError::GaveUp(status) => tracing::warn!(
            rpc,
            code = ?status.code(),
            "server unreachable until the lease expired; the run will be redelivered"
        ),
        WriteError::Rejected(status) => tracing::error!(
            rpc,
            code = ?status.code(),
            error = %status.message(),
            "server rejected the outcome"
        ),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
