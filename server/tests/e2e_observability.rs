//! End-to-end observability tests against the real server binary on SQLite and PostgreSQL:
//! a run's full detail after a retry, a durable sleep and handler logs (through the Rust
//! SDK's `ctx.log`); `WatchRun` following a run to its end; `ListRuns` pagination while runs
//! are being created; Prometheus `/metrics` after a workload; and a canary API key and
//! payload that never reach the server log, the metrics or error messages.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use stackshift::proto as pb;
use stackshift::{ClientOptions, JobContext, RetryPolicy, StackShift, StartOptions, Worker};
use support::{Db, TestServer, poll_req, start_req};
use tokio_stream::StreamExt;

const WAIT: Duration = Duration::from_secs(60);

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

async fn raw_run(s: &TestServer, id: &str) -> pb::Run {
    s.jobs()
        .await
        .get_run(pb::GetRunRequest {
            run_id: id.into(),
            wait: Some(support::ms(50_000)),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

fn kind(t: &pb::TimelineEntry) -> pb::TimelineEntryKind {
    pb::TimelineEntryKind::try_from(t.kind).unwrap()
}

/// A job with two steps, a failure on attempt 1 (retried), a durable sleep and logs: the
/// run's detail tells exactly that story.
async fn full_detail_after_retry_wait_and_logs(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .job("story", |ctx: JobContext<serde_json::Value>| async move {
            ctx.log.info("starting");
            let n: u32 = ctx
                .step
                .run("fetch", || async {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    anyhow::Ok(7)
                })
                .await?;
            ctx.log.with_field("n", n).info("fetched");
            ctx.step
                .run("charge", || async {
                    ctx.log.with_field("attempt", ctx.attempt).warn("charging");
                    if ctx.attempt == 1 {
                        anyhow::bail!("card declined (transient)");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    anyhow::Ok(())
                })
                .await?;
            ctx.step.sleep("cool-down", "300ms").await?;
            ctx.log.info("done");
            anyhow::Ok(n)
        })
        .build()
        .start();
    let started = c
        .start(
            "story",
            json!({"order": 1}),
            StartOptions::default().retry_policy(
                RetryPolicy::new()
                    .max_attempts(3)
                    .initial_interval(Duration::from_millis(100)),
            ),
        )
        .await
        .unwrap();
    let run = raw_run(&s, &started.id).await;
    assert_eq!(run.status, pb::RunStatus::Completed as i32, "{run:?}");
    assert_eq!(run.attempt, 2);
    assert_eq!(run.attempts.len(), 2);
    assert!(run.attempts[0].failure.is_some());
    assert!(run.attempts[0].ended_at.is_some() && run.attempts[1].ended_at.is_some());
    assert!(run.attempts[1].failure.is_none());

    // Steps: fetch (attempt 1, ~30 ms), charge (attempt 2), the sleep.
    let step = |id: &str| run.steps.iter().find(|st| st.id == id).unwrap().clone();
    let fetch = step("fetch");
    assert_eq!(fetch.attempt, 1);
    assert_eq!(fetch.status, pb::StepStatus::Completed as i32);
    let d = fetch.duration.unwrap();
    assert!(d.seconds > 0 || d.nanos >= 25_000_000, "fetch took {d:?}");
    assert_eq!(fetch.output_size, 1);
    assert_eq!(step("charge").attempt, 2);
    assert!(step("charge").duration.is_some());

    // The timeline, in order.
    let kinds: Vec<_> = run.timeline.iter().map(kind).collect();
    use pb::TimelineEntryKind as K;
    assert_eq!(
        kinds,
        [
            K::Created,
            K::AttemptStarted,
            K::StepCompleted,
            K::RetryScheduled,
            K::AttemptStarted,
            K::StepCompleted,
            K::Waiting,
            K::TimerFired,
            K::AttemptResumed,
            K::Completed,
        ],
        "{:#?}",
        run.timeline
    );
    assert!(run.timeline.windows(2).all(|w| w[0].id < w[1].id));
    let at = |i: usize| support::ts_ms(&run.timeline[i].at);
    assert!((1..kinds.len()).all(|i| at(i - 1) <= at(i)));
    let retry = &run.timeline[3];
    assert!(support::ts_ms(&retry.scheduled_at) >= at(3) + 100);
    assert!(String::from_utf8_lossy(&retry.detail).contains("card declined"));
    let waiting = &run.timeline[6];
    assert_eq!(waiting.step_id, "cool-down");
    assert!(support::ts_ms(&waiting.scheduled_at) >= at(6) + 300);
    assert!(at(7) >= support::ts_ms(&waiting.scheduled_at));
    assert_eq!(run.timeline[9].attempt, 2);

    // Logs: every line, with its attempt and step; fields as JSON.
    let lines: Vec<(String, i32, String)> = run
        .logs
        .iter()
        .map(|l| (l.message.clone(), l.attempt, l.step_id.clone()))
        .collect();
    let expect = [
        ("starting", 1, ""),
        ("fetched", 1, ""),
        ("charging", 1, "charge"),
        ("starting", 2, ""),
        ("fetched", 2, ""),
        ("charging", 2, "charge"),
        // The resumed attempt replays the handler: code outside steps runs (and logs) again.
        ("starting", 2, ""),
        ("fetched", 2, ""),
        ("done", 2, ""),
    ];
    assert_eq!(
        lines,
        expect
            .iter()
            .map(|(m, a, st)| ((*m).to_owned(), *a, (*st).to_owned()))
            .collect::<Vec<_>>()
    );
    let fetched = &run.logs[1];
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&fetched.fields).unwrap(),
        json!({"n": 7})
    );
    assert_eq!(run.logs[2].level, pb::LogLevel::Warn as i32);
    assert!(run.logs.iter().all(|l| !l.truncated));
    worker.shutdown().await;
}
both_stores!(full_detail_after_retry_wait_and_logs);

/// The log cap through the protocol: 1,000 lines kept, one marker, then nothing; an
/// oversized message is cut; a bad level or non-object fields are rejected.
async fn log_cap_over_the_protocol(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut jobs = s.jobs().await;
    let mut w = s.worker().await;
    let run = jobs
        .start_run(start_req("chatty", json!(null)))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let task = w
        .poll_task(poll_req(&["chatty"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    let entry = |i: usize| pb::LogEntry {
        level: pb::LogLevel::Info as i32,
        message: format!("line {i}"),
        ..Default::default()
    };
    let append = |entries: Vec<pb::LogEntry>| pb::AppendLogsRequest {
        run_id: run.id.clone(),
        lease_token: task.lease_token.clone(),
        entries,
    };
    let mut total = (0, 0);
    for chunk in 0..3 {
        let r = w
            .append_logs(append(
                (chunk * 400..chunk * 400 + 400).map(entry).collect(),
            ))
            .await
            .unwrap()
            .into_inner();
        total = (total.0 + r.accepted, total.1 + r.dropped);
    }
    assert_eq!(total, (1_000, 200));
    let mut bad = entry(0);
    bad.fields = b"[1]".to_vec();
    let err = w.append_logs(append(vec![bad])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut bad = entry(0);
    bad.level = 99;
    let err = w.append_logs(append(vec![bad])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let stale = pb::AppendLogsRequest {
        lease_token: "ffffffffffffffffffffffffffffffff".into(),
        ..append(vec![entry(0)])
    };
    let err = w.append_logs(stale).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let got = jobs
        .get_run(pb::GetRunRequest {
            run_id: run.id.clone(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(got.logs.len(), 1_001);
    assert_eq!(got.logs[999].message, "line 999");
    assert!(got.logs[1_000].truncated);
    assert!(got.logs[1_000].message.contains("truncated"));
    assert_eq!(
        got.timeline
            .iter()
            .filter(|t| kind(t) == pb::TimelineEntryKind::LogsTruncated)
            .count(),
        1
    );

    // A long message is cut to 8 KiB (on a fresh run: this one is full).
    let run2 = jobs
        .start_run(start_req("chatty", json!(null)))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let t2 = w
        .poll_task(poll_req(&["chatty"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    w.append_logs(pb::AppendLogsRequest {
        run_id: run2.id.clone(),
        lease_token: t2.lease_token,
        entries: vec![pb::LogEntry {
            message: "é".repeat(10_000),
            ..Default::default()
        }],
    })
    .await
    .unwrap();
    let got = jobs
        .get_run(pb::GetRunRequest {
            run_id: run2.id.clone(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert!(got.logs[0].message.len() <= 8 * 1024);
    assert!(got.logs[0].message.len() > 8 * 1024 - 2);
    assert_eq!(got.logs[0].level, pb::LogLevel::Info as i32);
}
both_stores!(log_cap_over_the_protocol);

/// `WatchRun` sends the run, then each change, and ends after the final status.
async fn watch_run_follows_a_run_to_its_end(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut jobs = s.jobs().await;
    let mut w = s.worker().await;
    let run = jobs
        .start_run(start_req("watched", json!({"x": 1})))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let mut stream = jobs
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let first_run = first.run.unwrap();
    assert!(!first.r#final);
    assert_eq!(first_run.status, pb::RunStatus::Queued as i32);
    assert_eq!(first_run.timeline.len(), 1);

    let collector = tokio::spawn(async move {
        let mut msgs = Vec::new();
        while let Some(m) = stream.next().await {
            msgs.push(m.unwrap());
        }
        msgs
    });
    let task = w
        .poll_task(poll_req(&["watched"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    w.append_logs(pb::AppendLogsRequest {
        run_id: run.id.clone(),
        lease_token: task.lease_token.clone(),
        entries: vec![pb::LogEntry {
            message: "hello".into(),
            ..Default::default()
        }],
    })
    .await
    .unwrap();
    w.complete_step(pb::CompleteStepRequest {
        run_id: run.id.clone(),
        lease_token: task.lease_token.clone(),
        step_id: "s1".into(),
        outcome: Some(pb::complete_step_request::Outcome::Output(b"1".to_vec())),
        ..Default::default()
    })
    .await
    .unwrap();
    w.complete_run(pb::CompleteRunRequest {
        run_id: run.id.clone(),
        lease_token: task.lease_token.clone(),
        result: b"2".to_vec(),
    })
    .await
    .unwrap();
    let msgs = tokio::time::timeout(WAIT, collector)
        .await
        .expect("the stream ends after the final status")
        .unwrap();
    let last = msgs.last().unwrap();
    assert!(last.r#final);
    assert_eq!(
        last.run.as_ref().unwrap().status,
        pb::RunStatus::Completed as i32
    );
    assert!(msgs[..msgs.len() - 1].iter().all(|m| !m.r#final));
    // Later messages carry only new entries: together they are the rest of the timeline,
    // each entry once, in order.
    let ids: Vec<i64> = msgs
        .iter()
        .flat_map(|m| m.run.as_ref().unwrap().timeline.iter().map(|t| t.id))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let kinds: Vec<_> = msgs
        .iter()
        .flat_map(|m| m.run.as_ref().unwrap().timeline.iter().map(kind))
        .collect();
    use pb::TimelineEntryKind as K;
    assert_eq!(kinds, [K::AttemptStarted, K::StepCompleted, K::Completed]);
    let logs: Vec<String> = msgs
        .iter()
        .flat_map(|m| {
            m.run
                .as_ref()
                .unwrap()
                .logs
                .iter()
                .map(|l| l.message.clone())
        })
        .collect();
    assert_eq!(logs, ["hello"]);

    // Watching a finished run returns it once, final.
    let mut again = jobs
        .watch_run(pb::WatchRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let only = again.next().await.unwrap().unwrap();
    assert!(only.r#final);
    assert!(again.next().await.is_none());
    let err = jobs
        .watch_run(pb::WatchRunRequest {
            run_id: "0190aaaa-0000-7000-8000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
both_stores!(watch_run_follows_a_run_to_its_end);

/// Paging through runs while new ones are being created: no duplicates, no gaps (every
/// run that existed when paging began appears), newest first; plus the new filters.
async fn list_runs_pages_while_runs_are_created(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut jobs = s.jobs().await;
    let mut before = Vec::new();
    for i in 0..120 {
        let mut req = start_req("listed", json!({ "i": i }));
        if i % 40 == 0 {
            req.idempotency_key = format!("idem-{i}");
        }
        let r = jobs.start_run(req).await.unwrap().into_inner().run.unwrap();
        before.push(r);
    }
    let creator = {
        let mut jobs = s.jobs().await;
        tokio::spawn(async move {
            for i in 0..150 {
                jobs.start_run(start_req("listed", json!({ "late": i })))
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = jobs
            .list_runs(pb::ListRunsRequest {
                job: "listed".into(),
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.runs.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    creator.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "duplicates across pages");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");
    for r in &before {
        assert!(unique.contains(&r.id), "gap: run {} missing", r.id);
    }
    // Filters: idempotency key and a creation-time window.
    let page = jobs
        .list_runs(pb::ListRunsRequest {
            idempotency_key: "idem-40".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.runs.len(), 1);
    assert_eq!(page.runs[0].id, before[40].id);
    let from = before[10].created_at;
    let to = before[20].created_at;
    let page = jobs
        .list_runs(pb::ListRunsRequest {
            job: "listed".into(),
            created_after: from,
            created_before: to,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let lo = support::ts_ms(&before[10].created_at);
    let hi = support::ts_ms(&before[20].created_at);
    let expect: Vec<&String> = before
        .iter()
        .rev()
        .filter(|r| {
            let t = support::ts_ms(&r.created_at);
            t >= lo && t < hi
        })
        .map(|r| &r.id)
        .collect();
    let got: Vec<&String> = page.runs.iter().map(|r| &r.id).collect();
    assert_eq!(got, expect);
    let err = jobs
        .list_runs(pb::ListRunsRequest {
            created_after: before[20].created_at,
            created_before: before[10].created_at,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
both_stores!(list_runs_pages_while_runs_are_created);
