//! Transactional bodies of durable waits: `SuspendRun` (resolve at once or store the wait
//! and release the lease), resolving waits (by a published event or by the timer), and the
//! hooks other run writes call (claiming a resumed run, cancelling a waiting run).
//!
//! Invariant: a `waits` row exists exactly while its run is `waiting`. Everyone who ends a
//! wait locks the run row first (in run id order), checks that the run is still waiting on
//! that very wait, then journals the result, deletes the wait and queues the run, all in one
//! transaction. A suspension keeps the attempt open, so the resuming delivery continues the
//! same attempt number (see [`resuming`]).

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Expr, Func, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::engine::event_model::{
    EventRecord, ResumedRun, SLEEP_OUTPUT, SuspendOutcome, TIMED_OUT_OUTPUT, WaitRecord, WaitSpec,
    children_output, event_output,
};
use crate::engine::lease::{self, Access};
use crate::engine::model::{LeaseRef, RunRecord, RunStatus, StepKind, StepRecord};
use crate::engine::{EngineError, EngineResult};

use super::convert::{run_from_model, step_from_model};
use super::entities::{attempts, runs, steps, waits};
use super::error::StorageError;
use super::limits::{self, Limited};
use super::run_ops::load_run;
use super::timeline_ops::{self, Entry as Tl};
use super::{child_ops, combined_ops, event_ops};
use crate::engine::obs_model::TimelineKind;

/// Rows handled per statement when resolving many waits at once.
const CHUNK: usize = 300;

/// Decodes a `waits` row.
pub fn wait_from_model(m: waits::Model) -> Result<WaitRecord, StorageError> {
    let kind = StepKind::parse(&m.kind)
        .ok_or_else(|| StorageError::Corrupt(format!("wait kind {:?}", m.kind)))?;
    Ok(WaitRecord {
        run_id: m.run_id,
        namespace: m.namespace,
        step_id: m.step_id,
        kind,
        event_name: m.event_name,
        correlation_key: m.correlation_key,
        wake_at: m.wake_at,
        run_created_at: m.run_created_at,
        created_at: m.created_at,
    })
}

/// The wait of a run, if it is waiting.
pub async fn get<C: ConnectionTrait>(c: &C, run_id: &str) -> EngineResult<Option<WaitRecord>> {
    Ok(waits::Entity::find_by_id(run_id.to_owned())
        .one(c)
        .await?
        .map(wait_from_model)
        .transpose()?)
}

/// The earliest sleep end or event-wait timeout, due or not.
pub async fn next_wake<C: ConnectionTrait>(c: &C) -> EngineResult<Option<i64>> {
    Ok(waits::Entity::find()
        .select_only()
        .column_as(Expr::from(Func::min(Expr::col(waits::Column::WakeAt))), "m")
        .filter(waits::Column::WakeAt.is_not_null())
        .into_tuple::<Option<i64>>()
        .one(c)
        .await?
        .flatten())
}

/// A journal entry to insert for an ended wait.
struct Entry {
    run_id: String,
    step_id: String,
    kind: StepKind,
    attempt: i32,
    output: String,
    started_at: i64,
}

