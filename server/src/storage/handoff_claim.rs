//! The handoff claim: a start or a publish that made known runs deliverable claims them for
//! a parked poll (`engine::handoff`, `Dispatcher::reserve`) in its own transaction. When
//! nothing but those runs could be claimed, the general claim (`claim_ops::claim_queued`:
//! the queue rows, a `MAX(priority)` seek per level, the level's select, the attempts'
//! update, another seek) would claim exactly them; the handoff then claims them directly:
//! one guarded `SELECT` of the known runs by id, then the attempts' `UPDATE ... FROM
//! (VALUES ...)` and the `attempts` insert of `attempt_ops` (on SQLite without a savepoint
//! of its own). In every other case it falls back to the general claim, in a savepoint.
//! A start does not even insert its run queued first: [`insert_claimed`] writes it already
//! running with one guarded `INSERT ... SELECT` (the same guard, in the statement).
//!
//! The guard (all in the one `SELECT`), under which the general claim's outcome is the
//! same tasks:
//! - each known run is still `queued`, deliverable at the claim's time, of a queue and job
//!   the poll serves;
//! - its queue is not paused and has no concurrency, per-key concurrency or rate limit (a
//!   limited queue needs the general claim's lock, counts and rate window);
//! - no other run of the poll's queues and jobs is deliverable (the general claim would
//!   order it against the known runs by priority and age, and could take it too);
//! - they fit the poll's `max_tasks`.
//!
//! The tasks are then the same (the known runs, their attempt numbers, leases, `attempts`
//! rows and timeline entries come from the same `attempt_ops::start_attempts`). Only the
//! claim's side reports differ: the fast path reports no `blocked` queue, `retry_at` or
//! `contended` (nothing was held back from this poll; the handoff paths only use the
//! tasks).
//!
//! Failures: on PostgreSQL the fast path runs in the savepoint the general claim uses (an
//! error there aborts the transaction otherwise), and a failing claim leaves the start or
//! publish intact. On SQLite a failing statement undoes only itself, so the fast path runs
//! without a savepoint (two round trips fewer): a failing guard `SELECT` falls back to the
//! general claim; an error once the claim has written fails the whole write (its writer
//! savepoint rolls back the start or publish too, and the caller gets the error, as for any
//! failed write).

use std::collections::{BTreeMap, HashSet};

use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseTransaction, DbBackend, FromQueryResult, IdenStatic,
    Iterable, TryIntoModel, Value,
};

use crate::engine::model::{ClaimRequest, ClaimedTask, NewRun, RunRecord, RunStatus};
use crate::engine::queue_model::ClaimOutcome;
use crate::engine::{EngineError, EngineResult};

use super::attempt_ops::{self, AttemptRows, param};
use super::claim_ops;
use super::convert::run_from_model;
use super::entities::runs;
use super::run_ops;

/// Claims for `req` (a reserved parked poll) in `c`, the transaction that made `known`
/// deliverable: the known runs directly when the guard holds, else through the general
/// claim in a savepoint. `at`: the write it is part of, for the log (`start`, `publish`).
pub(super) async fn claim_handoff(
    c: &DatabaseTransaction,
    req: ClaimRequest,
    known: &[&str],
    rotation: usize,
    at: &str,
) -> EngineResult<ClaimOutcome> {
    if c.get_database_backend() == DbBackend::Sqlite {
        match guarded_select(c, &req, known).await {
            Ok(Some(rows)) => return claim_selected(c, &req, rows).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "handoff guard at {at} failed"),
        }
        return claim_ops::claim_in_savepoint(c, req, rotation, at).await;
    }
    // PostgreSQL: both paths in one savepoint (an error aborts the transaction otherwise).
    let known: Vec<String> = known.iter().map(|s| (*s).to_owned()).collect();
    claim_ops::in_savepoint(c, at, move |sp| {
        Box::pin(async move {
            let refs: Vec<&str> = known.iter().map(String::as_str).collect();
            match guarded_select(sp, &req, &refs).await? {
                Some(rows) => claim_selected(sp, &req, rows).await,
                None => claim_ops::claim_queued(sp, req, rotation).await,
            }
        })
    })
    .await
}

/// Starts attempts on the guarded rows (grouped by queue: the lease default is the
/// queue's), inserting their `attempts` rows once.
async fn claim_selected<C: ConnectionTrait>(
    c: &C,
    req: &ClaimRequest,
    rows: Vec<(runs::Model, Option<i64>)>,
) -> EngineResult<ClaimOutcome> {
    let mut per_queue: BTreeMap<(String, Option<i64>), Vec<runs::Model>> = BTreeMap::new();
    for (row, queue_lease) in rows {
        per_queue
            .entry((row.queue.clone(), queue_lease))
            .or_default()
            .push(row);
    }
    let mut out = ClaimOutcome::default();
    let mut pending = AttemptRows::default();
    for ((_, queue_lease), rows) in per_queue {
        out.tasks
            .extend(attempt_ops::start_attempts(c, req, rows, queue_lease, &mut pending).await?);
    }
    pending.insert(c).await?;
    attempt_ops::load_journals(c, &mut out.tasks).await?;
    Ok(out)
}

