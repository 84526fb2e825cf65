//! Contract checks of the handoff claim (`storage::handoff_claim`): a start or publish that
//! claims its known runs for a parked poll directly must hand over exactly what the general
//! claim would: the same attempt, lease, `attempts` row and timeline entries; nothing from a
//! paused queue or beyond a concurrency, per-key or rate limit; older or higher-priority
//! runs first; never one run to two polls.

use std::sync::Arc;

use crate::engine::event_model::{NewEvent, PublishOutcome, SuspendOutcome, WaitSpec};
use crate::engine::model::{ClaimRequest, LeaseRef, NewRun, RunDetail, RunStatus, StartOutcome};
use crate::engine::queue_model::{ClaimOutcome, QueueConfig, RateLimit};
use crate::engine::store::{ClaimPicker, Store};

use super::{claim_req, new_run, ns, start};

async fn start_claim(store: &Arc<dyn Store>, new: NewRun, req: ClaimRequest) -> ClaimOutcome {
    let (out, claim) = store.start_and_claim(new, req).await.unwrap();
    assert!(matches!(out, StartOutcome::Created(_)));
    claim
}

async fn detail(store: &Arc<dyn Store>, ns: &str, id: &str) -> RunDetail {
    store.get_run_detail(ns, id).await.unwrap().unwrap()
}

async fn limited(store: &Arc<dyn Store>, ns: &str, queue: &str, config: QueueConfig) {
    store
        .upsert_queue(ns, queue, config, None, 0)
        .await
        .unwrap();
}

/// What a handed-over run looks like, without its ids and token.
fn shape(d: &RunDetail) -> impl PartialEq + std::fmt::Debug {
    let r = &d.run;
    (
        (
            r.status,
            r.attempt,
            r.lease_expires_at.map(|t| t - r.updated_at),
            r.effective_lease_ms,
            r.worker_id.clone(),
        ),
        d.attempts
            .iter()
            .map(|a| {
                (
                    a.number,
                    a.worker_id.clone(),
                    a.started_at - r.created_at,
                    a.ended_at,
                )
            })
            .collect::<Vec<_>>(),
        d.timeline
            .iter()
            .map(|t| (t.kind, t.attempt, t.at - r.created_at, t.detail.clone()))
            .collect::<Vec<_>>(),
    )
}

/// The direct claim of a start hands over the same attempt as the general claim: status,
/// lease (the queue's default lease included), `attempts` row and timeline entries.
pub async fn same_as_general_claim(store: &Arc<dyn Store>) {
    let ns = ns("handoff-same");
    for queue in ["q", "leased"] {
        if queue == "leased" {
            let config = QueueConfig {
                lease_timeout_ms: Some(7_000),
                ..QueueConfig::default()
            };
            limited(store, &ns, queue, config).await;
        }
        let general = start(store, new_run(&ns, "a", queue, 1_000)).await;
        let task = store
            .claim(claim_req(&ns, &[queue], &["a"], 5, 1_000))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(task.run.id, general.id);
        let direct = new_run(&ns, "a", queue, 1_000);
        let id = direct.id.clone();
        let claim = start_claim(store, direct, claim_req(&ns, &[queue], &["a"], 5, 1_000)).await;
        assert_eq!(claim.tasks.len(), 1);
        let handed = &claim.tasks[0];
        assert_eq!(handed.run.id, id);
        assert_eq!(handed.run.attempt, 1);
        assert!(!handed.resumed);
        assert_eq!(handed.lease_ms, task.lease_ms);
        assert_eq!(handed.lease_deadline, task.lease_deadline);
        let lease = if queue == "leased" { 7_000 } else { 30_000 };
        assert_eq!(handed.lease_ms, lease);
        let (g, d) = (
            detail(store, &ns, &general.id).await,
            detail(store, &ns, &id).await,
        );
        assert_eq!(shape(&d), shape(&g));
        assert_eq!(
            d.run.lease_token.as_deref(),
            Some(handed.lease_token.as_str())
        );
        assert_eq!(d.timeline.len(), 2, "created, attempt started");
        // The handed-over lease is a real lease: the run completes under it.
        let lease = LeaseRef {
            namespace: ns.clone(),
            run_id: id.clone(),
            token: handed.lease_token.clone(),
        };
        store.complete_run(lease, "1".into(), 1_500).await.unwrap();
    }
}

