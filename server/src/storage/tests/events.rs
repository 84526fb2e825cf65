//! Contract checks of events and durable waits: the inbox (early events match, events from
//! before the run do not, each event is consumed once per run), fan-out to many waiting
//! runs, deduplication, timers, cancellation, resumption without a new attempt, the
//! publish/suspend race, and retention.

use std::sync::Arc;

use crate::engine::EngineError;
use crate::engine::event_model::{
    NewEvent, PublishOutcome, SuspendOutcome, TIMED_OUT_OUTPUT, WaitSpec,
};
use crate::engine::model::{Failure, LeaseRef, RunRecord, RunStatus, StepKind, StepRecord};
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};
use crate::storage::SqlStore;
use crate::storage::testing::fresh_postgres_url;

fn lease(ns: &str, run_id: &str, token: &str) -> LeaseRef {
    LeaseRef {
        namespace: ns.to_owned(),
        run_id: run_id.to_owned(),
        token: token.to_owned(),
    }
}

fn event(ns: &str, id: &str, name: &str, key: &str, payload: &str, now: i64) -> NewEvent {
    NewEvent {
        namespace: ns.to_owned(),
        id: id.to_owned(),
        name: name.to_owned(),
        correlation_key: key.to_owned(),
        payload: payload.to_owned(),
        now,
        triggered: Vec::new(),
    }
}

fn wait_for(name: &str, key: &str, timeout_at: i64) -> WaitSpec {
    WaitSpec::Event {
        name: name.to_owned(),
        correlation_key: key.to_owned(),
        timeout_at,
    }
}

async fn publish(store: &Arc<dyn Store>, e: NewEvent) -> PublishOutcome {
    store.publish_event(e).await.unwrap()
}

/// Starts a run of `job` in `ns` at `now` and claims it; returns the run and its token.
async fn running(store: &Arc<dyn Store>, ns: &str, job: &str, now: i64) -> (RunRecord, String) {
    let run = start(store, new_run(ns, job, "q", now)).await;
    let mut tasks = store
        .claim(claim_req(ns, &["q"], &[job], 1, now))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    let t = tasks.remove(0);
    assert_eq!(t.run.id, run.id);
    (run, t.lease_token)
}

fn satisfied(out: SuspendOutcome) -> StepRecord {
    match out {
        SuspendOutcome::Satisfied(e) => e,
        other => panic!("expected satisfied, got {other:?}"),
    }
}

/// The event id inside an EVENT journal entry.
fn event_id_of(entry: &StepRecord) -> String {
    assert_eq!(entry.kind, StepKind::Event);
    let v: serde_json::Value = serde_json::from_str(entry.output.as_deref().unwrap()).unwrap();
    assert_eq!(v["timedOut"], false, "{v}");
    v["event"]["id"].as_str().unwrap().to_owned()
}

