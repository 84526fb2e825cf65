//! Creates `event_triggers`: one row per (namespace, event name, correlation key, job)
//! subscription: publishing a matching event starts a run of the job in the same
//! transaction as the event insert. An empty correlation key matches events with any key.
//! A NULL option means "the queue's default, else the server default".

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EventTriggers {
    Table,
    Namespace,
    Id,
    EventName,
    CorrelationKey,
    Job,
    Queue,
    RetryMaxAttempts,
    RetryInitialMs,
    RetryCoefficient,
    RetryMaxMs,
    LeaseTimeoutMs,
    Priority,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EventTriggers::Table)
                    .if_not_exists()
                    .col(string_len(EventTriggers::Namespace, 128))
                    .col(string_len(EventTriggers::Id, 64))
                    .col(string_len(EventTriggers::EventName, 128))
                    .col(string_len(EventTriggers::CorrelationKey, 512))
                    .col(string_len(EventTriggers::Job, 128))
                    .col(string_len(EventTriggers::Queue, 128))
                    .col(integer_null(EventTriggers::RetryMaxAttempts))
                    .col(big_integer_null(EventTriggers::RetryInitialMs))
                    .col(double_null(EventTriggers::RetryCoefficient))
                    .col(big_integer_null(EventTriggers::RetryMaxMs))
                    .col(big_integer_null(EventTriggers::LeaseTimeoutMs))
                    .col(integer(EventTriggers::Priority).default(0))
                    .col(big_integer(EventTriggers::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(EventTriggers::Namespace)
                            .col(EventTriggers::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // One subscription per (event, key, job); also the lookup of a publish.
        manager
            .create_index(
                Index::create()
                    .name("idx_event_triggers_match")
                    .table(EventTriggers::Table)
                    .col(EventTriggers::Namespace)
                    .col(EventTriggers::EventName)
                    .col(EventTriggers::CorrelationKey)
                    .col(EventTriggers::Job)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(EventTriggers::Table).to_owned())
            .await
    }
}
