//! End-to-end tests of child runs (`step.invoke`, `step.invoke_all`) through the native
//! Rust SDK and the raw protocol, against the real server binary on SQLite and PostgreSQL:
//! a child's value reaches the parent, a failing child is a typed error in the parent, a
//! waiting parent holds no worker slot (one worker with one slot runs parent and child), a
//! replay never starts a second child, a fan-out of 50 children is waited for as a whole,
//! cancelling a parent cancels its descendants, and bad child waits are rejected with
//! INVALID_ARGUMENT.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use stackshift::proto as pb;
use stackshift::{
    ChildFailed, ChildRun, ChildStatus, ClientOptions, JobContext, ListRunsOptions, RunStatus,
    StackShift, StartOptions, StepKind, Worker,
};
use support::{Db, TestServer, poll_req, start_req};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

/// Every run of `job` (all statuses).
async fn runs_of(c: &StackShift, job: &str) -> Vec<stackshift::Run> {
    c.list_runs(ListRunsOptions {
        job: Some(job.to_owned()),
        page_size: Some(1000),
        ..Default::default()
    })
    .await
    .unwrap()
    .runs
}

async fn status_is(c: &StackShift, id: &str, want: RunStatus) {
    let deadline = Instant::now() + WAIT;
    loop {
        let run = c.get_run(id).await.unwrap();
        if run.status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} ({}) is {:?}, expected {want:?}",
            run.job,
            run.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `invoke` returns the child's value; the parent waits without holding the worker's only
/// slot (otherwise the child could never run); the child records its parent; a failing
/// child is a typed `ChildFailed` in the parent.
async fn invoke_returns_the_value_and_failures_are_typed(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .concurrency(1)
        .job("parent", |ctx: JobContext<Value>| async move {
            let n = ctx.payload["n"].as_i64().unwrap();
            let doubled: i64 = ctx
                .step
                .invoke("double", "double", &json!({ "n": n }))
                .await?;
            let failed = ctx
                .step
                .invoke::<Value>("explode", "explode", &json!({}))
                .await
                .unwrap_err();
            let typed = failed
                .downcast_ref::<ChildFailed>()
                .expect("a failed child is a ChildFailed");
            anyhow::Ok(json!({
                "doubled": doubled,
                "failed_status": format!("{:?}", typed.status),
                "failed_message": typed.failure.message,
                "failed_run": typed.run_id,
            }))
        })
        .job("double", |ctx: JobContext<Value>| async move {
            anyhow::Ok(ctx.payload["n"].as_i64().unwrap() * 2)
        })
        .job("explode", |_ctx: JobContext<Value>| async move {
            Err::<(), _>(stackshift::non_retryable("the child blew up"))
        })
        .build()
        .start();

    let parent = c
        .start("parent", json!({ "n": 21 }), StartOptions::default())
        .await
        .unwrap();
    let done = c.wait_for_run(&parent.id, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    let result = done.result.clone().unwrap();
    assert_eq!(result["doubled"], 42);
    assert_eq!(result["failed_status"], "Failed");
    assert!(
        result["failed_message"]
            .as_str()
            .unwrap()
            .contains("the child blew up")
    );
    assert_eq!(done.attempt, 1, "waiting on children uses no attempts");
    let step = done.step("double").expect("the child wait is journaled");
    assert_eq!(step.kind, StepKind::Child);

    let children = runs_of(&c, "double").await;
    assert_eq!(children.len(), 1);
    assert_eq!(
        children[0].parent_run_id.as_deref(),
        Some(parent.id.as_str())
    );
    assert_eq!(children[0].parent_step_id.as_deref(), Some("double"));
    assert_eq!(
        children[0].queue, "default",
        "a child inherits the parent's queue"
    );
    let exploded = runs_of(&c, "explode").await;
    assert_eq!(exploded.len(), 1);
    assert_eq!(exploded[0].status, RunStatus::Failed);
    assert_eq!(result["failed_run"], exploded[0].id);
    assert!(c.get_run(&parent.id).await.unwrap().parent_run_id.is_none());
    worker.shutdown().await;
}
both_stores!(invoke_returns_the_value_and_failures_are_typed);

/// A parent whose first attempt fails after its child completed replays the journaled
/// child result in its second attempt: exactly one child run exists.
async fn replay_never_starts_a_second_child(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let worker = Worker::builder(c.clone())
        .concurrency(2)
        .job("flaky-parent", move |ctx: JobContext<Value>| {
            let a = a.clone();
            async move {
                let v: i64 = ctx.step.invoke("child", "seven", &json!(null)).await?;
                if a.fetch_add(1, Ordering::SeqCst) == 0 {
                    anyhow::bail!("crash after the child returned");
                }
                anyhow::Ok(v)
            }
        })
        .job(
            "seven",
            |_ctx: JobContext<Value>| async move { anyhow::Ok(7) },
        )
        .build()
        .start();
    let retry = stackshift::RetryPolicy {
        initial_interval: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let parent = c
        .start(
            "flaky-parent",
            json!(null),
            StartOptions::default().retry_policy(retry),
        )
        .await
        .unwrap();
    let done = c.wait_for_run(&parent.id, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    assert_eq!(done.result.unwrap(), json!(7));
    assert_eq!(done.attempt, 2);
    assert_eq!(runs_of(&c, "seven").await.len(), 1, "one child, not two");
    worker.shutdown().await;
}
both_stores!(replay_never_starts_a_second_child);

/// `invoke_all` of 50 children returns all 50 outcomes in order.
async fn fan_out_of_fifty_children(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .concurrency(4)
        .job("fan-out", |ctx: JobContext<Value>| async move {
            let children = (0..50)
                .map(|i| ChildRun::new("square", &json!({ "i": i })))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let outcomes = ctx.step.invoke_all("squares", children).await?;
            let mut values = Vec::new();
            for o in outcomes {
                assert_eq!(o.status, ChildStatus::Completed);
                values.push(o.into_result::<i64>()?);
            }
            anyhow::Ok(values)
        })
        .job("square", |ctx: JobContext<Value>| async move {
            let i = ctx.payload["i"].as_i64().unwrap();
            anyhow::Ok(i * i)
        })
        .build()
        .start();
    let parent = c
        .start("fan-out", json!(null), StartOptions::default())
        .await
        .unwrap();
    let done = c.wait_for_run(&parent.id, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    let want: Vec<i64> = (0..50).map(|i| i * i).collect();
    assert_eq!(done.result.unwrap(), json!(want));
    let children = runs_of(&c, "square").await;
    assert_eq!(children.len(), 50);
    assert!(children.iter().all(|r| r.status == RunStatus::Completed
        && r.parent_run_id.as_deref() == Some(parent.id.as_str())));
    worker.shutdown().await;
}
both_stores!(fan_out_of_fifty_children);

/// Cancelling a parent cancels its child and grandchild in the same call; retrying the
/// parent afterwards finds the (cancelled) child instead of starting a new one, and the
/// handler sees a `ChildFailed` with status cancelled.
async fn cancel_cascades_to_descendants(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .concurrency(2)
        .job("root", |ctx: JobContext<Value>| async move {
            match ctx.step.invoke::<Value>("mid", "mid", &json!(null)).await {
                Ok(v) => anyhow::Ok(json!({ "value": v })),
                Err(e) => match e.downcast_ref::<ChildFailed>() {
                    Some(f) => anyhow::Ok(json!({ "child": format!("{:?}", f.status) })),
                    None => Err(e),
                },
            }
        })
        .job("mid", |ctx: JobContext<Value>| async move {
            let v: Value = ctx.step.invoke("leaf", "leaf", &json!(null)).await?;
            anyhow::Ok(v)
        })
        .job("leaf", |ctx: JobContext<Value>| async move {
            ctx.step.sleep("forever", "1h").await?;
            anyhow::Ok(json!(null))
        })
        .build()
        .start();
    let root = c
        .start("root", json!(null), StartOptions::default())
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let leaf = loop {
        if let Some(l) = runs_of(&c, "leaf").await.pop()
            && l.status == RunStatus::Waiting
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the leaf never reached its sleep"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mid = runs_of(&c, "mid").await.pop().unwrap();
    assert_eq!(leaf.parent_run_id.as_deref(), Some(mid.id.as_str()));
    status_is(&c, &root.id, RunStatus::Waiting).await;
    status_is(&c, &mid.id, RunStatus::Waiting).await;

    c.cancel_run(&root.id, Some("stop everything"))
        .await
        .unwrap();
    // Same transaction: no waiting needed.
    for id in [&root.id, &mid.id, &leaf.id] {
        assert_eq!(c.get_run(id).await.unwrap().status, RunStatus::Cancelled);
    }
    let why = c.get_run(&mid.id).await.unwrap().failure.unwrap().message;
    assert!(
        why.contains("parent run") && why.contains("cancelled"),
        "{why}"
    );

    c.retry_run(&root.id).await.unwrap();
    let done = c.wait_for_run(&root.id, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    assert_eq!(done.result.unwrap(), json!({ "child": "Cancelled" }));
    assert_eq!(
        runs_of(&c, "mid").await.len(),
        1,
        "the retry reused the child"
    );
    worker.shutdown().await;
}
both_stores!(cancel_cascades_to_descendants);

/// Bad child waits answer INVALID_ARGUMENT naming the field, and leave the run running.
async fn child_wait_validation(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut jobs = s.jobs().await;
    let mut worker = s.worker().await;
    jobs.start_run(start_req("v-parent", json!(null)))
        .await
        .unwrap();
    let task = worker
        .poll_task(poll_req(&["v-parent"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .pop()
        .unwrap();
    let suspend = |children: Vec<pb::ChildRunSpec>| pb::SuspendRunRequest {
        run_id: task.run_id.clone(),
        lease_token: task.lease_token.clone(),
        step_id: "kids".into(),
        wait: Some(pb::suspend_run_request::Wait::Child(pb::ChildWait {
            children,
        })),
    };
    let spec = |job: &str, payload: &str| pb::ChildRunSpec {
        job: job.into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    };
    let cases: Vec<(Vec<pb::ChildRunSpec>, &str)> = vec![
        (vec![], "child.children must hold 1 to 1000"),
        (
            vec![spec("ok", "1"), spec("bad name", "1")],
            "child.children[1].job",
        ),
        (vec![spec("ok", "{not json")], "child.children[0].payload"),
        (
            (0..1001).map(|_| spec("ok", "1")).collect(),
            "child.children must hold 1 to 1000",
        ),
    ];
    for (children, want) in cases {
        let err = worker.suspend_run(suspend(children)).await.unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{}",
            err.message()
        );
        assert!(
            err.message().contains(want),
            "{} lacks {want}",
            err.message()
        );
    }
    let run = jobs
        .get_run(pb::GetRunRequest {
            run_id: task.run_id.clone(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(run.status, pb::RunStatus::Running as i32);
    assert!(run.steps.is_empty());
    // A valid wait suspends and lists the child ids.
    let out = worker
        .suspend_run(suspend(vec![spec("ok", "1"), spec("ok", "2")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.outcome, pb::SuspendOutcome::Suspended as i32);
    assert_eq!(out.child_run_ids.len(), 2);
    assert!(out.wake_at.is_none());
}
both_stores!(child_wait_validation);

/// The server is killed (-9) while the parent waits and its child is mid-execution: after
/// the restart the child finishes, the parent resumes with its value, and there is still
/// exactly one child.
async fn child_wait_survives_server_kill(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .concurrency(2)
        .job("k-parent", |ctx: JobContext<Value>| async move {
            let v: String = ctx.step.invoke("slow", "k-slow", &json!(null)).await?;
            anyhow::Ok(v)
        })
        .job("k-slow", |ctx: JobContext<Value>| async move {
            ctx.step
                .run("work", || async {
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                    anyhow::Ok(())
                })
                .await?;
            anyhow::Ok("slow-done".to_owned())
        })
        .build()
        .start();
    let parent = c
        .start("k-parent", json!(null), StartOptions::default())
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while runs_of(&c, "k-slow").await.is_empty() {
        assert!(Instant::now() < deadline, "the child never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.kill9();
    s.restart();
    let done = c.wait_for_run(&parent.id, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    assert_eq!(done.result.unwrap(), json!("slow-done"));
    assert_eq!(runs_of(&c, "k-slow").await.len(), 1);
    worker.shutdown().await;
}
both_stores!(child_wait_survives_server_kill);
