//! End-to-end tests of queues over raw gRPC against the real server binary, on SQLite and
//! PostgreSQL: priorities, delayed runs (also across a restart), pause and resume, freed
//! capacity waking polls, rate limits, queue defaults (retry policy, lease timeout) and
//! statistics. Bad input is in `e2e_queue_validation.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use stackshift_proto::v1 as pb;
use support::{Db, TestServer, ms, start_req, ts_ms};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn on_queue(job: &str, queue: &str) -> pb::StartRunRequest {
    pb::StartRunRequest {
        queue: queue.into(),
        ..start_req(job, json!({}))
    }
}

fn poll(queues: &[&str], job: &str, max: i32, wait_ms: u64) -> pb::PollTaskRequest {
    pb::PollTaskRequest {
        worker_id: "queue-test".into(),
        queues: queues.iter().map(|q| (*q).into()).collect(),
        jobs: vec![pb::JobSpec {
            name: job.into(),
            lease_timeout: None,
        }],
        max_tasks: max,
        wait: Some(ms(wait_ms)),
    }
}

async fn start(s: &TestServer, req: pb::StartRunRequest) -> pb::Run {
    s.jobs()
        .await
        .start_run(req)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

async fn get_queue(s: &TestServer, name: &str) -> pb::Queue {
    s.queues()
        .await
        .get_queue(pb::GetQueueRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap()
}

async fn upsert(s: &TestServer, name: &str, config: pb::QueueConfig) -> pb::Queue {
    s.queues()
        .await
        .upsert_queue(pb::UpsertQueueRequest {
            name: name.into(),
            config: Some(config),
            paused: None,
        })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap()
}

async fn complete(s: &TestServer, t: &pb::Task) {
    s.worker()
        .await
        .complete_run(pb::CompleteRunRequest {
            run_id: t.run_id.clone(),
            lease_token: t.lease_token.clone(),
            result: vec![],
        })
        .await
        .unwrap();
}

async fn priorities_deliver_highest_first_fifo_within(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut ids = Vec::new();
    for (i, p) in [0, 10, 0, 10, -5, 3].into_iter().enumerate() {
        let mut req = on_queue("prio", "prio");
        req.priority = p;
        req.payload = json!(i).to_string().into_bytes();
        let run = start(&s, req).await;
        assert_eq!(run.priority, p);
        ids.push(run.id);
    }
    let mut w = s.worker().await;
    let mut order = Vec::new();
    for _ in 0..6 {
        let t = w
            .poll_task(poll(&["prio"], "prio", 1, 5_000))
            .await
            .unwrap()
            .into_inner()
            .tasks
            .remove(0);
        order.push(t.run_id);
    }
    let expected: Vec<String> = [1, 3, 5, 0, 2, 4].iter().map(|i| ids[*i].clone()).collect();
    assert_eq!(order, expected, "priority 10 (FIFO), 3, 0 (FIFO), -5");
}
both_stores!(priorities_deliver_highest_first_fifo_within);

async fn no_queue_starves_another(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    // An older, deep backlog on one queue, then a few runs on another.
    for _ in 0..40 {
        start(&s, on_queue("fair", "deep")).await;
    }
    let mut shallow = Vec::new();
    for _ in 0..3 {
        shallow.push(start(&s, on_queue("fair", "shallow")).await.id);
    }
    // One task per poll: the shallow queue is served in turn, not after the backlog.
    let mut w = s.worker().await;
    let mut served = Vec::new();
    for _ in 0..8 {
        let t = w
            .poll_task(poll(&["deep", "shallow"], "fair", 1, 5_000))
            .await
            .unwrap()
            .into_inner()
            .tasks
            .remove(0);
        served.push(t.run_id);
    }
    let got = shallow.iter().filter(|id| served.contains(id)).count();
    assert_eq!(got, 3, "shallow runs among the first 8 deliveries: {got}");
    // Several tasks per poll: each queue gets its share.
    for _ in 0..3 {
        start(&s, on_queue("fair", "shallow")).await;
    }
    let tasks = w
        .poll_task(poll(&["deep", "shallow"], "fair", 6, 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let from_shallow = tasks.iter().filter(|t| t.queue == "shallow").count();
    assert_eq!((tasks.len(), from_shallow), (6, 3));
}
both_stores!(no_queue_starves_another);

async fn delayed_runs_wait_for_their_time_across_a_restart(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    // `soon` falls due while the server is down; `later` after it is back.
    let mut req = on_queue("delayed", "later");
    req.run_at = Some(prost_types::Timestamp {
        seconds: (now_ms() + 1_000) / 1000,
        nanos: (((now_ms() + 1_000) % 1000) * 1_000_000) as i32,
    });
    let soon = start(&s, req).await;
    let mut req = on_queue("delayed", "later");
    req.delay = Some(ms(7_000));
    let later = start(&s, req).await;
    let soon_due = ts_ms(&soon.next_attempt_at);
    let later_due = ts_ms(&later.next_attempt_at);
    assert!(later_due >= ts_ms(&later.created_at) + 7_000);
    let stats = get_queue(&s, "later").await.stats.unwrap();
    assert_eq!((stats.queued, stats.delayed), (2, 2));

    // Nothing is deliverable yet.
    let mut w = s.worker().await;
    let none = w
        .poll_task(poll(&["later"], "delayed", 5, 300))
        .await
        .unwrap()
        .into_inner();
    assert!(none.tasks.is_empty());

    s.kill9();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    s.restart();
    let mut w = s.worker().await;

    // The run that fell due while the server was down is delivered at once.
    let t0 = Instant::now();
    let first = w
        .poll_task(poll(&["later"], "delayed", 1, 20_000))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].run_id, soon.id);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    // The other one: the open poll is woken by the restarted server's timer at its time
    // (or at once, should a slow restart have let it fall due already).
    let asked_at = now_ms();
    let second = w
        .poll_task(poll(&["later"], "delayed", 1, 20_000))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let returned_at = now_ms();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].run_id, later.id);
    assert!(
        returned_at >= later_due,
        "delivered {} ms before its time",
        later_due - returned_at
    );
    let lateness = returned_at - later_due.max(asked_at);
    assert!(lateness < 2_000, "delivered {lateness} ms after its time");
    eprintln!("delayed run delivered {lateness} ms after its time (after a restart)");
    // The server's own record agrees: no attempt started before the run was due.
    for (run, due) in [(&soon, soon_due), (&later, later_due)] {
        let r = s.get_run(&run.id).await;
        assert!(ts_ms(&r.attempts[0].started_at) >= due);
    }
}
both_stores!(delayed_runs_wait_for_their_time_across_a_restart);

