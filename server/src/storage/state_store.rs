//! [`StateStore`] for [`SqlStore`]: reads go to the pool, writes through the group-commit
//! writer (a release also notifies other PostgreSQL replicas, in its transaction).

use async_trait::async_trait;

use crate::engine::EngineResult;
use crate::engine::state::{StateCall, StateEntry, StateOp, StateOutcome, StateResult};
use crate::engine::store::{StateStore, Wakeup};

use super::SqlStore;
use super::limits::{LimitHit, Limited};
use super::state_ops;

#[async_trait]
impl StateStore for SqlStore {
    async fn state_get(
        &self,
        namespace: &str,
        key: &str,
        now: i64,
    ) -> EngineResult<Option<StateEntry>> {
        state_ops::get(self.connection(), namespace, key, now).await
    }

    async fn state_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u64,
        now: i64,
    ) -> EngineResult<StateResult> {
        state_ops::list(self.connection(), namespace, prefix, after, limit, now).await
    }

    async fn state_apply(&self, call: StateCall, now: i64) -> EngineResult<StateOutcome> {
        let released = matches!(call.op, StateOp::Release { .. })
            .then(|| (call.namespace.clone(), call.op.key().to_owned()));
        self.write_released(
            move |c| Box::pin(state_ops::apply(c, call, now)),
            move |out: &Limited<StateOutcome>| match (&released, out) {
                (
                    Some((namespace, key)),
                    Ok(StateOutcome {
                        result: Ok(StateResult::Released),
                        replayed: false,
                    }),
                ) => vec![Wakeup::LockReleased {
                    namespace: namespace.clone(),
                    key: key.clone(),
                }],
                _ => Vec::new(),
            },
            |out: &Limited<StateOutcome>| {
                out.as_ref()
                    .err()
                    .map(LimitHit::released)
                    .unwrap_or_default()
            },
        )
        .await?
        .map_err(LimitHit::into_error)
    }

    async fn sweep_state(&self, now: i64, limit: u64) -> EngineResult<u64> {
        // The common case, nothing expired, needs no write transaction.
        if !state_ops::anything_to_sweep(self.connection(), now).await? {
            return Ok(0);
        }
        self.writer()
            .run(move |c| Box::pin(state_ops::sweep(c, now, limit)))
            .await
    }

    async fn next_state_expiry(&self) -> EngineResult<Option<i64>> {
        state_ops::next_expiry(self.connection()).await
    }
}
