//! Transactional bodies of schedule writes and the schedule reads. A firing locks the
//! schedule row without waiting (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and applies only
//! if `next_fire_at` is unchanged, so concurrent replicas fire each scheduled time once.

use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::engine::model::StartOutcome;
use crate::engine::requests::RetryPolicyInput;
use crate::engine::schedule_model::{
    CatchUp, MAX_RECENT_RUNS, NewSchedule, ScheduleDefinition, ScheduleFiring, ScheduleRecord,
    ScheduleSpec,
};
use crate::engine::{EngineError, EngineResult};

use super::entities::schedules;
use super::{queue_ops, run_ops};

/// Decodes a `schedules` row.
pub fn from_model(m: schedules::Model) -> EngineResult<ScheduleRecord> {
    let spec = match (m.cron_expression, m.time_zone, m.interval_ms) {
        (Some(expression), Some(time_zone), None) => ScheduleSpec::Cron {
            expression,
            time_zone,
        },
        (None, None, Some(interval_ms)) => ScheduleSpec::Interval { interval_ms },
        _ => {
            return Err(EngineError::Storage(format!(
                "schedule {} has neither a cron expression nor an interval",
                m.id
            )));
        }
    };
    let catch_up = CatchUp::parse(&m.catch_up).ok_or_else(|| {
        EngineError::Storage(format!("schedule {} has catch-up {:?}", m.id, m.catch_up))
    })?;
    let recent_run_ids: Vec<String> = serde_json::from_str(&m.recent_run_ids)
        .map_err(|e| EngineError::Storage(format!("schedule {} recent runs: {e}", m.id)))?;
    Ok(ScheduleRecord {
        namespace: m.namespace,
        id: m.id,
        definition: ScheduleDefinition {
            job: m.job,
            queue: m.queue,
            payload: m.payload,
            retry: RetryPolicyInput {
                max_attempts: m.retry_max_attempts,
                initial_interval_ms: m.retry_initial_ms,
                backoff_coefficient: m.retry_coefficient,
                maximum_interval_ms: m.retry_max_ms,
            },
            lease_timeout_ms: m.lease_timeout_ms,
            priority: m.priority,
            spec,
            catch_up,
        },
        paused: m.paused,
        next_fire_at: m.next_fire_at,
        last_fire_at: m.last_fire_at,
        recent_run_ids,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// Reads a schedule.
pub async fn get<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    id: &str,
) -> EngineResult<Option<ScheduleRecord>> {
    schedules::Entity::find_by_id((namespace.to_owned(), id.to_owned()))
        .one(c)
        .await?
        .map(from_model)
        .transpose()
}

/// Inserts a schedule unless the id exists; returns the stored row and whether it was new.
pub async fn insert<C: ConnectionTrait>(
    c: &C,
    new: NewSchedule,
) -> EngineResult<(ScheduleRecord, bool)> {
    let d = &new.definition;
    let (cron, tz, interval) = match &d.spec {
        ScheduleSpec::Cron {
            expression,
            time_zone,
        } => (Some(expression.clone()), Some(time_zone.clone()), None),
        ScheduleSpec::Interval { interval_ms } => (None, None, Some(*interval_ms)),
    };
    let inserted = schedules::Entity::insert(schedules::ActiveModel {
        namespace: Set(new.namespace.clone()),
        id: Set(new.id.clone()),
        job: Set(d.job.clone()),
        queue: Set(d.queue.clone()),
        payload: Set(d.payload.clone()),
        retry_max_attempts: Set(d.retry.max_attempts),
        retry_initial_ms: Set(d.retry.initial_interval_ms),
        retry_coefficient: Set(d.retry.backoff_coefficient),
        retry_max_ms: Set(d.retry.maximum_interval_ms),
        lease_timeout_ms: Set(d.lease_timeout_ms),
        priority: Set(d.priority),
        cron_expression: Set(cron),
        time_zone: Set(tz),
        interval_ms: Set(interval),
        catch_up: Set(d.catch_up.as_str().to_owned()),
        paused: Set(new.paused),
        next_fire_at: Set(new.next_fire_at),
        last_fire_at: Set(None),
        recent_run_ids: Set("[]".to_owned()),
        created_at: Set(new.now),
        updated_at: Set(new.now),
    })
    .on_conflict(
        OnConflict::columns([schedules::Column::Namespace, schedules::Column::Id])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    let row = get(c, &new.namespace, &new.id)
        .await?
        .ok_or_else(|| EngineError::Unavailable("the schedule was deleted concurrently".into()))?;
    Ok((row, inserted > 0))
}

/// Lists schedules in id order.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    cursor: Option<&str>,
    limit: u64,
) -> EngineResult<Vec<ScheduleRecord>> {
    let mut q = schedules::Entity::find().filter(schedules::Column::Namespace.eq(namespace));
    if let Some(cursor) = cursor {
        q = q.filter(schedules::Column::Id.gt(cursor));
    }
    q.order_by_asc(schedules::Column::Id)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

/// Sets the pause switch (and the next fire time, when given).
pub async fn set_paused<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    id: &str,
    paused: bool,
    next_fire_at: Option<i64>,
    now: i64,
) -> EngineResult<Option<ScheduleRecord>> {
    let mut q = schedules::Entity::update_many()
        .col_expr(schedules::Column::Paused, Expr::value(paused))
        .col_expr(schedules::Column::UpdatedAt, Expr::value(now));
    if let Some(next) = next_fire_at {
        q = q.col_expr(schedules::Column::NextFireAt, Expr::value(next));
    }
    let n = q
        .filter(schedules::Column::Namespace.eq(namespace))
        .filter(schedules::Column::Id.eq(id))
        .exec(c)
        .await?
        .rows_affected;
    if n == 0 {
        return Ok(None);
    }
    get(c, namespace, id).await
}

/// Deletes a schedule.
pub async fn delete<C: ConnectionTrait>(c: &C, namespace: &str, id: &str) -> EngineResult<bool> {
    Ok(schedules::Entity::delete_many()
        .filter(schedules::Column::Namespace.eq(namespace))
        .filter(schedules::Column::Id.eq(id))
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// Active schedules due at `now`, earliest first.
pub async fn due<C: ConnectionTrait>(
    c: &C,
    now: i64,
    limit: u64,
) -> EngineResult<Vec<ScheduleRecord>> {
    schedules::Entity::find()
        .filter(schedules::Column::Paused.eq(false))
        .filter(schedules::Column::NextFireAt.lte(now))
        .order_by_asc(schedules::Column::NextFireAt)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(from_model)
        .collect()
}

/// The earliest `next_fire_at` of an active schedule.
pub async fn next_fire<C: ConnectionTrait>(c: &C) -> EngineResult<Option<i64>> {
    Ok(schedules::Entity::find()
        .select_only()
        .column(schedules::Column::NextFireAt)
        .filter(schedules::Column::Paused.eq(false))
        .order_by_asc(schedules::Column::NextFireAt)
        .limit(1)
        .into_tuple::<i64>()
        .one(c)
        .await?)
}

/// Applies a firing if the schedule is still active with the expected `next_fire_at`.
pub async fn fire<C: ConnectionTrait>(
    c: &C,
    f: ScheduleFiring,
) -> EngineResult<Option<Vec<StartOutcome>>> {
    // Never wait for another replica firing the same schedule: it holds the row, and its
    // firing makes ours stale anyway.
    let row = schedules::Entity::find_by_id((f.namespace.clone(), f.id.clone()))
        .filter(schedules::Column::Paused.eq(false))
        .filter(schedules::Column::NextFireAt.eq(f.expected_next_fire_at))
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .one(c)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut outcomes = Vec::with_capacity(f.runs.len());
    let mut started = Vec::new();
    for run in f.runs {
        let (ns, queue, now) = (run.namespace.clone(), run.queue.clone(), run.now);
        let out = run_ops::start_run(c, run).await?;
        if let StartOutcome::Created(r) = &out {
            queue_ops::ensure(c, &ns, &queue, now).await?;
            started.push(r.id.clone());
        }
        outcomes.push(out);
    }
    let mut recent: Vec<String> = serde_json::from_str(&row.recent_run_ids).unwrap_or_default();
    for id in started {
        recent.insert(0, id);
    }
    recent.truncate(MAX_RECENT_RUNS);
    let recent = serde_json::to_string(&recent)
        .map_err(|e| EngineError::Storage(format!("encode recent runs: {e}")))?;
    // Conditional on the value read, so that even without row locks (SQLite has a single
    // writer anyway) a stale firing changes nothing.
    let n = schedules::Entity::update_many()
        .col_expr(schedules::Column::NextFireAt, Expr::value(f.next_fire_at))
        .col_expr(
            schedules::Column::LastFireAt,
            Expr::value(f.last_fire_at.or(row.last_fire_at)),
        )
        .col_expr(schedules::Column::RecentRunIds, Expr::value(recent))
        .col_expr(schedules::Column::UpdatedAt, Expr::value(f.now))
        .filter(schedules::Column::Namespace.eq(f.namespace.clone()))
        .filter(schedules::Column::Id.eq(f.id.clone()))
        .filter(schedules::Column::NextFireAt.eq(f.expected_next_fire_at))
        .exec(c)
        .await?
        .rows_affected;
    if n == 0 {
        // Cannot happen while we hold the row; roll this firing back to be safe.
        return Err(EngineError::Unavailable(
            "the schedule changed while firing; retrying".into(),
        ));
    }
    Ok(Some(outcomes))
}