pub async fn inbox_matching(store: &Arc<dyn Store>) {
    let ns = ns("inbox");
    // Published before the run exists: never matches it.
    publish(store, event(&ns, "e0", "ev", "k", r#"{"n":0}"#, 1_000)).await;
    let (run, token) = running(store, &ns, "job", 2_000).await;
    let l = lease(&ns, &run.id, &token);
    // Published after the run was created but before it reaches its wait: the inbox.
    let p1 = publish(store, event(&ns, "e1", "ev", "k", r#"{"n":1}"#, 2_500)).await;
    assert!(p1.resumed.is_empty(), "the run is not waiting yet");
    publish(store, event(&ns, "x1", "ev", "other", "1", 2_500)).await;
    publish(store, event(&ns, "x2", "other", "k", "1", 2_500)).await;
    publish(store, event(&ns, "x3", "ev", "", "1", 2_500)).await;

    let w = satisfied(
        store
            .suspend_run(l.clone(), "w".into(), wait_for("ev", "k", 100_000), 3_000)
            .await
            .unwrap(),
    );
    assert_eq!(event_id_of(&w), "e1");
    assert_eq!(w.attempt, 1);
    let v: serde_json::Value = serde_json::from_str(w.output.as_deref().unwrap()).unwrap();
    assert_eq!(v["event"]["payload"], serde_json::json!({"n": 1}));
    assert_eq!(v["event"]["publishedAt"], 2_500);
    // The lease is kept after a satisfied wait.
    store.heartbeat(l.clone(), 3_001).await.unwrap();
    // A resent request for the same wait returns the recorded result.
    let again = satisfied(
        store
            .suspend_run(l.clone(), "w".into(), wait_for("ev", "k", 100_000), 3_002)
            .await
            .unwrap(),
    );
    assert_eq!(again, w);
    // The same id as a sleep is refused: steps and waits share one id space.
    assert!(matches!(
        store
            .suspend_run(l.clone(), "w".into(), WaitSpec::Sleep { until: 1 }, 3_003)
            .await,
        Err(EngineError::InvalidArgument(_))
    ));

    // e1 is consumed, e0 predates the run: the second wait suspends.
    let out = store
        .suspend_run(l.clone(), "w#2".into(), wait_for("ev", "k", 100_000), 4_000)
        .await
        .unwrap();
    assert!(matches!(
        out,
        SuspendOutcome::Suspended {
            wake_at: Some(100_000),
            ..
        }
    ));
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Waiting);
    assert_eq!(d.run.lease_expires_at, None);
    let wait = d.wait.unwrap();
    assert_eq!(wait.step_id, "w#2");
    assert_eq!(wait.event_name.as_deref(), Some("ev"));
    assert_eq!(wait.correlation_key.as_deref(), Some("k"));
    assert_eq!(wait.wake_at, Some(100_000));
    assert_eq!(wait.created_at, 4_000);
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(
        d.attempts[0].ended_at, None,
        "a suspension is not a failure"
    );
    // The worker's lease is gone: writes and heartbeats are refused.
    assert!(matches!(
        store.heartbeat(l.clone(), 4_001).await,
        Err(EngineError::FailedPrecondition(_))
    ));
    assert!(matches!(
        store
            .fail_run(l.clone(), Failure::new("x", "E"), 4_001)
            .await,
        Err(EngineError::FailedPrecondition(_))
    ));
    // A waiting run is never claimed.
    assert!(
        store
            .claim(claim_req(&ns, &["q"], &["job"], 10, 5_000))
            .await
            .unwrap()
            .is_empty()
    );

    // The next event resumes it.
    let p2 = publish(store, event(&ns, "e2", "ev", "k", r#"{"n":2}"#, 6_000)).await;
    assert_eq!(p2.resumed.len(), 1);
    assert_eq!(p2.resumed[0].run_id, run.id);
    assert_eq!(p2.resumed[0].queue, "q");
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Queued);
    assert!(d.wait.is_none());
    let entry = d.steps.iter().find(|s| s.step_id == "w#2").unwrap();
    assert_eq!(event_id_of(entry), "e2");
    assert_eq!(
        entry.started_at,
        Some(4_000),
        "the wait began at the suspension"
    );
    assert_eq!(entry.completed_at, 6_000);

    // Redelivered as the same attempt, with a new lease and the journal.
    let t = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 7_000))
        .await
        .unwrap()
        .remove(0);
    assert!(t.resumed);
    assert_eq!(t.run.attempt, 1, "waits do not use up attempts");
    assert_ne!(t.lease_token, token);
    let ids: Vec<&str> = t.journal.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(ids, ["w", "w#2"]);
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].ended_at, None);
    // Completing ends the one attempt.
    store
        .complete_run(lease(&ns, &run.id, &t.lease_token), "1".into(), 8_000)
        .await
        .unwrap();
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].ended_at, Some(8_000));
    assert!(d.attempts[0].failure.is_none());
}

