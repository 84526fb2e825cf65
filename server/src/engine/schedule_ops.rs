//! Schedules: create, read, list, pause, resume and delete, and firing due schedules from
//! the durable timer. Each firing starts its runs with the idempotency key
//! `schedule:<id>:<scheduled time>` and advances `next_fire_at` in the same transaction,
//! conditionally on the value it read, so each scheduled time fires once across replicas.
//! Rules are in `docs/schedules.md`.

use super::error::{EngineError, EngineResult};
use super::model::{NewRun, StartOutcome};
use super::schedule_model::{
    CatchUp, CreateScheduleInput, NewSchedule, ScheduleDefinition, ScheduleFiring, ScheduleRecord,
};
use super::schedule_spec::{self, Compiled, format_time};
use super::{Engine, client_ops::DEFAULT_QUEUE, now_ms, queue_ops, validate};

/// Page size bounds for `ListSchedules`.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 1_000;
/// Schedules fired per store round trip of a timer tick.
const FIRE_BATCH: u64 = 100;

/// Validates a schedule id: like a job name (1-128 of `A-Z a-z 0-9 _ - . : /`).
fn schedule_id(id: &str) -> EngineResult<()> {
    validate::name("schedule_id", id)
}

impl Engine {
    /// Creates a schedule. Creating an id that exists with the same definition returns the
    /// stored schedule (`false`); with a different definition it is `AlreadyExists`.
    pub async fn create_schedule(
        &self,
        namespace: &str,
        input: CreateScheduleInput,
    ) -> EngineResult<(ScheduleRecord, bool)> {
        schedule_id(&input.id)?;
        validate::name("job", &input.job)?;
        let queue = input.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        validate::name("queue", &queue)?;
        let payload = validate::json("payload", &input.payload, self.config.max_payload_bytes)?;
        validate::duration_ms("lease_timeout", input.lease_timeout_ms, 1_000, 3_600_000)?;
        if !(queue_ops::MIN_PRIORITY..=queue_ops::MAX_PRIORITY).contains(&input.priority) {
            return Err(EngineError::invalid(format!(
                "priority must be between {} and {} (got {})",
                queue_ops::MIN_PRIORITY,
                queue_ops::MAX_PRIORITY,
                input.priority
            )));
        }
        // The overrides must make a valid policy with the server defaults (the queue's
        // defaults are applied at each firing).
        self.retry_policy(&input.retry)?;
        let compiled = schedule_spec::compile(&input.spec)?;
        let now = now_ms();
        let next_fire_at = compiled
            .next_after(now)
            .ok_or_else(|| EngineError::invalid("the schedule has no future time to fire at"))?;
        let definition = ScheduleDefinition {
            job: input.job,
            queue,
            payload,
            retry: input.retry,
            lease_timeout_ms: input.lease_timeout_ms,
            priority: input.priority,
            spec: input.spec,
            catch_up: input.catch_up.unwrap_or(CatchUp::Latest),
        };
        let (record, created) = self
            .store
            .insert_schedule(NewSchedule {
                namespace: namespace.to_owned(),
                id: input.id.clone(),
                definition: definition.clone(),
                paused: input.paused,
                next_fire_at,
                now,
            })
            .await?;
        if !created && record.definition != definition {
            return Err(EngineError::AlreadyExists(format!(
                "schedule {} already exists with a different definition; delete it first \
                 or choose another id",
                input.id
            )));
        }
        if created && !record.paused {
            self.timer.schedule(record.next_fire_at);
        }
        Ok((record, created))
    }

