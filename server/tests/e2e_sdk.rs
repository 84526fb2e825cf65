//! End-to-end tests through the native Rust SDK (client and worker) against the real
//! server binary: memoized steps, occurrence suffixes, heartbeats, cancellation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use stackshift::{
    ClientOptions, JobContext, JobOptions, RetryPolicy, RunStatus, StackShift, StartOptions, Worker,
};
use support::{Db, TestServer};

type Ledger = Arc<Mutex<HashMap<String, usize>>>;

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

fn fast_retry() -> StartOptions {
    StartOptions::default().retry_policy(
        RetryPolicy::new()
            .max_attempts(5)
            .initial_interval(Duration::from_millis(50)),
    )
}

fn count(ledger: &Ledger, key: &str) {
    *ledger.lock().unwrap().entry(key.to_owned()).or_default() += 1;
}

async fn memoized_steps_and_occurrence_suffixes(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let ledger: Ledger = Arc::default();
    let failures = Arc::new(AtomicUsize::new(0));
    let (l, f) = (ledger.clone(), failures.clone());
    let worker = Worker::builder(c.clone())
        .job("memo", move |ctx: JobContext<Value>| {
            let (l, f) = (l.clone(), f.clone());
            async move {
                let a: i64 = ctx
                    .step
                    .run("a", || async {
                        count(&l, "a");
                        anyhow::Ok(1)
                    })
                    .await?;
                let mut sum = a;
                for i in 0..3 {
                    let l = l.clone();
                    sum += ctx
                        .step
                        .run("batch", || async move {
                            count(&l, &format!("batch-{i}"));
                            anyhow::Ok(i * 10)
                        })
                        .await?;
                }
                // Fails twice after the steps above completed.
                let b: i64 = ctx
                    .step
                    .run("b", || async {
                        count(&l, "b");
                        if f.fetch_add(1, Ordering::SeqCst) < 2 {
                            anyhow::bail!("transient failure");
                        }
                        anyhow::Ok(100)
                    })
                    .await?;
                Ok(json!({ "sum": sum + b }))
            }
        })
        .build()
        .start();
    let started = c.start("memo", &json!({}), fast_retry()).await.unwrap();
    let run = c
        .wait_for_run(&started.id, Duration::from_secs(30))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.result, Some(json!({ "sum": 131 })));
    assert_eq!(run.attempt, 3);
    let ledger = ledger.lock().unwrap().clone();
    assert_eq!(ledger["a"], 1, "a completed step never runs again");
    for i in 0..3 {
        assert_eq!(ledger[&format!("batch-{i}")], 1);
    }
    assert_eq!(ledger["b"], 3, "a failed step is retried");
    let ids: Vec<&str> = run.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "batch", "batch#2", "batch#3", "b"]);
    assert_eq!(run.steps[4].attempt, 3);
    assert_eq!(run.attempts.len(), 3);
    assert!(
        run.attempts[0]
            .failure
            .as_ref()
            .unwrap()
            .message
            .contains("transient failure")
    );
}
both_stores!(memoized_steps_and_occurrence_suffixes);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_heartbeats_keep_a_long_step_alive() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = client(&s);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let worker = Worker::builder(c.clone())
        .job_with_options(
            "slow",
            JobOptions::default().lease_timeout(Duration::from_secs(1)),
            move |ctx: JobContext<Value>| {
                let r = r.clone();
                async move {
                    ctx.step
                        .run("long", || async {
                            r.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            anyhow::Ok("done".to_owned())
                        })
                        .await?;
                    Ok(())
                }
            },
        )
        .build()
        .start();
    let started = c
        .start("slow", &json!(null), StartOptions::default())
        .await
        .unwrap();
    let run = c
        .wait_for_run(&started.id, Duration::from_secs(30))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.attempt, 1, "the lease never expired");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_handler() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = client(&s);
    let ticks = Arc::new(AtomicUsize::new(0));
    let t = ticks.clone();
    let worker = Worker::builder(c.clone())
        .job_with_options(
            "loop",
            JobOptions::default().lease_timeout(Duration::from_secs(1)),
            move |ctx: JobContext<Value>| {
                let t = t.clone();
                async move {
                    for _ in 0..1_000 {
                        ctx.step
                            .run("tick", || async {
                                t.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                anyhow::Ok(())
                            })
                            .await?;
                    }
                    Ok(())
                }
            },
        )
        .build()
        .start();
    let started = c
        .start("loop", &json!(null), StartOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let cancelled = c
        .cancel_run(&started.id, Some("operator stop"))
        .await
        .unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let at_stop = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(ticks.load(Ordering::SeqCst), at_stop, "the handler stopped");
    let run = c.get_run(&started.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.failure.unwrap().message, "operator stop");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_errors_and_poison_payloads_fail_at_once() {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[allow(dead_code)]
        user_id: String,
    }
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .job("strict", |_ctx: JobContext<Value>| async move {
            Err::<(), _>(stackshift::non_retryable("Payment is not complete"))
        })
        .job("typed", |_ctx: JobContext<Typed>| async move { Ok(()) })
        .build()
        .start();
    let a = c.start("strict", &json!({}), fast_retry()).await.unwrap();
    let b = c
        .start("typed", &json!({"wrong": 1}), fast_retry())
        .await
        .unwrap();
    let a = c
        .wait_for_run(&a.id, Duration::from_secs(20))
        .await
        .unwrap();
    let b = c
        .wait_for_run(&b.id, Duration::from_secs(20))
        .await
        .unwrap();
    worker.shutdown().await;
    assert_eq!(a.status, RunStatus::Failed);
    assert_eq!(a.attempt, 1);
    let f = a.failure.unwrap();
    assert!(f.non_retryable);
    assert!(f.message.contains("Payment is not complete"));
    assert_eq!(b.status, RunStatus::Failed);
    assert_eq!(b.attempt, 1);
    assert!(b.failure.unwrap().message.contains("payload"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_typed() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = client(&s);
    let e = c
        .start("bad job", &json!(1), StartOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(matches!(e, stackshift::Error::InvalidArgument(_)));
    let e = c
        .start(
            "j",
            &json!(1),
            StartOptions::default()
                .idempotency_key("k")
                .idempotency_ttl("30 parsecs"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, stackshift::Error::InvalidArgument(_)), "{e:?}");
    let e = c
        .get_run("0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee")
        .await
        .unwrap_err();
    assert!(matches!(e, stackshift::Error::NotFound(_)));
    let dup1 = c
        .queue("emails")
        .enqueue(
            "send",
            &json!(1),
            StartOptions::default()
                .idempotency_key("k1")
                .idempotency_ttl("30d"),
        )
        .await
        .unwrap();
    let dup2 = c
        .queue("emails")
        .enqueue(
            "send",
            &json!(1),
            StartOptions::default().idempotency_key("k1"),
        )
        .await
        .unwrap();
    assert!(!dup1.duplicate && dup2.duplicate);
    assert_eq!(dup1.id, dup2.id);
    assert_eq!(dup1.run.queue, "emails");
}