async fn insert_entries<C: ConnectionTrait>(
    c: &C,
    entries: &[Entry],
    now: i64,
) -> EngineResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    steps::Entity::insert_many(entries.iter().map(|e| steps::ActiveModel {
        run_id: Set(e.run_id.clone()),
        step_id: Set(e.step_id.clone()),
        kind: Set(e.kind.as_str().to_owned()),
        attempt: Set(e.attempt),
        output: Set(Some(e.output.clone())),
        failure: Set(None),
        output_size: Set(e.output.len() as i64),
        started_at: Set(Some(e.started_at)),
        completed_at: Set(now),
    }))
    .on_conflict(
        OnConflict::columns([steps::Column::RunId, steps::Column::StepId])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Reads a run and checks that `lease` holds it (locking the row on PostgreSQL).
async fn load_leased<C: ConnectionTrait>(
    c: &C,
    lease: &LeaseRef,
    now: i64,
) -> EngineResult<RunRecord> {
    let run = load_run(c, &lease.namespace, &lease.run_id)
        .await?
        .ok_or_else(|| EngineError::run_not_found(&lease.run_id))?;
    lease::check(&run, &lease.token, now, Access::Write)?;
    Ok(run)
}

/// Journals a wait that resolved at once and answers `Satisfied`.
async fn satisfied<C: ConnectionTrait>(
    c: &C,
    run: &RunRecord,
    step_id: String,
    kind: StepKind,
    output: String,
    now: i64,
) -> EngineResult<SuspendOutcome> {
    let entry = Entry {
        run_id: run.id.clone(),
        step_id: step_id.clone(),
        kind,
        attempt: run.attempt,
        output,
        started_at: now,
    };
    insert_entries(c, std::slice::from_ref(&entry), now).await?;
    let tl = match kind {
        StepKind::Sleep => TimelineKind::TimerFired,
        StepKind::Child => TimelineKind::StepCompleted,
        _ if entry.output == TIMED_OUT_OUTPUT => TimelineKind::WaitTimedOut,
        _ => TimelineKind::EventMatched,
    };
    timeline_ops::add_counting_step(
        c,
        Tl::new(&run.id, tl, now)
            .attempt(run.attempt)
            .step(&entry.step_id),
    )
    .await?;
    Ok(SuspendOutcome::Satisfied(StepRecord {
        step_id,
        kind,
        attempt: run.attempt,
        output_size: entry.output.len() as i64,
        output: Some(entry.output),
        failure: None,
        started_at: Some(now),
        completed_at: now,
    }))
}

/// Starts a sleep or an event wait under a lease (see `EventStore::suspend_run`).
pub async fn suspend<C: ConnectionTrait>(
    c: &C,
    lease: LeaseRef,
    step_id: String,
    spec: WaitSpec,
    now: i64,
) -> EngineResult<Limited<SuspendOutcome>> {
    if let WaitSpec::Event {
        name,
        correlation_key,
        ..
    } = &spec
    {
        // Before the run row: publishes take this lock first too (one lock order).
        event_ops::lock_match_key(c, &lease.namespace, name, correlation_key).await?;
    }
    if let WaitSpec::Combined { items, .. } = &spec {
        combined_ops::lock_keys(c, &lease.namespace, items).await?;
    }
    let run = load_leased(c, &lease, now).await?;
    // A resent request for a wait that already resolved gets the recorded result.
    if let Some(row) = steps::Entity::find_by_id((run.id.clone(), step_id.clone()))
        .one(c)
        .await?
    {
        let recorded = step_from_model(row)?;
        if recorded.kind != spec.kind() {
            return Err(EngineError::invalid(format!(
                "step_id {step_id:?} is already recorded as a {} entry in run {}, not a {}; \
                 steps and waits share one id space",
                recorded.kind.as_str(),
                run.id,
                spec.kind().as_str()
            )));
        }
        return Ok(Ok(SuspendOutcome::Satisfied(recorded)));
    }
    // The wait's journal entry is counted now (reserved while the wait is pending).
    if let Some(hit) = limits::check_steps(c, &run, now).await? {
        return Ok(Err(hit));
    }
    let mut children = Vec::new();
    let mut wake_at = spec.wake_at();
    let (event_name, correlation_key) = match &spec {
        WaitSpec::Combined {
            mode,
            items,
            timeout_at,
        } => {
            match combined_ops::start(c, &run, &step_id, *mode, items, *timeout_at, now).await? {
                combined_ops::Started::Resolved(output) => {
                    return satisfied(c, &run, step_id, spec.kind(), output, now)
                        .await
                        .map(Ok);
                }
                combined_ops::Started::Pending(at) => wake_at = at,
            }
            (None, None)
        }
        WaitSpec::Children { runs } => {
            children = child_ops::start_or_find(c, &run, &step_id, runs.clone(), now).await?;
            let all: Vec<RunRecord> = children.iter().map(|(r, _)| r.clone()).collect();
            if all.iter().all(|r| r.status.is_final()) {
                let output = children_output(&all);
                return satisfied(c, &run, step_id, StepKind::Child, output, now)
                    .await
                    .map(Ok);
            }
            (None, None)
        }
        WaitSpec::Sleep { until } => {
            if *until <= now {
                return satisfied(c, &run, step_id, StepKind::Sleep, SLEEP_OUTPUT.into(), now)
                    .await
                    .map(Ok);
            }
            (None, None)
        }
        WaitSpec::Event {
            name,
            correlation_key,
            timeout_at,
        } => {
            let found = event_ops::first_unconsumed(
                c,
                &run.namespace,
                name,
                correlation_key,
                &run.id,
                run.created_at,
            )
            .await?;
            if let Some(event) = found {
                event_ops::record_consumptions(
                    c,
                    vec![(run.id.clone(), event.seq, step_id.clone())],
                    now,
                )
                .await?;
                let output = event_output(&event);
                return satisfied(c, &run, step_id, StepKind::Event, output, now)
                    .await
                    .map(Ok);
            }
            if *timeout_at <= now {
                let output = TIMED_OUT_OUTPUT.to_owned();
                return satisfied(c, &run, step_id, StepKind::Event, output, now)
                    .await
                    .map(Ok);
            }
            (Some(name.clone()), Some(correlation_key.clone()))
        }
    };
    timeline_ops::add_counting_step(
        c,
        Tl::new(&run.id, TimelineKind::Waiting, now)
            .attempt(run.attempt)
            .step(&step_id)
            .scheduled_opt(wake_at)
            .detail(serde_json::json!({
                "wait": spec.kind().as_str(),
                "event_name": event_name,
                "children": children.len(),
            })),
    )
    .await?;
    waits::Entity::insert(waits::ActiveModel {
        run_id: Set(run.id.clone()),
        namespace: Set(run.namespace.clone()),
        step_id: Set(step_id),
        kind: Set(spec.kind().as_str().to_owned()),
        event_name: Set(event_name),
        correlation_key: Set(correlation_key),
        wake_at: Set(wake_at),
        run_created_at: Set(run.created_at),
        created_at: Set(now),
    })
    .exec_without_returning(c)
    .await?;
    // The lease is released; the attempt stays open (it resumes with a new lease).
    runs::Entity::update_many()
        .col_expr(
            runs::Column::Status,
            Expr::value(RunStatus::Waiting.as_str()),
        )
        .col_expr(
            runs::Column::LeaseToken,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            runs::Column::LeaseExpiresAt,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(runs::Column::UpdatedAt, Expr::value(now))
        .filter(runs::Column::Id.eq(run.id.as_str()))
        .exec(c)
        .await?;
    Ok(Ok(SuspendOutcome::Suspended {
        wake_at,
        queue: run.queue.clone(),
        children,
    }))
}

/// Locks the runs among `ids` that are still waiting (in id order) and returns them with
/// their current wait rows.
pub(super) async fn lock_waiting<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> EngineResult<Vec<(RunRecord, waits::Model)>> {
    let rows = runs::Entity::find()
        .filter(runs::Column::Id.is_in(ids.iter().map(String::as_str)))
        .filter(runs::Column::Status.eq(RunStatus::Waiting.as_str()))
        .order_by_asc(runs::Column::Id)
        .lock(sea_orm::sea_query::LockType::Update)
        .all(c)
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let locked: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut current: HashMap<String, waits::Model> = waits::Entity::find()
        .filter(waits::Column::RunId.is_in(locked))
        .all(c)
        .await?
        .into_iter()
        .map(|w| (w.run_id.clone(), w))
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(wait) = current.remove(&row.id) {
            out.push((run_from_model(row)?, wait));
        }
    }
    Ok(out)
}

/// Ends the given waits: journals each result, records consumed events, deletes the waits
/// and queues the runs (deliverable at once). `items` are locked, waiting runs.
pub(super) async fn resume<C: ConnectionTrait>(
    c: &C,
    items: Vec<(RunRecord, waits::Model, String, Option<i64>)>,
    now: i64,
) -> EngineResult<Vec<ResumedRun>> {
    let mut resumed = Vec::with_capacity(items.len());
    let mut entries = Vec::with_capacity(items.len());
    let mut consumed = Vec::new();
    for (run, wait, output, event_seq) in items {
        let kind = StepKind::parse(&wait.kind)
            .ok_or_else(|| StorageError::Corrupt(format!("wait kind {:?}", wait.kind)))?;
        if let Some(seq) = event_seq {
            consumed.push((run.id.clone(), seq, wait.step_id.clone()));
        }
        entries.push(Entry {
            run_id: run.id.clone(),
            step_id: wait.step_id,
            kind,
            attempt: run.attempt,
            output,
            started_at: wait.created_at,
        });
        resumed.push(ResumedRun {
            run_id: run.id,
            namespace: run.namespace,
            queue: run.queue,
            job: run.job,
        });
    }
    let combined: Vec<&str> = entries
        .iter()
        .filter(|e| matches!(e.kind, StepKind::Any | StepKind::All))
        .map(|e| e.run_id.as_str())
        .collect();
    for chunk in combined.chunks(CHUNK) {
        combined_ops::delete_items(c, chunk).await?;
    }
    for chunk in entries.chunks(CHUNK) {
        insert_entries(c, chunk, now).await?;
    }
    for chunk in consumed.chunks(CHUNK) {
        event_ops::record_consumptions(c, chunk.to_vec(), now).await?;
    }
    for chunk in resumed.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|r| r.run_id.as_str()).collect();
        waits::Entity::delete_many()
            .filter(waits::Column::RunId.is_in(ids.clone()))
            .exec(c)
            .await?;
        runs::Entity::update_many()
            .col_expr(
                runs::Column::Status,
                Expr::value(RunStatus::Queued.as_str()),
            )
            .col_expr(runs::Column::AvailableAt, Expr::value(now))
            .col_expr(runs::Column::UpdatedAt, Expr::value(now))
            .filter(runs::Column::Id.is_in(ids))
            .filter(runs::Column::Status.eq(RunStatus::Waiting.as_str()))
            .exec(c)
            .await?;
    }
    Ok(resumed)
}

