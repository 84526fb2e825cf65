//! Transactional bodies of run writes. Each function runs inside one savepoint of a group
//! commit (see `writer`); domain rules (leases, retries) come from the engine.

use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IdenStatic,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement, Value,
};

use crate::engine::lease::{self, Access};
use crate::engine::model::{
    ClaimRequest, ClaimedTask, ExpiredLeases, FailOutcome, Failure, HeartbeatOutcome, LeaseRef,
    NewRun, NewStep, RunRecord, RunStatus, StartOutcome,
};
use crate::engine::retry::{self, RetryDecision};
use crate::engine::{EngineError, EngineResult};

use sea_orm::TryIntoModel;

use super::convert::{failure_to_text, run_from_model, step_from_model};
use super::entities::{attempts, idempotency_keys, runs, steps};
use super::timeline_ops::{self, Entry};
use super::wait_ops;
use super::{child_ops, state_ops};
use crate::engine::obs_model::TimelineKind;

/// Reads a run of a namespace, locking its row on PostgreSQL.
pub async fn load_run<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    run_id: &str,
) -> EngineResult<Option<RunRecord>> {
    let row = runs::Entity::find_by_id(run_id.to_owned())
        .filter(runs::Column::Namespace.eq(namespace))
        .lock(LockType::Update)
        .one(c)
        .await?;
    Ok(row.map(run_from_model).transpose()?)
}

async fn load_leased<C: ConnectionTrait>(
    c: &C,
    lease: &LeaseRef,
    now: i64,
    access: Access,
) -> EngineResult<RunRecord> {
    let run = load_run(c, &lease.namespace, &lease.run_id)
        .await?
        .ok_or_else(|| EngineError::run_not_found(&lease.run_id))?;
    lease::check(&run, &lease.token, now, access)?;
    Ok(run)
}

fn insert_model(new: &NewRun) -> runs::ActiveModel {
    runs::ActiveModel {
        id: Set(new.id.clone()),
        namespace: Set(new.namespace.clone()),
        job: Set(new.job.clone()),
        queue: Set(new.queue.clone()),
        status: Set(RunStatus::Queued.as_str().to_owned()),
        payload: Set(new.payload.clone()),
        result: Set(None),
        failure: Set(None),
        attempt: Set(0),
        max_attempts: Set(new.retry.max_attempts),
        retry_initial_ms: Set(new.retry.initial_interval_ms),
        retry_coefficient: Set(new.retry.backoff_coefficient),
        retry_max_ms: Set(new.retry.maximum_interval_ms),
        lease_timeout_ms: Set(new.lease_timeout_ms),
        effective_lease_ms: Set(None),
        lease_token: Set(None),
        lease_expires_at: Set(None),
        worker_id: Set(None),
        available_at: Set(new.available_at),
        idempotency_key: Set(new.idempotency.as_ref().map(|(k, _)| k.clone())),
        created_at: Set(new.now),
        updated_at: Set(new.now),
        finished_at: Set(None),
        priority: Set(new.priority),
        concurrency_key: Set(new.concurrency_key.clone()),
        parent_run_id: Set(new.parent.as_ref().map(|p| p.run_id.clone())),
        parent_step_id: Set(new.parent.as_ref().map(|p| p.step_id.clone())),
        parent_index: Set(new.parent.as_ref().map(|p| p.index)),
    }
}

