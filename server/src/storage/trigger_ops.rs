//! Transactional bodies of event-trigger writes and the trigger reads. The runs a trigger
//! starts are inserted by `event_ops::publish`, in the publish transaction.

use sea_orm::sea_query::{Condition, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::engine::requests::RetryPolicyInput;
use crate::engine::trigger_model::{
    MAX_TRIGGERS_PER_EVENT, TriggerDefinition, TriggerFilter, TriggerRecord,
};
use crate::engine::{EngineError, EngineResult};

use super::entities::event_triggers as t;

/// Decodes an `event_triggers` row.
pub fn from_model(m: t::Model) -> TriggerRecord {
    TriggerRecord {
        namespace: m.namespace,
        id: m.id,
        definition: TriggerDefinition {
            event_name: m.event_name,
            correlation_key: m.correlation_key,
            job: m.job,
            queue: m.queue,
            retry: RetryPolicyInput {
                max_attempts: m.retry_max_attempts,
                initial_interval_ms: m.retry_initial_ms,
                backoff_coefficient: m.retry_coefficient,
                maximum_interval_ms: m.retry_max_ms,
            },
            lease_timeout_ms: m.lease_timeout_ms,
            priority: m.priority,
        },
        created_at: m.created_at,
    }
}

async fn find_same<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    d: &TriggerDefinition,
) -> EngineResult<Option<TriggerRecord>> {
    Ok(t::Entity::find()
        .filter(t::Column::Namespace.eq(namespace))
        .filter(t::Column::EventName.eq(d.event_name.as_str()))
        .filter(t::Column::CorrelationKey.eq(d.correlation_key.as_str()))
        .filter(t::Column::Job.eq(d.job.as_str()))
        .one(c)
        .await?
        .map(from_model))
}

/// Inserts a trigger unless its (event name, key, job) exists; returns the stored one and
/// whether it is new. Fails with `ResourceExhausted` past [`MAX_TRIGGERS_PER_EVENT`].
pub async fn insert<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    id: &str,
    d: TriggerDefinition,
    now: i64,
) -> EngineResult<(TriggerRecord, bool)> {
    if let Some(existing) = find_same(c, namespace, &d).await? {
        return Ok((existing, false));
    }
    let count = t::Entity::find()
        .filter(t::Column::Namespace.eq(namespace))
        .filter(t::Column::EventName.eq(d.event_name.as_str()))
        .count(c)
        .await?;
    if count as usize >= MAX_TRIGGERS_PER_EVENT {
        return Err(EngineError::ResourceExhausted(format!(
            "event {} already has {MAX_TRIGGERS_PER_EVENT} triggers (the most one event name \
             may have); delete some first",
            d.event_name
        )));
    }
    let inserted = t::Entity::insert(t::ActiveModel {
        namespace: Set(namespace.to_owned()),
        id: Set(id.to_owned()),
        event_name: Set(d.event_name.clone()),
        correlation_key: Set(d.correlation_key.clone()),
        job: Set(d.job.clone()),
        queue: Set(d.queue.clone()),
        retry_max_attempts: Set(d.retry.max_attempts),
        retry_initial_ms: Set(d.retry.initial_interval_ms),
        retry_coefficient: Set(d.retry.backoff_coefficient),
        retry_max_ms: Set(d.retry.maximum_interval_ms),
        lease_timeout_ms: Set(d.lease_timeout_ms),
        priority: Set(d.priority),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            t::Column::Namespace,
            t::Column::EventName,
            t::Column::CorrelationKey,
            t::Column::Job,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    let stored = find_same(c, namespace, &d)
        .await?
        .ok_or_else(|| EngineError::Unavailable("the trigger was deleted concurrently".into()))?;
    Ok((stored, inserted > 0))
}

/// Lists triggers in id order.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    filter: &TriggerFilter,
    cursor: Option<&str>,
    limit: u64,
) -> EngineResult<Vec<TriggerRecord>> {
    let mut q = t::Entity::find().filter(t::Column::Namespace.eq(namespace));
    if let Some(name) = &filter.event_name {
        q = q.filter(t::Column::EventName.eq(name.as_str()));
    }
    if let Some(job) = &filter.job {
        q = q.filter(t::Column::Job.eq(job.as_str()));
    }
    if let Some(cursor) = cursor {
        q = q.filter(t::Column::Id.gt(cursor));
    }
    Ok(q.order_by_asc(t::Column::Id)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(from_model)
        .collect())
}

/// Deletes a trigger.
pub async fn delete<C: ConnectionTrait>(c: &C, namespace: &str, id: &str) -> EngineResult<bool> {
    Ok(t::Entity::delete_many()
        .filter(t::Column::Namespace.eq(namespace))
        .filter(t::Column::Id.eq(id))
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// Triggers an event named `name` with `correlation_key` matches: those without a key and
/// those with exactly this key, in id order.
pub async fn matching<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
    correlation_key: &str,
) -> EngineResult<Vec<TriggerRecord>> {
    Ok(t::Entity::find()
        .filter(t::Column::Namespace.eq(namespace))
        .filter(t::Column::EventName.eq(name))
        .filter(
            Condition::any()
                .add(t::Column::CorrelationKey.eq(""))
                .add(t::Column::CorrelationKey.eq(correlation_key)),
        )
        .order_by_asc(t::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(from_model)
        .collect())
}
