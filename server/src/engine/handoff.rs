//! The resume handoff: an event publish that makes runs deliverable (waits it resolved,
//! runs its triggers started) claims them, in its own transaction, for polls of this server
//! parked on their queue and job, as a start does for its new run
//! ([`Dispatcher::reserve`]). The run then reaches a handler after one commit (the
//! publish's) instead of two (the publish's, then the woken poll's claim).
//!
//! Which polls to reserve is only known inside the transaction (the resolved waits name the
//! runs), so the store calls [`Reservations::pick`] there; it reserves parked polls through
//! the dispatcher and returns their claim requests. After the commit
//! [`Reservations::deliver`] sends every reserved poll its tasks (none when the publish
//! failed: the poll then claims by itself), and leaves the tasks of a poll whose request
//! went away as orphans for the next matching poll. Only local parked polls are reserved:
//! polls of other replicas get the usual notification.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::dispatcher::{Dispatcher, Handoff};
use super::event_model::PublishOutcome;
use super::model::ClaimRequest;
use super::queue_model::ClaimOutcome;
use super::timer::Timer;

/// Parked polls reserved by one publish.
pub(crate) struct Reservations {
    dispatcher: Arc<Dispatcher>,
    namespace: String,
    /// The publish's time, used as the claims' time.
    now: i64,
    /// Reserved polls, in the order of the claim requests returned by `pick`.
    held: Mutex<Vec<Handoff>>,
}

