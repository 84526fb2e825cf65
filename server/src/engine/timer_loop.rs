//! The background loop behind durable timers: it sleeps until the earliest due instant
//! known to the store (a retry becoming deliverable, a lease expiring, a sleep ending, an
//! event wait timing out, a schedule's next time), acts, and sleeps again. On start it
//! first catches up on everything that fell due while the server was down. A periodic re-read ([`RESYNC_MS`])
//! only guards against instants scheduled by another server replica sharing the database.

use std::sync::Arc;
use std::time::Duration;

use super::store::Wakeup;
use super::{Engine, now_ms};

/// Longest sleep without re-reading the next due instant from the store.
pub const RESYNC_MS: i64 = 10_000;
/// Leases expired per store round trip.
const EXPIRE_BATCH: u64 = 1_000;
/// Due runs signalled per tick (pollers find any others when they next claim).
const DUE_BATCH: u64 = 10_000;

impl Engine {
    /// Starts the timer loop. It stops when [`Engine::shutdown`] is called.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        if let Some(mut wakeups) = self.store.subscribe() {
            let engine = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        w = wakeups.recv() => match w {
                            Some(Wakeup::Ready { namespace, queue, job }) => {
                                engine.dispatcher.signal(&namespace, &queue, &job);
                            }
                            Some(Wakeup::TimerAt(at)) => engine.timer.schedule(at),
                            Some(Wakeup::Capacity { namespace, queue }) => {
                                engine.dispatcher.released(&namespace, &queue);
                            }
                            Some(Wakeup::LockReleased { namespace, key }) => {
                                engine.lock_released(&namespace, &key);
                            }
                            None => return,
                        },
                        _ = engine.shutdown.cancelled() => return,
                    }
                }
            });
        }
        self.spawn_state_sweeper();
        let engine = self.clone();
        tokio::spawn(async move { engine.event_sweeper().await });
        let engine = self.clone();
        tokio::spawn(async move { engine.timer_loop().await })
    }

    async fn timer_loop(&self) {
        // Everything queued before start is "due since forever".
        let mut checked_until = i64::MIN;
        loop {
            let now = now_ms();
            self.timer.begin_tick();
            let next = match self.timer_tick(checked_until, now).await {
                Ok(next) => {
                    checked_until = now;
                    next
                }
                Err(e) => {
                    tracing::error!(error = %e, "timer tick failed; retrying in 1s");
                    now + 1_000
                }
            };
            let next = self.timer.end_tick(next.min(now + RESYNC_MS));
            let sleep = Duration::from_millis((next - now).max(0) as u64);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.timer.changed() => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Expires leases and signals runs that became due; returns the next due instant.
    async fn timer_tick(&self, checked_until: i64, now: i64) -> Result<i64, super::EngineError> {
        loop {
            let expired = self.store.expire_leases(now, EXPIRE_BATCH).await?;
            let n = expired.requeued.len() + expired.failed.len();
            if n > 0 {
                tracing::info!(
                    requeued = expired.requeued.len(),
                    failed = expired.failed.len(),
                    "leases expired"
                );
            }
            for (ns, queue, job) in &expired.requeued {
                self.dispatcher.signal(ns, queue, job);
            }
            for (run_id, ns, job, queue) in &expired.expired {
                self.run_changed(run_id);
                let failed = expired.failed.contains(run_id);
                self.metrics.runs(ns, job, queue, |c| {
                    c.lease_expirations += 1;
                    c.failed += u64::from(failed);
                });
            }
            for run_id in &expired.failed {
                self.watchers.finished(run_id);
            }
            for (ns, queue) in &expired.released {
                self.queue_released(ns, queue);
            }
            if (n as u64) < EXPIRE_BATCH {
                break;
            }
        }
        // One signal per due run, so that as many pollers wake as there are runs; stop
        // once no poller is left to take one.
        for (ns, queue, job) in self.store.due_runs(checked_until, now, DUE_BATCH).await? {
            if !self.dispatcher.signal(&ns, &queue, &job) && self.dispatcher.waiting() == 0 {
                break;
            }
        }
        // Sleeps that ended and event waits that timed out (also those that fell due while
        // the server was down).
        self.resolve_due_waits(now).await?;
        // Schedules whose next time came (also those that fell due while the server was
        // down; each one's catch-up policy decides what to start).
        self.fire_due_schedules(now).await?;
        let next_run = self.store.next_due(now).await?.unwrap_or(i64::MAX);
        // A schedule still due failed to fire: try again in a second, not in a hot loop.
        let next_schedule = match self.store.next_schedule_fire().await? {
            Some(at) if at <= now => now + 1_000,
            Some(at) => at,
            None => i64::MAX,
        };
        Ok(next_run.min(next_schedule))
    }
}
