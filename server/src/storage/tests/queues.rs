//! Contract checks of queues: configuration, auto-creation, priorities, delays, fairness,
//! concurrency limits (global and per key), rate limits, pause, queue defaults, statistics.

use std::sync::Arc;

use crate::engine::model::{ClaimRequest, Failure, LeaseRef, NewRun, RunStatus};
use crate::engine::queue_model::{ClaimOutcome, QueueConfig, RateLimit};
use crate::engine::requests::RetryPolicyInput;
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};

fn lease(task: &crate::engine::model::ClaimedTask) -> LeaseRef {
    LeaseRef {
        namespace: task.run.namespace.clone(),
        run_id: task.run.id.clone(),
        token: task.lease_token.clone(),
    }
}

async fn claim(store: &Arc<dyn Store>, req: ClaimRequest) -> ClaimOutcome {
    store.claim_queued(req).await.unwrap()
}

fn keyed(ns: &str, queue: &str, key: Option<&str>, now: i64) -> NewRun {
    let mut r = new_run(ns, "job", queue, now);
    r.concurrency_key = key.map(str::to_owned);
    r
}

pub async fn config_lifecycle(store: &Arc<dyn Store>) {
    let ns = ns("qcfg");
    assert!(store.get_queue(&ns, "emails").await.unwrap().is_none());
    assert!(
        store
            .set_queue_paused(&ns, "emails", true, 1_000)
            .await
            .unwrap()
            .is_none(),
        "pausing an unknown queue changes nothing"
    );
    assert!(store.get_queue(&ns, "emails").await.unwrap().is_none());

    let config = QueueConfig {
        concurrency_limit: Some(3),
        key_concurrency_limit: Some(1),
        rate_limit: Some(RateLimit {
            limit: 10,
            period_ms: 60_000,
        }),
        retry: RetryPolicyInput {
            max_attempts: Some(2),
            initial_interval_ms: Some(500),
            backoff_coefficient: None,
            maximum_interval_ms: None,
        },
        lease_timeout_ms: Some(5_000),
    };
    let (q, created) = store
        .upsert_queue(&ns, "emails", config.clone(), None, 1_000)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(q.config, config);
    assert!(!q.paused);
    assert_eq!((q.created_at, q.updated_at), (1_000, 1_000));
    assert_eq!(store.get_queue(&ns, "emails").await.unwrap(), Some(q));

    // Pause and resume; an upsert without `paused` keeps the switch, and replaces the
    // whole configuration.
    let p = store
        .set_queue_paused(&ns, "emails", true, 2_000)
        .await
        .unwrap()
        .unwrap();
    assert!(p.paused);
    assert_eq!(p.updated_at, 2_000);
    let (q, created) = store
        .upsert_queue(&ns, "emails", QueueConfig::default(), None, 3_000)
        .await
        .unwrap();
    assert!(!created);
    assert!(q.paused);
    assert_eq!(q.config, QueueConfig::default());
    assert_eq!(q.created_at, 1_000);
    let (q, _) = store
        .upsert_queue(&ns, "emails", QueueConfig::default(), Some(false), 4_000)
        .await
        .unwrap();
    assert!(!q.paused);

    // Listing: name order, cursor paging, namespaces apart.
    for name in ["c", "a", "b"] {
        store
            .upsert_queue(&ns, name, QueueConfig::default(), None, 5_000)
            .await
            .unwrap();
    }
    let page = store.list_queues(&ns, None, 2).await.unwrap();
    let names: Vec<&str> = page.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
    let page = store.list_queues(&ns, Some("b"), 10).await.unwrap();
    let names: Vec<&str> = page.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, vec!["c", "emails"]);
    let other = self::ns("qcfg-other");
    assert!(
        store
            .list_queues(&other, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.get_queue(&other, "emails").await.unwrap().is_none());
}

