//! Step results of one group commit recorded together: one `INSERT ... SELECT` over a
//! `VALUES` list joined to `runs` per [`CHUNK`] results, instead of one statement (and one
//! savepoint) per result. The join is the lease guard of `run_ops::complete_step` (token,
//! `running`, not expired; the rows locked on PostgreSQL) and its step-limit guard: the
//! `k`-th result of a run in the statement (from 0) needs `step_count + k` below
//! `--max-steps-per-run`, so the statement never takes a run past its cap (a result after
//! a replayed one of the same run may be held back needlessly; it then goes on its own).
//! `ON CONFLICT DO NOTHING` keeps the first result of a step; `RETURNING` says which
//! results were inserted, and one `UPDATE runs ... FROM (VALUES ...) RETURNING` adds them to
//! the runs' `step_count` and counts their timeline entries in `timeline_count` (admitted
//! under the timeline cap when the writer flushes them, `timeline_ops::add_counted`). A
//! result the statement did not insert (stale lease, cancelled run, already recorded, at
//! the step limit) goes through `run_ops::complete_step` on its own, which answers the
//! precise outcome (a refusal with `STEP_LIMIT` that fails the run at the cap).

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::engine::EngineResult;
use crate::engine::model::{LeaseRef, NewStep, RunStatus};

use super::attempt_ops::{add_to_run_counter, param};
use super::convert::failure_to_text;
use super::limits;
use super::pg_rows::{Rows, Ty, col, null};
use super::run_ops::step_entry;
use super::timeline_ops;

/// Results per statement (11 bound values each, far below SQLite's variable limit).
pub const CHUNK: usize = 200;

/// One step result to record.
pub struct StepWrite {
    /// The lease it was reported under.
    pub lease: LeaseRef,
    /// The result.
    pub step: NewStep,
    /// When the server received it.
    pub now: i64,
}

/// Inserts the results whose lease holds and whose step has no result yet, adds their
/// timeline entries, and returns which ones were inserted (same order as `writes`).
pub async fn record<C: ConnectionTrait>(c: &C, writes: &[&StepWrite]) -> EngineResult<Vec<bool>> {
    let mut inserted = vec![false; writes.len()];
    let max = limits::current().max_steps_per_run;
    for (n, chunk) in writes.chunks(CHUNK).enumerate() {
        let base = n * CHUNK;
        let backend = c.get_database_backend();
        let rows = c.query_all_raw(statement(backend, chunk, max)?).await?;
        let mut per_run: HashMap<&str, i64> = HashMap::new();
        // The results inserted, in the order their timeline entries are added.
        let mut added: Vec<(usize, i32)> = Vec::new();
        for row in rows {
            let run_id: String = row.try_get("", "run_id")?;
            let step_id: String = row.try_get("", "step_id")?;
            let attempt: i32 = row.try_get("", "attempt")?;
            // The first write of this step in the chunk is the one inserted (conflicts
            // within the statement keep the first row).
            if let Some(i) = chunk.iter().enumerate().position(|(i, w)| {
                !inserted[base + i] && w.lease.run_id == run_id && w.step.step_id == step_id
            }) {
                inserted[base + i] = true;
                *per_run.entry(chunk[i].lease.run_id.as_str()).or_insert(0) += 1;
                added.push((i, attempt));
            }
        }
        if per_run.is_empty() {
            continue;
        }
        let mut per_run: Vec<(&str, i64)> = per_run.into_iter().collect();
        per_run.sort_unstable();
        // One update moves both counters; the new `timeline_count` places the entries.
        let mut next: HashMap<String, i64> = HashMap::with_capacity(per_run.len());
        for row in c
            .query_all_raw(add_to_run_counter(
                backend,
                &["step_count", "timeline_count"],
                &per_run,
                true,
            )?)
            .await?
        {
            let id: String = row.try_get("", "id")?;
            let count: i64 = row.try_get("", "timeline_count")?;
            let n = per_run
                .binary_search_by(|(r, _)| (*r).cmp(id.as_str()))
                .map_or(0, |i| per_run[i].1);
            next.insert(id, count - n);
        }
        let mut entries = Vec::with_capacity(added.len());
        for (i, attempt) in added {
            let w = chunk[i];
            let pos = next.entry(w.lease.run_id.clone()).or_insert(0);
            *pos += 1;
            let size = output_size(&w.step);
            entries.push((
                step_entry(&w.lease.run_id, attempt, &w.step, size, w.now),
                *pos,
            ));
        }
        timeline_ops::add_counted(c, entries).await?;
    }
    Ok(inserted)
}

fn output_size(step: &NewStep) -> i64 {
    step.output.as_ref().map_or(0, |o| o.len() as i64)
}