    /// Reads a schedule.
    pub async fn get_schedule(&self, namespace: &str, id: &str) -> EngineResult<ScheduleRecord> {
        schedule_id(id)?;
        self.store
            .get_schedule(namespace, id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Lists schedules in id order. Returns the page and the next page token.
    pub async fn list_schedules(
        &self,
        namespace: &str,
        page_size: i32,
        page_token: Option<String>,
    ) -> EngineResult<(Vec<ScheduleRecord>, Option<String>)> {
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n if n < 0 || n as u64 > MAX_PAGE => {
                return Err(EngineError::invalid(format!(
                    "page_size must be between 1 and {MAX_PAGE} (got {n})"
                )));
            }
            n => n as u64,
        };
        if let Some(t) = &page_token {
            schedule_id(t).map_err(|_| {
                EngineError::invalid("page_token is not a token returned by ListSchedules")
            })?;
        }
        let mut rows = self
            .store
            .list_schedules(namespace, page_token.as_deref(), limit + 1)
            .await?;
        let next = if rows.len() as u64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Pauses a schedule: it stops firing until resumed. Pausing a paused schedule is a
    /// no-op.
    pub async fn pause_schedule(&self, namespace: &str, id: &str) -> EngineResult<ScheduleRecord> {
        schedule_id(id)?;
        self.store
            .set_schedule_paused(namespace, id, true, None, now_ms())
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// Resumes a schedule: it fires next at its first time after now (times that passed
    /// while it was paused are not caught up). Resuming an active schedule is a no-op.
    pub async fn resume_schedule(&self, namespace: &str, id: &str) -> EngineResult<ScheduleRecord> {
        let current = self.get_schedule(namespace, id).await?;
        if !current.paused {
            return Ok(current);
        }
        let now = now_ms();
        let next = schedule_spec::compile(&current.definition.spec)?
            .next_after(now)
            .ok_or_else(|| EngineError::invalid("the schedule has no future time to fire at"))?;
        let record = self
            .store
            .set_schedule_paused(namespace, id, false, Some(next), now)
            .await?
            .ok_or_else(|| not_found(id))?;
        self.timer.schedule(record.next_fire_at);
        Ok(record)
    }

    /// Deletes a schedule (runs it started are kept).
    pub async fn delete_schedule(&self, namespace: &str, id: &str) -> EngineResult<()> {
        schedule_id(id)?;
        if self.store.delete_schedule(namespace, id).await? {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// Fires every schedule due at `now` (called by the timer loop). A schedule that fails
    /// to fire is logged and retried at the next tick.
    pub(super) async fn fire_due_schedules(&self, now: i64) -> EngineResult<()> {
        loop {
            let due = self.store.due_schedules(now, FIRE_BATCH).await?;
            let n = due.len() as u64;
            let mut fired = 0;
            for schedule in due {
                match self.fire_schedule(&schedule, now).await {
                    Ok(true) => fired += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(
                            namespace = %schedule.namespace,
                            schedule = %schedule.id,
                            error = %e,
                            "schedule firing failed; retrying at the next tick"
                        );
                        // Do not spin on it within this tick.
                        return Ok(());
                    }
                }
            }
            // A full batch that another replica is firing: leave it to that replica (and
            // to the next tick) rather than reading the same rows again.
            if n < FIRE_BATCH || fired == 0 {
                return Ok(());
            }
        }
    }

    /// Fires one due schedule; false when another replica fired it first (or it was paused
    /// or deleted meanwhile).
    async fn fire_schedule(&self, s: &ScheduleRecord, now: i64) -> EngineResult<bool> {
        let d = &s.definition;
        let compiled: Compiled = schedule_spec::compile(&d.spec)?;
        let times = compiled.due_times(s.next_fire_at, now, d.catch_up);
        let next_fire_at = compiled
            .next_after(now)
            .unwrap_or(i64::MAX)
            .max(s.next_fire_at + 1);
        let queue_retry = self
            .store
            .get_queue(&s.namespace, &d.queue)
            .await?
            .map(|q| q.config.retry)
            .unwrap_or_default();
        let retry = self.retry_policy(&queue_ops::merge_retry(&d.retry, &queue_retry))?;
        let ttl = self.config.default_idempotency_ttl_ms;
        let runs: Vec<NewRun> = times
            .iter()
            .map(|t| NewRun {
                id: uuid::Uuid::now_v7().to_string(),
                namespace: s.namespace.clone(),
                job: d.job.clone(),
                queue: d.queue.clone(),
                payload: d.payload.clone(),
                retry,
                lease_timeout_ms: d.lease_timeout_ms,
                idempotency: Some((schedule_key(&s.id, *t), now + ttl)),
                now,
                available_at: now,
                priority: d.priority,
                concurrency_key: None,
                parent: None,
            })
            .collect();
        let skipped = times.is_empty();
        let outcome = self
            .store
            .fire_schedule(ScheduleFiring {
                namespace: s.namespace.clone(),
                id: s.id.clone(),
                expected_next_fire_at: s.next_fire_at,
                next_fire_at,
                last_fire_at: times.last().copied(),
                runs,
                now,
            })
            .await?;
        let Some(outcomes) = outcome else {
            return Ok(false); // another replica fired it, or it was paused or deleted
        };
        if skipped {
            tracing::info!(schedule = %s.id, "missed schedule times skipped (catch-up SKIP)");
        }
        for o in outcomes {
            if let StartOutcome::Created(run) = o {
                self.metrics
                    .runs(&run.namespace, &run.job, &run.queue, |c| c.started += 1);
                self.run_ready(&run.namespace, &run.queue, &run.job, run.available_at);
            }
        }
        self.timer.schedule(next_fire_at);
        Ok(true)
    }
}

/// The idempotency key of a schedule's run for one scheduled time.
pub fn schedule_key(id: &str, scheduled_at: i64) -> String {
    format!("schedule:{id}:{}", format_time(scheduled_at))
}

fn not_found(id: &str) -> EngineError {
    EngineError::NotFound(format!("schedule {id} not found"))
}