impl Reservations {
    /// No reservation yet, for a publish in `namespace` at `now`.
    pub(crate) fn new(dispatcher: Arc<Dispatcher>, namespace: &str, now: i64) -> Arc<Self> {
        Arc::new(Self {
            dispatcher,
            namespace: namespace.to_owned(),
            now,
            held: Mutex::new(Vec::new()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Handoff>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves parked polls for the runs `out` made deliverable now (resumed runs, and
    /// started runs available at once) and returns the claim requests of every poll this
    /// publish holds, in order. A run is covered by a poll already held (reserved by an
    /// earlier call for a retried transaction, or for an earlier run) that serves it and
    /// has room left (`max_tasks`); otherwise the oldest parked poll serving it is reserved,
    /// if any.
    pub(crate) fn pick(&self, out: &PublishOutcome) -> Vec<ClaimRequest> {
        let runs = out
            .resumed
            .iter()
            .filter(|r| r.namespace == self.namespace)
            .map(|r| (r.queue.as_str(), r.job.as_str()))
            .chain(
                out.started
                    .iter()
                    .filter(|r| r.namespace == self.namespace && r.available_at <= self.now)
                    .map(|r| (r.queue.as_str(), r.job.as_str())),
            );
        let mut held = self.held();
        let mut load = vec![0usize; held.len()];
        // (queue, job) pairs no parked poll serves, so the dispatcher is asked once each.
        let mut missed: Vec<(&str, &str)> = Vec::new();
        for (queue, job) in runs {
            let room = (0..held.len())
                .find(|&i| load[i] < held[i].req.max_tasks && serves(&held[i].req, queue, job));
            if let Some(i) = room {
                load[i] += 1;
                continue;
            }
            if missed.contains(&(queue, job)) {
                continue;
            }
            match self.dispatcher.reserve(&self.namespace, queue, job) {
                Some(h) => {
                    held.push(h);
                    load.push(1);
                }
                None => missed.push((queue, job)),
            }
        }
        held.iter()
            .map(|h| ClaimRequest {
                now: self.now,
                ..h.req.clone()
            })
            .collect()
    }

    /// After the publish: sends every reserved poll the tasks claimed for it (`claims`, in
    /// the order of the last `pick`; none when the publish failed) and returns the ids of
    /// the runs handed over. Tasks of a poll whose request went away are kept as orphans
    /// for the next matching poll.
    pub(crate) fn deliver(&self, claims: Vec<ClaimOutcome>, timer: &Timer) -> HashSet<String> {
        let held = std::mem::take(&mut *self.held());
        let mut claims = claims.into_iter();
        let mut taken = HashSet::new();
        for h in held {
            let tasks = claims.next().map(|c| c.tasks).unwrap_or_default();
            taken.extend(tasks.iter().map(|t| t.run.id.clone()));
            if let Err(tasks) = h.tx.send(tasks) {
                super::worker_ops::keep_orphans(&self.dispatcher, timer, &self.namespace, tasks);
            }
        }
        taken
    }
}

/// True when a poll making `req` serves runs of `job` on `queue`.
fn serves(req: &ClaimRequest, queue: &str, job: &str) -> bool {
    req.queues.iter().any(|q| q == queue) && req.jobs.iter().any(|j| j.name == job)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::engine::event_model::{EventRecord, ResumedRun};
    use crate::engine::model::JobSpec;

    fn req(queue: &str, job: &str, max_tasks: usize) -> ClaimRequest {
        ClaimRequest {
            namespace: "ns".into(),
            worker_id: "w".into(),
            queues: vec![queue.into()],
            jobs: vec![JobSpec {
                name: job.into(),
                lease_timeout_ms: None,
            }],
            max_tasks,
            default_lease_ms: 30_000,
            now: 0,
        }
    }

    fn resumed(runs: &[(&str, &str)]) -> PublishOutcome {
        PublishOutcome {
            event: EventRecord {
                seq: 1,
                namespace: "ns".into(),
                id: "e".into(),
                name: "n".into(),
                correlation_key: String::new(),
                payload: "null".into(),
                published_at: 0,
            },
            duplicate: false,
            resumed: runs
                .iter()
                .enumerate()
                .map(|(i, (q, j))| ResumedRun {
                    run_id: format!("r{i}"),
                    namespace: "ns".into(),
                    queue: (*q).into(),
                    job: (*j).into(),
                })
                .collect(),
            started: Vec::new(),
        }
    }

    #[test]
    fn reserves_parked_polls_by_room_and_reuses_them_on_retry() {
        let d = Dispatcher::new();
        let a1 = d.register_claim(&req("q", "a", 2));
        let a2 = d.register_claim(&req("q", "a", 2));
        let b = d.register_claim(&req("q", "b", 5));
        let busy = d.register_claim(&req("q", "c", 5));
        for w in [&a1, &a2, &b] {
            w.park();
        }
        // `busy` is not parked: it is never reserved.
        let r = Reservations::new(d.clone(), "ns", 42);
        let out = resumed(&[("q", "a"), ("q", "a"), ("q", "a"), ("q", "c"), ("q", "b")]);
        let reqs = r.pick(&out);
        assert_eq!(reqs.len(), 3, "two polls for three runs of a, one for b");
        assert!(reqs.iter().all(|r| r.now == 42));
        // A retried transaction asks again: the same polls, nothing more reserved.
        assert_eq!(r.pick(&out).len(), 3);
        drop(busy);
        // Each reserved poll holds a handoff; delivering with no claims sends empty lists.
        let taken = r.deliver(Vec::new(), &Timer::default());
        assert!(taken.is_empty());
        for w in [&a1, &a2, &b] {
            w.consume();
            let rx = w.take_handoff().expect("reserved");
            assert_eq!(rx.blocking_recv().unwrap(), Vec::new());
        }
    }

    #[tokio::test]
    async fn tasks_of_a_poll_that_went_away_become_orphans() {
        use crate::engine::dispatcher::tests::task;
        let d = Dispatcher::new();
        let gone = d.register_claim(&req("q", "a", 1));
        gone.park();
        let r = Reservations::new(d.clone(), "ns", 1_000);
        assert_eq!(r.pick(&resumed(&[("q", "a")])).len(), 1);
        // The poll's request is dropped before the publish commits.
        drop(gone);
        let claimed = ClaimOutcome {
            tasks: vec![task("r0", "q", "a", 31_000)],
            ..Default::default()
        };
        let taken = r.deliver(vec![claimed], &Timer::default());
        assert_eq!(taken, HashSet::from(["r0".to_owned()]));
        // The next poll of the job gets it, once.
        let next = req("q", "a", 5);
        let got = d.take_orphans(&next, 2_000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].run.id, "r0");
        assert!(d.take_orphans(&next, 2_000).is_empty());
    }
}
