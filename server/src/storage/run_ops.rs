//! Transactional bodies of run writes. Each function runs inside one savepoint of a group
//! commit (see `writer`); domain rules (leases, retries) come from the engine.

use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IdenStatic, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};

use crate::engine::lease::{self, Access};
use crate::engine::model::{
    ExpiredLeases, FailOutcome, Failure, HeartbeatOutcome, LeaseRef, NewRun, NewStep, RunRecord,
    RunStatus, StartOutcome,
};
use crate::engine::retry::{self, RetryDecision};
use crate::engine::{EngineError, EngineResult};

use sea_orm::TryIntoModel;

use super::convert::{failure_to_text, run_from_model};
use super::entities::{attempts, idempotency_keys, runs, steps};
use super::limits::{self, Limited};
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

pub(super) fn insert_model(new: &NewRun) -> runs::ActiveModel {
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
        step_count: Set(0),
        // The `created` entry, inserted with the row.
        timeline_count: Set(1),
    }
}

/// Inserts a run; the idempotency key's primary key decides races between duplicates.
pub async fn start_run<C: ConnectionTrait>(c: &C, new: NewRun) -> EngineResult<StartOutcome> {
    if let Some(existing) = take_idempotency_key(c, &new).await? {
        return Ok(StartOutcome::Duplicate(existing));
    }
    insert_run(c, &new).await.map(StartOutcome::Created)
}

/// Takes the start's idempotency key, if it has one, for the new run: `Some` with the live
/// run holding it (the start is a duplicate), `None` when the run may be inserted (no key,
/// a new key, or an expired one taken over).
pub(super) async fn take_idempotency_key<C: ConnectionTrait>(
    c: &C,
    new: &NewRun,
) -> EngineResult<Option<RunRecord>> {
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
                return Ok(Some(run));
            }
        }
    }
    Ok(None)
}

/// Inserts a new run as queued, with its `created` timeline entry.
pub(super) async fn insert_run<C: ConnectionTrait>(c: &C, new: &NewRun) -> EngineResult<RunRecord> {
    let model = insert_model(new);
    runs::Entity::insert(model.clone())
        .exec_without_returning(c)
        .await?;
    created_entry(c, new).await?;
    // The inserted row is exactly `model`: no read back.
    let row = model
        .try_into_model()
        .map_err(|e| EngineError::Storage(format!("run row: {e}")))?;
    Ok(run_from_model(row)?)
}

/// Buffers the `created` timeline entry of a run just inserted (counted by the row itself:
/// `timeline_count` starts at 1 for it).
pub(super) async fn created_entry<C: ConnectionTrait>(c: &C, new: &NewRun) -> EngineResult<()> {
    timeline_ops::insert(c, vec![Entry::new(&new.id, TimelineKind::Created, new.now)]).await
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
/// `Ok(true)` when this step id was already recorded (a replay, never refused). A new
/// entry past the step limit fails the run instead (see [`limits::check_steps`]).
///
/// Two statements in the common case: an `INSERT ... SELECT` from the run's row guarded by
/// the lease (token, `running`, not expired; the row locked on PostgreSQL) and by the step
/// limit (`step_count` below the cap), with `ON CONFLICT DO NOTHING` and `RETURNING` the
/// attempt for the timeline entry, then the `step_count` increment. When it inserts
/// nothing, the full lease check runs (answering the precise error), then a recorded step
/// is a replay and a run at the cap is failed.
pub async fn complete_step<C: ConnectionTrait>(
    c: &C,
    lease: LeaseRef,
    step: NewStep,
    now: i64,
) -> EngineResult<Limited<bool>> {
    let max = limits::current().max_steps_per_run;
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
        .and_where(runs::Column::StepCount.lt(max))
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
        // Nothing inserted: a lease that fails the check answers its error; with a valid
        // one the step was recorded before (a replay), or the run is at the step limit.
        let run = load_leased(c, &lease, now, Access::Write).await?;
        return complete_step_checked(c, run, step, now).await;
    };
    let attempt: i32 = row.try_get("", steps::Column::Attempt.as_str())?;
    // Counts the journal entry (at once) and its timeline entry.
    timeline_ops::add_counting_step(c, step_entry(&lease.run_id, attempt, &step, size, now))
        .await?;
    Ok(Ok(false))
}

/// [`complete_step`] once the lease is checked (the run row locked): a replay, the step
/// limit, or the plain insert.
async fn complete_step_checked<C: ConnectionTrait>(
    c: &C,
    run: RunRecord,
    step: NewStep,
    now: i64,
) -> EngineResult<Limited<bool>> {
    let key = (run.id.clone(), step.step_id.clone());
    if steps::Entity::find_by_id(key).one(c).await?.is_some() {
        return Ok(Ok(true));
    }
    if let Some(hit) = limits::check_steps(c, &run, now).await? {
        return Ok(Err(hit));
    }
    let size = step.output.as_ref().map_or(0, |o| o.len() as i64);
    let entry = step_entry(&run.id, run.attempt, &step, size, now);
    let inserted = steps::Entity::insert(steps::ActiveModel {
        run_id: Set(run.id.clone()),
        step_id: Set(step.step_id),
        kind: Set(step.kind.as_str().to_owned()),
        attempt: Set(run.attempt),
        output: Set(step.output),
        failure: Set(step.failure.as_ref().map(failure_to_text)),
        output_size: Set(size),
        started_at: Set(step.started_at),
        completed_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([steps::Column::RunId, steps::Column::StepId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    if inserted == 1 {
        timeline_ops::add_counting_step(c, entry).await?;
    }
    Ok(Ok(inserted == 0))
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
        // Counts the `completed` timeline entry (`timeline_ops::add_counted`).
        .col_expr(
            runs::Column::TimelineCount,
            sea_orm::sea_query::ExprTrait::add(Expr::col(runs::Column::TimelineCount), 1),
        )
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
    let timeline_pos = row.timeline_count;
    let run = run_from_model(row)?;
    end_attempt(c, &run, None, now).await?;
    state_ops::release_run_locks(c, &run.id, now).await?;
    timeline_ops::add_counted(
        c,
        vec![(
            Entry::new(&run.id, TimelineKind::Completed, now).attempt(run.attempt),
            timeline_pos,
        )],
    )
    .await?;
    child_ops::on_final(c, &run, now).await?;
    Ok(run)
}

/// Applies the outcome of a failed attempt: queue again after a delay, or fail the run.
pub(super) async fn apply_failure<C: ConnectionTrait>(
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