pub async fn fan_out_and_dedup(store: &Arc<dyn Store>) {
    let other_ns = ns("fanout-other");
    let ns = ns("fanout");
    let mut shared = Vec::new();
    for i in 0..5 {
        let (run, token) = running(store, &ns, "job", 1_000 + i).await;
        let out = store
            .suspend_run(
                lease(&ns, &run.id, &token),
                "w".into(),
                wait_for("ev", "shared", 1_000_000),
                2_000 + i,
            )
            .await
            .unwrap();
        assert!(matches!(out, SuspendOutcome::Suspended { .. }));
        shared.push(run.id);
    }
    let mut others = Vec::new();
    for (i, key) in ["other", ""].iter().enumerate() {
        let (run, token) = running(store, &ns, "job", 1_100 + i as i64).await;
        store
            .suspend_run(
                lease(&ns, &run.id, &token),
                "w".into(),
                wait_for("ev", key, 1_000_000),
                2_100,
            )
            .await
            .unwrap();
        others.push(run.id);
    }
    let (foreign, token) = running(store, &other_ns, "job", 1_000).await;
    store
        .suspend_run(
            lease(&other_ns, &foreign.id, &token),
            "w".into(),
            wait_for("ev", "shared", 1_000_000),
            2_000,
        )
        .await
        .unwrap();

    // One event resumes every run waiting on its key, oldest wait first, and no other.
    let p = publish(store, event(&ns, "dup", "ev", "shared", "{}", 3_000)).await;
    assert!(!p.duplicate);
    let ids: Vec<String> = p.resumed.iter().map(|r| r.run_id.clone()).collect();
    assert_eq!(ids, shared);
    for id in &shared {
        let d = store.get_run_detail(&ns, id).await.unwrap().unwrap();
        assert_eq!(d.run.status, RunStatus::Queued);
        assert_eq!(event_id_of(&d.steps[0]), "dup");
    }
    for id in &others {
        let r = store.get_run(&ns, id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Waiting, "another key resumes nothing");
    }
    let r = store
        .get_run(&other_ns, &foreign.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, RunStatus::Waiting, "namespaces are isolated");

    // A repeated id stores nothing and resumes nothing, even where it would match.
    let again = publish(store, event(&ns, "dup", "ev", "", "{\"x\":1}", 3_100)).await;
    assert!(again.duplicate);
    assert!(again.resumed.is_empty());
    assert_eq!(again.event.payload, "{}", "the first event stands");
    let r = store.get_run(&ns, &others[1]).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Waiting);
    let listed = store
        .list_events(&ns, &Default::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    // An empty key matches only waits with an empty key.
    let p = publish(store, event(&ns, "e-empty", "ev", "", "null", 3_200)).await;
    assert_eq!(p.resumed.len(), 1);
    assert_eq!(p.resumed[0].run_id, others[1]);

    // Listing: newest first, filters, pages.
    let all = store
        .list_events(&ns, &Default::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e-empty", "dup"]
    );
    let filter = crate::engine::event_model::EventFilter {
        correlation_key: Some("shared".into()),
        ..Default::default()
    };
    let only = store.list_events(&ns, &filter, None, 100).await.unwrap();
    assert_eq!(only.len(), 1);
    let page2 = store
        .list_events(&ns, &Default::default(), Some(all[0].seq), 100)
        .await
        .unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].id, "dup");
    let filter = crate::engine::event_model::EventFilter {
        published_before: Some(3_200),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_events(&ns, &filter, None, 100)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn wait_timers(store: &Arc<dyn Store>) {
    let ns = ns("waittimers");
    let base = 5_000_000_000_000;
    // Clear instants left by earlier checks, so that only this check's waits are due.
    while store.expire_leases(base, 1_000).await.unwrap() != Default::default() {}
    while !store
        .resolve_due_waits(base, 1_000)
        .await
        .unwrap()
        .is_empty()
    {}

    let (sleeper, t1) = running(store, &ns, "job", base).await;
    let (waiter, t2) = running(store, &ns, "job", base).await;
    // A sleep whose time has passed, and an event wait with a zero timeout, resolve at once.
    let e = satisfied(
        store
            .suspend_run(
                lease(&ns, &sleeper.id, &t1),
                "nap".into(),
                WaitSpec::Sleep { until: base - 1 },
                base,
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        (e.kind, e.output.as_deref()),
        (StepKind::Sleep, Some("null"))
    );
    let e = satisfied(
        store
            .suspend_run(
                lease(&ns, &waiter.id, &t2),
                "quick".into(),
                wait_for("never", "", base),
                base,
            )
            .await
            .unwrap(),
    );
    assert_eq!(e.output.as_deref(), Some(TIMED_OUT_OUTPUT));

    store
        .suspend_run(
            lease(&ns, &sleeper.id, &t1),
            "sleep".into(),
            WaitSpec::Sleep {
                until: base + 1_000,
            },
            base,
        )
        .await
        .unwrap();
    store
        .suspend_run(
            lease(&ns, &waiter.id, &t2),
            "wait".into(),
            wait_for("never", "", base + 2_000),
            base,
        )
        .await
        .unwrap();
    // Both runs hold no lease: the next instant is the sleep's end.
    assert_eq!(store.next_due(base).await.unwrap(), Some(base + 1_000));
    assert!(
        store
            .expire_leases(base + 5_000, 100)
            .await
            .unwrap()
            .requeued
            .is_empty()
    );
    assert!(
        store
            .resolve_due_waits(base + 999, 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing resolves before its time"
    );
    let r = store.resolve_due_waits(base + 1_000, 100).await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].run_id, sleeper.id);
    assert_eq!(
        store.next_due(base + 1_000).await.unwrap(),
        Some(base + 2_000)
    );
    // Overdue (e.g. the server was down): resolved on the next pass, at its due state.
    let r = store.resolve_due_waits(base + 60_000, 100).await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].run_id, waiter.id);
    let d = store
        .get_run_detail(&ns, &sleeper.id)
        .await
        .unwrap()
        .unwrap();
    let e = d.steps.iter().find(|s| s.step_id == "sleep").unwrap();
    assert_eq!(
        (e.kind, e.started_at, e.completed_at),
        (StepKind::Sleep, Some(base), base + 1_000)
    );
    let d = store
        .get_run_detail(&ns, &waiter.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.run.status, RunStatus::Queued);
    let e = d.steps.iter().find(|s| s.step_id == "wait").unwrap();
    assert_eq!(e.output.as_deref(), Some(TIMED_OUT_OUTPUT));
    assert_eq!(
        store.resolve_due_waits(base + 60_000, 100).await.unwrap(),
        []
    );
}