/// Nothing is handed over past a queue's limits or from a paused queue, and the limits'
/// bookkeeping (the rate window) counts a handed-over run.
pub async fn limits_hold(store: &Arc<dyn Store>) {
    let ns = ns("handoff-limits");
    // Concurrency limit 1, one run leased: the new run stays queued.
    let config = QueueConfig {
        concurrency_limit: Some(1),
        ..QueueConfig::default()
    };
    limited(store, &ns, "conc", config).await;
    let first = start_claim(
        store,
        new_run(&ns, "a", "conc", 1_000),
        claim_req(&ns, &["conc"], &["a"], 5, 1_000),
    )
    .await;
    assert_eq!(first.tasks.len(), 1, "room for one");
    let full = start_claim(
        store,
        new_run(&ns, "a", "conc", 1_001),
        claim_req(&ns, &["conc"], &["a"], 5, 1_001),
    )
    .await;
    assert!(full.tasks.is_empty(), "the limit holds for a handoff");

    // Per-key limit 1: a second run of a leased key stays queued, another key goes.
    let config = QueueConfig {
        key_concurrency_limit: Some(1),
        ..QueueConfig::default()
    };
    limited(store, &ns, "keyed", config).await;
    let keyed = |key: &str, now: i64| {
        let mut r = new_run(&ns, "a", "keyed", now);
        r.concurrency_key = Some(key.to_owned());
        r
    };
    let req = |now| claim_req(&ns, &["keyed"], &["a"], 5, now);
    assert_eq!(
        start_claim(store, keyed("k", 2_000), req(2_000))
            .await
            .tasks
            .len(),
        1
    );
    assert!(
        start_claim(store, keyed("k", 2_001), req(2_001))
            .await
            .tasks
            .is_empty()
    );
    let other = start_claim(store, keyed("other", 2_002), req(2_002)).await;
    assert_eq!(other.tasks.len(), 1);
    assert_eq!(other.tasks[0].run.concurrency_key.as_deref(), Some("other"));

    // Rate limit 1 per 10 s: the handed-over run fills the window.
    let config = QueueConfig {
        rate_limit: Some(RateLimit {
            limit: 1,
            period_ms: 10_000,
        }),
        ..QueueConfig::default()
    };
    limited(store, &ns, "rate", config).await;
    let req = |now| claim_req(&ns, &["rate"], &["a"], 5, now);
    assert_eq!(
        start_claim(store, new_run(&ns, "a", "rate", 3_000), req(3_000))
            .await
            .tasks
            .len(),
        1
    );
    assert!(
        start_claim(store, new_run(&ns, "a", "rate", 3_001), req(3_001))
            .await
            .tasks
            .is_empty(),
        "the window holds one start"
    );
    let q = store.get_queue(&ns, "rate").await.unwrap().unwrap();
    assert_eq!(
        store
            .queue_stats(&q, 3_001)
            .await
            .unwrap()
            .rate_window_started,
        1
    );

    // A paused queue hands nothing over; resumed, it delivers the run left queued.
    limited(store, &ns, "paused", QueueConfig::default()).await;
    store
        .set_queue_paused(&ns, "paused", true, 4_000)
        .await
        .unwrap();
    let held = new_run(&ns, "a", "paused", 4_001);
    let held_id = held.id.clone();
    let req = |now| claim_req(&ns, &["paused"], &["a"], 5, now);
    assert!(start_claim(store, held, req(4_001)).await.tasks.is_empty());
    assert_eq!(
        detail(store, &ns, &held_id).await.run.status,
        RunStatus::Queued
    );
    store
        .set_queue_paused(&ns, "paused", false, 4_002)
        .await
        .unwrap();
    let got = store.claim_queued(req(4_003)).await.unwrap();
    assert_eq!(got.tasks.len(), 1);
    assert_eq!(got.tasks[0].run.id, held_id);
}