/// The known runs (with their queue's default lease) when the module's guard holds: all
/// of them still queued and deliverable, served by the poll, in unpaused and unlimited
/// queues, no other run deliverable to the poll, at most `max_tasks`. `None` otherwise.
async fn guarded_select<C: ConnectionTrait>(
    c: &C,
    req: &ClaimRequest,
    known: &[&str],
) -> EngineResult<Option<Vec<(runs::Model, Option<i64>)>>> {
    let distinct: HashSet<&str> = known.iter().copied().collect();
    if distinct.is_empty() || distinct.len() > req.max_tasks || req.queues.is_empty() {
        return Ok(None);
    }
    let backend = c.get_database_backend();
    let mut values: Vec<Value> = vec![
        Value::from(req.namespace.clone()),
        Value::from(RunStatus::Queued.as_str().to_owned()),
        Value::from(req.now),
    ];
    if req.jobs.is_empty() {
        return Ok(None);
    }
    // The id, queue and job lists: arrays on PostgreSQL (see `list`).
    let ids = list(
        backend,
        distinct.iter().map(|s| (*s).to_owned()).collect(),
        &mut values,
    );
    let queues = list(backend, req.queues.clone(), &mut values);
    let jobs = list(
        backend,
        req.jobs.iter().map(|j| j.name.clone()).collect(),
        &mut values,
    );
    let (ns, queued, now) = (param(backend, 0), param(backend, 1), param(backend, 2));
    // `deliverable(t)`: a run of table alias `t` the poll's claim could take now.
    let deliverable = |t: &str| {
        format!(
            "{t}.namespace = {ns} AND {t}.status = {queued} AND {} \
             AND {} AND {t}.available_at <= {now}",
            within(backend, &format!("{t}.queue"), &queues, false),
            within(backend, &format!("{t}.job"), &jobs, false),
        )
    };
    let sql = format!(
        "SELECT r.*, (SELECT q.lease_timeout_ms FROM queues q \
           WHERE q.namespace = r.namespace AND q.name = r.queue) AS queue_lease_ms \
         FROM runs r WHERE {mine_id} AND {mine} \
         AND NOT EXISTS (SELECT 1 FROM queues q WHERE q.namespace = r.namespace \
           AND q.name = r.queue AND (q.paused OR q.concurrency_limit IS NOT NULL \
           OR q.key_concurrency_limit IS NOT NULL OR q.rate_limit IS NOT NULL \
           OR q.rate_period_ms IS NOT NULL)) \
         AND NOT EXISTS (SELECT 1 FROM runs o WHERE {other} AND {other_id}) \
         ORDER BY r.priority DESC, r.available_at, r.id",
        mine_id = within(backend, "r.id", &ids, false),
        other_id = within(backend, "o.id", &ids, true),
        mine = deliverable("r"),
        other = deliverable("o"),
    );
    let stmt = super::placeholders::statement(backend, sql, values);
    let found = c.query_all_raw(stmt).await?;
    if found.len() != distinct.len() {
        return Ok(None);
    }
    let mut rows = Vec::with_capacity(found.len());
    for row in found {
        let lease = row.try_get::<Option<i64>>("", "queue_lease_ms")?;
        rows.push((runs::Model::from_query_result(&row, "")?, lease));
    }
    Ok(Some(rows))
}

