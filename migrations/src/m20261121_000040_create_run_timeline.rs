//! Creates `run_timeline` (every transition of a run, written in the same transaction as
//! the transition) and `run_logs` (lines logged by handlers, capped per run). Both are read
//! per run in id order, so each has one `(run_id, id)` index.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunTimeline {
    Table,
    Id,
    RunId,
    At,
    Kind,
    Attempt,
    StepId,
    ScheduledAt,
    Detail,
}

#[derive(DeriveIden)]
enum RunLogs {
    Table,
    Id,
    RunId,
    Attempt,
    StepId,
    At,
    Level,
    Message,
    Fields,
    Size,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunTimeline::Table)
                    .if_not_exists()
                    .col(big_pk_auto(RunTimeline::Id))
                    .col(string_len(RunTimeline::RunId, 36))
                    .col(big_integer(RunTimeline::At))
                    .col(string_len(RunTimeline::Kind, 32))
                    .col(integer(RunTimeline::Attempt))
                    .col(string_len_null(RunTimeline::StepId, 300))
                    .col(big_integer_null(RunTimeline::ScheduledAt))
                    .col(text_null(RunTimeline::Detail))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RunLogs::Table)
                    .if_not_exists()
                    .col(big_pk_auto(RunLogs::Id))
                    .col(string_len(RunLogs::RunId, 36))
                    .col(integer(RunLogs::Attempt))
                    .col(string_len_null(RunLogs::StepId, 300))
                    .col(big_integer(RunLogs::At))
                    .col(string_len(RunLogs::Level, 16))
                    .col(text(RunLogs::Message))
                    .col(text_null(RunLogs::Fields))
                    .col(big_integer(RunLogs::Size))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for sql in [
            "CREATE INDEX IF NOT EXISTS idx_run_timeline_run ON run_timeline (run_id, id)",
            "CREATE INDEX IF NOT EXISTS idx_run_logs_run ON run_logs (run_id, id)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RunLogs::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(RunTimeline::Table).to_owned())
            .await
    }
}
