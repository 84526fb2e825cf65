//! Queue configuration rows and queue statistics: transactional bodies of queue writes
//! (run inside a group-commit savepoint) and the indexed reads behind `GetQueue`.

use sea_orm::sea_query::{Expr, Func, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::engine::EngineResult;
use crate::engine::model::RunStatus;
use crate::engine::queue_model::{QueueConfig, QueueRecord, QueueStats, RateLimit};
use crate::engine::requests::RetryPolicyInput;

use super::entities::{queue_starts, queues, runs};

/// How many concurrency keys `running_by_key` reports.
pub const TOP_KEYS: u64 = 20;

/// Decodes a queue's configuration.
pub fn config_from_model(m: &queues::Model) -> QueueConfig {
    QueueConfig {
        concurrency_limit: m.concurrency_limit,
        key_concurrency_limit: m.key_concurrency_limit,
        rate_limit: match (m.rate_limit, m.rate_period_ms) {
            (Some(limit), Some(period_ms)) => Some(RateLimit { limit, period_ms }),
            _ => None,
        },
        retry: RetryPolicyInput {
            max_attempts: m.retry_max_attempts,
            initial_interval_ms: m.retry_initial_ms,
            backoff_coefficient: m.retry_coefficient,
            maximum_interval_ms: m.retry_max_ms,
        },
        lease_timeout_ms: m.lease_timeout_ms,
    }
}

/// Decodes a `queues` row.
pub fn queue_from_model(m: queues::Model) -> QueueRecord {
    QueueRecord {
        config: config_from_model(&m),
        namespace: m.namespace,
        name: m.name,
        paused: m.paused,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// Reads a queue row (every start reads its queue's retry defaults through this).
///
/// Without `LIMIT`: the key matches at most one row, and `.one()` would add a bound
/// `LIMIT ?`, which SQLite's planner reads (since 3.47), marking the statement to be
/// re-prepared whenever the value is bound again, i.e. on every execution of the cached
/// statement (`sqlite3Reprepare` in the `throughput` profile, docs/performance.md "Round 5:
/// per-item work").
pub async fn find<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
) -> EngineResult<Option<queues::Model>> {
    Ok(
        queues::Entity::find_by_id((namespace.to_owned(), name.to_owned()))
            .all(c)
            .await?
            .into_iter()
            .next(),
    )
}

fn new_row(namespace: &str, name: &str, now: i64) -> queues::ActiveModel {
    queues::ActiveModel {
        namespace: Set(namespace.to_owned()),
        name: Set(name.to_owned()),
        concurrency_limit: Set(None),
        key_concurrency_limit: Set(None),
        rate_limit: Set(None),
        rate_period_ms: Set(None),
        retry_max_attempts: Set(None),
        retry_initial_ms: Set(None),
        retry_coefficient: Set(None),
        retry_max_ms: Set(None),
        lease_timeout_ms: Set(None),
        paused: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// Inserts a queue row with the defaults unless one exists; returns true when inserted.
/// The primary key decides between concurrent creators: the loser inserts nothing and does
/// not fail.
async fn insert_default<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
    now: i64,
) -> EngineResult<bool> {
    let inserted = queues::Entity::insert(new_row(namespace, name, now))
        .on_conflict(
            OnConflict::columns([queues::Column::Namespace, queues::Column::Name])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(inserted == 1)
}

/// Creates the queue with the defaults when a start names a queue that does not exist yet.
/// A plain read first: the common case (the queue exists) then takes no lock at all.
pub async fn ensure<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
    now: i64,
) -> EngineResult<()> {
    if find(c, namespace, name).await?.is_none() {
        insert_default(c, namespace, name, now).await?;
    }
    Ok(())
}

/// Creates a queue or replaces its configuration; `paused` is changed only when given.
pub async fn upsert<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
    config: QueueConfig,
    paused: Option<bool>,
    now: i64,
) -> EngineResult<(QueueRecord, bool)> {
    let created = insert_default(c, namespace, name, now).await?;
    let mut update = queues::Entity::update_many()
        .col_expr(
            queues::Column::ConcurrencyLimit,
            Expr::value(config.concurrency_limit),
        )
        .col_expr(
            queues::Column::KeyConcurrencyLimit,
            Expr::value(config.key_concurrency_limit),
        )
        .col_expr(
            queues::Column::RateLimit,
            Expr::value(config.rate_limit.map(|r| r.limit)),
        )
        .col_expr(
            queues::Column::RatePeriodMs,
            Expr::value(config.rate_limit.map(|r| r.period_ms)),
        )
        .col_expr(
            queues::Column::RetryMaxAttempts,
            Expr::value(config.retry.max_attempts),
        )
        .col_expr(
            queues::Column::RetryInitialMs,
            Expr::value(config.retry.initial_interval_ms),
        )
        .col_expr(
            queues::Column::RetryCoefficient,
            Expr::value(config.retry.backoff_coefficient),
        )
        .col_expr(
            queues::Column::RetryMaxMs,
            Expr::value(config.retry.maximum_interval_ms),
        )
        .col_expr(
            queues::Column::LeaseTimeoutMs,
            Expr::value(config.lease_timeout_ms),
        )
        .col_expr(queues::Column::UpdatedAt, Expr::value(now));
    if let Some(p) = paused {
        update = update.col_expr(queues::Column::Paused, Expr::value(p));
    }
    update
        .filter(queues::Column::Namespace.eq(namespace))
        .filter(queues::Column::Name.eq(name))
        .exec(c)
        .await?;
    let row = find(c, namespace, name).await?.ok_or_else(|| {
        crate::engine::EngineError::Storage(format!("queue {name} vanished during upsert"))
    })?;
    Ok((queue_from_model(row), created))
}

/// Sets the pause switch of an existing queue; `None` when it does not exist.
pub async fn set_paused<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
    paused: bool,
    now: i64,
) -> EngineResult<Option<QueueRecord>> {
    let changed = queues::Entity::update_many()
        .col_expr(queues::Column::Paused, Expr::value(paused))
        .col_expr(queues::Column::UpdatedAt, Expr::value(now))
        .filter(queues::Column::Namespace.eq(namespace))
        .filter(queues::Column::Name.eq(name))
        .exec(c)
        .await?
        .rows_affected;
    if changed == 0 {
        return Ok(None);
    }
    Ok(find(c, namespace, name).await?.map(queue_from_model))
}

/// Lists queues in name order after `cursor`.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    cursor: Option<&str>,
    limit: u64,
) -> EngineResult<Vec<QueueRecord>> {
    let mut q = queues::Entity::find().filter(queues::Column::Namespace.eq(namespace));
    if let Some(cursor) = cursor {
        q = q.filter(queues::Column::Name.gt(cursor));
    }
    Ok(q.order_by_asc(queues::Column::Name)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(queue_from_model)
        .collect())
}

