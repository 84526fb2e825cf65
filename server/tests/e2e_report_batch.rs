//! `WorkerService.ReportBatch` against the real server binary: every item is answered
//! exactly as its single RPC answers it (a bad item never fails its neighbours), the valid
//! items are durable across a kill -9, the item cap, namespace scoping, and the Rust SDK's
//! worker sharing calls between concurrent handlers (read from `/metrics`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use stackshift::{ClientOptions, JobContext, StackShift, StartOptions, Worker};
use stackshift_proto::v1 as pb;
use support::{Db, TestServer, metrics_addr, ms, poll_req, scrape_metrics, start_req, with_key};
use tonic::Code;

use pb::report_item::Report;
use pb::report_result::Result as Answer;

/// Starts a run of `job` (optionally with a lease timeout) and returns its id.
async fn start(s: &TestServer, job: &str, lease_ms: Option<u64>, key: Option<&str>) -> String {
    let mut req = start_req(job, json!({"n": 1}));
    req.lease_timeout = lease_ms.map(ms);
    s.jobs()
        .await
        .start_run(with_key(req, key))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .id
}

/// Polls one task of `job`.
async fn poll(s: &TestServer, job: &str, key: Option<&str>) -> pb::Task {
    s.worker()
        .await
        .poll_task(with_key(poll_req(&[job], 5_000), key))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .pop()
        .expect("a task")
}

fn step(task: &pb::Task, id: &str, output: &[u8]) -> pb::CompleteStepRequest {
    pb::CompleteStepRequest {
        run_id: task.run_id.clone(),
        lease_token: task.lease_token.clone(),
        step_id: id.into(),
        outcome: Some(pb::complete_step_request::Outcome::Output(output.to_vec())),
        started_at: None,
    }
}

fn item(report: Report) -> pb::ReportItem {
    pb::ReportItem {
        report: Some(report),
    }
}

/// Sends `items` in one call and returns the answers, one per item.
async fn batch(s: &TestServer, items: Vec<pb::ReportItem>, key: Option<&str>) -> Vec<Answer> {
    let n = items.len();
    let results = s
        .worker()
        .await
        .report_batch(with_key(pb::ReportBatchRequest { items }, key))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), n, "one answer per item");
    results.into_iter().map(|r| r.result.unwrap()).collect()
}

/// What the single RPC answers for `report`: `Ok(answer)` or `Err((code, message))`.
async fn single(
    s: &TestServer,
    report: Report,
    key: Option<&str>,
) -> Result<Answer, (Code, String)> {
    let mut w = s.worker().await;
    let out = match report {
        Report::CompleteStep(r) => w
            .complete_step(with_key(r, key))
            .await
            .map(|r| Answer::CompleteStep(r.into_inner())),
        Report::CompleteRun(r) => w
            .complete_run(with_key(r, key))
            .await
            .map(|r| Answer::CompleteRun(r.into_inner())),
        Report::FailRun(r) => w
            .fail_run(with_key(r, key))
            .await
            .map(|r| Answer::FailRun(r.into_inner())),
    };
    out.map_err(|e| (e.code(), e.message().to_owned()))
}

/// The batch answer as `Ok(answer)` or `Err((code, message))`, comparable with [`single`].
fn as_result(answer: Answer) -> Result<Answer, (Code, String)> {
    match answer {
        Answer::Error(e) => Err((Code::from(e.code), e.message)),
        other => Ok(other),
    }
}