fn statement(backend: DbBackend, chunk: &[&StepWrite], max: i64) -> EngineResult<Statement> {
    if backend == DbBackend::Postgres {
        return pg_statement(chunk, max);
    }
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 11 + 1);
    values.push(Value::from(max));
    let mut rows = Vec::with_capacity(chunk.len());
    // The place of each result among the statement's results of its run.
    let mut ordinal: HashMap<&str, i64> = HashMap::new();
    for w in chunk {
        let k = ordinal.entry(w.lease.run_id.as_str()).or_insert(0);
        let place = *k;
        *k += 1;
        let first = values.len();
        values.extend(step_row(w, place));
        let params: Vec<String> = (first..values.len()).map(|i| param(backend, i)).collect();
        rows.push(format!("({})", params.join(", ")));
    }
    // VALUES columns are named column1..column11 on both SQLite and PostgreSQL.
    let lock = match backend {
        DbBackend::Postgres => " FOR UPDATE OF r",
        _ => "",
    };
    let sql = format!(
        "INSERT INTO steps (run_id, step_id, kind, attempt, output, failure, output_size, \
         started_at, completed_at) \
         SELECT r.id, v.column2, v.column3, r.attempt, v.column4, v.column5, v.column6, \
         v.column7, v.column8 \
         FROM (VALUES {}) AS v JOIN runs r ON r.id = v.column1 \
         WHERE r.namespace = v.column9 AND r.lease_token = v.column10 \
         AND r.status = '{}' AND r.lease_expires_at > v.column8 \
         AND r.step_count + v.column11 < {max}{lock} \
         ON CONFLICT (run_id, step_id) DO NOTHING \
         RETURNING run_id, step_id, attempt",
        rows.join(", "),
        RunStatus::Running.as_str(),
        max = param(backend, 0),
    );
    Ok(super::placeholders::statement(backend, sql, values))
}

/// The PostgreSQL form of [`statement`]: the results as arrays (`pg_rows`), one text for
/// every chunk size.
fn pg_statement(chunk: &[&StepWrite], max: i64) -> EngineResult<Statement> {
    let mut rows = Rows::new(&[
        col("run_id", Ty::Text),
        col("step_id", Ty::Text),
        col("kind", Ty::Text),
        null("output", Ty::Text),
        null("failure", Ty::Text),
        col("output_size", Ty::Int8),
        null("started_at", Ty::Int8),
        col("now", Ty::Int8),
        col("namespace", Ty::Text),
        col("token", Ty::Text),
        col("place", Ty::Int8),
    ]);
    let mut ordinal: HashMap<&str, i64> = HashMap::new();
    for w in chunk {
        let k = ordinal.entry(w.lease.run_id.as_str()).or_insert(0);
        let place = *k;
        *k += 1;
        rows.push(step_row(w, place));
    }
    // `$1` is the cap; the run ids' array (the first column) is `$2`, named again in an
    // `= ANY` so that the cached generic plan reaches `runs` by its primary key (it does
    // not know the number of rows; without it, it hash-joins a scan of `runs`).
    let mut values = vec![Value::from(max)];
    let sql = format!(
        "INSERT INTO steps (run_id, step_id, kind, attempt, output, failure, output_size, \
         started_at, completed_at) \
         SELECT r.id, v.step_id, v.kind, r.attempt, v.output, v.failure, v.output_size, \
         v.started_at, v.now \
         FROM {} AS v JOIN runs r ON r.id = v.run_id \
         WHERE r.id = ANY($2::text[]) AND r.namespace = v.namespace AND r.lease_token = v.token \
         AND r.status = '{}' AND r.lease_expires_at > v.now \
         AND r.step_count + v.place < $1 FOR UPDATE OF r \
         ON CONFLICT (run_id, step_id) DO NOTHING \
         RETURNING run_id, step_id, attempt",
        rows.relation(&mut values)?,
        RunStatus::Running.as_str(),
    );
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
}

/// A step result's values in the order of the steps insert's columns (`place`: its order
/// among the batch's results of the same run).
fn step_row(w: &StepWrite, place: i64) -> [Value; 11] {
    [
        Value::from(w.lease.run_id.clone()),
        Value::from(w.step.step_id.clone()),
        Value::from(w.step.kind.as_str().to_owned()),
        Value::from(w.step.output.clone()),
        Value::from(w.step.failure.as_ref().map(failure_to_text)),
        Value::from(output_size(&w.step)),
        Value::from(w.step.started_at),
        Value::from(w.now),
        Value::from(w.lease.namespace.clone()),
        Value::from(w.lease.token.clone()),
        Value::from(place),
    ]
}
