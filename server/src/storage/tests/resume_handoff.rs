//! Contract checks of the resume handoff (`EventStore::publish_event_and_claim`): a publish
//! claims, in its own transaction, for the requests its picker returns; the claims see the
//! runs the publish resumed or started, each is an ordinary claim (a resumed run keeps its
//! attempt, gets a new lease and its journal), and a duplicate publish claims nothing.

use std::sync::{Arc, Mutex};

use crate::engine::event_model::{NewEvent, PublishOutcome, SuspendOutcome, WaitSpec};
use crate::engine::model::{LeaseRef, RunStatus};
use crate::engine::store::{ClaimPicker, Store};

use super::{claim_req, new_run, ns, start};

fn event(ns: &str, id: &str, key: &str, now: i64) -> NewEvent {
    NewEvent {
        namespace: ns.to_owned(),
        id: id.to_owned(),
        name: "ev".to_owned(),
        correlation_key: key.to_owned(),
        payload: r#"{"go":true}"#.to_owned(),
        now,
        triggered: Vec::new(),
    }
}

/// Starts a run of `job` on queue `q`, claims it and suspends it on event `ev` with `key`.
/// Returns the run id and the lease token of its (first) attempt.
async fn waiting(store: &Arc<dyn Store>, ns: &str, job: &str, key: &str, now: i64) -> String {
    let run = start(store, new_run(ns, job, "q", now)).await;
    let t = store
        .claim(claim_req(ns, &["q"], &[job], 1, now))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(t.run.id, run.id);
    let lease = LeaseRef {
        namespace: ns.to_owned(),
        run_id: run.id.clone(),
        token: t.lease_token,
    };
    let wait = WaitSpec::Event {
        name: "ev".to_owned(),
        correlation_key: key.to_owned(),
        timeout_at: 10_000_000,
    };
    let out = store
        .suspend_run(lease, "w".into(), wait, now + 1)
        .await
        .unwrap();
    assert!(matches!(out, SuspendOutcome::Suspended { .. }), "{out:?}");
    run.id
}

/// A picker that records the resumed run ids it was shown and returns `reqs`.
fn picker(
    reqs: Vec<crate::engine::model::ClaimRequest>,
) -> (ClaimPicker, Arc<Mutex<Vec<Vec<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let pick: ClaimPicker = Arc::new(move |out: &PublishOutcome| {
        s.lock()
            .unwrap()
            .push(out.resumed.iter().map(|r| r.run_id.clone()).collect());
        reqs.clone()
    });
    (pick, seen)
}

pub async fn publish_and_claim(store: &Arc<dyn Store>) {
    let ns = ns("resume-handoff");
    let mut a = Vec::new();
    for i in 0..3 {
        a.push(waiting(store, &ns, "job", "k", 1_000 + i * 10).await);
    }
    let other = waiting(store, &ns, "other", "k", 1_100).await;

    // Two polls: one of `job` with room for two tasks, one of a job nobody runs.
    let (pick, seen) = picker(vec![
        claim_req(&ns, &["q"], &["job"], 2, 2_000),
        claim_req(&ns, &["q"], &["nobody"], 5, 2_000),
    ]);
    let (out, claims) = store
        .publish_event_and_claim(event(&ns, "e1", "k", 2_000), pick)
        .await
        .unwrap();
    assert_eq!(out.resumed.len(), 4);
    // The picker saw the resumed runs, inside the transaction.
    let shown = seen.lock().unwrap().clone();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].len(), 4);
    assert_eq!(claims.len(), 2, "one claim per request, in order");
    assert!(
        claims[1].tasks.is_empty(),
        "a poll of another job gets nothing"
    );
    let tasks = &claims[0].tasks;
    assert_eq!(tasks.len(), 2);
    let mut got: Vec<&str> = tasks.iter().map(|t| t.run.id.as_str()).collect();
    got.sort();
    let mut first_two: Vec<&str> = a.iter().map(String::as_str).collect();
    first_two.sort();
    for id in &got {
        assert!(first_two.contains(id), "claimed a run the event resumed");
    }
    for t in tasks {
        assert!(t.resumed, "a resumed run is delivered as the same attempt");
        assert_eq!(t.run.attempt, 1);
        assert_eq!(t.run.status, RunStatus::Running);
        assert_eq!(t.lease_deadline, 2_000 + 30_000);
        let ids: Vec<&str> = t.journal.iter().map(|s| s.step_id.as_str()).collect();
        assert_eq!(ids, ["w"], "the journal holds the event");
        let d = store.get_run_detail(&ns, &t.run.id).await.unwrap().unwrap();
        assert_eq!(d.run.status, RunStatus::Running);
        assert_eq!(d.attempts.len(), 1);
    }
    // The third run of `job` and the run of `other` stay queued for ordinary claims, and
    // no run is claimed twice.
    let rest = store
        .claim(claim_req(&ns, &["q"], &["job", "other"], 10, 3_000))
        .await
        .unwrap();
    let mut rest_ids: Vec<&str> = rest.iter().map(|t| t.run.id.as_str()).collect();
    rest_ids.sort();
    let mut expected: Vec<&str> = a
        .iter()
        .map(String::as_str)
        .filter(|id| !got.contains(id))
        .chain([other.as_str()])
        .collect();
    expected.sort();
    assert_eq!(rest_ids, expected);

    // A repeated event id resumes nothing and claims nothing; the picker is not asked.
    let late = waiting(store, &ns, "job", "k", 4_000).await;
    let (pick, seen) = picker(vec![claim_req(&ns, &["q"], &["job"], 5, 5_000)]);
    let (out, claims) = store
        .publish_event_and_claim(event(&ns, "e1", "k", 5_000), pick)
        .await
        .unwrap();
    assert!(out.duplicate);
    assert!(claims.is_empty());
    assert!(seen.lock().unwrap().is_empty());
    let r = store.get_run(&ns, &late).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Waiting);

    // A picker returning nothing publishes exactly as `publish_event`.
    let (pick, _) = picker(Vec::new());
    let (out, claims) = store
        .publish_event_and_claim(event(&ns, "e2", "k", 6_000), pick)
        .await
        .unwrap();
    assert_eq!(out.resumed.len(), 1);
    assert!(claims.is_empty());
    let r = store.get_run(&ns, &late).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Queued);
}

/// Runs started by event triggers are claimable in the same transaction too.
pub async fn triggered_runs_are_claimable(store: &Arc<dyn Store>) {
    let ns = ns("trigger-handoff");
    let mut e = event(&ns, "t1", "", 7_000);
    let mut run = new_run(&ns, "welcome", "q", 7_000);
    run.idempotency = Some(("event:t1:welcome".into(), 1_000_000_000));
    e.triggered = vec![run];
    let (pick, _) = picker(vec![claim_req(&ns, &["q"], &["welcome"], 1, 7_000)]);
    let (out, claims) = store.publish_event_and_claim(e, pick).await.unwrap();
    assert_eq!(out.started.len(), 1);
    assert_eq!(claims[0].tasks.len(), 1);
    assert_eq!(claims[0].tasks[0].run.id, out.started[0].id);
    assert!(!claims[0].tasks[0].resumed);
    let d = store
        .get_run_detail(&ns, &out.started[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.run.status, RunStatus::Running);
    assert_eq!(d.attempts.len(), 1);
}
