//! End-to-end tests of the native Rust SDK's worker and client against the real server
//! binary, for what `e2e_sdk.rs` does not cover: a replayed non-retryable step failure,
//! failure details and payload mismatches as recorded by the server, cancellation reaching
//! a handler that runs no steps, graceful shutdown, the concurrency limit as the server sees
//! it, and API keys with idempotent starts. Everything is observed through the public
//! `StackShift` client, never through server internals.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use stackshift::{
    ClientOptions, Error, JobContext, JobOptions, ListRunsOptions, RetryPolicy, RunStatus,
    StackShift, StartOptions, StepFailed, Worker,
};
use support::{Db, TestServer};
use tokio::sync::watch;
use tokio::time::Instant;

/// Generous bound for anything that should take well under a second on an idle machine.
const WAIT: Duration = Duration::from_secs(30);

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

fn fast_retries() -> StartOptions {
    StartOptions::default().retry_policy(
        RetryPolicy::new()
            .max_attempts(3)
            .initial_interval(Duration::from_millis(50)),
    )
}

/// Polls `check` every 20 ms until it holds; panics after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The runs of `job` in `status`, as `ListRuns` reports them.
async fn count_runs(c: &StackShift, job: &str, status: RunStatus) -> usize {
    let page = c
        .list_runs(ListRunsOptions {
            job: Some(job.to_owned()),
            status: Some(status),
            page_size: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(page.next_page_token.is_none());
    page.runs.len()
}

/// A gate handlers wait on until the test opens it.
fn gate() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

async fn pass(gate: &mut watch::Receiver<bool>) {
    gate.wait_for(|open| *open).await.expect("gate dropped");
}

/// What `step.run` returned to one attempt.
type Replay = (i32, Option<StepFailed>);

/// A non-retryable step failure is journaled by the server; the next attempt does not run
/// the step body again but gets the recorded failure back as `StepFailed`, and propagating
/// it fails the run at once. A handler error outside any step is a retryable failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_step_is_recorded_and_replayed_as_step_failed() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = client(&s);
    let body_calls = Arc::new(AtomicUsize::new(0));
    // (attempt, the StepFailed the step returned, if it was one)
    let replayed: Arc<Mutex<Vec<Replay>>> = Arc::default();
    let (calls, seen) = (Arc::clone(&body_calls), Arc::clone(&replayed));
    let worker = Worker::builder(c.clone())
        .job("charge", move |ctx: JobContext<Value>| {
            let (calls, seen) = (Arc::clone(&calls), Arc::clone(&seen));
            async move {
                let outcome: anyhow::Result<()> = ctx
                    .step
                    .run("charge-card", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Err(stackshift::non_retryable("card declined"))
                    })
                    .await;
                let err = outcome.unwrap_err();
                seen.lock()
                    .unwrap()
                    .push((ctx.attempt, err.downcast_ref::<StepFailed>().cloned()));
                if ctx.attempt == 1 {
                    // Swallow it and fail transiently, so attempt 2 replays the failure.
                    anyhow::bail!("transient");
                }
                Err::<(), _>(err)
            }
        })
        .build()
        .start();
    let started = c.start("charge", json!({}), fast_retries()).await.unwrap();
    let run = c.wait_for_run(&started.id, WAIT).await.unwrap();
    worker.shutdown().await;

    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(
        run.attempt, 2,
        "the replayed non-retryable failure ends the run"
    );
    assert_eq!(
        body_calls.load(Ordering::SeqCst),
        1,
        "the step body ran once"
    );

    let replayed = replayed.lock().unwrap().clone();
    assert_eq!(replayed.len(), 2, "{replayed:?}");
    assert_eq!(replayed[1].0, 2);
    let step_failed = replayed[1].1.as_ref().expect("attempt 2 got a StepFailed");
    assert_eq!(step_failed.step_id, "charge-card");
    assert_eq!(step_failed.failure.message, "card declined");
    assert!(step_failed.failure.non_retryable);

    let step = run.step("charge-card").unwrap();
    assert_eq!(step.attempt, 1);
    assert!(step.started_at.is_some());
    assert!(step.output.is_none());
    let failure = step.failure.as_ref().unwrap();
    assert!(failure.non_retryable);
    assert_eq!(failure.message, "card declined");
    assert_eq!(failure.error_type.as_deref(), Some("NonRetryable"));

    assert_eq!(run.attempts.len(), 2);
    let first = run.attempts[0].failure.as_ref().unwrap();
    assert_eq!(first.message, "transient");
    assert!(!first.non_retryable);
    let run_failure = run.failure.unwrap();
    assert!(run_failure.non_retryable);
    assert!(
        run_failure.message.contains("card declined"),
        "{run_failure:?}"
    );
}