/// Inserts a run; the idempotency key's primary key decides races between duplicates.
pub async fn start_run<C: ConnectionTrait>(c: &C, new: NewRun) -> EngineResult<StartOutcome> {
    if let Some((key, expires_at)) = &new.idempotency {
        let inserted = idempotency_keys::Entity::insert(idempotency_keys::ActiveModel {
            namespace: Set(new.namespace.clone()),
            key: Set(key.clone()),
            run_id: Set(new.id.clone()),
            expires_at: Set(*expires_at),
        })
        .on_conflict(
            OnConflict::columns([
                idempotency_keys::Column::Namespace,
                idempotency_keys::Column::Key,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
        if inserted == 0 {
            // The key exists. Take it over only if it expired (a conditional update, so
            // two concurrent starts cannot both take it over).
            let taken = idempotency_keys::Entity::update_many()
                .col_expr(idempotency_keys::Column::RunId, Expr::value(new.id.clone()))
                .col_expr(
                    idempotency_keys::Column::ExpiresAt,
                    Expr::value(*expires_at),
                )
                .filter(idempotency_keys::Column::Namespace.eq(new.namespace.clone()))
                .filter(idempotency_keys::Column::Key.eq(key.clone()))
                .filter(idempotency_keys::Column::ExpiresAt.lte(new.now))
                .exec(c)
                .await?
                .rows_affected;
            if taken == 0 {
                let existing =
                    idempotency_keys::Entity::find_by_id((new.namespace.clone(), key.clone()))
                        .one(c)
                        .await?
                        .ok_or_else(|| {
                            EngineError::Unavailable(
                                "idempotency key changed concurrently; retry".into(),
                            )
                        })?;
                let run = load_run(c, &new.namespace, &existing.run_id)
                    .await?
                    .ok_or_else(|| {
                        EngineError::Storage(format!(
                            "idempotency key points at missing run {}",
                            existing.run_id
                        ))
                    })?;
                return Ok(StartOutcome::Duplicate(run));
            }
        }
    }
    let model = insert_model(&new);
    runs::Entity::insert(model.clone())
        .exec_without_returning(c)
        .await?;
    timeline_ops::add(c, Entry::new(&new.id, TimelineKind::Created, new.now)).await?;
    // The inserted row is exactly `model`: no read back.
    let row = model
        .try_into_model()
        .map_err(|e| EngineError::Storage(format!("run row: {e}")))?;
    Ok(StartOutcome::Created(run_from_model(row)?))
}

fn new_token() -> String {
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
    timeline: Vec<Entry>,
}

impl AttemptRows {
    /// Inserts the collected rows (call inside the claim's transaction).
    pub async fn insert<C: ConnectionTrait>(self, c: &C) -> EngineResult<()> {
        for chunk in self.attempts.chunks(200) {
            attempts::Entity::insert_many(chunk.iter().cloned())
                .exec_without_returning(c)
                .await?;
        }
        timeline_ops::add_many(c, self.timeline).await
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
    let mut updated = std::collections::HashSet::new();
    for chunk in prepared.chunks(200) {
        let stmt = attempts_update(c.get_database_backend(), req, chunk);
        for row in c.query_all_raw(stmt).await? {
            updated.insert(row.try_get::<String>("", "id")?);
        }
    }
    let mut tasks = Vec::with_capacity(updated.len());
    for (mut run, resumed, lease_ms, attempt, token) in prepared {
        if !updated.contains(&run.id) {
            continue;
        }
        let deadline = req.now + lease_ms;
        if resumed {
            wait_ops::reassign_attempt(c, &run.id, attempt, &req.worker_id).await?;
        } else {
            rows.attempts.push(attempts::ActiveModel {
                run_id: Set(run.id.clone()),
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
        rows.timeline.push(
            Entry::new(&run.id, kind, req.now)
                .attempt(attempt)
                .detail(serde_json::json!({ "worker_id": req.worker_id, "lease_ms": lease_ms })),
        );
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
/// runs of one claim still queued, returning the ids it updated.
fn attempts_update(
    backend: DbBackend,
    req: &ClaimRequest,
    chunk: &[(RunRecord, bool, i64, i32, String)],
) -> Statement {
    let mut values: Vec<Value> = vec![
        Value::from(req.worker_id.clone()),
        Value::from(req.now),
        Value::from(RunStatus::Running.as_str().to_owned()),
        Value::from(RunStatus::Queued.as_str().to_owned()),
    ];
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
         updated_at = {now} \
         FROM (VALUES {tuples}) AS v \
         WHERE runs.id = v.column1 AND runs.status = {queued} \
         RETURNING runs.id AS id",
        worker = param(backend, 0),
        now = param(backend, 1),
        status = param(backend, 2),
        queued = param(backend, 3),
        tuples = tuples.join(", "),
    );
    Statement::from_sql_and_values(backend, sql, values)
}

/// The placeholder of the `i`-th (0-based) bound value: numbered on both backends (`$n`,
/// `?n`), so the SQL may name the values in any order.
pub(super) fn param(backend: DbBackend, i: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${}", i + 1),
        _ => format!("?{}", i + 1),
    }
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

/// Extends a lease; a cancelled run answers `cancel_requested` instead of an error.
pub async fn heartbeat<C: ConnectionTrait>(
    c: &C,
    lease: LeaseRef,
    now: i64,
) -> EngineResult<HeartbeatOutcome> {
    let run = load_run(c, &lease.namespace, &lease.run_id)
        .await?
        .ok_or_else(|| EngineError::run_not_found(&lease.run_id))?;
    match lease::check(&run, &lease.token, now, Access::Write) {
        Ok(()) => {}
        Err(EngineError::Cancelled(_)) => {
            return Ok(HeartbeatOutcome {
                lease_deadline: run.lease_expires_at.unwrap_or(now),
                cancel_requested: true,
            });
        }
        Err(e) => return Err(e),
    }
    let deadline = now + run.effective_lease_ms.unwrap_or(30_000);
    runs::Entity::update_many()
        .col_expr(runs::Column::LeaseExpiresAt, Expr::value(deadline))
        .col_expr(runs::Column::UpdatedAt, Expr::value(now))
        .filter(runs::Column::Id.eq(run.id.as_str()))
        .exec(c)
        .await?;
    Ok(HeartbeatOutcome {
        lease_deadline: deadline,
        cancel_requested: false,
    })
}

/// Records a step result once; the primary key rejects a second result for one step.
///
/// One statement in the common case: an `INSERT ... SELECT` from the run's row guarded by
/// the lease (token, `running`, not expired; the row locked on PostgreSQL), with
/// `ON CONFLICT DO NOTHING` and `RETURNING` the attempt for the timeline entry. When it
/// inserts nothing, the full lease check runs (answering the precise error), and a valid
/// lease means the step was recorded before (`true`).
pub async fn complete_step<C: ConnectionTrait>(
    c: &C,
    lease: LeaseRef,
    step: NewStep,
    now: i64,
) -> EngineResult<bool> {
    let size = step.output.as_ref().map_or(0, |o| o.len() as i64);
    let select = Query::select()
        .column(runs::Column::Id)
        .expr(Expr::val(step.step_id.clone()))
        .expr(Expr::val(step.kind.as_str()))
        .column(runs::Column::Attempt)
        .expr(Expr::val(step.output.clone()))
        .expr(Expr::val(step.failure.as_ref().map(failure_to_text)))
        .expr(Expr::val(size))
        .expr(Expr::val(step.started_at))
        .expr(Expr::val(now))
        .from(runs::Entity)
        .and_where(runs::Column::Id.eq(lease.run_id.as_str()))
        .and_where(runs::Column::Namespace.eq(lease.namespace.as_str()))
        .and_where(runs::Column::LeaseToken.eq(lease.token.as_str()))
        .and_where(runs::Column::Status.eq(RunStatus::Running.as_str()))
        .and_where(runs::Column::LeaseExpiresAt.gt(now))
        .lock(LockType::Update)
        .to_owned();
    let insert = Query::insert()
        .into_table(steps::Entity)
        .columns([
            steps::Column::RunId,
            steps::Column::StepId,
            steps::Column::Kind,
            steps::Column::Attempt,
            steps::Column::Output,
            steps::Column::Failure,
            steps::Column::OutputSize,
            steps::Column::StartedAt,
            steps::Column::CompletedAt,
        ])
        .select_from(select)
        .map_err(|e| EngineError::Storage(format!("step insert: {e}")))?
        .on_conflict(
            OnConflict::columns([steps::Column::RunId, steps::Column::StepId])
                .do_nothing()
                .to_owned(),
        )
        .returning_col(steps::Column::Attempt)
        .to_owned();
    let row = c.query_one(&insert).await?;
    let Some(row) = row else {
        // Nothing inserted: a lease that fails the check answers its error; a valid one
        // means the step was already recorded.
        load_leased(c, &lease, now, Access::Write).await?;
        return Ok(true);
    };
    let attempt: i32 = row.try_get("", steps::Column::Attempt.as_str())?;
    timeline_ops::add(c, step_entry(&lease.run_id, attempt, &step, size, now)).await?;
    Ok(false)
}

/// The timeline entry of a recorded step result.
pub(super) fn step_entry(run_id: &str, attempt: i32, step: &NewStep, size: i64, now: i64) -> Entry {
    let duration = step.started_at.map(|s| (now - s).max(0));
    match &step.failure {
        None => Entry::new(run_id, TimelineKind::StepCompleted, now)
            .detail(serde_json::json!({ "duration_ms": duration, "output_size": size })),
        Some(f) => Entry::new(run_id, TimelineKind::StepFailed, now).detail(
            serde_json::json!({ "duration_ms": duration, "error": f.message, "error_type": f.error_type }),
        ),
    }
    .attempt(attempt)
    .step(&step.step_id)
}

async fn end_attempt<C: ConnectionTrait>(
    c: &C,
    run: &RunRecord,
    failure: Option<&Failure>,
    now: i64,
) -> EngineResult<()> {
    attempts::Entity::update_many()
        .col_expr(attempts::Column::EndedAt, Expr::value(now))
        .col_expr(
            attempts::Column::Failure,
            Expr::value(failure.map(failure_to_text)),
        )
        .filter(attempts::Column::RunId.eq(run.id.as_str()))
        .filter(attempts::Column::Number.eq(run.attempt))
        .filter(attempts::Column::EndedAt.is_null())
        .exec(c)
        .await?;
    Ok(())
}

/// Completes a run. A resent completion by the same attempt is accepted unchanged.
///
/// The run's update is guarded by the lease and returns the updated row (`UPDATE ...
/// RETURNING`), so the common case reads nothing first; when it updates nothing, the full
/// lease check answers the precise error or accepts a resent completion.
pub async fn complete_run<C: ConnectionTrait>(
    c: &C,
    lease: LeaseRef,
    result: String,
    now: i64,
) -> EngineResult<RunRecord> {
    let mut update = runs::Entity::update_many()
        .col_expr(
            runs::Column::Status,
            Expr::value(RunStatus::Completed.as_str()),
        )
        .col_expr(runs::Column::Result, Expr::value(result))
        .col_expr(
            runs::Column::LeaseExpiresAt,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(runs::Column::FinishedAt, Expr::value(now))
        .col_expr(runs::Column::UpdatedAt, Expr::value(now))
        .filter(runs::Column::Id.eq(lease.run_id.as_str()))
        .filter(runs::Column::Namespace.eq(lease.namespace.as_str()))
        .filter(runs::Column::LeaseToken.eq(lease.token.as_str()))
        .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
        .filter(runs::Column::LeaseExpiresAt.gt(now))
        .into_query();
    update.returning_all();
    let updated = runs::Entity::find()
        .from_raw_sql(c.get_database_backend().build(&update))
        .one(c)
        .await?;
    let Some(row) = updated else {
        let run = load_leased(c, &lease, now, Access::Complete).await?;
        if run.status == RunStatus::Completed {
            return Ok(run);
        }
        // Unreachable: a running run with a live lease matches the update's guard.
        return Err(EngineError::Unavailable(format!(
            "run {} changed while it was being completed; retry",
            run.id
        )));
    };
    let run = run_from_model(row)?;
    end_attempt(c, &run, None, now).await?;
    state_ops::release_run_locks(c, &run.id, now).await?;
    timeline_ops::add(
        c,
        Entry::new(&run.id, TimelineKind::Completed, now).attempt(run.attempt),
    )
    .await?;
    child_ops::on_final(c, &run, now).await?;
    Ok(run)
}

/// Applies the outcome of a failed attempt: queue again after a delay, or fail the run.
async fn apply_failure<C: ConnectionTrait>(
    c: &C,
    mut run: RunRecord,
    failure: Failure,
    now: i64,
) -> EngineResult<FailOutcome> {
    end_attempt(c, &run, Some(&failure), now).await?;
    let decision = retry::decide(&run, &failure, now);
    let error = serde_json::json!({ "error": failure.message, "error_type": failure.error_type });
    let entry = match decision {
        RetryDecision::RetryAt(at) => {
            Entry::new(&run.id, TimelineKind::RetryScheduled, now).scheduled(at)
        }
        RetryDecision::Fail => Entry::new(&run.id, TimelineKind::Failed, now),
    };
    timeline_ops::add(c, entry.attempt(run.attempt).detail(error)).await?;
    let update = runs::Entity::update_many()
        .col_expr(
            runs::Column::LeaseToken,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            runs::Column::LeaseExpiresAt,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(runs::Column::UpdatedAt, Expr::value(now))
        .filter(runs::Column::Id.eq(run.id.as_str()));
    run.lease_token = None;
    run.lease_expires_at = None;
    run.updated_at = now;
    let next_attempt_at = match decision {
        RetryDecision::RetryAt(at) => {
            update
                .col_expr(
                    runs::Column::Status,
                    Expr::value(RunStatus::Queued.as_str()),
                )
                .col_expr(runs::Column::AvailableAt, Expr::value(at))
                .exec(c)
                .await?;
            run.status = RunStatus::Queued;
            run.available_at = at;
            Some(at)
        }
        RetryDecision::Fail => {
            update
                .col_expr(
                    runs::Column::Status,
                    Expr::value(RunStatus::Failed.as_str()),
                )
                .col_expr(
                    runs::Column::Failure,
                    Expr::value(failure_to_text(&failure)),
                )
                .col_expr(runs::Column::FinishedAt, Expr::value(now))
                .exec(c)
                .await?;
            state_ops::release_run_locks(c, &run.id, now).await?;
            run.status = RunStatus::Failed;
            run.finished_at = Some(now);
            run.failure = Some(failure);
            child_ops::on_final(c, &run, now).await?;
            None
        }
    };
    Ok(FailOutcome {
        run,
        next_attempt_at,
    })
}

/// Records a failed attempt reported by its worker.
pub async fn fail_run<C: ConnectionTrait>(
    c: &C,
    lease: LeaseRef,
    failure: Failure,
    now: i64,
) -> EngineResult<FailOutcome> {
    let run = load_leased(c, &lease, now, Access::Write).await?;
    apply_failure(c, run, failure, now).await
}

/// Cancels a run that is not final yet.
pub async fn cancel_run<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    run_id: &str,
    reason: Failure,
    now: i64,
) -> EngineResult<RunRecord> {
    let mut run = load_run(c, namespace, run_id)
        .await?
        .ok_or_else(|| EngineError::run_not_found(run_id))?;
    if run.status.is_final() {
        return Err(EngineError::FailedPrecondition(format!(
            "run {run_id} is already {}; only queued, running or waiting runs can be cancelled",
            run.status
        )));
    }
    // A waiting run's attempt is open too (suspended), and so is a resumed run's that is
    // queued again after its wait resolved; ending an already ended attempt changes nothing.
    if run.attempt > 0 {
        end_attempt(c, &run, Some(&reason), now).await?;
    }
    if run.status == RunStatus::Waiting {
        wait_ops::delete_for_run(c, run_id).await?;
    }
    runs::Entity::update_many()
        .col_expr(
            runs::Column::Status,
            Expr::value(RunStatus::Cancelled.as_str()),
        )
        .col_expr(runs::Column::Failure, Expr::value(failure_to_text(&reason)))
        .col_expr(
            runs::Column::LeaseExpiresAt,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(runs::Column::FinishedAt, Expr::value(now))
        .col_expr(runs::Column::UpdatedAt, Expr::value(now))
        .filter(runs::Column::Id.eq(run_id))
        .exec(c)
        .await?;
    state_ops::release_run_locks(c, &run.id, now).await?;
    timeline_ops::add(
        c,
        Entry::new(&run.id, TimelineKind::Cancelled, now)
            .attempt(run.attempt)
            .detail(serde_json::json!({ "reason": reason.message })),
    )
    .await?;
    run.status = RunStatus::Cancelled;
    run.failure = Some(reason);
    run.lease_expires_at = None;
    run.finished_at = Some(now);
    run.updated_at = now;
    Ok(run)
}

/// Queues a failed or cancelled run again with a fresh attempt budget.
pub async fn retry_run<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    run_id: &str,
    now: i64,
) -> EngineResult<RunRecord> {
    let mut run = load_run(c, namespace, run_id)
        .await?
        .ok_or_else(|| EngineError::run_not_found(run_id))?;
    if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
        return Err(EngineError::FailedPrecondition(format!(
            "run {run_id} is {}; only failed or cancelled runs can be retried",
            run.status
        )));
    }
    let max_attempts = run.attempt.saturating_add(run.retry.max_attempts);
    runs::Entity::update_many()
        .col_expr(
            runs::Column::Status,
            Expr::value(RunStatus::Queued.as_str()),
        )
        .col_expr(runs::Column::MaxAttempts, Expr::value(max_attempts))
        .col_expr(runs::Column::Failure, Expr::value(Option::<String>::None))
        .col_expr(
            runs::Column::LeaseToken,
            Expr::value(Option::<String>::None),
        )
        .col_expr(runs::Column::AvailableAt, Expr::value(now))
        .col_expr(runs::Column::FinishedAt, Expr::value(Option::<i64>::None))
        .col_expr(runs::Column::UpdatedAt, Expr::value(now))
        .filter(runs::Column::Id.eq(run_id))
        .exec(c)
        .await?;
    timeline_ops::add(
        c,
        Entry::new(run_id, TimelineKind::Retried, now)
            .detail(serde_json::json!({ "max_attempts": max_attempts })),
    )
    .await?;
    run.status = RunStatus::Queued;
    run.max_attempts = max_attempts;
    run.failure = None;
    run.lease_token = None;
    run.available_at = now;
    run.finished_at = None;
    run.updated_at = now;
    Ok(run)
}

/// Ends attempts whose lease expired: each counts as a failed attempt, and the run is
/// queued again at once (the worker died; backoff would only delay recovery) or fails
/// when its attempts are used up.
pub async fn expire_leases<C: ConnectionTrait>(
    c: &C,
    now: i64,
    limit: u64,
) -> EngineResult<ExpiredLeases> {
    let rows = runs::Entity::find()
        .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
        .filter(runs::Column::LeaseExpiresAt.lte(now))
        .order_by_asc(runs::Column::LeaseExpiresAt)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .all(c)
        .await?;
    if !rows.is_empty() {
        crate::failpoint::pause("expire_leases.after_select").await;
    }
    let mut out = ExpiredLeases::default();
    for row in rows {
        let mut run = run_from_model(row)?;
        let failure = Failure::new(
            format!(
                "lease expired: worker {} sent no heartbeat within {} ms",
                run.worker_id.as_deref().unwrap_or("?"),
                run.effective_lease_ms.unwrap_or(0)
            ),
            "LeaseExpired",
        );
        // Redeliver at once rather than after backoff.
        run.retry.initial_interval_ms = 0;
        timeline_ops::add(
            c,
            Entry::new(&run.id, TimelineKind::LeaseExpired, now)
                .attempt(run.attempt)
                .detail(serde_json::json!({ "worker_id": run.worker_id })),
        )
        .await?;
        out.expired.push((
            run.id.clone(),
            run.namespace.clone(),
            run.job.clone(),
            run.queue.clone(),
        ));
        let outcome = apply_failure(c, run, failure, now).await?;
        let r = outcome.run;
        out.released.push((r.namespace.clone(), r.queue.clone()));
        match outcome.next_attempt_at {
            Some(_) => out.requeued.push((r.namespace, r.queue, r.job)),
            None => out.failed.push(r.id),
        }
    }
    Ok(out)
}
