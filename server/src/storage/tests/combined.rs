//! Contract checks of `wait_for_any` / `wait_for_all`: items resolve from the inbox at the
//! start (ANY: lowest index wins and only its event is consumed), by a publish (the lowest
//! unresolved matching item; one event per item) and by the timer (sleep items, the whole
//! wait's timeout, moving `wake_at` forward); cancelling deletes the items.

use std::sync::Arc;

use crate::engine::event_model::{ItemSpec, NewEvent, SuspendOutcome, WaitMode, WaitSpec};
use crate::engine::model::{Failure, LeaseRef, RunRecord, RunStatus, StepKind};
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};

fn lease(ns: &str, run_id: &str, token: &str) -> LeaseRef {
    LeaseRef {
        namespace: ns.to_owned(),
        run_id: run_id.to_owned(),
        token: token.to_owned(),
    }
}

async fn running(store: &Arc<dyn Store>, ns: &str, job: &str, now: i64) -> (RunRecord, String) {
    start(store, new_run(ns, job, "q", now)).await;
    let mut t = store
        .claim(claim_req(ns, &["q"], &[job], 1, now))
        .await
        .unwrap();
    let t = t.remove(0);
    (t.run, t.lease_token)
}

fn ev(name: &str, key: &str) -> ItemSpec {
    ItemSpec::Event {
        name: name.into(),
        correlation_key: key.into(),
    }
}

async fn publish(
    store: &Arc<dyn Store>,
    ns: &str,
    id: &str,
    name: &str,
    key: &str,
    now: i64,
) -> usize {
    store
        .publish_event(NewEvent {
            namespace: ns.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
            correlation_key: key.to_owned(),
            payload: format!("\"{id}\""),
            now,
            triggered: Vec::new(),
        })
        .await
        .unwrap()
        .resumed
        .len()
}

fn output(out: SuspendOutcome) -> serde_json::Value {
    match out {
        SuspendOutcome::Satisfied(e) => serde_json::from_str(e.output.as_deref().unwrap()).unwrap(),
        other => panic!("expected satisfied, got {other:?}"),
    }
}

async fn journal(store: &Arc<dyn Store>, ns: &str, run: &str, step: &str) -> serde_json::Value {
    let d = store.get_run_detail(ns, run).await.unwrap().unwrap();
    let e = d.steps.iter().find(|s| s.step_id == step).unwrap();
    serde_json::from_str(e.output.as_deref().unwrap()).unwrap()
}

pub async fn any_and_all(store: &Arc<dyn Store>) {
    let ns = ns("combined");
    // ANY from the inbox: both items could resolve; index 0 wins and only it consumes.
    let (r, t) = running(store, &ns, "any", 1_000).await;
    publish(store, &ns, "e1", "x", "k", 1_100).await;
    publish(store, &ns, "e2", "y", "k", 1_100).await;
    let l = lease(&ns, &r.id, &t);
    let spec = |items: Vec<ItemSpec>, mode, timeout_at| WaitSpec::Combined {
        mode,
        items,
        timeout_at,
    };
    let v = output(
        store
            .suspend_run(
                l.clone(),
                "a".into(),
                spec(vec![ev("y", "k"), ev("x", "k")], WaitMode::Any, None),
                1_200,
            )
            .await
            .unwrap(),
    );
    assert_eq!(v["index"], 0);
    assert_eq!(v["output"]["event"]["id"], "e2");
    // e1 was not consumed by the ANY: a later wait still gets it.
    let v = output(
        store
            .suspend_run(
                l.clone(),
                "b".into(),
                spec(vec![ev("x", "k")], WaitMode::Any, Some(9_000)),
                1_300,
            )
            .await
            .unwrap(),
    );
    assert_eq!(v["output"]["event"]["id"], "e1");

    // ALL: one item from the inbox, one by a publish; same-name items take two events.
    let out = store
        .suspend_run(
            l.clone(),
            "c".into(),
            spec(
                vec![ev("z", "k"), ev("z", "k")],
                WaitMode::All,
                Some(50_000),
            ),
            1_400,
        )
        .await
        .unwrap();
    assert!(matches!(
        out,
        SuspendOutcome::Suspended {
            wake_at: Some(50_000),
            ..
        }
    ));
    let d = store.get_run_detail(&ns, &r.id).await.unwrap().unwrap();
    assert_eq!(d.wait.unwrap().kind, StepKind::All);
    assert_eq!(
        publish(store, &ns, "z1", "z", "k", 1_500).await,
        0,
        "one of two"
    );
    assert_eq!(
        publish(store, &ns, "z2", "z", "k", 1_600).await,
        1,
        "both resolved"
    );
    let v = journal(store, &ns, &r.id, "c").await;
    assert_eq!(v["timedOut"], false);
    assert_eq!(v["outputs"][0]["event"]["id"], "z1");
    assert_eq!(v["outputs"][1]["event"]["id"], "z2");
    assert_eq!(
        store.get_run(&ns, &r.id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );

    // The timer: an ALL of a sleep and an event, with a timeout. The sleep resolves at its
    // time (the wait goes on, wake_at moves to the timeout), then the timeout ends it.
    let (r2, t2) = running(store, &ns, "timer", 2_000).await;
    let out = store
        .suspend_run(
            lease(&ns, &r2.id, &t2),
            "d".into(),
            spec(
                vec![ev("never", "k"), ItemSpec::Sleep { until: 3_000 }],
                WaitMode::All,
                Some(5_000),
            ),
            2_000,
        )
        .await
        .unwrap();
    assert!(matches!(
        out,
        SuspendOutcome::Suspended {
            wake_at: Some(3_000),
            ..
        }
    ));
    assert!(
        store
            .resolve_due_waits(2_999, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .resolve_due_waits(3_000, 100)
            .await
            .unwrap()
            .is_empty(),
        "one of two"
    );
    let w = store
        .get_run_detail(&ns, &r2.id)
        .await
        .unwrap()
        .unwrap()
        .wait
        .unwrap();
    assert_eq!(w.wake_at, Some(5_000));
    let resumed = store.resolve_due_waits(5_000, 100).await.unwrap();
    assert!(resumed.iter().any(|x| x.run_id == r2.id));
    let v = journal(store, &ns, &r2.id, "d").await;
    assert_eq!(v["timedOut"], true);
    assert_eq!(v["resolved"], serde_json::json!([false, true]));

    // ANY with a sleep: the sleep resolves it; cancelling another waiting run deletes its
    // items (a later matching event resumes nothing).
    let (r3, t3) = running(store, &ns, "cancel", 6_000).await;
    store
        .suspend_run(
            lease(&ns, &r3.id, &t3),
            "e".into(),
            spec(vec![ev("late", "k")], WaitMode::Any, Some(60_000)),
            6_000,
        )
        .await
        .unwrap();
    store
        .cancel_run(&ns, &r3.id, Failure::new("stop", "Cancelled"), 6_100)
        .await
        .unwrap();
    assert_eq!(publish(store, &ns, "l1", "late", "k", 6_200).await, 0);
    assert!(
        store
            .resolve_due_waits(70_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
