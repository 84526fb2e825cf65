//! Queue-aware claims: which queued runs a poll gets, in which order, within which limits.
//!
//! - **Order**: within a queue, `priority DESC, available_at, id` (higher priority first,
//!   FIFO within a priority). The claim walks the priority levels that have queued runs,
//!   highest first (`MAX(priority)` seeks), and reads each level as an `available_at`
//!   range of the partial index `idx_runs_ready_priority`. One `ORDER BY priority DESC,
//!   available_at` over the whole queue would either sort every deliverable run (through
//!   the `available_at` index) or step over every delayed run of the higher levels
//!   (through the priority index) on each claim; per level, both stay index seeks.
//! - **Fairness**: the poll's queues are taken in rotation (the first queue changes with
//!   every claim), and each gets an equal share of `max_tasks` before any queue gets more,
//!   so a deep queue never starves a shallow one.
//! - **Limits**: a paused queue gives nothing. A queue with a concurrency or rate limit has
//!   its `queues` row locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has a single
//!   writer) before its leases and starts are counted, so claims on the same queue from
//!   several transactions and replicas serialize and never overshoot. A claim that finds
//!   the row locked by another claim skips the queue and reports `contended` instead of
//!   waiting (waiting could deadlock two claims that lock queues in different orders).
//! - **Per-key limits**: runs whose concurrency key is at its limit are excluded in SQL (a
//!   `NOT IN` over the keys' leased counts, from `idx_runs_running_keys`); within one batch
//!   the claim keeps its own per-key tally and selects again when it had to skip.
//! - **Rate limits**: a sliding-window log (`queue_starts`): at most `limit` attempts start
//!   in any window of `period`. A full window reports when it reopens (`retry_at`).

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;

