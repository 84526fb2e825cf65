//! Creates `steps`: the journal of recorded step results. The primary key
//! `(run_id, step_id)` makes a second recorded result for one step impossible.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Steps {
    Table,
    RunId,
    StepId,
    Kind,
    Attempt,
    Output,
    Failure,
    OutputSize,
    StartedAt,
    CompletedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Steps::Table)
                    .if_not_exists()
                    .col(string_len(Steps::RunId, 36))
                    .col(string_len(Steps::StepId, 300))
                    .col(string_len(Steps::Kind, 16))
                    .col(integer(Steps::Attempt))
                    .col(text_null(Steps::Output))
                    .col(text_null(Steps::Failure))
                    .col(big_integer(Steps::OutputSize))
                    .col(big_integer_null(Steps::StartedAt))
                    .col(big_integer(Steps::CompletedAt))
                    .primary_key(Index::create().col(Steps::RunId).col(Steps::StepId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Steps::Table).to_owned())
            .await
    }
}
