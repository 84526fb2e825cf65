//! Adds the queue fields to `runs`: `priority` (higher is delivered first) and
//! `concurrency_key` (per-key concurrency limits), with the indexes that serve them:
//! - `idx_runs_ready_priority`: claims in `priority DESC, available_at, id` order;
//! - `idx_runs_running_keys`: counting leased runs per queue and per concurrency key;
//! - `idx_runs_ns_queue_status`: queue statistics (counts by status).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    Priority,
    ConcurrencyKey,
}

const INDEXES: [(&str, &str); 3] = [
    (
        "idx_runs_ready_priority",
        "runs (namespace, queue, priority DESC, available_at, id) WHERE status = 'queued'",
    ),
    (
        "idx_runs_running_keys",
        "runs (namespace, queue, concurrency_key) WHERE status = 'running'",
    ),
    (
        "idx_runs_ns_queue_status",
        "runs (namespace, queue, status)",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite accepts one change per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(integer(Runs::Priority).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(string_len_null(Runs::ConcurrencyKey, 256))
                    .to_owned(),
            )
            .await?;
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
        for col in [Runs::ConcurrencyKey, Runs::Priority] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Runs::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
