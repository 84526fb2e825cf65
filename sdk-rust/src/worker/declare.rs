//! Event triggers declared on jobs ([`crate::JobTrigger`]): the worker creates them with the
//! idempotent `CreateEventTrigger` when it starts, before its first poll. A trigger that
//! exists with the same options is kept; the server's refusal stops the worker's start with
//! [`Error::TriggerRefused`].

use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::registry::Registry;
use crate::Error;
use crate::triggers::{NewEventTrigger, Triggers};

/// One declared trigger, resolved against the worker's queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Declaration {
    pub(crate) job: String,
    pub(crate) event: String,
    pub(crate) correlation_key: String,
    pub(crate) queue: String,
}

/// The declared triggers of every registered job; a trigger without a queue takes
/// `default_queue` (the worker's first queue).
pub(crate) fn declarations(registry: &Registry, default_queue: &str) -> Vec<Declaration> {
    registry
        .iter()
        .flat_map(|(job, registered)| {
            registered
                .options
                .triggers
                .iter()
                .map(move |t| Declaration {
                    job: job.to_owned(),
                    event: t.event.clone(),
                    correlation_key: t.correlation_key.clone().unwrap_or_default(),
                    queue: t.queue.clone().unwrap_or_else(|| default_queue.to_owned()),
                })
        })
        .collect()
}

/// Creates every declared trigger (once each); the first refusal is returned as
/// [`Error::TriggerRefused`], an unreachable server as itself.
pub(crate) async fn create_all(triggers: &Triggers, declared: &[Declaration]) -> Result<(), Error> {
    for d in declared {
        let mut trigger = NewEventTrigger::new(&d.event, &d.job).queue(&d.queue);
        if !d.correlation_key.is_empty() {
            trigger = trigger.correlation_key(&d.correlation_key);
        }
        match triggers.create(trigger).await {
            Ok((stored, created)) => tracing::info!(
                job = %d.job,
                event = %d.event,
                trigger_id = %stored.id,
                created,
                "declared event trigger in place"
            ),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                return Err(Error::TriggerRefused {
                    job: d.job.clone(),
                    event: d.event.clone(),
                    correlation_key: d.correlation_key.clone(),
                    queue: d.queue.clone(),
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(())
}

/// For [`crate::Worker::start`]: creates the declared triggers, retrying while the server is
/// unreachable. Returns false when the worker must not poll (a refusal, logged as an
/// error, or shutdown requested meanwhile).
pub(crate) async fn in_background(
    triggers: &Triggers,
    declared: &[Declaration],
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new();
    loop {
        match create_all(triggers, declared).await {
            Ok(()) => return true,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "cannot create the declared event triggers yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the worker does not start");
                return false;
            }
        }
    }
}
