//! Transactional bodies of event writes and the event reads: publishing (store the event,
//! then resolve the waits it matches), the inbox lookup used by `SuspendRun`, listing, and
//! the retention sweep.
//!
//! Race-freedom on PostgreSQL: `publish` and an event `suspend` both take
//! [`lock_match_key`] (a transaction-scoped advisory lock on the namespace, name and
//! correlation key) before they read. Under READ COMMITTED each statement sees what
//! committed before it ran, so the second of the two sees the first's event or wait. SQLite
//! has a single writer, which serializes them already.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};

use crate::engine::event_model::{
    EventFilter, EventRecord, NewEvent, PublishOutcome, event_output,
};
use crate::engine::{EngineError, EngineResult};

use super::entities::{event_consumptions, events};
use super::{combined_ops, queue_ops, run_ops, wait_ops};
use crate::engine::model::StartOutcome;

/// Decodes an `events` row.
pub fn event_from_model(m: events::Model) -> EventRecord {
    EventRecord {
        seq: m.seq,
        namespace: m.namespace,
        id: m.event_id,
        name: m.name,
        correlation_key: m.correlation_key,
        payload: m.payload,
        published_at: m.published_at,
    }
}

/// The message of the error [`lock_match_key`] returns when another transaction holds the
/// lock; [`is_busy`] recognizes it and the store retries the write in a later transaction.
const MATCH_KEY_BUSY: &str = "another transaction is publishing or waiting on this event key";

/// True for the error of a write that found its match key locked (retry it).
pub fn is_busy(e: &EngineError) -> bool {
    matches!(e, EngineError::Unavailable(m) if m == MATCH_KEY_BUSY)
}

/// Serializes publishes and event suspends of one `(namespace, name, correlation key)` on
/// PostgreSQL until the surrounding transaction ends. A no-op on SQLite.
///
/// It never waits: a transaction of the group-commit writer holds the locks of many writes
/// until it commits, so waiting here could deadlock two writer transactions. When another
/// transaction holds the key, the write fails with a busy error ([`is_busy`]) and rolls back
/// only its own savepoint; the store retries it once that transaction has committed. Within
/// one transaction the lock is re-entrant.
pub async fn lock_match_key<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
    correlation_key: &str,
) -> EngineResult<()> {
    if c.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    // The separator cannot occur in any of the three (validated), so the key is unambiguous.
    let key = format!("stackshift.event\u{1}{namespace}\u{1}{name}\u{1}{correlation_key}");
    let row = c
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
            [key.into()],
        ))
        .await?;
    let locked: bool = match row {
        Some(row) => row.try_get_by_index(0)?,
        None => false,
    };
    if locked {
        Ok(())
    } else {
        Err(EngineError::Unavailable(MATCH_KEY_BUSY.to_owned()))
    }
}

/// The first event in a run's inbox: named `name` with exactly `correlation_key`,
/// published at or after `run_created_at`, not consumed by `run_id` yet.
pub async fn first_unconsumed<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    name: &str,
    correlation_key: &str,
    run_id: &str,
    run_created_at: i64,
) -> EngineResult<Option<EventRecord>> {
    let consumed = Query::select()
        .column(event_consumptions::Column::EventSeq)
        .from(event_consumptions::Entity)
        .and_where(Expr::col(event_consumptions::Column::RunId).eq(run_id))
        .to_owned();
    let row = events::Entity::find()
        .filter(events::Column::Namespace.eq(namespace))
        .filter(events::Column::Name.eq(name))
        .filter(events::Column::CorrelationKey.eq(correlation_key))
        .filter(events::Column::PublishedAt.gte(run_created_at))
        .filter(Expr::col((events::Entity, events::Column::Seq)).not_in_subquery(consumed))
        .order_by_asc(events::Column::Seq)
        .limit(1)
        .one(c)
        .await?;
    Ok(row.map(event_from_model))
}

