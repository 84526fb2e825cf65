//! Event triggers declared on a Rust worker's job registration (`JobOptions::trigger`), end
//! to end on the real server binary over SQLite and PostgreSQL: the worker creates them
//! before it polls (default queue: the worker's first queue), re-declaring is idempotent, and
//! a refused declaration fails `try_start` (and stops `start`) without polling.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use serde_json::json;
use stackshift::{
    ClientOptions, Error, JobContext, JobOptions, JobTrigger, NewEventTrigger, PublishEvent,
    RunStatus, StackShift, StartOptions, TriggeredEvent, Worker,
};
use support::{Db, TestServer};

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

/// A worker on `queues` whose job `welcome` declares `triggers` and returns the event id.
fn worker(c: &StackShift, queues: &[&str], triggers: Vec<JobTrigger>) -> Worker {
    let mut options = JobOptions::default();
    for t in triggers {
        options = options.trigger(t);
    }
    Worker::builder(c.clone())
        .queues(queues.iter().copied())
        .poll_wait(Duration::from_secs(1))
        .shutdown_grace(Duration::from_secs(2))
        .job_with_options(
            "welcome",
            options,
            |ctx: JobContext<TriggeredEvent>| async move {
                anyhow::Ok(json!({ "event": ctx.payload.id, "key": ctx.payload.correlation_key }))
            },
        )
        .build()
}

async fn declared_triggers_exist_before_polling(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let declared = vec![
        JobTrigger::event("user.signed_up"),
        JobTrigger::event("user.signed_up")
            .correlation_key("vip")
            .queue("vip-desk"),
    ];
    let handle = worker(&c, &["emails", "other"], declared.clone())
        .try_start()
        .await
        .unwrap();
    // Both triggers exist when try_start returns; the unqueued one uses the first queue.
    let mut listed = c
        .triggers()
        .list(Some("user.signed_up".into()), None, None)
        .await
        .unwrap()
        .triggers;
    listed.sort_by(|a, b| a.correlation_key.cmp(&b.correlation_key));
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        (
            listed[0].job.as_str(),
            listed[0].correlation_key.as_deref(),
            listed[0].queue.as_str()
        ),
        ("welcome", None, "emails")
    );
    assert_eq!(
        (
            listed[1].correlation_key.as_deref(),
            listed[1].queue.as_str()
        ),
        (Some("vip"), "vip-desk")
    );

    // A publish starts a run of the job on the worker's queue, which this worker serves.
    let out = c
        .events()
        .publish(PublishEvent::new("user.signed_up", json!({ "user": 1 })).id("ev-1"))
        .await
        .unwrap();
    assert_eq!(out.started_run_ids.len(), 1, "{out:?}");
    let run = c
        .wait_for_run(&out.started_run_ids[0], Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.queue, "emails");
    assert_eq!(run.result, Some(json!({ "event": "ev-1", "key": "" })));
    handle.shutdown().await;

    // Declaring the same triggers again (a restart, a second replica) changes nothing.
    let again = worker(&c, &["emails"], declared).try_start().await.unwrap();
    let ids = |page: stackshift::EventTriggerPage| {
        let mut ids: Vec<String> = page.triggers.into_iter().map(|t| t.id).collect();
        ids.sort();
        ids
    };
    let after = c
        .triggers()
        .list(Some("user.signed_up".into()), None, None)
        .await
        .unwrap();
    let mut before: Vec<String> = listed.into_iter().map(|t| t.id).collect();
    before.sort();
    assert_eq!(ids(after), before);
    again.shutdown().await;
}
both_stores!(declared_triggers_exist_before_polling);

async fn refused_declaration_fails_the_start(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    // The same event, key and job exist with other options (another queue).
    c.triggers()
        .create(NewEventTrigger::new("order.paid", "welcome").queue("elsewhere"))
        .await
        .unwrap();
    let err = worker(&c, &["emails"], vec![JobTrigger::event("order.paid")])
        .try_start()
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
    match &err {
        Error::TriggerRefused {
            job, event, queue, ..
        } => assert_eq!(
            (job.as_str(), event.as_str(), queue.as_str()),
            ("welcome", "order.paid", "emails")
        ),
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("\"welcome\"") && message.contains("delete it"),
        "{message}"
    );

    // An invalid declaration: INVALID_ARGUMENT, with the server's reason.
    let err = worker(&c, &["emails"], vec![JobTrigger::event("")])
        .try_start()
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(matches!(err, Error::TriggerRefused { .. }), "{err:?}");

    // `start` does the same in the background: the worker stops without polling, so a run
    // queued for it stays queued.
    let queued = c
        .start(
            "welcome",
            &json!({ "id": "x", "name": "n", "payload": null, "publishedAt": 0 }),
            StartOptions::default().queue_name("emails"),
        )
        .await
        .unwrap();
    let handle = worker(&c, &["emails"], vec![JobTrigger::event("order.paid")]).start();
    let t = tokio::time::Instant::now();
    while !handle.is_finished() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the worker kept going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.get_run(&queued.id).await.unwrap().status,
        RunStatus::Queued
    );
    handle.shutdown().await;

    // Without the conflicting declaration the same worker serves the run.
    let handle = worker(&c, &["emails"], vec![]).start();
    let run = c
        .wait_for_run(&queued.id, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    handle.shutdown().await;
}
both_stores!(refused_declaration_fails_the_start);

async fn start_declares_in_the_background(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let handle = worker(&c, &["jobs"], vec![JobTrigger::event("report.requested")]).start();
    // The trigger appears shortly after `start` returns, then events start served runs.
    let t = tokio::time::Instant::now();
    loop {
        let page = c
            .triggers()
            .list(Some("report.requested".into()), None, None)
            .await
            .unwrap();
        if page.triggers.len() == 1 {
            assert_eq!(page.triggers[0].queue, "jobs");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no trigger declared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = c
        .events()
        .publish(PublishEvent::new("report.requested", json!(1)).id("r-1"))
        .await
        .unwrap();
    let run = c
        .wait_for_run(&out.started_run_ids[0], Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    handle.shutdown().await;
}
both_stores!(start_declares_in_the_background);