use sea_orm::sea_query::{Expr, Func, LockBehavior, LockType, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use crate::engine::EngineResult;
use crate::engine::model::{ClaimRequest, ClaimedTask, RunStatus};
use crate::engine::queue_model::{ClaimOutcome, QueueConfig};

use super::attempt_ops::{self, AttemptRows};
use super::entities::{queue_starts, queues, runs};
use super::queue_ops::config_from_model;
use super::timeline_ops;

/// `status = 'queued'`. On PostgreSQL written as a literal, not a bound value: the claim's
/// reads then match the partial indexes (`idx_runs_ready`, `idx_runs_ready_priority`) by
/// their text; `replicas` measured less PostgreSQL CPU per run with it (on a loaded
/// machine; docs/performance.md, "Round 4: PostgreSQL `replicas`"). SQLite keeps the bound value
/// (a literal there measured slower in `burndown`, round 3).
fn queued<C: ConnectionTrait>(c: &C) -> Condition {
    if c.get_database_backend() == DbBackend::Postgres {
        Condition::all().add(Expr::cust("runs.status = 'queued'"))
    } else {
        Condition::all().add(runs::Column::Status.eq(RunStatus::Queued.as_str()))
    }
}

/// Selection rounds per queue when per-key limits made a batch skip runs. Each round
/// claims at least one run, so this only bounds the work of one claim.
const MAX_KEY_ROUNDS: usize = 8;

/// True when a queued run of the request's queues and jobs is deliverable at `req.now`
/// (one seek of the partial index `idx_runs_ready`). With none, a claim would take
/// nothing and report no paused or full queue (those are only reported for queues holding
/// queued runs), so the poll can sleep without a write transaction.
pub async fn has_claimable<C: ConnectionTrait>(c: &C, req: &ClaimRequest) -> EngineResult<bool> {
    let found = runs::Entity::find()
        .select_only()
        .column(runs::Column::Id)
        .filter(runs::Column::Namespace.eq(req.namespace.as_str()))
        .filter(queued(c))
        .filter(runs::Column::Queue.is_in(req.queues.iter().map(String::as_str)))
        .filter(runs::Column::Job.is_in(req.jobs.iter().map(|j| j.name.as_str())))
        .filter(runs::Column::AvailableAt.lte(req.now))
        .limit(1)
        .into_tuple::<String>()
        .one(c)
        .await?;
    Ok(found.is_some())
}

/// Claims up to `req.max_tasks` runs from `req.queues`, starting the rotation at
/// `rotation`.
pub async fn claim_queued<C: ConnectionTrait>(
    c: &C,
    req: ClaimRequest,
    rotation: usize,
) -> EngineResult<ClaimOutcome> {
    let mut out = ClaimOutcome::default();
    let mut seen = HashSet::new();
    let distinct: Vec<&str> = req
        .queues
        .iter()
        .map(String::as_str)
        .filter(|q| seen.insert(*q))
        .collect();
    if distinct.is_empty() || req.max_tasks == 0 {
        return Ok(out);
    }
    let first = rotation % distinct.len();
    let order: Vec<&str> = distinct[first..]
        .iter()
        .chain(&distinct[..first])
        .copied()
        .collect();
    let configs: HashMap<String, queues::Model> = queues::Entity::find()
        .filter(queues::Column::Namespace.eq(req.namespace.as_str()))
        .filter(queues::Column::Name.is_in(distinct.iter().copied()))
        .all(c)
        .await?
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    // First pass: an equal share each. Second pass: what is left, to the queues that
    // filled their share (they may have more).
    let share = req.max_tasks.div_ceil(order.len());
    let mut pending = AttemptRows::default();
    let mut filled = Vec::new();
    for q in &order {
        let remaining = req.max_tasks - out.tasks.len();
        if remaining == 0 {
            break;
        }
        let want = share.min(remaining);
        if claim_from(c, &req, q, configs.get(*q), want, &mut out, &mut pending).await? == want {
            filled.push(*q);
        }
    }
    for q in filled {
        let remaining = req.max_tasks - out.tasks.len();
        if remaining == 0 {
            break;
        }
        claim_from(
            c,
            &req,
            q,
            configs.get(q),
            remaining,
            &mut out,
            &mut pending,
        )
        .await?;
    }
    pending.insert(c).await?;
    attempt_ops::load_journals(c, &mut out.tasks).await?;
    Ok(out)
}

/// Claims up to `want` runs from one queue within its limits; returns how many.
async fn claim_from<C: ConnectionTrait>(
    c: &C,
    req: &ClaimRequest,
    queue: &str,
    row: Option<&queues::Model>,
    want: usize,
    out: &mut ClaimOutcome,
    pending: &mut AttemptRows,
) -> EngineResult<usize> {
    let ns = req.namespace.as_str();
    let mut config = row.map(config_from_model).unwrap_or_default();
    if row.is_some_and(|r| r.paused) {
        out.blocked.push(queue.to_owned());
        return Ok(0);
    }
    let mut cap = want as i64;
    let mut rate = None;
    if config.is_limited() {
        // Serialize claims on this queue: whoever holds its row counts and claims alone.
        let locked = queues::Entity::find_by_id((ns.to_owned(), queue.to_owned()))
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .one(c)
            .await?;
        let Some(locked) = locked else {
            out.contended = true;
            return Ok(0);
        };
        if locked.paused {
            out.blocked.push(queue.to_owned());
            return Ok(0);
        }
        config = config_from_model(&locked);
        if let Some(limit) = config.concurrency_limit {
            let room = i64::from(limit) - count_running(c, ns, queue).await?;
            if room <= 0 {
                out.blocked.push(queue.to_owned());
                return Ok(0);
            }
            cap = cap.min(room);
        }
        if let Some(r) = config.rate_limit {
            let window_start = req.now - r.period_ms;
            queue_starts::Entity::delete_many()
                .filter(queue_starts::Column::Namespace.eq(ns))
                .filter(queue_starts::Column::Queue.eq(queue))
                .filter(queue_starts::Column::StartedAt.lte(window_start))
                .exec(c)
                .await?;
            let (used, oldest) = window(c, ns, queue).await?;
            let room = i64::from(r.limit) - used;
            if room <= 0 {
                let reopens = oldest.unwrap_or(req.now) + r.period_ms;
                out.retry_at = Some(out.retry_at.map_or(reopens, |at| at.min(reopens)));
                return Ok(0);
            }
            cap = cap.min(room);
            rate = Some(r);
        }
    }
    let tasks = select_and_start(c, req, queue, &config, cap as usize, pending).await?;
    let got = tasks.len();
    if rate.is_some() && got > 0 {
        queue_starts::Entity::insert_many(tasks.iter().map(|t| queue_starts::ActiveModel {
            namespace: Set(ns.to_owned()),
            queue: Set(queue.to_owned()),
            run_id: Set(t.run.id.clone()),
            attempt: Set(t.run.attempt),
            started_at: Set(req.now),
        }))
        .exec_without_returning(c)
        .await?;
    }
    let concurrency_bound =
        config.concurrency_limit.is_some() || config.key_concurrency_limit.is_some();
    if concurrency_bound && got < want {
        // Possibly held back by a limit: freed capacity must wake this poll.
        out.blocked.push(queue.to_owned());
    }
    out.tasks.extend(tasks);
    Ok(got)
}

/// Attempts in the rate window (the log holds nothing older) and the oldest of them.
async fn window<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    queue: &str,
) -> EngineResult<(i64, Option<i64>)> {
    let row = queue_starts::Entity::find()
        .select_only()
        .column_as(
            Expr::from(Func::count(Expr::col(queue_starts::Column::RunId))),
            "n",
        )
        .column_as(
            Expr::from(Func::min(Expr::col(queue_starts::Column::StartedAt))),
            "m",
        )
        .filter(queue_starts::Column::Namespace.eq(ns))
        .filter(queue_starts::Column::Queue.eq(queue))
        .into_tuple::<(i64, Option<i64>)>()
        .one(c)
        .await?;
    Ok(row.unwrap_or((0, None)))
}