/// What the server records for a failed attempt is what the SDK sent: the whole error
/// chain as the message, the error type, and the non-retryable flag, found through
/// `context`. A payload that does not fit the handler's type fails at once, as a
/// `PayloadMismatch` naming the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_details_and_payload_mismatch_are_recorded() {
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Strict {
        #[allow(dead_code)]
        user_id: String,
    }
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = client(&s);
    let typed_calls = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&typed_calls);
    let worker = Worker::builder(c.clone())
        .job("strict", |_ctx: JobContext<Value>| async {
            Err::<(), _>(
                anyhow::Error::new(stackshift::NonRetryable::new("nope")).context("validating"),
            )
        })
        .job("typed", move |_ctx: JobContext<Strict>| {
            let t = Arc::clone(&t);
            async move {
                t.fetch_add(1, Ordering::SeqCst);
                anyhow::Ok(())
            }
        })
        .build()
        .start();
    let strict = c.start("strict", json!({}), fast_retries()).await.unwrap();
    let typed = c
        .start("typed", json!({ "user": 1 }), fast_retries())
        .await
        .unwrap();
    let strict = c.wait_for_run(&strict.id, WAIT).await.unwrap();
    let typed = c.wait_for_run(&typed.id, WAIT).await.unwrap();
    worker.shutdown().await;

    assert_eq!(strict.status, RunStatus::Failed, "{strict:?}");
    assert_eq!(strict.attempt, 1);
    assert_eq!(strict.attempts.len(), 1);
    let f = strict.failure.unwrap();
    assert!(f.non_retryable);
    assert_eq!(f.message, "validating: nope");
    assert_eq!(f.error_type.as_deref(), Some("NonRetryable"));
    assert_eq!(strict.attempts[0].failure.as_ref(), Some(&f));

    assert_eq!(typed.status, RunStatus::Failed, "{typed:?}");
    assert_eq!(typed.attempt, 1);
    assert_eq!(
        typed_calls.load(Ordering::SeqCst),
        0,
        "the handler never ran"
    );
    let f = typed.failure.unwrap();
    assert!(f.non_retryable);
    assert_eq!(f.error_type.as_deref(), Some("PayloadMismatch"));
    assert!(
        f.message.starts_with("payload does not match job typed:"),
        "{}",
        f.message
    );
}

/// Increments a counter when dropped: shows that a handler future was stopped.
struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Cancelling a run whose handler runs no steps reaches it through the heartbeat: the
/// handler is dropped and its slot frees (a worker with one slot then runs the next run),
/// nothing is reported over the cancellation, and shutdown does not wait for the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_a_handler_outside_steps_and_frees_its_slot() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = client(&s);
    let started_count = Arc::new(AtomicUsize::new(0));
    let finished_count = Arc::new(AtomicUsize::new(0));
    let dropped_count = Arc::new(AtomicUsize::new(0));
    let (st, fi, dr) = (
        Arc::clone(&started_count),
        Arc::clone(&finished_count),
        Arc::clone(&dropped_count),
    );
    let handle = Worker::builder(c.clone())
        .concurrency(1)
        .shutdown_grace(Duration::from_secs(120))
        .job_with_options(
            "slow",
            JobOptions::default().lease_timeout(Duration::from_secs(1)),
            move |_ctx: JobContext<Value>| {
                let (st, fi, dr) = (Arc::clone(&st), Arc::clone(&fi), Arc::clone(&dr));
                async move {
                    let _guard = DropCounter(dr);
                    st.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    fi.fetch_add(1, Ordering::SeqCst);
                    anyhow::Ok(())
                }
            },
        )
        .job("quick", |_ctx: JobContext<Value>| async {
            anyhow::Ok("quick")
        })
        .build()
        .start();
    let slow = c
        .start("slow", json!(null), StartOptions::default())
        .await
        .unwrap();
    eventually("the slow handler to start", || {
        let n = started_count.load(Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;

    let cancelled = c.cancel_run(&slow.id, Some("user asked")).await.unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    // The only slot is busy until the cancellation stops the slow handler.
    let quick = c
        .start("quick", json!(null), StartOptions::default())
        .await
        .unwrap();
    let quick = c.wait_for_run(&quick.id, WAIT).await.unwrap();
    assert_eq!(quick.status, RunStatus::Completed, "{quick:?}");
    assert_eq!(quick.result, Some(json!("quick")));
    assert_eq!(
        dropped_count.load(Ordering::SeqCst),
        1,
        "the handler was dropped"
    );
    assert_eq!(finished_count.load(Ordering::SeqCst), 0);

    let t = Instant::now();
    let worker_id = handle.worker_id().to_owned();
    handle.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "shutdown waited for a cancelled handler ({:?})",
        t.elapsed()
    );
    let run = c.get_run(&slow.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.failure.unwrap().message, "user asked");
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.attempts[0].worker_id, worker_id);
    assert_eq!(started_count.load(Ordering::SeqCst), 1, "never redelivered");
}