pub async fn starts_create_queues(store: &Arc<dyn Store>) {
    let ns = ns("qauto");
    let run = start(store, new_run(&ns, "job", "fresh", 1_000)).await;
    let q = store.get_queue(&ns, "fresh").await.unwrap().unwrap();
    assert_eq!(q.config, QueueConfig::default());
    assert!(!q.paused);
    assert_eq!(q.created_at, 1_000);
    assert_eq!(run.queue, "fresh");

    // Concurrent first starts on one new queue: none fails on the queue's unique key.
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        let r = new_run(&ns, "job", "burst", 2_000 + i);
        handles.push(tokio::spawn(async move { store.start_run(r).await }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert!(store.get_queue(&ns, "burst").await.unwrap().is_some());
    let listed = store.list_queues(&ns, None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
}

pub async fn priorities_and_fifo(store: &Arc<dyn Store>) {
    let ns = ns("qprio");
    let mut ids = Vec::new();
    for (i, p) in [0, 5, 0, 5, -3, 1000].into_iter().enumerate() {
        let mut r = new_run(&ns, "job", "q", 1_000 + i as i64);
        r.priority = p;
        ids.push(start(store, r).await.id);
    }
    let mut order = Vec::new();
    for t in 0..6 {
        let out = claim(store, claim_req(&ns, &["q"], &["job"], 1, 2_000 + t)).await;
        order.push(out.tasks[0].run.id.clone());
        assert_eq!(
            out.tasks[0].run.priority,
            [1000, 5, 5, 0, 0, -3][t as usize]
        );
    }
    let expected: Vec<String> = [5, 1, 3, 0, 2, 4].iter().map(|i| ids[*i].clone()).collect();
    assert_eq!(
        order, expected,
        "higher priority first, FIFO within a priority"
    );

    // FIFO is by deliverable time: a run that became deliverable earlier goes first.
    let mut late = new_run(&ns, "job", "q2", 3_000);
    late.available_at = 3_500;
    let late = start(store, late).await;
    let early = start(store, new_run(&ns, "job", "q2", 3_100)).await;
    let out = claim(store, claim_req(&ns, &["q2"], &["job"], 2, 4_000)).await;
    let got: Vec<&str> = out.tasks.iter().map(|t| t.run.id.as_str()).collect();
    assert_eq!(got, vec![early.id.as_str(), late.id.as_str()]);
}

pub async fn delayed_runs(store: &Arc<dyn Store>) {
    let ns = ns("qdelay");
    let base = 6_000_000_000_000;
    // Reap leases and resolve waits left by earlier checks (which use other time bases),
    // so that only this check's instants are due.
    while store.expire_leases(base, 1_000).await.unwrap() != Default::default() {}
    while !store
        .resolve_due_waits(base, 1_000)
        .await
        .unwrap()
        .is_empty()
    {}
    let mut r = new_run(&ns, "job", "q", base);
    r.available_at = base + 10_000;
    let run = start(store, r).await;
    assert_eq!(run.available_at, base + 10_000);
    assert_eq!(run.status, RunStatus::Queued);
    // Never delivered before its time; the timer knows when it falls due.
    let early = claim(store, claim_req(&ns, &["q"], &["job"], 5, base + 9_999)).await;
    assert!(early.tasks.is_empty());
    assert!(early.blocked.is_empty(), "a delay is not a block");
    assert_eq!(store.next_due(base).await.unwrap(), Some(base + 10_000));
    let due = store.due_runs(base, base + 10_000, 10).await.unwrap();
    assert_eq!(due, vec![(ns.clone(), "q".to_owned(), "job".to_owned())]);
    let on_time = claim(store, claim_req(&ns, &["q"], &["job"], 5, base + 10_000)).await;
    assert_eq!(on_time.tasks.len(), 1);
    assert_eq!(on_time.tasks[0].run.id, run.id);
}

pub async fn fairness_across_queues(store: &Arc<dyn Store>) {
    let ns = ns("qfair");
    for i in 0..20 {
        start(store, new_run(&ns, "job", "deep", 1_000 + i)).await;
    }
    for i in 0..2 {
        start(store, new_run(&ns, "job", "shallow", 2_000 + i)).await;
    }
    // One task at a time: the shallow queue's runs come within the first four claims even
    // though every deep run is older.
    let mut queues = Vec::new();
    for t in 0..4 {
        let out = claim(
            store,
            claim_req(&ns, &["deep", "shallow"], &["job"], 1, 3_000 + t),
        )
        .await;
        queues.push(out.tasks[0].run.queue.clone());
    }
    assert_eq!(
        queues.iter().filter(|q| *q == "shallow").count(),
        2,
        "{queues:?}"
    );

    // Several tasks at once: each queue gets an equal share first, the rest goes to queues
    // that have more.
    for i in 0..3 {
        start(store, new_run(&ns, "job", "shallow", 4_000 + i)).await;
    }
    let out = claim(
        store,
        claim_req(&ns, &["deep", "shallow"], &["job"], 4, 5_000),
    )
    .await;
    let shallow = out
        .tasks
        .iter()
        .filter(|t| t.run.queue == "shallow")
        .count();
    assert_eq!((out.tasks.len(), shallow), (4, 2));
    let out = claim(
        store,
        claim_req(&ns, &["deep", "shallow"], &["job"], 10, 5_001),
    )
    .await;
    let shallow = out
        .tasks
        .iter()
        .filter(|t| t.run.queue == "shallow")
        .count();
    assert_eq!(
        (out.tasks.len(), shallow),
        (10, 1),
        "the leftover share goes to deep"
    );
}

pub async fn concurrency_limit(store: &Arc<dyn Store>) {
    let ns = ns("qlimit");
    let limited = QueueConfig {
        concurrency_limit: Some(2),
        ..QueueConfig::default()
    };
    store
        .upsert_queue(&ns, "q", limited, None, 0)
        .await
        .unwrap();
    for i in 0..5 {
        start(store, new_run(&ns, "job", "q", 1_000 + i)).await;
    }
    let first = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_000)).await;
    assert_eq!(first.tasks.len(), 2);
    assert_eq!(first.blocked, vec!["q".to_owned()]);
    let full = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_001)).await;
    assert!(full.tasks.is_empty());
    assert_eq!(full.blocked, vec!["q".to_owned()]);
    assert!(!full.contended);
    // Completing one frees one slot; failing one (a retry) frees another.
    store
        .complete_run(lease(&first.tasks[0]), "1".into(), 2_002)
        .await
        .unwrap();
    let one = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_003)).await;
    assert_eq!(one.tasks.len(), 1);
    store
        .fail_run(lease(&first.tasks[1]), Failure::new("x", "E"), 2_004)
        .await
        .unwrap();
    let one = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_005)).await;
    assert_eq!(one.tasks.len(), 1);
    // An expired lease frees its slot too, and says which queue it released.
    let expired = store.expire_leases(2_005 + 30_000, 1_000).await.unwrap();
    assert!(expired.released.contains(&(ns.clone(), "q".to_owned())));
    let more = claim(store, claim_req(&ns, &["q"], &["job"], 10, 40_000)).await;
    assert_eq!(more.tasks.len(), 2);

    // Raising the limit lets more through at once.
    let raised = QueueConfig {
        concurrency_limit: Some(100),
        ..QueueConfig::default()
    };
    store
        .upsert_queue(&ns, "q", raised, None, 40_001)
        .await
        .unwrap();
    for i in 0..3 {
        start(store, new_run(&ns, "job", "q", 40_002 + i)).await;
    }
    let all = claim(store, claim_req(&ns, &["q"], &["job"], 10, 40_010)).await;
    assert!(all.tasks.len() >= 3, "{}", all.tasks.len());
}

