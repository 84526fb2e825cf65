//! Plain starts of one group commit inserted together (both stores): one multi-row
//! `INSERT INTO runs` per [`CHUNK`] starts instead of a savepoint round trip and an
//! `INSERT` each. On PostgreSQL the writer then [`publish`]es each start's wakeup in the
//! batch's transaction (buffered by `notify`: each distinct payload once per commit), so
//! other replicas' parked polls and timers hear of the runs exactly when they commit.
//!
//! A start is *plain* when it is exactly one `INSERT runs` today: no idempotency key (no
//! `idempotency_keys` row to race for), no claim for a parked poll in its transaction, and
//! a queue known to exist (no queue row to create). The caller (`SqlStore::start_with`)
//! decides; everything else keeps its own savepoint. When the batched insert fails (a
//! conflicting run id, a database error), the writer rolls it back
//! and applies every start of the batch on its own with `run_ops::start_run`, which answers
//! each one exactly as before (the failing one fails, the others are created).

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IdenStatic, Iterable,
    Statement, TryIntoModel, Value,
};

use crate::engine::model::{NewRun, RunRecord};
use crate::engine::obs_model::TimelineKind;
use crate::engine::store::Wakeup;
use crate::engine::{EngineError, EngineResult};

use super::convert::run_from_model;
use super::entities::runs;
use super::notify;
use super::pg_rows::{Rows, Ty, col, null};
use super::run_ops::insert_model;
use super::timeline_ops::{self, Entry};

/// Starts per statement (30 bound values each, far below SQLite's variable limit and
/// PostgreSQL's 65,535 parameters).
pub const CHUNK: usize = 128;

/// Inserts the runs of `starts` (all or nothing) and buffers their `created` timeline
/// entries; returns the created runs in the same order.
pub async fn insert<C: ConnectionTrait>(c: &C, starts: &[&NewRun]) -> EngineResult<Vec<RunRecord>> {
    let mut created = Vec::with_capacity(starts.len());
    for chunk in starts.chunks(CHUNK) {
        let models: Vec<runs::ActiveModel> = chunk.iter().map(|n| insert_model(n)).collect();
        if c.get_database_backend() == DbBackend::Postgres {
            c.execute_raw(pg_insert(&models)?).await?;
        } else {
            runs::Entity::insert_many(models.iter().cloned())
                .exec_without_returning(c)
                .await?;
        }
        for model in models {
            // The inserted row is exactly `model`: no read back.
            let row = model
                .try_into_model()
                .map_err(|e| EngineError::Storage(format!("run row: {e}")))?;
            created.push(run_from_model(row)?);
        }
    }
    // Counted by the rows themselves (`timeline_count` 1).
    timeline_ops::insert(
        c,
        starts
            .iter()
            .map(|n| Entry::new(&n.id, TimelineKind::Created, n.now))
            .collect(),
    )
    .await?;
    Ok(created)
}

/// The PostgreSQL insert of `models` (every column set): one text for every number of
/// starts (`pg_rows`), each column's type and nullability taken from the entity.
fn pg_insert(models: &[runs::ActiveModel]) -> EngineResult<Statement> {
    let mut cols = Vec::new();
    let mut names = Vec::new();
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(models.len());
    for m in models {
        let mut row = Vec::with_capacity(cols.len());
        for column in runs::Column::iter() {
            let value = m.get(column).into_value().ok_or_else(|| {
                EngineError::Storage(format!("run row: {} not set", column.as_str()))
            })?;
            row.push(value);
        }
        rows.push(row);
    }
    let Some(first) = rows.first() else {
        return Err(EngineError::Storage("run rows: none to insert".to_owned()));
    };
    for (column, value) in runs::Column::iter().zip(first) {
        let ty = Ty::of(value).ok_or_else(|| {
            EngineError::Storage(format!("run row: unsupported type of {}", column.as_str()))
        })?;
        let name = column.as_str();
        names.push(name);
        cols.push(if column.def().is_null() {
            null(name, ty)
        } else {
            col(name, ty)
        });
    }
    let mut list = Rows::new(&cols);
    for row in rows {
        list.push_iter(row);
    }
    let mut values = Vec::new();
    let names = names.join(", ");
    let sql = format!(
        "INSERT INTO runs ({names}) SELECT {names} FROM {} AS v ORDER BY ord",
        list.relation(&mut values)?
    );
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
}

/// The wakeup a created run implies for other replicas: a delayed run wakes their timers
/// when it falls due, any other run their polls for its queue and job.
pub fn wakeup(r: &RunRecord) -> Wakeup {
    if r.available_at > r.created_at {
        Wakeup::TimerAt(r.available_at)
    } else {
        Wakeup::Ready {
            namespace: r.namespace.clone(),
            queue: r.queue.clone(),
            job: r.job.clone(),
        }
    }
}

/// Publishes the wakeups of `created` (PostgreSQL, with the store's `origin`) when the
/// surrounding transaction commits.
pub async fn publish<C: ConnectionTrait>(
    c: &C,
    origin: &str,
    created: &[RunRecord],
) -> EngineResult<()> {
    for r in created {
        notify::publish(c, origin, &wakeup(r)).await?;
    }
    Ok(())
}
