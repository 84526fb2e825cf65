//! State calls made from inside runs, against the real server binary on SQLite and
//! PostgreSQL: they are journaled under the run's lease (a resent or replayed call returns
//! the recorded result and is never applied twice; a stale lease changes nothing), locks
//! tied to a run are released when it completes or is cancelled, and a counter incremented
//! by a handler whose worker process is killed with SIGKILL mid-run ends up increased
//! exactly once per logical call.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use stackshift::{
    ClientOptions, Error, JobContext, JobOptions, LockAttempt, LockOptions, RetryPolicy, RunStatus,
    SetOptions, StackShift, StartOptions, Worker,
};
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::state_service_client::StateServiceClient;
use support::{Db, TestServer, ms, poll_req, start_req};
use tokio::time::Instant;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

fn ctx(task: &pb::Task, call_id: &str) -> Option<pb::RunContext> {
    Some(pb::RunContext {
        run_id: task.run_id.clone(),
        lease_token: task.lease_token.clone(),
        call_id: call_id.to_owned(),
    })
}

fn incr(task: &pb::Task, call_id: &str, by: i64) -> pb::IncrementStateRequest {
    pb::IncrementStateRequest {
        key: "rows".into(),
        by: Some(by),
        ttl: None,
        run: ctx(task, call_id),
    }
}