/// A start handed to the parked poll `req`, inserted directly as claimed: one guarded
/// `INSERT runs ... SELECT ... WHERE <guard> RETURNING` writes the run already running
/// (attempt 1, the poll's lease and worker, `timeline_count` 2) when the module's guard
/// holds for it, instead of `INSERT` queued, the guarded `SELECT` and the attempts'
/// `UPDATE` (two statements fewer). The lease is chosen as the claim chooses it (the run's
/// own, else its queue's default, read in the statement, else the poll's for the job, else
/// the poll's default). Then the `attempts` row and the `created` and `attempt_started`
/// entries, as the claim writes them: the rows and timeline are those of the insert and
/// claim it replaces.
///
/// Returns the run as a plain start returns it (queued, as inserted before the claim) and
/// the claimed task; `None` when the guard does not hold (nothing written: the caller
/// inserts the run queued and claims through the general claim). The idempotency key, if
/// any, must have been taken already.
pub(super) async fn insert_claimed<C: ConnectionTrait>(
    c: &C,
    new: &NewRun,
    req: &ClaimRequest,
) -> EngineResult<Option<(RunRecord, ClaimedTask)>> {
    let job_lease = req
        .jobs
        .iter()
        .find(|j| j.name == new.job)
        .map(|j| j.lease_timeout_ms);
    let Some(job_lease) = job_lease else {
        return Ok(None); // the poll does not serve the run's job
    };
    if req.max_tasks == 0 || new.available_at > req.now || !req.queues.contains(&new.queue) {
        return Ok(None);
    }
    let backend = c.get_database_backend();
    let queued = run_ops::insert_model(new);
    let mut running = queued.clone();
    let token = attempt_ops::new_token();
    running.status = Set(RunStatus::Running.as_str().to_owned());
    running.attempt = Set(1);
    running.lease_token = Set(Some(token.clone()));
    running.worker_id = Set(Some(req.worker_id.clone()));
    running.updated_at = Set(req.now);
    // `created` and `attempt_started`, as the claim's update would have counted it.
    running.timeline_count = Set(2);

    let mut values: Vec<Value> = vec![
        Value::from(req.namespace.clone()),
        Value::from(RunStatus::Queued.as_str().to_owned()),
        Value::from(req.now),
        Value::from(new.lease_timeout_ms),
        Value::from(job_lease.unwrap_or(req.default_lease_ms)),
        Value::from(new.queue.clone()),
    ];
    let (ns, queued_status, now) = (param(backend, 0), param(backend, 1), param(backend, 2));
    let (run_lease, fallback_lease, queue) =
        (param(backend, 3), param(backend, 4), param(backend, 5));
    let mut columns = Vec::new();
    let mut exprs = Vec::new();
    for column in runs::Column::iter() {
        columns.push(column.as_str().to_owned());
        exprs.push(match column {
            runs::Column::EffectiveLeaseMs => "l.lease".to_owned(),
            runs::Column::LeaseExpiresAt => format!("{now} + l.lease"),
            _ => {
                let value = running.get(column).into_value().ok_or_else(|| {
                    EngineError::Storage(format!("run row: {} not set", column.as_str()))
                })?;
                values.push(value);
                param(backend, values.len() - 1)
            }
        });
    }
    let queues = list(backend, req.queues.clone(), &mut values);
    let jobs = list(
        backend,
        req.jobs.iter().map(|j| j.name.clone()).collect(),
        &mut values,
    );
    // The guard of `guarded_select` for a run not inserted yet: its queue is neither paused
    // nor limited, and nothing else is deliverable to the poll.
    let sql = format!(
        "INSERT INTO runs ({columns}) SELECT {exprs} \
         FROM (SELECT COALESCE({run_lease}, (SELECT q.lease_timeout_ms FROM queues q \
           WHERE q.namespace = {ns} AND q.name = {queue}), {fallback_lease}) AS lease) AS l \
         WHERE NOT EXISTS (SELECT 1 FROM queues q WHERE q.namespace = {ns} \
           AND q.name = {queue} AND (q.paused OR q.concurrency_limit IS NOT NULL \
           OR q.key_concurrency_limit IS NOT NULL OR q.rate_limit IS NOT NULL \
           OR q.rate_period_ms IS NOT NULL)) \
         AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.namespace = {ns} \
           AND o.status = {queued_status} AND {in_queues} AND {in_jobs} \
           AND o.available_at <= {now}) \
         RETURNING effective_lease_ms",
        columns = columns.join(", "),
        exprs = exprs.join(", "),
        in_queues = within(backend, "o.queue", &queues, false),
        in_jobs = within(backend, "o.job", &jobs, false),
    );
    let stmt = super::placeholders::statement(backend, sql, values);
    let Some(row) = c.query_one_raw(stmt).await? else {
        return Ok(None);
    };
    let lease_ms = row
        .try_get::<Option<i64>>("", "effective_lease_ms")?
        .unwrap_or(req.default_lease_ms);
    let deadline = req.now + lease_ms;
    run_ops::created_entry(c, new).await?;
    let mut rows = AttemptRows::default();
    rows.push(req, &new.id, 1, lease_ms, 2, false);
    rows.insert(c).await?;
    running.effective_lease_ms = Set(Some(lease_ms));
    running.lease_expires_at = Set(Some(deadline));
    let as_model = |m: runs::ActiveModel| -> EngineResult<RunRecord> {
        let row = m
            .try_into_model()
            .map_err(|e| EngineError::Storage(format!("run row: {e}")))?;
        Ok(run_from_model(row)?)
    };
    let task = ClaimedTask {
        run: as_model(running)?,
        lease_token: token,
        lease_deadline: deadline,
        lease_ms,
        journal: Vec::new(),
        resumed: false,
    };
    Ok(Some((as_model(queued)?, task)))
}

/// A list of values bound into a statement: PostgreSQL passes it as one `text[]` (one
/// statement text whatever its length, see `pg_rows`), SQLite as one placeholder per
/// value. Use it with [`within`].
fn list(backend: DbBackend, items: Vec<String>, values: &mut Vec<Value>) -> String {
    if backend == DbBackend::Postgres {
        values.push(Value::from(items));
        return format!("${}::text[]", values.len());
    }
    let first = values.len();
    values.extend(items.into_iter().map(Value::from));
    (first..values.len())
        .map(|i| param(backend, i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `x IN (list)`, or `x NOT IN (list)` when `not`, for a [`list`] of `backend`.
fn within(backend: DbBackend, x: &str, list: &str, not: bool) -> String {
    match (backend == DbBackend::Postgres, not) {
        (true, false) => format!("{x} = ANY({list})"),
        (true, true) => format!("{x} <> ALL({list})"),
        (false, false) => format!("{x} IN ({list})"),
        (false, true) => format!("{x} NOT IN ({list})"),
    }
}
