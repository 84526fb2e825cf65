//! Contract checks of claims, leases, step results, failures and timers.

use std::sync::Arc;

use crate::engine::EngineError;
use crate::engine::model::{Failure, LeaseRef, NewStep, RunStatus, StepKind};
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};

fn lease(ns: &str, run_id: &str, token: &str) -> LeaseRef {
    LeaseRef {
        namespace: ns.to_owned(),
        run_id: run_id.to_owned(),
        token: token.to_owned(),
    }
}

fn step(id: &str, output: &str) -> NewStep {
    NewStep {
        step_id: id.to_owned(),
        kind: StepKind::Step,
        output: Some(output.to_owned()),
        failure: None,
        started_at: Some(1),
    }
}

pub async fn claim_order_and_filters(store: &Arc<dyn Store>) {
    let ns = ns("claim");
    let r1 = start(store, new_run(&ns, "a", "q1", 1_000)).await;
    let r2 = start(store, new_run(&ns, "b", "q1", 1_001)).await;
    let r3 = start(store, new_run(&ns, "a", "q2", 1_002)).await;
    let mut later = new_run(&ns, "a", "q1", 1_003);
    later.now = 1_003;
    let r4 = start(store, later).await;

    // Job filter: a worker serving only `a` never receives `b`.
    let t = store
        .claim(claim_req(&ns, &["q1"], &["a"], 10, 2_000))
        .await
        .unwrap();
    let ids: Vec<&str> = t.iter().map(|t| t.run.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![r1.id.as_str(), r4.id.as_str()],
        "oldest first, only job a on q1"
    );
    for task in &t {
        assert_eq!(task.run.status, RunStatus::Running);
        assert_eq!(task.run.attempt, 1);
        assert_eq!(task.lease_deadline, 2_000 + 30_000);
        assert!(!task.lease_token.is_empty());
    }
    assert_ne!(t[0].lease_token, t[1].lease_token);
    // Already claimed runs are not claimed again.
    assert!(
        store
            .claim(claim_req(&ns, &["q1"], &["a"], 10, 2_001))
            .await
            .unwrap()
            .is_empty()
    );
    // Queue filter and max_tasks.
    let t = store
        .claim(claim_req(&ns, &["q1", "q2"], &["a", "b"], 1, 2_002))
        .await
        .unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].run.id, r2.id);
    let t = store
        .claim(claim_req(&ns, &["q2"], &["a"], 5, 2_003))
        .await
        .unwrap();
    assert_eq!(t[0].run.id, r3.id);
    let detail = store.get_run_detail(&ns, &r1.id).await.unwrap().unwrap();
    assert_eq!(detail.attempts.len(), 1);
    assert_eq!(detail.attempts[0].worker_id, "w1");
    assert_eq!(detail.attempts[0].started_at, 2_000);
}

