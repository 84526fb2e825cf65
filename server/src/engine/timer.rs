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

    /// Sets the next wake computed by the loop from the store.
    pub fn set_next(&self, at: i64) {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Completes when an earlier wake was scheduled.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}