pub async fn cancel_waiting(store: &Arc<dyn Store>) {
    let ns = ns("cancelwait");
    let (run, token) = running(store, &ns, "job", 1_000).await;
    store
        .suspend_run(
            lease(&ns, &run.id, &token),
            "w".into(),
            wait_for("ev", "k", 1_000_000),
            2_000,
        )
        .await
        .unwrap();
    let c = store
        .cancel_run(
            &ns,
            &run.id,
            Failure::new("no longer needed", "Cancelled"),
            3_000,
        )
        .await
        .unwrap();
    assert_eq!(c.status, RunStatus::Cancelled);
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert!(d.wait.is_none(), "cancelling deletes the wait");
    assert_eq!(d.attempts[0].ended_at, Some(3_000));
    let p = publish(store, event(&ns, "late", "ev", "k", "1", 4_000)).await;
    assert!(p.resumed.is_empty());
    let r = store.get_run(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Cancelled);

    // Retried, it is a new attempt; its wait finds the event that arrived meanwhile.
    store.retry_run(&ns, &run.id, 5_000).await.unwrap();
    let t = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 5_000))
        .await
        .unwrap()
        .remove(0);
    assert!(!t.resumed);
    assert_eq!(t.run.attempt, 2);
    let e = satisfied(
        store
            .suspend_run(
                lease(&ns, &run.id, &t.lease_token),
                "w".into(),
                wait_for("ev", "k", 1_000_000),
                6_000,
            )
            .await
            .unwrap(),
    );
    assert_eq!(event_id_of(&e), "late");
}

