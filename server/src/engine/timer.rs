//! The durable timer's in-memory wakeup: the engine sleeps until the earliest known due
//! instant (a retry becoming deliverable, a lease expiring) instead of scanning on a fixed
//! interval. The truth lives in the store; this only says when to look.

use std::sync::Mutex;

use tokio::sync::Notify;

/// Tracks the earliest instant the timer loop must wake at.
pub struct Timer {
    next: Mutex<i64>,
    notify: Notify,
}

impl Default for Timer {
    fn default() -> Self {
        Self {
            next: Mutex::new(i64::MAX),
            notify: Notify::new(),
        }
    }
}

impl Timer {
    /// Asks the loop to wake at `at` (milliseconds) unless it already wakes earlier.
    pub fn schedule(&self, at: i64) {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if at < *next {
            *next = at;
            self.notify.notify_one();
        }
    }

    /// The instant the loop wakes at next.
    pub fn next(&self) -> i64 {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called when the loop starts reading the store: from now on every `schedule` counts
    /// as earlier, so an instant written while the loop reads is never lost.
    pub fn begin_tick(&self) {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = i64::MAX;
    }

    /// Merges the next wake computed from the store with anything scheduled since
    /// [`Timer::begin_tick`]; returns the instant the loop must wake at.
    pub fn end_tick(&self, computed: i64) -> i64 {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        *next = (*next).min(computed);
        *next
    }

    /// Completes when an earlier wake was scheduled.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_scheduled_during_a_tick_is_kept() {
        let t = Timer::default();
        t.schedule(5); // the loop's previous target
        t.begin_tick();
        t.schedule(10); // a write commits while the loop reads the store
        assert_eq!(
            t.end_tick(i64::MAX),
            10,
            "the store read missed it; memory keeps it"
        );
        t.begin_tick();
        assert_eq!(t.end_tick(7), 7);
    }
}
