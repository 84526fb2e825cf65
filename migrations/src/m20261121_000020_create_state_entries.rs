//! Creates `state_entries`: the state store's keys, one row per `(namespace, key)`, with a
//! JSON value, a version that grows on every write, and an optional expiry.
//!
//! On PostgreSQL the key column uses the `"C"` collation, so that key order is byte order
//! on both backends (SQLite compares text bytewise): prefix listing and its pagination rely
//! on it. The partial index on `expires_at` lets the sweeper find expired keys, and the
//! timer find the next expiry, without scanning keys that never expire.

use sea_orm_migration::sea_orm::DatabaseBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StateEntries {
    Table,
    Namespace,
    Key,
    Value,
    ValueSize,
    Version,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut key = string_len(StateEntries::Key, 512);
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            key.extra("COLLATE \"C\"");
        }
        manager
            .create_table(
                Table::create()
                    .table(StateEntries::Table)
                    .if_not_exists()
                    .col(string_len(StateEntries::Namespace, 128))
                    .col(key)
                    .col(text(StateEntries::Value))
                    .col(big_integer(StateEntries::ValueSize))
                    .col(big_integer(StateEntries::Version))
                    .col(big_integer_null(StateEntries::ExpiresAt))
                    .col(big_integer(StateEntries::CreatedAt))
                    .col(big_integer(StateEntries::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(StateEntries::Namespace)
                            .col(StateEntries::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_state_entries_expiry ON state_entries \
                 (expires_at) WHERE expires_at IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StateEntries::Table).to_owned())
            .await
    }
}
