//! Queue concurrency limits end to end, with the native Rust SDK's workers against the real
//! server binary: a global limit under far more worker slots than it allows, a per-key
//! limit while other keys proceed, and one limit shared by two server replicas on one
//! PostgreSQL. Each handler writes the start and end instant of its step into a ledger
//! outside the engine; the maximum overlap in that ledger is what the tests check.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use stackshift::{
    ClientOptions, JobContext, QueueConfig, RunStatus, StackShift, StartOptions, Worker,
    WorkerHandle,
};
use support::{Db, TestServer};

/// Generous bound for a workload to finish on a loaded machine.
const WAIT: Duration = Duration::from_secs(120);

/// `(key, step start, step end)` per executed step.
type Ledger = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

#[derive(Deserialize)]
struct Payload {
    key: String,
}

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

/// A worker with `slots` concurrency slots on `queue`, whose `work` job runs one step of
/// `step_ms` and records it in `ledger`.
fn worker(
    c: &StackShift,
    queue: &str,
    slots: usize,
    step_ms: u64,
    ledger: &Ledger,
) -> WorkerHandle {
    let ledger = ledger.clone();
    Worker::builder(c.clone())
        .queues([queue])
        .concurrency(slots)
        .poll_wait(Duration::from_secs(10))
        .job("work", move |ctx: JobContext<Payload>| {
            let ledger = ledger.clone();
            async move {
                let key = ctx.payload.key.clone();
                ctx.step
                    .run("work", || async move {
                        let begin = Instant::now();
                        tokio::time::sleep(Duration::from_millis(step_ms)).await;
                        ledger.lock().unwrap().push((key, begin, Instant::now()));
                        anyhow::Ok(())
                    })
                    .await?;
                Ok(())
            }
        })
        .build()
        .start()
}

/// The largest number of intervals open at one instant (an interval ending exactly when
/// another begins does not overlap it).
fn max_overlap<'a>(intervals: impl Iterator<Item = &'a (String, Instant, Instant)>) -> usize {
    let mut events: Vec<(Instant, i32)> = Vec::new();
    for (_, begin, end) in intervals {
        events.push((*begin, 1));
        events.push((*end, -1));
    }
    // Ends sort before begins at the same instant.
    events.sort();
    let (mut open, mut max) = (0i32, 0i32);
    for (_, delta) in events {
        open += delta;
        max = max.max(open);
    }
    max as usize
}

/// Starts `n` runs of `work` on `queue`, with keys chosen by `key_of`.
async fn start_runs(
    c: &StackShift,
    queue: &str,
    n: usize,
    key_of: impl Fn(usize) -> Option<String>,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let key = key_of(i);
        let mut opts = StartOptions::default();
        if let Some(k) = &key {
            opts = opts.concurrency_key(k.clone());
        }
        let payload = serde_json::json!({ "key": key.unwrap_or_default() });
        ids.push(
            c.queue(queue)
                .enqueue("work", &payload, opts)
                .await
                .unwrap()
                .id,
        );
    }
    ids
}

async fn wait_all_completed(c: &StackShift, ids: &[String]) {
    for id in ids {
        let run = c.wait_for_run(id, WAIT).await.unwrap();
        assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    }
}

