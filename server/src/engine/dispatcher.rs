//! Wakes long-polling workers when work arrives, without a database query per idle poll
//! and without waking every poller for every task.
//!
//! Each open poll registers a waiter (its namespace, queues and jobs). When a run becomes
//! deliverable, [`Dispatcher::signal`] hands the signal to the oldest matching waiter that
//! holds no signal yet, and wakes only that one. A waiter that leaves while holding an
//! unused signal (it returned other tasks, or timed out) passes it to the next matching
//! waiter, so no wakeup is lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::Notify;

struct Waiter {
    id: u64,
    queues: Vec<String>,
    jobs: Vec<String>,
    notify: Arc<Notify>,
    pending: Option<(String, String)>,
}

impl Waiter {
    fn serves(&self, queue: &str, job: &str) -> bool {
        self.queues.iter().any(|q| q == queue) && self.jobs.iter().any(|j| j == job)
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    by_namespace: HashMap<String, Vec<Waiter>>,
}

/// Registry of open polls.
#[derive(Default)]
pub struct Dispatcher {
    inner: Mutex<Inner>,
}

impl Dispatcher {
    /// Creates an empty dispatcher.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of plain data; the
        // registry stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter; it is removed when the guard drops.
    pub fn register(
        self: &Arc<Self>,
        namespace: &str,
        queues: Vec<String>,
        jobs: Vec<String>,
    ) -> WaiterGuard {
        let notify = Arc::new(Notify::new());
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner
            .by_namespace
            .entry(namespace.to_owned())
            .or_default()
            .push(Waiter {
                id,
                queues,
                jobs,
                notify: notify.clone(),
                pending: None,
            });
        WaiterGuard {
            dispatcher: self.clone(),
            namespace: namespace.to_owned(),
            id,
            notify,
        }
    }

    /// Signals that a run of `job` on `queue` became deliverable: wakes one matching waiter.
    /// Returns false when no waiter could take the signal.
    pub fn signal(&self, namespace: &str, queue: &str, job: &str) -> bool {
        let mut inner = self.lock();
        Self::signal_locked(&mut inner, namespace, queue, job, None)
    }

    fn signal_locked(
        inner: &mut Inner,
        namespace: &str,
        queue: &str,
        job: &str,
        skip: Option<u64>,
    ) -> bool {
        let Some(waiters) = inner.by_namespace.get_mut(namespace) else {
            return false;
        };
        let found = waiters
            .iter_mut()
            .find(|w| w.pending.is_none() && Some(w.id) != skip && w.serves(queue, job));
        match found {
            Some(w) => {
                w.pending = Some((queue.to_owned(), job.to_owned()));
                w.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Number of open polls (all namespaces).
    pub fn waiting(&self) -> usize {
        self.lock().by_namespace.values().map(Vec::len).sum()
    }
}

/// An open poll's registration.
pub struct WaiterGuard {
    dispatcher: Arc<Dispatcher>,
    namespace: String,
    id: u64,
    notify: Arc<Notify>,
}

impl WaiterGuard {
    /// Clears this waiter's signal before it looks for work, so that new work arriving
    /// while it looks wakes it again.
    pub fn consume(&self) {
        let mut inner = self.dispatcher.lock();
        if let Some(w) = inner
            .by_namespace
            .get_mut(&self.namespace)
            .and_then(|ws| ws.iter_mut().find(|w| w.id == self.id))
        {
            w.pending = None;
        }
    }

    /// Completes when this waiter is signalled.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut inner = self.dispatcher.lock();
        let mut forward = None;
        if let Some(ws) = inner.by_namespace.get_mut(&self.namespace) {
            if let Some(pos) = ws.iter().position(|w| w.id == self.id) {
                forward = ws.remove(pos).pending;
            }
            if ws.is_empty() {
                inner.by_namespace.remove(&self.namespace);
            }
        }
        if let Some((queue, job)) = forward {
            Dispatcher::signal_locked(&mut inner, &self.namespace, &queue, &job, Some(self.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[tokio::test]
    async fn wakes_one_matching_waiter_and_forwards_unused_signals() {
        let d = Dispatcher::new();
        let a = d.register("ns", s(&["q"]), s(&["job"]));
        let b = d.register("ns", s(&["q"]), s(&["job"]));
        let other = d.register("ns", s(&["other"]), s(&["job"]));
        assert!(d.signal("ns", "q", "job"));
        // `a` holds the signal; a second signal goes to `b`, not to `a` again.
        assert!(d.signal("ns", "q", "job"));
        assert!(
            !d.signal("ns", "q", "job"),
            "both matching waiters already hold signals"
        );
        tokio::time::timeout(std::time::Duration::from_millis(100), a.notified())
            .await
            .ok();
        a.consume();
        drop(b); // leaves with an unused signal: it goes to `a`
        assert!(!d.signal("ns", "q", "job"));
        drop(other);
        assert!(!d.signal("ns", "nobody", "job"));
        assert!(!d.signal("other-ns", "q", "job"));
        assert_eq!(d.waiting(), 1);
    }
}
