//! `ListRuns` at scale: inserts 1,000,000 runs directly into a SQLite store (bulk SQL, not
//! through the API) and times the store's `list_runs` for every filter. Not part of the
//! normal suite (it takes minutes and ~1 GB of disk); run it with
//!
//! ```sh
//! cargo test -p stackshift-server --test list_runs_scale -- --ignored --nocapture
//! # STACKSHIFT_SCALE_RUNS=200000 for a smaller table
//! ```
//!
//! The figures are recorded in docs/observability.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, TransactionTrait};
use stackshift_server::engine::model::{RunFilter, RunStatus};
use stackshift_server::engine::store::RunStore;
use stackshift_server::storage::SqlStore;

const JOBS: usize = 10;
const QUEUES: usize = 5;
/// One run every 100 ms of simulated history.
const SPACING_MS: i64 = 100;

fn status_of(i: usize) -> &'static str {
    match i % 100 {
        0..=89 => "completed",
        90..=94 => "failed",
        95..=98 => "queued",
        _ => "running",
    }
}

fn id_at(ms: i64, i: usize) -> String {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (ms / 1000) as u64,
        ((ms % 1000) * 1_000_000) as u32,
    );
    // Distinct ids within one millisecond: the random part comes from `i`.
    let mut bytes = *uuid::Uuid::new_v7(ts).as_bytes();
    bytes[8..16].copy_from_slice(&(i as u64 | 0x8000_0000_0000_0000).to_be_bytes());
    uuid::Uuid::from_bytes(bytes).to_string()
}

async fn time<F, Fut>(what: &str, reps: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut samples = Vec::with_capacity(reps);
    let mut rows = 0;
    for _ in 0..reps {
        let t = Instant::now();
        rows = f().await;
        samples.push(t.elapsed());
    }
    samples.sort();
    let median = samples[reps / 2];
    let p95 = samples[(reps * 95 / 100).min(reps - 1)];
    println!(
        "{what:<58} rows={rows:<4} median={:>8.2} ms  p95={:>8.2} ms",
        median.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3
    );
    median
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "inserts 1,000,000 runs; run explicitly (see the module docs)"]
async fn list_runs_with_a_million_runs() {
    let total: usize = std::env::var("STACKSHIFT_SCALE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("scale.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    let db = store.connection().clone();
    let start_ms: i64 = 1_790_000_000_000;
    let t0 = Instant::now();
    const BATCH: usize = 500;
    let mut i = 0;
    while i < total {
        let txn = db.begin().await.unwrap();
        for _ in 0..40 {
            if i >= total {
                break;
            }
            let mut sql = String::from(
                "INSERT INTO runs (id, namespace, job, queue, status, payload, attempt, \
                 max_attempts, retry_initial_ms, retry_coefficient, retry_max_ms, available_at, \
                 idempotency_key, created_at, updated_at, priority) VALUES ",
            );
            for k in 0..BATCH.min(total - i) {
                let n = i + k;
                let at = start_ms + n as i64 * SPACING_MS;
                let key = if n % 100 == 7 {
                    format!("'order-{n}'")
                } else {
                    "NULL".to_owned()
                };
                if k > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "('{}','default','job-{}','queue-{}','{}','{{\"n\":{n}}}',1,3,1000,2.0,60000,\
                     {at},{key},{at},{at},0)",
                    id_at(at, n),
                    n % JOBS,
                    (n / 7) % QUEUES,
                    status_of(n),
                ));
            }
            i += BATCH.min(total - i);
            txn.execute_unprepared(&sql).await.unwrap();
        }
        txn.commit().await.unwrap();
    }
    db.execute_unprepared("ANALYZE").await.unwrap();
    println!(
        "inserted {total} runs in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let page = 50;
    let list = |filter: RunFilter, cursor: Option<String>| {
        let store = store.clone();
        async move {
            store
                .list_runs("default", &filter, cursor.as_deref(), page)
                .await
                .unwrap()
                .len()
        }
    };
    let mid_ms = start_ms + (total as i64 / 2) * SPACING_MS;
    let mid_cursor = id_at(mid_ms, total / 2);
    let reps = 30;
    let mut worst = Duration::ZERO;
    let cases: Vec<(&str, RunFilter, Option<String>)> = vec![
        ("no filter, first page", RunFilter::default(), None),
        (
            "no filter, page from the middle (cursor)",
            RunFilter::default(),
            Some(mid_cursor.clone()),
        ),
        (
            "job",
            RunFilter {
                job: Some("job-3".into()),
                ..RunFilter::default()
            },
            None,
        ),
        (
            "queue",
            RunFilter {
                queue: Some("queue-2".into()),
                ..RunFilter::default()
            },
            None,
        ),
        (
            "status failed (5%)",
            RunFilter {
                status: Some(RunStatus::Failed),
                ..RunFilter::default()
            },
            None,
        ),
        (
            "status running (1%), page from the middle",
            RunFilter {
                status: Some(RunStatus::Running),
                ..RunFilter::default()
            },
            Some(mid_cursor.clone()),
        ),
        (
            "idempotency key",
            RunFilter {
                idempotency_key: Some(format!("order-{}", total / 2 + 7)),
                ..RunFilter::default()
            },
            None,
        ),
        (
            "created in a 1 h window in the middle",
            RunFilter {
                created_after: Some(mid_ms),
                created_before: Some(mid_ms + 3_600_000),
                ..RunFilter::default()
            },
            None,
        ),
        (
            "created before the middle",
            RunFilter {
                created_before: Some(mid_ms),
                ..RunFilter::default()
            },
            None,
        ),
        (
            "job + status failed",
            RunFilter {
                job: Some("job-3".into()),
                status: Some(RunStatus::Failed),
                ..RunFilter::default()
            },
            None,
        ),
        (
            "job + queue + created window",
            RunFilter {
                job: Some("job-3".into()),
                queue: Some("queue-1".into()),
                created_after: Some(mid_ms),
                created_before: Some(mid_ms + 3_600_000),
                ..RunFilter::default()
            },
            None,
        ),
    ];
    for (what, filter, cursor) in cases {
        let m = time(what, reps, || list(filter.clone(), cursor.clone())).await;
        worst = worst.max(m);
    }
    // Generous: on an idle laptop every case is a few milliseconds.
    assert!(
        worst < Duration::from_millis(500),
        "a ListRuns query took {worst:?}"
    );
}
