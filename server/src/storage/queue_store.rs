//! [`QueueStore`] for [`SqlStore`], and the cross-replica wakeups of queue capacity: on
//! PostgreSQL, a write that releases a lease on a limited queue, resumes a queue or
//! reconfigures it publishes `Wakeup::Capacity` in its own transaction, so pollers held
//! back on another replica claim again as soon as it commits.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseTransaction};

use crate::engine::EngineResult;
use crate::engine::model::{ClaimRequest, NewRun, StartOutcome};
use crate::engine::queue_model::{ClaimOutcome, QueueConfig, QueueRecord, QueueStats};
use crate::engine::store::{QueueStore, Wakeup};

use super::sql::{Backend, SqlStore};
use super::{claim_ops, notify, queue_ops};

/// Publishes (PostgreSQL, inside the write's transaction) one `Capacity` wakeup per
/// distinct `(namespace, queue)` of `released` whose queue is limited: one read and at most
/// one notification per queue, however many of the write's runs released it.
pub(super) async fn publish_released<C: ConnectionTrait>(
    c: &C,
    origin: &str,
    released: Vec<(String, String)>,
) -> EngineResult<()> {
    let mut done: Vec<(String, String)> = Vec::new();
    for (namespace, queue) in released {
        if done.iter().any(|(n, q)| *n == namespace && *q == queue) {
            continue;
        }
        if queue_ops::is_limited(c, &namespace, &queue).await? {
            let w = Wakeup::Capacity {
                namespace: namespace.clone(),
                queue: queue.clone(),
            };
            notify::publish(c, origin, &w).await?;
        }
        done.push((namespace, queue));
    }
    Ok(())
}

impl SqlStore {
    /// Runs a write; on PostgreSQL also publishes, in its transaction, the `wakeups` it
    /// implies and a `Capacity` wakeup for every `(namespace, queue)` in `released` whose
    /// queue is limited.
    pub(super) async fn write_released<T, F, W, R>(
        &self,
        f: F,
        wakeups: W,
        released: R,
    ) -> EngineResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, EngineResult<T>>
            + Send
            + 'static,
        W: Fn(&T) -> Vec<Wakeup> + Send + 'static,
        R: Fn(&T) -> Vec<(String, String)> + Send + 'static,
    {
        if self.backend != Backend::Postgres {
            return self.writer.run(f).await;
        }
        let origin = self.origin.clone();
        self.writer
            .run(move |c| {
                Box::pin(async move {
                    let out = f(c).await?;
                    for w in wakeups(&out) {
                        notify::publish(c, &origin, &w).await?;
                    }
                    publish_released(c, &origin, released(&out)).await?;
                    Ok(out)
                })
            })
            .await
    }

    /// A queue write that may open capacity: other replicas' held-back pollers are woken.
    async fn write_queue<F>(&self, f: F) -> EngineResult<Option<(QueueRecord, bool)>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> BoxFuture<'c, EngineResult<Option<(QueueRecord, bool)>>>
            + Send
            + 'static,
    {
        self.write_notify(f, |out: &Option<(QueueRecord, bool)>| {
            out.iter()
                .map(|(q, _)| Wakeup::Capacity {
                    namespace: q.namespace.clone(),
                    queue: q.name.clone(),
                })
                .collect()
        })
        .await
    }
}

#[async_trait]
impl QueueStore for SqlStore {
    async fn upsert_queue(
        &self,
        namespace: &str,
        name: &str,
        config: QueueConfig,
        paused: Option<bool>,
        now: i64,
    ) -> EngineResult<(QueueRecord, bool)> {
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        let out = self
            .write_queue(move |c| {
                Box::pin(async move {
                    queue_ops::upsert(c, &ns, &name, config, paused, now)
                        .await
                        .map(Some)
                })
            })
            .await?;
        out.ok_or_else(|| crate::engine::EngineError::Storage("upsert returned no queue".into()))
    }

    async fn get_queue(&self, namespace: &str, name: &str) -> EngineResult<Option<QueueRecord>> {
        Ok(queue_ops::find(&self.db, namespace, name)
            .await?
            .map(queue_ops::queue_from_model))
    }

    async fn list_queues(
        &self,
        namespace: &str,
        cursor: Option<&str>,
        limit: u64,
    ) -> EngineResult<Vec<QueueRecord>> {
        queue_ops::list(&self.db, namespace, cursor, limit).await
    }

    async fn set_queue_paused(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
        now: i64,
    ) -> EngineResult<Option<QueueRecord>> {
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        let out = self
            .write_queue(move |c| {
                Box::pin(async move {
                    Ok(queue_ops::set_paused(c, &ns, &name, paused, now)
                        .await?
                        .map(|q| (q, false)))
                })
            })
            .await?;
        Ok(out.map(|(q, _)| q))
    }

    async fn queue_stats(&self, queue: &QueueRecord, now: i64) -> EngineResult<QueueStats> {
        queue_ops::stats(&self.db, queue, now).await
    }

    async fn start_and_claim(
        &self,
        new: NewRun,
        req: ClaimRequest,
    ) -> EngineResult<(StartOutcome, ClaimOutcome)> {
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        self.start_with(new, Some((req, rotation))).await
    }

    async fn has_claimable(&self, req: &ClaimRequest) -> EngineResult<bool> {
        claim_ops::has_claimable(&self.db, req).await
    }

    async fn claim_queued(&self, req: ClaimRequest) -> EngineResult<ClaimOutcome> {
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        self.writer
            .run(move |c| Box::pin(claim_ops::claim_queued(c, req, rotation)))
            .await
    }
}
