//! End-to-end tests of the per-run history limits against the real server binary on SQLite
//! and PostgreSQL, started with low caps (`--max-steps-per-run 10`,
//! `--max-timeline-entries 12`): the step result that would be entry 11 answers
//! `RESOURCE_EXHAUSTED` with reason `STEP_LIMIT` and the run fails at once with
//! `StepLimitExceeded` (no retry); a Rust SDK handler looping over steps stops there while
//! other runs complete; the timeline keeps 12 entries, one `TIMELINE_TRUNCATED` marker and
//! how the run ended; out-of-range flags refuse to start the server.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use serde_json::json;
use stackshift::{ClientOptions, JobContext, RetryPolicy, StackShift, StartOptions, Worker};
use stackshift_proto::v1 as pb;
use support::{Db, TestServer, poll_req, start_req};
use tonic::Code;

const ARGS: &[&str] = &["--max-steps-per-run", "10", "--max-timeline-entries", "12"];

async fn get(s: &TestServer, id: &str, wait_ms: Option<u64>) -> pb::Run {
    s.jobs()
        .await
        .get_run(pb::GetRunRequest {
            run_id: id.into(),
            wait: wait_ms.map(support::ms),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

async fn start_and_claim(s: &TestServer, job: &str) -> (String, String) {
    let mut req = start_req(job, json!({}));
    req.retry_policy = Some(pb::RetryPolicy {
        max_attempts: 5,
        ..Default::default()
    });
    let run = s
        .jobs()
        .await
        .start_run(req)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let task = s
        .worker()
        .await
        .poll_task(poll_req(&[job], 10_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    assert_eq!(task.run_id, run.id);
    (run.id, task.lease_token)
}

fn step_req(run_id: &str, token: &str, step_id: &str) -> pb::CompleteStepRequest {
    pb::CompleteStepRequest {
        run_id: run_id.into(),
        lease_token: token.into(),
        step_id: step_id.into(),
        outcome: Some(pb::complete_step_request::Outcome::Output(b"1".to_vec())),
        started_at: None,
    }
}

fn kinds(run: &pb::Run) -> Vec<pb::TimelineEntryKind> {
    run.timeline
        .iter()
        .map(|t| pb::TimelineEntryKind::try_from(t.kind).unwrap())
        .collect()
}

/// Raw protocol: entries 1..=10 pass, a replay passes, entry 11 is refused with the code,
/// the reason and a message naming the flag; the run is failed at once.
async fn step_limit_refuses_and_fails_the_run(db: Db) {
    let Some(s) = TestServer::start_with(db, ARGS).await else {
        return;
    };
    let (run_id, token) = start_and_claim(&s, "loop").await;
    let mut w = s.worker().await;
    for i in 0..10 {
        let out = w
            .complete_step(step_req(&run_id, &token, &format!("s{i}")))
            .await
            .unwrap()
            .into_inner();
        assert!(!out.already_recorded);
    }
    let again = w
        .complete_step(step_req(&run_id, &token, "s3"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_recorded);
    let err = w
        .complete_step(step_req(&run_id, &token, "s10"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("stackshift-error-reason")
            .and_then(|v| v.to_str().ok()),
        Some("STEP_LIMIT")
    );
    assert!(err.message().contains("--max-steps-per-run"), "{err:?}");
    assert!(err.message().contains("10 journal entries"), "{err:?}");

    let run = get(&s, &run_id, None).await;
    assert_eq!(run.status, pb::RunStatus::Failed as i32, "{run:?}");
    assert_eq!(run.attempt, 1, "no retry after the step limit");
    let f = run.failure.clone().unwrap();
    assert_eq!(f.r#type, "StepLimitExceeded");
    assert!(f.non_retryable);
    assert_eq!(run.steps.len(), 10);
    // The worker's later calls find the run failed (its SDK stops on that).
    let err = w
        .fail_run(pb::FailRunRequest {
            run_id: run_id.clone(),
            lease_token: token.clone(),
            failure: Some(pb::Failure {
                message: "handler saw RESOURCE_EXHAUSTED".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let run = get(&s, &run_id, None).await;
    assert_eq!(run.failure.unwrap().r#type, "StepLimitExceeded");
}
both_stores!(step_limit_refuses_and_fails_the_run);

/// Through the Rust SDK: a handler looping over steps is stopped by the limit (failed, not
/// retried), and runs within the limit complete.
async fn sdk_handler_stops_at_the_limit(db: Db) {
    let Some(s) = TestServer::start_with(db, ARGS).await else {
        return;
    };
    let c = StackShift::new(ClientOptions::new(s.endpoint())).unwrap();
    let worker = Worker::builder(c.clone())
        .job("steps", |ctx: JobContext<serde_json::Value>| async move {
            let n = ctx.payload["n"].as_u64().unwrap_or(0);
            for i in 0..n {
                ctx.step
                    .run(&format!("s{i}"), || async move { anyhow::Ok(i) })
                    .await?;
            }
            anyhow::Ok(n)
        })
        .build()
        .start();
    let opts = || StartOptions::default().retry_policy(RetryPolicy::new().max_attempts(3));
    let big = c.start("steps", json!({"n": 50}), opts()).await.unwrap();
    let small: Vec<_> =
        futures::future::join_all((0..3).map(|_| c.start("steps", json!({"n": 10}), opts())))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let run = get(&s, &big.id, Some(30_000)).await;
    assert_eq!(run.status, pb::RunStatus::Failed as i32, "{run:?}");
    assert_eq!(run.attempt, 1);
    assert_eq!(run.failure.unwrap().r#type, "StepLimitExceeded");
    assert_eq!(run.steps.len(), 10);
    for r in small {
        let run = get(&s, &r.id, Some(30_000)).await;
        assert_eq!(run.status, pb::RunStatus::Completed as i32, "{run:?}");
        assert_eq!(run.steps.len(), 10);
    }
    // The worker is still serving: a new run completes.
    let later = c.start("steps", json!({"n": 2}), opts()).await.unwrap();
    let run = get(&s, &later.id, Some(30_000)).await;
    assert_eq!(run.status, pb::RunStatus::Completed as i32, "{run:?}");
    worker.shutdown().await;
}
both_stores!(sdk_handler_stops_at_the_limit);

/// The timeline keeps 12 entries, then one marker; the run keeps working and its end is
/// recorded.
async fn timeline_cap_truncates_with_a_marker(db: Db) {
    let Some(s) = TestServer::start_with(db, ARGS).await else {
        return;
    };
    let (run_id, token) = start_and_claim(&s, "chatty").await;
    let mut w = s.worker().await;
    // created + attempt_started + 9 steps = 11 entries.
    for i in 0..9 {
        w.complete_step(step_req(&run_id, &token, &format!("s{i}")))
            .await
            .unwrap();
    }
    // A retried attempt adds retry_scheduled (12) and attempt_started (13 = marker).
    w.fail_run(pb::FailRunRequest {
        run_id: run_id.clone(),
        lease_token: token.clone(),
        failure: Some(pb::Failure {
            message: "transient".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let task = s
        .worker()
        .await
        .poll_task(poll_req(&["chatty"], 10_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    assert_eq!(task.run_id, run_id);
    // Dropped (past the cap) but recorded in the journal.
    w.complete_step(step_req(&run_id, &task.lease_token, "after"))
        .await
        .unwrap();
    let run = get(&s, &run_id, None).await;
    use pb::TimelineEntryKind as K;
    let k = kinds(&run);
    assert_eq!(k.len(), 13, "{k:?}");
    assert_eq!(k[11], K::RetryScheduled);
    assert_eq!(k[12], K::TimelineTruncated);
    assert_eq!(run.steps.len(), 10);
    w.complete_run(pb::CompleteRunRequest {
        run_id: run_id.clone(),
        lease_token: task.lease_token.clone(),
        result: b"1".to_vec(),
    })
    .await
    .unwrap();
    let run = get(&s, &run_id, None).await;
    assert_eq!(run.status, pb::RunStatus::Completed as i32);
    let k = kinds(&run);
    assert_eq!(k.len(), 14, "{k:?}");
    assert_eq!(k[13], K::Completed);
    assert_eq!(k.iter().filter(|k| **k == K::TimelineTruncated).count(), 1);
}
both_stores!(timeline_cap_truncates_with_a_marker);

/// Out-of-range limits are refused at startup with a message naming the flag.
#[test]
fn out_of_range_flags_refuse_to_start() {
    for (flag, value) in [
        ("--max-steps-per-run", "9"),
        ("--max-steps-per-run", "1000001"),
        ("--max-timeline-entries", "0"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stackshift-server"))
            .args(["--listen", "127.0.0.1:0", "--database-url"])
            .arg(format!("sqlite://{}", dir.path().join("x.db").display()))
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{err}");
    }
}
