//! End-to-end tests of the worker protocol and run control, against the real server binary
//! over gRPC with raw protobuf clients (no SDK), on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use stackshift_proto::v1 as pb;
use support::{Db, TestServer, ms, poll_req, start_req, ts_ms};
use tonic::Code;

async fn server(db: Db) -> Option<TestServer> {
    TestServer::start(db).await
}

async fn poll_one(s: &TestServer, job: &str, wait_ms: u64) -> Option<pb::Task> {
    let mut w = s.worker().await;
    let resp = w
        .poll_task(poll_req(&[job], wait_ms))
        .await
        .unwrap()
        .into_inner();
    resp.tasks.into_iter().next()
}

async fn long_poll_wakes_on_start(db: Db) {
    let Some(s) = server(db).await else { return };
    // An empty poll returns empty (not an error) once its wait passes.
    let t0 = Instant::now();
    assert!(poll_one(&s, "wake", 300).await.is_none());
    assert!(t0.elapsed() >= Duration::from_millis(290));

    let mut w = s.worker().await;
    let poll = tokio::spawn(async move {
        let t = Instant::now();
        let r = w
            .poll_task(poll_req(&["wake"], 20_000))
            .await
            .unwrap()
            .into_inner();
        (r, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let run = s
        .jobs()
        .await
        .start_run(start_req("wake", json!({"hello": "world"})))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let (resp, waited) = poll.await.unwrap();
    let delivered = started.elapsed();
    assert_eq!(resp.tasks.len(), 1);
    let task = &resp.tasks[0];
    assert_eq!(task.run_id, run.id);
    assert_eq!(task.attempt, 1);
    assert_eq!(task.payload, br#"{"hello":"world"}"#);
    assert!(task.journal.is_empty());
    assert!(
        delivered < Duration::from_secs(2) && waited < Duration::from_secs(5),
        "woken {delivered:?} after the start (poll deadline 20 s)"
    );
    eprintln!("start -> poll returned in {delivered:?}");
}
both_stores!(long_poll_wakes_on_start);

async fn lease_expiry_redelivers_and_rejects_stale_token(db: Db) {
    let Some(s) = server(db).await else { return };
    let mut req = start_req("lease", json!(1));
    req.lease_timeout = Some(ms(1_000));
    let run = s
        .jobs()
        .await
        .start_run(req)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let first = poll_one(&s, "lease", 5_000).await.unwrap();
    assert_eq!(first.lease_timeout, Some(ms(1_000)));
    // The worker "dies": no heartbeat. A new poll gets attempt 2 once the lease expires,
    // woken by the server's timer (the poll itself would wait 10 s).
    let t0 = Instant::now();
    let second = poll_one(&s, "lease", 10_000).await.expect("redelivered");
    assert_eq!(second.run_id, run.id);
    assert_eq!(second.attempt, 2);
    assert_ne!(second.lease_token, first.lease_token);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "redelivered after {:?}",
        t0.elapsed()
    );

    // Every write with the stale token is refused and changes nothing.
    let before = s.get_run(&run.id).await;
    let mut w = s.worker().await;
    let err = w
        .complete_step(pb::CompleteStepRequest {
            run_id: run.id.clone(),
            lease_token: first.lease_token.clone(),
            step_id: "s1".into(),
            outcome: Some(pb::complete_step_request::Outcome::Output(b"1".to_vec())),
            started_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = w
        .complete_run(pb::CompleteRunRequest {
            run_id: run.id.clone(),
            lease_token: first.lease_token.clone(),
            result: b"1".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = w
        .heartbeat(pb::HeartbeatRequest {
            run_id: run.id.clone(),
            lease_token: first.lease_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let after = s.get_run(&run.id).await;
    assert_eq!(before, after, "stale writes changed nothing");
    assert!(after.steps.is_empty());
    assert_eq!(after.attempts.len(), 2);
    assert!(
        after.attempts[0]
            .failure
            .as_ref()
            .unwrap()
            .message
            .contains("lease expired")
    );

    // The live attempt completes.
    w.complete_run(pb::CompleteRunRequest {
        run_id: run.id.clone(),
        lease_token: second.lease_token.clone(),
        result: br#"{"ok":true}"#.to_vec(),
    })
    .await
    .unwrap();
    let done = s.get_run(&run.id).await;
    assert_eq!(done.status, pb::RunStatus::Completed as i32);
    assert_eq!(done.result, br#"{"ok":true}"#);
}
both_stores!(lease_expiry_redelivers_and_rejects_stale_token);

async fn heartbeats_keep_the_lease(db: Db) {
    let Some(s) = server(db).await else { return };
    let mut req = start_req("beat", json!(1));
    req.lease_timeout = Some(ms(1_000));
    let run = s
        .jobs()
        .await
        .start_run(req)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let task = poll_one(&s, "beat", 5_000).await.unwrap();
    let mut w = s.worker().await;
    let mut last_deadline = ts_ms(&task.lease_deadline);
    // A 3 s "step" under a 1 s lease, heartbeating every 300 ms.
    let other = {
        let mut w2 = s.worker().await;
        tokio::spawn(async move {
            w2.poll_task(poll_req(&["beat"], 3_000))
                .await
                .unwrap()
                .into_inner()
        })
    };
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hb = w
            .heartbeat(pb::HeartbeatRequest {
                run_id: run.id.clone(),
                lease_token: task.lease_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!hb.cancel_requested);
        let d = ts_ms(&hb.lease_deadline);
        assert!(d > last_deadline);
        last_deadline = d;
    }
    assert!(
        other.await.unwrap().tasks.is_empty(),
        "no redelivery while heartbeating"
    );
    w.complete_step(pb::CompleteStepRequest {
        run_id: run.id.clone(),
        lease_token: task.lease_token.clone(),
        step_id: "long".into(),
        outcome: Some(pb::complete_step_request::Outcome::Output(
            b"\"done\"".to_vec(),
        )),
        started_at: None,
    })
    .await
    .unwrap();
    let r = s.get_run(&run.id).await;
    assert_eq!(r.attempt, 1);
    assert_eq!(r.steps.len(), 1);
}
both_stores!(heartbeats_keep_the_lease);

async fn retry_delays_follow_the_policy(db: Db) {
    let Some(s) = server(db).await else { return };
    let mut req = start_req("flaky", json!(1));
    req.retry_policy = Some(pb::RetryPolicy {
        max_attempts: 3,
        initial_interval: Some(ms(300)),
        backoff_coefficient: 2.0,
        maximum_interval: Some(ms(10_000)),
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
    let mut w = s.worker().await;
    let mut expected = vec![300, 600].into_iter();
    for attempt in 1..=3 {
        let task = poll_one(&s, "flaky", 10_000).await.unwrap();
        assert_eq!(task.attempt, attempt);
        let out = w
            .fail_run(pb::FailRunRequest {
                run_id: run.id.clone(),
                lease_token: task.lease_token.clone(),
                failure: Some(pb::Failure {
                    message: format!("attempt {attempt} failed"),
                    r#type: "FlakyError".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        if attempt < 3 {
            assert_eq!(out.status, pb::RunStatus::Queued as i32);
            let r = s.get_run(&run.id).await;
            let ended = ts_ms(&r.attempts.last().unwrap().ended_at);
            let next = ts_ms(&out.next_attempt_at);
            assert_eq!(next - ended, expected.next().unwrap(), "backoff delay");
            // Not delivered before its time.
            assert!(poll_one(&s, "flaky", 100).await.is_none());
        } else {
            assert_eq!(out.status, pb::RunStatus::Failed as i32);
            assert!(out.next_attempt_at.is_none());
        }
    }
    let r = s.get_run(&run.id).await;
    assert_eq!(r.status, pb::RunStatus::Failed as i32);
    assert_eq!(r.failure.unwrap().message, "attempt 3 failed");
    assert_eq!(r.attempts.len(), 3);
}
both_stores!(retry_delays_follow_the_policy);

async fn non_retryable_fails_at_once(db: Db) {
    let Some(s) = server(db).await else { return };
    let run = s
        .jobs()
        .await
        .start_run(start_req("strict", json!(1)))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(run.max_attempts, 5, "default policy");
    let task = poll_one(&s, "strict", 5_000).await.unwrap();
    let out = s
        .worker()
        .await
        .fail_run(pb::FailRunRequest {
            run_id: run.id.clone(),
            lease_token: task.lease_token,
            failure: Some(pb::Failure {
                message: "Payment is not complete".into(),
                non_retryable: true,
                details: br#"{"status":"pending"}"#.to_vec(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.status, pb::RunStatus::Failed as i32);
    let r = s.get_run(&run.id).await;
    assert_eq!(r.attempt, 1);
    let f = r.failure.unwrap();
    assert!(f.non_retryable);
    assert_eq!(f.details, br#"{"status":"pending"}"#);
}
both_stores!(non_retryable_fails_at_once);

async fn cancel_and_retry(db: Db) {
    let Some(s) = server(db).await else { return };
    let mut jobs = s.jobs().await;
    let mut w = s.worker().await;
    // Cancel a queued run: it is never delivered.
    let queued = jobs
        .start_run(start_req("c", json!(1)))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let c = jobs
        .cancel_run(pb::CancelRunRequest {
            run_id: queued.id.clone(),
            reason: "user closed the account".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(c.status, pb::RunStatus::Cancelled as i32);
    assert_eq!(c.failure.unwrap().message, "user closed the account");
    assert!(poll_one(&s, "c", 200).await.is_none());

    // Retry the cancelled run; it records a step, then is cancelled while running.
    jobs.retry_run(pb::RetryRunRequest {
        run_id: queued.id.clone(),
    })
    .await
    .unwrap();
    let task = poll_one(&s, "c", 5_000).await.unwrap();
    w.complete_step(pb::CompleteStepRequest {
        run_id: queued.id.clone(),
        lease_token: task.lease_token.clone(),
        step_id: "first".into(),
        outcome: Some(pb::complete_step_request::Outcome::Output(b"42".to_vec())),
        started_at: None,
    })
    .await
    .unwrap();
    jobs.cancel_run(pb::CancelRunRequest {
        run_id: queued.id.clone(),
        reason: String::new(),
    })
    .await
    .unwrap();
    let hb = w
        .heartbeat(pb::HeartbeatRequest {
            run_id: queued.id.clone(),
            lease_token: task.lease_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.cancel_requested);
    let err = w
        .complete_step(pb::CompleteStepRequest {
            run_id: queued.id.clone(),
            lease_token: task.lease_token.clone(),
            step_id: "second".into(),
            outcome: Some(pb::complete_step_request::Outcome::Output(b"1".to_vec())),
            started_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("cancelled"));
    // Completed and cancelled runs cannot be cancelled again.
    let err = jobs
        .cancel_run(pb::CancelRunRequest {
            run_id: queued.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Retry: the completed step is still memoized in the new attempt's journal.
    let r = jobs
        .retry_run(pb::RetryRunRequest {
            run_id: queued.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(r.status, pb::RunStatus::Queued as i32);
    let task = poll_one(&s, "c", 5_000).await.unwrap();
    assert_eq!(task.journal.len(), 1);
    assert_eq!(task.journal[0].id, "first");
    assert_eq!(
        task.journal[0].outcome,
        Some(pb::journal_entry::Outcome::Output(b"42".to_vec()))
    );
    w.complete_run(pb::CompleteRunRequest {
        run_id: queued.id.clone(),
        lease_token: task.lease_token,
        result: vec![],
    })
    .await
    .unwrap();
    let err = jobs
        .retry_run(pb::RetryRunRequest {
            run_id: queued.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "completed runs are not retried"
    );
}
both_stores!(cancel_and_retry);

async fn concurrent_idempotent_starts(db: Db) {
    let Some(s) = server(db).await else { return };
    let mut handles = Vec::new();
    for _ in 0..50 {
        let mut jobs = s.jobs().await; // separate connections
        handles.push(tokio::spawn(async move {
            let mut req = start_req("sendVerificationEmail", json!({"userId": "user_123"}));
            req.queue = "emails".into();
            req.idempotency_key = "verify:user_123".into();
            req.idempotency_ttl = Some(ms(2_000));
            jobs.start_run(req).await.unwrap().into_inner()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for h in handles {
        let r = h.await.unwrap();
        ids.insert(r.run.unwrap().id);
        if !r.duplicate {
            created += 1;
        }
    }
    assert_eq!(created, 1, "exactly one start created a run");
    assert_eq!(ids.len(), 1, "all duplicates returned the same run");
    let list = s
        .jobs()
        .await
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.runs.len(), 1);
    // After the TTL the key starts a new run.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let mut req = start_req("sendVerificationEmail", json!({"userId": "user_123"}));
    req.idempotency_key = "verify:user_123".into();
    let r = s.jobs().await.start_run(req).await.unwrap().into_inner();
    assert!(!r.duplicate);
    assert!(!ids.contains(&r.run.unwrap().id));
}
both_stores!(concurrent_idempotent_starts);

#[tokio::test]
async fn health_is_served() {
    use tonic_health::pb::health_client::HealthClient;
    let s = TestServer::start(Db::Sqlite).await.unwrap();
    let ch = tonic::transport::Channel::from_shared(s.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = HealthClient::new(ch);
    let resp = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "stackshift.v1.JobsService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_open_polls() {
    let mut s = TestServer::start_with(Db::Sqlite, &["--shutdown-grace-secs", "3"])
        .await
        .unwrap();
    let mut w = s.worker().await;
    let poll = tokio::spawn(async move {
        let t = Instant::now();
        let r = w.poll_task(poll_req(&["x"], 30_000)).await;
        (r.map(|r| r.into_inner().tasks.len()), t.elapsed())
    });
    // A run started before the signal is acknowledged and must survive.
    let run = s
        .jobs()
        .await
        .start_run(start_req("y", json!(1)))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let (status, s) = tokio::task::spawn_blocking(move || (s.terminate(), s))
        .await
        .unwrap();
    let mut s = s;
    assert!(status.success(), "server exited with {status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "exit took {:?}",
        t0.elapsed()
    );
    let (res, waited) = poll.await.unwrap();
    assert!(
        waited < Duration::from_secs(2),
        "open poll returned after {waited:?}"
    );
    assert_eq!(res.unwrap(), 0, "an open poll returns empty on shutdown");
    s.restart();
    assert_eq!(
        s.get_run(&run.id).await.status,
        pb::RunStatus::Queued as i32
    );
}
