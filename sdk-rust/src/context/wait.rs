//! Durable sleeps and event waits on [`Step`]: `step.sleep`, `step.sleep_until` and
//! `step.wait_for_event`. Each sends `SuspendRun`; the server either resolves the wait at
//! once (the sleep's time has passed, or a matching event is already in the run's inbox)
//! and the handler continues, or stores the wait and releases the lease, in which case the
//! worker stops the handler, frees its slot and reports nothing. When the wait ends the run
//! is delivered again, and the replay returns the journaled result at the same call.

use std::time::Duration;

use chrono::{DateTime, Utc};
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::suspend_run_request::Wait;
use tonic::Code;

use super::{Recorded, Step};
use crate::client::with_timeout;
use crate::convert::{chrono_to_timestamp, duration_to_proto, timestamp_to_chrono};
use crate::duration::IntoDuration;
use crate::events::{Event, WaitResult, wait_result_from_journal};
use crate::non_retryable;
use crate::worker::lease::{WRITE_TIMEOUT, WriteError, write};

/// How a journal kind is named in messages.
pub(crate) fn kind_name(kind: pb::JournalEntryKind) -> &'static str {
    match kind {
        pb::JournalEntryKind::Sleep => "sleep",
        pb::JournalEntryKind::Event => "event wait",
        pb::JournalEntryKind::Step => "step",
        pb::JournalEntryKind::Child => "child wait",
        pb::JournalEntryKind::Any => "wait for any",
        pb::JournalEntryKind::All => "wait for all",
        _ => "journal entry of an unknown kind",
    }
}

impl Step {
    /// Sleeps durably for `duration` (a [`Duration`] or a string like `"1h30m"`; at most
    /// 365 days), counted from when the server receives the call.
    ///
    /// The run turns `waiting` and holds no worker slot while it sleeps; it survives worker
    /// and server restarts, and is delivered again when the sleep ends (the same attempt,
    /// so sleeping never uses up retries). In that execution, and in every later replay,
    /// this call returns at once. The id follows the same occurrence-suffix rules as
    /// [`Step::run`] and shares its id space.
    ///
    /// When the run suspends, this returns [`Interrupted`](crate::Interrupted): propagate
    /// it with `?` (the worker then stops the handler without reporting anything).
    ///
    /// ```no_run
    /// # async fn demo(step: stackshift::Step) -> anyhow::Result<()> {
    /// step.sleep("cool-down", "10m").await?;
    /// # Ok(()) }
    /// ```
    pub async fn sleep(&self, id: &str, duration: impl IntoDuration) -> anyhow::Result<()> {
        let duration = duration
            .into_duration()
            .map_err(|e| non_retryable(format!("step.sleep({id:?}): {e}")))?;
        let wait = Wait::Sleep(pb::SleepWait {
            duration: Some(duration_to_proto(duration)),
            until: None,
        });
        self.suspend(id, pb::JournalEntryKind::Sleep, wait, "sleeping")
            .await
            .map(|_| ())
    }

    /// Sleeps durably until `time` (at most 365 days ahead; a time in the past returns at
    /// once). Otherwise like [`Step::sleep`].
    pub async fn sleep_until(&self, id: &str, time: DateTime<Utc>) -> anyhow::Result<()> {
        let wait = Wait::Sleep(pb::SleepWait {
            duration: None,
            until: Some(chrono_to_timestamp(time)),
        });
        self.suspend(id, pb::JournalEntryKind::Sleep, wait, "sleeping")
            .await
            .map(|_| ())
    }