pub async fn lease_rules(store: &Arc<dyn Store>) {
    let ns = ns("lease");
    let run = start(store, new_run(&ns, "job", "q", 1_000)).await;
    let task = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 1_000))
        .await
        .unwrap()
        .remove(0);
    let good = lease(&ns, &run.id, &task.lease_token);
    let bad = lease(&ns, &run.id, "not-the-token");

    // Heartbeat extends the lease.
    let hb = store.heartbeat(good.clone(), 20_000).await.unwrap();
    assert_eq!(hb.lease_deadline, 50_000);
    assert!(!hb.cancel_requested);

    // Stale tokens are refused and change nothing.
    let before = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    for res in [
        store.heartbeat(bad.clone(), 21_000).await.map(|_| ()),
        store
            .complete_step(bad.clone(), step("s", "1"), 21_000)
            .await
            .map(|_| ()),
        store
            .complete_run(bad.clone(), "1".into(), 21_000)
            .await
            .map(|_| ()),
        store
            .fail_run(bad.clone(), Failure::new("x", "E"), 21_000)
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(res, Err(EngineError::FailedPrecondition(_))),
            "{res:?}"
        );
    }
    assert_eq!(
        store.get_run_detail(&ns, &run.id).await.unwrap().unwrap(),
        before
    );

    // Past the deadline the lease is expired even before the reaper runs.
    let expired = store
        .complete_step(good.clone(), step("s", "1"), 50_001)
        .await;
    assert!(matches!(expired, Err(EngineError::FailedPrecondition(_))));

    // Completion, and an idempotent resend of it.
    let done = store
        .complete_run(good.clone(), r#"{"ok":true}"#.into(), 30_000)
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    let again = store
        .complete_run(good.clone(), r#"{"ok":true}"#.into(), 30_001)
        .await
        .unwrap();
    assert_eq!(again.result.as_deref(), Some(r#"{"ok":true}"#));
    // Other writes after completion are stale.
    assert!(matches!(
        store
            .complete_step(good.clone(), step("late", "1"), 30_002)
            .await,
        Err(EngineError::FailedPrecondition(_))
    ));
    let detail = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(detail.attempts[0].ended_at, Some(30_000));
    assert!(detail.attempts[0].failure.is_none());

    // Cancellation: heartbeat reports it, writes answer Cancelled.
    let run = start(store, new_run(&ns, "job", "q", 40_000)).await;
    let task = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 40_000))
        .await
        .unwrap()
        .remove(0);
    store
        .cancel_run(&ns, &run.id, Failure::new("stop", "Cancelled"), 41_000)
        .await
        .unwrap();
    let l = lease(&ns, &run.id, &task.lease_token);
    assert!(
        store
            .heartbeat(l.clone(), 41_001)
            .await
            .unwrap()
            .cancel_requested
    );
    assert!(matches!(
        store.complete_step(l.clone(), step("s", "1"), 41_002).await,
        Err(EngineError::Cancelled(_))
    ));
    assert!(matches!(
        store.complete_run(l, "1".into(), 41_003).await,
        Err(EngineError::Cancelled(_))
    ));
    let detail = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunStatus::Cancelled);
    assert_eq!(detail.attempts[0].ended_at, Some(41_000));
}

pub async fn steps_recorded_once(store: &Arc<dyn Store>) {
    let ns = ns("steps");
    let run = start(store, new_run(&ns, "job", "q", 1_000)).await;
    let task = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 1_000))
        .await
        .unwrap()
        .remove(0);
    assert!(task.journal.is_empty());
    let l = lease(&ns, &run.id, &task.lease_token);
    assert!(
        !store
            .complete_step(l.clone(), step("a", "1"), 2_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .complete_step(l.clone(), step("a#2", "2"), 2_001)
            .await
            .unwrap()
    );
    // A second result for the same step is not recorded; the first stands.
    assert!(
        store
            .complete_step(l.clone(), step("a", "99"), 2_002)
            .await
            .unwrap()
    );
    let failed = NewStep {
        step_id: "b".into(),
        kind: StepKind::Step,
        output: None,
        failure: Some(Failure {
            message: "card declined".into(),
            non_retryable: true,
            ..Failure::default()
        }),
        started_at: None,
    };
    assert!(!store.complete_step(l.clone(), failed, 2_003).await.unwrap());
    store
        .fail_run(l, Failure::new("boom", "E"), 3_000)
        .await
        .unwrap();

    // The next attempt receives the journal, in completion order.
    let task = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 5_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(task.run.attempt, 2);
    let ids: Vec<&str> = task.journal.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(ids, vec!["a", "a#2", "b"]);
    assert_eq!(task.journal[0].output.as_deref(), Some("1"));
    assert_eq!(task.journal[0].attempt, 1);
    assert_eq!(
        task.journal[2].failure.as_ref().unwrap().message,
        "card declined"
    );
    let detail = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(detail.steps.len(), 3);
    assert_eq!(detail.steps[0].output_size, 1);
}

