//! End-to-end tests of the Rust SDK's per-step in-place retries (`Step::run_with`) against
//! the real server binary: tries within one attempt, the `warn` line per failed try, the
//! error of the last try failing the attempt, and a non-retryable error not retried.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use stackshift::{
    ClientOptions, JobContext, LogLevel, RetryPolicy, RunStatus, StackShift, StartOptions,
    StepOptions, Worker,
};
use support::{Db, TestServer};

const WAIT: Duration = Duration::from_secs(30);

fn fast_retries() -> StartOptions {
    StartOptions::default().retry_policy(
        RetryPolicy::new()
            .max_attempts(2)
            .initial_interval(Duration::from_millis(50)),
    )
}

/// A body failing `fail_tries` times in every attempt, counting its calls in `calls`.
fn flaky_worker(
    c: &StackShift,
    calls: Arc<AtomicUsize>,
    retries: u32,
    fail_tries: usize,
) -> Worker {
    Worker::builder(c.clone())
        .job("inplace", move |ctx: JobContext<Value>| {
            let calls = Arc::clone(&calls);
            async move {
                let attempt = ctx.attempt;
                let mut tries = 0;
                let opts = StepOptions::new().retries(retries).retry_delay("10ms");
                let value: i32 = ctx
                    .step
                    .run_with("flaky", opts, || {
                        tries += 1;
                        let this_try = tries;
                        let calls = Arc::clone(&calls);
                        async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            if this_try <= fail_tries {
                                anyhow::bail!("transient {this_try}");
                            }
                            Ok(attempt)
                        }
                    })
                    .await?;
                anyhow::Ok(value)
            }
        })
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_is_retried_in_place_and_logs_each_failed_try() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = StackShift::new(ClientOptions::new(s.endpoint())).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = flaky_worker(&c, Arc::clone(&calls), 3, 2).start();
    let started = c.start("inplace", json!({}), fast_retries()).await.unwrap();
    let run = c.wait_for_run(&started.id, WAIT).await.unwrap();
    worker.shutdown().await;

    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.attempt, 1);
    assert_eq!(run.result, Some(json!(1)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let logs: Vec<_> = run
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str(), l.step_id.as_deref()))
        .collect();
    assert_eq!(
        logs,
        [
            (
                LogLevel::Warn,
                "step flaky failed (try 1 of 4): transient 1; retrying in 10ms",
                Some("flaky")
            ),
            (
                LogLevel::Warn,
                "step flaky failed (try 2 of 4): transient 2; retrying in 20ms",
                Some("flaky")
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_tries_fail_the_attempt_like_a_plain_step() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = StackShift::new(ClientOptions::new(s.endpoint())).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = flaky_worker(&c, Arc::clone(&calls), 1, 5).start();
    let started = c.start("inplace", json!({}), fast_retries()).await.unwrap();
    let run = c.wait_for_run(&started.id, WAIT).await.unwrap();
    worker.shutdown().await;

    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.attempt, 2);
    // Two tries in each of the two attempts; nothing journaled for the step.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert!(run.steps.is_empty(), "{:?}", run.steps);
    let failure = run.failure.unwrap();
    assert_eq!(failure.message, "transient 2");
    assert!(!failure.non_retryable);
}
