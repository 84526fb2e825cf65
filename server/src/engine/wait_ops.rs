//! Durable waits: `SuspendRun` (a sleep or an event wait under a lease), the timer's
//! resolution of sleeps and event-wait timeouts that fell due, and waking pollers for the
//! runs a resolution queued again.
//!
//! A suspension is not a failed attempt: the attempt stays open while the run waits, and
//! the delivery that resumes it keeps the attempt number (with a new lease token), so
//! sleeps and waits never use up `max_attempts`.

use super::client_ops::validate_run_id;
use super::error::{EngineError, EngineResult};
use super::event_model::{
    ItemInput, ItemSpec, ResumedRun, SuspendOutcome, WaitInput, WaitMode, WaitSpec,
};
use super::event_ops::correlation_key;
use super::model::{LeaseRef, ParentLink, RunRecord, RunStatus};
use super::requests::StartRunInput;
use super::{Engine, now_ms, validate};

/// Most child runs one child wait may start.
pub const MAX_CHILDREN: usize = 1_000;
/// Longest sleep or event-wait timeout: 365 days.
pub const MAX_WAIT_MS: i64 = 365 * 24 * 3_600_000;
/// Waits resolved per store round trip by the timer.
const RESOLVE_BATCH: u64 = 1_000;

impl Engine {
    /// Starts a durable sleep or an event wait for the run holding `token`.
    pub async fn suspend_run(
        &self,
        namespace: &str,
        run_id: &str,
        token: &str,
        step_id: &str,
        wait: WaitInput,
    ) -> EngineResult<SuspendOutcome> {
        validate_run_id(run_id)?;
        if token.is_empty() || token.len() > 64 {
            return Err(EngineError::invalid(
                "lease_token must be the token of the task being executed",
            ));
        }
        validate::text_id("step_id", step_id, validate::MAX_STEP_ID_LEN + 12)?;
        let now = now_ms();
        let spec = match wait {
            WaitInput::Children(children) => {
                self.children_spec(namespace, run_id, step_id, children, now)
                    .await?
            }
            other => wait_spec(other, now)?,
        };
        let lease = LeaseRef {
            namespace: namespace.to_owned(),
            run_id: run_id.to_owned(),
            token: token.to_owned(),
        };
        let out = match self
            .store
            .suspend_run(lease, step_id.to_owned(), spec, now)
            .await
        {
            Ok(out) => out,
            Err(e) => return Err(self.after_store_error(e, namespace, run_id).await),
        };
        self.run_changed(run_id);
        if let SuspendOutcome::Suspended {
            wake_at,
            queue,
            children,
        } = &out
        {
            if let Some(at) = wake_at {
                self.timer.schedule(*at);
            }
            // The run holds no lease any more: a limited queue has room again.
            self.queue_released(namespace, queue);
            for (child, created) in children {
                if *created {
                    self.run_started(child);
                }
            }
        }
        Ok(out)
    }

    /// Validates the children of a child wait and builds the runs to start: each defaults
    /// to the parent's queue and is linked to `(run_id, step_id, index)`.
    async fn children_spec(
        &self,
        namespace: &str,
        run_id: &str,
        step_id: &str,
        children: Vec<StartRunInput>,
        now: i64,
    ) -> EngineResult<WaitSpec> {
        if children.is_empty() || children.len() > MAX_CHILDREN {
            return Err(EngineError::invalid(format!(
                "child.children must hold 1 to {MAX_CHILDREN} child runs (got {}); split a \
                 larger fan-out into several waits",
                children.len()
            )));
        }
        let parent = self
            .store
            .get_run(namespace, run_id)
            .await?
            .ok_or_else(|| EngineError::run_not_found(run_id))?;
        let mut runs = Vec::with_capacity(children.len());
        for (i, input) in children.into_iter().enumerate() {
            let field = format!("child.children[{i}].");
            let mut new = self
                .prepare_run(namespace, input, &parent.queue, &field, now)
                .await?;
            new.parent = Some(ParentLink {
                run_id: run_id.to_owned(),
                step_id: step_id.to_owned(),
                index: i as i32,
            });
            runs.push(new);
        }
        Ok(WaitSpec::Children { runs })
    }