/// Shutdown stops polling at once but lets an in-flight handler finish and report: the run
/// completes, and a run started after shutdown began stays queued for the next worker,
/// which runs it as its first attempt (no attempt was lost to a dropped poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_in_flight_handlers_finish() {
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let c = client(&s);
    let (open, gate_rx) = gate();
    let entered = Arc::new(AtomicUsize::new(0));
    let e = Arc::clone(&entered);
    let handle = Worker::builder(c.clone())
        .job("nap", move |_ctx: JobContext<Value>| {
            let (e, mut gate_rx) = (Arc::clone(&e), gate_rx.clone());
            async move {
                e.fetch_add(1, Ordering::SeqCst);
                pass(&mut gate_rx).await;
                anyhow::Ok("rested")
            }
        })
        .build()
        .start();
    let first = c
        .start("nap", json!(null), StartOptions::default())
        .await
        .unwrap();
    eventually("the first run to be running", || {
        let c = c.clone();
        let id = first.id.clone();
        async move { c.get_run(&id).await.unwrap().status == RunStatus::Running }
    })
    .await;
    eventually("the handler to start", || {
        let n = entered.load(Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;

    let shutting_down = tokio::spawn(handle.shutdown());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !shutting_down.is_finished(),
        "shutdown did not wait for the in-flight handler"
    );
    let second = c
        .start("nap", json!(null), StartOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.get_run(&first.id).await.unwrap().status,
        RunStatus::Running
    );
    open.send(true).unwrap();
    tokio::time::timeout(WAIT, shutting_down)
        .await
        .expect("shutdown finished once the handler did")
        .unwrap();

    let run = c.get_run(&first.id).await.unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.result, Some(json!("rested")));
    let queued = c.get_run(&second.id).await.unwrap();
    assert_eq!(
        queued.status,
        RunStatus::Queued,
        "a stopping worker took a task"
    );
    assert!(queued.attempts.is_empty());
    assert_eq!(entered.load(Ordering::SeqCst), 1);

    let next = Worker::builder(c.clone())
        .job("nap", |_ctx: JobContext<Value>| async {
            anyhow::Ok("rested")
        })
        .build()
        .start();
    let run = c.wait_for_run(&second.id, WAIT).await.unwrap();
    next.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.attempt, 1);
}

