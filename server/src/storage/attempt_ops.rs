//! Claimed attempts: starting the attempts of the runs a claim selected (one `UPDATE ...
//! FROM (VALUES ...)` for all of them), collecting their `attempts` rows and timeline
//! entries, and loading the journals of runs delivered again.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, Statement, Value,
};

use crate::engine::model::{ClaimRequest, ClaimedTask, RunRecord, RunStatus};
use crate::engine::obs_model::TimelineKind;
use crate::engine::{EngineError, EngineResult};

use super::convert::{run_from_model, step_from_model};
use super::entities::{attempts, runs, steps};
use super::pg_rows::{Rows, Ty, col, null};
use super::timeline_ops::{self, Entry};
use super::wait_ops;

pub(super) fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The `attempts` rows and timeline entries of the attempts one claim started, inserted
/// together (two statements per claim instead of two per attempt).
#[derive(Default)]
pub struct AttemptRows {
    attempts: Vec<attempts::ActiveModel>,
    /// Each entry with its run's `timeline_count` after the claim's update counted it.
    timeline: Vec<(Entry, i64)>,
}

impl AttemptRows {
    /// Adds attempt `attempt` of run `run_id`, started by `req` with a lease of `lease_ms`:
    /// its `attempts` row (none for a `resumed` attempt, whose row exists) and its
    /// `attempt_started` (or `attempt_resumed`) entry, at `timeline_pos` (the run's
    /// `timeline_count` once it counts the entry).
    pub(super) fn push(
        &mut self,
        req: &ClaimRequest,
        run_id: &str,
        attempt: i32,
        lease_ms: i64,
        timeline_pos: i64,
        resumed: bool,
    ) {
        if !resumed {
            self.attempts.push(attempts::ActiveModel {
                run_id: Set(run_id.to_owned()),
                number: Set(attempt),
                worker_id: Set(req.worker_id.clone()),
                started_at: Set(req.now),
                ended_at: Set(None),
                failure: Set(None),
            });
        }
        let kind = if resumed {
            TimelineKind::AttemptResumed
        } else {
            TimelineKind::AttemptStarted
        };
        self.timeline.push((
            Entry::new(run_id, kind, req.now)
                .attempt(attempt)
                .detail(serde_json::json!({ "worker_id": req.worker_id, "lease_ms": lease_ms })),
            timeline_pos,
        ));
    }

    /// Inserts the collected rows (call inside the claim's transaction).
    pub async fn insert<C: ConnectionTrait>(self, c: &C) -> EngineResult<()> {
        if c.get_database_backend() == DbBackend::Postgres {
            if !self.attempts.is_empty() {
                c.execute_raw(pg_attempts_insert(&self.attempts)?).await?;
            }
        } else {
            for chunk in self.attempts.chunks(200) {
                attempts::Entity::insert_many(chunk.iter().cloned())
                    .exec_without_returning(c)
                    .await?;
            }
        }
        timeline_ops::add_counted(c, self.timeline).await
    }
}