/// Runs of a queue holding a lease now.
async fn count_running<C: ConnectionTrait>(c: &C, ns: &str, queue: &str) -> EngineResult<i64> {
    Ok(runs::Entity::find()
        .select_only()
        .column_as(Expr::from(Func::count(Expr::col(runs::Column::Id))), "n")
        .filter(runs::Column::Namespace.eq(ns))
        .filter(runs::Column::Queue.eq(queue))
        .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
        .into_tuple::<i64>()
        .one(c)
        .await?
        .unwrap_or(0))
}

/// Leased runs per concurrency key, for the keys given.
async fn running_per_key<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    queue: &str,
    keys: Vec<String>,
) -> EngineResult<HashMap<String, i64>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(runs::Entity::find()
        .select_only()
        .column(runs::Column::ConcurrencyKey)
        .column_as(Expr::from(Func::count(Expr::col(runs::Column::Id))), "n")
        .filter(runs::Column::Namespace.eq(ns))
        .filter(runs::Column::Queue.eq(queue))
        .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
        .filter(runs::Column::ConcurrencyKey.is_in(keys))
        .group_by(runs::Column::ConcurrencyKey)
        .into_tuple::<(String, i64)>()
        .all(c)
        .await?
        .into_iter()
        .collect())
}

/// The highest priority among the queue's queued runs, below `below` when given (an
/// index seek: delayed runs included, so a level may turn out to have nothing ready).
async fn next_level<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    queue: &str,
    below: Option<i32>,
) -> EngineResult<Option<i32>> {
    let mut q = runs::Entity::find()
        .select_only()
        .column_as(
            Expr::from(Func::max(Expr::col(runs::Column::Priority))),
            "p",
        )
        .filter(runs::Column::Namespace.eq(ns))
        .filter(runs::Column::Queue.eq(queue))
        .filter(queued(c));
    if let Some(p) = below {
        q = q.filter(runs::Column::Priority.lt(p));
    }
    Ok(q.into_tuple::<Option<i32>>().one(c).await?.flatten())
}

/// Selects deliverable runs of one queue in priority order (skipping rows another
/// transaction holds) and starts an attempt on each, at most `cap`, within the per-key
/// limit.
async fn select_and_start<C: ConnectionTrait>(
    c: &C,
    req: &ClaimRequest,
    queue: &str,
    config: &QueueConfig,
    cap: usize,
    pending: &mut AttemptRows,
) -> EngineResult<Vec<ClaimedTask>> {
    let ns = req.namespace.as_str();
    let mut tasks = Vec::new();
    let mut level = next_level(c, ns, queue, None).await?;
    while let Some(priority) = level {
        start_level(c, req, queue, config, priority, cap, &mut tasks, pending).await?;
        if tasks.len() >= cap {
            break;
        }
        level = next_level(c, ns, queue, Some(priority)).await?;
    }
    Ok(tasks)
}