/// Publishes and suspends on the same key concurrently, the publishes through `a` and the
/// suspends through `b` (two stores on one database behave like two server replicas, each
/// with its own transactions): no run may end up waiting for an event that was already
/// published (the race an inbox must not lose).
pub async fn publish_suspend_race(a: &Arc<dyn Store>, b: &Arc<dyn Store>, pairs: usize) {
    let ns = ns("race");
    let mut runs = Vec::new();
    for i in 0..pairs {
        runs.push(running(a, &ns, "job", 1_000 + i as i64).await);
    }
    let mut tasks = Vec::new();
    for (i, (run, token)) in runs.iter().enumerate() {
        let key = format!("k{i}");
        let (s1, s2) = (a.clone(), b.clone());
        let (ns1, key1) = (ns.clone(), key.clone());
        let l = lease(&ns, &run.id, token);
        let publish = async move {
            s1.publish_event(event(&ns1, &format!("e{i}"), "race", &key1, "1", 5_000))
                .await
                .map(|_| ())
        };
        let suspend = async move {
            s2.suspend_run(l, "w".into(), wait_for("race", &key, 9_999_999), 5_000)
                .await
                .map(|_| ())
        };
        // Alternate which one is submitted first.
        if i % 2 == 0 {
            tasks.push(tokio::spawn(publish));
            tasks.push(tokio::spawn(suspend));
        } else {
            tasks.push(tokio::spawn(suspend));
            tasks.push(tokio::spawn(publish));
        }
    }
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            panic!("write failed: {e:?}")
        }
    }
    let (mut satisfied, mut resumed) = (0, 0);
    for (i, (run, _)) in runs.iter().enumerate() {
        let d = a.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
        match d.run.status {
            RunStatus::Running => satisfied += 1,
            RunStatus::Queued => resumed += 1,
            s => panic!("run {} is {s}: its event was lost", run.id),
        }
        assert_eq!(d.steps.len(), 1);
        assert_eq!(event_id_of(&d.steps[0]), format!("e{i}"));
    }
    eprintln!("publish/suspend race: {satisfied} satisfied from the inbox, {resumed} resumed");
    assert_eq!(satisfied + resumed, runs.len());
}

async fn race_on_two_stores(url: &str) {
    let a: Arc<dyn Store> = Arc::new(SqlStore::connect(url).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqlStore::connect(url).await.unwrap());
    for _ in 0..3 {
        publish_suspend_race(&a, &b, 150).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_publish_suspend_race_across_replicas() {
    let Some(url) = fresh_postgres_url("eventrace").await else {
        return;
    };
    race_on_two_stores(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_publish_suspend_race_across_stores() {
    let dir = tempfile::tempdir().unwrap();
    race_on_two_stores(&format!(
        "sqlite://{}",
        dir.path().join("race.db").display()
    ))
    .await;
}

pub async fn retention(store: &Arc<dyn Store>) {
    let ns = ns("retention");
    // Runs last: earlier checks' events are old too, and the sweep is global.
    let (run, token) = running(store, &ns, "job", 100).await;
    for i in 0..5 {
        publish(
            store,
            event(&ns, &format!("old{i}"), "ev", "k", "1", 500 + i),
        )
        .await;
    }
    let e = satisfied(
        store
            .suspend_run(
                lease(&ns, &run.id, &token),
                "w".into(),
                wait_for("ev", "k", 9_999_999),
                600,
            )
            .await
            .unwrap(),
    );
    assert_eq!(event_id_of(&e), "old0");
    publish(store, event(&ns, "new", "ev", "k", "1", 1_000_000)).await;
    // Bounded batches.
    assert_eq!(store.sweep_events(900_000, 2).await.unwrap(), 2);
    while store.sweep_events(900_000, 1_000).await.unwrap() > 0 {}
    let left = store
        .list_events(&ns, &Default::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
    // The run's journal keeps its copy of the deleted event.
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(event_id_of(&d.steps[0]), "old0");
    // Past retention an id can be used again.
    let p = publish(store, event(&ns, "old0", "ev", "k", "2", 1_000_001)).await;
    assert!(!p.duplicate);
}
