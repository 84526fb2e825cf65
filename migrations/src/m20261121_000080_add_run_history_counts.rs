//! Adds the per-run history counters to `runs` (see docs/limits.md, "History limits"):
//! - `step_count`: journal entries recorded (or reserved by a pending wait) for the run,
//!   checked against `--max-steps-per-run` before a new entry is added;
//! - `timeline_count`: timeline entries written for the run, checked against
//!   `--max-timeline-entries` (later entries are dropped after one truncation marker).
//!
//! Both are maintained in the transaction that adds the rows they count, so the limits
//! need no `COUNT(*)`. Runs that are not final yet get their current counts here.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    StepCount,
    TimelineCount,
}

const BACKFILL: &str = "UPDATE runs SET \
     step_count = (SELECT COUNT(*) FROM steps WHERE steps.run_id = runs.id), \
     timeline_count = (SELECT COUNT(*) FROM run_timeline WHERE run_timeline.run_id = runs.id) \
     WHERE status IN ('queued', 'running', 'waiting')";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite accepts one change per ALTER TABLE.
        for col in [Runs::StepCount, Runs::TimelineCount] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Runs::Table)
                        .add_column(big_integer(col).default(0))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared(BACKFILL)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Runs::TimelineCount, Runs::StepCount] {
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
