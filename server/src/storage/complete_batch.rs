//! Run completions of one group commit applied together (both stores): one `UPDATE runs
//! ... FROM (VALUES ...) RETURNING` per [`CHUNK`] completions (guarded by the lease exactly
//! as `run_ops::complete_run`; it also counts each run's `completed` timeline entry in
//! `timeline_count`, and tells for each run whether it holds a state lock still in force
//! at the chunk's earliest completion time), then one `UPDATE attempts ... FROM (VALUES
//! ...)` ending their attempts; lock releases and parent wakeups run per completion only
//! where needed. A completion the update did not apply (stale or expired lease, a resent
//! completion, a cancelled run) goes through `run_ops::complete_run` on its own, which
//! answers the precise outcome. On PostgreSQL the writer then announces the capacity the
//! batch's completions released, once per limited queue (`queue_store::publish_released`).
//! PostgreSQL passes each chunk's rows as arrays (`pg_rows`) instead of a `VALUES` list,
//! so both updates keep one statement text whatever the chunk size.

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, Value};

use crate::engine::EngineResult;
use crate::engine::model::{LeaseRef, RunRecord, RunStatus};
use crate::engine::obs_model::TimelineKind;

use super::attempt_ops::{param, status_filter};
use super::convert::run_from_model;
use super::entities::runs;
use super::pg_rows::{Rows, Ty, col};
use super::timeline_ops::{self, Entry};
use super::{child_ops, state_ops};

/// Completions per statement.
pub const CHUNK: usize = 200;

/// One run completion to apply.
pub struct CompleteWrite {
    /// The lease it was reported under.
    pub lease: LeaseRef,
    /// The run's result (JSON text).
    pub result: String,
    /// When the server received it.
    pub now: i64,
}

/// Completes the runs whose lease holds; returns the completed run per write (same order),
/// `None` for the writes to apply on their own.
pub async fn apply<C: ConnectionTrait>(
    c: &C,
    writes: &[&CompleteWrite],
) -> EngineResult<Vec<Option<RunRecord>>> {
    let mut out: Vec<Option<RunRecord>> = (0..writes.len()).map(|_| None).collect();
    for (n, chunk) in writes.chunks(CHUNK).enumerate() {
        let base = n * CHUNK;
        let rows = c.query_all_raw(update_runs(c, chunk)?).await?;
        let mut done = Vec::with_capacity(rows.len());
        for row in rows {
            let holds_locks = row.try_get::<bool>("", "holds_locks")?;
            let row = runs::Model::from_query_result(&row, "")?;
            // The update counted the run's `completed` timeline entry.
            let timeline_pos = row.timeline_count;
            let run = run_from_model(row)?;
            // Each run appears once per chunk at most in the result; a resent completion
            // in the same chunk matched nothing the second time (status no longer running).
            if let Some(i) = chunk.iter().enumerate().position(|(i, w)| {
                out[base + i].is_none() && w.lease.run_id == run.id && holds(&w.lease, &run)
            }) {
                done.push((i, run, timeline_pos, holds_locks));
            }
        }
        if done.is_empty() {
            continue;
        }
        end_attempts(c, chunk, &done).await?;
        for (i, run, timeline_pos, holds_locks) in done {
            let now = chunk[i].now;
            if holds_locks {
                state_ops::release_run_locks(c, &run.id, now).await?;
            }
            timeline_ops::add_counted(
                c,
                vec![(
                    Entry::new(&run.id, TimelineKind::Completed, now).attempt(run.attempt),
                    timeline_pos,
                )],
            )
            .await?;
            if run.parent_run_id.is_some() {
                child_ops::on_final(c, &run, now).await?;
            }
            out[base + i] = Some(run);
        }
    }
    Ok(out)
}

fn holds(lease: &LeaseRef, run: &RunRecord) -> bool {
    run.lease_token.as_deref() == Some(lease.token.as_str()) && run.namespace == lease.namespace
}