pub async fn failure_and_backoff(store: &Arc<dyn Store>) {
    let ns = ns("fail");
    let run = start(store, new_run(&ns, "job", "q", 0)).await;
    let mut now = 0;
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let task = store
            .claim(claim_req(&ns, &["q"], &["job"], 1, now))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(task.run.attempt, attempt);
        let out = store
            .fail_run(
                lease(&ns, &run.id, &task.lease_token),
                Failure::new("flaky", "E"),
                now,
            )
            .await
            .unwrap();
        match out.next_attempt_at {
            Some(at) => {
                assert_eq!(out.run.status, RunStatus::Queued);
                delays.push(at - now);
                // Not deliverable before its time.
                assert!(
                    store
                        .claim(claim_req(&ns, &["q"], &["job"], 1, at - 1))
                        .await
                        .unwrap()
                        .is_empty()
                );
                now = at;
            }
            None => {
                assert_eq!(attempt, 3, "fails only after max_attempts");
                assert_eq!(out.run.status, RunStatus::Failed);
            }
        }
    }
    assert_eq!(delays, vec![100, 200], "initial 100 ms, doubling");
    let detail = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunStatus::Failed);
    assert_eq!(detail.run.failure.as_ref().unwrap().message, "flaky");
    assert_eq!(detail.attempts.len(), 3);
    assert!(
        detail
            .attempts
            .iter()
            .all(|a| a.failure.is_some() && a.ended_at.is_some())
    );

    // Non-retryable failures fail at once.
    let run = start(store, new_run(&ns, "job", "q", 10_000)).await;
    let task = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 10_000))
        .await
        .unwrap()
        .remove(0);
    let f = Failure {
        message: "invalid card".into(),
        non_retryable: true,
        ..Failure::default()
    };
    let out = store
        .fail_run(lease(&ns, &run.id, &task.lease_token), f, 10_001)
        .await
        .unwrap();
    assert_eq!(out.run.status, RunStatus::Failed);
    assert!(out.next_attempt_at.is_none());

    // Retry gives new attempts; the journal survives.
    let r = store.retry_run(&ns, &run.id, 11_000).await.unwrap();
    assert_eq!(r.max_attempts, 1 + 3);
}

pub async fn lease_expiry(store: &Arc<dyn Store>) {
    let ns = ns("expiry");
    let mut nr = new_run(&ns, "job", "q", 0);
    nr.retry.max_attempts = 2;
    nr.lease_timeout_ms = Some(1_000);
    let run = start(store, nr).await;
    let t1 = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 0))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(t1.lease_deadline, 1_000);
    // Nothing expires early.
    let none = store.expire_leases(999, 100).await.unwrap();
    assert!(!none.requeued.iter().any(|(n, _, _)| n == &ns));
    let out = store.expire_leases(1_000, 100).await.unwrap();
    assert!(
        out.requeued
            .contains(&(ns.clone(), "q".into(), "job".into()))
    );
    // Redelivered at once as attempt 2; the old token is stale.
    let t2 = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 1_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(t2.run.attempt, 2);
    assert!(matches!(
        store
            .complete_run(lease(&ns, &run.id, &t1.lease_token), "1".into(), 1_001)
            .await,
        Err(EngineError::FailedPrecondition(_))
    ));
    // The last attempt's expiry fails the run.
    let out = store.expire_leases(2_000, 100).await.unwrap();
    assert!(out.failed.contains(&run.id));
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(d.run.status, RunStatus::Failed);
    assert!(
        d.attempts[0]
            .failure
            .as_ref()
            .unwrap()
            .message
            .contains("lease expired")
    );
}

pub async fn timers(store: &Arc<dyn Store>) {
    let ns = ns("timers");
    // A far-future retry shows up in next_due and due_runs at its time.
    let base = 4_000_000_000_000;
    // Reap leases left by earlier checks, so that only this check's instants are due.
    while store.expire_leases(base, 1_000).await.unwrap() != Default::default() {}
    let run = start(store, new_run(&ns, "job", "q", base)).await;
    let task = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, base))
        .await
        .unwrap()
        .remove(0);
    let next = store.next_due(base).await.unwrap().unwrap();
    assert!(next <= base + 30_000, "lease expiry is due");
    let out = store
        .fail_run(
            lease(&ns, &run.id, &task.lease_token),
            Failure::new("x", "E"),
            base,
        )
        .await
        .unwrap();
    let at = out.next_attempt_at.unwrap();
    assert_eq!(store.next_due(base).await.unwrap(), Some(at));
    assert!(store.due_runs(base, at - 1, 10).await.unwrap().is_empty());
    let due = store.due_runs(base, at, 10).await.unwrap();
    assert_eq!(due, vec![(ns.clone(), "q".to_owned(), "job".to_owned())]);
}

