//! Wakes long-polling workers when work arrives, without a database query per idle poll
//! and without waking every poller for every task.
//!
//! Each open poll registers a waiter (its namespace, queues and jobs). When a run becomes
//! deliverable, [`Dispatcher::signal`] hands the signal to the oldest matching waiter that
//! holds no signal yet, and wakes only that one. A waiter that leaves while holding an
//! unused signal (it returned other tasks, or timed out) passes it to the next matching
//! waiter, so no wakeup is lost.
//!
//! A start can also hand its new run straight to a parked poll ([`Dispatcher::reserve`]):
//! the start claims for that poll in its own transaction (one commit instead of two before
//! a handler runs) and passes the claimed tasks through a channel. Only a *parked* waiter
//! (asleep, or only reading, between two claims of its own) is reserved, and the poll takes
//! the handoff whenever it wakes, is about to claim ([`WaiterGuard::begin_claim`]) or leaves
//! ([`WaiterGuard::consume`], [`WaiterGuard::close`]), so a handoff is lost only when the
//! poll's request itself is dropped (the client went away).
//!
//! Tasks claimed for a poll that went away (a worker shut down, a client timed out) are
//! **orphans** ([`Dispatcher::orphaned`]): instead of sitting leased to nobody until their
//! leases expire (a 30 s stall of a run during every worker restart), they wait in memory
//! for the next poll of this server that serves their queue and job, which returns them
//! before claiming anything ([`Dispatcher::take_orphans`]). The lease is the one claimed:
//! exactly one poll gets the task, the attempt keeps the worker id of the poll it was
//! claimed for, and an orphan nobody takes before half its lease is gone is dropped, so its
//! lease expires and the run is delivered again as for any undelivered claim (also after a
//! crash: orphans are never persisted).
//!
//! Queue limits add a second kind of wakeup. A poll whose claim left runs behind because a
//! queue was paused or at its concurrency limit parks as *blocked* on that queue
//! ([`WaiterGuard::block_on`]). [`Dispatcher::released`] (a lease ended, the queue was
//! resumed or reconfigured) wakes every waiter blocked on the queue. A release sequence
//! number closes the race between a claim that found the queue full and a release landing
//! before the poll parked: `block_on` refuses to park when the queue saw a release since
//! the claim began, and the poll claims again instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::{Notify, oneshot};

use super::model::{ClaimRequest, ClaimedTask};

/// Tasks a start claimed for a parked poll, sent once its transaction committed.
pub type HandoffRx = oneshot::Receiver<Vec<ClaimedTask>>;

/// A parked poll reserved by a start: claim for `req` in the start's transaction, then send
/// the tasks (possibly none) on `tx`.
pub struct Handoff {
    /// The poll's claim request (`now` is the caller's to set).
    pub req: ClaimRequest,
    /// Where the claimed tasks go.
    pub tx: oneshot::Sender<Vec<ClaimedTask>>,
}

/// A wakeup a waiter holds and has not acted on yet.
enum Pending {
    /// A run of `(queue, job)` became deliverable; forwarded if unused.
    Run(String, String),
    /// Capacity opened on a queue the waiter was blocked on; not forwarded (every blocked
    /// waiter of the queue got one).
    Capacity,
    /// A start is claiming for this waiter; the tasks arrive on the receiver.
    Handoff(HandoffRx),
}

struct Waiter {
    id: u64,
    queues: Vec<String>,
    jobs: Vec<String>,
    notify: Arc<Notify>,
    pending: Option<Pending>,
    /// Queues this waiter's last claim found paused or full.
    blocked: Vec<String>,
    /// The poll's claim request, when it accepts handoffs.
    req: Option<ClaimRequest>,
    /// Between two claims of its own, asleep or only reading (only a parked waiter may be
    /// reserved).
    parked: bool,
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
    /// Incremented by every [`Dispatcher::released`].
    release_seq: u64,
    /// namespace -> queue -> `release_seq` of the queue's latest release (one entry per
    /// queue that ever released a lease; queues are few and never deleted).
    last_release: HashMap<String, HashMap<String, u64>>,
    /// Tasks claimed for polls that went away, oldest first, with their namespace.
    orphans: VecDeque<(String, ClaimedTask)>,
}