async fn items_answer_like_single_rpcs_and_survive_kill9(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    // A: steps; B: fails; C: completes; D: its first lease expired (stale token).
    let a = start(&s, "rb", None, None).await;
    let ta = poll(&s, "rb", None).await;
    let b = start(&s, "rb", None, None).await;
    let tb = poll(&s, "rb", None).await;
    let c = start(&s, "rb", None, None).await;
    let tc = poll(&s, "rb", None).await;
    assert_eq!((&ta.run_id, &tb.run_id, &tc.run_id), (&a, &b, &c));
    let d = start(&s, "rb-stale", Some(1_000), None).await;
    let stale = poll(&s, "rb-stale", None).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let fresh = poll(&s, "rb-stale", None).await;
    assert_eq!((&stale.run_id, &fresh.run_id), (&d, &d));
    assert_ne!(stale.lease_token, fresh.lease_token);
    // s1 of A is recorded before the batch: the batch resends it.
    let first = single(&s, Report::CompleteStep(step(&ta, "s1", b"1")), None).await;
    assert!(matches!(first, Ok(Answer::CompleteStep(r)) if !r.already_recorded));

    let unknown = "0195f0e2-0000-7000-8000-000000000000";
    let errors: Vec<Report> = vec![
        Report::CompleteStep(step(&stale, "late", b"1")),
        Report::CompleteRun(pb::CompleteRunRequest {
            run_id: unknown.into(),
            lease_token: ta.lease_token.clone(),
            result: b"1".to_vec(),
        }),
        Report::CompleteStep(step(&ta, "bad-json", b"{not json")),
        Report::CompleteStep(pb::CompleteStepRequest {
            outcome: None,
            ..step(&ta, "no-outcome", b"")
        }),
        Report::FailRun(pb::FailRunRequest {
            failure: None,
            ..pb::FailRunRequest {
                run_id: b.clone(),
                lease_token: tb.lease_token.clone(),
                failure: None,
            }
        }),
    ];
    let mut items = vec![
        item(Report::CompleteStep(step(&ta, "s2", b"{\"two\":2}"))),
        item(Report::CompleteStep(step(&ta, "s1", b"1"))),
    ];
    items.extend(errors.iter().cloned().map(item));
    items.push(pb::ReportItem { report: None });
    items.push(item(Report::CompleteRun(pb::CompleteRunRequest {
        run_id: c.clone(),
        lease_token: tc.lease_token.clone(),
        result: b"{\"done\":true}".to_vec(),
    })));
    items.push(item(Report::FailRun(pb::FailRunRequest {
        run_id: b.clone(),
        lease_token: tb.lease_token.clone(),
        failure: Some(pb::Failure {
            message: "boom".into(),
            non_retryable: true,
            ..Default::default()
        }),
    })));
    let answers = batch(&s, items, None).await;
    let mut answers = answers.into_iter();

    match answers.next().unwrap() {
        Answer::CompleteStep(r) => assert!(!r.already_recorded),
        other => panic!("s2: {other:?}"),
    }
    match answers.next().unwrap() {
        Answer::CompleteStep(r) => assert!(r.already_recorded, "a resent step is a duplicate"),
        other => panic!("s1 resent: {other:?}"),
    }
    let mut codes = Vec::new();
    for report in errors {
        let got = as_result(answers.next().unwrap());
        let want = single(&s, report.clone(), None).await;
        assert!(got.is_err(), "{report:?} must be refused: {got:?}");
        assert_eq!(
            got, want,
            "the batch answers {report:?} as the single RPC does"
        );
        codes.push(got.unwrap_err().0);
    }
    assert_eq!(
        codes,
        [
            Code::FailedPrecondition,
            Code::NotFound,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
        ]
    );
    match as_result(answers.next().unwrap()) {
        Err((Code::InvalidArgument, m)) => assert!(m.contains("report is required"), "{m}"),
        other => panic!("an empty item: {other:?}"),
    }
    assert!(matches!(answers.next().unwrap(), Answer::CompleteRun(_)));
    match answers.next().unwrap() {
        Answer::FailRun(r) => assert_eq!(r.status, pb::RunStatus::Failed as i32),
        other => panic!("fail B: {other:?}"),
    }
    // The same valid item again is answered as its single RPC answers a resend.
    let again = Report::CompleteRun(pb::CompleteRunRequest {
        run_id: c.clone(),
        lease_token: tc.lease_token.clone(),
        result: b"{\"done\":true}".to_vec(),
    });
    let batched = as_result(batch(&s, vec![item(again.clone())], None).await.remove(0));
    assert_eq!(
        format!("{batched:?}"),
        format!("{:?}", single(&s, again, None).await)
    );

    // Acknowledged means durable: everything above survives a kill -9.
    s.kill9();
    s.restart();
    let run_a = s.get_run(&a).await;
    let steps: HashMap<String, Vec<u8>> = run_a
        .steps
        .iter()
        .map(|st| (st.id.clone(), st.output.clone()))
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps["s1"], b"1");
    assert_eq!(steps["s2"], b"{\"two\":2}");
    let run_b = s.get_run(&b).await;
    assert_eq!(run_b.status, pb::RunStatus::Failed as i32);
    let run_c = s.get_run(&c).await;
    assert_eq!(run_c.status, pb::RunStatus::Completed as i32);
    assert_eq!(run_c.result, b"{\"done\":true}");
    let run_d = s.get_run(&d).await;
    assert!(run_d.steps.is_empty(), "the stale write recorded nothing");
}
both_stores!(items_answer_like_single_rpcs_and_survive_kill9);