/// A start that claims for a parked poll in its own transaction: the claim sees the new
/// run (and any older one, first), a delayed or duplicate start claims nothing, and the
/// claimed attempt is recorded as by an ordinary claim.
pub async fn start_and_claim(store: &Arc<dyn Store>) {
    use crate::engine::model::StartOutcome;
    let ns = ns("handoff");
    let (out, claim) = store
        .start_and_claim(
            new_run(&ns, "a", "q", 1_000),
            claim_req(&ns, &["q"], &["a"], 5, 1_000),
        )
        .await
        .unwrap();
    let StartOutcome::Created(run) = out else {
        panic!("created expected")
    };
    assert_eq!(claim.tasks.len(), 1);
    assert_eq!(claim.tasks[0].run.id, run.id);
    assert_eq!(claim.tasks[0].run.status, RunStatus::Running);
    assert_eq!(claim.tasks[0].lease_deadline, 1_000 + 30_000);
    let detail = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(detail.run.status, RunStatus::Running);
    assert_eq!(detail.attempts.len(), 1);
    assert_eq!(detail.attempts[0].worker_id, "w1");

    // An older queued run goes first (the claim is an ordinary claim).
    let older = start(store, new_run(&ns, "a", "q", 2_000)).await;
    let (out, claim) = store
        .start_and_claim(
            new_run(&ns, "a", "q", 2_001),
            claim_req(&ns, &["q"], &["a"], 1, 2_001),
        )
        .await
        .unwrap();
    assert!(matches!(out, StartOutcome::Created(_)));
    assert_eq!(claim.tasks.len(), 1);
    assert_eq!(claim.tasks[0].run.id, older.id);

    // A delayed run is not claimed, nor is anything else.
    let mut delayed = new_run(&ns, "a", "q2", 3_000);
    delayed.available_at = 60_000;
    let (_, claim) = store
        .start_and_claim(delayed, claim_req(&ns, &["q2"], &["a"], 5, 3_000))
        .await
        .unwrap();
    assert!(claim.tasks.is_empty());

    // A duplicate start claims nothing.
    let mut keyed = new_run(&ns, "b", "q3", 4_000);
    keyed.idempotency = Some(("k".into(), 100_000));
    let first = start(store, keyed.clone()).await;
    keyed.id = uuid::Uuid::now_v7().to_string();
    let (out, claim) = store
        .start_and_claim(keyed, claim_req(&ns, &["q3"], &["b"], 5, 4_001))
        .await
        .unwrap();
    assert!(matches!(out, StartOutcome::Duplicate(r) if r.id == first.id));
    assert!(claim.tasks.is_empty());
}

/// Step results arriving together (one group commit records them with one statement):
/// each is recorded once, a resent result answers "already recorded", and a result under
/// a stale, expired or cancelled lease is refused exactly as on its own.
pub async fn steps_recorded_together(store: &Arc<dyn Store>) {
    use crate::engine::obs_model::TimelineKind;
    let ns = ns("steps-together");
    let mut runs = Vec::new();
    for i in 0..12 {
        runs.push(start(store, new_run(&ns, "job", "q", 1_000 + i)).await);
    }
    let tasks = store
        .claim(claim_req(&ns, &["q"], &["job"], 12, 2_000))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 12);
    let cancelled = &tasks[11];
    store
        .cancel_run(
            &ns,
            &cancelled.run.id,
            Failure::new("stop", "Cancel"),
            2_001,
        )
        .await
        .unwrap();
    let mut calls = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let l = lease(&ns, &t.run.id, &t.lease_token);
        // Runs 0-8: one result, sent twice for the even ones. Run 9: a stale token.
        // Run 10: after the lease expired (claimed at 2,000 with a 30 s lease). Run 11:
        // cancelled.
        let (l, now) = match i {
            9 => (lease(&ns, &t.run.id, "not-the-token"), 3_000),
            10 => (l, 2_000 + 30_000),
            _ => (l, 3_000),
        };
        calls.push((i, store.complete_step(l.clone(), step("s", "1"), now)));
        if i < 9 && i % 2 == 0 {
            calls.push((i, store.complete_step(l, step("s", "1"), now)));
        }
    }
    let (which, futures): (Vec<usize>, Vec<_>) = calls.into_iter().unzip();
    let answers = futures::future::join_all(futures).await;
    let mut fresh = [0; 12];
    for (i, answer) in which.into_iter().zip(answers) {
        match i {
            9 | 10 => assert!(
                matches!(answer, Err(EngineError::FailedPrecondition(_))),
                "run {i}: {answer:?}"
            ),
            11 => assert!(
                matches!(answer, Err(EngineError::Cancelled(_))),
                "run 11: {answer:?}"
            ),
            _ => fresh[i] += u32::from(!answer.unwrap()),
        }
    }
    for (i, t) in tasks.iter().enumerate() {
        let detail = store.get_run_detail(&ns, &t.run.id).await.unwrap().unwrap();
        let completed = detail
            .timeline
            .iter()
            .filter(|e| e.kind == TimelineKind::StepCompleted)
            .count();
        if i < 9 {
            assert_eq!(
                fresh[i], 1,
                "run {i}: recorded once, the resend answered as such"
            );
            assert_eq!(detail.steps.len(), 1, "run {i}");
            assert_eq!(detail.steps[0].attempt, 1);
            assert_eq!(detail.steps[0].output.as_deref(), Some("1"));
            assert_eq!(completed, 1, "run {i}: one timeline entry");
        } else {
            assert!(detail.steps.is_empty(), "run {i}: nothing recorded");
            assert_eq!(completed, 0, "run {i}");
        }
    }
}

