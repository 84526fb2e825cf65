//! sea-orm entities, one per table. The schema itself is owned by the frozen migrations in
//! the `stackshift-migrations` crate; these mirror it.

pub mod api_keys;
pub mod attempts;
pub mod event_consumptions;
pub mod event_triggers;
pub mod events;
pub mod idempotency_keys;
pub mod queue_starts;
pub mod queues;
pub mod run_logs;
pub mod run_timeline;
pub mod runs;
pub mod schedules;
pub mod state_entries;
pub mod state_lock_floors;
pub mod state_locks;
pub mod steps;
pub mod wait_items;
pub mod waits;