/// Other deliverable runs of the poll are ordered against the new one as by any claim:
/// a higher-priority run goes first, and a poll with room takes both.
pub async fn order_with_other_runs(store: &Arc<dyn Store>) {
    let ns = ns("handoff-order");
    let mut urgent = new_run(&ns, "a", "q", 1_000);
    urgent.priority = 5;
    let urgent = start(store, urgent).await;
    let mut low = new_run(&ns, "a", "q", 1_001);
    low.priority = -1;
    let low_id = low.id.clone();
    let one = start_claim(store, low, claim_req(&ns, &["q"], &["a"], 1, 1_001)).await;
    assert_eq!(one.tasks.len(), 1);
    assert_eq!(one.tasks[0].run.id, urgent.id, "higher priority first");
    assert_eq!(
        detail(store, &ns, &low_id).await.run.status,
        RunStatus::Queued
    );
    // Another queue of the same poll holds a deliverable run: the poll takes both.
    let waiting = start(store, new_run(&ns, "a", "q2", 1_002)).await;
    let new = new_run(&ns, "a", "q3", 1_003);
    let new_id = new.id.clone();
    let both = start_claim(
        store,
        new,
        claim_req(&ns, &["q2", "q3", "q"], &["a"], 5, 1_003),
    )
    .await;
    let mut got: Vec<&str> = both.tasks.iter().map(|t| t.run.id.as_str()).collect();
    got.sort();
    let mut want = vec![waiting.id.as_str(), new_id.as_str(), low_id.as_str()];
    want.sort();
    assert_eq!(got, want);
}

/// A publish resuming one run for two parked polls of its job hands it to one of them only.
pub async fn never_twice(store: &Arc<dyn Store>) {
    let ns = ns("handoff-twice");
    let run = start(store, new_run(&ns, "job", "q", 1_000)).await;
    let t = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 1_000))
        .await
        .unwrap()
        .remove(0);
    let lease = LeaseRef {
        namespace: ns.clone(),
        run_id: run.id.clone(),
        token: t.lease_token,
    };
    let wait = WaitSpec::Event {
        name: "ev".to_owned(),
        correlation_key: "k".to_owned(),
        timeout_at: 10_000_000,
    };
    let out = store
        .suspend_run(lease, "w".into(), wait, 1_001)
        .await
        .unwrap();
    assert!(matches!(out, SuspendOutcome::Suspended { .. }), "{out:?}");
    let reqs = vec![
        claim_req(&ns, &["q"], &["job"], 1, 2_000),
        claim_req(&ns, &["q"], &["job"], 1, 2_000),
    ];
    let pick: ClaimPicker = Arc::new(move |_: &PublishOutcome| reqs.clone());
    let event = NewEvent {
        namespace: ns.clone(),
        id: "e".to_owned(),
        name: "ev".to_owned(),
        correlation_key: "k".to_owned(),
        payload: "{}".to_owned(),
        now: 2_000,
        triggered: Vec::new(),
    };
    let (out, claims) = store.publish_event_and_claim(event, pick).await.unwrap();
    assert_eq!(out.resumed.len(), 1);
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[0].tasks.len(), 1);
    assert!(claims[0].tasks[0].resumed, "the same attempt continues");
    assert_eq!(claims[0].tasks[0].run.attempt, 1);
    assert!(claims[1].tasks.is_empty(), "one run, one poll");
    let d = detail(store, &ns, &run.id).await;
    assert_eq!(d.attempts.len(), 1, "no new attempt for a resumed run");
    assert_eq!(d.run.status, RunStatus::Running);
}

/// On an idle store a start's handoff costs a handful of writer statements (the direct
/// claim: no savepoint, no queue or priority reads on SQLite).
pub async fn statements_per_handoff(sql: Arc<super::super::SqlStore>) {
    let store: Arc<dyn Store> = sql.clone();
    let store = &store;
    use std::sync::atomic::Ordering::Relaxed;
    let ns = ns("handoff-statements");
    start(store, new_run(&ns, "a", "warm", 1_000)).await; // the queue row exists
    let stats = sql.writer().stats();
    let before = stats.statements.load(Relaxed);
    let claim = start_claim(
        store,
        new_run(&ns, "a", "warm", 1_001),
        claim_req(&ns, &["warm"], &["a"], 5, 1_001),
    )
    .await;
    let used = stats.statements.load(Relaxed) - before;
    // 1 already queued: the general claim.
    assert_eq!(claim.tasks.len(), 2);
    let before = stats.statements.load(Relaxed);
    let claim = start_claim(
        store,
        new_run(&ns, "a", "warm", 1_002),
        claim_req(&ns, &["warm"], &["a"], 5, 1_002),
    )
    .await;
    let direct = stats.statements.load(Relaxed) - before;
    assert_eq!(claim.tasks.len(), 1);
    let limit = match sql.backend() {
        // BEGIN, the guarded INSERT of the run already running, INSERT attempts, the
        // timeline flush, COMMIT (a commit of one write opens no savepoint).
        super::super::Backend::Sqlite => 5,
        // The same plus the notification flush.
        super::super::Backend::Postgres => 6,
    };
    assert_eq!(
        direct, limit,
        "direct handoff: {direct} statements (general: {used})"
    );
    assert!(direct < used, "direct {direct} < general {used}");
}