/// Resolves every wait matching a just-stored `event` (same namespace, name and key, run
/// created at or before the event): the runs get the event journaled and are queued.
/// Returns them oldest wait first.
pub async fn resolve_event_waits<C: ConnectionTrait>(
    c: &C,
    event: &EventRecord,
    output: &str,
    now: i64,
) -> EngineResult<Vec<ResumedRun>> {
    let matches = |w: &waits::Model| {
        w.kind == StepKind::Event.as_str()
            && w.namespace == event.namespace
            && w.event_name.as_deref() == Some(event.name.as_str())
            && w.correlation_key.as_deref() == Some(event.correlation_key.as_str())
            && w.run_created_at <= event.published_at
    };
    let mut ids: Vec<String> = waits::Entity::find()
        .select_only()
        .column(waits::Column::RunId)
        .filter(waits::Column::Namespace.eq(event.namespace.as_str()))
        .filter(waits::Column::Kind.eq(StepKind::Event.as_str()))
        .filter(waits::Column::EventName.eq(event.name.as_str()))
        .filter(waits::Column::CorrelationKey.eq(event.correlation_key.as_str()))
        .filter(waits::Column::RunCreatedAt.lte(event.published_at))
        .into_tuple::<String>()
        .all(c)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    ids.sort();
    let mut items = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        for (run, wait) in lock_waiting(c, chunk).await? {
            if matches(&wait) {
                items.push((run, wait, output.to_owned(), Some(event.seq)));
            }
        }
    }
    // Oldest wait first, for the answer's list of resumed runs.
    items.sort_by(|a, b| (a.1.created_at, &a.0.id).cmp(&(b.1.created_at, &b.0.id)));
    let timeline = items
        .iter()
        .map(|(run, wait, _, _)| {
            Tl::new(&run.id, TimelineKind::EventMatched, now)
                .attempt(run.attempt)
                .step(&wait.step_id)
                .detail(serde_json::json!({ "event_id": event.id, "event_name": event.name }))
        })
        .collect();
    timeline_ops::add_many(c, timeline).await?;
    resume(c, items, now).await
}

