//! Creates `runs`: one row per run, with its lease and retry state.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    Namespace,
    Job,
    Queue,
    Status,
    Payload,
    Result,
    Failure,
    Attempt,
    MaxAttempts,
    RetryInitialMs,
    RetryCoefficient,
    RetryMaxMs,
    LeaseTimeoutMs,
    EffectiveLeaseMs,
    LeaseToken,
    LeaseExpiresAt,
    WorkerId,
    AvailableAt,
    IdempotencyKey,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .if_not_exists()
                    .col(string_len(Runs::Id, 36).primary_key())
                    .col(string_len(Runs::Namespace, 128))
                    .col(string_len(Runs::Job, 128))
                    .col(string_len(Runs::Queue, 128))
                    .col(string_len(Runs::Status, 16))
                    .col(text(Runs::Payload))
                    .col(text_null(Runs::Result))
                    .col(text_null(Runs::Failure))
                    .col(integer(Runs::Attempt))
                    .col(integer(Runs::MaxAttempts))
                    .col(big_integer(Runs::RetryInitialMs))
                    .col(double(Runs::RetryCoefficient))
                    .col(big_integer(Runs::RetryMaxMs))
                    .col(big_integer_null(Runs::LeaseTimeoutMs))
                    .col(big_integer_null(Runs::EffectiveLeaseMs))
                    .col(string_len_null(Runs::LeaseToken, 64))
                    .col(big_integer_null(Runs::LeaseExpiresAt))
                    .col(string_len_null(Runs::WorkerId, 128))
                    .col(big_integer(Runs::AvailableAt))
                    .col(string_len_null(Runs::IdempotencyKey, 512))
                    .col(big_integer(Runs::CreatedAt))
                    .col(big_integer(Runs::UpdatedAt))
                    .col(big_integer_null(Runs::FinishedAt))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // Claims read only queued rows: a partial index keeps claim cost flat however many
        // finished runs the table holds.
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_runs_ready ON runs (namespace, queue, available_at, id) \
             WHERE status = 'queued'",
        )
        .await?;
        // The timer finds the next retry due time across namespaces.
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_runs_due ON runs (available_at) WHERE status = 'queued'",
        )
        .await?;
        // The lease reaper finds expired leases.
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_runs_leases ON runs (lease_expires_at) \
             WHERE status = 'running'",
        )
        .await?;
        for (name, cols) in [
            ("idx_runs_ns_id", "namespace, id"),
            ("idx_runs_ns_job_id", "namespace, job, id"),
            ("idx_runs_ns_status_id", "namespace, status, id"),
        ] {
            db.execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS {name} ON runs ({cols})"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Runs::Table).to_owned())
            .await
    }
}
