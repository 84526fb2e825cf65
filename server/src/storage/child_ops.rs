//! Transactional bodies of child runs (see docs/children.md): starting the children of a
//! child wait (once per parent run and step id), resolving the parent's wait when the last
//! of its children reaches a final status, and cancelling a run together with its
//! non-final descendants.
//!
//! Lock order: a child's final write holds the child's row and then locks the parent's; the
//! cancel cascade therefore locks the descendants first (deepest level first, by id within
//! a level) and the cancelled run last, so the two never wait on each other in a cycle.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::engine::event_model::{ResumedRun, children_output};
use crate::engine::model::{Failure, NewRun, RunRecord, RunStatus, StartOutcome, StepKind};
use crate::engine::obs_model::TimelineKind;
use crate::engine::store::Wakeup;
use crate::engine::{EngineError, EngineResult};

use super::convert::run_from_model;
use super::entities::{runs, waits};
use super::timeline_ops::{self, Entry as Tl};
use super::{notify, queue_ops, run_ops, wait_ops};

/// The children a parent's wait `step_id` started, in the order they were given.
pub async fn children_of<C: ConnectionTrait>(
    c: &C,
    parent_run_id: &str,
    step_id: &str,
) -> EngineResult<Vec<RunRecord>> {
    runs::Entity::find()
        .filter(runs::Column::ParentRunId.eq(parent_run_id))
        .filter(runs::Column::ParentStepId.eq(step_id))
        .order_by_asc(runs::Column::ParentIndex)
        .all(c)
        .await?
        .into_iter()
        .map(|m| run_from_model(m).map_err(EngineError::from))
        .collect()
}

/// Starts the children of `parent`'s wait `step_id`, or returns the ones an earlier request
/// (a resend, or a replay after a retry) started: `(child, created by this call)`.
pub async fn start_or_find<C: ConnectionTrait>(
    c: &C,
    parent: &RunRecord,
    step_id: &str,
    runs: Vec<NewRun>,
    now: i64,
) -> EngineResult<Vec<(RunRecord, bool)>> {
    let existing = children_of(c, &parent.id, step_id).await?;
    if !existing.is_empty() {
        if existing.len() != runs.len() {
            return Err(EngineError::invalid(format!(
                "step_id {step_id:?} of run {} already started {} child run(s), and now asks \
                 for {}; the handler must ask for the same children when it is replayed",
                parent.id,
                existing.len(),
                runs.len()
            )));
        }
        return Ok(existing.into_iter().map(|r| (r, false)).collect());
    }
    let mut out = Vec::with_capacity(runs.len());
    for new in runs {
        let (ns, queue) = (new.namespace.clone(), new.queue.clone());
        match run_ops::start_run(c, new).await? {
            StartOutcome::Created(r) | StartOutcome::Duplicate(r) => out.push((r, true)),
        }
        queue_ops::ensure(c, &ns, &queue, now).await?;
    }
    Ok(out)
}

/// Called in the transaction that turns `run` final: when `run` is a child and its
/// parent waits on it, and every sibling of that wait is final too, journals the children's
/// outcomes into the parent, deletes the wait and queues the parent.
pub async fn on_final<C: ConnectionTrait>(
    c: &C,
    run: &RunRecord,
    now: i64,
) -> EngineResult<Option<ResumedRun>> {
    let (Some(parent_id), Some(step_id)) = (&run.parent_run_id, &run.parent_step_id) else {
        return Ok(None);
    };
    let Some(parent) = run_ops::load_run(c, &run.namespace, parent_id).await? else {
        return Ok(None);
    };
    if parent.status != RunStatus::Waiting {
        return Ok(None);
    }
    let Some(wait) = waits::Entity::find_by_id(parent_id.clone()).one(c).await? else {
        return Ok(None);
    };
    if wait.kind != StepKind::Child.as_str() || &wait.step_id != step_id {
        return Ok(None);
    }
    let children = children_of(c, parent_id, step_id).await?;
    if !children.iter().all(|r| r.status.is_final()) {
        return Ok(None);
    }
    let output = children_output(&children);
    timeline_ops::add(
        c,
        Tl::new(&parent.id, TimelineKind::StepCompleted, now)
            .attempt(parent.attempt)
            .step(step_id)
            .detail(serde_json::json!({ "children": children.len() })),
    )
    .await?;
    let resumed = wait_ops::resume(c, vec![(parent, wait, output, None)], now).await?;
    let Some(r) = resumed.into_iter().next() else {
        return Ok(None);
    };
    if c.get_database_backend() == DbBackend::Postgres {
        // No origin: this replica hears it too, which is harmless.
        let w = Wakeup::Ready {
            namespace: r.namespace.clone(),
            queue: r.queue.clone(),
            job: r.job.clone(),
        };
        notify::publish(c, "", &w).await?;
    }
    Ok(Some(r))
}

/// Ids of the non-final children of the given runs (one level).
async fn live_children<C: ConnectionTrait>(c: &C, parents: &[String]) -> EngineResult<Vec<String>> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for chunk in parents.chunks(300) {
        let rows: Vec<String> = runs::Entity::find()
            .select_only()
            .column(runs::Column::Id)
            .filter(runs::Column::ParentRunId.is_in(chunk.iter().map(String::as_str)))
            .filter(runs::Column::Status.is_in([
                RunStatus::Queued.as_str(),
                RunStatus::Running.as_str(),
                RunStatus::Waiting.as_str(),
            ]))
            .into_tuple::<String>()
            .all(c)
            .await?;
        ids.extend(rows);
    }
    ids.sort();
    Ok(ids)
}

/// The non-final descendants of `run_id`, level by level (children first).
async fn live_descendants<C: ConnectionTrait>(
    c: &C,
    run_id: &str,
) -> EngineResult<Vec<Vec<String>>> {
    let mut levels = Vec::new();
    let mut frontier = vec![run_id.to_owned()];
    // Bounded depth: a cycle is impossible (a child is always newer than its parent), but
    // stay defensive against corrupt rows.
    for _ in 0..64 {
        let next = live_children(c, &frontier).await?;
        if next.is_empty() {
            break;
        }
        levels.push(next.clone());
        frontier = next;
    }
    Ok(levels)
}

/// Cancels a run and, in the same transaction, its non-final descendants (recursively).
/// Returns the cancelled run and the descendants cancelled with it. When the cancelled run
/// is itself a child whose parent waits on it, the parent's wait may resolve.
pub async fn cancel_tree<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    run_id: &str,
    reason: Failure,
    now: i64,
) -> EngineResult<(RunRecord, Vec<RunRecord>)> {
    // Lock the descendants first, deepest level first (see the module docs).
    let levels = live_descendants(c, run_id).await?;
    for level in levels.iter().rev() {
        for id in level {
            run_ops::load_run(c, namespace, id).await?;
        }
    }
    let run = run_ops::cancel_run(c, namespace, run_id, reason, now).await?;
    on_final(c, &run, now).await?;
    // Read again under the lock: a child started after the first read is cancelled too.
    let mut cancelled = Vec::new();
    for level in live_descendants(c, run_id).await? {
        for id in level {
            let Some(child) = run_ops::load_run(c, namespace, &id).await? else {
                continue;
            };
            if child.status.is_final() {
                continue;
            }
            let why = Failure::new(
                format!(
                    "parent run {} was cancelled",
                    child.parent_run_id.as_deref().unwrap_or(run_id)
                ),
                "ParentCancelled",
            );
            cancelled.push(run_ops::cancel_run(c, namespace, &id, why, now).await?);
        }
    }
    Ok((run, cancelled))
}