async fn same_step_twice_in_one_batch(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let run = start(&s, "rb-dup", None, None).await;
    let t = poll(&s, "rb-dup", None).await;
    let items = (0..4)
        .map(|i| {
            item(Report::CompleteStep(step(
                &t,
                "twice",
                format!("{i}").as_bytes(),
            )))
        })
        .collect();
    let answers = batch(&s, items, None).await;
    let recorded: Vec<bool> = answers
        .into_iter()
        .map(|a| match a {
            Answer::CompleteStep(r) => r.already_recorded,
            other => panic!("a duplicate step is not an error: {other:?}"),
        })
        .collect();
    assert_eq!(
        recorded.iter().filter(|r| !**r).count(),
        1,
        "exactly one item records the step: {recorded:?}"
    );
    let steps = s.get_run(&run).await.steps;
    assert_eq!(steps.len(), 1);
    let first = recorded.iter().position(|r| !r).unwrap();
    assert_eq!(steps[0].output, format!("{first}").as_bytes());
}
both_stores!(same_step_twice_in_one_batch);

async fn item_cap_and_empty_batch(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut w = s.worker().await;
    let empty = w
        .report_batch(pb::ReportBatchRequest { items: vec![] })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(
        empty.message().contains("at least one"),
        "{}",
        empty.message()
    );
    let run = start(&s, "rb-cap", None, None).await;
    let t = poll(&s, "rb-cap", None).await;
    let over = (0..1_001)
        .map(|i| item(Report::CompleteStep(step(&t, &format!("s{i}"), b"1"))))
        .collect();
    let e = w
        .report_batch(pb::ReportBatchRequest { items: over })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("at most 1000"), "{}", e.message());
    assert!(s.get_run(&run).await.steps.is_empty(), "nothing applied");
    let at_cap = (0..1_000)
        .map(|i| item(Report::CompleteStep(step(&t, &format!("s{i}"), b"1"))))
        .collect();
    let answers = batch(&s, at_cap, None).await;
    assert!(answers.iter().all(|a| matches!(a, Answer::CompleteStep(_))));
    assert_eq!(s.get_run(&run).await.steps.len(), 1_000);
}
both_stores!(item_cap_and_empty_batch);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoping_like_single_rpcs() {
    let mut s = TestServer::start(Db::Sqlite).await.unwrap();
    let key_a = s.create_key("team-a");
    let key_b = s.create_key("team-b");
    s.restart();
    let run = start(&s, "rb-ns", None, Some(&key_a)).await;
    let t = poll(&s, "rb-ns", Some(&key_a)).await;
    let complete = Report::CompleteRun(pb::CompleteRunRequest {
        run_id: run.clone(),
        lease_token: t.lease_token.clone(),
        result: b"1".to_vec(),
    });
    // No key: the whole call is refused, as every single RPC is.
    let e = s
        .worker()
        .await
        .report_batch(pb::ReportBatchRequest {
            items: vec![item(complete.clone())],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Another namespace's key does not see the run: the item answers like the single RPC.
    let other = as_result(
        batch(&s, vec![item(complete.clone())], Some(&key_b))
            .await
            .remove(0),
    );
    assert!(matches!(&other, Err((Code::NotFound, _))), "{other:?}");
    assert_eq!(other, single(&s, complete.clone(), Some(&key_b)).await);
    // The run's own namespace completes it.
    let own = batch(&s, vec![item(complete)], Some(&key_a)).await;
    assert!(matches!(own[0], Answer::CompleteRun(_)), "{own:?}");
    let got = s
        .jobs()
        .await
        .get_run(with_key(
            pb::GetRunRequest {
                run_id: run,
                ..Default::default()
            },
            Some(&key_a),
        ))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(got.status, pb::RunStatus::Completed as i32);
}

/// One counter from `/metrics`.
async fn counter(addr: &str, name: &str) -> f64 {
    let all = scrape_metrics(addr).await;
    *all.get(name)
        .unwrap_or_else(|| panic!("no {name} in /metrics: {all:?}"))
}

/// Concurrent handlers of one Rust SDK worker share `ReportBatch` calls, and every run
/// still completes with its own steps and result.
async fn sdk_worker_shares_calls(db: Db) {
    let Some(s) = TestServer::start_with(db, &["--metrics-listen", "127.0.0.1:0"]).await else {
        return;
    };
    let metrics = metrics_addr(&s).await;
    let client = StackShift::new(ClientOptions::new(s.endpoint())).unwrap();
    // All runs are queued before the worker starts: its 32 handlers report at once.
    let runs = 200;
    let mut ids = Vec::new();
    for n in 0..runs {
        let started = client
            .start("rb-sdk", json!({ "n": n }), StartOptions::default())
            .await
            .unwrap();
        ids.push((n, started.id));
    }
    let worker = Worker::builder(client.clone())
        .concurrency(32)
        .job("rb-sdk", |ctx: JobContext<Value>| async move {
            let n = ctx.payload["n"].as_i64().unwrap();
            let a: i64 = ctx.step.run("double", || async move { Ok(n * 2) }).await?;
            let b: i64 = ctx.step.run("plus", || async move { Ok(a + 1) }).await?;
            Ok(json!({ "n": n, "out": b }))
        })
        .build()
        .start();
    for (n, id) in &ids {
        let run = s.get_run(id).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut run = run;
        while run.status != pb::RunStatus::Completed as i32 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {n} stuck: {run:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            run = s.get_run(id).await;
        }
        let result: Value = serde_json::from_slice(&run.result).unwrap();
        assert_eq!(result, json!({ "n": n, "out": n * 2 + 1 }));
        assert_eq!(run.steps.len(), 2);
    }
    let calls = counter(&metrics, "stackshift_report_batch_calls_total").await;
    let items = counter(&metrics, "stackshift_report_batch_items_total").await;
    eprintln!(
        "{items} reports in {calls} ReportBatch calls ({:.1} per call)",
        items / calls
    );
    assert_eq!(
        items,
        f64::from(runs * 3),
        "every report went through ReportBatch"
    );
    assert!(
        calls < items,
        "concurrent handlers must share calls: {calls} calls for {items} reports"
    );
    worker.shutdown().await;
}
both_stores!(sdk_worker_shares_calls);

/// A step over `--max-steps-per-run` is refused in a batch with the single RPC's code,
/// message and `stackshift-error-reason` (`STEP_LIMIT`), and the run is failed.
async fn step_limit_reason_per_item(db: Db) {
    let Some(s) = TestServer::start_with(db, &["--max-steps-per-run", "10"]).await else {
        return;
    };
    let run = start(&s, "rb-limit", None, None).await;
    let t = poll(&s, "rb-limit", None).await;
    let ten = (0..10)
        .map(|i| item(Report::CompleteStep(step(&t, &format!("s{i}"), b"1"))))
        .collect();
    let ok = batch(&s, ten, None).await;
    assert!(
        ok.iter().all(|a| matches!(a, Answer::CompleteStep(_))),
        "{ok:?}"
    );
    let over = batch(
        &s,
        vec![item(Report::CompleteStep(step(&t, "s10", b"1")))],
        None,
    )
    .await;
    let Answer::Error(e) = &over[0] else {
        panic!("the eleventh step must be refused: {over:?}");
    };
    assert_eq!(Code::from(e.code), Code::ResourceExhausted);
    assert_eq!(e.reason, "STEP_LIMIT");
    // The refusal names the limit, as the single RPC's does (e2e_history_limits).
    assert!(e.message.contains("--max-steps-per-run"), "{}", e.message);
    assert_eq!(
        s.get_run(&run).await.status,
        pb::RunStatus::Failed as i32,
        "the step limit fails the run"
    );
}
both_stores!(step_limit_reason_per_item);
