//! Events: publish (store the event and resume the runs waiting for it), list, and the
//! retention sweeper that deletes old events. Matching rules are in `docs/events.md`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::error::{EngineError, EngineResult};
use super::event_model::{EventFilter, EventRecord, NewEvent, PublishEventInput, PublishOutcome};
use super::handoff::Reservations;
use super::store::ClaimPicker;
use super::{Engine, now_ms, validate};

/// Longest event id, in characters.
pub const MAX_EVENT_ID_LEN: usize = 256;
/// Longest correlation key, in characters.
pub const MAX_CORRELATION_KEY_LEN: usize = 512;
/// Most run ids a publish answer lists (the count is always exact).
pub const MAX_RESUMED_IDS: usize = 100;
/// Default retention of events: 7 days.
pub const DEFAULT_EVENT_RETENTION_MS: i64 = 7 * 24 * 3_600_000;
/// Events deleted per sweeper transaction.
const SWEEP_BATCH: u64 = 1_000;
/// Page size bounds for `ListEvents`.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 1_000;

/// Validates a correlation key: at most 512 characters, no control characters; empty is
/// allowed (no key).
pub fn correlation_key(field: &str, key: &str) -> EngineResult<()> {
    if key.is_empty() {
        return Ok(());
    }
    validate::text_id(field, key, MAX_CORRELATION_KEY_LEN)
}

impl Engine {
    /// Stores an event and resumes every run waiting for it. The answer lists at most
    /// [`MAX_RESUMED_IDS`] resumed runs (the store returns them all; callers get the count).
    pub async fn publish_event(
        &self,
        namespace: &str,
        input: PublishEventInput,
    ) -> EngineResult<PublishOutcome> {
        validate::name("name", &input.name)?;
        let payload = validate::json("payload", &input.payload, self.config.max_payload_bytes)?;
        let id = match input.id {
            Some(id) => {
                validate::text_id("id", &id, MAX_EVENT_ID_LEN)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let key = input.correlation_key.unwrap_or_default();
        correlation_key("correlation_key", &key)?;
        let now = now_ms();
        let triggered = self
            .triggered_runs(namespace, &id, &input.name, &key, &payload, now)
            .await?;
        let new = NewEvent {
            namespace: namespace.to_owned(),
            id,
            name: input.name,
            correlation_key: key,
            payload,
            now,
            triggered,
        };
        // Polls parked here on the resumed (or started) runs' queues claim in the publish's
        // own transaction: the run reaches a handler after one commit instead of two.
        let (outcome, taken) = if self.dispatcher.has_parked(namespace) {
            self.publish_handing_off(namespace, new).await?
        } else {
            (self.store.publish_event(new).await?, HashSet::new())
        };
        for run in &outcome.started {
            self.metrics
                .runs(namespace, &run.job, &run.queue, |c| c.started += 1);
            if !taken.contains(&run.id) {
                self.run_ready(namespace, &run.queue, &run.job, run.available_at);
            }
        }
        if !outcome.resumed.is_empty() {
            tracing::debug!(
                event = %outcome.event.name,
                resumed = outcome.resumed.len(),
                handed_off = taken.len(),
                "event resumed waiting runs"
            );
        }
        if taken.is_empty() {
            self.wake_resumed(&outcome.resumed);
        } else {
            let (handed, rest): (Vec<_>, Vec<_>) = outcome
                .resumed
                .iter()
                .cloned()
                .partition(|r| taken.contains(&r.run_id));
            for r in &handed {
                self.run_changed(&r.run_id);
            }
            self.wake_resumed(&rest);
        }
        Ok(outcome)
    }

    /// Publishes with the resume handoff (see `engine::handoff`). The write and the
    /// handoffs run in a task of their own, so that a publish whose caller went away still
    /// hands the tasks it claimed to their polls (or leaves them as orphans). Returns the
    /// ids of the runs handed over.
    async fn publish_handing_off(
        &self,
        namespace: &str,
        new: NewEvent,
    ) -> EngineResult<(PublishOutcome, HashSet<String>)> {
        let reservations = Reservations::new(self.dispatcher.clone(), namespace, new.now);
        let pick: ClaimPicker = {
            let r = reservations.clone();
            Arc::new(move |out: &PublishOutcome| r.pick(out))
        };
        let (store, timer) = (self.store.clone(), self.timer.clone());
        tokio::spawn(async move {
            match store.publish_event_and_claim(new, pick).await {
                Ok((outcome, claims)) => {
                    let taken = reservations.deliver(claims, &timer);
                    Ok((outcome, taken))
                }
                Err(e) => {
                    reservations.deliver(Vec::new(), &timer);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|_| EngineError::Unavailable("the publish was interrupted".into()))?
    }

    /// Lists events newest first. Returns the page and the next page token.
    pub async fn list_events(
        &self,
        namespace: &str,
        filter: EventFilter,
        page_size: i32,
        page_token: Option<String>,
    ) -> EngineResult<(Vec<EventRecord>, Option<String>)> {
        if let Some(name) = &filter.name {
            validate::name("name", name)?;
        }
        if let Some(key) = &filter.correlation_key {
            correlation_key("correlation_key", key)?;
        }
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n if n < 0 || n as u64 > MAX_PAGE => {
                return Err(EngineError::invalid(format!(
                    "page_size must be between 1 and {MAX_PAGE} (got {n})"
                )));
            }
            n => n as u64,
        };
        let cursor = match &page_token {
            Some(t) => Some(t.parse::<i64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                EngineError::invalid("page_token is not a token returned by ListEvents")
            })?),
            None => None,
        };
        let mut events = self
            .store
            .list_events(namespace, &filter, cursor, limit + 1)
            .await?;
        let next = if events.len() as u64 > limit {
            events.truncate(limit as usize);
            events.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Ok((events, next))
    }

    /// Deletes events older than the retention, in bounded batches, until none is left;
    /// then sleeps for the sweep interval. Runs until shutdown.
    pub(super) async fn event_sweeper(&self) {
        let retention = self.config.event_retention_ms;
        let interval = sweep_interval_ms(retention);
        loop {
            let cutoff = now_ms().saturating_sub(retention);
            loop {
                match self.store.sweep_events(cutoff, SWEEP_BATCH).await {
                    Ok(n) => {
                        if n > 0 {
                            tracing::debug!(deleted = n, "expired events deleted");
                        }
                        if n < SWEEP_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event retention sweep failed; retrying later");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(interval as u64)) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}

/// How often the retention sweeper runs: a tenth of the retention, between 1 s and 60 s.
pub fn sweep_interval_ms(retention_ms: i64) -> i64 {
    (retention_ms / 10).clamp(1_000, 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_interval_is_bounded() {
        assert_eq!(sweep_interval_ms(DEFAULT_EVENT_RETENTION_MS), 60_000);
        assert_eq!(sweep_interval_ms(2_000), 1_000);
        assert_eq!(sweep_interval_ms(100_000), 10_000);
    }

    #[test]
    fn correlation_keys() {
        assert!(correlation_key("k", "").is_ok());
        assert!(correlation_key("k", "pay_123").is_ok());
        assert!(correlation_key("k", "a\nb").is_err());
        assert!(correlation_key("k", &"x".repeat(513)).is_err());
    }
}