/// Claims deliverable runs of one priority level, oldest first, until `tasks` holds `cap`.
#[allow(clippy::too_many_arguments)]
async fn start_level<C: ConnectionTrait>(
    c: &C,
    req: &ClaimRequest,
    queue: &str,
    config: &QueueConfig,
    priority: i32,
    cap: usize,
    tasks: &mut Vec<ClaimedTask>,
    pending: &mut AttemptRows,
) -> EngineResult<()> {
    let ns = req.namespace.as_str();
    let job_names: Vec<&str> = req.jobs.iter().map(|j| j.name.as_str()).collect();
    for _ in 0..MAX_KEY_ROUNDS {
        let need = cap - tasks.len();
        if need == 0 {
            break;
        }
        let mut select = runs::Entity::find()
            .filter(runs::Column::Namespace.eq(ns))
            .filter(queued(c))
            .filter(runs::Column::Queue.eq(queue))
            .filter(runs::Column::Priority.eq(priority))
            .filter(runs::Column::Job.is_in(job_names.iter().copied()))
            .filter(runs::Column::AvailableAt.lte(req.now));
        if let Some(key_limit) = config.key_concurrency_limit {
            let saturated = Query::select()
                .column(runs::Column::ConcurrencyKey)
                .from(runs::Entity)
                .and_where(runs::Column::Namespace.eq(ns))
                .and_where(runs::Column::Queue.eq(queue))
                .and_where(runs::Column::Status.eq(RunStatus::Running.as_str()))
                .and_where(runs::Column::ConcurrencyKey.is_not_null())
                .group_by_col(runs::Column::ConcurrencyKey)
                .and_having(sea_orm::sea_query::ExprTrait::gte(
                    Expr::from(Func::count(Expr::col(runs::Column::Id))),
                    key_limit,
                ))
                .to_owned();
            select = select.filter(
                Condition::any()
                    .add(runs::Column::ConcurrencyKey.is_null())
                    .add(runs::Column::ConcurrencyKey.not_in_subquery(saturated)),
            );
        }
        let rows = select
            .order_by_asc(runs::Column::AvailableAt)
            .order_by_asc(runs::Column::Id)
            .limit(need as u64)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .all(c)
            .await?;
        if rows.is_empty() {
            break;
        }
        let mut tally = match config.key_concurrency_limit {
            Some(_) => {
                let keys: HashSet<String> = rows
                    .iter()
                    .filter_map(|r| r.concurrency_key.clone())
                    .collect();
                running_per_key(c, ns, queue, keys.into_iter().collect()).await?
            }
            None => HashMap::new(),
        };
        let mut skipped = 0;
        let mut take = Vec::with_capacity(rows.len());
        for row in rows {
            if let (Some(limit), Some(key)) = (config.key_concurrency_limit, &row.concurrency_key) {
                let n = tally.entry(key.clone()).or_insert(0);
                if *n >= i64::from(limit) {
                    skipped += 1;
                    continue;
                }
                *n += 1;
            }
            take.push(row);
        }
        tasks.extend(
            attempt_ops::start_attempts(c, req, take, config.lease_timeout_ms, pending).await?,
        );
        // Without skips the batch either filled `cap` or drained the level. With skips,
        // select again: the keys now at their limit are excluded by the query itself.
        if skipped == 0 {
            break;
        }
    }
    Ok(())
}

/// Claims for `req` inside its own savepoint of `c`: a failing claim rolls back alone and
/// claims nothing (the poll it was for then claims by itself). `at`: the write it is part
/// of, for the log (`start`, `publish`).
pub(super) async fn claim_in_savepoint(
    c: &DatabaseTransaction,
    req: ClaimRequest,
    rotation: usize,
    at: &str,
) -> EngineResult<ClaimOutcome> {
    in_savepoint(c, at, move |sp| Box::pin(claim_queued(sp, req, rotation))).await
}

/// Runs the claim `f` inside its own savepoint of `c` (see [`claim_in_savepoint`]).
pub(super) async fn in_savepoint<F>(
    c: &DatabaseTransaction,
    at: &str,
    f: F,
) -> EngineResult<ClaimOutcome>
where
    F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, EngineResult<ClaimOutcome>>,
{
    let sp = c.begin().await?;
    let mark = timeline_ops::mark();
    match f(&sp).await {
        Ok(claim) => {
            sp.commit().await?;
            Ok(claim)
        }
        Err(e) => {
            timeline_ops::rollback_to(mark);
            sp.rollback().await?;
            tracing::warn!(error = %e, "claim at {at} failed");
            Ok(ClaimOutcome::default())
        }
    }
}
