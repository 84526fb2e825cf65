//! Event triggers: create, list and delete subscriptions of jobs to event names, and the
//! runs a publish starts for them. Each run has the idempotency key
//! `event:<event id>:<job>` and is inserted in the publish transaction, so a duplicate
//! event id starts nothing. Rules are in `docs/schedules.md`.

use serde_json::{Value, json};

use super::error::{EngineError, EngineResult};
use super::event_ops::correlation_key;
use super::model::NewRun;
use super::trigger_model::{CreateTriggerInput, TriggerDefinition, TriggerFilter, TriggerRecord};
use super::{Engine, client_ops::DEFAULT_QUEUE, now_ms, queue_ops, validate};

/// Page size bounds for `ListEventTriggers`.
const DEFAULT_PAGE: u64 = 50;
const MAX_PAGE: u64 = 1_000;

impl Engine {
    /// Creates a trigger. The same (event name, correlation key, job) with the same options
    /// returns the stored trigger (`false`); with other options it is `AlreadyExists`.
    pub async fn create_trigger(
        &self,
        namespace: &str,
        input: CreateTriggerInput,
    ) -> EngineResult<(TriggerRecord, bool)> {
        validate::name("event_name", &input.event_name)?;
        validate::name("job", &input.job)?;
        let key = input.correlation_key.unwrap_or_default();
        correlation_key("correlation_key", &key)?;
        let queue = input.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        validate::name("queue", &queue)?;
        validate::duration_ms("lease_timeout", input.lease_timeout_ms, 1_000, 3_600_000)?;
        if !(queue_ops::MIN_PRIORITY..=queue_ops::MAX_PRIORITY).contains(&input.priority) {
            return Err(EngineError::invalid(format!(
                "priority must be between {} and {} (got {})",
                queue_ops::MIN_PRIORITY,
                queue_ops::MAX_PRIORITY,
                input.priority
            )));
        }
        self.retry_policy(&input.retry)?;
        let definition = TriggerDefinition {
            event_name: input.event_name,
            correlation_key: key,
            job: input.job,
            queue,
            retry: input.retry,
            lease_timeout_ms: input.lease_timeout_ms,
            priority: input.priority,
        };
        let id = uuid::Uuid::now_v7().to_string();
        let (record, created) = self
            .store
            .insert_trigger(namespace, &id, definition.clone(), now_ms())
            .await?;
        if !created && record.definition != definition {
            return Err(EngineError::AlreadyExists(format!(
                "job {} already has a trigger on event {} with other options (trigger {}); \
                 delete it first",
                definition.job, definition.event_name, record.id
            )));
        }
        Ok((record, created))
    }

    /// Lists triggers in id order. Returns the page and the next page token.
    pub async fn list_triggers(
        &self,
        namespace: &str,
        filter: TriggerFilter,
        page_size: i32,
        page_token: Option<String>,
    ) -> EngineResult<(Vec<TriggerRecord>, Option<String>)> {
        if let Some(n) = &filter.event_name {
            validate::name("event_name", n)?;
        }
        if let Some(j) = &filter.job {
            validate::name("job", j)?;
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
        if let Some(t) = &page_token {
            validate::text_id("page_token", t, 64).map_err(|_| {
                EngineError::invalid("page_token is not a token returned by ListEventTriggers")
            })?;
        }
        let mut rows = self
            .store
            .list_triggers(namespace, &filter, page_token.as_deref(), limit + 1)
            .await?;
        let next = if rows.len() as u64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Deletes a trigger (runs it started are kept).
    pub async fn delete_trigger(&self, namespace: &str, id: &str) -> EngineResult<()> {
        validate::text_id("trigger_id", id, 64)?;
        if self.store.delete_trigger(namespace, id).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!(
                "event trigger {id} not found"
            )))
        }
    }

    /// The runs an event starts through the triggers it matches. The payload of each run is
    /// the event: `{"id","name","correlationKey","payload","publishedAt"}`.
    pub(super) async fn triggered_runs(
        &self,
        namespace: &str,
        event_id: &str,
        name: &str,
        key: &str,
        payload: &str,
        now: i64,
    ) -> EngineResult<Vec<NewRun>> {
        let triggers = self.store.matching_triggers(namespace, name, key).await?;
        if triggers.is_empty() {
            return Ok(Vec::new());
        }
        let data: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        let envelope = json!({
            "id": event_id,
            "name": name,
            "correlationKey": key,
            "payload": data,
            "publishedAt": now,
        })
        .to_string();
        let ttl = self.config.default_idempotency_ttl_ms;
        let mut runs = Vec::with_capacity(triggers.len());
        for t in triggers {
            let d = t.definition;
            let queue_retry = self
                .store
                .get_queue(namespace, &d.queue)
                .await?
                .map(|q| q.config.retry)
                .unwrap_or_default();
            let retry = self.retry_policy(&queue_ops::merge_retry(&d.retry, &queue_retry))?;
            runs.push(NewRun {
                id: uuid::Uuid::now_v7().to_string(),
                namespace: namespace.to_owned(),
                idempotency: Some((format!("event:{event_id}:{}", d.job), now + ttl)),
                job: d.job,
                queue: d.queue,
                payload: envelope.clone(),
                retry,
                lease_timeout_ms: d.lease_timeout_ms,
                now,
                available_at: now,
                priority: d.priority,
                concurrency_key: None,
                parent: None,
            });
        }
        Ok(runs)
    }
}