    /// Wakes a poller for the parent of `run` when `run` (now final) resolved the parent's
    /// child wait. The store queued the parent in `run`'s final transaction (and notified
    /// other replicas on PostgreSQL); this is the local wakeup.
    pub(super) async fn child_finished(&self, run: &RunRecord) {
        let Some(parent_id) = &run.parent_run_id else {
            return;
        };
        if let Ok(Some(parent)) = self.store.get_run(&run.namespace, parent_id).await
            && parent.status == RunStatus::Queued
        {
            self.run_changed(&parent.id);
            self.dispatcher
                .signal(&parent.namespace, &parent.queue, &parent.job);
        }
    }

    /// Follows up a store error: when it is a step-limit refusal, the store failed the run
    /// in the same commit, so finish it here as a failed run would be (watchers, metrics,
    /// queue capacity, the parent's child wait). Returns the error to answer.
    pub(super) async fn after_store_error(
        &self,
        e: EngineError,
        namespace: &str,
        run_id: &str,
    ) -> EngineError {
        if !matches!(e, EngineError::StepLimit(_)) {
            return e;
        }
        tracing::warn!(run_id, namespace, "run failed: step limit reached");
        match self.store.get_run(namespace, run_id).await {
            Ok(Some(run)) if run.status == RunStatus::Failed => {
                self.queue_released(namespace, &run.queue);
                self.watchers.finished(run_id);
                self.metrics
                    .runs(namespace, &run.job, &run.queue, |c| c.failed += 1);
                self.child_finished(&run).await;
                self.run_changed(run_id);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, run_id, "reading a run failed by the step limit")
            }
        }
        e
    }

    /// Resolves every wait that fell due at or before `now` (in batches) and wakes pollers
    /// for the runs it queued. Called by the timer loop.
    pub(super) async fn resolve_due_waits(&self, now: i64) -> EngineResult<()> {
        loop {
            let resumed = self.store.resolve_due_waits(now, RESOLVE_BATCH).await?;
            if !resumed.is_empty() {
                tracing::debug!(resumed = resumed.len(), "sleeps and wait timeouts resolved");
            }
            self.wake_resumed(&resumed);
            if (resumed.len() as u64) < RESOLVE_BATCH {
                return Ok(());
            }
        }
    }

    /// Wakes one poller per resumed run (they are deliverable at once); stops when no
    /// poller is left to take a signal.
    pub(super) fn wake_resumed(&self, runs: &[ResumedRun]) {
        for r in runs {
            self.run_changed(&r.run_id);
        }
        for r in runs {
            if !self.dispatcher.signal(&r.namespace, &r.queue, &r.job)
                && self.dispatcher.waiting() == 0
            {
                break;
            }
        }
    }
}

/// Validates a wait and turns its relative times into absolute ones.
fn wait_spec(wait: WaitInput, now: i64) -> EngineResult<WaitSpec> {
    Ok(match wait {
        WaitInput::Children(_) => {
            return Err(EngineError::invalid(
                "child waits are built by children_spec",
            ));
        }
        WaitInput::Combined {
            mode,
            items,
            timeout_ms,
        } => combined_spec(mode, items, timeout_ms, now)?,
        WaitInput::SleepFor(ms) => {
            validate::duration_ms("sleep.duration", Some(ms), 0, MAX_WAIT_MS)?;
            WaitSpec::Sleep { until: now + ms }
        }
        WaitInput::SleepUntil(until) => {
            if until > now + MAX_WAIT_MS {
                return Err(EngineError::invalid(format!(
                    "sleep.until is more than {} ahead",
                    validate::fmt_ms(MAX_WAIT_MS)
                )));
            }
            WaitSpec::Sleep { until }
        }
        WaitInput::Event {
            name,
            correlation_key: key,
            timeout_ms,
        } => {
            validate::name("event.event_name", &name)?;
            correlation_key("event.correlation_key", &key)?;
            let Some(timeout) = timeout_ms else {
                return Err(EngineError::invalid(
                    "event.timeout is required (0 to 365 days): a wait without a timeout \
                     could hold a run forever",
                ));
            };
            validate::duration_ms("event.timeout", Some(timeout), 0, MAX_WAIT_MS)?;
            WaitSpec::Event {
                name,
                correlation_key: key,
                timeout_at: now + timeout,
            }
        }
    })
}

