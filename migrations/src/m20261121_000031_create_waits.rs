//! Creates `waits`: what a `waiting` run is suspended on (a durable sleep or an event),
//! at most one per run. A row exists exactly while its run is `waiting`; whoever ends the
//! wait (a matching event, the timer, a cancellation) deletes it in the same transaction.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Waits {
    Table,
    RunId,
    Namespace,
    StepId,
    Kind,
    EventName,
    CorrelationKey,
    WakeAt,
    RunCreatedAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Waits::Table)
                    .if_not_exists()
                    .col(string_len(Waits::RunId, 36).primary_key())
                    .col(string_len(Waits::Namespace, 128))
                    .col(string_len(Waits::StepId, 300))
                    .col(string_len(Waits::Kind, 16))
                    .col(string_len_null(Waits::EventName, 128))
                    .col(string_len_null(Waits::CorrelationKey, 512))
                    .col(big_integer_null(Waits::WakeAt))
                    .col(big_integer(Waits::RunCreatedAt))
                    .col(big_integer(Waits::CreatedAt))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for sql in [
            // A published event finds the runs waiting for it.
            "CREATE INDEX IF NOT EXISTS idx_waits_match \
             ON waits (namespace, event_name, correlation_key) WHERE kind = 'event'",
            // The timer finds the next sleep or timeout that falls due.
            "CREATE INDEX IF NOT EXISTS idx_waits_wake ON waits (wake_at) \
             WHERE wake_at IS NOT NULL",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Waits::Table).to_owned())
            .await
    }
}
