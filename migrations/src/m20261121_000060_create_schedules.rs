//! Creates `schedules`: one row per schedule of a namespace (a cron expression with a time
//! zone, or a fixed interval) with the run it starts (job, queue, payload, start options),
//! its catch-up policy, pause switch and the next instant it fires. `next_fire_at` drives
//! the durable timer; a firing advances it with a conditional update so that each
//! scheduled time starts one run even with several replicas. A NULL option means "the
//! queue's default, else the server default".

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Schedules {
    Table,
    Namespace,
    Id,
    Job,
    Queue,
    Payload,
    RetryMaxAttempts,
    RetryInitialMs,
    RetryCoefficient,
    RetryMaxMs,
    LeaseTimeoutMs,
    Priority,
    CronExpression,
    TimeZone,
    IntervalMs,
    CatchUp,
    Paused,
    NextFireAt,
    LastFireAt,
    RecentRunIds,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Schedules::Table)
                    .if_not_exists()
                    .col(string_len(Schedules::Namespace, 128))
                    .col(string_len(Schedules::Id, 128))
                    .col(string_len(Schedules::Job, 128))
                    .col(string_len(Schedules::Queue, 128))
                    .col(text(Schedules::Payload))
                    .col(integer_null(Schedules::RetryMaxAttempts))
                    .col(big_integer_null(Schedules::RetryInitialMs))
                    .col(double_null(Schedules::RetryCoefficient))
                    .col(big_integer_null(Schedules::RetryMaxMs))
                    .col(big_integer_null(Schedules::LeaseTimeoutMs))
                    .col(integer(Schedules::Priority).default(0))
                    .col(string_len_null(Schedules::CronExpression, 256))
                    .col(string_len_null(Schedules::TimeZone, 64))
                    .col(big_integer_null(Schedules::IntervalMs))
                    .col(string_len(Schedules::CatchUp, 16))
                    .col(boolean(Schedules::Paused).default(false))
                    .col(big_integer(Schedules::NextFireAt))
                    .col(big_integer_null(Schedules::LastFireAt))
                    .col(text(Schedules::RecentRunIds))
                    .col(big_integer(Schedules::CreatedAt))
                    .col(big_integer(Schedules::UpdatedAt))
                    .primary_key(Index::create().col(Schedules::Namespace).col(Schedules::Id))
                    .to_owned(),
            )
            .await?;
        // The timer's question: the earliest next firing of an active schedule.
        manager
            .create_index(
                Index::create()
                    .name("idx_schedules_due")
                    .table(Schedules::Table)
                    .col(Schedules::Paused)
                    .col(Schedules::NextFireAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Schedules::Table).to_owned())
            .await
    }
}
