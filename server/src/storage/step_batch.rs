//! Step results of one group commit recorded together: one `INSERT ... SELECT` over a
//! `VALUES` list joined to `runs` per [`CHUNK`] results, instead of one statement (and one
//! savepoint) per result. The join is the lease guard of `run_ops::complete_step` (token,
//! `running`, not expired; the rows locked on PostgreSQL); `ON CONFLICT DO NOTHING` keeps
//! the first result of a step; `RETURNING` says which results were inserted. A result the
//! statement did not insert (stale lease, cancelled run, already recorded) goes through
//! `run_ops::complete_step` on its own, which answers the precise outcome.

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::engine::EngineResult;
use crate::engine::model::{LeaseRef, NewStep, RunStatus};

use super::attempt_ops::param;
use super::convert::failure_to_text;
use super::run_ops::step_entry;
use super::timeline_ops;

/// Results per statement (10 bound values each, far below SQLite's variable limit).
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
    for (n, chunk) in writes.chunks(CHUNK).enumerate() {
        let base = n * CHUNK;
        let backend = c.get_database_backend();
        let rows = c.query_all_raw(statement(backend, chunk)).await?;
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
                let w = chunk[i];
                let size = output_size(&w.step);
                timeline_ops::add(c, step_entry(&run_id, attempt, &w.step, size, w.now)).await?;
            }
        }
    }
    Ok(inserted)
}

fn output_size(step: &NewStep) -> i64 {
    step.output.as_ref().map_or(0, |o| o.len() as i64)
}

fn statement(backend: DbBackend, chunk: &[&StepWrite]) -> Statement {
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 10);
    let mut rows = Vec::with_capacity(chunk.len());
    for w in chunk {
        let first = values.len();
        values.extend([
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
        ]);
        let params: Vec<String> = (first..values.len()).map(|i| param(backend, i)).collect();
        rows.push(format!("({})", params.join(", ")));
    }
    // VALUES columns are named column1..column10 on both SQLite and PostgreSQL.
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
         AND r.status = '{}' AND r.lease_expires_at > v.column8{lock} \
         ON CONFLICT (run_id, step_id) DO NOTHING \
         RETURNING run_id, step_id, attempt",
        rows.join(", "),
        RunStatus::Running.as_str(),
    );
    Statement::from_sql_and_values(backend, sql, values)
}
