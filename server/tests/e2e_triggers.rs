//! Event triggers end to end, on the real server binary over SQLite and PostgreSQL: a
//! published event starts one run per subscribed job, correlation-key filters, a duplicate
//! event id starts nothing, deletion, validation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use serde_json::json;
use stackshift::{
    ClientOptions, Error, ListRunsOptions, NewEventTrigger, PublishEvent, StackShift,
    TriggeredEvent,
};
use support::{Db, TestServer};

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

async fn runs_of(c: &StackShift, job: &str) -> Vec<stackshift::Run> {
    c.list_runs(ListRunsOptions {
        job: Some(job.to_owned()),
        ..Default::default()
    })
    .await
    .unwrap()
    .runs
}

async fn events_start_one_run_per_subscribed_job(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let t = c.triggers();
    let (welcome, created) = t
        .create(NewEventTrigger::new("user.signed_up", "welcome"))
        .await
        .unwrap();
    assert!(created);
    let (crm, _) = t
        .create(NewEventTrigger::new("user.signed_up", "crm").queue("crm-sync"))
        .await
        .unwrap();
    t.create(NewEventTrigger::new("user.signed_up", "vip-desk").correlation_key("vip"))
        .await
        .unwrap();

    // No key: the two unkeyed triggers start one run each.
    let out = c
        .events()
        .publish(PublishEvent::new("user.signed_up", json!({ "user": 7 })).id("e1"))
        .await
        .unwrap();
    assert!(!out.duplicate);
    assert_eq!(out.started_run_ids.len(), 2, "{out:?}");
    let w = runs_of(&c, "welcome").await;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].idempotency_key.as_deref(), Some("event:e1:welcome"));
    let ev: TriggeredEvent = serde_json::from_value(w[0].payload.clone()).unwrap();
    assert_eq!((ev.id.as_str(), ev.name.as_str()), ("e1", "user.signed_up"));
    assert_eq!(ev.payload, json!({ "user": 7 }));
    assert_eq!(runs_of(&c, "crm").await[0].queue, "crm-sync");

    // The same event id again: nothing.
    let dup = c
        .events()
        .publish(PublishEvent::new("user.signed_up", json!({ "user": 7 })).id("e1"))
        .await
        .unwrap();
    assert!(dup.duplicate);
    assert!(dup.started_run_ids.is_empty());
    assert_eq!(runs_of(&c, "welcome").await.len(), 1);

    // The keyed trigger needs its key; unkeyed ones take any key.
    let vip = c
        .events()
        .publish(PublishEvent::new("user.signed_up", json!(1)).correlation_key("vip"))
        .await
        .unwrap();
    assert_eq!(vip.started_run_ids.len(), 3);
    let other = c
        .events()
        .publish(PublishEvent::new("user.signed_up", json!(1)).correlation_key("basic"))
        .await
        .unwrap();
    assert_eq!(other.started_run_ids.len(), 2);
    assert_eq!(runs_of(&c, "vip-desk").await.len(), 1);
    let unrelated = c
        .events()
        .publish(PublishEvent::new("user.deleted", json!(1)))
        .await
        .unwrap();
    assert!(unrelated.started_run_ids.is_empty());

    // Listing and deletion.
    let page = t
        .list(Some("user.signed_up".into()), None, None)
        .await
        .unwrap();
    assert_eq!(page.triggers.len(), 3);
    let page = t.list(None, Some("crm".into()), None).await.unwrap();
    assert_eq!(page.triggers[0].id, crm.id);
    t.delete(&crm.id).await.unwrap();
    let after = c
        .events()
        .publish(PublishEvent::new("user.signed_up", json!(1)))
        .await
        .unwrap();
    assert_eq!(after.started_run_ids.len(), 1);
    assert_eq!(runs_of(&c, "crm").await.len(), 3, "no run after deletion");
    assert_eq!(runs_of(&c, "welcome").await.len(), 4);
    assert!(matches!(
        t.delete(&crm.id).await.unwrap_err(),
        Error::NotFound(_)
    ));
    let _ = welcome;
}
both_stores!(events_start_one_run_per_subscribed_job);

async fn trigger_validation(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let t = client(&s).triggers();
    for (trigger, needle) in [
        (NewEventTrigger::new("bad name!", "job"), "event_name"),
        (NewEventTrigger::new("ok", ""), "job"),
        (
            NewEventTrigger::new("ok", "job").correlation_key("x".repeat(600)),
            "correlation_key",
        ),
        (
            NewEventTrigger::new("ok", "job").priority(5_000),
            "priority",
        ),
    ] {
        match t.create(trigger).await.unwrap_err() {
            Error::InvalidArgument(m) => assert!(m.contains(needle), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    let (first, created) = t.create(NewEventTrigger::new("ok", "job")).await.unwrap();
    assert!(created);
    let (same, created) = t.create(NewEventTrigger::new("ok", "job")).await.unwrap();
    assert!(!created);
    assert_eq!(same.id, first.id);
    let err = t
        .create(NewEventTrigger::new("ok", "job").priority(5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
}
both_stores!(trigger_validation);