/// Starts an attempt on each queued run a claim selected and locked: status `running`, a
/// fresh lease and an `attempts` row. The lease duration is the run's own, else the
/// queue's default, else the worker's for the job, else the server default. A run no
/// longer queued (another claim took it first) is left out. All the runs are updated with
/// one `UPDATE ... FROM (VALUES ...)` statement (per 200 runs) that returns the ids it
/// updated; the new `attempts` rows and timeline entries go to `rows`, which the claim
/// inserts once for all its attempts ([`AttemptRows::insert`]) before its transaction ends.
pub async fn start_attempts<C: ConnectionTrait>(
    c: &C,
    req: &ClaimRequest,
    selected: Vec<runs::Model>,
    queue_lease_ms: Option<i64>,
    rows: &mut AttemptRows,
) -> EngineResult<Vec<ClaimedTask>> {
    if selected.is_empty() {
        return Ok(Vec::new());
    }
    // A run resumed after a sleep or an event wait continues its open attempt; only a run
    // delivered before can be resuming.
    let delivered_before: Vec<String> = selected
        .iter()
        .filter(|r| r.attempt > 0)
        .map(|r| r.id.clone())
        .collect();
    let resuming = wait_ops::resuming(c, &delivered_before).await?;
    let mut prepared = Vec::with_capacity(selected.len());
    for row in selected {
        let run = run_from_model(row)?;
        let resumed = resuming.contains(&run.id);
        let lease_ms = run
            .lease_timeout_ms
            .or(queue_lease_ms)
            .or_else(|| {
                req.jobs
                    .iter()
                    .find(|j| j.name == run.job)
                    .and_then(|j| j.lease_timeout_ms)
            })
            .unwrap_or(req.default_lease_ms);
        let attempt = if resumed {
            run.attempt
        } else {
            run.attempt + 1
        };
        prepared.push((run, resumed, lease_ms, attempt, new_token()));
    }
    // Updated run -> its `timeline_count`, which the update moved for its entry.
    let mut updated = std::collections::HashMap::new();
    for chunk in prepared.chunks(200) {
        let stmt = attempts_update(c.get_database_backend(), req, chunk)?;
        for row in c.query_all_raw(stmt).await? {
            updated.insert(
                row.try_get::<String>("", "id")?,
                row.try_get::<i64>("", "timeline_count")?,
            );
        }
    }
    let mut tasks = Vec::with_capacity(updated.len());
    for (mut run, resumed, lease_ms, attempt, token) in prepared {
        let Some(&timeline_pos) = updated.get(&run.id) else {
            continue;
        };
        let deadline = req.now + lease_ms;
        if resumed {
            wait_ops::reassign_attempt(c, &run.id, attempt, &req.worker_id).await?;
        }
        rows.push(req, &run.id, attempt, lease_ms, timeline_pos, resumed);
        run.status = RunStatus::Running;
        run.attempt = attempt;
        run.lease_token = Some(token.clone());
        run.lease_expires_at = Some(deadline);
        run.effective_lease_ms = Some(lease_ms);
        run.worker_id = Some(req.worker_id.clone());
        run.updated_at = req.now;
        tasks.push(ClaimedTask {
            run,
            lease_token: token,
            lease_deadline: deadline,
            lease_ms,
            journal: Vec::new(),
            resumed,
        });
    }
    Ok(tasks)
}

