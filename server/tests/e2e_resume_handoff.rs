//! End-to-end tests of the resume handoff against the real server binary on SQLite and
//! PostgreSQL: an event publish that resumes a waiting run claims it for a poll parked on
//! its job inside the publish's own transaction (one commit from publish to a delivered
//! task, counted by `/metrics`), exactly one of several parked polls gets it, and without a
//! parked poll of the job (the poll went away, or polls of other jobs only) the run is
//! queued as before and the next poll claims it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::events_service_client::EventsServiceClient;
use stackshift_proto::v1::worker_service_client::WorkerServiceClient;
use support::{Db, TestServer, metrics_addr, ms, poll_req, scrape_metrics, start_req};

/// Durable commits so far.
async fn commits(addr: &str) -> f64 {
    scrape_metrics(addr).await["stackshift_commit_batch_size_count"]
}

/// Waits until `n` long-polls are open and no commit happened for a while (the polls
/// parked after their claims found nothing).
async fn settle(addr: &str, n: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = -1.0;
    loop {
        let m = scrape_metrics(addr).await;
        let c = m["stackshift_commit_batch_size_count"];
        if m["stackshift_open_long_polls"] == n && c == last {
            return c;
        }
        assert!(Instant::now() < deadline, "polls never settled: {m:?}");
        last = c;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn publish(s: &TestServer, key: &str, id: &str) -> pb::PublishEventResponse {
    EventsServiceClient::connect(s.endpoint())
        .await
        .unwrap()
        .publish_event(pb::PublishEventRequest {
            name: "paid".into(),
            payload: json!({"id": id}).to_string().into_bytes(),
            id: id.into(),
            correlation_key: key.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Starts a run of `job`, claims it and suspends it on event `paid` with `key`.
async fn waiting_run(s: &TestServer, job: &str, key: &str) -> String {
    let run = s
        .jobs()
        .await
        .start_run(start_req(job, json!({})))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let task = poll(s, job, 5_000).await.unwrap();
    assert_eq!(task.run_id, run.id);
    let out = s
        .worker()
        .await
        .suspend_run(pb::SuspendRunRequest {
            run_id: run.id.clone(),
            lease_token: task.lease_token,
            step_id: "paid".into(),
            wait: Some(pb::suspend_run_request::Wait::Event(pb::EventWait {
                event_name: "paid".into(),
                correlation_key: key.into(),
                timeout: Some(ms(600_000)),
            })),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.outcome, pb::SuspendOutcome::Suspended as i32, "{out:?}");
    run.id
}

/// Checks that `task` is the resumed run `id`, delivered as its first attempt with the
/// event in its journal, and completes it.
async fn check_and_complete(s: &TestServer, task: &pb::Task, id: &str) {
    assert_eq!(task.run_id, id);
    assert!(
        task.resumed,
        "a resumed run is delivered as the same attempt"
    );
    assert_eq!(task.attempt, 1);
    let steps: Vec<&str> = task.journal.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(steps, ["paid"]);
    s.worker()
        .await
        .complete_run(pb::CompleteRunRequest {
            run_id: id.into(),
            lease_token: task.lease_token.clone(),
            result: b"1".to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(s.get_run(id).await.status, pb::RunStatus::Completed as i32);
}

/// Two polls of the job are parked when the event arrives: the publish claims the run for
/// one of them in its own transaction (one commit in all), the other gets nothing, and the
/// run is never delivered again.
async fn resume_is_handed_to_one_parked_poll(db: Db) {
    let Some(s) = TestServer::start_with(db, &["--metrics-listen", "127.0.0.1:0"]).await else {
        return;
    };
    let addr = metrics_addr(&s).await;
    let id = waiting_run(&s, "pay", "order-1").await;
    let polls: Vec<_> = (0..2)
        .map(|_| {
            let endpoint = s.endpoint();
            tokio::spawn(async move { (poll_on(endpoint, "pay", 4_000).await, Instant::now()) })
        })
        .collect();
    let before = settle(&addr, 2.0).await;
    let t = Instant::now();
    let out = publish(&s, "order-1", "e1").await;
    assert_eq!(out.resumed_run_count, 1);
    let mut got = Vec::new();
    for p in polls {
        if let (Some(task), answered) = p.await.unwrap() {
            got.push((task, answered.duration_since(t)));
        }
    }
    assert_eq!(got.len(), 1, "exactly one parked poll gets the run");
    let (task, after) = got.remove(0);
    assert!(
        after < Duration::from_secs(3),
        "handed over at once, not at a poll timeout ({after:?})"
    );
    assert_eq!(
        commits(&addr).await - before,
        1.0,
        "publish -> delivered task is one commit"
    );
    assert_eq!(s.get_run(&id).await.status, pb::RunStatus::Running as i32);
    assert!(
        poll(&s, "pay", 300).await.is_none(),
        "the run is not delivered twice"
    );
    check_and_complete(&s, &task, &id).await;
}
both_stores!(resume_is_handed_to_one_parked_poll);

/// Without a parked poll of the job (the only poll of it went away before the event; a
/// poll of another job is parked), the publish queues the run as before and the next poll
/// of the job claims it.
async fn resume_falls_back_without_a_parked_poll(db: Db) {
    let Some(s) = TestServer::start_with(db, &["--metrics-listen", "127.0.0.1:0"]).await else {
        return;
    };
    let addr = metrics_addr(&s).await;
    let id = waiting_run(&s, "pay", "order-2").await;
    // A poll of `pay` that its client abandons: the server drops it.
    let gone = tokio::time::timeout(Duration::from_millis(500), poll(&s, "pay", 10_000)).await;
    assert!(
        gone.is_err(),
        "the poll found nothing before it was dropped"
    );
    let other = {
        let endpoint = s.endpoint();
        tokio::spawn(async move { poll_on(endpoint, "ship", 2_000).await })
    };
    let before = settle(&addr, 1.0).await;
    let out = publish(&s, "order-2", "e2").await;
    assert_eq!(out.resumed_run_count, 1);
    assert_eq!(s.get_run(&id).await.status, pb::RunStatus::Queued as i32);
    assert_eq!(commits(&addr).await - before, 1.0, "the publish alone");
    assert!(other.await.unwrap().is_none(), "a poll of another job");
    let task = poll(&s, "pay", 2_000)
        .await
        .expect("the next poll claims it");
    check_and_complete(&s, &task, &id).await;
}
both_stores!(resume_falls_back_without_a_parked_poll);

/// Polls `job` on `s`.
async fn poll(s: &TestServer, job: &str, wait_ms: u64) -> Option<pb::Task> {
    first_task(s.worker().await, job, wait_ms).await
}

/// Polls `job` on the server at `endpoint` (from a spawned task).
async fn poll_on(endpoint: String, job: &str, wait_ms: u64) -> Option<pb::Task> {
    first_task(
        WorkerServiceClient::connect(endpoint).await.unwrap(),
        job,
        wait_ms,
    )
    .await
}

/// The first task of one poll for `job` through `client`.
async fn first_task(
    mut client: WorkerServiceClient<tonic::transport::Channel>,
    job: &str,
    wait_ms: u64,
) -> Option<pb::Task> {
    client
        .poll_task(poll_req(&[job], wait_ms))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .into_iter()
        .next()
}
