//! Creates `idempotency_keys`: the primary key `(namespace, key)` enforces one live run per
//! idempotency key, also under concurrent starts on several server replicas.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Namespace,
    Key,
    RunId,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(string_len(IdempotencyKeys::Namespace, 128))
                    .col(string_len(IdempotencyKeys::Key, 512))
                    .col(string_len(IdempotencyKeys::RunId, 36))
                    .col(big_integer(IdempotencyKeys::ExpiresAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Namespace)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_idempotency_expires")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}