    /// Waits for the event `name` with exactly `correlation_key` (empty = only events
    /// published without a key), for at most `timeout` (a [`Duration`] or a string like
    /// `"24h"`; 0 to 365 days). Returns [`WaitResult::Received`] with the event, or
    /// [`WaitResult::TimedOut`] once the timeout passed.
    ///
    /// The run's inbox decides: the first matching event published **after the run was
    /// created** that this run has not received yet matches, even when it was published
    /// before the handler reached this call (so a webhook that lands early is never lost).
    /// Two waits for the same name receive two successive events. While no event is there,
    /// the run turns `waiting` and holds no worker slot; it is delivered again when an event
    /// arrives or the timeout passes. Ids, replay and [`Interrupted`](crate::Interrupted)
    /// behave as for [`Step::sleep`].
    ///
    /// ```no_run
    /// # async fn demo(step: stackshift::Step) -> anyhow::Result<()> {
    /// use stackshift::WaitResult;
    /// match step
    ///     .wait_for_event("wait-for-payment", "payment.confirmed", "pay_123", "1h")
    ///     .await?
    /// {
    ///     WaitResult::Received(event) => println!("paid: {}", event.payload),
    ///     WaitResult::TimedOut => anyhow::bail!("payment not confirmed within an hour"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_event(
        &self,
        id: &str,
        name: &str,
        correlation_key: &str,
        timeout: impl IntoDuration,
    ) -> anyhow::Result<WaitResult<Event>> {
        let timeout: Duration = timeout
            .into_duration()
            .map_err(|e| non_retryable(format!("step.wait_for_event({id:?}): {e}")))?;
        let wait = Wait::Event(pb::EventWait {
            event_name: name.to_owned(),
            correlation_key: correlation_key.to_owned(),
            timeout: Some(duration_to_proto(timeout)),
        });
        let what = format!("waiting for event {name}");
        let output = self
            .suspend(id, pb::JournalEntryKind::Event, wait, &what)
            .await?;
        wait_result_from_journal(&output)
            .map_err(|e| non_retryable(format!("the recorded result of wait {id}: {e}")))
    }

    /// Assigns the effective id, replays a journaled result, or sends `SuspendRun`.
    /// Returns the wait's journaled output; when the run suspends, interrupts the attempt
    /// (as suspended) and returns `Interrupted`.
    pub(super) async fn suspend(
        &self,
        id: &str,
        kind: pb::JournalEntryKind,
        wait: Wait,
        what: &str,
    ) -> anyhow::Result<Vec<u8>> {
        if id.is_empty() {
            return Err(non_retryable("step id must not be empty"));
        }
        let step_id = self
            .inner
            .occurrences
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next(id)
            .map_err(non_retryable)?;
        let mismatch = |found: pb::JournalEntryKind| {
            non_retryable(format!(
                "step id {step_id} is recorded as a {} in this run's journal, not as a {}: \
                 the handler no longer calls its steps in the recorded order",
                kind_name(found),
                kind_name(kind)
            ))
        };
        match self.inner.journal.get(&step_id) {
            Some(Recorded::Wait { kind: k, output }) if *k == kind => {
                tracing::debug!(run_id = %self.inner.lease.run_id, step_id, "wait replayed from the journal");
                return Ok(output.clone());
            }
            Some(Recorded::Wait { kind: k, .. }) => return Err(mismatch(*k)),
            Some(_) => return Err(mismatch(pb::JournalEntryKind::Step)),
            None => {}
        }

        let lease = &self.inner.lease;
        if lease.is_interrupted() {
            return Err(lease.interrupted_error().into());
        }
        self.inner.log.flush().await;
        let request = pb::SuspendRunRequest {
            run_id: lease.run_id.clone(),
            lease_token: lease.token.clone(),
            step_id: step_id.clone(),
            wait: Some(wait),
        };
        let result = write(lease, "SuspendRun", || {
            let mut client = self.inner.client.clone();
            let request = with_timeout(request.clone(), WRITE_TIMEOUT);
            async move { client.suspend_run(request).await }
        })
        .await;
        let response = match result {
            Ok(response) => response,
            Err(WriteError::Interrupted(interrupted)) => return Err(interrupted.into()),
            Err(WriteError::GaveUp(status)) => {
                lease.interrupt(format!(
                    "the server stayed unreachable until the lease expired ({})",
                    status.message()
                ));
                return Err(lease.interrupted_error().into());
            }
            Err(WriteError::Rejected(status)) => {
                let message = format!("could not start {what} ({step_id}): {}", status.message());
                return Err(match status.code() {
                    Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange => {
                        non_retryable(message)
                    }
                    _ => anyhow::anyhow!(message),
                });
            }
        };
        match pb::SuspendOutcome::try_from(response.outcome) {
            Ok(pb::SuspendOutcome::Satisfied) => {
                let entry = response.entry.ok_or_else(|| {
                    anyhow::anyhow!("SuspendRun answered SATISFIED without an entry")
                })?;
                let found = pb::JournalEntryKind::try_from(entry.kind)
                    .unwrap_or(pb::JournalEntryKind::Unspecified);
                if found != kind {
                    return Err(mismatch(found));
                }
                tracing::debug!(run_id = %lease.run_id, step_id, "wait resolved at once");
                Ok(match entry.outcome {
                    Some(pb::journal_entry::Outcome::Output(bytes)) => bytes,
                    _ => b"null".to_vec(),
                })
            }
            Ok(pb::SuspendOutcome::Suspended) => {
                let until = response
                    .wake_at
                    .as_ref()
                    .and_then(timestamp_to_chrono)
                    .map_or_else(String::new, |t| format!(" until {}", t.to_rfc3339()));
                tracing::debug!(run_id = %lease.run_id, step_id, "run suspended: {what}{until}");
                lease.suspend(format!("the run is {what} ({step_id}){until}"));
                Err(lease.interrupted_error().into())
            }
            _ => Err(anyhow::anyhow!(
                "SuspendRun answered an unknown outcome {}",
                response.outcome
            )),
        }
    }
}