pub async fn key_concurrency_limit(store: &Arc<dyn Store>) {
    let ns = ns("qkeys");
    let config = QueueConfig {
        key_concurrency_limit: Some(1),
        ..QueueConfig::default()
    };
    store.upsert_queue(&ns, "q", config, None, 0).await.unwrap();
    // Four runs of key a first, then b, c and one without a key.
    let keys = [
        Some("a"),
        Some("a"),
        Some("a"),
        Some("a"),
        Some("b"),
        Some("c"),
        None,
    ];
    for (t, key) in (1_000..).zip(keys) {
        start(store, keyed(&ns, "q", key, t)).await;
    }
    // Asking for 2: the batch holds a, a; the second a is skipped and the claim selects
    // again past the saturated key.
    let out = claim(store, claim_req(&ns, &["q"], &["job"], 2, 2_000)).await;
    let keys: Vec<Option<&str>> = out
        .tasks
        .iter()
        .map(|t| t.run.concurrency_key.as_deref())
        .collect();
    assert_eq!(keys, vec![Some("a"), Some("b")]);
    let out2 = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_001)).await;
    let keys: Vec<Option<&str>> = out2
        .tasks
        .iter()
        .map(|t| t.run.concurrency_key.as_deref())
        .collect();
    assert_eq!(
        keys,
        vec![Some("c"), None],
        "keyless runs are not key-limited"
    );
    assert_eq!(out2.blocked, vec!["q".to_owned()]);
    let none = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_002)).await;
    assert!(none.tasks.is_empty());
    // Stats show the running count per key.
    let q = store.get_queue(&ns, "q").await.unwrap().unwrap();
    let stats = store.queue_stats(&q, 2_003).await.unwrap();
    assert_eq!(stats.running, 4);
    assert_eq!(stats.queued, 3);
    assert_eq!(
        stats.running_by_key,
        vec![
            ("a".to_owned(), 1),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1)
        ]
    );
    // Finishing a's run lets exactly the next a through.
    store
        .complete_run(lease(&out.tasks[0]), "1".into(), 2_004)
        .await
        .unwrap();
    let next = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_005)).await;
    assert_eq!(next.tasks.len(), 1);
    assert_eq!(next.tasks[0].run.concurrency_key.as_deref(), Some("a"));
}

