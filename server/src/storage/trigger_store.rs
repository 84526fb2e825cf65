//! [`TriggerStore`] for [`SqlStore`].

use async_trait::async_trait;

use crate::engine::EngineResult;
use crate::engine::store::TriggerStore;
use crate::engine::trigger_model::{TriggerDefinition, TriggerFilter, TriggerRecord};

use super::sql::SqlStore;
use super::trigger_ops;

#[async_trait]
impl TriggerStore for SqlStore {
    async fn insert_trigger(
        &self,
        namespace: &str,
        id: &str,
        definition: TriggerDefinition,
        now: i64,
    ) -> EngineResult<(TriggerRecord, bool)> {
        let (ns, id) = (namespace.to_owned(), id.to_owned());
        self.writer()
            .run(move |c| {
                Box::pin(async move { trigger_ops::insert(c, &ns, &id, definition, now).await })
            })
            .await
    }

    async fn list_triggers(
        &self,
        namespace: &str,
        filter: &TriggerFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> EngineResult<Vec<TriggerRecord>> {
        trigger_ops::list(self.connection(), namespace, filter, cursor, limit).await
    }

    async fn delete_trigger(&self, namespace: &str, id: &str) -> EngineResult<bool> {
        let (ns, id) = (namespace.to_owned(), id.to_owned());
        self.writer()
            .run(move |c| Box::pin(async move { trigger_ops::delete(c, &ns, &id).await }))
            .await
    }

    async fn matching_triggers(
        &self,
        namespace: &str,
        name: &str,
        correlation_key: &str,
    ) -> EngineResult<Vec<TriggerRecord>> {
        trigger_ops::matching(self.connection(), namespace, name, correlation_key).await
    }
}