/// A worker never takes more tasks than it has free slots, as the server sees it: with two
/// slots and eight runs whose handlers block, at most two runs are ever `running` and the
/// rest stay `queued`; once released, all complete, still at most two at a time.
async fn never_takes_more_tasks_than_free_slots(db: Db) {
    const RUNS: usize = 8;
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let (open, gate_rx) = gate();
    let in_handler = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (Arc::clone(&in_handler), Arc::clone(&peak));
    let handle = Worker::builder(c.clone())
        .concurrency(2)
        .job("work", move |_ctx: JobContext<Value>| {
            let (r, p, mut gate_rx) = (Arc::clone(&r), Arc::clone(&p), gate_rx.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                pass(&mut gate_rx).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                anyhow::Ok(())
            }
        })
        .build()
        .start();
    let mut ids = Vec::new();
    for i in 0..RUNS {
        let started = c
            .start("work", json!({ "i": i }), StartOptions::default())
            .await
            .unwrap();
        ids.push(started.id);
    }

    eventually("both slots to be busy", || {
        let c = c.clone();
        async move { count_runs(&c, "work", RunStatus::Running).await == 2 }
    })
    .await;
    // Give an over-eager worker ample time to take more while both handlers block.
    for _ in 0..25 {
        let running = count_runs(&c, "work", RunStatus::Running).await;
        assert!(running <= 2, "{running} runs running with 2 slots");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert_eq!(count_runs(&c, "work", RunStatus::Running).await, 2);
    assert_eq!(count_runs(&c, "work", RunStatus::Queued).await, RUNS - 2);

    open.send(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let running = count_runs(&c, "work", RunStatus::Running).await;
        assert!(running <= 2, "{running} runs running with 2 slots");
        if count_runs(&c, "work", RunStatus::Completed).await == RUNS {
            break;
        }
        assert!(Instant::now() < deadline, "runs did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await;
    for id in &ids {
        let run = c.get_run(id).await.unwrap();
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.attempt, 1);
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}
both_stores!(never_takes_more_tasks_than_free_slots);

/// The client and the worker send the API key on every call: with a key created by the
/// server's `keys create` subcommand, a keyed client starts, lists and waits for runs and a
/// keyed worker executes them, while a client without a key or with a wrong one is
/// refused as `Error::Unauthenticated`. An idempotent start returns the existing run as a
/// duplicate, before and after it completes.
async fn api_key_and_idempotent_start(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    let key = s.create_key("sdk");
    s.restart(); // the running server would notice the new key only within seconds
    let keyed = StackShift::new(ClientOptions::new(s.endpoint()).api_key(&key)).unwrap();
    let anonymous = client(&s);
    let wrong = StackShift::new(ClientOptions::new(s.endpoint()).api_key("ssk_wrong")).unwrap();

    let e = anonymous
        .start("send", json!({}), StartOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}");
    let e = wrong
        .list_runs(ListRunsOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}");

    let opts = || {
        StartOptions::default()
            .idempotency_key("verify:user_123")
            .idempotency_ttl("30d")
    };
    let a = keyed
        .queue("emails")
        .enqueue("send", json!({ "a": 1 }), opts())
        .await
        .unwrap();
    let b = keyed
        .start("send", json!({ "a": 1 }), opts().queue_name("emails"))
        .await
        .unwrap();
    assert!(!a.duplicate);
    assert!(b.duplicate);
    assert_eq!(a.id, b.id);
    assert_eq!(a.run.queue, "emails");
    assert_eq!(a.run.status, RunStatus::Queued);
    assert_eq!(a.run.idempotency_key.as_deref(), Some("verify:user_123"));

    let page = keyed
        .list_runs(ListRunsOptions {
            job: Some("send".into()),
            status: Some(RunStatus::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 1);
    assert_eq!(page.runs[0].id, a.id);
    assert_eq!(page.next_page_token, None);
    let e = anonymous.get_run(&a.id).await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated(_)), "{e:?}");

    let worker = Worker::builder(keyed.clone())
        .queues(["emails"])
        .job("send", |ctx: JobContext<Value>| async move {
            let sent = ctx
                .step
                .run("send", || async { anyhow::Ok("msg_1".to_owned()) })
                .await?;
            anyhow::Ok(json!({ "sent": sent, "a": ctx.payload["a"] }))
        })
        .build()
        .start();
    let run = keyed.wait_for_run(&a.id, WAIT).await.unwrap();
    worker.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.result, Some(json!({ "sent": "msg_1", "a": 1 })));
    assert_eq!(run.attempt, 1);

    let again = keyed
        .queue("emails")
        .enqueue("send", json!({ "a": 1 }), opts())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, a.id);
    assert_eq!(again.run.status, RunStatus::Completed);
    assert_eq!(count_runs(&keyed, "send", RunStatus::Completed).await, 1);
}
both_stores!(api_key_and_idempotent_start);