pub async fn rate_limit(store: &Arc<dyn Store>) {
    let ns = ns("qrate");
    let config = QueueConfig {
        rate_limit: Some(RateLimit {
            limit: 3,
            period_ms: 1_000,
        }),
        ..QueueConfig::default()
    };
    store.upsert_queue(&ns, "q", config, None, 0).await.unwrap();
    for i in 0..8 {
        start(store, new_run(&ns, "job", "q", 100 + i)).await;
    }
    let first = claim(store, claim_req(&ns, &["q"], &["job"], 10, 10_000)).await;
    assert_eq!(first.tasks.len(), 3);
    let more = claim(store, claim_req(&ns, &["q"], &["job"], 10, 10_400)).await;
    assert!(more.tasks.is_empty());
    assert_eq!(
        more.retry_at,
        Some(11_000),
        "the window reopens 1 s after the first start"
    );
    // Completing runs does not refill a rate window (unlike a concurrency limit).
    for t in &first.tasks {
        store
            .complete_run(lease(t), "1".into(), 10_500)
            .await
            .unwrap();
    }
    let still = claim(store, claim_req(&ns, &["q"], &["job"], 10, 10_999)).await;
    assert!(still.tasks.is_empty());
    let q = store.get_queue(&ns, "q").await.unwrap().unwrap();
    assert_eq!(
        store
            .queue_stats(&q, 10_999)
            .await
            .unwrap()
            .rate_window_started,
        3
    );
    let reopened = claim(store, claim_req(&ns, &["q"], &["job"], 10, 11_000)).await;
    assert_eq!(reopened.tasks.len(), 3);
    // Sliding, not fixed: one start at 11_500 leaves no room until 12_000.
    let partial = claim(store, claim_req(&ns, &["q"], &["job"], 10, 11_500)).await;
    assert!(partial.tasks.is_empty());
    assert_eq!(partial.retry_at, Some(12_000));
    let last = claim(store, claim_req(&ns, &["q"], &["job"], 10, 12_000)).await;
    assert_eq!(last.tasks.len(), 2);
}

pub async fn pause_and_resume(store: &Arc<dyn Store>) {
    let ns = ns("qpause");
    for i in 0..3 {
        start(store, new_run(&ns, "job", "q", 1_000 + i)).await;
    }
    start(store, new_run(&ns, "job", "open", 1_000)).await;
    store.set_queue_paused(&ns, "q", true, 1_500).await.unwrap();
    let out = claim(store, claim_req(&ns, &["q", "open"], &["job"], 10, 2_000)).await;
    assert_eq!(out.tasks.len(), 1, "only the open queue delivers");
    assert_eq!(out.tasks[0].run.queue, "open");
    assert_eq!(out.blocked, vec!["q".to_owned()]);
    let q = store.get_queue(&ns, "q").await.unwrap().unwrap();
    assert_eq!(store.queue_stats(&q, 2_000).await.unwrap().queued, 3);
    store
        .set_queue_paused(&ns, "q", false, 3_000)
        .await
        .unwrap();
    let out = claim(store, claim_req(&ns, &["q"], &["job"], 10, 3_001)).await;
    assert_eq!(out.tasks.len(), 3, "nothing was lost while paused");
}

pub async fn queue_defaults(store: &Arc<dyn Store>) {
    let ns = ns("qdefaults");
    let config = QueueConfig {
        lease_timeout_ms: Some(5_000),
        ..QueueConfig::default()
    };
    store.upsert_queue(&ns, "q", config, None, 0).await.unwrap();
    let own = {
        let mut r = new_run(&ns, "job", "q", 1_000);
        r.lease_timeout_ms = Some(9_000);
        start(store, r).await
    };
    let plain = start(store, new_run(&ns, "job", "q", 1_001)).await;
    let mut req = claim_req(&ns, &["q"], &["job"], 10, 2_000);
    req.jobs[0].lease_timeout_ms = Some(20_000);
    let out = claim(store, req).await;
    let lease_of = |id: &str| out.tasks.iter().find(|t| t.run.id == id).unwrap().lease_ms;
    assert_eq!(lease_of(&own.id), 9_000, "the start's lease wins");
    assert_eq!(
        lease_of(&plain.id),
        5_000,
        "the queue's lease wins over the job's"
    );
}

