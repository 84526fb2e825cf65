//! Creates `queues`: one row per queue of a namespace, holding its configuration
//! (concurrency limits, rate limit, default retry policy and lease timeout) and its pause
//! switch. A NULL limit means "unlimited"; a NULL retry field or lease means "the server
//! default". Claims on a limited queue lock its row, so the limits hold across replicas.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Queues {
    Table,
    Namespace,
    Name,
    ConcurrencyLimit,
    KeyConcurrencyLimit,
    RateLimit,
    RatePeriodMs,
    RetryMaxAttempts,
    RetryInitialMs,
    RetryCoefficient,
    RetryMaxMs,
    LeaseTimeoutMs,
    Paused,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Queues::Table)
                    .if_not_exists()
                    .col(string_len(Queues::Namespace, 128))
                    .col(string_len(Queues::Name, 128))
                    .col(integer_null(Queues::ConcurrencyLimit))
                    .col(integer_null(Queues::KeyConcurrencyLimit))
                    .col(integer_null(Queues::RateLimit))
                    .col(big_integer_null(Queues::RatePeriodMs))
                    .col(integer_null(Queues::RetryMaxAttempts))
                    .col(big_integer_null(Queues::RetryInitialMs))
                    .col(double_null(Queues::RetryCoefficient))
                    .col(big_integer_null(Queues::RetryMaxMs))
                    .col(big_integer_null(Queues::LeaseTimeoutMs))
                    .col(boolean(Queues::Paused).default(false))
                    .col(big_integer(Queues::CreatedAt))
                    .col(big_integer(Queues::UpdatedAt))
                    .primary_key(Index::create().col(Queues::Namespace).col(Queues::Name))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Queues::Table).to_owned())
            .await
    }
}