/// `UPDATE runs ... FROM (VALUES (id, attempt, token, deadline, lease_ms), ...)` for the
/// runs of one claim still queued, returning the ids it updated and their `timeline_count`,
/// which it moves for the attempt's timeline entry (so the entry needs no update of its
/// own, see `timeline_ops::add_counted`).
fn attempts_update(
    backend: DbBackend,
    req: &ClaimRequest,
    chunk: &[(RunRecord, bool, i64, i32, String)],
) -> EngineResult<Statement> {
    let mut values: Vec<Value> = vec![
        Value::from(req.worker_id.clone()),
        Value::from(req.now),
        Value::from(RunStatus::Running.as_str().to_owned()),
        Value::from(RunStatus::Queued.as_str().to_owned()),
    ];
    if backend == DbBackend::Postgres {
        // One text for every claim size (`pg_rows`); the ids' array (`$5`) is named again
        // in an `= ANY` so that the generic plan reaches `runs` by its primary key.
        let mut rows = Rows::new(&[
            col("id", Ty::Text),
            col("attempt", Ty::Int4),
            col("token", Ty::Text),
            col("deadline", Ty::Int8),
            col("lease_ms", Ty::Int8),
        ]);
        for (run, _, lease_ms, attempt, token) in chunk {
            rows.push([
                Value::from(run.id.clone()),
                Value::from(*attempt),
                Value::from(token.clone()),
                Value::from(req.now + lease_ms),
                Value::from(*lease_ms),
            ]);
        }
        let sql = format!(
            "UPDATE runs SET status = $3, attempt = v.attempt, lease_token = v.token, \
             lease_expires_at = v.deadline, effective_lease_ms = v.lease_ms, worker_id = $1, \
             updated_at = $2, timeline_count = runs.timeline_count + 1 \
             FROM {} AS v \
             WHERE runs.id = ANY($5::text[]) AND runs.id = v.id AND runs.status = $4 \
             RETURNING runs.id AS id, runs.timeline_count AS timeline_count",
            rows.relation(&mut values)?
        );
        return Ok(Statement::from_sql_and_values(backend, sql, values));
    }
    let mut tuples = Vec::with_capacity(chunk.len());
    for (run, _, lease_ms, attempt, token) in chunk {
        let first = values.len();
        values.extend([
            Value::from(run.id.clone()),
            Value::from(*attempt),
            Value::from(token.clone()),
            Value::from(req.now + lease_ms),
            Value::from(*lease_ms),
        ]);
        tuples.push(format!(
            "({})",
            (first..values.len())
                .map(|i| param(backend, i))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // VALUES columns are named column1..column5 on both SQLite and PostgreSQL.
    let sql = format!(
        "UPDATE runs SET status = {status}, attempt = v.column2, lease_token = v.column3, \
         lease_expires_at = v.column4, effective_lease_ms = v.column5, worker_id = {worker}, \
         updated_at = {now}, timeline_count = runs.timeline_count + 1 \
         FROM (VALUES {tuples}) AS v \
         WHERE runs.id = v.column1 AND runs.status = {queued} \
         RETURNING runs.id AS id, runs.timeline_count AS timeline_count",
        worker = param(backend, 0),
        now = param(backend, 1),
        status = param(backend, 2),
        queued = status_filter(backend, 3, RunStatus::Queued),
        tuples = tuples.join(", "),
    );
    Ok(super::placeholders::statement(backend, sql, values))
}

/// The PostgreSQL insert of a claim's `attempts` rows: one text for every claim size
/// (`pg_rows`).
fn pg_attempts_insert(models: &[attempts::ActiveModel]) -> EngineResult<Statement> {
    use sea_orm::{ActiveModelTrait, IdenStatic};
    let columns = [
        attempts::Column::RunId,
        attempts::Column::Number,
        attempts::Column::WorkerId,
        attempts::Column::StartedAt,
        attempts::Column::EndedAt,
        attempts::Column::Failure,
    ];
    let mut rows = Rows::new(&[
        col("run_id", Ty::Text),
        col("number", Ty::Int4),
        col("worker_id", Ty::Text),
        col("started_at", Ty::Int8),
        null("ended_at", Ty::Int8),
        null("failure", Ty::Text),
    ]);
    for m in models {
        let mut row = Vec::with_capacity(columns.len());
        for column in columns {
            let value = m.get(column).into_value().ok_or_else(|| {
                EngineError::Storage(format!("attempt row: {} not set", column.as_str()))
            })?;
            row.push(value);
        }
        rows.push_iter(row);
    }
    let mut values = Vec::new();
    let sql = format!(
        "INSERT INTO attempts (run_id, number, worker_id, started_at, ended_at, failure) \
         SELECT run_id, number, worker_id, started_at, ended_at, failure FROM {} AS v \
         ORDER BY ord",
        rows.relation(&mut values)?
    );
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
}

/// The placeholder of the `i`-th (0-based) bound value: numbered on both backends (`$n`,
/// `?n`), so the SQL may name the values in any order.
pub(super) fn param(backend: DbBackend, i: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${}", i + 1),
        _ => format!("?{}", i + 1),
    }
}

/// The value a batched statement's `WHERE runs.status = ...` compares with: the `i`-th bound
/// value on PostgreSQL ([`param`]), the literal `'<status>'` on SQLite (`status` is one of
/// the fixed status names, never input). SQLite marks a bound value that its planner
/// compared with a partial index's `WHERE status = '...'` (`idx_runs_ready`,
/// `idx_runs_running`) as plan-relevant and re-prepares the statement on the next step after
/// that value is bound again, i.e. on every execution of a cached statement; and once such
/// a value sits at position 32 or later (after the VALUES list of a batch of 7 rows or
/// more), binding any of those positions does. A batched statement was thus re-parsed,
/// VALUES list included, on every call (`sqlite3Reprepare`, 14 % of the server's samples in
/// `throughput`, docs/performance.md "Round 5: per-item work"). The literal gives the same
/// plan (the planner saw the same value) without the re-preparation.
pub(super) fn status_filter(backend: DbBackend, i: usize, status: RunStatus) -> String {
    match backend {
        DbBackend::Postgres => param(backend, i),
        _ => format!("'{}'", status.as_str()),
    }
}

/// `UPDATE runs SET <column> = runs.<column> + n, ... FROM (VALUES (id, n), ...)`: adds each
/// run's `n` to some of its history counters (`step_count`, `timeline_count`), with
/// `RETURNING id, <columns>` (the new values) when `returning`. VALUES columns are named
/// `column1`, `column2` on both SQLite and PostgreSQL.
pub(super) fn add_to_run_counter(
    backend: DbBackend,
    columns: &[&str],
    per_run: &[(&str, i64)],
    returning: bool,
) -> EngineResult<Statement> {
    let set: Vec<String> = columns
        .iter()
        .map(|column| format!("{column} = runs.{column} + v.column2"))
        .collect();
    let mut returned = String::new();
    if returning {
        returned.push_str(" RETURNING runs.id AS id");
        for column in columns {
            returned.push_str(&format!(", runs.{column} AS {column}"));
        }
    }
    if backend == DbBackend::Postgres {
        // One text for every number of runs (`pg_rows`); the relation's columns keep the
        // VALUES names. The ids' array (`$1`) is named again in an `= ANY` so that the
        // generic plan reaches `runs` by its primary key.
        let mut rows = Rows::new(&[col("column1", Ty::Text), col("column2", Ty::Int8)]);
        for (id, n) in per_run {
            rows.push([Value::from(id.to_string()), Value::from(*n)]);
        }
        let mut values = Vec::new();
        let sql = format!(
            "UPDATE runs SET {} FROM {} AS v \
             WHERE runs.id = ANY($1::text[]) AND runs.id = v.column1{returned}",
            set.join(", "),
            rows.relation(&mut values)?
        );
        return Ok(Statement::from_sql_and_values(backend, sql, values));
    }
    let mut values: Vec<Value> = Vec::with_capacity(per_run.len() * 2);
    let mut tuples = Vec::with_capacity(per_run.len());
    for (id, n) in per_run {
        let first = values.len();
        values.extend([Value::from(id.to_string()), Value::from(*n)]);
        tuples.push(format!(
            "({}, {})",
            param(backend, first),
            param(backend, first + 1)
        ));
    }
    let sql = format!(
        "UPDATE runs SET {} FROM (VALUES {}) AS v WHERE runs.id = v.column1{returned}",
        set.join(", "),
        tuples.join(", ")
    );
    Ok(super::placeholders::statement(backend, sql, values))
}

/// Fills each claimed task's journal with the steps its run recorded so far. A run on its
/// first attempt (not resumed) has recorded nothing yet: steps are recorded only under an
/// attempt's lease, so a claim of new runs only reads nothing.
pub async fn load_journals<C: ConnectionTrait>(
    c: &C,
    tasks: &mut [ClaimedTask],
) -> EngineResult<()> {
    let ids: Vec<String> = tasks
        .iter()
        .filter(|t| t.resumed || t.run.attempt > 1)
        .map(|t| t.run.id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let journal = steps::Entity::find()
        .filter(steps::Column::RunId.is_in(ids))
        .order_by_asc(steps::Column::CompletedAt)
        .order_by_asc(steps::Column::StepId)
        .all(c)
        .await?;
    for step in journal {
        let run_id = step.run_id.clone();
        let rec = step_from_model(step)?;
        if let Some(t) = tasks.iter_mut().find(|t| t.run.id == run_id) {
            t.journal.push(rec);
        }
    }
    Ok(())
}
