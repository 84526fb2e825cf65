//! The history limits in force for the write being run. Each writer task runs in a
//! [`scope`] and puts its writer's limits in force at the start of every batch ([`set`]),
//! so the transactional bodies that add journal or timeline rows read them with
//! [`current`] without taking them as arguments. Also the step-limit check
//! every write that adds a journal entry makes ([`check_steps`]) and the counter it keeps
//! ([`count_steps`]).

use std::cell::Cell;
use std::future::Future;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::engine::history::{self, HistoryLimits};
use crate::engine::model::RunRecord;
use crate::engine::{EngineError, EngineResult};

use super::entities::runs;
use super::run_ops;

tokio::task_local! {
    static LIMITS: Cell<HistoryLimits>;
}

/// Runs `f` with `limits` in force (until a [`set`] inside it).
pub async fn scope<F: Future>(limits: HistoryLimits, f: F) -> F::Output {
    LIMITS.scope(Cell::new(limits), f).await
}

/// Puts `limits` in force in the current [`scope`] (a writer task sets them per batch);
/// no effect outside one.
pub fn set(limits: HistoryLimits) {
    let _ = LIMITS.try_with(|l| l.set(limits));
}

/// The limits in force (the defaults outside a [`scope`]).
pub fn current() -> HistoryLimits {
    LIMITS.try_with(Cell::get).unwrap_or_default()
}

/// A journal entry refused by the step limit: the run was failed (`StepLimitExceeded`) in
/// the same transaction, which commits; the caller then answers [`LimitHit::into_error`].
#[derive(Debug)]
pub struct LimitHit {
    /// The run, failed.
    pub run: RunRecord,
    /// The limit it reached.
    pub max: i64,
}

/// The outcome of a write that may add a journal entry.
pub type Limited<T> = Result<T, LimitHit>;

impl LimitHit {
    /// The error the request answers (`RESOURCE_EXHAUSTED`, reason `STEP_LIMIT`).
    pub fn into_error(self) -> EngineError {
        EngineError::StepLimit(history::step_limit_message(&self.run.id, self.max))
    }

    /// `(namespace, queue)` whose capacity the failed run released.
    pub fn released(&self) -> Vec<(String, String)> {
        vec![(self.run.namespace.clone(), self.run.queue.clone())]
    }
}

/// Checks the step limit before a new journal entry of `run` (leased, row locked): `None`
/// when it fits, else fails the run non-retryably and says so.
pub async fn check_steps<C: ConnectionTrait>(
    c: &C,
    run: &RunRecord,
    now: i64,
) -> EngineResult<Option<LimitHit>> {
    let max = current().max_steps_per_run;
    if run.step_count < max {
        return Ok(None);
    }
    let failure = history::step_limit_failure(&run.id, max);
    let out = run_ops::apply_failure(c, run.clone(), failure, now).await?;
    Ok(Some(LimitHit { run: out.run, max }))
}

/// Counts `n` more journal entries of a run (call in the transaction that adds them).
pub async fn count_steps<C: ConnectionTrait>(c: &C, run_id: &str, n: i64) -> EngineResult<()> {
    runs::Entity::update_many()
        .col_expr(
            runs::Column::StepCount,
            Expr::col(runs::Column::StepCount).add(n),
        )
        .filter(runs::Column::Id.eq(run_id))
        .exec(c)
        .await?;
    Ok(())
}
