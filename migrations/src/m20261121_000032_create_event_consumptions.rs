//! Creates `event_consumptions`: which events each run has taken from its inbox. The
//! primary key `(run_id, event_seq)` makes it impossible for one run to consume the same
//! event twice; the journal entry of the wait holds a copy of the event, so deleting old
//! events (retention) never breaks a replay.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventConsumptions {
    Table,
    RunId,
    EventSeq,
    StepId,
    ConsumedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventConsumptions::Table)
                    .if_not_exists()
                    .col(string_len(EventConsumptions::RunId, 36))
                    .col(big_integer(EventConsumptions::EventSeq))
                    .col(string_len(EventConsumptions::StepId, 300))
                    .col(big_integer(EventConsumptions::ConsumedAt))
                    .primary_key(
                        Index::create()
                            .col(EventConsumptions::RunId)
                            .col(EventConsumptions::EventSeq),
                    )
                    .to_owned(),
            )
            .await?;
        // The retention sweeper removes the consumptions of the events it deletes.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_event_consumptions_seq \
                 ON event_consumptions (event_seq)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventConsumptions::Table).to_owned())
            .await
    }
}
