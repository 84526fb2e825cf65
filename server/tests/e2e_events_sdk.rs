//! End-to-end tests of durable waits through the native Rust SDK (`step.sleep`,
//! `step.wait_for_event`, `client.events()`), against the real server binary on SQLite and
//! PostgreSQL: waiting runs hold no worker slot (10,000 of them behind a 4-slot worker),
//! one event resumes every run waiting on its correlation key and no other, sequential
//! waits receive successive events, and sleeps survive server restarts (also when their
//! time passes while the server is down).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use stackshift::{
    ClientOptions, JobContext, ListRunsOptions, PublishEvent, RunStatus, StackShift, StartOptions,
    StepKind, WaitResult, Worker,
};
use support::{Db, TestServer};
use tokio::time::Instant;

/// Generous bound for what should take well under a second on an idle machine.
const WAIT: Duration = Duration::from_secs(60);

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

/// Polls `check` every 100 ms until it holds; panics after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every run of `job` in `status` (all pages).
async fn runs_in(c: &StackShift, job: &str, status: RunStatus) -> Vec<stackshift::Run> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_runs(ListRunsOptions {
                job: Some(job.to_owned()),
                status: Some(status),
                page_size: Some(1000),
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(page.runs);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

/// True when no run of `job` is in `status`.
async fn none_in(c: &StackShift, job: &str, status: RunStatus) -> bool {
    c.list_runs(ListRunsOptions {
        job: Some(job.to_owned()),
        status: Some(status),
        page_size: Some(1),
        ..Default::default()
    })
    .await
    .unwrap()
    .runs
    .is_empty()
}

#[derive(Deserialize)]
struct Keyed {
    key: String,
}

/// 10,000 runs wait for an event behind a worker with 4 slots: every one of them gets to
/// `waiting`, which is only possible if waiting runs hold no slot. Then one event with a
/// shared correlation key resumes exactly the 100 runs waiting on that key; an event for a
/// key nobody waits on resumes none, and the other 9,900 stay waiting.
async fn ten_thousand_waiting_runs_hold_no_worker_slot(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = Worker::builder(c.clone())
        .concurrency(4)
        .job("await-signal", |ctx: JobContext<Keyed>| async move {
            let got = ctx
                .step
                .wait_for_event("signal", "signal", &ctx.payload.key, "1h")
                .await?;
            let event = got.received().expect("no timeout within the test");
            anyhow::Ok(event.payload)
        })
        .build()
        .start();

    const RUNS: usize = 10_000;
    const SHARED: usize = 100;
    let t0 = Instant::now();
    let starters: Vec<_> = (0..50)
        .map(|lane| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in (lane..RUNS).step_by(50) {
                    let key = if i % (RUNS / SHARED) == 0 {
                        "shared".to_owned()
                    } else {
                        format!("k{i}")
                    };
                    c.start(
                        "await-signal",
                        json!({ "key": key }),
                        StartOptions::default(),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for s in starters {
        s.await.unwrap();
    }
    let started = t0.elapsed();
    eventually(
        "every run to reach its wait",
        Duration::from_secs(400),
        || {
            let c = c.clone();
            async move {
                none_in(&c, "await-signal", RunStatus::Queued).await
                    && none_in(&c, "await-signal", RunStatus::Running).await
            }
        },
    )
    .await;
    let all_waiting = t0.elapsed();
    let waiting = runs_in(&c, "await-signal", RunStatus::Waiting).await;
    assert_eq!(waiting.len(), RUNS, "all runs wait, none holds a slot");
    eprintln!(
        "{RUNS} runs started in {started:?}, all waiting after {all_waiting:?} (4 worker slots)"
    );

    let nobody = c
        .events()
        .publish(PublishEvent::new("signal", json!({"for": "nobody"})).correlation_key("nobody"))
        .await
        .unwrap();
    assert_eq!(nobody.resumed_run_count, 0);
    let t1 = Instant::now();
    let shared = c
        .events()
        .publish(PublishEvent::new("signal", json!({"go": true})).correlation_key("shared"))
        .await
        .unwrap();
    eprintln!(
        "publish resumed {} runs in {:?}",
        shared.resumed_run_count,
        t1.elapsed()
    );
    assert_eq!(shared.resumed_run_count, SHARED as u64);
    assert_eq!(shared.resumed_run_ids.len(), SHARED);
    let mut resumed = shared.resumed_run_ids.clone();
    resumed.sort();
    resumed.dedup();
    assert_eq!(resumed.len(), SHARED);

    eventually("the 100 resumed runs to complete", WAIT, || {
        let c = c.clone();
        async move {
            c.list_runs(ListRunsOptions {
                job: Some("await-signal".into()),
                status: Some(RunStatus::Completed),
                page_size: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .runs
            .len()
                == SHARED
        }
    })
    .await;
    eprintln!(
        "100 resumed runs completed {:?} after the publish",
        t1.elapsed()
    );
    let completed = runs_in(&c, "await-signal", RunStatus::Completed).await;
    let mut done: Vec<String> = completed.iter().map(|r| r.id.clone()).collect();
    done.sort();
    assert_eq!(done, resumed, "exactly the resumed runs completed");
    for r in completed.iter().take(5) {
        let r = c.get_run(&r.id).await.unwrap();
        assert_eq!(r.payload["key"], "shared");
        assert_eq!(r.result, Some(json!({"go": true})));
        assert_eq!(r.attempt, 1);
        assert_eq!(r.attempts.len(), 1);
        assert_eq!(r.steps[0].kind, StepKind::Event);
    }
    assert_eq!(
        runs_in(&c, "await-signal", RunStatus::Waiting).await.len(),
        RUNS - SHARED,
        "events for other keys resume none"
    );
    let one = c.get_run(&waiting[0].id).await.unwrap();
    if one.status == RunStatus::Waiting {
        let w = one.wait.unwrap();
        assert_eq!(w.kind, StepKind::Event);
        assert_eq!(w.event_name.as_deref(), Some("signal"));
    }
    worker.shutdown().await;
}
both_stores!(ten_thousand_waiting_runs_hold_no_worker_slot);

/// Two waits for the same event name receive two successive events, whether both events
/// were published before the run reached its waits or one by one while it waited. Waits
/// never use up attempts.
async fn sequential_waits_receive_successive_events(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let handler = |ctx: JobContext<Keyed>| async move {
        let key = ctx.payload.key.clone();
        let mut seen = Vec::new();
        for _ in 0..2 {
            // The same id twice: the SDK makes them `tick` and `tick#2`.
            match ctx.step.wait_for_event("tick", "tick", &key, "10m").await? {
                WaitResult::Received(e) => seen.push(e.payload),
                WaitResult::TimedOut => anyhow::bail!("timed out"),
            }
        }
        anyhow::Ok(seen)
    };
    let publish = |key: &'static str, n: u32| {
        let c = c.clone();
        async move {
            c.events()
                .publish(PublishEvent::new("tick", json!({ "n": n })).correlation_key(key))
                .await
                .unwrap()
        }
    };

    // Both events are in the inbox before any worker runs the handler.
    let early = c
        .start("ticks", json!({"key": "early"}), StartOptions::default())
        .await
        .unwrap();
    publish("early", 1).await;
    publish("early", 2).await;
    let worker = Worker::builder(c.clone())
        .job("ticks", handler)
        .build()
        .start();
    let run = c.wait_for_run(&early.id, WAIT).await.unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.result, Some(json!([{"n": 1}, {"n": 2}])));
    assert_eq!(run.attempt, 1);

    // One by one, while the run waits.
    let late = c
        .start("ticks", json!({"key": "late"}), StartOptions::default())
        .await
        .unwrap();
    let waits_on = |step: &'static str| {
        let (c, id) = (c.clone(), late.id.clone());
        async move {
            eventually(&format!("the run to wait at {step}"), WAIT, || {
                let (c, id) = (c.clone(), id.clone());
                async move {
                    let r = c.get_run(&id).await.unwrap();
                    r.status == RunStatus::Waiting
                        && r.wait.as_ref().is_some_and(|w| w.step_id == step)
                }
            })
            .await;
        }
    };
    waits_on("tick").await;
    let p = publish("late", 1).await;
    assert_eq!(p.resumed_run_ids, vec![late.id.clone()]);
    waits_on("tick#2").await;
    let p = publish("late", 2).await;
    assert_eq!(p.resumed_run_count, 1);
    let run = c.wait_for_run(&late.id, WAIT).await.unwrap();
    worker.shutdown().await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.result, Some(json!([{"n": 1}, {"n": 2}])));
    assert_eq!(run.attempt, 1, "two suspensions, one attempt");
    assert_eq!(run.attempts.len(), 1);
    let ids: Vec<(&str, StepKind)> = run.steps.iter().map(|s| (s.id.as_str(), s.kind)).collect();
    assert_eq!(
        ids,
        [("tick", StepKind::Event), ("tick#2", StepKind::Event)]
    );
}
both_stores!(sequential_waits_receive_successive_events);

/// The sleep journal entry of a run: (started, completed) in epoch milliseconds.
async fn sleep_entry(c: &StackShift, id: &str) -> (i64, i64) {
    let run = c.get_run(id).await.unwrap();
    let step = run.step("nap").expect("the sleep is journaled");
    assert_eq!(step.kind, StepKind::Sleep);
    (
        step.started_at.unwrap().timestamp_millis(),
        step.completed_at.timestamp_millis(),
    )
}

fn sleeper(c: &StackShift, nap: Duration) -> stackshift::WorkerHandle {
    Worker::builder(c.clone())
        .job("sleeper", move |ctx: JobContext<Value>| async move {
            ctx.step.run("before", || async { anyhow::Ok(1) }).await?;
            ctx.step.sleep("nap", nap).await?;
            ctx.step.run("after", || async { anyhow::Ok(2) }).await?;
            anyhow::Ok("rested")
        })
        .build()
        .start()
}

async fn wait_until_sleeping(c: &StackShift, id: &str) {
    eventually("the run to sleep", WAIT, || {
        let (c, id) = (c.clone(), id.to_owned());
        async move {
            let r = c.get_run(&id).await.unwrap();
            r.status == RunStatus::Waiting
                && r.wait
                    .is_some_and(|w| w.kind == StepKind::Sleep && w.step_id == "nap")
        }
    })
    .await;
}

/// A sleeping run survives a server restart (kill -9) and wakes on time, not before.
async fn sleeping_run_survives_restart_and_wakes_on_time(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = sleeper(&c, Duration::from_secs(3));
    let run = c
        .start("sleeper", json!(null), StartOptions::default())
        .await
        .unwrap();
    wait_until_sleeping(&c, &run.id).await;
    s.restart();
    let done = c.wait_for_run(&run.id, WAIT).await.unwrap();
    worker.shutdown().await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.result, Some(json!("rested")));
    assert_eq!(done.attempt, 1);
    let (began, woke) = sleep_entry(&c, &run.id).await;
    eprintln!("3 s sleep across a restart woke after {} ms", woke - began);
    assert!(woke - began >= 3_000, "woke early: {} ms", woke - began);
    assert!(woke - began < 13_000, "woke late: {} ms", woke - began);
}
both_stores!(sleeping_run_survives_restart_and_wakes_on_time);

/// A sleep whose time passed while the server was down wakes as soon as it starts again.
async fn sleep_due_during_downtime_wakes_on_start(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let worker = sleeper(&c, Duration::from_secs(2));
    let run = c
        .start("sleeper", json!(null), StartOptions::default())
        .await
        .unwrap();
    wait_until_sleeping(&c, &run.id).await;
    s.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted_at = chrono::Utc::now().timestamp_millis();
    s.restart();
    let done = c.wait_for_run(&run.id, WAIT).await.unwrap();
    worker.shutdown().await;
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    let (began, woke) = sleep_entry(&c, &run.id).await;
    eprintln!(
        "2 s sleep, server down 4 s: woke {} ms after the restart ({} ms after it began)",
        woke - restarted_at,
        woke - began
    );
    assert!(woke >= restarted_at, "resolved by the restarted server");
    assert!(
        woke - restarted_at < 10_000,
        "caught up {} ms after start",
        woke - restarted_at
    );
    assert_eq!(done.attempt, 1);
}
both_stores!(sleep_due_during_downtime_wakes_on_start);
