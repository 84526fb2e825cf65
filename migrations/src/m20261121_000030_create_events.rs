//! Creates `events`: the per-namespace event inbox. `seq` orders events (the first
//! matching event is the one with the lowest `seq`); the unique `(namespace, event_id)`
//! index makes a repeated event id a no-op. An empty `correlation_key` means "no key".

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Seq,
    Namespace,
    EventId,
    Name,
    CorrelationKey,
    Payload,
    PublishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(big_integer(Events::Seq).auto_increment().primary_key())
                    .col(string_len(Events::Namespace, 128))
                    .col(string_len(Events::EventId, 256))
                    .col(string_len(Events::Name, 128))
                    .col(string_len(Events::CorrelationKey, 512))
                    .col(text(Events::Payload))
                    .col(big_integer(Events::PublishedAt))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for sql in [
            // Deduplication: one event per (namespace, id).
            "CREATE UNIQUE INDEX IF NOT EXISTS idx_events_ns_event_id \
             ON events (namespace, event_id)",
            // Inbox matching and name/key filters, in publication order.
            "CREATE INDEX IF NOT EXISTS idx_events_match \
             ON events (namespace, name, correlation_key, seq)",
            // Listing a namespace newest first.
            "CREATE INDEX IF NOT EXISTS idx_events_ns_seq ON events (namespace, seq)",
            // The retention sweeper deletes the oldest events first.
            "CREATE INDEX IF NOT EXISTS idx_events_published ON events (published_at)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}
