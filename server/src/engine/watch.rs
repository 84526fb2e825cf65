//! Lets `GetRun` with `wait` block until a run reaches a final state, and `WatchRun` follow
//! every change of a run, woken by the write that changed it rather than by polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Per-run notifications for clients waiting on a run to finish.
#[derive(Default)]
pub struct RunWatchers {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl RunWatchers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns the notification of a run, creating it.
    pub fn subscribe(&self, run_id: &str) -> Arc<Notify> {
        self.lock()
            .entry(run_id.to_owned())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Drops the run's entry when no other waiter holds it.
    pub fn release(&self, run_id: &str, notify: Arc<Notify>) {
        let mut map = self.lock();
        drop(notify);
        if map.get(run_id).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(run_id);
        }
    }

    /// Wakes everyone following the run (`WatchRun`) without dropping its entry.
    pub fn changed(&self, run_id: &str) {
        if let Some(n) = self.lock().get(run_id) {
            n.notify_waiters();
        }
    }

    /// Wakes everyone waiting on the run.
    pub fn finished(&self, run_id: &str) {
        if let Some(n) = self.lock().remove(run_id) {
            n.notify_waiters();
        }
    }
}
