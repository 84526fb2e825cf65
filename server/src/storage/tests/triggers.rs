//! Contract checks of event triggers: create-or-get on (event, key, job), listing and
//! deletion, key matching, the per-event cap, and the runs a publish starts in its
//! transaction (none for a duplicate event id).

use std::sync::Arc;

use crate::engine::event_model::NewEvent;
use crate::engine::requests::RetryPolicyInput;
use crate::engine::store::Store;
use crate::engine::trigger_model::{MAX_TRIGGERS_PER_EVENT, TriggerDefinition, TriggerFilter};

use super::{new_run, ns};

fn def(event: &str, key: &str, job: &str) -> TriggerDefinition {
    TriggerDefinition {
        event_name: event.to_owned(),
        correlation_key: key.to_owned(),
        job: job.to_owned(),
        queue: "default".to_owned(),
        retry: RetryPolicyInput {
            max_attempts: Some(4),
            ..Default::default()
        },
        lease_timeout_ms: None,
        priority: 0,
    }
}

pub async fn lifecycle_and_matching(store: &Arc<dyn Store>) {
    let ns = ns("trig");
    let (a, created) = store
        .insert_trigger(&ns, "t1", def("order.paid", "", "ship"), 1_000)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(a.definition, def("order.paid", "", "ship"));
    let mut other = def("order.paid", "", "ship");
    other.priority = 9;
    let (again, created) = store.insert_trigger(&ns, "t2", other, 1_000).await.unwrap();
    assert!(!created, "one trigger per (event, key, job)");
    assert_eq!(again.id, "t1");
    store
        .insert_trigger(&ns, "t3", def("order.paid", "vip", "notify"), 1_000)
        .await
        .unwrap();
    store
        .insert_trigger(&ns, "t4", def("order.refunded", "", "ship"), 1_000)
        .await
        .unwrap();

    let ids = |v: Vec<crate::engine::trigger_model::TriggerRecord>| {
        v.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    let m = store
        .matching_triggers(&ns, "order.paid", "")
        .await
        .unwrap();
    assert_eq!(ids(m), ["t1"], "a keyed trigger needs its key");
    let m = store
        .matching_triggers(&ns, "order.paid", "vip")
        .await
        .unwrap();
    assert_eq!(ids(m), ["t1", "t3"], "an unkeyed trigger matches any key");
    let m = store
        .matching_triggers(&ns, "order.paid", "x")
        .await
        .unwrap();
    assert_eq!(ids(m), ["t1"]);
    let other_ns = super::ns("other");
    assert!(
        store
            .matching_triggers(&other_ns, "order.paid", "")
            .await
            .unwrap()
            .is_empty()
    );

    let all = store
        .list_triggers(&ns, &TriggerFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(ids(all), ["t1", "t3", "t4"]);
    let page = store
        .list_triggers(&ns, &TriggerFilter::default(), Some("t1"), 1)
        .await
        .unwrap();
    assert_eq!(ids(page), ["t3"]);
    let by_job = TriggerFilter {
        job: Some("ship".into()),
        event_name: Some("order.refunded".into()),
    };
    assert_eq!(
        ids(store.list_triggers(&ns, &by_job, None, 10).await.unwrap()),
        ["t4"]
    );
    assert!(store.delete_trigger(&ns, "t4").await.unwrap());
    assert!(!store.delete_trigger(&ns, "t4").await.unwrap());

    // The cap per event name.
    let capped = super::ns("cap");
    for i in 0..MAX_TRIGGERS_PER_EVENT {
        store
            .insert_trigger(
                &capped,
                &format!("c{i:03}"),
                def("e", "", &format!("j{i}")),
                1,
            )
            .await
            .unwrap();
    }
    let err = store
        .insert_trigger(&capped, "over", def("e", "", "one-more"), 1)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        crate::engine::EngineError::ResourceExhausted(_)
    ));
}

pub async fn publish_starts_triggered_runs_once(store: &Arc<dyn Store>) {
    let ns = ns("trigpub");
    let event = |id: &str, jobs: &[&str]| NewEvent {
        namespace: ns.clone(),
        id: id.to_owned(),
        name: "signup".to_owned(),
        correlation_key: String::new(),
        payload: "{}".to_owned(),
        now: 5_000,
        triggered: jobs
            .iter()
            .map(|j| {
                let mut r = new_run(&ns, j, "default", 5_000);
                r.idempotency = Some((format!("event:{id}:{j}"), 1_000_000_000));
                r
            })
            .collect(),
    };
    let out = store
        .publish_event(event("e1", &["welcome", "crm"]))
        .await
        .unwrap();
    assert!(!out.duplicate);
    assert_eq!(out.started.len(), 2);
    assert_eq!(out.started[0].job, "welcome");
    assert_eq!(
        out.started[1].idempotency_key.as_deref(),
        Some("event:e1:crm")
    );
    let again = store
        .publish_event(event("e1", &["welcome", "crm"]))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert!(
        again.started.is_empty(),
        "a duplicate event id starts nothing"
    );
    let runs = store
        .list_runs(&ns, &Default::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
}
