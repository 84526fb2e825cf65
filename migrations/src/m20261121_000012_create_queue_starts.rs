//! Creates `queue_starts`: the sliding-window log behind queue rate limits. A claim on a
//! rate-limited queue inserts one row per attempt it starts and deletes the rows that left
//! the window, so the table holds at most `limit` rows per rate-limited queue.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum QueueStarts {
    Table,
    Namespace,
    Queue,
    RunId,
    Attempt,
    StartedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QueueStarts::Table)
                    .if_not_exists()
                    .col(string_len(QueueStarts::Namespace, 128))
                    .col(string_len(QueueStarts::Queue, 128))
                    .col(string_len(QueueStarts::RunId, 36))
                    .col(integer(QueueStarts::Attempt))
                    .col(big_integer(QueueStarts::StartedAt))
                    .primary_key(
                        Index::create()
                            .col(QueueStarts::RunId)
                            .col(QueueStarts::Attempt),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_queue_starts_window")
                    .table(QueueStarts::Table)
                    .col(QueueStarts::Namespace)
                    .col(QueueStarts::Queue)
                    .col(QueueStarts::StartedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(QueueStarts::Table).to_owned())
            .await
    }
}