fn update_runs<C: ConnectionTrait>(c: &C, chunk: &[&CompleteWrite]) -> EngineResult<Statement> {
    let backend = c.get_database_backend();
    // Locks still held at the earliest `now` of the chunk (a superset: each release checks
    // its own instant again). RETURNING sees only the updated table on SQLite, so the
    // instant is bound rather than taken from `v`.
    let earliest = chunk.iter().map(|w| w.now).min().unwrap_or(0);
    let mut values: Vec<Value> = vec![
        Value::from(RunStatus::Completed.as_str().to_owned()),
        Value::from(RunStatus::Running.as_str().to_owned()),
        Value::from(earliest),
    ];
    if backend == DbBackend::Postgres {
        // One text for every chunk size (`pg_rows`); the ids' array (`$4`) is named again
        // in an `= ANY` so that the generic plan reaches `runs` by its primary key.
        let mut rows = Rows::new(&[
            col("id", Ty::Text),
            col("namespace", Ty::Text),
            col("token", Ty::Text),
            col("result", Ty::Text),
            col("now", Ty::Int8),
        ]);
        for w in chunk {
            rows.push([
                Value::from(w.lease.run_id.clone()),
                Value::from(w.lease.namespace.clone()),
                Value::from(w.lease.token.clone()),
                Value::from(w.result.clone()),
                Value::from(w.now),
            ]);
        }
        let sql = format!(
            "UPDATE runs SET status = $1, result = v.result, lease_expires_at = NULL, \
             finished_at = v.now, updated_at = v.now, \
             timeline_count = runs.timeline_count + 1 \
             FROM {} AS v \
             WHERE runs.id = ANY($4::text[]) AND runs.id = v.id \
             AND runs.namespace = v.namespace \
             AND runs.lease_token = v.token AND runs.status = $2 \
             AND runs.lease_expires_at > v.now \
             RETURNING runs.*, EXISTS (SELECT 1 FROM state_locks l \
               WHERE l.holder_run_id = runs.id AND l.expires_at > $3) AS holds_locks",
            rows.relation(&mut values)?
        );
        return Ok(Statement::from_sql_and_values(backend, sql, values));
    }
    let mut tuples = Vec::with_capacity(chunk.len());
    for w in chunk {
        let first = values.len();
        values.extend([
            Value::from(w.lease.run_id.clone()),
            Value::from(w.lease.namespace.clone()),
            Value::from(w.lease.token.clone()),
            Value::from(w.result.clone()),
            Value::from(w.now),
        ]);
        tuples.push(format!(
            "({})",
            (first..values.len())
                .map(|i| param(backend, i))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let sql = format!(
        "UPDATE runs SET status = {completed}, result = v.column4, lease_expires_at = NULL, \
         finished_at = v.column5, updated_at = v.column5, \
         timeline_count = runs.timeline_count + 1 \
         FROM (VALUES {tuples}) AS v \
         WHERE runs.id = v.column1 AND runs.namespace = v.column2 \
         AND runs.lease_token = v.column3 AND runs.status = {running} \
         AND runs.lease_expires_at > v.column5 \
         RETURNING {returning}, EXISTS (SELECT 1 FROM state_locks l \
           WHERE l.holder_run_id = runs.id AND l.expires_at > {earliest}) AS holds_locks",
        completed = param(backend, 0),
        running = status_filter(backend, 1, RunStatus::Running),
        earliest = param(backend, 2),
        tuples = tuples.join(", "),
        returning = returning_runs(backend),
    );
    Ok(super::placeholders::statement(backend, sql, values))
}

/// The updated `runs` columns: `RETURNING *` names only the updated table's columns on
/// SQLite, but adds the `FROM` list's on PostgreSQL, where `runs.*` is needed (which
/// SQLite does not accept).
fn returning_runs(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "runs.*",
        _ => "*",
    }
}

async fn end_attempts<C: ConnectionTrait>(
    c: &C,
    chunk: &[&CompleteWrite],
    done: &[(usize, RunRecord, i64, bool)],
) -> EngineResult<()> {
    let backend = c.get_database_backend();
    if backend == DbBackend::Postgres {
        // One text for every chunk size (`pg_rows`).
        let mut rows = Rows::new(&[
            col("run_id", Ty::Text),
            col("number", Ty::Int4),
            col("now", Ty::Int8),
        ]);
        for (i, run, _, _) in done {
            rows.push([
                Value::from(run.id.clone()),
                Value::from(run.attempt),
                Value::from(chunk[*i].now),
            ]);
        }
        let mut values = Vec::new();
        let sql = format!(
            "UPDATE attempts SET ended_at = v.now, failure = NULL FROM {} AS v \
             WHERE attempts.run_id = ANY($1::text[]) AND attempts.run_id = v.run_id \
             AND attempts.number = v.number \
             AND attempts.ended_at IS NULL",
            rows.relation(&mut values)?
        );
        c.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        return Ok(());
    }
    let mut values: Vec<Value> = Vec::with_capacity(done.len() * 3);
    let mut tuples = Vec::with_capacity(done.len());
    for (i, run, _, _) in done {
        let first = values.len();
        values.extend([
            Value::from(run.id.clone()),
            Value::from(run.attempt),
            Value::from(chunk[*i].now),
        ]);
        tuples.push(format!(
            "({})",
            (first..values.len())
                .map(|i| param(backend, i))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let sql = format!(
        "UPDATE attempts SET ended_at = v.column3, failure = NULL \
         FROM (VALUES {}) AS v \
         WHERE attempts.run_id = v.column1 AND attempts.number = v.column2 \
         AND attempts.ended_at IS NULL",
        tuples.join(", ")
    );
    c.execute_raw(super::placeholders::statement(backend, sql, values))
        .await?;
    Ok(())
}
