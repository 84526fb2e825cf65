//! Frozen schema migrations of the StackShift store, for SQLite and PostgreSQL.
//!
//! Each migration file is frozen once released: schema changes come as new files named
//! `mYYYYMMDD_NNNNNN_verb_table.rs`. Types stay portable across both backends: statuses are
//! strings, timestamps are `BIGINT` milliseconds since the Unix epoch, JSON is `TEXT`.
//! Partial indexes use plain SQL that both SQLite and PostgreSQL accept.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_create_runs;
mod m20261121_000002_create_attempts;
mod m20261121_000003_create_steps;
mod m20261121_000004_create_idempotency_keys;
mod m20261121_000005_create_api_keys;
mod m20261121_000010_create_queues;
mod m20261121_000011_alter_runs;
mod m20261121_000012_create_queue_starts;
mod m20261121_000020_create_state_entries;
mod m20261121_000021_create_state_locks;
mod m20261121_000030_create_events;
mod m20261121_000031_create_waits;
mod m20261121_000032_create_event_consumptions;
mod m20261121_000040_create_run_timeline;
mod m20261121_000041_add_runs_list_indexes;
mod m20261121_000050_alter_api_keys_admin;
mod m20261121_000060_create_schedules;
mod m20261121_000061_create_event_triggers;
mod m20261121_000070_alter_runs_parent;
mod m20261121_000071_create_wait_items;
mod m20261121_000080_add_run_history_counts;

/// Applies every StackShift migration in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_create_runs::Migration),
            Box::new(m20261121_000002_create_attempts::Migration),
            Box::new(m20261121_000003_create_steps::Migration),
            Box::new(m20261121_000004_create_idempotency_keys::Migration),
            Box::new(m20261121_000005_create_api_keys::Migration),
            Box::new(m20261121_000010_create_queues::Migration),
            Box::new(m20261121_000011_alter_runs::Migration),
            Box::new(m20261121_000012_create_queue_starts::Migration),
            Box::new(m20261121_000020_create_state_entries::Migration),
            Box::new(m20261121_000021_create_state_locks::Migration),
            Box::new(m20261121_000030_create_events::Migration),
            Box::new(m20261121_000031_create_waits::Migration),
            Box::new(m20261121_000032_create_event_consumptions::Migration),
            Box::new(m20261121_000040_create_run_timeline::Migration),
            Box::new(m20261121_000041_add_runs_list_indexes::Migration),
            Box::new(m20261121_000050_alter_api_keys_admin::Migration),
            Box::new(m20261121_000060_create_schedules::Migration),
            Box::new(m20261121_000061_create_event_triggers::Migration),
            Box::new(m20261121_000070_alter_runs_parent::Migration),
            Box::new(m20261121_000071_create_wait_items::Migration),
            Box::new(m20261121_000080_add_run_history_counts::Migration),
        ]
    }
}