/// Completions arriving together (on SQLite one group commit applies them with one
/// statement): each run completes once with its attempt ended, a resent completion is
/// accepted unchanged, and a stale, expired or cancelled lease is refused as on its own.
pub async fn completions_together(store: &Arc<dyn Store>) {
    use crate::engine::obs_model::TimelineKind;
    let ns = ns("complete-together");
    for i in 0..10 {
        start(store, new_run(&ns, "job", "q", 1_000 + i)).await;
    }
    let tasks = store
        .claim(claim_req(&ns, &["q"], &["job"], 10, 2_000))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 10);
    store
        .cancel_run(&ns, &tasks[9].run.id, Failure::new("stop", "Cancel"), 2_001)
        .await
        .unwrap();
    let mut calls = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let l = lease(&ns, &t.run.id, &t.lease_token);
        // Runs 0-6: completed, the even ones twice. Run 7: a stale token. Run 8: after
        // the lease expired. Run 9: cancelled.
        let (l, now) = match i {
            7 => (lease(&ns, &t.run.id, "not-the-token"), 3_000),
            8 => (l, 2_000 + 30_000),
            _ => (l, 3_000),
        };
        let result = format!("{{\"n\":{i}}}");
        calls.push((i, store.complete_run(l.clone(), result.clone(), now)));
        if i < 7 && i % 2 == 0 {
            calls.push((i, store.complete_run(l, result, now)));
        }
    }
    let (which, futures): (Vec<usize>, Vec<_>) = calls.into_iter().unzip();
    let answers = futures::future::join_all(futures).await;
    for (i, answer) in which.into_iter().zip(answers) {
        match i {
            7 | 8 => assert!(
                matches!(answer, Err(EngineError::FailedPrecondition(_))),
                "run {i}: {answer:?}"
            ),
            9 => assert!(
                matches!(answer, Err(EngineError::Cancelled(_))),
                "run 9: {answer:?}"
            ),
            _ => {
                let run = answer.unwrap();
                assert_eq!(run.status, RunStatus::Completed, "run {i}");
                assert_eq!(
                    run.result.as_deref(),
                    Some(format!("{{\"n\":{i}}}").as_str())
                );
                assert_eq!(run.finished_at, Some(3_000));
            }
        }
    }
    for (i, t) in tasks.iter().enumerate() {
        let detail = store.get_run_detail(&ns, &t.run.id).await.unwrap().unwrap();
        let completed = detail
            .timeline
            .iter()
            .filter(|e| e.kind == TimelineKind::Completed)
            .count();
        if i < 7 {
            assert_eq!(detail.run.status, RunStatus::Completed, "run {i}");
            assert_eq!(detail.attempts.len(), 1);
            assert_eq!(detail.attempts[0].ended_at, Some(3_000), "run {i}");
            assert!(detail.attempts[0].failure.is_none());
            assert_eq!(completed, 1, "run {i}: one timeline entry");
        } else {
            assert_ne!(detail.run.status, RunStatus::Completed, "run {i}");
            assert_eq!(completed, 0, "run {i}");
        }
    }
}