/// Resolves up to `limit` waits due at or before `now`: a sleep journals `null`, an event
/// wait journals its timed-out result.
pub async fn resolve_due<C: ConnectionTrait>(
    c: &C,
    now: i64,
    limit: u64,
) -> EngineResult<Vec<ResumedRun>> {
    let mut ids: Vec<String> = waits::Entity::find()
        .select_only()
        .column(waits::Column::RunId)
        .filter(waits::Column::WakeAt.lte(now))
        .order_by_asc(waits::Column::WakeAt)
        .limit(limit)
        .into_tuple::<String>()
        .all(c)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    ids.sort();
    let mut items = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        for (run, wait) in lock_waiting(c, chunk).await? {
            if combined_ops::mode_of(&wait.kind).is_some() {
                if wait.wake_at.is_some_and(|at| at <= now)
                    && let Some(output) = combined_ops::on_timer(c, &wait, now).await?
                {
                    items.push((run, wait, output, None));
                }
                continue;
            }
            if wait.wake_at.is_some_and(|at| at <= now) {
                let output = if wait.kind == StepKind::Sleep.as_str() {
                    SLEEP_OUTPUT
                } else {
                    TIMED_OUT_OUTPUT
                };
                items.push((run, wait, output.to_owned(), None));
            }
        }
    }
    let timeline = items
        .iter()
        .map(|(run, wait, output, _)| {
            let kind = if output == SLEEP_OUTPUT || output.starts_with(r#"{"timedOut":false"#) {
                TimelineKind::TimerFired
            } else {
                TimelineKind::WaitTimedOut
            };
            Tl::new(&run.id, kind, now)
                .attempt(run.attempt)
                .step(&wait.step_id)
        })
        .collect();
    timeline_ops::add_many(c, timeline).await?;
    resume(c, items, now).await
}

