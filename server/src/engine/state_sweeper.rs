//! The state store's background sweeper: it deletes expired keys and the rows of free
//! locks in bounded batches, found through the indexes on expiry (never a full scan).
//!
//! It is driven by a durable-timer wakeup like the run timer: it sleeps until the earliest
//! expiry known to the store, lowered in memory when a write sets an earlier one. Expired
//! keys already read as absent, so deleting them is only garbage collection: sweeps are
//! coalesced to at most one per [`SWEEP_MIN_GAP_MS`], and a periodic re-read
//! ([`SWEEP_RESYNC_MS`]) only picks up expiries written by another server replica.

use std::sync::Arc;
use std::time::Duration;

use super::timer::Timer;
use super::watch::RunWatchers;
use super::{Engine, EngineError, now_ms};

/// Rows deleted per store round trip (per table).
pub const SWEEP_BATCH: u64 = 500;
/// Most batches per sweep; anything left is swept at the next one.
const MAX_BATCHES: usize = 20;
/// Shortest time between two sweeps.
pub const SWEEP_MIN_GAP_MS: i64 = 1_000;
/// Longest sleep without re-reading the next expiry from the store.
pub const SWEEP_RESYNC_MS: i64 = 60_000;

/// In-memory state of the state store: the sweeper's wakeup and the waiters on locks.
#[derive(Default)]
pub struct StateRuntime {
    /// When the sweeper must run next.
    pub(super) sweep_timer: Timer,
    /// Acquires waiting on a lock, by namespace and key (see `state_ops::lock_id`).
    pub(super) lock_waiters: RunWatchers,
}

impl Engine {
    /// Starts the sweeper. It stops when [`Engine::shutdown`] is called.
    pub(super) fn spawn_state_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move { engine.state_sweeper_loop().await })
    }

    async fn state_sweeper_loop(&self) {
        let timer = &self.state.sweep_timer;
        loop {
            // Forget the old wake-up first: an expiry scheduled while this sweep reads the
            // store then lowers the next wake-up instead of being overwritten by it.
            timer.begin_tick();
            let swept_at = now_ms();
            let next = match self.sweep_state(swept_at).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "state sweep failed; retrying in 5s");
                    swept_at + 5_000
                }
            };
            timer.end_tick(next.min(swept_at + SWEEP_RESYNC_MS));
            loop {
                let now = now_ms();
                let due = timer.next().max(swept_at + SWEEP_MIN_GAP_MS);
                if due <= now {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis((due - now) as u64)) => {}
                    _ = timer.changed() => {}
                    _ = self.shutdown.cancelled() => return,
                }
            }
        }
    }

    /// Deletes what expired by `now` in bounded batches; returns when to sweep next.
    async fn sweep_state(&self, now: i64) -> Result<i64, EngineError> {
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let n = self.store.sweep_state(now, SWEEP_BATCH).await?;
            total += n;
            if n < SWEEP_BATCH {
                if total > 0 {
                    tracing::debug!(rows = total, "state sweeper deleted expired rows");
                }
                return Ok(self.store.next_state_expiry().await?.unwrap_or(i64::MAX));
            }
        }
        tracing::info!(
            rows = total,
            "state sweeper hit its batch limit; continuing soon"
        );
        Ok(now)
    }
}