/// A start handed over directly (inserted already running) takes the run's own lease over
/// the queue's and the poll's; when the poll does not serve the run, has no room or the
/// start is a duplicate, nothing is claimed and the run is exactly a plain start's (queued,
/// one `created` entry, no attempt); the run handed over is never delivered again.
pub async fn direct_start_falls_back(store: &Arc<dyn Store>) {
    let ns = ns("handoff-direct");
    let config = QueueConfig {
        lease_timeout_ms: Some(7_000),
        ..QueueConfig::default()
    };
    limited(store, &ns, "q", config).await;
    // The run's own lease wins over the queue's default.
    let mut own = new_run(&ns, "a", "q", 1_000);
    own.lease_timeout_ms = Some(3_000);
    let id = own.id.clone();
    let claim = start_claim(store, own, claim_req(&ns, &["q"], &["a"], 1, 1_000)).await;
    assert_eq!(claim.tasks.len(), 1);
    assert_eq!(claim.tasks[0].lease_ms, 3_000);
    assert_eq!(claim.tasks[0].lease_deadline, 4_000);
    let d = detail(store, &ns, &id).await;
    assert_eq!(d.run.status, RunStatus::Running);
    assert_eq!(d.run.effective_lease_ms, Some(3_000));
    assert_eq!(d.run.lease_expires_at, Some(4_000));
    assert_eq!(d.attempts.len(), 1);
    // Handed over once: no claim delivers it again while its lease holds.
    let again = store
        .claim(claim_req(&ns, &["q"], &["a"], 5, 1_001))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");

    // Not served by the poll (another job, another queue) or no room: a plain start.
    for req in [
        claim_req(&ns, &["q"], &["other"], 5, 2_000),
        claim_req(&ns, &["other"], &["a"], 5, 2_000),
        claim_req(&ns, &["q"], &["a"], 0, 2_000),
    ] {
        let new = new_run(&ns, "a", "q", 2_000);
        let id = new.id.clone();
        let claim = start_claim(store, new, req).await;
        assert!(claim.tasks.is_empty());
        let d = detail(store, &ns, &id).await;
        assert_eq!(d.run.status, RunStatus::Queued);
        assert_eq!((d.run.attempt, d.run.lease_token.clone()), (0, None));
        assert!(d.attempts.is_empty());
        assert_eq!(d.timeline.len(), 1, "created only");
        // Claimed later, it becomes an ordinary first attempt.
        let t = store
            .claim(claim_req(&ns, &["q"], &["a"], 5, 2_001))
            .await
            .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].run.id.as_str(), t[0].run.attempt), (id.as_str(), 1));
    }

    // A duplicate start (its idempotency key is live) claims nothing and leaves the run
    // holding the key as it is.
    let mut first = new_run(&ns, "a", "keyed", 3_000);
    first.idempotency = Some(("k".to_owned(), 100_000));
    let held = start(store, first).await;
    let mut dup = new_run(&ns, "a", "keyed", 3_001);
    dup.idempotency = Some(("k".to_owned(), 100_000));
    let (out, claim) = store
        .start_and_claim(dup, claim_req(&ns, &["keyed"], &["a"], 5, 3_001))
        .await
        .unwrap();
    assert!(
        matches!(&out, StartOutcome::Duplicate(r) if r.id == held.id),
        "{out:?}"
    );
    assert!(claim.tasks.is_empty());
    let d = detail(store, &ns, &held.id).await;
    assert_eq!(
        d.run.status,
        RunStatus::Queued,
        "the held run is not claimed by a duplicate"
    );
    // A keyed start handed over directly takes its key.
    let mut keyed = new_run(&ns, "a", "keyed2", 3_002);
    keyed.idempotency = Some(("k2".to_owned(), 100_000));
    let keyed_id = keyed.id.clone();
    let claim = start_claim(store, keyed, claim_req(&ns, &["keyed2"], &["a"], 5, 3_002)).await;
    assert_eq!(claim.tasks.len(), 1);
    let mut again = new_run(&ns, "a", "keyed2", 3_003);
    again.idempotency = Some(("k2".to_owned(), 100_000));
    let out = store.start_run(again).await.unwrap();
    assert!(
        matches!(&out, StartOutcome::Duplicate(r) if r.id == keyed_id),
        "{out:?}"
    );
}
