//! Creates `attempts`: one row per delivery of a run to a worker.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Attempts {
    Table,
    RunId,
    Number,
    WorkerId,
    StartedAt,
    EndedAt,
    Failure,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Attempts::Table)
                    .if_not_exists()
                    .col(string_len(Attempts::RunId, 36))
                    .col(integer(Attempts::Number))
                    .col(string_len(Attempts::WorkerId, 128))
                    .col(big_integer(Attempts::StartedAt))
                    .col(big_integer_null(Attempts::EndedAt))
                    .col(text_null(Attempts::Failure))
                    .primary_key(Index::create().col(Attempts::RunId).col(Attempts::Number))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Attempts::Table).to_owned())
            .await
    }
}
