//! [`ObsStore`] for [`SqlStore`]: log appends (through the group-commit writer), queue
//! depths and commit statistics.

use async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::engine::EngineResult;
use crate::engine::model::{LeaseRef, RunStatus};
use crate::engine::obs_model::{AppendOutcome, CommitStats, NewLog};
use crate::engine::store::ObsStore;

use super::entities::runs;
use super::sql::SqlStore;
use super::timeline_ops;
use super::writer::BATCH_BUCKETS;

#[async_trait]
impl ObsStore for SqlStore {
    async fn append_logs(
        &self,
        lease: LeaseRef,
        lines: Vec<NewLog>,
        now: i64,
    ) -> EngineResult<AppendOutcome> {
        self.writer
            .run(move |c| Box::pin(timeline_ops::append_logs(c, lease, lines, now)))
            .await
    }

    async fn queue_depths(&self) -> EngineResult<Vec<(String, String, i64)>> {
        // Served by idx_runs_ns_queue_status (namespace, queue, status).
        Ok(runs::Entity::find()
            .select_only()
            .column(runs::Column::Namespace)
            .column(runs::Column::Queue)
            .column_as(Expr::cust("CAST(COUNT(*) AS BIGINT)"), "depth")
            .filter(runs::Column::Status.eq(RunStatus::Queued.as_str()))
            .group_by(runs::Column::Namespace)
            .group_by(runs::Column::Queue)
            .into_tuple::<(String, String, i64)>()
            .all(&self.db)
            .await?)
    }

    fn commit_stats(&self) -> CommitStats {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.writer.stats();
        CommitStats {
            commits: s.commits.load(Relaxed),
            writes: s.writes.load(Relaxed),
            statements: s.statements.load(Relaxed),
            batches: (0..BATCH_BUCKETS)
                .map(|i| (1u64 << i, s.batches[i].load(Relaxed)))
                .collect(),
        }
    }
}
