//! Creates `wait_items`: the items of a `wait_for_any` / `wait_for_all` wait (see
//! docs/events.md), one row per item (an event or a sleep, `idx` from 0) plus a row of kind
//! `timeout` at `idx` -1 when the wait has a timeout, while the run's `waits` row (kind
//! `any` or `all`) exists. `output` is set once the item resolved (ALL waits keep
//! resolved items until every item resolved); the whole set is deleted with the wait.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WaitItems {
    Table,
    RunId,
    Idx,
    Namespace,
    Kind,
    EventName,
    CorrelationKey,
    WakeAt,
    RunCreatedAt,
    Output,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WaitItems::Table)
                    .if_not_exists()
                    .col(string_len(WaitItems::RunId, 36))
                    .col(integer(WaitItems::Idx))
                    .col(string_len(WaitItems::Namespace, 128))
                    .col(string_len(WaitItems::Kind, 16))
                    .col(string_len_null(WaitItems::EventName, 128))
                    .col(string_len_null(WaitItems::CorrelationKey, 512))
                    .col(big_integer_null(WaitItems::WakeAt))
                    .col(big_integer(WaitItems::RunCreatedAt))
                    .col(text_null(WaitItems::Output))
                    .primary_key(Index::create().col(WaitItems::RunId).col(WaitItems::Idx))
                    .to_owned(),
            )
            .await?;
        // A published event finds the unresolved event items waiting for it.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_wait_items_match \
                 ON wait_items (namespace, event_name, correlation_key) \
                 WHERE kind = 'event' AND output IS NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WaitItems::Table).to_owned())
            .await
    }
}