/// Journaling over the wire protocol: resends and replays return the recorded results,
/// refusals are journaled, stale leases change nothing, and run-tied locks end with the run.
async fn journaled_over_the_protocol(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut jobs = s.jobs().await;
    let mut worker = s.worker().await;
    let mut state = StateServiceClient::connect(s.endpoint()).await.unwrap();
    let mut start = start_req("importFile", json!({ "fileId": "f1" }));
    start.lease_timeout = Some(ms(1_500));
    jobs.start_run(start).await.unwrap();
    let first = worker
        .poll_task(poll_req(&["importFile"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    let value = |r: tonic::Response<pb::IncrementStateResponse>| r.into_inner().value;

    assert_eq!(
        value(
            state
                .increment_state(incr(&first, "state:1", 4))
                .await
                .unwrap()
        ),
        4
    );
    // A resent call (e.g. after a lost response) is not applied again.
    assert_eq!(
        value(
            state
                .increment_state(incr(&first, "state:1", 4))
                .await
                .unwrap()
        ),
        4
    );
    assert_eq!(
        value(
            state
                .increment_state(incr(&first, "state:2", 4))
                .await
                .unwrap()
        ),
        8
    );
    // A stale lease token is refused, without a state reason, and changes nothing.
    let mut stale = incr(&first, "state:3", 100);
    stale.run.as_mut().unwrap().lease_token = "0123456789abcdef".into();
    let status = state.increment_state(stale).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.metadata().get("stackshift-error-reason").is_none());
    let lock = state
        .acquire_lock(pb::AcquireLockRequest {
            key: "res".into(),
            ttl: Some(ms(60_000)),
            wait: None,
            release_with_run: true,
            run: ctx(&first, "state:3"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(lock.granted);
    let cas = pb::SetStateRequest {
        key: "rows".into(),
        value: b"0".to_vec(),
        expected_version: Some(1),
        run: ctx(&first, "state:4"),
        ..Default::default()
    };
    let status = state.set_state(cas.clone()).await.unwrap_err();
    assert_eq!(
        status.metadata().get("stackshift-error-reason").unwrap(),
        "VERSION_MISMATCH"
    );

    // The worker "dies" (no heartbeat): the next attempt gets the journal, and replays.
    let second = worker
        .poll_task(poll_req(&["importFile"], 10_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    assert_eq!(second.attempt, 2);
    let journaled: BTreeSet<&str> = second
        .journal
        .iter()
        .filter(|e| e.kind == pb::JournalEntryKind::State as i32)
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(
        journaled,
        BTreeSet::from(["state:1", "state:2", "state:3", "state:4"])
    );
    assert_eq!(
        value(
            state
                .increment_state(incr(&second, "state:1", 4))
                .await
                .unwrap()
        ),
        4
    );
    assert_eq!(
        value(
            state
                .increment_state(incr(&second, "state:2", 4))
                .await
                .unwrap()
        ),
        8
    );
    let replayed_lock = state
        .acquire_lock(pb::AcquireLockRequest {
            key: "res".into(),
            ttl: Some(ms(60_000)),
            wait: None,
            release_with_run: true,
            run: ctx(&second, "state:3"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed_lock, lock, "the recorded grant");
    let mut cas = cas;
    cas.run = ctx(&second, "state:4");
    let status = state.set_state(cas).await.unwrap_err();
    assert_eq!(
        status.metadata().get("stackshift-error-reason").unwrap(),
        "VERSION_MISMATCH",
        "the recorded refusal"
    );
    // The first attempt's lease is stale now.
    let status = state
        .increment_state(incr(&first, "state:5", 100))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        value(
            state
                .increment_state(incr(&second, "state:5", 4))
                .await
                .unwrap()
        ),
        12
    );
    let direct = state
        .get_state(pb::GetStateRequest {
            key: "rows".into(),
            run: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        direct.entry.unwrap().value,
        b"12",
        "three logical increments of 4"
    );

    // The run holds the lock until it completes.
    let try_res = pb::AcquireLockRequest {
        key: "res".into(),
        ttl: Some(ms(1_000)),
        ..Default::default()
    };
    assert!(
        !state
            .acquire_lock(try_res.clone())
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    worker
        .complete_run(pb::CompleteRunRequest {
            run_id: second.run_id.clone(),
            lease_token: second.lease_token.clone(),
            result: b"{}".to_vec(),
        })
        .await
        .unwrap();
    let after = state.acquire_lock(try_res).await.unwrap().into_inner();
    assert!(after.granted, "released when the run completed");
    assert!(after.fencing_token > lock.fencing_token);

    // Cancelling a run releases its locks; its lease then answers ABORTED.
    let mut start = start_req("importFile", json!({ "fileId": "f2" }));
    start.lease_timeout = Some(ms(30_000));
    let run = jobs
        .start_run(start)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let task = worker
        .poll_task(poll_req(&["importFile"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    assert_eq!(task.run_id, run.id);
    let tied = pb::AcquireLockRequest {
        key: "res2".into(),
        ttl: Some(ms(60_000)),
        release_with_run: true,
        run: ctx(&task, "state:1"),
        ..Default::default()
    };
    assert!(state.acquire_lock(tied).await.unwrap().into_inner().granted);
    jobs.cancel_run(pb::CancelRunRequest {
        run_id: run.id.clone(),
        reason: String::new(),
    })
    .await
    .unwrap();
    let free = state
        .acquire_lock(pb::AcquireLockRequest {
            key: "res2".into(),
            ttl: Some(ms(1_000)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(free.granted, "released when the run was cancelled");
    let status = state
        .increment_state(incr(&task, "state:2", 1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
}
both_stores!(journaled_over_the_protocol);

type Observed = (i32, i64, Option<String>, i64);

/// Through the SDK: a handler's `ctx.state` replays a lock grant, a refused
/// compare-and-set and an increment on its retry; its run-tied lock is freed when it
/// completes; and a conflict is reported as `Error::Conflict`, not as a lost lease.
async fn sdk_handler_state_is_journaled(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    // (attempt, lock token, conflict reason, counter value) per attempt
    let observed: Arc<Mutex<Vec<Observed>>> = Arc::default();
    let seen = observed.clone();
    let worker = Worker::builder(c.clone())
        .job("rebuildIndex", move |ctx: JobContext<Value>| {
            let seen = seen.clone();
            async move {
                let lock = ctx
                    .state
                    .lock("index:cus_1", LockOptions::new("30s"))
                    .await?
                    .expect("free");
                let refused = ctx
                    .state
                    .set(
                        "index:cus_1:cfg",
                        &1,
                        SetOptions::default().expected_version(42),
                    )
                    .await
                    .unwrap_err();
                let reason = match &refused {
                    Error::Conflict { reason, .. } => Some(reason.clone()),
                    _ => None,
                };
                let n = ctx.state.increment("index:cus_1:builds", 1).await?;
                seen.lock()
                    .unwrap()
                    .push((ctx.attempt, lock.token(), reason, n));
                assert!(
                    ctx.step
                        .run("state:9", || async { anyhow::Ok(()) })
                        .await
                        .is_err()
                );
                if ctx.attempt == 1 {
                    anyhow::bail!("index server timed out");
                }
                Ok(json!({ "token": lock.token() }))
            }
        })
        .build()
        .start();
    let started = c
        .start(
            "rebuildIndex",
            json!({}),
            StartOptions::default().retry_policy(
                RetryPolicy::new()
                    .max_attempts(3)
                    .initial_interval(Duration::from_millis(50)),
            ),
        )
        .await
        .unwrap();
    let run = c.wait_for_run(&started.id, WAIT).await.unwrap();
    worker.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.attempt, 2);

    let observed = observed.lock().unwrap().clone();
    assert_eq!(observed.len(), 2, "{observed:?}");
    let (_, token, reason, n) = observed[0].clone();
    assert_eq!(reason.as_deref(), Some("VERSION_MISMATCH"));
    assert_eq!(n, 1);
    assert_eq!(
        observed[1],
        (2, token, reason, 1),
        "attempt 2 got the recorded results"
    );
    let state = c.state();
    assert_eq!(
        state.get::<i64>("index:cus_1:builds").await.unwrap(),
        Some(1)
    );
    assert_eq!(state.get::<Value>("index:cus_1:cfg").await.unwrap(), None);
    match state
        .try_lock("index:cus_1", LockOptions::new("1s"))
        .await
        .unwrap()
    {
        LockAttempt::Acquired(g) => assert!(g.token() > token, "freed with the run"),
        LockAttempt::Busy { .. } => panic!("the run-tied lock outlived its run"),
    }
    let ids: Vec<&str> = run
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .filter(|id| id.starts_with("state:"))
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
}
both_stores!(sdk_handler_state_is_journaled);

/// Set in the child process: the endpoint its worker talks to.
const CHILD_ENV: &str = "STACKSHIFT_E2E_STATE_CHILD";
/// Logical increments per run.
const INCREMENTS: i64 = 12;

async fn counting(ctx: JobContext<Value>) -> anyhow::Result<Value> {
    let key = format!("progress:{}", ctx.run_id);
    let mut last = 0;
    for _ in 0..INCREMENTS {
        last = ctx.state.increment(&key, 1).await?;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    Ok(json!({ "last": last }))
}

fn counting_worker(c: StackShift) -> stackshift::WorkerHandle {
    Worker::builder(c)
        .job_with_options(
            "countRows",
            JobOptions::default().lease_timeout(Duration::from_secs(2)),
            counting,
        )
        .build()
        .start()
}

/// Not a test of its own: the worker process that `worker_killed_mid_run` starts (this
/// test binary, run again with only this test and `STACKSHIFT_E2E_STATE_CHILD` set) and
/// kills with SIGKILL. Without the variable it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker() {
    let Ok(endpoint) = std::env::var(CHILD_ENV) else {
        return;
    };
    let worker = counting_worker(StackShift::new(ClientOptions::new(endpoint)).unwrap());
    // Killed long before; the bound only keeps an orphan from lingering.
    tokio::time::sleep(Duration::from_secs(60)).await;
    worker.shutdown().await;
}

/// The child worker process; killed (and reaped) at the latest when dropped.
struct ChildWorker(std::process::Child);

impl ChildWorker {
    fn kill9(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A worker process killed with SIGKILL mid-run: the next attempt replays the increments
/// already made, and the counter ends at exactly one per logical call.
async fn worker_killed_mid_run(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let started = c
        .start("countRows", json!({}), StartOptions::default())
        .await
        .unwrap();
    let key = format!("progress:{}", started.id);
    let mut child = ChildWorker(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "child_worker",
                "--exact",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, s.endpoint())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let state = c.state();
    let deadline = Instant::now() + WAIT;
    let at_kill = loop {
        let n = state.get::<i64>(&key).await.unwrap().unwrap_or(0);
        if n >= 4 {
            child.kill9();
            break state.get::<i64>(&key).await.unwrap().unwrap_or(0);
        }
        assert!(
            Instant::now() < deadline,
            "the child worker made no progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(at_kill < INCREMENTS, "killed mid-run ({at_kill})");

    let worker = counting_worker(c.clone());
    let run = c.wait_for_run(&started.id, WAIT).await.unwrap();
    worker.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(
        run.attempt, 2,
        "the killed attempt, then the one that finished"
    );
    assert_eq!(run.result, Some(json!({ "last": INCREMENTS })));
    assert_eq!(
        state.get::<i64>(&key).await.unwrap(),
        Some(INCREMENTS),
        "exactly once per logical call (killed at {at_kill})"
    );
    let journaled: BTreeSet<&str> = run
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .filter(|id| id.starts_with("state:"))
        .collect();
    assert_eq!(journaled.len(), INCREMENTS as usize);
}
both_stores!(worker_killed_mid_run);