/// True when the queue has a concurrency or rate limit: releasing one of its leases must
/// wake held-back pollers on every replica.
pub async fn is_limited<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
) -> EngineResult<bool> {
    Ok(find(c, namespace, name)
        .await?
        .is_some_and(|m| config_from_model(&m).is_limited()))
}

/// `COUNT(*)`: answered from the index alone. (`COUNT(id)` read every counted row from the
/// table on SQLite, whose indexes hold the rowid, not `id`: about 100 ms for a queue of
/// 100k runs instead of 16 ms.)
fn count_expr() -> Expr {
    Expr::cust("COUNT(*)")
}

/// Live counts of a queue, each from an index: `(namespace, queue, status)` for the counts
/// by status, the ready index for delayed runs and the oldest deliverable one, the running
/// index for the per-key counts, and the rate window's own index.
pub async fn stats<C: ConnectionTrait>(
    c: &C,
    queue: &QueueRecord,
    now: i64,
) -> EngineResult<QueueStats> {
    let (ns, name) = (queue.namespace.as_str(), queue.name.as_str());
    let in_queue = || {
        runs::Entity::find()
            .select_only()
            .filter(runs::Column::Namespace.eq(ns))
            .filter(runs::Column::Queue.eq(name))
    };
    let mut stats = QueueStats::default();
    let by_status = in_queue()
        .column(runs::Column::Status)
        .column_as(count_expr(), "n")
        .group_by(runs::Column::Status)
        .into_tuple::<(String, i64)>()
        .all(c)
        .await?;
    for (status, n) in by_status {
        match RunStatus::parse(&status) {
            Some(RunStatus::Queued) => stats.queued = n,
            Some(RunStatus::Running) => stats.running = n,
            Some(RunStatus::Waiting) => stats.waiting = n,
            Some(RunStatus::Completed) => stats.completed = n,
            Some(RunStatus::Failed) => stats.failed = n,
            Some(RunStatus::Cancelled) => stats.cancelled = n,
            None => {}
        }
    }
    let queued = || in_queue().filter(runs::Column::Status.eq(RunStatus::Queued.as_str()));
    if stats.queued > 0 {
        stats.delayed = queued()
            .column_as(count_expr(), "n")
            .filter(runs::Column::AvailableAt.gt(now))
            .into_tuple::<i64>()
            .one(c)
            .await?
            .unwrap_or(0);
        stats.oldest_ready_at = queued()
            .column_as(
                Expr::from(Func::min(Expr::col(runs::Column::AvailableAt))),
                "m",
            )
            .filter(runs::Column::AvailableAt.lte(now))
            .into_tuple::<Option<i64>>()
            .one(c)
            .await?
            .flatten();
    }
    if stats.running > 0 {
        stats.running_by_key = in_queue()
            .column(runs::Column::ConcurrencyKey)
            .column_as(count_expr(), "n")
            .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
            .filter(runs::Column::ConcurrencyKey.is_not_null())
            .group_by(runs::Column::ConcurrencyKey)
            .order_by_desc(count_expr())
            .order_by_asc(runs::Column::ConcurrencyKey)
            .limit(TOP_KEYS)
            .into_tuple::<(String, i64)>()
            .all(c)
            .await?;
    }
    if let Some(rate) = queue.config.rate_limit {
        stats.rate_window_started = queue_starts::Entity::find()
            .select_only()
            .column_as(
                Expr::from(Func::count(Expr::col(queue_starts::Column::RunId))),
                "n",
            )
            .filter(queue_starts::Column::Namespace.eq(ns))
            .filter(queue_starts::Column::Queue.eq(name))
            .filter(queue_starts::Column::StartedAt.gt(now - rate.period_ms))
            .into_tuple::<i64>()
            .one(c)
            .await?
            .unwrap_or(0);
    }
    Ok(stats)
}
