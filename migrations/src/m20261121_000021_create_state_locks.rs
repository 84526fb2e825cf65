//! Creates `state_locks` and `state_lock_floors`: the state store's locks.
//!
//! A lock row holds the last fencing token handed out for its key and the current holder's
//! expiry (a lock is held while `expires_at` is in the future; a release sets it to the
//! release time). The sweeper deletes rows of free locks; before it does, it raises the
//! namespace's floor in `state_lock_floors` to their tokens, and a new row's first token is
//! above the floor, so tokens grow strictly per key even after the row was deleted.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StateLocks {
    Table,
    Namespace,
    Key,
    Fence,
    ExpiresAt,
    HolderRunId,
    AcquiredAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum StateLockFloors {
    Table,
    Namespace,
    Floor,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StateLocks::Table)
                    .if_not_exists()
                    .col(string_len(StateLocks::Namespace, 128))
                    .col(string_len(StateLocks::Key, 512))
                    .col(big_integer(StateLocks::Fence))
                    .col(big_integer(StateLocks::ExpiresAt))
                    .col(string_len_null(StateLocks::HolderRunId, 36))
                    .col(big_integer(StateLocks::AcquiredAt))
                    .col(big_integer(StateLocks::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(StateLocks::Namespace)
                            .col(StateLocks::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(StateLockFloors::Table)
                    .if_not_exists()
                    .col(string_len(StateLockFloors::Namespace, 128).primary_key())
                    .col(big_integer(StateLockFloors::Floor))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // The sweeper and the timer find expired (free) locks by expiry.
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_state_locks_expiry ON state_locks (expires_at)",
        )
        .await?;
        // Locks tied to a run are released when the run ends.
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_state_locks_run ON state_locks (holder_run_id) \
             WHERE holder_run_id IS NOT NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StateLockFloors::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(StateLocks::Table).to_owned())
            .await
    }
}
