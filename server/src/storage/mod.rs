//! Storage: the only layer that imports sea_orm. [`SqlStore`] implements the engine's
//! store traits on SQLite (embedded, the default) and PostgreSQL (for several replicas on
//! one database). Writes go through the group-commit [`writer`]; reads use the pool.

mod attempt_ops;
mod child_ops;
mod claim_ops;
mod combined_ops;
mod complete_batch;
pub mod convert;
pub mod entities;
pub mod error;
mod event_ops;
mod event_store;
mod handoff_claim;
mod key_ops;
pub mod limits;
mod notify;
mod obs_store;
mod pg_rows;
mod placeholders;
mod queue_ops;
mod queue_store;
mod run_ops;
mod schedule_ops;
mod schedule_store;
mod sql;
mod start_batch;
mod state_ops;
mod state_store;
mod step_batch;
pub mod testing;
#[cfg(test)]
mod tests;
mod timeline_ops;
mod trigger_ops;
mod trigger_store;
mod wait_ops;
pub mod writer;

pub use error::StorageError;
pub use sql::{Backend, SqlStore};