async fn pause_stops_delivery_and_resume_restarts_it(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    // A start creates the queue; pause it, then start more.
    let mut ids = vec![start(&s, on_queue("pausable", "pq")).await.id];
    let paused = s
        .queues()
        .await
        .pause_queue(pb::PauseQueueRequest { name: "pq".into() })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap();
    assert!(paused.paused);
    for _ in 0..4 {
        ids.push(start(&s, on_queue("pausable", "pq")).await.id);
    }
    // Polls stay empty while paused, also polls that name other queues too.
    let mut w = s.worker().await;
    let t0 = Instant::now();
    let empty = w
        .poll_task(poll(&["pq", "elsewhere"], "pausable", 10, 700))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.tasks.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(650));
    let q = get_queue(&s, "pq").await;
    assert!(q.paused);
    assert_eq!(q.stats.unwrap().queued, 5);

    // A poll waiting when the queue is resumed is woken at once.
    let mut w2 = s.worker().await;
    let waiting = tokio::spawn(async move {
        let t = w2
            .poll_task(poll(&["pq"], "pausable", 10, 20_000))
            .await
            .unwrap()
            .into_inner()
            .tasks;
        (t, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resumed_at = Instant::now();
    let resumed = s
        .queues()
        .await
        .resume_queue(pb::ResumeQueueRequest { name: "pq".into() })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap();
    assert!(!resumed.paused);
    let (mut tasks, woke) = waiting.await.unwrap();
    assert!(!tasks.is_empty());
    let latency = woke.saturating_duration_since(resumed_at);
    assert!(
        latency < Duration::from_secs(2),
        "woken {latency:?} after resume"
    );
    // Nothing was lost: all five runs are delivered.
    while tasks.len() < 5 {
        tasks.extend(
            w.poll_task(poll(&["pq"], "pausable", 10, 5_000))
                .await
                .unwrap()
                .into_inner()
                .tasks,
        );
    }
    let mut got: Vec<String> = tasks.iter().map(|t| t.run_id.clone()).collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
}
both_stores!(pause_stops_delivery_and_resume_restarts_it);

async fn rate_limit_is_honoured_over_the_window(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let (limit, period) = (4usize, 2_000i64);
    upsert(
        &s,
        "rated",
        pb::QueueConfig {
            rate_limit: Some(pb::RateLimit {
                limit: limit as i32,
                period: Some(ms(period as u64)),
            }),
            ..Default::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(start(&s, on_queue("rated", "rated")).await.id);
    }
    // One eager worker: takes whatever it may and completes it at once.
    let mut w = s.worker().await;
    let mut delivered = 0;
    let t0 = Instant::now();
    while delivered < ids.len() {
        let tasks = w
            .poll_task(poll(&["rated"], "rated", 10, 10_000))
            .await
            .unwrap()
            .into_inner()
            .tasks;
        assert!(!tasks.is_empty(), "a poll waited 10 s without a task");
        assert!(tasks.len() <= limit);
        for t in &tasks {
            complete(&s, t).await;
        }
        delivered += tasks.len();
    }
    let elapsed = t0.elapsed();
    // The server's record of every start: no `limit + 1` starts within one period.
    let mut starts = Vec::new();
    for id in &ids {
        starts.push(ts_ms(&s.get_run(id).await.attempts[0].started_at));
    }
    starts.sort_unstable();
    for w in starts.windows(limit + 1) {
        assert!(
            w[limit] - w[0] >= period,
            "{} starts within {} ms: {starts:?}",
            limit + 1,
            w[limit] - w[0]
        );
    }
    // And the window's reopening is used promptly (no fixed-interval scan): 10 runs at 4
    // per 2 s take just over 4 s.
    let span = starts[9] - starts[0];
    assert!(
        span < 2 * period + 2_000,
        "took {span} ms for three windows: {starts:?}"
    );
    eprintln!("10 runs at {limit}/{period} ms: first to last start {span} ms ({elapsed:?})");
    let stats = get_queue(&s, "rated").await.stats.unwrap();
    assert!(stats.rate_window_started <= limit as i64);
    assert_eq!(stats.completed, 10);
}
both_stores!(rate_limit_is_honoured_over_the_window);

async fn freed_capacity_wakes_a_waiting_poll(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    upsert(
        &s,
        "single",
        pb::QueueConfig {
            concurrency_limit: Some(1),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..3 {
        start(&s, on_queue("one-at-a-time", "single")).await;
    }
    let mut w = s.worker().await;
    let first = w
        .poll_task(poll(&["single"], "one-at-a-time", 10, 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(first.len(), 1, "the limit of 1 holds within one poll");
    // The queue is full: a second poll parks instead of returning the other runs...
    let mut w2 = s.worker().await;
    let parked = tokio::spawn(async move {
        let tasks = w2
            .poll_task(poll(&["single"], "one-at-a-time", 10, 20_000))
            .await
            .unwrap()
            .into_inner()
            .tasks;
        (tasks, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !parked.is_finished(),
        "a poll returned while the queue was full"
    );
    // ...and is woken as soon as the lease is released (here by completion, then by a
    // cancellation), not when its wait ends.
    let released_at = Instant::now();
    complete(&s, &first[0]).await;
    let (second, woke) = parked.await.unwrap();
    assert_eq!(second.len(), 1);
    let latency = woke.saturating_duration_since(released_at);
    assert!(
        latency < Duration::from_secs(2),
        "woken {latency:?} after the release"
    );
    let mut w3 = s.worker().await;
    let parked = tokio::spawn(async move {
        w3.poll_task(poll(&["single"], "one-at-a-time", 10, 20_000))
            .await
            .unwrap()
            .into_inner()
            .tasks
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = Instant::now();
    s.jobs()
        .await
        .cancel_run(pb::CancelRunRequest {
            run_id: second[0].run_id.clone(),
            reason: "stop".into(),
        })
        .await
        .unwrap();
    let third = parked.await.unwrap();
    assert_eq!(third.len(), 1);
    assert!(released_at.elapsed() < Duration::from_secs(2));
}
both_stores!(freed_capacity_wakes_a_waiting_poll);

async fn queue_defaults_apply_when_the_start_gives_none(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    upsert(
        &s,
        "retrying",
        pb::QueueConfig {
            retry_policy: Some(pb::RetryPolicy {
                max_attempts: 2,
                initial_interval: Some(ms(100)),
                ..Default::default()
            }),
            lease_timeout: Some(ms(4_000)),
            ..Default::default()
        },
    )
    .await;
    let run = start(&s, on_queue("flaky", "retrying")).await;
    assert_eq!(run.max_attempts, 2, "the queue's retry policy");
    let policy = run.retry_policy.unwrap();
    assert_eq!(policy.initial_interval, Some(ms(100)));
    assert_eq!(
        policy.backoff_coefficient, 2.0,
        "server default for unset fields"
    );
    // The start's own fields win.
    let mut req = on_queue("flaky", "retrying");
    req.retry_policy = Some(pb::RetryPolicy {
        max_attempts: 3,
        ..Default::default()
    });
    let own = start(&s, req).await;
    assert_eq!(own.max_attempts, 3);
    assert_eq!(
        own.retry_policy.unwrap().initial_interval,
        Some(ms(100)),
        "unset fields still come from the queue"
    );
    s.jobs()
        .await
        .cancel_run(pb::CancelRunRequest {
            run_id: own.id,
            reason: String::new(),
        })
        .await
        .unwrap();

    // Every attempt fails: the run fails after the queue's 2 attempts, and each attempt got
    // the queue's lease timeout (not the worker's 60 s for the job).
    let mut w = s.worker().await;
    for attempt in 1..=2 {
        let mut req = poll(&["retrying"], "flaky", 1, 5_000);
        req.jobs[0].lease_timeout = Some(ms(60_000));
        let t = w.poll_task(req).await.unwrap().into_inner().tasks.remove(0);
        assert_eq!((t.attempt, t.max_attempts), (attempt, 2));
        assert_eq!(t.lease_timeout, Some(ms(4_000)));
        w.fail_run(pb::FailRunRequest {
            run_id: t.run_id,
            lease_token: t.lease_token,
            failure: Some(pb::Failure {
                message: "boom".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    }
    let r = s.get_run(&run.id).await;
    assert_eq!(r.status, pb::RunStatus::Failed as i32);
    assert_eq!(r.attempt, 2);
    let stats = get_queue(&s, "retrying").await.stats.unwrap();
    assert_eq!((stats.failed, stats.cancelled), (1, 1));
}
both_stores!(queue_defaults_apply_when_the_start_gives_none);

async fn listing_and_statistics(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    for name in ["b-queue", "a-queue", "c-queue"] {
        start(&s, on_queue("listed", name)).await;
    }
    let mut req = on_queue("listed", "a-queue");
    req.concurrency_key = "customer-1".into();
    start(&s, req).await;
    let mut q = s.queues().await;
    let page = q
        .list_queues(pb::ListQueuesRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = page.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, vec!["a-queue", "b-queue"]);
    let rest = q
        .list_queues(pb::ListQueuesRequest {
            page_size: 2,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.queues.len(), 1);
    assert!(rest.next_page_token.is_empty());

    let mut w = s.worker().await;
    let tasks = w
        .poll_task(poll(&["a-queue"], "listed", 1, 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = get_queue(&s, "a-queue").await;
    let stats = a.stats.unwrap();
    assert_eq!((stats.queued, stats.running, stats.delayed), (1, 1, 0));
    assert!(stats.oldest_queued_age.is_some());
    // The run taken first (FIFO) has no key; the keyed one still waits.
    assert!(stats.running_by_key.is_empty());
    let t = w
        .poll_task(poll(&["a-queue"], "listed", 1, 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(t.len(), 1);
    let stats = get_queue(&s, "a-queue").await.stats.unwrap();
    assert_eq!(
        stats.running_by_key,
        vec![pb::KeyCount {
            key: "customer-1".into(),
            running: 1
        }]
    );
    assert_eq!(stats.oldest_queued_age, None);
    let created = a.created_at.unwrap();
    assert!(created.seconds > 0);
}
both_stores!(listing_and_statistics);
