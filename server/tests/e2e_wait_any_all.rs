//! End-to-end tests of `step.wait_for_any` / `step.wait_for_all` through the native Rust
//! SDK and the raw protocol, against the real server binary on SQLite and PostgreSQL: ANY of
//! an event and a timer resolves with whichever comes first (both ways, and from the inbox),
//! ALL of two events resolves whatever order they are published in (one of them before the
//! wait), two items for the same event take two successive events, a timed-out ALL reports
//! which items resolved, and bad waits are rejected with INVALID_ARGUMENT.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use stackshift::proto as pb;
use stackshift::{
    AllResult, AnyResult, ClientOptions, ItemResult, JobContext, PublishEvent, RunStatus,
    StackShift, StartOptions, StepKind, WaitItem, Worker,
};
use support::{Db, TestServer, ms, poll_req, start_req};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

async fn waiting(c: &StackShift, id: &str) {
    let deadline = Instant::now() + WAIT;
    while c.get_run(id).await.unwrap().status != RunStatus::Waiting {
        assert!(Instant::now() < deadline, "run {id} never waited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(c: &StackShift, name: &str, key: &str, payload: Value) {
    c.events()
        .publish(PublishEvent::new(name, payload).correlation_key(key))
        .await
        .unwrap();
}

fn describe_any(r: AnyResult) -> Value {
    match r {
        AnyResult::Resolved {
            index,
            result: ItemResult::Event(e),
        } => json!({ "index": index, "event": e.payload }),
        AnyResult::Resolved { index, .. } => json!({ "index": index, "slept": true }),
        AnyResult::TimedOut => json!({ "timedOut": true }),
    }
}

fn describe_all(r: AllResult) -> Value {
    let items: Vec<Value> = r
        .items
        .into_iter()
        .map(|i| match i {
            Some(ItemResult::Event(e)) => e.payload,
            Some(ItemResult::Slept) => json!("slept"),
            None => Value::Null,
        })
        .collect();
    json!({ "timedOut": r.timed_out, "items": items })
}

/// ANY of an event and a 1.5 s timer: the event wins when it comes first, the timer when
/// no event comes (never before its time), and an event already in the inbox wins at once.
async fn any_event_versus_timer_both_ways(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .concurrency(4)
        .job("race", |ctx: JobContext<Value>| async move {
            let key = ctx.payload["key"].as_str().unwrap().to_owned();
            if ctx.payload["gate"].as_bool() == Some(true) {
                ctx.step.wait_for_event("gate", "gate", &key, "1h").await?;
            }
            let got = ctx
                .step
                .wait_for_any(
                    "race",
                    vec![
                        WaitItem::event("go", key),
                        WaitItem::sleep(Duration::from_millis(1_500)),
                    ],
                    None::<Duration>,
                )
                .await?;
            anyhow::Ok(describe_any(got))
        })
        .build()
        .start();

    // The event comes first.
    let a = c
        .start("race", json!({ "key": "a" }), StartOptions::default())
        .await
        .unwrap();
    waiting(&c, &a.id).await;
    publish(&c, "go", "a", json!({ "n": 1 })).await;
    let done = c.wait_for_run(&a.id, WAIT).await.unwrap();
    assert_eq!(
        done.result.clone().unwrap(),
        json!({ "index": 0, "event": { "n": 1 } })
    );
    assert_eq!(done.step("race").unwrap().kind, StepKind::Any);

    // No event: the timer resolves it, not before its time.
    let b = c
        .start("race", json!({ "key": "b" }), StartOptions::default())
        .await
        .unwrap();
    let t0 = Instant::now();
    let done = c.wait_for_run(&b.id, WAIT).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(done.result.unwrap(), json!({ "index": 1, "slept": true }));
    // A late event resumes nothing.
    publish(&c, "go", "b", json!({ "late": true })).await;

    // Published before the wait (the run sits at a gate): taken from the inbox at once.
    let g = c
        .start(
            "race",
            json!({ "key": "g", "gate": true }),
            StartOptions::default(),
        )
        .await
        .unwrap();
    waiting(&c, &g.id).await;
    publish(&c, "go", "g", json!({ "early": true })).await;
    publish(&c, "gate", "g", json!(null)).await;
    let done = c.wait_for_run(&g.id, WAIT).await.unwrap();
    assert_eq!(
        done.result.unwrap(),
        json!({ "index": 0, "event": { "early": true } })
    );
    worker.shutdown().await;
}
both_stores!(any_event_versus_timer_both_ways);

/// ALL of two events resolves in either publication order, also when one was published
/// before the wait; two items for the same event take two successive events; a timed-out
/// ALL tells which items resolved.
async fn all_of_events_in_any_order(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .concurrency(4)
        .job("both", |ctx: JobContext<Value>| async move {
            let key = ctx.payload["key"].as_str().unwrap().to_owned();
            ctx.step.wait_for_event("gate", "gate", &key, "1h").await?;
            let items = match ctx.payload["shape"].as_str().unwrap() {
                "same" => vec![WaitItem::event("x", &key), WaitItem::event("x", &key)],
                "partial" => vec![
                    WaitItem::event("never", &key),
                    WaitItem::sleep(Duration::ZERO),
                ],
                _ => vec![WaitItem::event("a", &key), WaitItem::event("b", &key)],
            };
            let timeout = if ctx.payload["shape"] == "partial" {
                "1s"
            } else {
                "1h"
            };
            let all = ctx.step.wait_for_all("all", items, Some(timeout)).await?;
            anyhow::Ok(describe_all(all))
        })
        .build()
        .start();
    let start = |key: &str, shape: &str| {
        let c = c.clone();
        let payload = json!({ "key": key, "shape": shape });
        async move {
            c.start("both", payload, StartOptions::default())
                .await
                .unwrap()
                .id
        }
    };

    // a then b, both while waiting.
    let r1 = start("k1", "ab").await;
    waiting(&c, &r1).await;
    publish(&c, "gate", "k1", json!(null)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    waiting(&c, &r1).await;
    publish(&c, "a", "k1", json!("A1")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        c.get_run(&r1).await.unwrap().status,
        RunStatus::Waiting,
        "b is missing"
    );
    publish(&c, "b", "k1", json!("B1")).await;
    let done = c.wait_for_run(&r1, WAIT).await.unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.failure);
    assert_eq!(
        done.result.clone().unwrap(),
        json!({ "timedOut": false, "items": ["A1", "B1"] })
    );
    assert_eq!(done.step("all").unwrap().kind, StepKind::All);

    // b before the wait (inbox), then a while waiting.
    let r2 = start("k2", "ab").await;
    waiting(&c, &r2).await;
    publish(&c, "b", "k2", json!("B2")).await;
    publish(&c, "gate", "k2", json!(null)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    waiting(&c, &r2).await;
    publish(&c, "a", "k2", json!("A2")).await;
    let done = c.wait_for_run(&r2, WAIT).await.unwrap();
    assert_eq!(
        done.result.unwrap(),
        json!({ "timedOut": false, "items": ["A2", "B2"] })
    );

    // Two items for the same event take two successive events.
    let r3 = start("k3", "same").await;
    waiting(&c, &r3).await;
    publish(&c, "x", "k3", json!("X1")).await;
    publish(&c, "gate", "k3", json!(null)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    waiting(&c, &r3).await;
    publish(&c, "x", "k3", json!("X2")).await;
    let done = c.wait_for_run(&r3, WAIT).await.unwrap();
    assert_eq!(
        done.result.unwrap(),
        json!({ "timedOut": false, "items": ["X1", "X2"] })
    );

    // The whole wait times out: the sleep resolved, the event did not.
    let r4 = start("k4", "partial").await;
    waiting(&c, &r4).await;
    publish(&c, "gate", "k4", json!(null)).await;
    let done = c.wait_for_run(&r4, WAIT).await.unwrap();
    assert_eq!(
        done.result.unwrap(),
        json!({ "timedOut": true, "items": [null, "slept"] })
    );
    worker.shutdown().await;
}
both_stores!(all_of_events_in_any_order);

/// Bad combined waits answer INVALID_ARGUMENT naming the field, and leave the run running.
async fn combined_wait_validation(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut jobs = s.jobs().await;
    let mut worker = s.worker().await;
    jobs.start_run(start_req("v", json!(null))).await.unwrap();
    let task = worker
        .poll_task(poll_req(&["v"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .pop()
        .unwrap();
    use pb::suspend_run_request::Wait;
    let req = |wait: Wait| pb::SuspendRunRequest {
        run_id: task.run_id.clone(),
        lease_token: task.lease_token.clone(),
        step_id: "w".into(),
        wait: Some(wait),
    };
    let event = |name: &str| pb::WaitItem {
        item: Some(pb::wait_item::Item::Event(pb::EventMatch {
            event_name: name.into(),
            correlation_key: String::new(),
        })),
    };
    let combined = |items: Vec<pb::WaitItem>, timeout: Option<u64>| pb::CombinedWait {
        items,
        timeout: timeout.map(ms),
    };
    let cases = vec![
        (
            Wait::Any(combined(vec![], Some(1_000))),
            "any.items must hold 1 to 100",
        ),
        (
            Wait::All(combined(vec![event("ok")], None)),
            "all.timeout is required",
        ),
        (
            Wait::Any(combined(vec![event("ok")], None)),
            "any.timeout is required",
        ),
        (
            Wait::Any(combined(vec![event("ok"), event("bad name")], Some(1_000))),
            "any.items[1].event.event_name",
        ),
        (
            Wait::All(combined(vec![pb::WaitItem { item: None }], Some(1_000))),
            "all.items[0].item",
        ),
    ];
    for (wait, want) in cases {
        let err = worker.suspend_run(req(wait)).await.unwrap_err();
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
}
both_stores!(combined_wait_validation);