/// Records that `run_id` consumed the event `seq` at its wait `step_id`.
pub async fn record_consumptions<C: ConnectionTrait>(
    c: &C,
    rows: Vec<(String, i64, String)>,
    now: i64,
) -> EngineResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    event_consumptions::Entity::insert_many(rows.into_iter().map(|(run_id, seq, step_id)| {
        event_consumptions::ActiveModel {
            run_id: Set(run_id),
            event_seq: Set(seq),
            step_id: Set(step_id),
            consumed_at: Set(now),
        }
    }))
    .on_conflict(
        OnConflict::columns([
            event_consumptions::Column::RunId,
            event_consumptions::Column::EventSeq,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

async fn find_by_id<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    id: &str,
) -> EngineResult<Option<EventRecord>> {
    Ok(events::Entity::find()
        .filter(events::Column::Namespace.eq(namespace))
        .filter(events::Column::EventId.eq(id))
        .one(c)
        .await?
        .map(event_from_model))
}

/// Stores an event (a repeated id stores nothing), resolves every wait it matches and
/// starts the runs of its event triggers.
pub async fn publish<C: ConnectionTrait>(c: &C, new: NewEvent) -> EngineResult<PublishOutcome> {
    lock_match_key(c, &new.namespace, &new.name, &new.correlation_key).await?;
    let inserted = events::Entity::insert(events::ActiveModel {
        namespace: Set(new.namespace.clone()),
        event_id: Set(new.id.clone()),
        name: Set(new.name.clone()),
        correlation_key: Set(new.correlation_key.clone()),
        payload: Set(new.payload.clone()),
        published_at: Set(new.now),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::columns([events::Column::Namespace, events::Column::EventId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    let event = find_by_id(c, &new.namespace, &new.id)
        .await?
        .ok_or_else(|| {
            EngineError::Unavailable(
                "the event was deleted concurrently (retention); publish it again".into(),
            )
        })?;
    if inserted == 0 {
        return Ok(PublishOutcome {
            event,
            duplicate: true,
            resumed: Vec::new(),
            started: Vec::new(),
        });
    }
    let output = event_output(&event);
    let mut resumed = wait_ops::resolve_event_waits(c, &event, &output, new.now).await?;
    resumed.extend(combined_ops::resolve_event_items(c, &event, new.now).await?);
    // Event triggers: one run per subscribed job, in this transaction.
    let mut started = Vec::with_capacity(new.triggered.len());
    for run in new.triggered {
        let (ns, queue, now) = (run.namespace.clone(), run.queue.clone(), run.now);
        if let StartOutcome::Created(r) = run_ops::start_run(c, run).await? {
            queue_ops::ensure(c, &ns, &queue, now).await?;
            started.push(r);
        }
    }
    Ok(PublishOutcome {
        event,
        duplicate: false,
        resumed,
        started,
    })
}

/// Lists events newest first.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    filter: &EventFilter,
    cursor: Option<i64>,
    limit: u64,
) -> EngineResult<Vec<EventRecord>> {
    let mut q = events::Entity::find().filter(events::Column::Namespace.eq(namespace));
    if let Some(name) = &filter.name {
        q = q.filter(events::Column::Name.eq(name.as_str()));
    }
    if let Some(key) = &filter.correlation_key {
        q = q.filter(events::Column::CorrelationKey.eq(key.as_str()));
    }
    if let Some(after) = filter.published_after {
        q = q.filter(events::Column::PublishedAt.gte(after));
    }
    if let Some(before) = filter.published_before {
        q = q.filter(events::Column::PublishedAt.lt(before));
    }
    if let Some(cursor) = cursor {
        q = q.filter(events::Column::Seq.lt(cursor));
    }
    Ok(q.order_by_desc(events::Column::Seq)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(event_from_model)
        .collect())
}

/// Deletes up to `limit` events published before `cutoff`, oldest first, with their
/// consumption records. Runs keep their journal copies of the events.
pub async fn sweep<C: ConnectionTrait>(c: &C, cutoff: i64, limit: u64) -> EngineResult<u64> {
    let seqs: Vec<i64> = events::Entity::find()
        .select_only()
        .column(events::Column::Seq)
        .filter(events::Column::PublishedAt.lt(cutoff))
        .order_by_asc(events::Column::PublishedAt)
        .limit(limit)
        .into_tuple::<i64>()
        .all(c)
        .await?;
    if seqs.is_empty() {
        return Ok(0);
    }
    event_consumptions::Entity::delete_many()
        .filter(event_consumptions::Column::EventSeq.is_in(seqs.clone()))
        .exec(c)
        .await?;
    let deleted = events::Entity::delete_many()
        .filter(events::Column::Seq.is_in(seqs))
        .exec(c)
        .await?
        .rows_affected;
    Ok(deleted)
}
