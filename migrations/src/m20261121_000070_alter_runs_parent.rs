//! Adds child-run links to `runs` (see docs/children.md):
//! - `parent_run_id`: the run whose `step.invoke` started this run (NULL for a top-level run);
//! - `parent_step_id`: the parent's wait step id that started it;
//! - `parent_index`: the child's position in that wait (0 for `invoke`, 0..n for a fan-out).
//!
//! `idx_runs_parent` serves "the children of a run" (resolving a parent's wait when a child
//! ends, and the cancel cascade).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    ParentRunId,
    ParentStepId,
    ParentIndex,
}

const INDEX: (&str, &str) = (
    "idx_runs_parent",
    "runs (parent_run_id, parent_step_id, parent_index) WHERE parent_run_id IS NOT NULL",
);

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite accepts one change per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(string_len_null(Runs::ParentRunId, 64))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(string_len_null(Runs::ParentStepId, 300))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(integer_null(Runs::ParentIndex))
                    .to_owned(),
            )
            .await?;
        let (name, def) = INDEX;
        manager
            .get_connection()
            .execute_unprepared(&format!("CREATE INDEX IF NOT EXISTS {name} ON {def}"))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let (name, _) = INDEX;
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
            .await?;
        for col in [Runs::ParentIndex, Runs::ParentStepId, Runs::ParentRunId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Runs::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