/// Orphans kept at most; past it the oldest are dropped (their leases expire).
const MAX_ORPHANS: usize = 10_000;

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
                blocked: Vec::new(),
                req: None,
                parked: false,
            });
        WaiterGuard {
            dispatcher: self.clone(),
            namespace: namespace.to_owned(),
            id,
            notify,
            handoff: std::sync::Mutex::new(None),
        }
    }

    /// Registers a waiter that accepts handoffs of new runs ([`Dispatcher::reserve`]) for
    /// claims like `req`.
    pub fn register_claim(self: &Arc<Self>, req: &ClaimRequest) -> WaiterGuard {
        let guard = self.register(
            &req.namespace,
            req.queues.clone(),
            req.jobs.iter().map(|j| j.name.clone()).collect(),
        );
        if let Some(w) = guard.find(&mut self.lock()) {
            w.req = Some(req.clone());
        }
        guard
    }

    /// Reserves the oldest parked waiter that serves `job` on `queue` and holds no signal,
    /// for a start that will claim for it in its own transaction. `None` when there is no
    /// such waiter (the start then signals as usual).
    pub fn reserve(&self, namespace: &str, queue: &str, job: &str) -> Option<Handoff> {
        let mut inner = self.lock();
        let w = inner
            .by_namespace
            .get_mut(namespace)?
            .iter_mut()
            .find(|w| w.parked && w.pending.is_none() && w.req.is_some() && w.serves(queue, job))?;
        let req = w.req.clone()?;
        let (tx, rx) = oneshot::channel();
        w.pending = Some(Pending::Handoff(rx));
        w.parked = false;
        w.notify.notify_one();
        Some(Handoff { req, tx })
    }

    /// True when a parked waiter of `namespace` could be reserved (for some queue and job).
    pub fn has_parked(&self, namespace: &str) -> bool {
        self.lock().by_namespace.get(namespace).is_some_and(|ws| {
            ws.iter()
                .any(|w| w.parked && w.pending.is_none() && w.req.is_some())
        })
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
                w.pending = Some(Pending::Run(queue.to_owned(), job.to_owned()));
                w.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Capacity may have opened on `queue` (a lease ended, the queue was resumed or
    /// reconfigured): wakes every waiter blocked on it. Returns how many were woken.
    pub fn released(&self, namespace: &str, queue: &str) -> usize {
        let mut inner = self.lock();
        inner.release_seq += 1;
        let seq = inner.release_seq;
        let queues = match inner.last_release.get_mut(namespace) {
            Some(q) => q,
            None => inner.last_release.entry(namespace.to_owned()).or_default(),
        };
        match queues.get_mut(queue) {
            Some(last) => *last = seq,
            None => {
                queues.insert(queue.to_owned(), seq);
            }
        }
        let Some(waiters) = inner.by_namespace.get_mut(namespace) else {
            return 0;
        };
        let mut woken = 0;
        for w in waiters
            .iter_mut()
            .filter(|w| w.blocked.iter().any(|q| q == queue))
        {
            w.blocked.clear();
            if w.pending.is_none() {
                w.pending = Some(Pending::Capacity);
                w.notify.notify_one();
                woken += 1;
            }
        }
        woken
    }

    /// Keeps `tasks`, claimed in `namespace` for a poll that went away before returning
    /// them, for the next matching poll, and wakes one matching waiter per task. Returns how
    /// many of them woke a waiter.
    pub fn orphaned(&self, namespace: &str, tasks: Vec<ClaimedTask>) -> usize {
        let mut inner = self.lock();
        let mut woken = 0;
        for task in tasks {
            if Self::signal_locked(&mut inner, namespace, &task.run.queue, &task.run.job, None) {
                woken += 1;
            }
            inner.orphans.push_back((namespace.to_owned(), task));
        }
        while inner.orphans.len() > MAX_ORPHANS {
            inner.orphans.pop_front();
        }
        woken
    }

    /// Takes up to `req.max_tasks` orphans that `req` serves (namespace, queue and job),
    /// oldest first, dropping every orphan with less than half of its lease left at `now`.
    pub fn take_orphans(&self, req: &ClaimRequest, now: i64) -> Vec<ClaimedTask> {
        let mut inner = self.lock();
        if inner.orphans.is_empty() {
            return Vec::new();
        }
        inner
            .orphans
            .retain(|(_, t)| t.lease_deadline - now > t.lease_ms / 2);
        let mut taken = Vec::new();
        let mut i = 0;
        while i < inner.orphans.len() && taken.len() < req.max_tasks {
            let (ns, t) = &inner.orphans[i];
            let serves = *ns == req.namespace
                && req.queues.contains(&t.run.queue)
                && req.jobs.iter().any(|j| j.name == t.run.job);
            match serves.then(|| inner.orphans.remove(i)).flatten() {
                Some((_, task)) => taken.push(task),
                None => i += 1,
            }
        }
        taken
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
    /// A handoff taken by [`WaiterGuard::consume`] or [`WaiterGuard::close`].
    handoff: std::sync::Mutex<Option<HandoffRx>>,
}

impl WaiterGuard {
    fn find<'a>(&self, inner: &'a mut Inner) -> Option<&'a mut Waiter> {
        inner
            .by_namespace
            .get_mut(&self.namespace)
            .and_then(|ws| ws.iter_mut().find(|w| w.id == self.id))
    }

    fn keep_handoff(&self, pending: Option<Pending>) {
        if let Some(Pending::Handoff(rx)) = pending {
            *self.handoff.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
        }
    }

    /// Clears this waiter's signal before it looks for work, so that new work arriving
    /// while it looks wakes it again. Returns the release sequence number to pass to
    /// [`WaiterGuard::block_on`] after the claim. A handoff it held is kept for
    /// [`WaiterGuard::take_handoff`].
    pub fn consume(&self) -> u64 {
        let mut inner = self.dispatcher.lock();
        let seq = inner.release_seq;
        let pending = self.find(&mut inner).and_then(|w| {
            w.blocked.clear();
            w.parked = false;
            w.pending.take()
        });
        drop(inner);
        self.keep_handoff(pending);
        seq
    }

    /// Marks this waiter reservable until its next [`WaiterGuard::consume`] or
    /// [`WaiterGuard::begin_claim`]: from now on a start may reserve it. A poll parks both
    /// while it only reads (looking for work) and while it sleeps.
    pub fn park(&self) {
        if let Some(w) = self.find(&mut self.dispatcher.lock()) {
            w.parked = true;
        }
    }

    /// Called before the poll claims by itself: false when a start reserved this waiter
    /// meanwhile (the poll takes that handoff instead of claiming); otherwise the waiter
    /// cannot be reserved until it parks again.
    pub fn begin_claim(&self) -> bool {
        let mut inner = self.dispatcher.lock();
        match self.find(&mut inner) {
            Some(w) if matches!(w.pending, Some(Pending::Handoff(_))) => false,
            Some(w) => {
                w.parked = false;
                true
            }
            None => true,
        }
    }

    /// Unregisters this waiter before the poll answers, keeping a handoff it held for
    /// [`WaiterGuard::take_handoff`] (no start can reserve it afterwards).
    pub fn close(&self) {
        let mut inner = self.dispatcher.lock();
        let mut pending = None;
        if let Some(ws) = inner.by_namespace.get_mut(&self.namespace) {
            if let Some(pos) = ws.iter().position(|w| w.id == self.id) {
                pending = ws.remove(pos).pending;
            }
            if ws.is_empty() {
                inner.by_namespace.remove(&self.namespace);
            }
        }
        match pending {
            Some(Pending::Run(queue, job)) => {
                Dispatcher::signal_locked(&mut inner, &self.namespace, &queue, &job, Some(self.id));
            }
            other => {
                drop(inner);
                self.keep_handoff(other);
            }
        }
    }

    /// The handoff taken by the last [`WaiterGuard::consume`] or [`WaiterGuard::close`].
    pub fn take_handoff(&self) -> Option<HandoffRx> {
        self.handoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Parks this waiter as blocked on `queues` (paused or full at the claim that began at
    /// release sequence `since`), so that a release on any of them wakes it. Returns false,
    /// parking nothing, when one of them saw a release since: the caller claims again.
    pub fn block_on(&self, queues: &[String], since: u64) -> bool {
        let mut inner = self.dispatcher.lock();
        let inner = &mut *inner;
        let released_since = inner.last_release.get(&self.namespace).is_some_and(|last| {
            queues
                .iter()
                .any(|q| last.get(q).is_some_and(|seq| *seq > since))
        });
        if released_since {
            return false;
        }
        if let Some(w) = inner
            .by_namespace
            .get_mut(&self.namespace)
            .and_then(|ws| ws.iter_mut().find(|w| w.id == self.id))
        {
            w.blocked = queues.to_vec();
        }
        true
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
        if let Some(Pending::Run(queue, job)) = forward {
            Dispatcher::signal_locked(&mut inner, &self.namespace, &queue, &job, Some(self.id));
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) mod tests {
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

    #[tokio::test]
    async fn releases_wake_every_waiter_blocked_on_the_queue() {
        let d = Dispatcher::new();
        let a = d.register("ns", s(&["limited", "free"]), s(&["job"]));
        let b = d.register("ns", s(&["limited"]), s(&["job"]));
        let c = d.register("ns", s(&["limited"]), s(&["job"]));
        let (sa, sb) = (a.consume(), b.consume());
        assert!(a.block_on(&s(&["limited"]), sa));
        assert!(b.block_on(&s(&["limited"]), sb));
        // `c` is not blocked (its claim found nothing to do): a release does not wake it.
        assert_eq!(d.released("ns", "other-queue"), 0);
        assert_eq!(d.released("other-ns", "limited"), 0);
        assert_eq!(d.released("ns", "limited"), 2);
        for w in [&a, &b] {
            tokio::time::timeout(std::time::Duration::from_secs(1), w.notified())
                .await
                .expect("blocked waiter woken");
        }
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), c.notified())
                .await
                .is_err(),
            "an unblocked waiter is not woken by a release"
        );
        // Woken waiters are no longer blocked: a second release wakes nobody.
        assert_eq!(d.released("ns", "limited"), 0);
    }

    fn claim_request() -> ClaimRequest {
        ClaimRequest {
            namespace: "ns".into(),
            worker_id: "w".into(),
            queues: s(&["q"]),
            jobs: vec![crate::engine::model::JobSpec {
                name: "job".into(),
                lease_timeout_ms: None,
            }],
            max_tasks: 1,
            default_lease_ms: 30_000,
            now: 0,
        }
    }

    #[tokio::test]
    async fn a_start_reserves_only_a_parked_waiter_and_hands_tasks_over() {
        let d = Dispatcher::new();
        let plain = d.register("ns", s(&["q"]), s(&["job"]));
        plain.park();
        assert!(
            d.reserve("ns", "q", "job").is_none(),
            "a waiter without a claim request is never reserved"
        );
        let w = d.register_claim(&claim_request());
        assert!(d.reserve("ns", "q", "job").is_none(), "not parked yet");
        w.park();
        assert!(d.reserve("ns", "other", "job").is_none());
        assert!(d.reserve("ns", "q", "other-job").is_none());
        let h = d.reserve("ns", "q", "job").expect("parked waiter reserved");
        assert_eq!(h.req.worker_id, "w");
        assert!(d.reserve("ns", "q", "job").is_none(), "reserved once");
        tokio::time::timeout(std::time::Duration::from_secs(1), w.notified())
            .await
            .expect("reserved waiter woken");
        w.consume();
        assert!(h.tx.send(Vec::new()).is_ok());
        let rx = w.take_handoff().expect("the handoff is kept by consume");
        assert_eq!(rx.await.expect("tasks sent"), Vec::new());
        // A waiter that is claiming (not parked) cannot be reserved.
        assert!(d.reserve("ns", "q", "job").is_none());
        // A handoff that reaches a waiter while it leaves is kept by close, and nothing
        // can reserve it afterwards.
        w.park();
        let h = d.reserve("ns", "q", "job").expect("parked again");
        w.close();
        assert!(d.reserve("ns", "q", "job").is_none());
        drop(h.tx);
        assert!(w.take_handoff().expect("kept by close").await.is_err());
        assert_eq!(d.waiting(), 1, "only the plain waiter is left");
    }

    #[tokio::test]
    async fn a_poll_reserved_while_it_reads_takes_the_handoff_instead_of_claiming() {
        let d = Dispatcher::new();
        let w = d.register_claim(&claim_request());
        w.consume();
        w.park(); // looking for work (a read), not claiming yet
        let h = d
            .reserve("ns", "q", "job")
            .expect("reservable while it reads");
        assert!(!w.begin_claim(), "reserved: no claim of its own");
        w.consume();
        assert!(h.tx.send(Vec::new()).is_ok());
        assert!(w.take_handoff().expect("kept by consume").await.is_ok());
        // Not reserved: the claim goes ahead and nothing can reserve it meanwhile.
        w.park();
        assert!(w.begin_claim());
        assert!(d.reserve("ns", "q", "job").is_none(), "claiming");
    }

    /// A claimed task of `job` on `queue` in namespace `ns`, leased until `deadline`.
    pub(crate) fn task(run_id: &str, queue: &str, job: &str, deadline: i64) -> ClaimedTask {
        use crate::engine::model::{RetryPolicy, RunRecord, RunStatus};
        ClaimedTask {
            run: RunRecord {
                id: run_id.into(),
                namespace: "ns".into(),
                job: job.into(),
                queue: queue.into(),
                status: RunStatus::Running,
                payload: "null".into(),
                result: None,
                failure: None,
                attempt: 1,
                max_attempts: 3,
                retry: RetryPolicy::default(),
                lease_timeout_ms: None,
                effective_lease_ms: Some(30_000),
                lease_token: Some("t".into()),
                lease_expires_at: Some(deadline),
                worker_id: Some("gone".into()),
                available_at: 0,
                idempotency_key: None,
                created_at: 0,
                updated_at: 0,
                finished_at: None,
                priority: 0,
                concurrency_key: None,
                parent_run_id: None,
                parent_step_id: None,
                step_count: 0,
            },
            lease_token: "t".into(),
            lease_deadline: deadline,
            lease_ms: 30_000,
            journal: Vec::new(),
            resumed: false,
        }
    }

    #[tokio::test]
    async fn orphans_go_to_the_next_matching_poll_once() {
        let d = Dispatcher::new();
        let other = d.register("ns", s(&["elsewhere"]), s(&["job"]));
        let w = d.register_claim(&claim_request());
        let ids = |ts: &[ClaimedTask]| ts.iter().map(|t| t.run.id.clone()).collect::<Vec<_>>();
        // Orphans of another namespace, queue or job are not taken by `claim_request()`.
        d.orphaned("other-ns", vec![task("a", "q", "job", 100_000)]);
        d.orphaned("ns", vec![task("b", "elsewhere", "job", 100_000)]);
        d.orphaned("ns", vec![task("c", "q", "other-job", 100_000)]);
        assert!(d.take_orphans(&claim_request(), 0).is_empty());
        // A matching orphan wakes the matching waiter and is taken exactly once, oldest
        // first, at most `max_tasks` at a time.
        assert_eq!(
            d.orphaned(
                "ns",
                vec![
                    task("d", "q", "job", 100_000),
                    task("e", "q", "job", 100_000)
                ]
            ),
            1,
            "one matching waiter to wake"
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), w.notified())
            .await
            .expect("matching waiter woken");
        assert_eq!(ids(&d.take_orphans(&claim_request(), 0)), ["d"]);
        let mut two = claim_request();
        two.max_tasks = 10;
        assert_eq!(ids(&d.take_orphans(&two, 0)), ["e"]);
        assert!(d.take_orphans(&two, 0).is_empty());
        // An orphan with less than half its lease left is dropped (its lease expires).
        d.orphaned("ns", vec![task("f", "q", "job", 20_000)]);
        assert!(d.take_orphans(&two, 5_001).is_empty());
        d.orphaned("ns", vec![task("g", "q", "job", 20_000)]);
        assert_eq!(ids(&d.take_orphans(&two, 4_999)), ["g"]);
        drop(other);
    }

    #[test]
    fn orphans_are_bounded() {
        let d = Dispatcher::new();
        let many = (0..MAX_ORPHANS + 5)
            .map(|i| task(&format!("r{i}"), "q", "job", 100_000))
            .collect();
        d.orphaned("ns", many);
        let mut all = claim_request();
        all.max_tasks = usize::MAX;
        let taken = d.take_orphans(&all, 0);
        assert_eq!(taken.len(), MAX_ORPHANS);
        assert_eq!(taken[0].run.id, "r5", "the oldest were dropped");
    }

    #[tokio::test]
    async fn a_release_during_the_claim_prevents_parking() {
        let d = Dispatcher::new();
        let a = d.register("ns", s(&["q"]), s(&["job"]));
        let since = a.consume();
        // The claim found `q` full, but a lease was released before the poll parked.
        d.released("ns", "q");
        assert!(!a.block_on(&s(&["q"]), since), "must claim again");
        let since = a.consume();
        assert!(a.block_on(&s(&["q"]), since));
        // A release on another queue does not prevent parking.
        let since = a.consume();
        d.released("ns", "other");
        assert!(a.block_on(&s(&["q"]), since));
    }
}