pub async fn stats(store: &Arc<dyn Store>) {
    let ns = ns("qstats");
    let now = 100_000;
    for i in 0..4 {
        start(store, new_run(&ns, "job", "q", now - 10_000 + i)).await;
    }
    let mut delayed = new_run(&ns, "job", "q", now);
    delayed.available_at = now + 60_000;
    start(store, delayed).await;
    let out = claim(store, claim_req(&ns, &["q"], &["job"], 2, now)).await;
    store
        .complete_run(lease(&out.tasks[0]), "1".into(), now)
        .await
        .unwrap();
    let q = store.get_queue(&ns, "q").await.unwrap().unwrap();
    let s = store.queue_stats(&q, now + 1_000).await.unwrap();
    assert_eq!((s.queued, s.delayed, s.running, s.completed), (3, 1, 1, 1));
    assert_eq!((s.failed, s.cancelled, s.waiting), (0, 0, 0));
    assert_eq!(s.oldest_ready_at, Some(now - 10_000 + 2));
    assert!(s.running_by_key.is_empty(), "no run has a key");
    assert_eq!(s.rate_window_started, 0);
}

/// Runs suspended in `waiting` (durable sleep, waiting for an event; set here directly, as
/// the suspension RPC of the events work does) hold no lease and count against no limit.
pub async fn waiting_runs_hold_no_capacity(sql: &super::SqlStore) {
    use sea_orm::ConnectionTrait;
    let store: Arc<dyn Store> = Arc::new(sql.clone());
    let store = &store;
    let ns = ns("qwaiting");
    let config = QueueConfig {
        concurrency_limit: Some(1),
        key_concurrency_limit: Some(1),
        ..QueueConfig::default()
    };
    store.upsert_queue(&ns, "q", config, None, 0).await.unwrap();
    for t in 0..2 {
        start(store, keyed(&ns, "q", Some("k"), 1_000 + t)).await;
    }
    let first = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_000)).await;
    assert_eq!(first.tasks.len(), 1);
    let full = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_001)).await;
    assert!(full.tasks.is_empty());
    let id = &first.tasks[0].run.id;
    sql.connection()
        .execute_unprepared(&format!(
            "UPDATE runs SET status = 'waiting', lease_token = NULL, lease_expires_at = NULL \
             WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    let next = claim(store, claim_req(&ns, &["q"], &["job"], 10, 2_002)).await;
    assert_eq!(
        next.tasks.len(),
        1,
        "a waiting run frees its slot and its key"
    );
    let q = store.get_queue(&ns, "q").await.unwrap().unwrap();
    let stats = store.queue_stats(&q, 2_003).await.unwrap();
    assert_eq!((stats.waiting, stats.running), (1, 1));
}

/// PostgreSQL, two stores on one database (two replicas): completions arriving together
/// (batched by the writer) on a limited queue tell the other replica that capacity was
/// released, at most once per group commit (the writer publishes one `Capacity`
/// notification per queue and batch; PostgreSQL would also fold identical notifications of
/// one transaction); an unlimited queue's completions announce nothing.
pub async fn completions_announce_capacity(
    a: &crate::storage::SqlStore,
    b: &crate::storage::SqlStore,
) {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use crate::engine::store::Wakeup;

    let store: Arc<dyn Store> = Arc::new(a.clone());
    let ns = ns("qcap-announce");
    let limited = QueueConfig {
        concurrency_limit: Some(100),
        ..QueueConfig::default()
    };
    store
        .upsert_queue(&ns, "lim", limited, None, 0)
        .await
        .unwrap();
    for i in 0..12 {
        let queue = if i < 8 { "lim" } else { "free" };
        start(&store, new_run(&ns, "job", queue, 1_000 + i)).await;
    }
    let tasks = claim(
        &store,
        claim_req(&ns, &["lim", "free"], &["job"], 20, 2_000),
    )
    .await
    .tasks;
    assert_eq!(tasks.len(), 12);
    let mut rx = super::listening(b).await;
    let commits = a.writer.stats().commits.load(Relaxed);
    let done = futures::future::join_all(
        tasks
            .iter()
            .map(|t| store.complete_run(lease(t), "1".into(), 3_000)),
    )
    .await;
    assert!(done.iter().all(Result::is_ok), "{done:?}");
    let commits = a.writer.stats().commits.load(Relaxed) - commits;
    let (mut lim, mut free) = (0u64, 0u64);
    while let Ok(Some(w)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        if let Wakeup::Capacity { namespace, queue } = w
            && namespace == ns
        {
            match queue.as_str() {
                "lim" => lim += 1,
                _ => free += 1,
            }
        }
    }
    assert!(lim >= 1, "the released capacity is announced");
    assert!(
        lim <= commits,
        "{lim} notifications for 8 completions in {commits} commits"
    );
    assert_eq!(free, 0, "an unlimited queue announces nothing");
}