/// Most items of one `wait_for_any` / `wait_for_all`.
pub const MAX_WAIT_ITEMS: usize = 100;

/// Validates a `wait_for_any` / `wait_for_all`.
fn combined_spec(
    mode: WaitMode,
    items: Vec<ItemInput>,
    timeout_ms: Option<i64>,
    now: i64,
) -> EngineResult<WaitSpec> {
    let field = match mode {
        WaitMode::Any => "any",
        WaitMode::All => "all",
    };
    if items.is_empty() || items.len() > MAX_WAIT_ITEMS {
        return Err(EngineError::invalid(format!(
            "{field}.items must hold 1 to {MAX_WAIT_ITEMS} items (got {})",
            items.len()
        )));
    }
    let mut specs = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let f = |name: &str| format!("{field}.items[{i}].{name}");
        specs.push(match item {
            ItemInput::SleepFor(ms) => {
                validate::duration_ms(&f("sleep.duration"), Some(ms), 0, MAX_WAIT_MS)?;
                ItemSpec::Sleep { until: now + ms }
            }
            ItemInput::SleepUntil(until) => {
                if until > now + MAX_WAIT_MS {
                    return Err(EngineError::invalid(format!(
                        "{} is more than {} ahead",
                        f("sleep.until"),
                        validate::fmt_ms(MAX_WAIT_MS)
                    )));
                }
                ItemSpec::Sleep { until }
            }
            ItemInput::Event {
                name,
                correlation_key: key,
            } => {
                validate::name(&f("event.event_name"), &name)?;
                correlation_key(&f("event.correlation_key"), &key)?;
                ItemSpec::Event {
                    name,
                    correlation_key: key,
                }
            }
        });
    }
    let timeout_at = match timeout_ms {
        Some(t) => {
            validate::duration_ms(&format!("{field}.timeout"), Some(t), 0, MAX_WAIT_MS)?;
            Some(now + t)
        }
        None => None,
    };
    // Without a timeout the wait must end by itself: an ANY with a sleep item, or an ALL
    // of sleeps only.
    let sleeps = specs
        .iter()
        .filter(|s| matches!(s, ItemSpec::Sleep { .. }))
        .count();
    let bounded = match mode {
        WaitMode::Any => sleeps > 0,
        WaitMode::All => sleeps == specs.len(),
    };
    if timeout_at.is_none() && !bounded {
        return Err(EngineError::invalid(format!(
            "{field}.timeout is required (0 to 365 days) unless a sleep item bounds the \
             wait: an event that never comes would hold the run forever"
        )));
    }
    Ok(WaitSpec::Combined {
        mode,
        items: specs,
        timeout_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_specs() {
        assert_eq!(
            wait_spec(WaitInput::SleepFor(1_500), 10_000),
            Ok(WaitSpec::Sleep { until: 11_500 })
        );
        assert_eq!(
            wait_spec(WaitInput::SleepUntil(5), 10_000),
            Ok(WaitSpec::Sleep { until: 5 })
        );
        assert!(wait_spec(WaitInput::SleepFor(-1), 0).is_err());
        assert!(wait_spec(WaitInput::SleepFor(MAX_WAIT_MS + 1), 0).is_err());
        assert!(wait_spec(WaitInput::SleepUntil(MAX_WAIT_MS + 1), 0).is_err());
        let ev = |name: &str, key: &str, t: Option<i64>| WaitInput::Event {
            name: name.into(),
            correlation_key: key.into(),
            timeout_ms: t,
        };
        assert_eq!(
            wait_spec(ev("payment.confirmed", "pay_1", Some(0)), 7),
            Ok(WaitSpec::Event {
                name: "payment.confirmed".into(),
                correlation_key: "pay_1".into(),
                timeout_at: 7
            })
        );
        assert!(wait_spec(ev("", "", Some(1)), 0).is_err());
        assert!(wait_spec(ev("a b", "", Some(1)), 0).is_err());
        assert!(wait_spec(ev("e", "k\u{7}", Some(1)), 0).is_err());
        assert!(wait_spec(ev("e", "", None), 0).is_err());
        assert!(wait_spec(ev("e", "", Some(-5)), 0).is_err());
    }
}