async fn concurrency_limit_of_3_holds_for_200_runs_on_8_slots(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let q = c.queue("limited");
    q.configure(QueueConfig::new().concurrency_limit(3))
        .await
        .unwrap();
    // Start first, then let 8 slots (two workers of 4) loose on the backlog.
    let ids = start_runs(&c, "limited", 200, |_| None).await;
    let ledger: Ledger = Arc::default();
    let t0 = Instant::now();
    let workers = [
        worker(&c, "limited", 4, 10, &ledger),
        worker(&c, "limited", 4, 10, &ledger),
    ];
    // While it runs, the live count never shows more than 3 running.
    let mut seen_running = 0;
    while c.get_run(&ids[199]).await.unwrap().status != RunStatus::Completed {
        let stats = q.get().await.unwrap().stats;
        assert!(stats.running <= 3, "{stats:?}");
        seen_running = seen_running.max(stats.running);
        assert!(t0.elapsed() < WAIT, "workload did not finish");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait_all_completed(&c, &ids).await;
    let elapsed = t0.elapsed();
    for w in workers {
        w.shutdown().await;
    }
    let ledger = ledger.lock().unwrap().clone();
    assert_eq!(ledger.len(), 200, "every run executed its step once");
    let max = max_overlap(ledger.iter());
    eprintln!(
        "limit 3, 8 slots, 200 runs: max {max} steps at once (stats saw {seen_running} \
         running), {elapsed:?}"
    );
    assert!(max <= 3, "the limit of 3 was exceeded: {max} at once");
    assert!(max >= 2, "the queue never ran runs in parallel ({max})");
    let stats = q.get().await.unwrap().stats;
    assert_eq!((stats.completed, stats.running, stats.queued), (200, 0, 0));
}
both_stores!(concurrency_limit_of_3_holds_for_200_runs_on_8_slots);

async fn per_key_limit_of_1_holds_while_other_keys_proceed(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let q = c.queue("per-key");
    q.configure(QueueConfig::new().key_concurrency_limit(1))
        .await
        .unwrap();
    // Customer 0 floods the queue first; customers 1-3 arrive behind it.
    let mut ids = start_runs(&c, "per-key", 30, |_| Some("customer-0".into())).await;
    ids.extend(
        start_runs(&c, "per-key", 30, |i| {
            Some(format!("customer-{}", 1 + i % 3))
        })
        .await,
    );
    let ledger: Ledger = Arc::default();
    let t0 = Instant::now();
    let w = worker(&c, "per-key", 8, 20, &ledger);
    wait_all_completed(&c, &ids).await;
    let elapsed = t0.elapsed();
    w.shutdown().await;
    let ledger = ledger.lock().unwrap().clone();
    assert_eq!(ledger.len(), 60);
    let mut per_key: HashMap<&str, Vec<&(String, Instant, Instant)>> = HashMap::new();
    for entry in &ledger {
        per_key.entry(entry.0.as_str()).or_default().push(entry);
    }
    assert_eq!(per_key.len(), 4);
    for (key, entries) in &per_key {
        let max = max_overlap(entries.iter().copied());
        assert_eq!(max, 1, "key {key} ran {max} at once");
    }
    let overall = max_overlap(ledger.iter());
    eprintln!("per-key limit 1, 4 keys, 8 slots: max {overall} at once overall, {elapsed:?}");
    assert!(
        overall >= 2,
        "other keys did not proceed while one key was running ({overall})"
    );
    // The flooding customer did not starve the others: they were done long before it.
    let last_end = |key: &str| per_key[key].iter().map(|e| e.2).max().unwrap();
    for k in ["customer-1", "customer-2", "customer-3"] {
        assert!(
            last_end(k) < last_end("customer-0"),
            "{k} finished after customer-0"
        );
    }
}
both_stores!(per_key_limit_of_1_holds_while_other_keys_proceed);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_respect_one_concurrency_limit() {
    let Some(a) = TestServer::start(Db::Postgres).await else {
        return;
    };
    let b = a.replica();
    let (ca, cb) = (client(&a), client(&b));
    ca.queue("shared")
        .configure(QueueConfig::new().concurrency_limit(3))
        .await
        .unwrap();
    // Runs started through both replicas; four slots polling each replica.
    let mut ids = start_runs(&ca, "shared", 40, |_| None).await;
    ids.extend(start_runs(&cb, "shared", 40, |_| None).await);
    let ledger: Ledger = Arc::default();
    let t0 = Instant::now();
    let workers = [
        worker(&ca, "shared", 4, 15, &ledger),
        worker(&cb, "shared", 4, 15, &ledger),
    ];
    // Poll the queue's counts: `wait_for_run` long-polls one replica, which is not told
    // when the other replica completes a run (it then answers at the end of its wait).
    loop {
        let stats = ca.queue("shared").get().await.unwrap().stats;
        assert!(stats.running <= 3, "{stats:?}");
        if stats.completed == 80 {
            break;
        }
        assert!(t0.elapsed() < WAIT, "workload did not finish: {stats:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let elapsed = t0.elapsed();
    for w in workers {
        w.shutdown().await;
    }
    let ledger = ledger.lock().unwrap().clone();
    assert_eq!(ledger.len(), 80);
    let max = max_overlap(ledger.iter());
    eprintln!("two replicas, limit 3, 8 slots, 80 runs: max {max} at once, {elapsed:?}");
    assert!(
        max <= 3,
        "the shared limit of 3 was exceeded: {max} at once"
    );
    assert!(max >= 2, "{max}");
    // Both replicas' workers took part (capacity freed on one replica woke the other).
    let by_worker = ca.list_runs(stackshift::ListRunsOptions {
        queue: Some("shared".into()),
        page_size: Some(100),
        ..Default::default()
    });
    let runs = by_worker.await.unwrap().runs;
    assert_eq!(runs.len(), 80);
    let mut workers_seen = std::collections::HashSet::new();
    for r in runs.iter().take(80) {
        let detail = ca.get_run(&r.id).await.unwrap();
        workers_seen.insert(detail.attempts[0].worker_id.clone());
    }
    assert_eq!(workers_seen.len(), 2, "{workers_seen:?}");
}

async fn sdk_start_options_and_queue_calls(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let q = c.queue("sdk-queue");
    // A queue that nothing created yet is not found; enqueue creates it.
    assert_eq!(q.get().await.unwrap_err().code(), tonic::Code::NotFound);
    assert_eq!(q.pause().await.unwrap_err().code(), tonic::Code::NotFound);
    let delayed = q
        .enqueue(
            "work",
            serde_json::json!({ "key": "" }),
            StartOptions::default()
                .delay("2s")
                .priority(7)
                .concurrency_key("tenant-9"),
        )
        .await
        .unwrap()
        .run;
    assert_eq!(delayed.priority, 7);
    assert_eq!(delayed.concurrency_key.as_deref(), Some("tenant-9"));
    let due = delayed.next_attempt_at.unwrap() - delayed.created_at;
    assert!(due >= chrono::TimeDelta::milliseconds(2_000), "{due:?}");
    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(30);
    let scheduled = q
        .enqueue(
            "work",
            serde_json::json!({ "key": "" }),
            StartOptions::default().run_at(at),
        )
        .await
        .unwrap()
        .run;
    let off = (scheduled.next_attempt_at.unwrap() - at)
        .num_milliseconds()
        .abs();
    assert!(
        off <= 1,
        "run_at {at} became {:?}",
        scheduled.next_attempt_at
    );
    let err = q
        .enqueue(
            "work",
            serde_json::json!({}),
            StartOptions::default().delay("soon"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let info = q.get().await.unwrap();
    assert_eq!((info.stats.queued, info.stats.delayed), (2, 2));
    assert_eq!(info.config, QueueConfig::default());
    let config = QueueConfig::new()
        .concurrency_limit(2)
        .key_concurrency_limit(1)
        .rate_limit(stackshift::RateLimit::new(50, Duration::from_secs(60)))
        .retry_policy(stackshift::RetryPolicy::new().max_attempts(4))
        .lease_timeout(Duration::from_secs(20));
    let info = q.configure(config.clone()).await.unwrap();
    assert_eq!(info.config, config);
    assert!(q.pause().await.unwrap().paused);
    assert!(
        q.get().await.unwrap().paused,
        "configure keeps the pause switch"
    );
    assert!(!q.resume().await.unwrap().paused);
    let err = q
        .configure(QueueConfig::new().concurrency_limit(0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        q.get().await.unwrap().config,
        config,
        "a refused change changes nothing"
    );
    let page = c.list_queues(Some(10), None).await.unwrap();
    assert_eq!(page.queues.len(), 1);
    assert_eq!(page.queues[0].name, "sdk-queue");
    assert!(page.next_page_token.is_none());
}
both_stores!(sdk_start_options_and_queue_calls);