/// Of the runs being claimed, those whose current attempt is still open: they were
/// suspended and are now resumed, so the claim continues that attempt instead of starting
/// a new one.
pub async fn resuming<C: ConnectionTrait>(
    c: &C,
    run_ids: &[String],
) -> EngineResult<HashSet<String>> {
    if run_ids.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(attempts::Entity::find()
        .select_only()
        .column(attempts::Column::RunId)
        .filter(attempts::Column::RunId.is_in(run_ids.iter().map(String::as_str)))
        .filter(attempts::Column::EndedAt.is_null())
        .into_tuple::<String>()
        .all(c)
        .await?
        .into_iter()
        .collect())
}

/// Hands a resumed attempt to the worker that claimed it.
pub async fn reassign_attempt<C: ConnectionTrait>(
    c: &C,
    run_id: &str,
    number: i32,
    worker_id: &str,
) -> EngineResult<()> {
    attempts::Entity::update_many()
        .col_expr(attempts::Column::WorkerId, Expr::value(worker_id))
        .filter(attempts::Column::RunId.eq(run_id))
        .filter(attempts::Column::Number.eq(number))
        .exec(c)
        .await?;
    Ok(())
}

/// Deletes a run's wait (the run is being cancelled; its row is locked).
pub async fn delete_for_run<C: ConnectionTrait>(c: &C, run_id: &str) -> EngineResult<()> {
    waits::Entity::delete_by_id(run_id.to_owned())
        .exec(c)
        .await?;
    combined_ops::delete_items(c, &[run_id]).await?;
    Ok(())
}
