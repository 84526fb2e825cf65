//! Indexes that serve `ListRuns` filters newest first: by queue, and by idempotency key.
//! (Job and status already have `(namespace, job, id)` and `(namespace, status, id)`; a
//! creation-time range is served by the `(namespace, id)` index, because run ids are
//! UUIDv7 and sort by creation time.)

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const INDEXES: [(&str, &str); 2] = [
    ("idx_runs_ns_queue_id", "runs (namespace, queue, id)"),
    (
        "idx_runs_ns_idem_id",
        "runs (namespace, idempotency_key, id) WHERE idempotency_key IS NOT NULL",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, def) in INDEXES {
            db.execute_unprepared(&format!("CREATE INDEX IF NOT EXISTS {name} ON {def}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, _) in INDEXES {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        Ok(())
    }
}
